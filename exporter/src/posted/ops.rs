//! The posted-series operations: map a dma-buf, revoke one on request, set its
//! memory attribute.

use std::os::fd::{AsFd, BorrowedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::Ordering;

use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

use super::{FeatureError, MemAttr, PostedFeature};
use crate::device::Device;
use crate::dmabuf::DmaBuf;
use crate::ioctl;
use crate::mmap::MappedRegion;
use peerdma_host::Bdf;
use peerdma_host::RegionIndex;

/// What a `VFIO_DEVICE_FEATURE` errno of a posted feature means.
pub(super) fn feature_error(bdf: Bdf, feature: PostedFeature, errno: Errno) -> FeatureError {
    match errno {
        // vfio_pci_core_ioctl_feature's answer to a feature number it does not know.
        Errno::NOTTY => FeatureError::Missing {
            bdf,
            feature,
            errno,
        },
        Errno::BADFD if feature == PostedFeature::DmaBufRevoke => {
            FeatureError::AlreadyRevoked { bdf }
        }
        Errno::NODEV => FeatureError::NotThisDevice { bdf, feature },
        errno => FeatureError::Kernel {
            bdf,
            feature,
            errno,
        },
    }
}

impl Device {
    /// Revokes `buf` for good: importers lose their mappings (as on memory decode off),
    /// existing CPU mmaps of it fault (SIGBUS), and new mmaps, attachments and
    /// MAP_FILEs fail with ENODEV. The device and its other dma-bufs are untouched.
    /// [`DmaBuf::state`] then says [`RevokeReason::Requested`](crate::RevokeReason).
    ///
    /// Source: `VFIO_DEVICE_FEATURE_DMA_BUF_REVOKE` of the posted series
    /// ([`crate::posted`]); `vfio_pci_dmabuf.c` there.
    ///
    /// # Errors
    ///
    /// [`FeatureError::Missing`] on a kernel without the series;
    /// [`FeatureError::AlreadyRevoked`] the second time; [`FeatureError::NotThisDevice`]
    /// when another device exported `buf`.
    pub fn revoke_dma_buf(&self, buf: &DmaBuf) -> Result<(), FeatureError> {
        self.revoke_dma_buf_fd(buf.as_fd())?;
        buf.revoked_on_request.store(true, Ordering::Release);
        Ok(())
    }

    /// [`Device::revoke_dma_buf`] for a dma-buf fd this process did not export itself
    /// (one received over a socket or taken with `pidfd_getfd`).
    ///
    /// # Errors
    ///
    /// As [`Device::revoke_dma_buf`].
    pub fn revoke_dma_buf_fd(&self, dmabuf: BorrowedFd<'_>) -> Result<(), FeatureError> {
        ioctl::device_feature_dma_buf_revoke(self.fd(), dmabuf)
            .map_err(|errno| feature_error(self.bdf(), PostedFeature::DmaBufRevoke, errno))
    }

    /// Sets the memory attribute of `buf`'s future CPU mmaps ([`DmaBuf::map`]); mappings
    /// made before keep theirs.
    ///
    /// Source: `VFIO_DEVICE_FEATURE_DMA_BUF_MEMATTR` of the posted series.
    ///
    /// # Errors
    ///
    /// [`FeatureError::Missing`] on a kernel without the series;
    /// [`FeatureError::MemattrRefused`] when the kernel does not offer `memattr` (ENOENT).
    pub fn set_dma_buf_memattr(&self, buf: &DmaBuf, memattr: MemAttr) -> Result<(), FeatureError> {
        ioctl::device_feature_dma_buf_memattr(self.fd(), buf.as_fd(), memattr.raw()).map_err(
            |errno| match errno {
                Errno::NOENT => FeatureError::MemattrRefused {
                    bdf: self.bdf(),
                    memattr,
                    errno,
                },
                errno => feature_error(self.bdf(), PostedFeature::DmaBufMemattr, errno),
            },
        )
    }

    /// MEMATTR with a raw value (for probing how the kernel answers an unknown one).
    pub(crate) fn set_dma_buf_memattr_raw(&self, buf: &DmaBuf, raw: u32) -> Result<(), Errno> {
        ioctl::device_feature_dma_buf_memattr(self.fd(), buf.as_fd(), raw)
    }
}

impl DmaBuf {
    /// Maps the whole dma-buf for the CPU, read/write and shared, through the dma-buf's
    /// own `mmap(2)` (uncached unless [`Device::set_dma_buf_memattr`] chose WC before).
    /// Byte 0 of the mapping is byte 0 of the buffer: the first range's offset in the
    /// BAR, which [`MappedRegion::offset`] returns. A revoke zaps the mapping: guard it
    /// with [`MappedRegion::guard_against_revoke`] where that must not kill the process.
    ///
    /// Source: the mmap op the posted series adds to vfio-pci dma-bufs
    /// (`vfio_pci_dmabuf.c`); 7.2's have none (`dma_buf_mmap_internal`: EINVAL).
    ///
    /// # Errors
    ///
    /// [`FeatureError::Missing`] on a kernel without the series (EINVAL);
    /// [`FeatureError::Revoked`] when the buffer is revoked (ENODEV), or its device was
    /// closed.
    pub fn map(&self) -> Result<MappedRegion, FeatureError> {
        let bdf = self.bdf;
        let revoked = FeatureError::Revoked { bdf };
        let device = self.device.upgrade().ok_or(revoked)?;
        let len = usize::try_from(self.size).map_err(|_| FeatureError::Kernel {
            bdf,
            feature: PostedFeature::DmaBufMmap,
            errno: Errno::NOMEM,
        })?;
        let page = rustix::param::page_size();
        let map_len = len.div_ceil(page) * page;
        // SAFETY: a fresh shared mapping at an address the kernel picks (null hint), so
        // it aliases no Rust object; the returned MappedRegion owns and unmaps it.
        let ptr = unsafe {
            rustix::mm::mmap(
                ptr::null_mut(),
                map_len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                self.fd.as_fd(),
                0,
            )
        }
        .map_err(|errno| match errno {
            Errno::INVAL => FeatureError::Missing {
                bdf,
                feature: PostedFeature::DmaBufMmap,
                errno,
            },
            Errno::NODEV => FeatureError::Revoked { bdf },
            errno => FeatureError::Kernel {
                bdf,
                feature: PostedFeature::DmaBufMmap,
                errno,
            },
        })?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(FeatureError::Kernel {
            bdf,
            feature: PostedFeature::DmaBufMmap,
            errno: Errno::FAULT,
        })?;
        let offset = self.ranges().first().map_or(0, |r| r.offset);
        Ok(MappedRegion::from_mapping(
            ptr,
            len,
            map_len,
            RegionIndex::from(self.region),
            offset,
            device,
        ))
    }
}
