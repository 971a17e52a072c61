//! A user-space NVMe driver over VFIO (cdev + iommufd): the storage ↔ BAR peer-to-peer
//! engine (the GPUDirect Storage shape).
//!
//! The controller's BAR0 is mapped through VFIO; its queues, PRP lists and the Identify
//! page are user memory mapped with `IOMMU_IOAS_MAP` into the same IOAS as the peer
//! BAR's dma-buf, so a Read's data IOVAs are the BAR's: the controller writes straight
//! into the peer's memory, and a Write reads straight from it.
//!
//! - [`backing`] (shared with [`igb`](crate::igb), re-exported here): the seam under the driver: register I/O and DMA memory ([`Vfio`]: BAR0
//!   through VFIO, memory in an iommufd IOAS; the unit tests: a controller model);
//! - [`regs`]: CAP decoded, CC/CSTS, enable/disable bounded by CAP.TO (Base spec
//!   "Controller Properties", "Memory-based Transport Controller Initialization");
//! - [`queue`]: submission and completion queues in mapped user memory, completions
//!   polled by phase tag (Base spec "Queue Mechanism");
//! - [`command`]: SQEs and PRP entries/lists (Base spec "Physical Region Page Entry and
//!   List"; NVM command set spec "Read command", "Write command");
//! - [`identify`]: Identify Controller / Namespace decoded (MDTS, block size, capacity,
//!   SGL support);
//! - [`io`]: Read/Write of a span at a queue depth, each command at most the transfer
//!   size and MDTS, with per-command latencies;
//! - [`error`]: errors naming the command, queue, status by name, CSTS.CFS, timeouts.
//!
//! Every wait is bounded (CAP.TO for CSTS.RDY, the command timeout for completions).
//! On any command error, timeout or fatal status the controller is reset (CC.EN = 0,
//! then initialised again with fresh queues) before the error is returned, so the same
//! [`Nvme`] is usable for the next transfer; dropping it leaves the controller disabled.
//!
//! As a [`DmaEngine`] an NVMe controller copies IOVA → IOVA in two steps through its
//! namespace (Write to the staging LBA range, then Read back): a BAR → BAR copy through
//! the drive. [`Nvme::transfer`] is the storage ↔ memory API itself.

pub use crate::backing;
pub mod command;
pub mod error;
pub mod identify;
pub mod io;
pub mod queue;
pub mod regs;

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use peerdma_exporter::Device;
use peerdma_host::Bdf;
use peerdma_uapi::nvme::*;
use peerdma_uapi::pci::{PCI_CLASS_REVISION, PCI_DEVICE_ID, PCI_VENDOR_ID};

use crate::{DmaEngine, EngineError, Result as EngineResult, TransferReport};
use backing::Buffer;
pub use backing::{Backing, Bar0, DmaBuffer, DmaMemory, RegisterIo, Vfio};
use command::{Io, MAX_PRP_BYTES, PAGE};
pub use error::{CommandDesc, NvmeError, Status};
pub use identify::{ControllerInfo, NamespaceInfo};
pub use io::IoStats;
use peerdma_importer::iommufd::{Ioas, Prot};
use queue::Queue;
use regs::Registers;

/// PCI vendor id of QEMU's emulated NVMe controller (Red Hat).
pub const QEMU_NVME_VENDOR: u16 = 0x1b36;
/// PCI device id of QEMU's emulated NVMe controller.
pub const QEMU_NVME_DEVICE: u16 = 0x0010;
/// PCI class code of an NVMe controller (mass storage, NVM, NVM Express).
pub const NVME_CLASS: u32 = 0x010802;

/// Admin queue depth.
const ADMIN_ENTRIES: u32 = 32;

/// How commands describe their data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DataPointer {
    /// An SGL when the controller offers SGLs for NVM commands, else PRPs.
    #[default]
    Auto,
    /// Always PRP entries (and PRP lists).
    Prp,
    /// Always one SGL Data Block descriptor (refused when the controller has no SGLs).
    Sgl,
}

