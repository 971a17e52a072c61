//! Revoke, on request, the dma-bufs of a device that other processes hold: what
//! `peerdma revoke` does.
//!
//! The REVOKE feature takes the device fd and the dma-buf fd, so this takes both from
//! the processes that hold them, with `pidfd_getfd(2)` (which needs ptrace access to
//! them: root, or `CAP_SYS_PTRACE`): a VFIO device fd of the BDF (its fdinfo names the
//! device's sysfs path, `vfio-device-syspath`) and every vfio-pci dma-buf (fdinfo
//! `exp_name: vfio_pci_core`), each revoked once (by inode) through that device fd.
//! A dma-buf that a process only maps, holding no fd of it, cannot be reached: REVOKE
//! needs an fd, and `/proc/PID/map_files` does not reopen a dma-buf (ENXIO).
//! The kernel answers ENODEV for a dma-buf of another device; it is left alone.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::process::{pidfd_getfd, pidfd_open, Pid, PidfdFlags, PidfdGetfdFlags};

use super::ops::feature_error;
use super::{FeatureError, PostedFeature};
use crate::ioctl;
use peerdma_host::fdinfo::FdInfo;
use peerdma_host::Bdf;

/// One dma-buf fd a process holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldDmaBuf {
    /// The process.
    pub pid: u32,
    /// Its fd number there.
    pub fd: i32,
    /// The dma-buf's inode (the same in every process that holds it).
    pub ino: u64,
    /// Its size in bytes.
    pub size: u64,
}

/// What happened to one held dma-buf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// Revoked for good now.
    Revoked,
    /// It was already revoked for good (EBADFD).
    AlreadyRevoked,
}

/// Why [`revoke_held`] revoked nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeldError {
    /// The kernel has no REVOKE, or refused.
    #[error(transparent)]
    Feature(#[from] FeatureError),
    /// No process (visible from here) holds the device open.
    #[error(
        "{bdf}: no process holds the device open through VFIO (none of /proc/*/fdinfo names \
         it), so there is no dma-buf of it to revoke; fix: check the BDF, and run as root: \
         other users' processes are not visible"
    )]
    NoDeviceHolder {
        /// The device.
        bdf: Bdf,
    },
    /// A process holds the device, but no dma-buf of it was found (with the filter).
    #[error(
        "{bdf}: no process holds a vfio-pci dma-buf of the device{filter}; fix: name the \
         process that holds one (peerdma inspect lists a process's dma-bufs)"
    )]
    NoDmaBuf {
        /// The device.
        bdf: Bdf,
        /// The pid/fd filter, as words (" in pid 81", " at pid 81 fd 5").
        filter: String,
    },
    /// `pidfd_open`/`pidfd_getfd` failed.
    #[error(
        "taking fd {fd} of pid {pid} failed: {} (pidfd_getfd needs ptrace access); \
         fix: run as root",
        peerdma_host::errno_name(*errno)
    )]
    TakeFd {
        /// The process.
        pid: u32,
        /// The fd there.
        fd: i32,
        /// What the kernel returned.
        errno: rustix::io::Errno,
    },
}

impl HeldError {
    /// A stable, machine-readable name for this error.
    pub fn kind(&self) -> &'static str {
        match self {
            HeldError::Feature(e) => e.kind(),
            HeldError::NoDeviceHolder { .. } => "no_device_holder",
            HeldError::NoDmaBuf { .. } => "no_dma_buf",
            HeldError::TakeFd { .. } => "take_fd",
        }
    }
}

/// Revokes for good every vfio-pci dma-buf of `bdf` that a process under `proc_root`
/// (`/proc`) holds, or only those of `pid`, or only its fd `fd`; returns each with what
/// happened, in the order found.
///
/// Source: `VFIO_DEVICE_FEATURE_DMA_BUF_REVOKE` of the posted series
/// ([`crate::posted`]); `pidfd_getfd(2)`.
///
/// # Errors
///
/// [`HeldError::NoDeviceHolder`], [`HeldError::NoDmaBuf`] when there is nothing to
/// revoke; [`HeldError::TakeFd`]; [`HeldError::Feature`] with
/// [`FeatureError::Missing`] on a kernel without the series.
pub fn revoke_held(
    proc_root: &Path,
    bdf: Bdf,
    pid: Option<u32>,
    fd: Option<i32>,
) -> Result<Vec<(HeldDmaBuf, RevokeOutcome)>, HeldError> {
    let mut device: Option<(u32, i32)> = None;
    let mut bufs: Vec<HeldDmaBuf> = Vec::new();
    let want = bdf.to_string();
    let Ok(procs) = std::fs::read_dir(proc_root) else {
        return Err(HeldError::NoDeviceHolder { bdf });
    };
    for p in procs.flatten() {
        let Some(p_id) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        for f in fds.flatten() {
            let Some(n) = f.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(info) = FdInfo::read(f.path(), n) else {
                continue;
            };
            if info
                .vfio_device_syspath
                .as_ref()
                .is_some_and(|s| s.file_name().is_some_and(|b| b == want.as_str()))
            {
                device.get_or_insert((p_id, n));
            }
            let selected = pid.is_none_or(|w| w == p_id) && fd.is_none_or(|w| w == n);
            if selected && info.exp_name.as_deref() == Some("vfio_pci_core") {
                if let Some(ino) = info.ino.filter(|i| bufs.iter().all(|b| b.ino != *i)) {
                    bufs.push(HeldDmaBuf {
                        pid: p_id,
                        fd: n,
                        ino,
                        size: info.size.unwrap_or(0),
                    });
                }
            }
        }
    }
    let (dev_pid, dev_fd) = device.ok_or(HeldError::NoDeviceHolder { bdf })?;
    let filter = match (pid, fd) {
        (Some(p), Some(f)) => format!(" at pid {p} fd {f}"),
        (Some(p), None) => format!(" in pid {p}"),
        (None, Some(f)) => format!(" at fd {f} of any process"),
        (None, None) => String::new(),
    };
    if bufs.is_empty() {
        return Err(HeldError::NoDmaBuf { bdf, filter });
    }
    let device_fd = take(dev_pid, dev_fd)?;
    let mut done = Vec::new();
    for buf in bufs {
        let dmabuf = take(buf.pid, buf.fd)?;
        match ioctl::device_feature_dma_buf_revoke(device_fd.as_fd(), dmabuf.as_fd()) {
            Ok(()) => done.push((buf, RevokeOutcome::Revoked)),
            Err(rustix::io::Errno::BADFD) => done.push((buf, RevokeOutcome::AlreadyRevoked)),
            // Exported by another device.
            Err(rustix::io::Errno::NODEV) => {}
            Err(errno) => return Err(feature_error(bdf, PostedFeature::DmaBufRevoke, errno).into()),
        }
    }
    if done.is_empty() {
        return Err(HeldError::NoDmaBuf { bdf, filter });
    }
    Ok(done)
}

/// A copy of fd `fd` of process `pid`.
fn take(pid: u32, fd: i32) -> Result<OwnedFd, HeldError> {
    let err = |errno| HeldError::TakeFd { pid, fd, errno };
    let p = Pid::from_raw(pid as i32).ok_or(err(rustix::io::Errno::SRCH))?;
    let pidfd = pidfd_open(p, PidfdFlags::empty()).map_err(err)?;
    pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty()).map_err(err)
}
