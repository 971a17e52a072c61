//! The kernel's own answer to "is this dma-buf revoked?": a private IOAS on `/dev/iommu`
//! that tries to attach to the buffer with `IOMMU_IOAS_MAP_FILE`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Context, Result};
use peerdma_exporter::{DmaBuf, Errno};
use peerdma_uapi::iommufd::{
    iommu_ioas_alloc, iommu_ioas_map, iommu_ioas_map_file, iommu_ioas_unmap, IOMMU_IOAS_ALLOC,
    IOMMU_IOAS_MAP, IOMMU_IOAS_MAP_FILE, IOMMU_IOAS_MAP_READABLE, IOMMU_IOAS_MAP_WRITEABLE,
    IOMMU_IOAS_UNMAP,
};
use rustix::fs::{Mode, OFlags};
use serde_json::Value;

use crate::json::errno_name;

/// A private IOAS on `/dev/iommu`, used to ask the kernel whether a dma-buf can be
/// attached (live) or not (revoked: ENODEV), and for the iommufd errno checks.
pub(crate) struct KernelProbe {
    pub(crate) iommufd: OwnedFd,
    pub(crate) ioas: u32,
}

impl KernelProbe {
    /// None where the kernel has no iommufd (Debian's stock kernel).
    pub(crate) fn open() -> Result<Option<Self>> {
        if !Path::new("/dev/iommu").exists() {
            return Ok(None);
        }
        let iommufd = rustix::fs::open("/dev/iommu", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .context("opening /dev/iommu")?;
        Self::alloc(iommufd).map(Some)
    }

    /// A new IOAS in `iommufd`.
    pub(crate) fn alloc(iommufd: OwnedFd) -> Result<Self> {
        let mut arg = iommu_ioas_alloc {
            size: size_of::<iommu_ioas_alloc>() as u32,
            ..Default::default()
        };
        // SAFETY: IOMMU_IOAS_ALLOC reads and writes one iommu_ioas_alloc, which `arg`
        // is, with its size field set; the fd is an open iommufd.
        let rc = unsafe { libc::ioctl(iommufd.as_raw_fd(), IOMMU_IOAS_ALLOC as _, &mut arg) };
        if rc < 0 {
            bail!("IOMMU_IOAS_ALLOC: {}", std::io::Error::last_os_error());
        }
        Ok(Self {
            iommufd,
            ioas: arg.out_ioas_id,
        })
    }

    /// IOMMU_IOAS_MAP_FILE of `len` bytes at `start` of `fd`; the IOVA or the errno.
    pub(crate) fn map_file(&self, fd: BorrowedFd<'_>, start: u64, len: u64) -> Result<u64, Errno> {
        let mut arg = iommu_ioas_map_file {
            size: size_of::<iommu_ioas_map_file>() as u32,
            flags: IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
            ioas_id: self.ioas,
            fd: fd.as_raw_fd(),
            start,
            length: len,
            iova: 0,
        };
        // SAFETY: IOMMU_IOAS_MAP_FILE reads and writes one iommu_ioas_map_file, which
        // `arg` is; the fds are open for the duration of the call.
        let rc =
            unsafe { libc::ioctl(self.iommufd.as_raw_fd(), IOMMU_IOAS_MAP_FILE as _, &mut arg) };
        if rc < 0 {
            return Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO));
        }
        Ok(arg.iova)
    }

    /// IOMMU_IOAS_MAP of process memory; the IOVA or the errno.
    pub(crate) fn map_user(&self, ptr: *mut u8, len: u64) -> Result<u64, Errno> {
        let mut arg = iommu_ioas_map {
            size: size_of::<iommu_ioas_map>() as u32,
            flags: IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
            ioas_id: self.ioas,
            user_va: ptr as u64,
            length: len,
            ..Default::default()
        };
        // SAFETY: IOMMU_IOAS_MAP reads and writes one iommu_ioas_map, which `arg` is;
        // the kernel only pins the user range, it does not write through it here.
        let rc = unsafe { libc::ioctl(self.iommufd.as_raw_fd(), IOMMU_IOAS_MAP as _, &mut arg) };
        if rc < 0 {
            return Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO));
        }
        Ok(arg.iova)
    }

    /// IOMMU_IOAS_UNMAP of one mapping.
    pub(crate) fn unmap(&self, iova: u64, len: u64) {
        let mut arg = iommu_ioas_unmap {
            size: size_of::<iommu_ioas_unmap>() as u32,
            ioas_id: self.ioas,
            iova,
            length: len,
        };
        // SAFETY: IOMMU_IOAS_UNMAP reads and writes one iommu_ioas_unmap, which `arg` is.
        unsafe { libc::ioctl(self.iommufd.as_raw_fd(), IOMMU_IOAS_UNMAP as _, &mut arg) };
    }

    /// Whether the kernel lets an importer map the first page of `buf` now:
    /// `"mapped"` or the errno's name (ENODEV while revoked).
    pub(crate) fn probe(&self, buf: &DmaBuf, page: u64) -> String {
        match self.map_file(buf.as_fd(), 0, page) {
            Ok(iova) => {
                self.unmap(iova, page);
                "mapped".into()
            }
            Err(e) => errno_name(e),
        }
    }
}

/// What the probe says, or null without iommufd.
pub(crate) fn probe(kp: Option<&KernelProbe>, buf: &DmaBuf, page: u64) -> Value {
    kp.map_or(Value::Null, |k| k.probe(buf, page).into())
}