/// How the driver runs its I/O queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NvmeOptions {
    /// Namespace to use.
    pub nsid: u32,
    /// Commands kept in flight: 1 to 1023, and fewer than the controller's queue entries
    /// (CAP.MQES + 1); 0 asks for [`DEFAULT_QUEUE_DEPTH`], lowered to what CAP.MQES
    /// allows ([`Nvme::options`] then says what was used).
    pub queue_depth: u32,
    /// Bytes per command (rounded down to whole blocks; capped by MDTS and one PRP list
    /// page, 2 MiB).
    pub transfer_size: u64,
    /// How long one command may take.
    pub command_timeout: Duration,
    /// First LBA of the range a two-step IOVA → IOVA copy goes through (its data is
    /// overwritten).
    pub staging_lba: u64,
    /// PRP or SGL data pointers.
    pub data_pointer: DataPointer,
}

/// The queue depth asked for by default (`NvmeOptions::queue_depth` 0), lowered on a
/// controller whose queues are smaller.
pub const DEFAULT_QUEUE_DEPTH: u32 = 32;

/// The queue depth `asked` (0: [`DEFAULT_QUEUE_DEPTH`] or fewer) on a controller whose
/// queues hold `entries` (CAP.MQES + 1; one entry stays free, and this driver uses at
/// most 1024); `Err` says why a depth asked for does not fit.
fn queue_depth_for(asked: u32, entries: u32) -> Result<u32, String> {
    let max = entries.clamp(2, 1024) - 1;
    match asked {
        0 => Ok(DEFAULT_QUEUE_DEPTH.min(max)),
        n if n <= max => Ok(n),
        n => Err(format!(
            "queue depth {n} does not fit: its queues hold {entries} entries (CAP.MQES {}, \
             0-based), one kept free, so 1 to {max} commands in flight",
            entries - 1
        )),
    }
}

impl Default for NvmeOptions {
    /// Namespace 1, queue depth 32 (fewer where CAP.MQES is lower), 128 KiB per
    /// command, 10 s per command, staging at LBA 0, SGLs where offered.
    fn default() -> Self {
        NvmeOptions {
            nsid: 1,
            queue_depth: 0,
            transfer_size: 128 << 10,
            command_timeout: Duration::from_secs(10),
            staging_lba: 0,
            data_pointer: DataPointer::Auto,
        }
    }
}

/// The memory and state of a started controller.
#[derive(Debug)]
struct Started<D: DmaBuffer> {
    admin: Queue<D>,
    io: Queue<D>,
    identify: D,
    prp_lists: D,
    ctrl: Option<ControllerInfo>,
    ns: Option<NamespaceInfo>,
    admin_cid: u16,
    /// Whether the controller is enabled with the I/O queues created.
    ready: bool,
}

/// An NVMe controller taken over through VFIO (`B` = [`Vfio`]), or any other
/// [`Backing`] (the unit tests' controller model).
///
/// [`open`](Self::open) checks it and resets it; [`start`](Self::start) maps its queues
/// into an IOAS the device is attached to and brings it up. Dropping it disables the
/// controller before its queue memory is unmapped.
#[derive(Debug)]
pub struct Nvme<B: Backing = Vfio> {
    regs: Registers<B::Registers>,
    bdf: Bdf,
    opts: NvmeOptions,
    started: Option<Started<Buffer<B>>>,
    /// Test hook: the next transfer's commands are never announced.
    stall_next: bool,
}

