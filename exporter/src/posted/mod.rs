//! What a vfio-pci dma-buf can do on a kernel with the posted series "vfio/pci: Add
//! mmap() for DMABUFs" (v4, Matt Evans, 2026-07-01), which is **not upstream yet**:
//!
//! - [`DmaBuf::map`](crate::DmaBuf::map): the CPU maps the dma-buf itself (its
//!   `mmap(2)`), as any importer that maps buffers (lavapipe, a CPU copy) does;
//! - [`Device::revoke_dma_buf`](crate::Device::revoke_dma_buf): revoke one dma-buf for
//!   good, on request (`VFIO_DEVICE_FEATURE_DMA_BUF_REVOKE`);
//! - [`Device::set_dma_buf_memattr`](crate::Device::set_dma_buf_memattr): uncached or
//!   write-combining for the dma-buf's future mmaps (`VFIO_DEVICE_FEATURE_DMA_BUF_MEMATTR`).
//!
//! On a kernel without the series (7.2 as released) each is a
//! [`FeatureError::Missing`] that names the series. The feature numbers of the posted
//! series are not final (another posted series claims 13 too), so
//! [`Device::probe_posted_features`](crate::Device::probe_posted_features) confirms each
//! feature by its behaviour on a throwaway one-page dma-buf, never by a number that
//! happens to be accepted.

mod error;
mod held;
mod import_guard;
mod ops;
mod probe;

pub use error::FeatureError;
pub use held::{revoke_held, HeldDmaBuf, HeldError, RevokeOutcome};
pub use import_guard::ImportGuard;
pub use probe::{PostedFeatures, Probe};

use std::fmt;

/// A feature of the posted series (see the [module](self) docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PostedFeature {
    /// `mmap(2)` of a vfio-pci dma-buf (7.2: `EINVAL`, its dma-bufs have no mmap op).
    DmaBufMmap,
    /// `VFIO_DEVICE_FEATURE_DMA_BUF_REVOKE`: revoke one dma-buf for good.
    DmaBufRevoke,
    /// `VFIO_DEVICE_FEATURE_DMA_BUF_MEMATTR`: NC or WC for future mmaps.
    DmaBufMemattr,
}

impl PostedFeature {
    /// All of them, in the order reports list them.
    pub const ALL: [PostedFeature; 3] = [
        PostedFeature::DmaBufMmap,
        PostedFeature::DmaBufRevoke,
        PostedFeature::DmaBufMemattr,
    ];

    /// The name a kernel developer knows it by.
    pub fn name(self) -> &'static str {
        match self {
            PostedFeature::DmaBufMmap => "dma-buf mmap",
            PostedFeature::DmaBufRevoke => "VFIO_DEVICE_FEATURE_DMA_BUF_REVOKE",
            PostedFeature::DmaBufMemattr => "VFIO_DEVICE_FEATURE_DMA_BUF_MEMATTR",
        }
    }

    /// A stable snake_case key for reports (`dma_buf_mmap`, ...).
    pub fn key(self) -> &'static str {
        match self {
            PostedFeature::DmaBufMmap => "dma_buf_mmap",
            PostedFeature::DmaBufRevoke => "dma_buf_revoke",
            PostedFeature::DmaBufMemattr => "dma_buf_memattr",
        }
    }

    /// The kernel series that adds it.
    pub fn series(self) -> &'static str {
        SERIES
    }
}

/// The series all three features come from.
pub const SERIES: &str =
    "\"vfio/pci: Add mmap() for DMABUFs\" (Matt Evans, posted v4 2026-07-01, not upstream yet)";

impl fmt::Display for PostedFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The memory attribute of a dma-buf's CPU mappings (`VFIO_DEVICE_FEATURE_DMA_BUF_MEMATTR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemAttr {
    /// Uncached (`pgprot_noncached`), the default: every access reaches the device.
    Uncached,
    /// Write-combining (`pgprot_writecombine`): stores may merge into bursts. On x86
    /// the mapping may stay uncached when the BAR is already reserved uncached.
    WriteCombining,
}

impl MemAttr {
    /// The value the kernel takes (`VFIO_DEVICE_FEATURE_DMA_BUF_MEMATTR_NC`/`_WC`).
    pub fn raw(self) -> u32 {
        match self {
            MemAttr::Uncached => peerdma_uapi::ahead::VFIO_DEVICE_FEATURE_DMA_BUF_MEMATTR_NC,
            MemAttr::WriteCombining => peerdma_uapi::ahead::VFIO_DEVICE_FEATURE_DMA_BUF_MEMATTR_WC,
        }
    }
}

impl fmt::Display for MemAttr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemAttr::Uncached => "NC (uncached)",
            MemAttr::WriteCombining => "WC (write-combining)",
        })
    }
}
