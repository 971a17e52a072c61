//! Importing dma-bufs into iommufd: an [`Iommufd`], the I/O address spaces
//! ([`Ioas`]) in it, mappings that unmap themselves, and devices attached to
//! an IOAS so that they can DMA to what is mapped there.
//!
//! The path a peer-to-peer DMA takes, top to bottom:
//!
//! 1. the DMA engine is a vfio cdev [`Device`] bound to an iommufd; wrap that
//!    iommufd with [`Iommufd::of_device`] (a device can attach only to an IOAS
//!    of the iommufd it is bound to);
//! 2. [`Ioas::alloc_with`] an IOAS whose [`Placement`] knows the engine's DMA
//!    mask and longest transfer, and [`Ioas::attach`] the engine;
//! 3. map the peer's BAR dma-buf ([`Ioas::map_vfio_dmabuf`], or
//!    [`Ioas::map_dmabuf`] for any fd) and host memory ([`Ioas::map_host`]);
//!    each [`Iova::Guarded`] mapping gets an unmapped guard gap on both sides, so
//!    a DMA that overruns a buffer faults in the IOMMU instead of landing in
//!    its neighbour;
//! 4. the engine DMAs between the IOVAs.
//!
//! Revoke: when the exporter's memory decode goes off (or it is reset, put in
//! D3hot, closed) the kernel tears the dma-buf's IOMMU mapping down; when
//! decode comes back the mapping stays dead until it is unmapped and mapped
//! again. A [`DmaBufMapping`] that follows its exporter reports that through
//! [`DmaBufMapping::state`] and [`DmaBufMapping::remap`]s in place, at the same
//! IOVA, without rebuilding the IOAS.
//!
//! On a kernel without iommufd (Debian's stock kernels), [`Iommufd::open`]
//! fails with [`Error::NoIommufd`], which says so.

mod attach;
mod dmabuf_mapping;
pub mod error;
mod ioctl;
pub mod iova;
mod map_request;
mod mapped;
mod user_memory;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use peerdma_exporter::Device;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

pub use attach::Attachment;
pub use dmabuf_mapping::{DmaBufMapping, MappingState};
pub use error::{Error, Result, SpanRule};
pub use ioctl::IommufdIoctl;
pub use iova::{Iova, IovaRange, Placement, DEFAULT_GUARD};
pub use map_request::Prot;
pub use mapped::Mapped;
pub use user_memory::{UserBuffer, UserMapping};

use iova::Allocator;

/// The iommufd device node.
pub const DEV_IOMMU: &str = "/dev/iommu";

/// An open iommufd (`/dev/iommu`). Cheap to clone: clones share the fd.
#[derive(Clone, Debug)]
pub struct Iommufd {
    fd: Arc<OwnedFd>,
}

impl Iommufd {
    /// Opens `/dev/iommu`.
    ///
    /// # Errors
    /// As for [`Iommufd::open_path`].
    pub fn open() -> Result<Self> {
        Self::open_path(Path::new(DEV_IOMMU))
    }

    /// The process's shared iommufd: the one the exporter binds every device it
    /// opens through its cdev to (`peerdma_exporter::shared_iommufd`), opened now
    /// if nothing holds it. An engine opened with it shares a context with the
    /// devices whose BARs it reaches, which Linux requires when they are in one
    /// IOMMU group (`iommufd_device_bind` refuses a second iommufd for a group:
    /// EPERM).
    ///
    /// # Errors
    /// As for [`Iommufd::open_path`].
    pub fn shared() -> Result<Self> {
        let path = Path::new(DEV_IOMMU);
        match peerdma_exporter::shared_iommufd(path) {
            Ok(fd) => Ok(Iommufd { fd }),
            Err(Errno::NOENT) | Err(Errno::NODEV) | Err(Errno::NXIO) => Err(Error::NoIommufd {
                path: path.to_path_buf(),
            }),
            Err(errno) => Err(Error::OpenIommufd {
                path: path.to_path_buf(),
                errno,
            }),
        }
    }

