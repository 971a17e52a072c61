//! A vfio cdev device attached to an IOAS, detached on drop.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use peerdma_exporter::{Bdf, Device};

use super::error::{attach_fix, Error, Result};
use super::{ioctl, Ioas, IoasInner};

/// A device attached to an IOAS (`VFIO_DEVICE_ATTACH_IOMMUFD_PT`): it can DMA
/// to every IOVA mapped there. Dropping it detaches the device
/// (`VFIO_DEVICE_DETACH_IOMMUFD_PT`), after which its DMA is blocked.
///
/// It holds a duplicate of the device fd, so the device file stays open (and
/// its dma-bufs unrevoked by close) while the attachment lives, and it keeps
/// the IOAS alive.
#[derive(Debug)]
pub struct Attachment {
    device: OwnedFd,
    bdf: Bdf,
    pt_id: u32,
    ioas: Arc<IoasInner>,
}

impl Attachment {
    /// The device.
    pub fn bdf(&self) -> Bdf {
        self.bdf
    }

    /// The page table the kernel attached the device to (the IOAS's own
    /// id, or the hardware page table it made for it).
    pub fn pt_id(&self) -> u32 {
        self.pt_id
    }

    /// The IOAS id.
    pub fn ioas_id(&self) -> u32 {
        self.ioas.id
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        // Nothing to report to from drop; a failed detach leaves the device
        // attached until its fd closes, which detaches it anyway.
        let _ = ioctl::device_detach(self.device.as_fd());
        // The usable ranges change with the attached devices' reserved regions.
        self.ioas.state().ranges = None;
    }
}

impl Ioas {
    /// Attaches a cdev `device` bound to this IOAS's iommufd.
    ///
    /// Attach before mapping IOVAs near the device's reserved regions: the
    /// ranges are recomputed on attach, and [`Iova::Guarded`](super::Iova::Guarded)
    /// stays out of them.
    ///
    /// # Errors
    /// - [`Error::DeviceNotCdev`]: the device was opened through a VFIO group.
    /// - [`Error::DifferentIommufd`]: the device is bound to another iommufd.
    /// - [`Error::Ioctl`]: comparing the two iommufd fds failed.
    /// - [`Error::Attach`]: duplicating the device fd or
    ///   `VFIO_DEVICE_ATTACH_IOMMUFD_PT` failed (the errno and its fix).
    pub fn attach(&self, device: &Device) -> Result<Attachment> {
        let bdf = device.bdf();
        let bound = device.iommufd().ok_or(Error::DeviceNotCdev { bdf })?;
        if !self.inner.iommufd.is_same_file(bound)? {
            return Err(Error::DifferentIommufd {
                bdf,
                ioas: self.inner.id,
            });
        }
        let dup =
            rustix::io::fcntl_dupfd_cloexec(device.fd(), 0).map_err(|errno| Error::Attach {
                bdf,
                ioas: self.inner.id,
                errno,
                fix: "could not duplicate the device fd",
            })?;
        let pt_id =
            ioctl::device_attach(dup.as_fd(), self.inner.id).map_err(|errno| Error::Attach {
                bdf,
                ioas: self.inner.id,
                errno,
                fix: attach_fix(errno),
            })?;
        self.inner.state().ranges = None;
        Ok(Attachment {
            device: dup,
            bdf,
            pt_id,
            ioas: Arc::clone(&self.inner),
        })
    }
}
