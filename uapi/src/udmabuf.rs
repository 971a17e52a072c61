//! udmabuf (`linux/udmabuf.h`): `/dev/udmabuf` turns memfd pages into a dma-buf, the
//! system-memory counterpart peerdma compares BAR buffers with. Written here.

use crate::__IncompleteArrayField;
use rustix::ioctl::{opcode, Opcode};

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

/// One memfd range of a `UDMABUF_CREATE_LIST` request.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct udmabuf_create_item {
    /// The memfd (sealed against shrinking).
    pub memfd: u32,
    /// Must be 0.
    pub __pad: u32,
    /// Page-aligned offset in the memfd.
    pub offset: u64,
    /// Page-aligned length.
    pub size: u64,
}
const _: () = assert!(size_of::<udmabuf_create_item>() == 24);

/// `UDMABUF_CREATE_LIST` argument: `count` ranges concatenated into one dma-buf. Build
/// it with [`crate::flex::FlexBuf`]`<Self>`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct udmabuf_create_list {
    /// `UDMABUF_FLAGS_CLOEXEC` or 0.
    pub flags: u32,
    /// Number of entries in `list`.
    pub count: u32,
    /// The ranges.
    pub list: __IncompleteArrayField<udmabuf_create_item>,
}
const _: () = assert!(size_of::<udmabuf_create_list>() == 8);

/// Creation flag: the new dma-buf fd is close-on-exec.
pub const UDMABUF_FLAGS_CLOEXEC: u32 = 0x01;

/// The ioctl type byte of udmabuf (the header writes `'u'` inline).
const UDMABUF_IOCTL_BASE: u8 = b'u';
/// Creates a dma-buf from one memfd range ([`udmabuf_create`]); returns the fd.
pub const UDMABUF_CREATE: Opcode = opcode::write::<udmabuf_create>(UDMABUF_IOCTL_BASE, 0x42);
/// Creates a dma-buf from several memfd ranges ([`udmabuf_create_list`]); returns the fd.
pub const UDMABUF_CREATE_LIST: Opcode =
    opcode::write::<udmabuf_create_list>(UDMABUF_IOCTL_BASE, 0x43);