impl Nvme<Vfio> {
    /// Takes over the controller `device`: checks its class code (refusing anything
    /// else with [`NvmeError::NotNvme`]), maps BAR0, checks CAP (NVM command set, 4 KiB
    /// pages), disables the controller (waiting at most CAP.TO) and enables Bus Master.
    /// Nothing is mapped in an IOAS yet.
    ///
    /// # Errors
    ///
    /// [`NvmeError::NotNvme`], [`NvmeError::Device`] (config space, BAR0),
    /// [`NvmeError::Unsupported`], [`NvmeError::ReadyTimeout`].
    pub fn open(device: &Device, opts: NvmeOptions) -> Result<Nvme, NvmeError> {
        let bdf = device.bdf();
        let dev_err = |source| NvmeError::Device { bdf, source };
        let class = device
            .config_read_u32(PCI_CLASS_REVISION)
            .map_err(dev_err)?
            >> 8;
        if class != NVME_CLASS {
            return Err(NvmeError::NotNvme {
                bdf,
                class,
                vendor: device.config_read_u16(PCI_VENDOR_ID).map_err(dev_err)?,
                device: device.config_read_u16(PCI_DEVICE_ID).map_err(dev_err)?,
            });
        }
        let map = device.map_region(0).map_err(dev_err)?;
        let nvme = Nvme::with_registers(Bar0::new(map), bdf, opts)?;
        device.set_bus_master(true).map_err(dev_err)?;
        Ok(nvme)
    }
}

impl<B: Backing> Nvme<B> {
    /// Takes over the controller behind `registers` (BAR0 of `bdf`, which names it in
    /// errors): checks CAP (NVM command set, 4 KiB pages, the queue depth under
    /// CAP.MQES) and disables it (waiting at most CAP.TO). [`open`](Nvme::open) does
    /// this for VFIO; the unit tests for their controller model.
    ///
    /// # Errors
    ///
    /// [`NvmeError::Unsupported`], [`NvmeError::ReadyTimeout`], [`NvmeError::Device`]
    /// and [`NvmeError::Revoked`] (register access).
    pub fn with_registers(
        registers: B::Registers,
        bdf: Bdf,
        opts: NvmeOptions,
    ) -> Result<Nvme<B>, NvmeError> {
        let regs = Registers::new(registers, bdf)?;
        let cap = regs.cap();
        let unsupported = |what: String, fix| NvmeError::Unsupported { bdf, what, fix };
        if !cap.nvm_command_set {
            return Err(unsupported(
                "CAP.CSS lacks the NVM command set".into(),
                "use a controller with NVM namespaces",
            ));
        }
        if cap.page_min > PAGE || cap.page_max < PAGE {
            return Err(unsupported(
                format!(
                    "memory page sizes {} to {} bytes exclude 4 KiB",
                    cap.page_min, cap.page_max
                ),
                "this driver uses 4 KiB pages only",
            ));
        }
        let mut opts = opts;
        opts.queue_depth = queue_depth_for(opts.queue_depth, cap.max_queue_entries)
            .map_err(|what| unsupported(what, "ask for a queue depth inside that range"))?;
        regs.disable()?;
        Ok(Nvme {
            regs,
            bdf,
            opts,
            started: None,
            stall_next: false,
        })
    }

    /// Test hook for the timeout path: the next [`transfer`](Self::transfer) writes its
    /// commands into the submission queue but never rings the doorbell, so the controller
    /// never sees them and the transfer fails with [`NvmeError::CommandTimeout`] after the
    /// command timeout (and recovers the controller, as every error does). Only with
    /// the feature `testing` (and in this crate's unit tests).
    #[cfg(any(test, feature = "testing"))]
    pub fn stall_next_transfer(&mut self) {
        self.stall_next = true;
    }

    /// The controller.
    pub fn bdf(&self) -> Bdf {
        self.bdf
    }

    /// The options it runs with.
    pub fn options(&self) -> NvmeOptions {
        self.opts
    }

    /// Identify Controller's answer (after [`start`](Self::start)).
    pub fn controller(&self) -> Option<&ControllerInfo> {
        self.started.as_ref().and_then(|s| s.ctrl.as_ref())
    }

    /// Identify Namespace's answer for the namespace in use (after [`start`](Self::start)).
    pub fn namespace(&self) -> Option<NamespaceInfo> {
        self.started.as_ref().and_then(|s| s.ns)
    }

    /// Whether data pointers are SGLs (after [`start`](Self::start)): asked for, or
    /// [`DataPointer::Auto`] and the controller offers them.
    pub fn uses_sgl(&self) -> bool {
        match self.opts.data_pointer {
            DataPointer::Prp => false,
            DataPointer::Sgl => true,
            DataPointer::Auto => self.controller().is_some_and(|c| c.sgl),
        }
    }

