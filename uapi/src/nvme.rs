//! NVMe (NVM Express Base Specification 2.0c, NVM Command Set Specification 1.0c): the
//! controller registers a PCIe controller maps in BAR0, the submission and completion
//! queue entry layouts, and the opcode and status values a user-space driver needs.
//!
//! No kernel header carries these (`linux/nvme_ioctl.h` only has the passthrough ioctl
//! structs), so the layout is checked against the specification's tables by the unit
//! test at the end of this file instead of by `tests/tests/layout.rs`. Names follow the
//! specification's field mnemonics (`CAP`, `CC`, `CSTS`, `AQA`, `ASQ`, `ACQ`, `CDW10`).

// ---- Controller registers (Base spec "Controller Properties") ----

/// Controller Capabilities (64 bits, read-only).
pub const NVME_REG_CAP: usize = 0x00;
/// Version (32 bits).
pub const NVME_REG_VS: usize = 0x08;
/// Interrupt Mask Set (32 bits).
pub const NVME_REG_INTMS: usize = 0x0c;
/// Interrupt Mask Clear (32 bits).
pub const NVME_REG_INTMC: usize = 0x10;
/// Controller Configuration (32 bits).
pub const NVME_REG_CC: usize = 0x14;
/// Controller Status (32 bits).
pub const NVME_REG_CSTS: usize = 0x1c;
/// Admin Queue Attributes (32 bits).
pub const NVME_REG_AQA: usize = 0x24;
/// Admin Submission Queue Base Address (64 bits).
pub const NVME_REG_ASQ: usize = 0x28;
/// Admin Completion Queue Base Address (64 bits).
pub const NVME_REG_ACQ: usize = 0x30;
/// Controller Memory Buffer Location (32 bits).
pub const NVME_REG_CMBLOC: usize = 0x38;
/// Controller Memory Buffer Size (32 bits).
pub const NVME_REG_CMBSZ: usize = 0x3c;
/// First doorbell (Submission Queue 0 Tail); queue `y`'s SQ tail doorbell
/// is at `0x1000 + (2y) * (4 << CAP.DSTRD)`, its CQ head doorbell at `(2y + 1)`.
pub const NVME_REG_DBS: usize = 0x1000;

// CAP fields: bit positions and widths.

/// CAP.MQES: maximum queue entries supported, 0's based (bits 15:0).
pub const NVME_CAP_MQES_MASK: u64 = 0xffff;
/// CAP.CQR: contiguous queues required (bit 16).
pub const NVME_CAP_CQR_SHIFT: u32 = 16;
/// CAP.TO: worst-case time to ready, in 500 ms units (bits 31:24).
pub const NVME_CAP_TO_SHIFT: u32 = 24;
/// CAP.DSTRD: doorbell stride, `4 << DSTRD` bytes (bits 35:32).
pub const NVME_CAP_DSTRD_SHIFT: u32 = 32;
/// CAP.CSS: command sets supported (bits 44:37); bit 0 of the field is the NVM set.
pub const NVME_CAP_CSS_SHIFT: u32 = 37;
/// CAP.MPSMIN: minimum memory page size, `2^(12 + MPSMIN)` (bits 51:48).
pub const NVME_CAP_MPSMIN_SHIFT: u32 = 48;
/// CAP.MPSMAX: maximum memory page size (bits 55:52).
pub const NVME_CAP_MPSMAX_SHIFT: u32 = 52;

// CC fields.

