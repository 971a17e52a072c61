//! Building commands: submission queue entries for the admin and NVM commands this
//! driver issues, and the data pointer that describes a buffer: PRP entries (Base spec
//! "Physical Region Page Entry and List") or one SGL Data Block descriptor (Base spec
//! "Scatter Gather List (SGL)").
//!
//! Data buffers are contiguous in IOVA (a BAR's dma-buf or a host buffer mapped in one
//! piece), so a PRP list is a run of consecutive page addresses, and an SGL is a single
//! Data Block descriptor in the command itself. One PRP list page holds 512 entries and
//! is never chained: a PRP command moves at most [`MAX_PRP_BYTES`].

use peerdma_uapi::nvme::*;

/// The memory page size the driver programs (CC.MPS = 0): 4 KiB.
pub const PAGE: u64 = 4096;

/// PRP entries in one list page.
pub const PRP_PER_LIST: u64 = PAGE / 8;

/// Most bytes one command can describe with PRP1 and one unchained list page.
pub const MAX_PRP_BYTES: u64 = PRP_PER_LIST * PAGE;

/// Direction of an I/O command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Io {
    /// Namespace → memory.
    Read,
    /// Memory → namespace.
    Write,
}

impl Io {
    /// The command's name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Io::Read => "Read",
            Io::Write => "Write",
        }
    }

    fn opcode(self) -> u8 {
        match self {
            Io::Read => NVME_CMD_READ,
            Io::Write => NVME_CMD_WRITE,
        }
    }
}

/// Where PRP2 points and what the list page holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prp {
    /// PRP entry 1: the data's first byte.
    pub prp1: u64,
    /// PRP entry 2: zero, the second page, or the list page's IOVA.
    pub prp2: u64,
    /// Entries to write into the list page (empty when PRP2 is not a list).
    pub list: Vec<u64>,
}

/// The PRP entries for `len` bytes at `iova` (dword aligned, `0 < len <=`
/// [`MAX_PRP_BYTES`]), with `list_iova` the command's list page.
pub fn prp(iova: u64, len: u64, list_iova: u64) -> Prp {
    debug_assert!(len > 0 && len <= MAX_PRP_BYTES && iova.is_multiple_of(4));
    let first = PAGE - iova % PAGE;
    if len <= first {
        return Prp {
            prp1: iova,
            prp2: 0,
            list: Vec::new(),
        };
    }
    let second = iova + first;
    let rest = len - first;
    if rest <= PAGE {
        return Prp {
            prp1: iova,
            prp2: second,
            list: Vec::new(),
        };
    }
    let pages = rest.div_ceil(PAGE);
    Prp {
        prp1: iova,
        prp2: list_iova,
        list: (0..pages).map(|i| second + i * PAGE).collect(),
    }
}

/// A command's data pointer (DPTR).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dptr {
    /// PRP entries (and a list page).
    Prp(Prp),
    /// One SGL Data Block descriptor: `len` bytes at `addr`.
    Sgl {
        /// First byte.
        addr: u64,
        /// Length in bytes.
        len: u32,
    },
}

fn cdw0(opcode: u8, cid: u16) -> u32 {
    u32::from(opcode) | (u32::from(cid) << 16)
}

/// Identify (CNS `cns`, namespace `nsid`) into the 4 KiB page at `data`.
pub fn identify(cid: u16, cns: u32, nsid: u32, data: u64) -> nvme_sqe {
    nvme_sqe {
        cdw0: cdw0(NVME_ADMIN_IDENTIFY, cid),
        nsid,
        prp1: data,
        cdw10: cns,
        ..Default::default()
    }
}

/// Create I/O Completion Queue `qid` of `entries` at `iova`, physically contiguous,
/// interrupts off (completions are polled).
pub fn create_cq(cid: u16, qid: u16, entries: u32, iova: u64) -> nvme_sqe {
    nvme_sqe {
        cdw0: cdw0(NVME_ADMIN_CREATE_CQ, cid),
        prp1: iova,
        cdw10: ((entries - 1) << 16) | u32::from(qid),
        cdw11: NVME_QUEUE_PHYS_CONTIG,
        ..Default::default()
    }
}

/// Create I/O Submission Queue `qid` of `entries` at `iova`, completing to CQ `cqid`.
pub fn create_sq(cid: u16, qid: u16, entries: u32, iova: u64, cqid: u16) -> nvme_sqe {
    nvme_sqe {
        cdw0: cdw0(NVME_ADMIN_CREATE_SQ, cid),
        prp1: iova,
        cdw10: ((entries - 1) << 16) | u32::from(qid),
        cdw11: (u32::from(cqid) << 16) | NVME_QUEUE_PHYS_CONTIG,
        ..Default::default()
    }
}