    /// Opens the iommufd node at `path`.
    ///
    /// # Errors
    /// [`Error::NoIommufd`] when the node is missing (`ENOENT`, `ENODEV`, `ENXIO`: no
    /// `CONFIG_IOMMUFD`), [`Error::OpenIommufd`] for any other errno.
    pub fn open_path(path: &Path) -> Result<Self> {
        match rustix::fs::open(path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => Ok(Self::from_fd(fd)),
            Err(Errno::NOENT) | Err(Errno::NODEV) | Err(Errno::NXIO) => Err(Error::NoIommufd {
                path: path.to_path_buf(),
            }),
            Err(errno) => Err(Error::OpenIommufd {
                path: path.to_path_buf(),
                errno,
            }),
        }
    }

    /// Wraps an iommufd handed over by a management process.
    pub fn from_fd(fd: OwnedFd) -> Self {
        Iommufd { fd: Arc::new(fd) }
    }

    /// The iommufd a cdev [`Device`] is bound to (a duplicate of its fd: the
    /// same iommufd context, so the device can attach to IOASes made here).
    ///
    /// # Errors
    /// [`Error::DeviceNotCdev`] when the device was opened through a VFIO group, not
    /// its cdev; [`Error::Fcntl`] when the dup fails.
    pub fn of_device(device: &Device) -> Result<Self> {
        let fd = device
            .iommufd()
            .ok_or(Error::DeviceNotCdev { bdf: device.bdf() })?;
        let dup = rustix::io::fcntl_dupfd_cloexec(fd, 0).map_err(|errno| Error::Fcntl {
            command: "F_DUPFD_CLOEXEC",
            errno,
            fix: "close file descriptors, or raise the process's limit (RLIMIT_NOFILE)",
        })?;
        Ok(Self::from_fd(dup))
    }

    /// A new fd for the same iommufd, e.g. to open a device bound to it with
    /// `PassedFds::Iommufd`.
    ///
    /// # Errors
    /// [`Error::Fcntl`] (`F_DUPFD_CLOEXEC`) when the dup fails.
    pub fn try_clone_fd(&self) -> Result<OwnedFd> {
        rustix::io::fcntl_dupfd_cloexec(self.fd.as_fd(), 0).map_err(|errno| Error::Fcntl {
            command: "F_DUPFD_CLOEXEC",
            errno,
            fix: "close file descriptors, or raise the process's limit (RLIMIT_NOFILE)",
        })
    }

    /// Whether `other` refers to the same open iommufd (the same open file
    /// description, so the same iommufd context) as this one.
    ///
    /// This is what `kcmp(KCMP_FILE)` answers; it is found without it by
    /// flipping a file status flag iommufd ignores (`O_NONBLOCK`) through one
    /// fd and reading it back through the other, then restoring it. Separate
    /// opens of `/dev/iommu` share the inode, so `fstat` cannot tell them apart.
    ///
    /// # Errors
    /// [`Error::Fcntl`] (`F_GETFL/F_SETFL`) when either fd is not open.
    pub fn is_same_file(&self, other: BorrowedFd<'_>) -> Result<bool> {
        let err = |errno| Error::Fcntl {
            command: "F_GETFL/F_SETFL",
            errno,
            fix: "pass an open fd",
        };
        let mine = self.fd.as_fd();
        let before = rustix::fs::fcntl_getfl(mine).map_err(err)?;
        let theirs_before = rustix::fs::fcntl_getfl(other).map_err(err)?;
        if before.contains(OFlags::NONBLOCK) != theirs_before.contains(OFlags::NONBLOCK) {
            return Ok(false);
        }
        rustix::fs::fcntl_setfl(mine, before ^ OFlags::NONBLOCK).map_err(err)?;
        let theirs = rustix::fs::fcntl_getfl(other);
        let restored = rustix::fs::fcntl_setfl(mine, before);
        let theirs = theirs.map_err(err)?;
        restored.map_err(err)?;
        Ok(theirs.contains(OFlags::NONBLOCK) != before.contains(OFlags::NONBLOCK))
    }
}

