//! A dma-buf exported from a BAR: the fd, and what it was made of.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Weak;

use peerdma_uapi::flex::DmaBufFeature;

use crate::device::DeviceInner;
use crate::error::Result;
use crate::ranges::DmaRange;
use crate::revoke::{RevokeReason, RevokeState};
use peerdma_host::fdinfo::FdInfo;
use peerdma_host::Bdf;

/// A dma-buf of BAR ranges. Importers borrow its fd through [`AsFd`]; closing
/// it (drop) releases this reference; importers that hold their own (iommufd
/// does) keep the buffer alive.
#[derive(Debug)]
pub struct DmaBuf {
    pub(crate) fd: OwnedFd,
    pub(crate) bdf: Bdf,
    pub(crate) region: u32,
    /// The `VFIO_DEVICE_FEATURE` argument it was exported with: its record of
    /// the ranges, kept rather than copied.
    pub(crate) arg: DmaBufFeature,
    pub(crate) size: u64,
    pub(crate) generation: u64,
    pub(crate) device: Weak<DeviceInner>,
    /// Set once [`Device::revoke_dma_buf`](crate::Device::revoke_dma_buf) revoked it.
    pub(crate) revoked_on_request: AtomicBool,
}

impl DmaBuf {
    /// The exporting device.
    pub fn bdf(&self) -> Bdf {
        self.bdf
    }

    /// The region (BAR) index.
    pub fn region(&self) -> u32 {
        self.region
    }

    /// The ranges, in the order they appear in the buffer.
    pub fn ranges(&self) -> &[DmaRange] {
        self.arg.elems()
    }

    /// Size in bytes (sum of the range lengths).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The device's revoke generation when the buffer was exported: a
    /// [`RevokeEvent`](crate::RevokeEvent) with a later generation means
    /// mappings made before it are gone.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The buffer's `/proc/self/fdinfo` entry (size, exp_name, ino, flags...).
    pub fn fdinfo(&self) -> Result<FdInfo> {
        Ok(FdInfo::of(&self.fd)?)
    }

    /// Whether importers can map the buffer now: the device's state, or
    /// revoked for good once the device is closed or after
    /// [`Device::revoke_dma_buf`](crate::Device::revoke_dma_buf).
    pub fn state(&self) -> Result<RevokeState> {
        if self.revoked_on_request.load(Ordering::Acquire) {
            return Ok(RevokeState::Revoked(RevokeReason::Requested));
        }
        match self.device.upgrade() {
            Some(device) => device.revoke_state(),
            None => Ok(RevokeState::Revoked(RevokeReason::DeviceClosed)),
        }
    }

    /// Gives up the bookkeeping and returns the fd.
    #[inline]
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl AsFd for DmaBuf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<DmaBuf> for OwnedFd {
    #[inline]
    fn from(buf: DmaBuf) -> OwnedFd {
        buf.fd
    }
}
