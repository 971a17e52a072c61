//! ABI of two posted kernel series that are **not upstream** (the "ahead" testbed kernel,
//! `tests/kernel/ahead.md`), as their posted versions define it:
//!
//! - "vfio/pci: Add mmap() for DMABUFs" v4 (Matt Evans, 2026-07-01): `mmap(2)` of a vfio-pci
//!   dma-buf, and two `VFIO_DEVICE_FEATURE`s on the device fd that take a dma-buf fd:
//!   `VFIO_DEVICE_FEATURE_DMA_BUF_REVOKE` (13) and `VFIO_DEVICE_FEATURE_DMA_BUF_MEMATTR` (14).
//!
//! (The second series of that kernel, "Add dmabuf read/write via io_uring", has no item
//! here yet: nothing in peerdma drives it.)
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