/// CC.EN: enable (bit 0).
pub const NVME_CC_EN: u32 = 1 << 0;
/// CC.CSS: I/O command set selected (bits 6:4); 0 = NVM command set.
pub const NVME_CC_CSS_SHIFT: u32 = 4;
/// CC.MPS: memory page size, `2^(12 + MPS)` (bits 10:7).
pub const NVME_CC_MPS_SHIFT: u32 = 7;
/// CC.AMS: arbitration mechanism (bits 13:11); 0 = round robin.
pub const NVME_CC_AMS_SHIFT: u32 = 11;
/// CC.SHN: shutdown notification (bits 15:14); 1 = normal shutdown.
pub const NVME_CC_SHN_SHIFT: u32 = 14;
/// CC.IOSQES: I/O submission queue entry size, `2^n` (bits 19:16).
pub const NVME_CC_IOSQES_SHIFT: u32 = 16;
/// CC.IOCQES: I/O completion queue entry size, `2^n` (bits 23:20).
pub const NVME_CC_IOCQES_SHIFT: u32 = 20;

// CSTS fields.

/// CSTS.RDY: ready (bit 0).
pub const NVME_CSTS_RDY: u32 = 1 << 0;
/// CSTS.CFS: controller fatal status (bit 1).
pub const NVME_CSTS_CFS: u32 = 1 << 1;
/// CSTS.SHST: shutdown status (bits 3:2).
pub const NVME_CSTS_SHST_SHIFT: u32 = 2;

// ---- Queue entries ("Submission Queue Entry", "Completion Queue Entry") ----

/// A submission queue entry: 64 bytes (Common Command Format).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct nvme_sqe {
    /// Command Dword 0: opcode (7:0), fused (9:8), PSDT (15:14), command identifier (31:16).
    pub cdw0: u32,
    /// Namespace identifier.
    pub nsid: u32,
    /// Command Dword 2.
    pub cdw2: u32,
    /// Command Dword 3.
    pub cdw3: u32,
    /// Metadata pointer.
    pub mptr: u64,
    /// Data pointer: PRP entry 1.
    pub prp1: u64,
    /// Data pointer: PRP entry 2 (or the PRP list's address).
    pub prp2: u64,
    /// Command Dword 10.
    pub cdw10: u32,
    /// Command Dword 11.
    pub cdw11: u32,
    /// Command Dword 12.
    pub cdw12: u32,
    /// Command Dword 13.
    pub cdw13: u32,
    /// Command Dword 14.
    pub cdw14: u32,
    /// Command Dword 15.
    pub cdw15: u32,
}
const _: () = assert!(size_of::<nvme_sqe>() == 64);

/// A completion queue entry: 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct nvme_cqe {
    /// Dword 0: command specific.
    pub result: u32,
    /// Dword 1: command specific.
    pub dw1: u32,
    /// SQ Head Pointer.
    pub sq_head: u16,
    /// SQ Identifier.
    pub sq_id: u16,
    /// Command Identifier.
    pub cid: u16,
    /// Phase tag (bit 0) and Status Field (bits 15:1).
    pub status: u16,
}
const _: () = assert!(size_of::<nvme_cqe>() == 16);

/// log2 of the submission queue entry size (CC.IOSQES).
pub const NVME_SQES_LOG2: u32 = 6;
/// log2 of the completion queue entry size (CC.IOCQES).
pub const NVME_CQES_LOG2: u32 = 4;

// Status field ("Status Field Definition"), as in `nvme_cqe::status`.

/// Phase tag bit.
pub const NVME_CQE_PHASE: u16 = 1 << 0;
/// Status Code (SC): bits 8:1 of `status`.
pub const NVME_STATUS_SC_SHIFT: u32 = 1;
/// Status Code Type (SCT): bits 11:9 of `status`.
pub const NVME_STATUS_SCT_SHIFT: u32 = 9;
/// Do Not Retry: bit 15 of `status`.
pub const NVME_STATUS_DNR: u16 = 1 << 15;

/// SCT 0: Generic Command Status.
pub const NVME_SCT_GENERIC: u8 = 0;
/// SCT 1: Command Specific Status.
pub const NVME_SCT_COMMAND_SPECIFIC: u8 = 1;
/// SCT 2: Media and Data Integrity Errors.
pub const NVME_SCT_MEDIA: u8 = 2;
/// SCT 3: Path Related Status.
pub const NVME_SCT_PATH: u8 = 3;

