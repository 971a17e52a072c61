//! The cpu engine: MMIO-friendly copies between the two BARs' VFIO mappings, chunk by
//! chunk, stopping cleanly when either side is revoked.

use super::{revoked, CopyError, Endpoint, GuardedMap, Progress};

/// Copies the whole span `iterations` times.
#[allow(clippy::too_many_arguments)]
pub(super) fn copy(
    src: &Endpoint,
    src_map: &GuardedMap,
    dst: &Endpoint,
    dst_map: &GuardedMap,
    chunk: u64,
    iterations: u32,
    total: u64,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), CopyError> {
    let len = src_map.map.len();
    let chunk = chunk as usize;
    let mut done = 0u64;
    for _ in 0..iterations {
        let mut off = 0;
        while off < len {
            let n = chunk.min(len - off);
            // SAFETY: [off, off + n) lies inside both mappings (same length), which are
            // distinct BAR mappings; a revoke mid-access is caught by the SIGBUS guards.
            unsafe {
                crate::mmio::copy(
                    dst_map.map.as_ptr().add(off),
                    src_map.map.as_ptr().add(off),
                    n,
                )
            };
            if src_map.guard.faulted() {
                return Err(revoked(src, done, total));
            }
            if dst_map.guard.faulted() {
                return Err(revoked(dst, done, total));
            }
            off += n;
            done += n as u64;
            progress(Progress { done, total });
        }
    }
    Ok(())
}