impl AsFd for Iommufd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// State shared by an IOAS and its mappings and attachments: the IOAS is
/// destroyed when the last of them goes.
#[derive(Debug)]
pub(crate) struct IoasInner {
    pub(crate) iommufd: Iommufd,
    pub(crate) id: u32,
    pub(crate) placement: Placement,
    pub(crate) state: Mutex<IoasState>,
}

/// The mutable part: where mappings are and what the kernel allows.
#[derive(Debug, Default)]
pub(crate) struct IoasState {
    pub(crate) alloc: Allocator,
    /// Cached `IOMMU_IOAS_IOVA_RANGES` answer (ranges, alignment), dropped
    /// when a device attaches or detaches through this library.
    pub(crate) ranges: Option<(Vec<IovaRange>, u64)>,
}

impl IoasInner {
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.iommufd.as_fd()
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, IoasState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The usable ranges and the IOVA alignment, from the cache or the kernel.
    pub(crate) fn ranges(&self, state: &mut IoasState) -> Result<(Vec<IovaRange>, u64)> {
        self.load_ranges(state)?;
        Ok(state.ranges.clone().unwrap_or_default())
    }

    /// Fills the range cache if it is empty; returns the IOVA alignment.
    pub(crate) fn load_ranges(&self, state: &mut IoasState) -> Result<u64> {
        if let Some((_, align)) = &state.ranges {
            return Ok(*align);
        }
        let (raw, align) =
            ioctl::ioas_iova_ranges(self.fd(), self.id).map_err(|errno| Error::Ioctl {
                ioctl: IommufdIoctl::IoasIovaRanges,
                ioas: self.id,
                errno,
                fix: "the IOAS is gone",
            })?;
        let page = rustix::param::page_size() as u64;
        let align = align.max(page).next_power_of_two();
        let mut ranges: Vec<IovaRange> = raw
            .iter()
            .map(|r| IovaRange {
                start: r.start,
                last: r.last,
            })
            .collect();
        ranges.sort_by_key(|r| r.start);
        state.ranges = Some((ranges, align));
        Ok(align)
    }
}

impl IoasInner {
    /// `IOMMU_IOAS_UNMAP` of exactly one mapping.
    pub(crate) fn unmap(&self, iova: u64, len: u64) -> Result<()> {
        ioctl::ioas_unmap(self.fd(), self.id, iova, len)
            .map(|_| ())
            .map_err(|errno| Error::Ioctl {
                ioctl: IommufdIoctl::IoasUnmap,
                ioas: self.id,
                errno,
                fix: "nothing is mapped there any more, or a kernel user pins it",
            })
    }
}

impl Drop for IoasInner {
    fn drop(&mut self) {
        // Every mapping and attachment holds an Arc, so none is left. An error
        // cannot be reported from drop; closing the iommufd frees the IOAS anyway.
        let _ = ioctl::destroy(self.iommufd.as_fd(), self.id);
    }
}

/// An I/O address space in an iommufd. Destroyed (`IOMMU_DESTROY`) when it and
/// every mapping and attachment made from it are dropped.
#[derive(Clone, Debug)]
pub struct Ioas {
    pub(crate) inner: Arc<IoasInner>,
}

impl Ioas {
    /// `IOMMU_IOAS_ALLOC` with the default [`Placement`] (64 KiB guard, no
    /// DMA-mask limit).
    ///
    /// # Errors
    /// As for [`Ioas::alloc_with`].
    pub fn alloc(iommufd: &Iommufd) -> Result<Self> {
        Self::alloc_with(iommufd, Placement::default())
    }

