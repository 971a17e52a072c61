//! A small in-process NVMe controller behind the driver's [`Backing`] seam, for the unit
//! tests (openvmm's `NvmeFaultController` shape: faults are injected in the model, not
//! in the driver).
//!
//! It keeps CC.EN/CSTS.RDY (RDY follows EN after a number of CSTS reads, or never),
//! the admin queue and I/O queues the driver creates, and processes a submission
//! queue's entries synchronously when its tail doorbell is written: Identify
//! Controller/Namespace, Create/Delete I/O queues, Read/Write against an in-memory
//! namespace. Data pointers (PRP1/PRP2/PRP list, one SGL Data Block) are resolved
//! against the model's DMA memory; an address outside it is a Data Transfer Error, as
//! an IOMMU fault would be. A driver that breaks the queue protocol (a doorbell past the
//! ring, a completion queue overrun) makes the model panic with what it did.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use peerdma_host::Bdf;
use peerdma_uapi::nvme::*;

use super::backing::{Backing, DmaBuffer, DmaMemory, RegisterIo};
use super::command::PAGE;
use peerdma_importer::iommufd::{self, Prot, UserBuffer};

/// The model's controller address in the driver's errors.
pub fn bdf() -> Bdf {
    Bdf::new(0, 0, 0x13, 0).expect("a valid BDF")
}

/// The backing made of a [`Model`].
#[derive(Debug)]
pub enum ModelBacking {}

impl Backing for ModelBacking {
    type Registers = ModelRegs;
    type Memory = ModelMemory;
}

/// What the model is.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// CAP.MQES (zero based: entries per queue - 1).
    pub mqes: u16,
    /// CAP.TO in 500 ms units.
    pub to: u8,
    /// Whether Identify Controller's SGLS offers SGLs.
    pub sgl: bool,
    /// Identify Controller's MDTS (a power of two of 4 KiB pages; 0: no limit).
    pub mdts: u8,
    /// Namespace 1's size in 512-byte blocks.
    pub blocks: u64,
    /// Metadata bytes per block and whether inline (extended LBA); `None`: none.
    pub metadata: Option<(u16, bool)>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mqes: 0x7ff,
            to: 1,
            sgl: true,
            mdts: 7,
            blocks: 4096,
            metadata: None,
        }
    }
}

/// What goes wrong with an I/O command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Completed with this status (SCT, SC), moving no data.
    Status(u8, u8),
    /// Never completed.
    Drop,
    /// Never completed, and CSTS.CFS set.
    Fatal,
    /// Never completed: the controller is reset under the driver (CC and CSTS clear,
    /// queues gone), as an FLR would.
    Reset,
}

#[derive(Debug)]
struct Sq {
    iova: u64,
    entries: u32,
    head: u32,
    tail: u32,
    cqid: u16,
}

#[derive(Debug)]
struct Cq {
    iova: u64,
    entries: u32,
    head: u32,
    tail: u32,
    phase: bool,
}

/// The controller's state; tests read it and inject faults through [`Model::state`].
#[derive(Debug)]
pub struct State {
    /// What it is.
    pub config: Config,
    cc: u32,
    csts: u32,
    aqa: u32,
    asq: u64,
    acq: u64,
    /// CC.EN = 1 never sets CSTS.RDY.
    pub never_ready: bool,
    /// CSTS reads after CC.EN = 1 before RDY is set.
    pub ready_after: u32,
    ready_countdown: Option<u32>,
    memory: BTreeMap<u64, Arc<UserBuffer>>,
    next_iova: u64,
    sqs: BTreeMap<u16, Sq>,
    cqs: BTreeMap<u16, Cq>,
    /// Namespace 1's bytes.
    pub namespace: Vec<u8>,
    /// Faults by I/O command number (1 based, counted over the model's life).
    pub faults: BTreeMap<u64, Fault>,
    /// I/O commands fetched.
    pub io_commands: u64,
    /// Admin commands fetched, by opcode.
    pub admin_opcodes: Vec<u8>,
    /// Tail doorbell values written for I/O SQ 1.
    pub sq_doorbells: Vec<u32>,
    /// Head doorbell values written for I/O CQ 1.
    pub cq_doorbells: Vec<u32>,
    /// I/O commands with PRPs, of which with a PRP list; with an SGL.
    pub prp_commands: u64,
    /// I/O commands whose PRP2 was a list.
    pub prp_list_commands: u64,
    /// I/O commands with an SGL Data Block.
    pub sgl_commands: u64,
    /// CC.EN 1 → 0 transitions (controller resets by the driver).
    pub resets: u32,
    /// Times I/O CQ 1 wrapped (its phase tag flipped).
    pub phase_flips: u32,
    /// BAR0 reads as all ones and writes are dropped, as after a revoke.
    pub revoked: bool,
    /// Complete Reads and Writes without copying their data and log no doorbells (the
    /// benchmark).
    pub discard_data: bool,
    /// Time spent processing submission queues (the benchmark subtracts it).
    pub busy: std::time::Duration,
}