    /// Bytes one command moves: the transfer size, capped by MDTS, by one PRP list with
    /// PRPs and by 65536 blocks (the count field), rounded down to whole blocks (at least
    /// one block).
    pub fn command_bytes(&self) -> u64 {
        let mut n = self.opts.transfer_size;
        if !self.uses_sgl() {
            n = n.min(MAX_PRP_BYTES);
        }
        if let Some(m) = self.controller().and_then(|c| c.mdts_bytes) {
            n = n.min(m);
        }
        let bs = self.namespace().map_or(512, |ns| u64::from(ns.block_size));
        (n / bs * bs)
            .clamp(bs, bs * 65536)
            .min(u64::from(u32::MAX) / bs * bs)
    }

    /// Why [`command_bytes`](Self::command_bytes) differs from the transfer size asked
    /// for (after [`start`](Self::start)): "rounded down to whole 4096-byte blocks",
    /// "raised to one 4096-byte block", "capped by the controller's MDTS (N bytes)", ...;
    /// `None` when it is the size asked for.
    pub fn command_bytes_note(&self) -> Option<String> {
        let asked = self.opts.transfer_size;
        let got = self.command_bytes();
        if got == asked {
            return None;
        }
        let bs = self.namespace().map_or(512, |ns| u64::from(ns.block_size));
        let mdts = self.controller().and_then(|c| c.mdts_bytes);
        Some(if asked < bs {
            format!("raised to one {bs}-byte block, the namespace's smallest transfer")
        } else if let Some(m) =
            mdts.filter(|&m| m < asked && (self.uses_sgl() || m <= MAX_PRP_BYTES))
        {
            format!("capped by the controller's MDTS ({m} bytes)")
        } else if !self.uses_sgl() && asked > MAX_PRP_BYTES {
            format!("capped by one PRP list ({MAX_PRP_BYTES} bytes)")
        } else if !asked.is_multiple_of(bs) {
            format!("rounded down to whole {bs}-byte blocks")
        } else {
            format!("capped at 65536 blocks of {bs} bytes")
        })
    }

    /// Allocates the queues, Identify page and PRP lists from `memory` (for VFIO the
    /// [`Ioas`] the device is attached to: mapped there) and brings the controller up:
    /// admin queue, enable, Identify Controller and Namespace, one I/O queue (an SQ and its CQ).
    ///
    /// # Errors
    ///
    /// [`NvmeError::Iommufd`] when the memory cannot be mapped, and
    /// [`recover`](Self::recover)'s errors.
    pub fn start(&mut self, memory: &B::Memory) -> Result<(), NvmeError> {
        let bdf = self.bdf;
        let ioerr = |source| NvmeError::Iommufd { bdf, source };
        let qd = self.opts.queue_depth;
        let started = Started {
            admin: Queue::new(memory, 0, ADMIN_ENTRIES).map_err(ioerr)?,
            io: Queue::new(memory, 1, qd + 1).map_err(ioerr)?,
            identify: memory
                .alloc(NVME_IDENTIFY_DATA_SIZE, Prot::Write)
                .map_err(ioerr)?,
            prp_lists: memory
                .alloc(qd as usize * PAGE as usize, Prot::Read)
                .map_err(ioerr)?,
            ctrl: None,
            ns: None,
            admin_cid: 0,
            ready: false,
        };
        self.started = Some(started);
        self.recover()
    }

