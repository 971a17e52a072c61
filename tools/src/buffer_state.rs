//! What can be known about a held BAR dma-buf from outside its exporter: the device's
//! registers (memory decode, power state: what a revoke follows) and the kernel's own
//! view, asked of the kernel by mapping the buffer into a private iommufd IOAS, which
//! vfio-pci refuses with ENODEV while the buffer is revoked (Linux 7.2,
//! `vfio_pci_dma_buf_attach` and `vfio_pci_dma_buf_iommufd_map` check `revoked` first).
//!
//! The two can differ: a revoke happens only through VFIO (its config region, its reset
//! ioctls, low-power entry, close); decode turned off through sysfs or a reset started
//! through sysfs changes the device but not the buffer (docs/importers.md).

use std::fmt;
use std::os::fd::BorrowedFd;

use peerdma_importer::iommufd::{Access, Error as ImportError, Ioas, Iommufd, Iova};

/// The kernel's view of a dma-buf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelView {
    /// The exporter admits importers: not revoked.
    Live,
    /// The exporter refuses importers with ENODEV: revoked.
    Revoked,
    /// The kernel could not be asked (no iommufd, or another error), and why.
    Unknown(String),
}

impl fmt::Display for KernelView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelView::Live => f.write_str("live"),
            KernelView::Revoked => f.write_str("revoked"),
            KernelView::Unknown(why) => write!(f, "unknown ({why})"),
        }
    }
}

/// Asks the kernel whether `buf` (a vfio-pci dma-buf of at least `page` bytes) is
/// revoked, by mapping its first page into a fresh IOAS and unmapping it at once.
/// A multi-range buffer is refused after the revoke check (EOPNOTSUPP), so that
/// answer means live too.
pub fn kernel_view(buf: BorrowedFd<'_>, page: u64) -> KernelView {
    let iommufd = match Iommufd::open() {
        Ok(i) => i,
        Err(e) => return KernelView::Unknown(e.to_string()),
    };
    let ioas = match Ioas::alloc(&iommufd) {
        Ok(i) => i,
        Err(e) => return KernelView::Unknown(e.to_string()),
    };
    match ioas.map_dmabuf(buf, 0, page, Iova::Guarded, Access::Read) {
        Ok(mapping) => {
            drop(mapping);
            KernelView::Live
        }
        Err(ImportError::DmaBufRevoked { .. }) => KernelView::Revoked,
        Err(ImportError::DmaBufMultiRange { .. }) => KernelView::Live,
        Err(e) => KernelView::Unknown(e.to_string()),
    }
}
