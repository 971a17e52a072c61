//! `peerdma inspect`: what a dma-buf fd is, from fdinfo, plus its attachments where
//! debugfs shows them.

use std::path::PathBuf;

use std::os::fd::{AsFd, OwnedFd};

use anyhow::{bail, Context, Result};
use peerdma_copy::buffer_state::{kernel_view, KernelView};
use peerdma_host::fdinfo::FdInfo;
use peerdma_tools::size::human;
use rustix::process::{pidfd_getfd, pidfd_open, Pid, PidfdFlags, PidfdGetfdFlags};
use serde_json::json;

/// A duplicate of another process's fd (`pidfd_getfd`: needs ptrace access to it).
fn fd_of(pid: &str, fd: i32) -> std::io::Result<OwnedFd> {
    if pid == "self" {
        let path = format!("/proc/self/fd/{fd}");
        return Ok(std::fs::File::open(path)?.into());
    }
    let pid = pid
        .parse::<i32>()
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let pidfd = pidfd_open(pid, PidfdFlags::empty())?;
    Ok(pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty())?)
}

/// The PID part of a target that names one.
fn target_pid(target: &str) -> Option<&str> {
    match target.strip_prefix("/proc/") {
        Some(rest) => rest.split_once("/fd/").map(|(pid, _)| pid),
        None => target.split_once(':').map(|(pid, _)| pid),
    }
}

/// `(fdinfo path, fd number)` for a target spelled `/proc/PID/fd/N` or `PID:FD`.
fn fdinfo_location(target: &str) -> Option<(PathBuf, i32)> {
    let (pid, fd) = if let Some(rest) = target.strip_prefix("/proc/") {
        let (pid, fd) = rest.split_once("/fd/")?;
        (pid, fd)
    } else {
        target.split_once(':')?
    };
    let fd: i32 = fd.parse().ok()?;
    if pid != "self" && pid.parse::<u32>().is_err() {
        return None;
    }
    Some((PathBuf::from(format!("/proc/{pid}/fdinfo/{fd}")), fd))
}

/// Describes the buffer.
pub fn run(target: &str, json: bool) -> Result<()> {
    let (info, _file) = match fdinfo_location(target) {
        Some((path, fd)) => (
            FdInfo::read(path.clone(), fd)
                .with_context(|| format!("reading {}", path.display()))?,
            None,
        ),
        None => {
            let file = std::fs::File::open(target).with_context(|| {
                format!("opening {target} (give /proc/PID/fd/N, PID:FD or a file)")
            })?;
            (FdInfo::of(&file)?, Some(file))
        }
    };
    let Some(exp_name) = info.exp_name.clone() else {
        bail!("{target} is not a dma-buf (its fdinfo has no exp_name line)");
    };
    let attached = info.attachments();
    // The kernel's view (revoked or not) where the fd can be reached and iommufd exists.
    let kernel = match (&_file, fdinfo_location(target), target_pid(target)) {
        (Some(file), _, _) => kernel_view(file.as_fd(), page_size()),
        (None, Some((_, fd)), Some(pid)) => match fd_of(pid, fd) {
            Ok(dup) => kernel_view(dup.as_fd(), page_size()),
            Err(e) => KernelView::Unknown(format!("cannot reach the fd: {e}")),
        },
        _ => KernelView::Unknown("no fd".into()),
    };
    let kernel = if exp_name == "vfio_pci_core" {
        kernel
    } else {
        KernelView::Unknown(format!(
            "revoke state is known for vfio_pci_core buffers, not {exp_name}"
        ))
    };
    let out = json!({
        "target": target,
        "size": info.size,
        "exporter": exp_name,
        "name": info.name,
        "inode": info.ino,
        "file_refs": info.count,
        "flags": format!("{:#o}", info.flags),
        "cloexec": info.cloexec(),
        "attachments": attached,
        "kernel_state": kernel.to_string(),
    });
    if json {
        crate::print_json(&out);
        return Ok(());
    }
    println!(
        "{target}: dma-buf of {} from exporter {exp_name}, inode {}, {} other file reference(s){}",
        human(info.size.unwrap_or(0)),
        info.ino.map(|i| i.to_string()).unwrap_or("?".into()),
        info.count.unwrap_or(0),
        info.name
            .as_ref()
            .map(|n| format!(", name {n:?}"))
            .unwrap_or_default()
    );
    println!("  state as the kernel answers an importer: {kernel}");
    match attached {
        Some(devs) if devs.is_empty() => println!("  no importer attached"),
        Some(devs) => println!("  attached: {}", devs.join(", ")),
        None => println!("  attachments unknown (mount debugfs at /sys/kernel/debug to see them)"),
    }
    Ok(())
}

fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_their_fdinfo() {
        assert_eq!(
            fdinfo_location("/proc/42/fd/7"),
            Some((PathBuf::from("/proc/42/fdinfo/7"), 7))
        );
        assert_eq!(
            fdinfo_location("42:7"),
            Some((PathBuf::from("/proc/42/fdinfo/7"), 7))
        );
        assert_eq!(fdinfo_location("/dev/dma_heap/system"), None);
        assert_eq!(fdinfo_location("x:7"), None);
    }
}