    /// Resets the controller (CC.EN = 0, at most CAP.TO) and brings it up again with
    /// fresh queues: what every error path does, and what a caller does to reuse it.
    ///
    /// # Errors
    ///
    /// [`NvmeError::ReadyTimeout`], [`NvmeError::Fatal`], [`NvmeError::CommandTimeout`]
    /// and [`NvmeError::Command`] from the admin commands, [`NvmeError::NoNamespace`],
    /// [`NvmeError::Metadata`] (a namespace formatted with metadata, refused before any
    /// I/O command), [`NvmeError::Unsupported`] before [`start`](Self::start).
    pub fn recover(&mut self) -> Result<(), NvmeError> {
        let bdf = self.bdf;
        let s = self.started.as_mut().ok_or(NvmeError::Unsupported {
            bdf,
            what: "the controller has no queues yet".into(),
            fix: "start it in an IOAS first",
        })?;
        s.ready = false;
        self.regs.disable()?;
        let s = self.started.as_mut().expect("checked above");
        s.admin.reset();
        s.io.reset();
        self.regs.enable(
            s.admin.sq.iova(),
            s.admin.cq.iova(),
            ADMIN_ENTRIES,
            ADMIN_ENTRIES,
        )?;
        let page_min = self.regs.cap().page_min;
        let data = self.identify(NVME_ID_CNS_CTRL, 0, "Identify Controller")?;
        let ctrl = identify::controller(&data, page_min);
        if self.opts.data_pointer == DataPointer::Sgl && !ctrl.sgl {
            let _ = self.regs.disable();
            return Err(NvmeError::Unsupported {
                bdf,
                what: "the controller offers no SGLs for NVM commands (Identify SGLS)".into(),
                fix: "use PRP data pointers (or let the driver choose)",
            });
        }
        let nsid = self.opts.nsid;
        if nsid == 0 || nsid > ctrl.namespaces {
            let nn = ctrl.namespaces;
            let _ = self.regs.disable();
            return Err(NvmeError::NoNamespace { bdf, nsid, nn });
        }
        let data = self.identify(NVME_ID_CNS_NS, nsid, "Identify Namespace")?;
        let Some(ns) = identify::namespace(nsid, &data) else {
            let _ = self.regs.disable();
            return Err(NvmeError::NoNamespace {
                bdf,
                nsid,
                nn: ctrl.namespaces,
            });
        };
        if ns.has_metadata() {
            let _ = self.regs.disable();
            return Err(NvmeError::Metadata {
                bdf,
                nsid,
                format: ns.format,
                block_size: ns.block_size,
                metadata_size: ns.metadata_size,
                metadata_extended: ns.metadata_extended,
                protection: ns.protection,
                without_metadata: ns.without_metadata,
            });
        }
        let s = self.started.as_mut().expect("started");
        s.ctrl = Some(ctrl);
        s.ns = Some(ns);
        let (cq_entries, cq_iova) = (s.io.cq.entries(), s.io.cq.iova());
        let (sq_entries, sq_iova) = (s.io.sq.entries(), s.io.sq.iova());
        self.admin(
            |cid| command::create_cq(cid, 1, cq_entries, cq_iova),
            "Create I/O Completion Queue",
        )?;
        self.admin(
            |cid| command::create_sq(cid, 1, sq_entries, sq_iova, 1),
            "Create I/O Submission Queue",
        )?;
        self.started.as_mut().expect("started").ready = true;
        Ok(())
    }

    fn identify(
        &mut self,
        cns: u32,
        nsid: u32,
        name: &'static str,
    ) -> Result<[u8; NVME_IDENTIFY_DATA_SIZE], NvmeError> {
        let s = self.started.as_ref().expect("started");
        s.identify.buffer().fill(0);
        let iova = s.identify.iova();
        self.admin(|cid| command::identify(cid, cns, nsid, iova), name)?;
        let mut data = [0u8; NVME_IDENTIFY_DATA_SIZE];
        let s = self.started.as_ref().expect("started");
        s.identify
            .buffer()
            .read(0, &mut data)
            .map_err(|source| NvmeError::Iommufd {
                bdf: self.bdf,
                source,
            })?;
        Ok(data)
    }

