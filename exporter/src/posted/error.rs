//! Errors of the posted-series features.

use rustix::io::Errno;

use super::{MemAttr, PostedFeature, SERIES};
use peerdma_host::Bdf;

/// A posted-series operation on a dma-buf failed.
///
/// Variants are sorted by name (`tests/tests/sorted_variants.rs` keeps them so).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeatureError {
    /// A second REVOKE of a dma-buf (the kernel's `EBADFD`).
    #[error(
        "{bdf}: the dma-buf is already revoked for good (VFIO_DEVICE_FEATURE_DMA_BUF_REVOKE: \
         EBADFD); fix: export a new dma-buf"
    )]
    AlreadyRevoked {
        /// The exporting device.
        bdf: Bdf,
    },

    /// The kernel refused with an errno this library has no meaning for.
    #[error("{bdf}: {feature} failed: {}; fix: see the kernel log (dmesg)", peerdma_host::errno_name(*errno))]
    Kernel {
        /// The exporting device.
        bdf: Bdf,
        /// What was asked.
        feature: PostedFeature,
        /// What the kernel returned.
        errno: Errno,
    },

    /// MEMATTR does not offer this attribute here (the kernel's `ENOENT`).
    #[error(
        "{bdf}: the kernel does not offer memory attribute {memattr} for this dma-buf \
         (VFIO_DEVICE_FEATURE_DMA_BUF_MEMATTR: {}); fix: keep the default (NC)",
        peerdma_host::errno_name(*errno)
    )]
    MemattrRefused {
        /// The exporting device.
        bdf: Bdf,
        /// What was asked.
        memattr: MemAttr,
        /// What the kernel returned.
        errno: Errno,
    },

    /// The running kernel does not have the feature.
    #[error(
        "{bdf}: this kernel has no {feature} ({}): it needs the kernel series {SERIES}; \
         fix: run a kernel that carries the series, or do without {feature}",
        peerdma_host::errno_name(*errno)
    )]
    Missing {
        /// The exporting device.
        bdf: Bdf,
        /// What is missing.
        feature: PostedFeature,
        /// How the kernel said so (`ENOTTY` for an unknown VFIO feature, `EINVAL` for a
        /// dma-buf without an mmap op).
        errno: Errno,
    },

    /// The dma-buf fd was not exported by this device (the kernel's `ENODEV` on
    /// REVOKE or MEMATTR).
    #[error(
        "{bdf}: the dma-buf was not exported by this device ({feature}: ENODEV); fix: ask \
         the device that exported it"
    )]
    NotThisDevice {
        /// The device asked.
        bdf: Bdf,
        /// What was asked.
        feature: PostedFeature,
    },

    /// The dma-buf is revoked (for good, or while the device's memory is off), so it
    /// cannot be mapped (the kernel's `ENODEV`).
    #[error(
        "{bdf}: the dma-buf is revoked, so it cannot be mapped (mmap: ENODEV); fix: turn \
         memory decode back on, or export a new dma-buf if it was revoked for good"
    )]
    Revoked {
        /// The exporting device.
        bdf: Bdf,
    },
}

impl FeatureError {
    /// A stable, machine-readable name for this error (the variant in snake_case).
    pub fn kind(&self) -> &'static str {
        match self {
            FeatureError::AlreadyRevoked { .. } => "already_revoked",
            FeatureError::Kernel { .. } => "kernel",
            FeatureError::MemattrRefused { .. } => "memattr_refused",
            FeatureError::Missing { .. } => "needs_kernel_feature",
            FeatureError::NotThisDevice { .. } => "not_this_device",
            FeatureError::Revoked { .. } => "revoked",
        }
    }

    /// The errno the kernel returned.
    pub fn errno(&self) -> Errno {
        match self {
            FeatureError::AlreadyRevoked { .. } => Errno::BADFD,
            FeatureError::Kernel { errno, .. }
            | FeatureError::MemattrRefused { errno, .. }
            | FeatureError::Missing { errno, .. } => *errno,
            FeatureError::NotThisDevice { .. } | FeatureError::Revoked { .. } => Errno::NODEV,
        }
    }
}