// ---- Opcodes (Base spec "Admin Command Set"; NVM Command Set spec "I/O Commands") ----

/// Admin: Delete I/O Submission Queue.
pub const NVME_ADMIN_DELETE_SQ: u8 = 0x00;
/// Admin: Create I/O Submission Queue.
pub const NVME_ADMIN_CREATE_SQ: u8 = 0x01;
/// Admin: Delete I/O Completion Queue.
pub const NVME_ADMIN_DELETE_CQ: u8 = 0x04;
/// Admin: Create I/O Completion Queue.
pub const NVME_ADMIN_CREATE_CQ: u8 = 0x05;
/// Admin: Identify.
pub const NVME_ADMIN_IDENTIFY: u8 = 0x06;
/// Admin: Set Features.
pub const NVME_ADMIN_SET_FEATURES: u8 = 0x09;
/// NVM: Flush.
pub const NVME_CMD_FLUSH: u8 = 0x00;
/// NVM: Write.
pub const NVME_CMD_WRITE: u8 = 0x01;
/// NVM: Read.
pub const NVME_CMD_READ: u8 = 0x02;

/// Identify CNS 0x00: Identify Namespace (NVM command set, NVM command set spec).
pub const NVME_ID_CNS_NS: u32 = 0x00;
/// Identify CNS 0x01: Identify Controller (Base spec).
pub const NVME_ID_CNS_CTRL: u32 = 0x01;
/// Identify CNS 0x02: Active Namespace ID list.
pub const NVME_ID_CNS_NS_ACTIVE_LIST: u32 = 0x02;
/// Size of every Identify data structure.
pub const NVME_IDENTIFY_DATA_SIZE: usize = 4096;

/// Set Features FID 0x07: Number of Queues.
pub const NVME_FEAT_NUM_QUEUES: u32 = 0x07;

/// CDW0 PSDT (bits 15:14) = 01b: the data pointer is an SGL (metadata pointer an address).
pub const NVME_CMD_PSDT_SGL: u32 = 1 << 14;
/// SGL descriptor identifier (byte 15 of the descriptor): Data Block, Address sub type.
pub const NVME_SGL_DATA_BLOCK: u8 = 0x00;

/// Create I/O CQ / SQ CDW11 bit 0: physically contiguous.
pub const NVME_QUEUE_PHYS_CONTIG: u32 = 1 << 0;

// ---- Identify Controller data (Base spec, Identify Controller Data Structure): byte offsets ----

/// PCI Vendor ID (2 bytes).
pub const NVME_ID_CTRL_VID: usize = 0;
/// Serial Number (20 ASCII bytes).
pub const NVME_ID_CTRL_SN: usize = 4;
/// Model Number (40 ASCII bytes).
pub const NVME_ID_CTRL_MN: usize = 24;
/// Firmware Revision (8 ASCII bytes).
pub const NVME_ID_CTRL_FR: usize = 64;
/// Maximum Data Transfer Size: `2^MDTS` units of CAP.MPSMIN pages; 0 = no limit (1 byte).
pub const NVME_ID_CTRL_MDTS: usize = 77;
/// Controller ID (2 bytes).
pub const NVME_ID_CTRL_CNTLID: usize = 78;
/// Submission Queue Entry Size (1 byte: required 3:0, maximum 7:4, log2).
pub const NVME_ID_CTRL_SQES: usize = 512;
/// Completion Queue Entry Size (1 byte).
pub const NVME_ID_CTRL_CQES: usize = 513;
/// Number of Namespaces (4 bytes).
pub const NVME_ID_CTRL_NN: usize = 516;
/// SGL Support (4 bytes): bits 1:0 non-zero when SGLs are supported for NVM commands.
pub const NVME_ID_CTRL_SGLS: usize = 536;

// ---- Identify Namespace data (NVM spec, Identify Namespace Data Structure): byte offsets ----

