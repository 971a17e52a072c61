//! A vfio cdev device attached to an IOAS, detached on drop.

use std::sync::Arc;

use peerdma_exporter::Device;
use peerdma_host::Bdf;

use super::error::{Error, Result};
use rustix::io::Errno;

use super::{Ioas, IoasInner};

/// A device attached to an IOAS (`VFIO_DEVICE_ATTACH_IOMMUFD_PT`): it can DMA
/// to every IOVA mapped there. Dropping it detaches the device
/// (`VFIO_DEVICE_DETACH_IOMMUFD_PT`), after which its DMA is blocked.
///
/// It holds a handle to the device (a clone of the [`Device`]), so the device
/// file stays open (and its dma-bufs unrevoked by close) while the attachment
/// lives, and it keeps the IOAS alive.
#[derive(Debug)]
pub struct Attachment {
    device: Device,
    pt_id: u32,
    ioas: Arc<IoasInner>,
}

impl Attachment {
    /// The device.
    pub fn bdf(&self) -> Bdf {
        self.device.bdf()
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
        let _ = self.device.detach_iommufd_pt();
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
        let ioas = self.inner.id;
        let pt_id = device.attach_iommufd_pt(ioas).map_err(|e| match e {
            peerdma_exporter::Error::Ioctl { errno, fix, .. } => Error::Attach {
                bdf,
                ioas,
                errno,
                fix,
            },
            other => Error::Attach {
                bdf,
                ioas,
                errno: other.errno().unwrap_or(Errno::INVAL),
                fix: "unexpected; see drivers/vfio/device_cdev.c",
            },
        })?;
        self.inner.state().ranges = None;
        Ok(Attachment {
            device: device.clone(),
            pt_id,
            ioas: Arc::clone(&self.inner),
        })
    }
}
