//! dma-buf (`linux/dma-buf.h`): ioctls on any dma-buf fd. Written here (no bindings crate).

use rustix::ioctl::{opcode, Opcode};

/// `DMA_BUF_IOCTL_SYNC` argument: brackets CPU access to an mmapped dma-buf.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct dma_buf_sync {
    /// `DMA_BUF_SYNC_START` or `DMA_BUF_SYNC_END`, or-ed with the access direction.
    pub flags: u64,
}
const _: () = assert!(size_of::<dma_buf_sync>() == 8);

/// `DMA_BUF_IOCTL_EXPORT_SYNC_FILE` argument: returns a sync_file fd for the buffer's
/// current fences.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct dma_buf_export_sync_file {
    /// `DMA_BUF_SYNC_READ` and/or `DMA_BUF_SYNC_WRITE`: which fences to wait for.
    pub flags: u32,
    /// Out: the new sync_file fd.
    pub fd: i32,
}
const _: () = assert!(size_of::<dma_buf_export_sync_file>() == 8);

/// `DMA_BUF_IOCTL_IMPORT_SYNC_FILE` argument: adds a sync_file's fence to the buffer.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct dma_buf_import_sync_file {
    /// `DMA_BUF_SYNC_READ` and/or `DMA_BUF_SYNC_WRITE`: the kind of fence to add.
    pub flags: u32,
    /// The sync_file fd.
    pub fd: i32,
}
const _: () = assert!(size_of::<dma_buf_import_sync_file>() == 8);

/// Sync flag: the CPU reads.
pub const DMA_BUF_SYNC_READ: u64 = 1;
/// Sync flag: the CPU writes.
pub const DMA_BUF_SYNC_WRITE: u64 = 1 << 1;
/// Sync flag: the CPU reads and writes.
pub const DMA_BUF_SYNC_RW: u64 = DMA_BUF_SYNC_READ | DMA_BUF_SYNC_WRITE;
/// Sync flag: CPU access starts (the value 0; the absence of `DMA_BUF_SYNC_END`).
pub const DMA_BUF_SYNC_START: u64 = 0 << 2;
/// Sync flag: CPU access ends.
pub const DMA_BUF_SYNC_END: u64 = 1 << 2;
/// Every flag `DMA_BUF_IOCTL_SYNC` accepts.
pub const DMA_BUF_SYNC_VALID_FLAGS_MASK: u64 = DMA_BUF_SYNC_RW | DMA_BUF_SYNC_END;
/// Longest dma-buf name, NUL included (names show in `/proc/*/fdinfo` and debugfs).
pub const DMA_BUF_NAME_LEN: usize = 32;

/// The ioctl type byte of dma-buf (`'b'`).
pub const DMA_BUF_BASE: u8 = b'b';
/// Begins or ends CPU access ([`dma_buf_sync`]).
pub const DMA_BUF_IOCTL_SYNC: Opcode = opcode::write::<dma_buf_sync>(DMA_BUF_BASE, 0);
/// Names the buffer (argument: pointer to a NUL-terminated string); the number
/// encoded with a 32-bit size, as 32-bit user space computes it.
pub const DMA_BUF_SET_NAME_A: Opcode = opcode::write::<u32>(DMA_BUF_BASE, 1);
/// Names the buffer (argument: pointer to a NUL-terminated string); the number
/// encoded with a 64-bit size, the one 64-bit user space uses.
pub const DMA_BUF_SET_NAME_B: Opcode = opcode::write::<u64>(DMA_BUF_BASE, 1);
/// Exports the buffer's fences as a sync_file ([`dma_buf_export_sync_file`]).
pub const DMA_BUF_IOCTL_EXPORT_SYNC_FILE: Opcode =
    opcode::read_write::<dma_buf_export_sync_file>(DMA_BUF_BASE, 2);
/// Imports a sync_file fence into the buffer ([`dma_buf_import_sync_file`]).
pub const DMA_BUF_IOCTL_IMPORT_SYNC_FILE: Opcode =
    opcode::write::<dma_buf_import_sync_file>(DMA_BUF_BASE, 3);
