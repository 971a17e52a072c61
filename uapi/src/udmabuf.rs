//! udmabuf (`linux/udmabuf.h`): `/dev/udmabuf` turns memfd pages into a dma-buf, the
//! system-memory counterpart peerdma compares BAR buffers with. Written here.

use rustix::ioctl::{opcode, Opcode};

use crate::ioctl::FdOut;

/// `UDMABUF_CREATE` argument: one page-aligned range of a sealed memfd.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct udmabuf_create {
    /// The memfd (must be sealed against shrinking, `F_SEAL_SHRINK`).
    pub memfd: u32,
    /// `UDMABUF_FLAGS_CLOEXEC` or 0.
    pub flags: u32,
    /// Page-aligned offset in the memfd.
    pub offset: u64,
    /// Page-aligned length.
    pub size: u64,
}
const _: () = assert!(size_of::<udmabuf_create>() == 24);

/// Creation flag: the new dma-buf fd is close-on-exec.
pub const UDMABUF_FLAGS_CLOEXEC: u32 = 0x01;

/// The ioctl type byte of udmabuf (the header writes `'u'` inline).
const UDMABUF_IOCTL_BASE: u8 = b'u';
/// Creates a dma-buf from one memfd range ([`udmabuf_create`]); returns the fd.
pub const UDMABUF_CREATE: Opcode = opcode::write::<udmabuf_create>(UDMABUF_IOCTL_BASE, 0x42);

/// `UDMABUF_CREATE` bound to its argument; returns the new dma-buf fd.
pub type UdmabufCreate<'a> = FdOut<'a, UDMABUF_CREATE, udmabuf_create>;
