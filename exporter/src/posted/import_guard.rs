//! Surviving a revoke under an importer that maps the dma-buf itself.
//!
//! A CPU Vulkan implementation (lavapipe) imports a dma-buf by mmapping it. With the
//! posted series a vfio-pci dma-buf can be mapped, and a revoke (REVOKE, memory decode
//! off, reset) zaps that mapping: the implementation's next access raises SIGBUS in
//! one of its threads, which ends the whole process without a word (seen on the ahead
//! kernel: `vulkan_interop` died with "Bus error" under `peerdma revoke`).
//! [`ImportGuard`] finds the importer's mappings of a dma-buf in `/proc/self/maps` and
//! guards them as [`MappedRegion::guard_against_revoke`](crate::MappedRegion) guards
//! its own: the faulting access completes on anonymous memory, and
//! [`ImportGuard::revoked_under_access`] turns true, so the importer can fail by name.

use std::os::fd::BorrowedFd;

use crate::sigbus::{GuardError, SigbusGuard};

/// Guards over every mapping of one dma-buf in this process; unregistered on drop,
/// which must happen before the importer unmaps them (drop it before the import).
#[derive(Debug)]
pub struct ImportGuard {
    guards: Vec<SigbusGuard>,
}

impl ImportGuard {
    /// Guards every mapping of the dma-buf `fd` that this process has now (matched by
    /// device and inode in `/proc/self/maps`). None found is an empty guard.
    ///
    /// # Errors
    ///
    /// [`GuardError::NoSlot`] when the process-wide guard slots (8) run out;
    /// [`GuardError::Install`] when the SIGBUS handler cannot be installed.
    pub fn of_dma_buf(fd: BorrowedFd<'_>) -> Result<ImportGuard, GuardError> {
        let Ok(stat) = rustix::fs::fstat(fd) else {
            return Ok(ImportGuard { guards: Vec::new() });
        };
        let dev = (
            rustix::fs::major(stat.st_dev),
            rustix::fs::minor(stat.st_dev),
        );
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let mut guards = Vec::new();
        for (start, end) in maps_of(&maps, dev, stat.st_ino) {
            guards.push(SigbusGuard::new(start as *mut u8, end - start)?);
        }
        Ok(ImportGuard { guards })
    }

    /// How many mappings it guards.
    pub fn mappings(&self) -> usize {
        self.guards.len()
    }

    /// Whether an access to a guarded mapping faulted since: the buffer was revoked
    /// under the importer, which then read or wrote anonymous memory, not the BAR.
    pub fn revoked_under_access(&self) -> bool {
        self.guards.iter().any(SigbusGuard::faulted)
    }
}

/// The `start..end` of each line of `/proc/PID/maps` text that maps device `dev`
/// (major, minor) inode `ino`.
fn maps_of(maps: &str, dev: (u32, u32), ino: u64) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let (range, _perms, _off, d, i) =
                (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
            let (maj, min) = d.split_once(':')?;
            let same = u32::from_str_radix(maj, 16).ok()? == dev.0
                && u32::from_str_radix(min, 16).ok()? == dev.1
                && i.parse::<u64>().ok()? == ino;
            let (s, e) = range.split_once('-')?;
            same.then_some((
                usize::from_str_radix(s, 16).ok()?,
                usize::from_str_radix(e, 16).ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_of_one_dma_buf_are_found_by_device_and_inode() {
        let maps = "\
7f0000000000-7f0000200000 rw-s 00000000 00:0c 3                          /dmabuf:
7f0000200000-7f0000400000 rw-s 00000000 00:0c 4                          /dmabuf:
7f0000400000-7f0000401000 r--p 00000000 08:01 3                          /usr/lib/x
7f0000500000-7f0000600000 rw-s 00000000 00:0c 3                          /dmabuf:
";
        assert_eq!(
            maps_of(maps, (0, 0x0c), 3),
            [
                (0x7f0000000000, 0x7f0000200000),
                (0x7f0000500000, 0x7f0000600000)
            ]
        );
        assert!(maps_of(maps, (0, 0x0d), 3).is_empty());
        assert!(maps_of("", (0, 0x0c), 3).is_empty());
    }
}
