//! Why an import failed: who holds the fd after a failed `vkAllocateMemory`, and whether
//! the CPU can map the dma-buf (what CPU implementations such as lavapipe need).

use std::os::fd::BorrowedFd;

use rustix::io::Errno;

/// The (device, inode) of whatever file descriptor number `raw` names now, found
/// through `/proc/self/fd` so that a number the driver may have closed is never
/// used as a descriptor.
pub(super) fn identity(raw: i32) -> std::result::Result<(u64, u64), Errno> {
    let st = rustix::fs::stat(format!("/proc/self/fd/{raw}"))?;
    Ok((st.st_dev, st.st_ino))
}

/// Who holds the dup after a failed import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DupAfterFailure {
    /// The number still names our file: ours to close (what the spec says).
    StillOurs,
    /// The number is closed, or names another file now: the driver closed it.
    ClosedByDriver,
    /// `/proc` cannot tell: keep the number open rather than risk closing someone
    /// else's descriptor.
    Unknown,
}

pub(super) fn dup_after_failure(raw: i32, ours: (u64, u64)) -> DupAfterFailure {
    match identity(raw) {
        Ok(id) if id == ours => DupAfterFailure::StillOurs,
        Ok(_) => DupAfterFailure::ClosedByDriver,
        Err(_) if rustix::fs::stat("/proc/self/fd").is_ok() => DupAfterFailure::ClosedByDriver,
        Err(_) => DupAfterFailure::Unknown,
    }
}

/// Probes whether the dma-buf can be mapped by the CPU (what CPU drivers need).
pub(super) fn mmap_probe(fd: BorrowedFd<'_>, len: u64) -> std::result::Result<(), Errno> {
    let len = len.clamp(1, rustix::param::page_size() as u64) as usize;
    // SAFETY: a fresh shared read-only mapping at an address the kernel picks; it
    // aliases no Rust object and is unmapped right away without being touched.
    unsafe {
        let p = rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            rustix::mm::ProtFlags::READ,
            rustix::mm::MapFlags::SHARED,
            fd,
            0,
        )?;
        let _ = rustix::mm::munmap(p, len);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn identity_follows_the_file() {
        let a = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let b = rustix::io::fcntl_dupfd_cloexec(&a, 0).unwrap();
        assert_eq!(identity(a.as_raw_fd()), identity(b.as_raw_fd()));
        let raw = b.as_raw_fd();
        drop(b);
        // Closed, or (another test thread) reused for a different file.
        assert_ne!(identity(raw), identity(a.as_raw_fd()));
        let st = rustix::fs::fstat(&a).unwrap();
        let ours = (st.st_dev, st.st_ino);
        assert_eq!(
            dup_after_failure(a.as_raw_fd(), ours),
            DupAfterFailure::StillOurs
        );
        assert_eq!(
            dup_after_failure(raw, ours),
            DupAfterFailure::ClosedByDriver
        );
    }
}
