//! What every peerdma binary does before anything else.

use nix::sys::signal::{signal, SigHandler, Signal};

/// Restores the default action of `SIGPIPE`, so that a binary whose standard output is
/// closed early (`peerdma list | head -1`) ends quietly with the usual status (killed by
/// SIGPIPE: 141 in a shell), as `ls` or `cat` do, instead of panicking in `println!`.
/// Rust's runtime ignores SIGPIPE, which turns the write into an `EPIPE` error.
///
/// Call it first thing in `main`, before any thread starts. Every resource the process
/// holds (VFIO fds, dma-bufs, BAR mappings) is the kernel's to release on that exit; a
/// binary that owns *other processes* (the testbed's QEMU) must not use this and handles
/// `EPIPE` itself.
pub fn default_sigpipe() {
    // SAFETY: SIG_DFL installs no handler code that could run in signal context; it is
    // the disposition every non-Rust process starts with, and nothing in this process
    // has registered a SIGPIPE handler that this would replace.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}