/// Namespace Size in logical blocks (8 bytes).
pub const NVME_ID_NS_NSZE: usize = 0;
/// Namespace Capacity (8 bytes).
pub const NVME_ID_NS_NCAP: usize = 8;
/// Number of LBA Formats, 0's based (1 byte).
pub const NVME_ID_NS_NLBAF: usize = 25;
/// Formatted LBA Size (1 byte): bits 3:0 the format index (its low bits), bit 4 set when
/// metadata is transferred at the end of each logical block (an extended LBA) rather
/// than in a separate buffer, bits 6:5 the format index's high bits (NLBAF > 16).
pub const NVME_ID_NS_FLBAS: usize = 26;
/// FLBAS bit 4: metadata inline at the end of each block (extended LBA).
pub const NVME_ID_NS_FLBAS_EXTENDED: u8 = 1 << 4;
/// Metadata Capabilities (1 byte): bit 0 extended LBA supported, bit 1 separate buffer.
pub const NVME_ID_NS_MC: usize = 27;
/// End-to-end Data Protection Settings (1 byte): bits 2:0 the protection information
/// type (0: none, 1 to 3: Type 1 to 3), bit 3 PI in the first bytes of the metadata.
pub const NVME_ID_NS_DPS: usize = 29;
/// LBA Format 0 Support (4 bytes each, up to 64 of them): metadata size in bytes (15:0),
/// LBA data size as log2 (23:16), relative performance (25:24).
pub const NVME_ID_NS_LBAF: usize = 128;
/// How many LBA Format entries the Identify Namespace page has room for (NLBAF + 1 ≤ 64).
pub const NVME_ID_NS_LBAF_MAX: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn queue_entries_match_the_spec_figures() {
        // Common Command Format: DW0 0, NSID 4, CDW2 8, CDW3 12, MPTR 16, DPTR 24..40, CDW10 40..64.
        assert_eq!(offset_of!(nvme_sqe, cdw0), 0);
        assert_eq!(offset_of!(nvme_sqe, nsid), 4);
        assert_eq!(offset_of!(nvme_sqe, mptr), 16);
        assert_eq!(offset_of!(nvme_sqe, prp1), 24);
        assert_eq!(offset_of!(nvme_sqe, prp2), 32);
        assert_eq!(offset_of!(nvme_sqe, cdw10), 40);
        assert_eq!(offset_of!(nvme_sqe, cdw15), 60);
        assert_eq!(1 << NVME_SQES_LOG2, size_of::<nvme_sqe>());
        // Completion Queue Entry: DW2 holds SQHD (15:0) and SQID (31:16); DW3 CID (15:0), P and SF.
        assert_eq!(offset_of!(nvme_cqe, sq_head), 8);
        assert_eq!(offset_of!(nvme_cqe, sq_id), 10);
        assert_eq!(offset_of!(nvme_cqe, cid), 12);
        assert_eq!(offset_of!(nvme_cqe, status), 14);
        assert_eq!(1 << NVME_CQES_LOG2, size_of::<nvme_cqe>());
    }

    #[test]
    fn registers_and_identify_offsets_match_the_spec_tables() {
        assert_eq!(NVME_REG_CC, 0x14);
        assert_eq!(NVME_REG_ACQ, 0x30);
        assert_eq!(NVME_REG_DBS, 0x1000);
        assert_eq!(NVME_ID_CTRL_MN - NVME_ID_CTRL_SN, 20);
        assert_eq!(NVME_ID_CTRL_FR - NVME_ID_CTRL_MN, 40);
        assert_eq!(NVME_ID_CTRL_SQES + 1, NVME_ID_CTRL_CQES);
        assert_eq!(NVME_ID_NS_LBAF + 16 * 4, 192);
        assert_eq!(NVME_ID_NS_LBAF + NVME_ID_NS_LBAF_MAX * 4, 384);
        assert_eq!((NVME_ID_NS_MC, NVME_ID_NS_DPS), (27, 29));
    }
}
