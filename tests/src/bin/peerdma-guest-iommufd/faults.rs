//! DMAR fault lines the kernel logs to `/dev/kmsg`, read after each DMA that should fault.

use std::time::{Duration, Instant};

/// How long a DMA that should fault may take to show in the kernel log.
pub(crate) const FAULT_DEADLINE: Duration = Duration::from_secs(2);

/// DMAR fault lines the kernel logged since the last call (read from /dev/kmsg).
pub(crate) struct Faults {
    pub(crate) kmsg: Option<std::fs::File>,
}

impl Faults {
    pub(crate) fn new() -> Self {
        use std::os::unix::fs::OpenOptionsExt;
        let kmsg = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open("/dev/kmsg")
            .ok();
        let mut f = Faults { kmsg };
        f.take();
        f
    }

    /// The fault lines logged since the last call.
    pub(crate) fn take(&mut self) -> Vec<String> {
        use std::io::Read;
        let mut out = Vec::new();
        let Some(k) = self.kmsg.as_mut() else {
            return out;
        };
        let mut rec = vec![0u8; 8192];
        loop {
            match k.read(&mut rec) {
                Ok(0) => break,
                Ok(n) => {
                    let line = String::from_utf8_lossy(&rec[..n]);
                    let text = line.split_once(';').map_or(&*line, |(_, t)| t).trim();
                    if text.contains("DMAR") && text.contains("fault") {
                        out.push(text.to_string());
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc_epipe()) => continue,
                Err(_) => break,
            }
        }
        out
    }

    /// The fault lines of a DMA that should have faulted: read until the kernel has
    /// logged one (a fault record "… fault addr …", or the status line of one whose
    /// record the rate limit swallowed), or until [`FAULT_DEADLINE`] passes.
    pub(crate) fn expect_fault(&mut self) -> Vec<String> {
        let deadline = Instant::now() + FAULT_DEADLINE;
        let mut out = self.take();
        while !out.iter().any(|l| l.contains("fault addr")) && Instant::now() < deadline {
            std::thread::yield_now();
            out.extend(self.take());
        }
        out
    }

    /// The fault lines of a DMA that should not have faulted. The fault interrupt of a
    /// DMA is handled before the engine reports the DMA done (one vCPU: the interrupt
    /// is taken before the status register read that ends the wait), so what is logged
    /// by then is all there is.
    pub(crate) fn expect_none(&mut self) -> Vec<String> {
        self.take()
    }
}

/// EPIPE: /dev/kmsg records were overwritten since the last read.
pub(crate) fn libc_epipe() -> i32 {
    rustix::io::Errno::PIPE.raw_os_error()
}
