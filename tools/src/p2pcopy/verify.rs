//! The CPU's part of every copy: the guarded BAR mappings, the seeded pattern
//! written into the source before and checked at the destination after, and
//! the error a revoke turns into.

use peerdma_exporter::{MappedRegion, RevokeState};

use super::{CopyError, Endpoint};

/// A BAR span mapped for the CPU with a SIGBUS guard over it.
pub(crate) struct GuardedMap {
    pub(crate) map: MappedRegion,
}

impl GuardedMap {
    pub(super) fn new(ep: &Endpoint, size: u64) -> Result<GuardedMap, CopyError> {
        let mut map = ep.map(size)?;
        map.guard_against_revoke()?;
        Ok(GuardedMap { map })
    }

    /// Reads `buf.len()` bytes at `off`; a revoke met on the way is
    /// [`CopyError::Revoked`] for `ep`, after `off` bytes.
    pub(super) fn read_at(
        &self,
        ep: &Endpoint,
        off: usize,
        buf: &mut [u8],
    ) -> Result<(), CopyError> {
        self.map.read_bytes(off, buf)?;
        self.check_live(ep, off)
    }

    /// Writes `data` at `off`; a revoke met on the way is [`CopyError::Revoked`].
    pub(super) fn write_at(&self, ep: &Endpoint, off: usize, data: &[u8]) -> Result<(), CopyError> {
        self.map.write_bytes(off, data)?;
        self.check_live(ep, off)
    }

    fn check_live(&self, ep: &Endpoint, off: usize) -> Result<(), CopyError> {
        if self.map.revoked_under_access() {
            return Err(revoked(ep, off as u64, self.map.len() as u64));
        }
        Ok(())
    }
}

/// The error for a side revoked after `done` of `total` bytes, with what the
/// device's state says.
pub(super) fn revoked(ep: &Endpoint, done: u64, total: u64) -> CopyError {
    revoked_device(&ep.device, "the BAR mapping faulted", done, total)
}

/// [`CopyError::Revoked`] for `device`, with the reason its registers give, or
/// `otherwise` when they say live again.
pub(super) fn revoked_device(
    device: &peerdma_exporter::Device,
    otherwise: &str,
    done: u64,
    total: u64,
) -> CopyError {
    let why = match device.revoke_state() {
        Ok(RevokeState::Revoked(r)) => r.to_string(),
        Ok(RevokeState::Live) => otherwise.to_string(),
        Err(e) => format!("state unreadable: {e}"),
    };
    CopyError::Revoked {
        bdf: device.bdf(),
        done,
        total,
        why,
    }
}

/// Writes the pattern into the whole span, chunk by chunk.
pub(super) fn fill(
    ep: &Endpoint,
    m: &GuardedMap,
    seed: u64,
    chunk: usize,
) -> Result<(), CopyError> {
    write_span(ep, m, chunk, |off, buf| {
        crate::pattern::fill(seed, off, buf)
    })
}

/// Writes the complement of the pattern into the whole span: every byte then
/// differs from what the copy must bring.
pub(super) fn poison(
    ep: &Endpoint,
    m: &GuardedMap,
    seed: u64,
    chunk: usize,
) -> Result<(), CopyError> {
    write_span(ep, m, chunk, |off, buf| {
        crate::pattern::fill_complement(seed, off, buf)
    })
}

/// Writes what `make(offset, buf)` produces into the whole span, chunk by chunk.
fn write_span(
    ep: &Endpoint,
    m: &GuardedMap,
    chunk: usize,
    make: impl Fn(u64, &mut [u8]),
) -> Result<(), CopyError> {
    let len = m.map.len();
    let mut buf = vec![0u8; chunk.min(len)];
    let mut off = 0;
    while off < len {
        let n = chunk.min(len - off);
        make(off as u64, &mut buf[..n]);
        m.write_at(ep, off, &buf[..n])?;
        off += n;
    }
    Ok(())
}

/// Checks the whole span against the pattern.
pub(super) fn check(
    ep: &Endpoint,
    m: &GuardedMap,
    seed: u64,
    chunk: usize,
) -> Result<(), CopyError> {
    let len = m.map.len();
    let mut buf = vec![0u8; chunk.min(len)];
    let mut off = 0;
    let mut first = None;
    let mut count = 0;
    while off < len {
        let n = chunk.min(len - off);
        m.read_at(ep, off, &mut buf[..n])?;
        if let Some((f, c)) = crate::pattern::first_mismatch(seed, off as u64, &buf[..n]) {
            first.get_or_insert(f);
            count += c;
        }
        off += n;
    }
    match first {
        None => Ok(()),
        Some(first) => Err(CopyError::Mismatch { first, count }),
    }
}