/// Delete I/O Submission (`sq`) or Completion Queue `qid`.
pub fn delete_queue(cid: u16, qid: u16, sq: bool) -> nvme_sqe {
    nvme_sqe {
        cdw0: cdw0(
            if sq {
                NVME_ADMIN_DELETE_SQ
            } else {
                NVME_ADMIN_DELETE_CQ
            },
            cid,
        ),
        cdw10: u32::from(qid),
        ..Default::default()
    }
}

/// Read or Write of `blocks` (1..=65536) blocks at `lba` of namespace `nsid`.
pub fn io(cid: u16, dir: Io, nsid: u32, lba: u64, blocks: u32, dptr: &Dptr) -> nvme_sqe {
    debug_assert!((1..=65536).contains(&blocks));
    let (psdt, dptr1, dptr2) = match dptr {
        Dptr::Prp(p) => (0, p.prp1, p.prp2),
        // Descriptor bytes 0..8 address, 8..12 length, 15 identifier: the second
        // quadword is the length with the identifier in its top byte.
        Dptr::Sgl { addr, len } => (
            NVME_CMD_PSDT_SGL,
            *addr,
            u64::from(*len) | (u64::from(NVME_SGL_DATA_BLOCK) << 56),
        ),
    };
    nvme_sqe {
        cdw0: cdw0(dir.opcode(), cid) | psdt,
        nsid,
        prp1: dptr1,
        prp2: dptr2,
        cdw10: lba as u32,
        cdw11: (lba >> 32) as u32,
        cdw12: blocks - 1,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prp_entries_cover_one_two_and_many_pages() {
        let one = prp(0x10000, 4096, 0x9000);
        assert_eq!((one.prp1, one.prp2, one.list.len()), (0x10000, 0, 0));
        let two = prp(0x10000, 8192, 0x9000);
        assert_eq!((two.prp2, two.list.len()), (0x11000, 0));
        // An offset into the first page: 0x800 bytes there, then whole pages.
        let off = prp(0x10800, 0x800 + 4096, 0x9000);
        assert_eq!(off.prp2, 0x11000);
        let many = prp(0x10000, 16 * 4096, 0x9000);
        assert_eq!(many.prp2, 0x9000);
        assert_eq!(many.list.len(), 15);
        assert_eq!(many.list[0], 0x11000);
        assert_eq!(many.list[14], 0x1f000);
        let max = prp(0x10000, MAX_PRP_BYTES, 0x9000);
        assert_eq!(max.list.len() as u64, PRP_PER_LIST - 1);
    }

    /// The SQE's bytes as the controller reads them (little endian, field by field).
    fn unsafe_free_bytes(s: &nvme_sqe) -> [u8; 64] {
        let mut b = [0u8; 64];
        let dw = [s.cdw0, s.nsid, s.cdw2, s.cdw3];
        for (i, d) in dw.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&d.to_le_bytes());
        }
        b[16..24].copy_from_slice(&s.mptr.to_le_bytes());
        b[24..32].copy_from_slice(&s.prp1.to_le_bytes());
        b[32..40].copy_from_slice(&s.prp2.to_le_bytes());
        let rest = [s.cdw10, s.cdw11, s.cdw12, s.cdw13, s.cdw14, s.cdw15];
        for (i, d) in rest.iter().enumerate() {
            b[40 + i * 4..44 + i * 4].copy_from_slice(&d.to_le_bytes());
        }
        b
    }

    #[test]
    fn io_commands_carry_lba_and_zero_based_count() {
        let p = Dptr::Prp(prp(0x1000, 4096, 0));
        let c = io(5, Io::Read, 1, 0x1_0000_0002, 8, &p);
        assert_eq!(c.cdw0, 0x0005_0002);
        assert_eq!((c.cdw10, c.cdw11, c.cdw12), (2, 1, 7));
        let w = io(6, Io::Write, 1, 0, 1, &p);
        assert_eq!(w.cdw0 & 0xff, 1);
        // An SGL Data Block: PSDT 01b, address in DPTR bytes 0..8, length in 8..12,
        // identifier 0x00 in byte 15.
        let s = io(
            7,
            Io::Read,
            1,
            0,
            2048,
            &Dptr::Sgl {
                addr: 0x20_0000,
                len: 1 << 20,
            },
        );
        assert_eq!(s.cdw0 >> 14 & 0x3, 1);
        assert_eq!((s.prp1, s.prp2), (0x20_0000, 1 << 20));
        let bytes: [u8; 64] = unsafe_free_bytes(&s);
        assert_eq!(&bytes[24..32], &0x20_0000u64.to_le_bytes());
        assert_eq!(&bytes[32..36], &(1u32 << 20).to_le_bytes());
        assert_eq!(bytes[39], NVME_SGL_DATA_BLOCK);
        let q = create_sq(1, 1, 64, 0x4000, 1);
        assert_eq!((q.cdw10, q.cdw11), ((63 << 16) | 1, (1 << 16) | 1));
    }
}