/// A controller; clones share it.
#[derive(Clone, Debug)]
pub struct Model(Arc<Mutex<State>>);

/// The model's BAR0.
#[derive(Debug)]
pub struct ModelRegs(Model);

/// The model's DMA memory.
#[derive(Debug)]
pub struct ModelMemory(Model);

/// A buffer of the model's DMA memory.
#[derive(Debug)]
pub struct ModelBuffer {
    iova: u64,
    buf: Arc<UserBuffer>,
}

impl DmaBuffer for ModelBuffer {
    fn iova(&self) -> u64 {
        self.iova
    }

    fn buffer(&self) -> &UserBuffer {
        &self.buf
    }
}

impl DmaMemory for ModelMemory {
    type Buffer = ModelBuffer;

    fn alloc(&self, len: usize, _access: Prot) -> iommufd::Result<ModelBuffer> {
        self.0.dma(len)
    }
}

impl RegisterIo for ModelRegs {
    fn read32(&self, offset: usize) -> peerdma_exporter::Result<u32> {
        Ok(self.0.state().read(offset))
    }

    fn write32(&self, offset: usize, value: u32) -> peerdma_exporter::Result<()> {
        self.0.state().write(offset, value);
        Ok(())
    }

    fn revoked(&self) -> bool {
        self.0.state().revoked
    }
}

impl Model {
    /// A disabled controller with namespace 1 zeroed.
    pub fn new(config: Config) -> Model {
        Model(Arc::new(Mutex::new(State {
            config,
            cc: 0,
            csts: 0,
            aqa: 0,
            asq: 0,
            acq: 0,
            never_ready: false,
            ready_after: 2,
            ready_countdown: None,
            memory: BTreeMap::new(),
            next_iova: 0x1_0000_0000,
            sqs: BTreeMap::new(),
            cqs: BTreeMap::new(),
            namespace: vec![0; (config.blocks * 512) as usize],
            faults: BTreeMap::new(),
            io_commands: 0,
            admin_opcodes: Vec::new(),
            sq_doorbells: Vec::new(),
            cq_doorbells: Vec::new(),
            prp_commands: 0,
            prp_list_commands: 0,
            sgl_commands: 0,
            resets: 0,
            phase_flips: 0,
            revoked: false,
            discard_data: false,
            busy: std::time::Duration::ZERO,
        })))
    }

