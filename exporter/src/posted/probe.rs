//! Which posted-series features the running kernel has, found by behaviour.

use std::fmt;
use std::os::fd::AsFd;

use rustix::io::Errno;

use super::{FeatureError, PostedFeature};
use crate::device::Device;
use crate::error::Result;
use crate::ranges::DmaRange;
use peerdma_host::RegionIndex;
use peerdma_uapi::ahead::VFIO_DEVICE_FEATURE_DMA_BUF_MEMATTR_WC;

/// What a probe found out about one feature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The kernel behaves as the series says.
    Present,
    /// The kernel refused as a kernel without it does (the errno it gave).
    Absent {
        /// `ENOTTY` (an unknown VFIO feature) or `EINVAL` (no dma-buf mmap op).
        errno: Errno,
    },
    /// The kernel answered neither way: another meaning of the same number, or a
    /// different version of the series.
    Unclear {
        /// What it did.
        detail: String,
    },
}

impl Probe {
    /// Whether the feature is there.
    pub fn is_present(&self) -> bool {
        *self == Probe::Present
    }

    /// `present`, `absent` or `unclear`.
    pub fn key(&self) -> &'static str {
        match self {
            Probe::Present => "present",
            Probe::Absent { .. } => "absent",
            Probe::Unclear { .. } => "unclear",
        }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Present => f.write_str("present"),
            Probe::Absent { errno } => write!(
                f,
                "absent (the kernel answered {})",
                peerdma_host::errno_name(*errno)
            ),
            Probe::Unclear { detail } => write!(f, "unclear: {detail}"),
        }
    }
}

/// The posted-series features of the running kernel, for one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostedFeatures {
    /// `mmap(2)` of a dma-buf.
    pub mmap: Probe,
    /// `VFIO_DEVICE_FEATURE_DMA_BUF_REVOKE`.
    pub revoke: Probe,
    /// `VFIO_DEVICE_FEATURE_DMA_BUF_MEMATTR`.
    pub memattr: Probe,
}

impl PostedFeatures {
    /// The probe of `feature`.
    pub fn get(&self, feature: PostedFeature) -> &Probe {
        match feature {
            PostedFeature::DmaBufMmap => &self.mmap,
            PostedFeature::DmaBufRevoke => &self.revoke,
            PostedFeature::DmaBufMemattr => &self.memattr,
        }
    }
}

impl Device {
    /// Finds out which features of the posted series ([`crate::posted`]) the running
    /// kernel has, by using each on a throwaway dma-buf of the first page of BAR `region`
    /// (the device's other dma-bufs are untouched):
    ///
    /// - mmap: the dma-buf maps (7.2: EINVAL);
    /// - MEMATTR: WC is accepted, and an unknown attribute is refused with ENOENT
    ///   (7.2: ENOTTY for both);
    /// - REVOKE: the first succeeds, the second gives EBADFD and (with mmap) a new
    ///   mmap gives ENODEV (7.2: ENOTTY).
    ///
    /// A kernel that accepts a feature number but answers otherwise is
    /// [`Probe::Unclear`], never present.
    ///
    /// # Errors
    ///
    /// What [`Device::export_dma_buf`] returns for the first page of `region` (pick a
    /// BAR whose first page is exportable: a memory BAR without MSI-X there).
    pub fn probe_posted_features(&self, region: impl Into<RegionIndex>) -> Result<PostedFeatures> {
        let page = self.page_size();
        let buf = self.export_dma_buf(
            region,
            &[DmaRange {
                offset: 0,
                length: page,
            }],
        )?;
        let mmap = match buf.map() {
            Ok(mapping) => {
                drop(mapping);
                Probe::Present
            }
            Err(FeatureError::Missing { errno, .. }) => Probe::Absent { errno },
            Err(e) => Probe::Unclear {
                detail: format!(
                    "mmap of a live one-page dma-buf failed: {}",
                    peerdma_host::errno_name(e.errno())
                ),
            },
        };
        let memattr =
            match self.set_dma_buf_memattr_raw(&buf, VFIO_DEVICE_FEATURE_DMA_BUF_MEMATTR_WC) {
                Ok(()) => match self.set_dma_buf_memattr_raw(&buf, u32::MAX) {
                    Err(Errno::NOENT) => Probe::Present,
                    other => Probe::Unclear {
                        detail: format!(
                        "feature 14 took WC but answered {} to an unknown attribute, not ENOENT",
                        answer(other)
                    ),
                    },
                },
                Err(Errno::NOTTY) => Probe::Absent {
                    errno: Errno::NOTTY,
                },
                Err(errno) => Probe::Unclear {
                    detail: format!(
                        "feature 14 with WC answered {}",
                        peerdma_host::errno_name(errno)
                    ),
                },
            };
        let revoke = match self.revoke_dma_buf_fd(buf.as_fd()) {
            Ok(()) => match self.revoke_dma_buf_fd(buf.as_fd()) {
                Err(FeatureError::AlreadyRevoked { .. }) => match (&mmap, buf.map()) {
                    (Probe::Present, Ok(_)) => Probe::Unclear {
                        detail: "feature 13 returned 0 but the dma-buf still maps".to_string(),
                    },
                    _ => Probe::Present,
                },
                other => Probe::Unclear {
                    detail: format!(
                        "feature 13 returned 0, then {} instead of EBADFD",
                        answer(other.map_err(|e| e.errno()))
                    ),
                },
            },
            Err(FeatureError::Missing { errno, .. }) => Probe::Absent { errno },
            Err(e) => Probe::Unclear {
                detail: format!(
                    "feature 13 answered {}",
                    peerdma_host::errno_name(e.errno())
                ),
            },
        };
        Ok(PostedFeatures {
            mmap,
            revoke,
            memattr,
        })
    }
}

fn answer(r: std::result::Result<(), Errno>) -> String {
    match r {
        Ok(()) => "0".to_string(),
        Err(e) => peerdma_host::errno_name(e),
    }
}
