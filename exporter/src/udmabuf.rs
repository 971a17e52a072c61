//! The system-memory exporter, the baseline: dma-bufs from `/dev/udmabuf`, a
//! sealed memfd whose pages the kernel wraps in a dma-buf (`UDMABUF_CREATE`).
//!
//! A udmabuf is the counterpart that a BAR dma-buf is compared with: any importer that
//! takes dma-bufs takes it, it supports `mmap`, and its bytes can be written and read
//! through the memfd with plain `pwrite`/`pread`. Needs `CONFIG_UDMABUF` (the reference
//! 7.2 kernel has it built in; many hosts do not).
//!

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use peerdma_uapi::udmabuf::{udmabuf_create, UDMABUF_FLAGS_CLOEXEC};
use rustix::fs::{MemfdFlags, Mode, OFlags, SealFlags};
use rustix::io::Errno;

use crate::ioctl;

/// The device node that creates udmabufs.
pub const UDMABUF_DEVICE: &str = "/dev/udmabuf";

/// Why a udmabuf could not be made.
#[derive(Debug, thiserror::Error)]
pub enum UdmabufError {
    /// `memfd_create` failed.
    #[error("memfd_create for a {size}-byte udmabuf failed: {errno}")]
    Memfd {
        /// Requested size.
        size: u64,
        /// The errno.
        errno: Errno,
    },
    /// `/dev/udmabuf` cannot be opened.
    #[error(
        "cannot open {UDMABUF_DEVICE}: {errno}{}",
        if *errno == Errno::NOENT {
            " (this kernel has no udmabuf: CONFIG_UDMABUF is off; the reference 7.2 testbed kernel has it)"
        } else {
            ""
        }
    )]
    NoDevice {
        /// The errno of `open`.
        errno: Errno,
    },
    /// Growing the memfd or sealing it against shrinking failed.
    #[error("preparing the memfd ({step}) failed: {errno}")]
    Prepare {
        /// `ftruncate` or `F_ADD_SEALS`.
        step: &'static str,
        /// The errno.
        errno: Errno,
    },
    /// The size is zero or not a multiple of the page size.
    #[error("udmabuf size {size} is not a non-zero multiple of the page size {page_size}")]
    BadSize {
        /// Requested size.
        size: u64,
        /// The page size.
        page_size: u64,
    },
    /// `UDMABUF_CREATE` failed.
    #[error(
        "UDMABUF_CREATE of {size} bytes failed: {errno}{}",
        if *errno == Errno::INVAL {
            " (size above the udmabuf module's size_limit_mb, 64 MiB by default, or memfd not sealed)"
        } else {
            ""
        }
    )]
    Create {
        /// Requested size.
        size: u64,
        /// The errno.
        errno: Errno,
    },
}

/// A dma-buf over the pages of a memfd, and that memfd.
#[derive(Debug)]
pub struct Udmabuf {
    memfd: OwnedFd,
    dmabuf: OwnedFd,
    size: u64,
}

impl Udmabuf {
    /// Creates a zero-filled udmabuf of `size` bytes (a non-zero multiple of the page
    /// size) from a new memfd sealed against shrinking. Both fds are close-on-exec.
    ///
    /// # Errors
    ///
    /// [`UdmabufError::BadSize`] for a zero or unaligned size,
    /// [`UdmabufError::Memfd`]/[`UdmabufError::Prepare`] when the memfd cannot be
    /// made, [`UdmabufError::NoDevice`] without `/dev/udmabuf`, and
    /// [`UdmabufError::Create`] when the kernel refuses (size limit, sealing).
    pub fn create(size: u64) -> Result<Self, UdmabufError> {
        let page_size = rustix::param::page_size() as u64;
        if size == 0 || !size.is_multiple_of(page_size) {
            return Err(UdmabufError::BadSize { size, page_size });
        }
        let memfd = rustix::fs::memfd_create(
            "peerdma-udmabuf",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(|errno| UdmabufError::Memfd { size, errno })?;
        rustix::fs::ftruncate(&memfd, size).map_err(|errno| UdmabufError::Prepare {
            step: "ftruncate",
            errno,
        })?;
        rustix::fs::fcntl_add_seals(&memfd, SealFlags::SHRINK).map_err(|errno| {
            UdmabufError::Prepare {
                step: "F_ADD_SEALS(F_SEAL_SHRINK)",
                errno,
            }
        })?;
        let dev = rustix::fs::open(
            Path::new(UDMABUF_DEVICE),
            OFlags::RDWR | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| UdmabufError::NoDevice { errno })?;
        let raw_memfd = memfd.as_raw_fd();
        let mut arg = udmabuf_create {
            memfd: raw_memfd as u32,
            flags: UDMABUF_FLAGS_CLOEXEC,
            offset: 0,
            size,
        };
        let dmabuf = ioctl::udmabuf_create(dev.as_fd(), &mut arg)
            .map_err(|errno| UdmabufError::Create { size, errno })?;
        Ok(Udmabuf {
            memfd,
            dmabuf,
            size,
        })
    }

    /// Whether this kernel offers udmabuf (`/dev/udmabuf` exists).
    pub fn available() -> bool {
        Path::new(UDMABUF_DEVICE).exists()
    }

    /// The dma-buf's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The memfd behind the buffer: writes and reads through it are the buffer's bytes.
    pub fn memfd(&self) -> BorrowedFd<'_> {
        self.memfd.as_fd()
    }

    /// The dma-buf.
    pub fn dmabuf(&self) -> BorrowedFd<'_> {
        self.dmabuf.as_fd()
    }

    /// Writes `data` at `offset` through the memfd.
    ///
    /// # Errors
    ///
    /// The errno of `pwrite`; `ENOSPC` when it stops short.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let mut done = 0;
        while done < data.len() {
            let n = rustix::io::pwrite(&self.memfd, &data[done..], offset + done as u64)?;
            if n == 0 {
                return Err(Errno::NOSPC);
            }
            done += n;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset` through the memfd.
    ///
    /// # Errors
    ///
    /// The errno of `pread`; `ENXIO` when it stops short (past the end).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let mut done = 0;
        while done < buf.len() {
            let n = rustix::io::pread(&self.memfd, &mut buf[done..], offset + done as u64)?;
            if n == 0 {
                return Err(Errno::NXIO);
            }
            done += n;
        }
        Ok(())
    }

    /// Splits into (memfd, dma-buf).
    pub fn into_parts(self) -> (OwnedFd, OwnedFd) {
        (self.memfd, self.dmabuf)
    }
}

impl AsFd for Udmabuf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.dmabuf.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unaligned_sizes() {
        assert!(matches!(
            Udmabuf::create(0),
            Err(UdmabufError::BadSize { .. })
        ));
        assert!(matches!(
            Udmabuf::create(100),
            Err(UdmabufError::BadSize { .. })
        ));
    }

    /// On a host without `/dev/udmabuf` (most: the module is rarely loaded) the error
    /// names the kernel option; where it exists, the create succeeds.
    #[test]
    fn creates_or_names_the_missing_device() {
        match Udmabuf::create(4096) {
            Ok(_) => assert!(Udmabuf::available()),
            Err(err) => {
                assert!(!Udmabuf::available(), "/dev/udmabuf exists, yet: {err}");
                assert!(err.to_string().contains("CONFIG_UDMABUF"), "{err}");
            }
        }
    }
}
