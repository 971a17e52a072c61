//! Surviving a revoke while the CPU touches a BAR mapping.
//!
//! When memory decode goes off (or the device resets) vfio-pci zaps the BAR's user
//! mappings (`vfio_pci_zap_and_down_write_memory_lock`), and the next access faults
//! with SIGBUS. A [`SigbusGuard`] registers a mapping; the process-wide SIGBUS handler,
//! on a fault inside a guarded range, maps anonymous memory over the whole range (so
//! the interrupted access completes on harmless memory) and marks the guard. Callers
//! check [`SigbusGuard::faulted`] after each access and stop with an error instead of
//! dying. A SIGBUS anywhere else keeps its default action.
//!
//! Guards are created for a [`MappedRegion`](crate::MappedRegion)'s own mapping
//! ([`MappedRegion::guard_against_revoke`](crate::MappedRegion::guard_against_revoke)),
//! which drops its guard before it unmaps, and for an importer's mappings of a dma-buf
//! ([`ImportGuard`](crate::posted::ImportGuard)), which its owner drops before the import.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;

use nix::libc;

/// How many mappings can be guarded at once.
const SLOTS: usize = 8;

static START: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static LEN: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static FAULTED: [AtomicBool; SLOTS] = [const { AtomicBool::new(false) }; SLOTS];
static INSTALL: Once = Once::new();

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    for i in 0..SLOTS {
        let start = START[i].load(Ordering::Acquire);
        let len = LEN[i].load(Ordering::Acquire);
        if len != 0 && addr >= start && addr < start + len {
            // SAFETY: the range is a mapping the guard's owner registered and still owns;
            // replacing it with anonymous memory is what the owner asked for. mmap is a
            // plain system call and safe to make from a signal handler.
            unsafe {
                libc::mmap(
                    start as *mut libc::c_void,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
            }
            FAULTED[i].store(true, Ordering::Release);
            return;
        }
    }
    // Not ours: restore the default action; the access faults again and kills us as usual.
    // SAFETY: resetting a disposition to SIG_DFL is async-signal-safe.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
}

fn install() -> Result<(), nix::errno::Errno> {
    let mut result = Ok(());
    INSTALL.call_once(|| {
        let action = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::SigAction(on_sigbus),
            nix::sys::signal::SaFlags::SA_SIGINFO | nix::sys::signal::SaFlags::SA_NODEFER,
            nix::sys::signal::SigSet::empty(),
        );
        // SAFETY: the handler only reads atomics and calls mmap/signal.
        result =
            unsafe { nix::sys::signal::sigaction(nix::sys::signal::SIGBUS, &action) }.map(|_| ());
    });
    result
}

/// A guarded mapping; unregistered on drop.
#[derive(Debug)]
pub(crate) struct SigbusGuard {
    slot: usize,
}

/// No guard slot was free, or the handler could not be installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// All slots are in use.
    #[error("more than {SLOTS} BAR mappings guarded at once in this process")]
    NoSlot,
    /// sigaction failed.
    #[error("installing the SIGBUS handler failed: {0}")]
    Install(nix::errno::Errno),
}

impl SigbusGuard {
    /// Guards `[start, start + len)`, a mapping the caller owns for the guard's
    /// lifetime and whose contents may be replaced by anonymous memory on a fault.
    pub(crate) fn new(start: *mut u8, len: usize) -> Result<SigbusGuard, GuardError> {
        install().map_err(GuardError::Install)?;
        for slot in 0..SLOTS {
            if LEN[slot]
                .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                FAULTED[slot].store(false, Ordering::Release);
                START[slot].store(start as usize, Ordering::Release);
                LEN[slot].store(len, Ordering::Release);
                return Ok(SigbusGuard { slot });
            }
        }
        Err(GuardError::NoSlot)
    }

    /// Whether an access faulted (the mapping is now anonymous memory, not the BAR).
    pub(crate) fn faulted(&self) -> bool {
        FAULTED[self.slot].load(Ordering::Acquire)
    }
}

impl Drop for SigbusGuard {
    fn drop(&mut self) {
        START[self.slot].store(0, Ordering::Release);
        LEN[self.slot].store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sigbus_in_a_guarded_range_is_caught_and_reported() {
        // A file mapping past the file's end faults with SIGBUS: the same signal a zapped
        // BAR mapping gives.
        let file = tempfile_in_tmp();
        let len = 2 * 4096;
        // SAFETY: a fresh shared mapping of our own file; unmapped below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        } as *mut u8;
        assert_ne!(ptr as *mut libc::c_void, libc::MAP_FAILED);
        let guard = SigbusGuard::new(ptr, len).unwrap();
        assert!(!guard.faulted());
        // SAFETY: the access faults (file is empty) and the guard turns it into a write to
        // anonymous memory.
        unsafe { std::ptr::write_volatile(ptr.add(4096), 7u8) };
        assert!(guard.faulted());
        // SAFETY: the guard replaced the mapping with anonymous memory of the same size.
        assert_eq!(unsafe { std::ptr::read_volatile(ptr.add(4096)) }, 7);
        drop(guard);
        // SAFETY: our mapping.
        unsafe { libc::munmap(ptr as *mut libc::c_void, len) };
    }

    fn tempfile_in_tmp() -> std::fs::File {
        let path = std::env::temp_dir().join(format!("peerdma-sigbus-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }
}
