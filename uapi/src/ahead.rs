//! ABI of two posted kernel series that are **not upstream** (the "ahead" testbed kernel,
//! `tests/kernel/ahead.md`), as their posted versions define it:
//!
//! - "vfio/pci: Add mmap() for DMABUFs" v4 (Matt Evans, 2026-07-01): `mmap(2)` of a vfio-pci
//!   dma-buf, and two `VFIO_DEVICE_FEATURE`s on the device fd that take a dma-buf fd:
//!   `VFIO_DEVICE_FEATURE_DMA_BUF_REVOKE` (13) and `VFIO_DEVICE_FEATURE_DMA_BUF_MEMATTR` (14).
//!
//! - "Add dmabuf read/write via io_uring" v3 (Pavel Begunkov, 2026-04-29): io_uring
//!   registered buffers that are dma-bufs, for O_DIRECT I/O on a raw NVMe block device
//!   (`IORING_REGISTER_BUFFERS_UPDATE` with [`IORING_RSRC_UPDATE_EXTENDED`] in
//!   [`io_uring_rsrc_update2::flags`] and an array of [`io_uring_regbuf_desc`]).
//!
//! The numbers are **not final** (another posted series also claims feature 13): a caller
//! must confirm each feature by its behaviour, never by a successful call alone. Layout
//! checked against the ahead kernel's own headers (`../shared/testbed/ahead/include`) by
//! `tests/tests/layout.rs`.

use rustix::ioctl::Updater;

use crate::flex::Feature;
use crate::vfio::VFIO_DEVICE_FEATURE;

/// `VFIO_DEVICE_FEATURE` number of DMA_BUF_REVOKE (SET only): permanently revoke a
/// dma-buf this device exported.
pub const VFIO_DEVICE_FEATURE_DMA_BUF_REVOKE: u32 = 13;
/// `VFIO_DEVICE_FEATURE` number of DMA_BUF_MEMATTR (SET only): the memory attribute of
/// future `mmap`s of a dma-buf this device exported.
pub const VFIO_DEVICE_FEATURE_DMA_BUF_MEMATTR: u32 = 14;
/// DMA_BUF_MEMATTR value: uncached (`pgprot_noncached`), the default.
pub const VFIO_DEVICE_FEATURE_DMA_BUF_MEMATTR_NC: u32 = 0;
/// DMA_BUF_MEMATTR value: write-combining (`pgprot_writecombine`).
pub const VFIO_DEVICE_FEATURE_DMA_BUF_MEMATTR_WC: u32 = 1;

/// Payload of DMA_BUF_REVOKE: the dma-buf to revoke.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_device_feature_dma_buf_revoke {
    /// The dma-buf fd (one this device exported).
    pub dmabuf_fd: i32,
}

/// Payload of DMA_BUF_MEMATTR: the dma-buf and the attribute for its future mmaps.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct vfio_device_feature_dma_buf_memattr {
    /// The dma-buf fd (one this device exported).
    pub dmabuf_fd: i32,
    /// `VFIO_DEVICE_FEATURE_DMA_BUF_MEMATTR_NC` or `_WC`.
    pub memattr: u32,
}

/// `VFIO_DEVICE_FEATURE` with `SET | DMA_BUF_REVOKE`.
pub type VfioDeviceFeatureDmaBufRevoke<'a> =
    Updater<'a, VFIO_DEVICE_FEATURE, Feature<vfio_device_feature_dma_buf_revoke>>;
/// `VFIO_DEVICE_FEATURE` with `SET | DMA_BUF_MEMATTR`.
pub type VfioDeviceFeatureDmaBufMemattr<'a> =
    Updater<'a, VFIO_DEVICE_FEATURE, Feature<vfio_device_feature_dma_buf_memattr>>;

/// `io_uring_rsrc_update2::flags`: `data` points to [`io_uring_regbuf_desc`]s instead of
/// `struct iovec`s (the series renames 7.2's `resv` field to `flags`; 7.2 refuses a
/// non-zero `resv` with `EINVAL`).
pub const IORING_RSRC_UPDATE_EXTENDED: u32 = 1 << 1;
/// `io_uring_regbuf_desc::type`: an empty slot (removes the buffer there).
pub const IO_REGBUF_TYPE_EMPTY: u32 = 0;
/// `io_uring_regbuf_desc::type`: user memory (`uaddr`, `size`), as a plain `iovec`.
pub const IO_REGBUF_TYPE_UADDR: u32 = 1;
/// `io_uring_regbuf_desc::type`: a dma-buf (`dmabuf_fd`) for I/O on one file
/// (`target_fd`); `uaddr` and `size` must be 0 (the whole dma-buf is registered), and
/// the fixed I/O's `addr` is then a byte offset into the dma-buf.
pub const IO_REGBUF_TYPE_DMABUF: u32 = 2;

/// Argument of `IORING_REGISTER_BUFFERS_UPDATE` / `IORING_REGISTER_FILES_UPDATE2`, as the
/// series defines it (`flags` where 7.2 has `resv`). Its size (32 bytes) is the
/// `nr_args` of the `io_uring_register(2)` call.
#[repr(C, align(8))]
#[derive(Debug, Default, Clone, Copy)]
pub struct io_uring_rsrc_update2 {
    /// First slot of the table to update.
    pub offset: u32,
    /// [`IORING_RSRC_UPDATE_EXTENDED`] or 0.
    pub flags: u32,
    /// User address of the `nr` descriptors (`iovec`s, or [`io_uring_regbuf_desc`]s
    /// with [`IORING_RSRC_UPDATE_EXTENDED`]).
    pub data: u64,
    /// User address of `nr` `u64` tags, or 0.
    pub tags: u64,
    /// Number of slots to update.
    pub nr: u32,
    /// Must be 0.
    pub resv2: u32,
}

/// One buffer of an extended buffer update (`IORING_RSRC_UPDATE_EXTENDED`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct io_uring_regbuf_desc {
    /// `IO_REGBUF_TYPE_*`.
    pub type_: u32,
    /// Must be 0.
    pub flags: u32,
    /// Bytes (`IO_REGBUF_TYPE_UADDR`); must be 0 for a dma-buf.
    pub size: u64,
    /// User address (`IO_REGBUF_TYPE_UADDR`); must be 0 for a dma-buf.
    pub uaddr: u64,
    /// The dma-buf fd (`IO_REGBUF_TYPE_DMABUF`), else 0.
    pub dmabuf_fd: i32,
    /// The file the dma-buf is registered for (`IO_REGBUF_TYPE_DMABUF`: an O_DIRECT raw
    /// NVMe block device), else 0.
    pub target_fd: i32,
    /// Must be 0.
    pub __resv: [u64; 6],
}