    /// `IOMMU_IOAS_ALLOC`; automatic IOVAs follow `placement`, and no mapping
    /// may pass `placement.limit`.
    ///
    /// # Errors
    /// [`Error::Ioctl`] (`IOMMU_IOAS_ALLOC`) when the fd is not an iommufd or the kernel
    /// cannot allocate the IOAS.
    pub fn alloc_with(iommufd: &Iommufd, placement: Placement) -> Result<Self> {
        let id = ioctl::ioas_alloc(iommufd.as_fd()).map_err(|errno| Error::Ioctl {
            ioctl: IommufdIoctl::IoasAlloc,
            ioas: 0,
            errno,
            fix: if errno == Errno::NOTTY {
                "the fd is not an iommufd"
            } else {
                "the kernel could not allocate the IOAS"
            },
        })?;
        Ok(Ioas {
            inner: Arc::new(IoasInner {
                iommufd: iommufd.clone(),
                id,
                placement,
                state: Mutex::new(IoasState::default()),
            }),
        })
    }

    /// The IOAS id in its iommufd.
    pub fn id(&self) -> u32 {
        self.inner.id
    }

    /// The iommufd it lives in.
    pub fn iommufd(&self) -> &Iommufd {
        &self.inner.iommufd
    }

    /// How automatic IOVAs are placed.
    pub fn placement(&self) -> Placement {
        self.inner.placement
    }

    /// The IOVA ranges the kernel lets this IOAS map (the attached devices'
    /// reserved regions, such as the MSI window, are holes), fresh from
    /// `IOMMU_IOAS_IOVA_RANGES`, and the IOVA alignment mappings need.
    ///
    /// # Errors
    /// [`Error::Ioctl`] (`IOMMU_IOAS_IOVA_RANGES`) when the kernel refuses the query.
    pub fn iova_ranges(&self) -> Result<(Vec<IovaRange>, u64)> {
        let mut state = self.inner.state();
        state.ranges = None;
        self.inner.ranges(&mut state)
    }

    /// The ranges a mapping can use: the usable ranges cut at the DMA-mask limit.
    ///
    /// # Errors
    /// As for [`Ioas::iova_ranges`].
    pub fn usable_ranges(&self) -> Result<Vec<IovaRange>> {
        let limit = self.inner.placement.limit;
        Ok(self
            .iova_ranges()?
            .0
            .into_iter()
            .filter(|r| r.start <= limit)
            .map(|r| IovaRange {
                start: r.start,
                last: r.last.min(limit),
            })
            .collect())
    }

    /// The mappings made through this IOAS, `(iova, len)` by address.
    pub fn mappings(&self) -> Vec<(u64, u64)> {
        self.inner.state().alloc.reserved()
    }

    /// Forgets the cached usable ranges (after attaching a device to this IOAS
    /// by other means).
    pub fn refresh_ranges(&self) {
        self.inner.state().ranges = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_node_is_explained_as_no_iommufd() {
        let err = Iommufd::open_path(Path::new("/nonexistent/iommu")).unwrap_err();
        assert!(matches!(err, Error::NoIommufd { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("CONFIG_IOMMUFD is off"), "{msg}");
        assert!(msg.contains("group/container path"), "{msg}");
        assert_eq!(err.errno(), Some(Errno::NOENT));
    }

    #[test]
    fn same_file_is_told_apart_from_another_open() {
        // Any fd works for the check. Two opens of /dev/null stand in for two
        // opens of /dev/iommu: same inode, different open files.
        let open = || rustix::fs::open("/dev/null", OFlags::RDWR, Mode::empty()).unwrap();
        let (a, b) = (open(), open());
        let fd = Iommufd::from_fd(a);
        let dup = fd.try_clone_fd().unwrap();
        assert!(fd.is_same_file(dup.as_fd()).unwrap());
        assert!(!fd.is_same_file(b.as_fd()).unwrap());
        // The probe leaves the flags as they were.
        assert!(!rustix::fs::fcntl_getfl(&dup)
            .unwrap()
            .contains(OFlags::NONBLOCK));
        // A description with O_NONBLOCK already set differs at once from one without.
        rustix::fs::fcntl_setfl(&b, OFlags::NONBLOCK).unwrap();
        assert!(!fd.is_same_file(b.as_fd()).unwrap());
    }
}