    /// One admin command, waited for. On a timeout or error status the controller is
    /// left disabled (reset); the next transfer brings it up again.
    fn admin(
        &mut self,
        build: impl FnOnce(u16) -> nvme_sqe,
        name: &'static str,
    ) -> Result<nvme_cqe, NvmeError> {
        let bdf = self.bdf;
        let timeout = self.opts.command_timeout;
        let s = self.started.as_mut().expect("started");
        let cid = s.admin_cid;
        s.admin_cid = s.admin_cid.wrapping_add(1);
        let desc = CommandDesc {
            name,
            queue: 0,
            cid,
            lba: None,
        };
        s.admin.sq.push(&build(cid));
        s.admin.sq.announce(&self.regs)?;
        let start = Instant::now();
        let mut spins = 0u32;
        let result = loop {
            if let Some(cqe) = s.admin.cq.poll(&self.regs)? {
                if cqe.cid != cid {
                    continue;
                }
                let status = Status::from_cqe(cqe.status);
                break if status.is_success() {
                    Ok(cqe)
                } else {
                    Err(NvmeError::Command {
                        bdf,
                        command: desc,
                        status,
                    })
                };
            }
            spins += 1;
            if spins.is_multiple_of(64) {
                self.regs.check_running(name)?;
                if start.elapsed() >= timeout {
                    break Err(NvmeError::CommandTimeout {
                        bdf,
                        command: desc,
                        after: timeout,
                    });
                }
                std::thread::yield_now();
            }
            std::hint::spin_loop();
        };
        if result.is_err() {
            s.ready = false;
            let _ = self.regs.disable();
        }
        result
    }
}

impl<B: Backing> Drop for Nvme<B> {
    fn drop(&mut self) {
        // Stop the controller before its queue memory is unmapped (the fields drop
        // after this). Nothing to report to from drop: a controller that does not
        // stop in CAP.TO is reset again by the next open.
        let _ = self.regs.disable();
    }
}

impl DmaEngine for Nvme {
    fn name(&self) -> String {
        format!("NVMe {}", self.bdf)
    }

    fn dma_mask(&self) -> u64 {
        // NVMe controllers address 64 bits (PRP entries are 64-bit); the IOMMU's reach
        // is the IOAS's usable ranges.
        u64::MAX
    }

    fn max_transfer(&self) -> u64 {
        self.command_bytes()
    }

    fn start_in(&mut self, ioas: &Ioas) -> EngineResult<()> {
        self.start(ioas).map_err(EngineError::from)
    }

    fn steps_per_copy(&self) -> u32 {
        2
    }

    fn copy(&mut self, src: u64, dst: u64, len: u64) -> EngineResult<TransferReport> {
        let start = Instant::now();
        let mut stats = IoStats::default();
        let lba = self.opts.staging_lba;
        self.transfer(Io::Write, lba, src, len, &mut stats)?;
        let mut back = IoStats::default();
        self.transfer(Io::Read, lba, dst, len, &mut back)?;
        Ok(TransferReport {
            bytes: len,
            transfers: (stats.commands + back.commands) as u32,
            elapsed: start.elapsed(),
            iommu_faults: None,
        })
    }

    fn as_nvme_mut(&mut self) -> Option<&mut Nvme> {
        Some(self)
    }
}

impl From<NvmeError> for EngineError {
    fn from(source: NvmeError) -> Self {
        EngineError::Nvme(Box::new(source))
    }
}

#[cfg(test)]
mod queue_depth_tests {
    use super::*;

    #[test]
    fn the_default_depth_fits_a_small_controller_and_a_given_one_is_checked() {
        // QEMU's default: MQES 2047 (2048 entries); this driver uses at most 1024.
        assert_eq!(queue_depth_for(0, 2048), Ok(DEFAULT_QUEUE_DEPTH));
        assert_eq!(queue_depth_for(1023, 2048), Ok(1023));
        assert!(queue_depth_for(1024, 2048).is_err());
        // MQES 15: 16 entries, 15 in flight; the default lowers to it.
        assert_eq!(queue_depth_for(0, 16), Ok(15));
        assert_eq!(queue_depth_for(15, 16), Ok(15));
        let e = queue_depth_for(32, 16).unwrap_err();
        assert!(
            e.contains("16 entries") && e.contains("CAP.MQES 15") && e.contains("1 to 15"),
            "{e}"
        );
    }
}