    /// Its state, locked.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().expect("the model's lock")
    }

    /// BAR0, for [`Nvme::with_registers`](super::Nvme::with_registers).
    pub fn registers(&self) -> ModelRegs {
        ModelRegs(self.clone())
    }

    /// The DMA memory, for [`Nvme::start`](super::Nvme::start).
    pub fn memory(&self) -> ModelMemory {
        ModelMemory(self.clone())
    }

    /// `len` bytes of DMA memory at a fresh IOVA (a guard page apart from the others).
    pub fn dma(&self, len: usize) -> iommufd::Result<ModelBuffer> {
        let buf = Arc::new(UserBuffer::new(len)?);
        let mut s = self.state();
        let iova = s.next_iova;
        s.next_iova += buf.len() as u64 + PAGE;
        s.memory.insert(iova, Arc::clone(&buf));
        Ok(ModelBuffer { iova, buf })
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// What executing one command did.
enum Outcome {
    /// Post a completion with this status field (SC/SCT, no phase).
    Complete(u16),
    /// Post nothing.
    Nothing,
    /// Post nothing, and stop: the controller was reset.
    Stop,
}

fn status(sct: u8, sc: u8) -> u16 {
    (u16::from(sct) << (NVME_STATUS_SCT_SHIFT - 1)) | u16::from(sc)
}

const OK: u16 = 0;
const INVALID_OPCODE: (u8, u8) = (0, 0x01);
const INVALID_FIELD: (u8, u8) = (0, 0x02);
const DATA_TRANSFER_ERROR: (u8, u8) = (0, 0x04);
const INVALID_NAMESPACE: (u8, u8) = (0, 0x0b);
const SGL_LENGTH_INVALID: (u8, u8) = (0, 0x0f);
const SGL_TYPE_INVALID: (u8, u8) = (0, 0x11);
const INVALID_PRP_OFFSET: (u8, u8) = (0, 0x13);
const LBA_OUT_OF_RANGE: (u8, u8) = (0, 0x80);
const INVALID_QUEUE_SIZE: (u8, u8) = (1, 0x02);
const CQ_INVALID: (u8, u8) = (1, 0x00);

fn err((sct, sc): (u8, u8)) -> u16 {
    status(sct, sc)
}

impl State {
    fn cap(&self) -> u64 {
        u64::from(self.config.mqes)
            | (1 << NVME_CAP_CQR_SHIFT)
            | (u64::from(self.config.to) << NVME_CAP_TO_SHIFT)
            | (1 << NVME_CAP_CSS_SHIFT)
            | (4 << NVME_CAP_MPSMAX_SHIFT)
    }

    fn read(&mut self, offset: usize) -> u32 {
        if self.revoked {
            return u32::MAX;
        }
        match offset {
            NVME_REG_CAP => self.cap() as u32,
            o if o == NVME_REG_CAP + 4 => (self.cap() >> 32) as u32,
            NVME_REG_VS => 0x0002_0000,
            NVME_REG_CC => self.cc,
            NVME_REG_CSTS => {
                if let Some(n) = self.ready_countdown {
                    if n == 0 {
                        self.csts |= NVME_CSTS_RDY;
                        self.ready_countdown = None;
                    } else {
                        self.ready_countdown = Some(n - 1);
                    }
                }
                self.csts
            }
            NVME_REG_AQA => self.aqa,
            _ => 0,
        }
    }

    fn write(&mut self, offset: usize, value: u32) {
        if self.revoked {
            return;
        }
        match offset {
            NVME_REG_CC => {
                let was = self.cc & NVME_CC_EN != 0;
                self.cc = value;
                match (was, value & NVME_CC_EN != 0) {
                    (true, false) => {
                        self.resets += 1;
                        self.reset();
                        self.cc = value;
                    }
                    (false, true) => self.enable(),
                    _ => {}
                }
            }
            NVME_REG_AQA => self.aqa = value,
            o if o == NVME_REG_ASQ => self.asq = (self.asq & !0xffff_ffff) | u64::from(value),
            o if o == NVME_REG_ASQ + 4 => {
                self.asq = (self.asq & 0xffff_ffff) | (u64::from(value) << 32);
            }
            o if o == NVME_REG_ACQ => self.acq = (self.acq & !0xffff_ffff) | u64::from(value),
            o if o == NVME_REG_ACQ + 4 => {
                self.acq = (self.acq & 0xffff_ffff) | (u64::from(value) << 32);
            }
            o if o >= NVME_REG_DBS => self.doorbell((o - NVME_REG_DBS) / 4, value),
            _ => {}
        }
    }

    /// A controller reset: CC and CSTS clear, every queue gone.
    fn reset(&mut self) {
        self.cc = 0;
        self.csts = 0;
        self.ready_countdown = None;
        self.sqs.clear();
        self.cqs.clear();
    }

    fn enable(&mut self) {
        if self.never_ready {
            return;
        }
        assert!(
            self.asq.is_multiple_of(PAGE) && self.acq.is_multiple_of(PAGE),
            "ASQ {:#x} / ACQ {:#x} not page aligned",
            self.asq,
            self.acq
        );
        let sq_entries = (self.aqa & 0xfff) + 1;
        let cq_entries = ((self.aqa >> 16) & 0xfff) + 1;
        self.sqs.insert(
            0,
            Sq {
                iova: self.asq,
                entries: sq_entries,
                head: 0,
                tail: 0,
                cqid: 0,
            },
        );
        self.cqs.insert(
            0,
            Cq {
                iova: self.acq,
                entries: cq_entries,
                head: 0,
                tail: 0,
                phase: true,
            },
        );
        self.ready_countdown = Some(self.ready_after);
    }

    fn doorbell(&mut self, index: usize, value: u32) {
        if self.csts & NVME_CSTS_RDY == 0 {
            return; // ignored while disabled
        }
        let qid = (index / 2) as u16;
        if index % 2 == 1 {
            let cq = self
                .cqs
                .get_mut(&qid)
                .unwrap_or_else(|| panic!("head doorbell of CQ {qid}, which does not exist"));
            assert!(
                value < cq.entries,
                "CQ {qid} head doorbell {value} past its {} entries",
                cq.entries
            );
            cq.head = value;
            if qid == 1 && !self.discard_data {
                self.cq_doorbells.push(value);
            }
            return;
        }
        let sq = self
            .sqs
            .get_mut(&qid)
            .unwrap_or_else(|| panic!("tail doorbell of SQ {qid}, which does not exist"));
        assert!(
            value < sq.entries,
            "SQ {qid} tail doorbell {value} past its {} entries",
            sq.entries
        );
        sq.tail = value;
        if qid == 1 && !self.discard_data {
            self.sq_doorbells.push(value);
        }
        let start = std::time::Instant::now();
        self.process(qid);
        self.busy += start.elapsed();
    }

    /// Fetches and executes SQ `qid`'s entries from head to tail.
    fn process(&mut self, qid: u16) {
        loop {
            let Some(sq) = self.sqs.get_mut(&qid) else {
                return;
            };
            if sq.head == sq.tail {
                return;
            }
            let at = sq.iova + u64::from(sq.head) * 64;
            sq.head = (sq.head + 1) % sq.entries;
            let (head, cqid) = (sq.head, sq.cqid);
            let mut sqe = [0u8; 64];
            assert!(
                self.dma_read(at, &mut sqe),
                "SQ {qid} entry at {at:#x} outside DMA memory"
            );
            let cid = (le32(&sqe, 0) >> 16) as u16;
            let outcome = if qid == 0 {
                self.admin(&sqe)
            } else {
                self.io(&sqe)
            };
            match outcome {
                Outcome::Complete(st) => self.complete(cqid, qid, head, cid, st),
                Outcome::Nothing => {}
                Outcome::Stop => return,
            }
        }
    }

    fn complete(&mut self, cqid: u16, sqid: u16, sq_head: u32, cid: u16, st: u16) {
        let cq = self.cqs.get_mut(&cqid).expect("the SQ's CQ");
        assert!(
            (cq.tail + 1) % cq.entries != cq.head,
            "CQ {cqid} overrun: the driver kept more commands outstanding than it has entries"
        );
        let mut cqe = [0u8; 16];
        cqe[8..10].copy_from_slice(&(sq_head as u16).to_le_bytes());
        cqe[10..12].copy_from_slice(&sqid.to_le_bytes());
        cqe[12..14].copy_from_slice(&cid.to_le_bytes());
        let field = (st << 1) | u16::from(cq.phase);
        cqe[14..16].copy_from_slice(&field.to_le_bytes());
        let at = cq.iova + u64::from(cq.tail) * 16;
        cq.tail += 1;
        if cq.tail == cq.entries {
            cq.tail = 0;
            cq.phase = !cq.phase;
            if cqid == 1 {
                self.phase_flips += 1;
            }
        }
        assert!(
            self.dma_write(at, &cqe),
            "CQ {cqid} entry outside DMA memory"
        );
    }

    fn resolve(&self, iova: u64, len: usize) -> Option<(Arc<UserBuffer>, usize)> {
        let (base, buf) = self.memory.range(..=iova).next_back()?;
        let off = (iova - base) as usize;
        (off + len <= buf.len()).then(|| (Arc::clone(buf), off))
    }

    fn dma_read(&self, iova: u64, out: &mut [u8]) -> bool {
        self.resolve(iova, out.len())
            .is_some_and(|(b, off)| b.read(off, out).is_ok())
    }

    fn dma_write(&self, iova: u64, data: &[u8]) -> bool {
        self.resolve(iova, data.len())
            .is_some_and(|(b, off)| b.write(off, data).is_ok())
    }

    fn admin(&mut self, sqe: &[u8; 64]) -> Outcome {
        let opcode = sqe[0];
        self.admin_opcodes.push(opcode);
        let (nsid, prp1, cdw10, cdw11) =
            (le32(sqe, 4), le64(sqe, 24), le32(sqe, 40), le32(sqe, 44));
        let qid = (cdw10 & 0xffff) as u16;
        let entries = (cdw10 >> 16) + 1;
        let max = u32::from(self.config.mqes) + 1;
        let st = match opcode {
            NVME_ADMIN_IDENTIFY => {
                let page = self.identify(cdw10 & 0xff, nsid);
                if self.dma_write(prp1, &page) {
                    OK
                } else {
                    err(DATA_TRANSFER_ERROR)
                }
            }
            NVME_ADMIN_CREATE_CQ if entries > max || entries < 2 => err(INVALID_QUEUE_SIZE),
            NVME_ADMIN_CREATE_CQ => {
                let cq = Cq {
                    iova: prp1,
                    entries,
                    head: 0,
                    tail: 0,
                    phase: true,
                };
                self.cqs.insert(qid, cq);
                OK
            }
            NVME_ADMIN_CREATE_SQ if entries > max || entries < 2 => err(INVALID_QUEUE_SIZE),
            NVME_ADMIN_CREATE_SQ => {
                let cqid = (cdw11 >> 16) as u16;
                if !self.cqs.contains_key(&cqid) {
                    err(CQ_INVALID)
                } else {
                    let sq = Sq {
                        iova: prp1,
                        entries,
                        head: 0,
                        tail: 0,
                        cqid,
                    };
                    self.sqs.insert(qid, sq);
                    OK
                }
            }
            NVME_ADMIN_DELETE_SQ => {
                self.sqs.remove(&qid);
                OK
            }
            NVME_ADMIN_DELETE_CQ => {
                self.cqs.remove(&qid);
                OK
            }
            _ => err(INVALID_OPCODE),
        };
        Outcome::Complete(st)
    }

    fn identify(&self, cns: u32, nsid: u32) -> [u8; NVME_IDENTIFY_DATA_SIZE] {
        let mut d = [0u8; NVME_IDENTIFY_DATA_SIZE];
        if cns == NVME_ID_CNS_CTRL {
            d[NVME_ID_CTRL_VID..NVME_ID_CTRL_VID + 2].copy_from_slice(&0x1b36u16.to_le_bytes());
            d[NVME_ID_CTRL_SN..NVME_ID_CTRL_SN + 6].copy_from_slice(b"model0");
            d[NVME_ID_CTRL_MN..NVME_ID_CTRL_MN + 13].copy_from_slice(b"peerdma model");
            d[NVME_ID_CTRL_MDTS] = self.config.mdts;
            d[NVME_ID_CTRL_NN..NVME_ID_CTRL_NN + 4].copy_from_slice(&1u32.to_le_bytes());
            d[NVME_ID_CTRL_SGLS] = u8::from(self.config.sgl);
        } else if cns == NVME_ID_CNS_NS && nsid == 1 {
            d[NVME_ID_NS_NSZE..NVME_ID_NS_NSZE + 8]
                .copy_from_slice(&self.config.blocks.to_le_bytes());
            d[NVME_ID_NS_NCAP..NVME_ID_NS_NCAP + 8]
                .copy_from_slice(&self.config.blocks.to_le_bytes());
            // LBAF 0: 512-byte blocks, no metadata; LBAF 1: 512-byte blocks with metadata.
            d[NVME_ID_NS_LBAF..NVME_ID_NS_LBAF + 4].copy_from_slice(&(9u32 << 16).to_le_bytes());
            if let Some((ms, extended)) = self.config.metadata {
                d[NVME_ID_NS_NLBAF] = 1;
                let lbaf = (9u32 << 16) | u32::from(ms);
                d[NVME_ID_NS_LBAF + 4..NVME_ID_NS_LBAF + 8].copy_from_slice(&lbaf.to_le_bytes());
                d[NVME_ID_NS_FLBAS] = 1 | if extended {
                    NVME_ID_NS_FLBAS_EXTENDED
                } else {
                    0
                };
            }
        }
        d
    }

    fn io(&mut self, sqe: &[u8; 64]) -> Outcome {
        self.io_commands += 1;
        match self.faults.get(&self.io_commands).copied() {
            Some(Fault::Status(sct, sc)) => return Outcome::Complete(status(sct, sc)),
            Some(Fault::Drop) => return Outcome::Nothing,
            Some(Fault::Fatal) => {
                self.csts |= NVME_CSTS_CFS;
                return Outcome::Nothing;
            }
            Some(Fault::Reset) => {
                self.reset();
                return Outcome::Stop;
            }
            None => {}
        }
        match self.read_write(sqe) {
            Ok(()) => Outcome::Complete(OK),
            Err(e) => Outcome::Complete(err(e)),
        }
    }

    fn read_write(&mut self, sqe: &[u8; 64]) -> Result<(), (u8, u8)> {
        let cdw0 = le32(sqe, 0);
        let opcode = (cdw0 & 0xff) as u8;
        if opcode != NVME_CMD_READ && opcode != NVME_CMD_WRITE {
            return Err(INVALID_OPCODE);
        }
        if le32(sqe, 4) != 1 {
            return Err(INVALID_NAMESPACE);
        }
        let slba = u64::from(le32(sqe, 40)) | (u64::from(le32(sqe, 44)) << 32);
        let nlb = u64::from(le32(sqe, 48) & 0xffff) + 1;
        if slba
            .checked_add(nlb)
            .is_none_or(|end| end > self.config.blocks)
        {
            return Err(LBA_OUT_OF_RANGE);
        }
        let len = nlb * 512;
        if self.config.mdts != 0 && len > PAGE << self.config.mdts {
            return Err(INVALID_FIELD);
        }
        let (dptr1, dptr2) = (le64(sqe, 24), le64(sqe, 32));
        let segments = match (cdw0 >> 14) & 0x3 {
            0 => self.prp_segments(dptr1, dptr2, len)?,
            1 if self.config.sgl => {
                self.sgl_commands += 1;
                if sqe[39] != NVME_SGL_DATA_BLOCK {
                    return Err(SGL_TYPE_INVALID);
                }
                if dptr2 & 0xffff_ffff != len {
                    return Err(SGL_LENGTH_INVALID);
                }
                vec![(dptr1, len)]
            }
            _ => return Err(INVALID_FIELD),
        };
        let mut at = (slba * 512) as usize;
        for (iova, n) in segments {
            let n = n as usize;
            let (buf, off) = self.resolve(iova, n).ok_or(DATA_TRANSFER_ERROR)?;
            if self.discard_data {
                continue;
            }
            let range = at..at + n;
            let moved = if opcode == NVME_CMD_READ {
                buf.write(off, &self.namespace[range])
            } else {
                buf.read(off, &mut self.namespace[range])
            };
            moved.map_err(|_| DATA_TRANSFER_ERROR)?;
            at += n;
        }
        Ok(())
    }

    /// The (IOVA, bytes) runs PRP1 and PRP2 describe for `len` bytes (Base spec
    /// "Physical Region Page Entry and List"); a list is read from DMA memory and may
    /// not chain (this model's limit, and the driver's).
    fn prp_segments(
        &mut self,
        prp1: u64,
        prp2: u64,
        len: u64,
    ) -> Result<Vec<(u64, u64)>, (u8, u8)> {
        self.prp_commands += 1;
        if !prp1.is_multiple_of(4) {
            return Err(INVALID_PRP_OFFSET);
        }
        let first = len.min(PAGE - prp1 % PAGE);
        let mut v = vec![(prp1, first)];
        let rest = len - first;
        if rest == 0 {
            return Ok(v);
        }
        if rest <= PAGE {
            if !prp2.is_multiple_of(PAGE) {
                return Err(INVALID_PRP_OFFSET);
            }
            v.push((prp2, rest));
            return Ok(v);
        }
        self.prp_list_commands += 1;
        if !prp2.is_multiple_of(8) {
            return Err(INVALID_PRP_OFFSET);
        }
        let entries = rest.div_ceil(PAGE);
        if entries > (PAGE - prp2 % PAGE) / 8 {
            return Err(INVALID_FIELD);
        }
        let mut list = vec![0u8; entries as usize * 8];
        if !self.dma_read(prp2, &mut list) {
            return Err(DATA_TRANSFER_ERROR);
        }
        let mut left = rest;
        for e in list.chunks_exact(8) {
            let page = le64(e, 0);
            if !page.is_multiple_of(PAGE) {
                return Err(INVALID_PRP_OFFSET);
            }
            v.push((page, left.min(PAGE)));
            left -= left.min(PAGE);
        }
        Ok(v)
    }
}
