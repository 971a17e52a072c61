//! The CPU path: MMIO-friendly copies between the two BARs' VFIO mappings,
//! each guarded against SIGBUS, so a revoke stops the copy cleanly.

use super::transport::{Side, StepError, Transport, TransportKind};
use super::verify::GuardedMap;
use super::Progress;

/// The CPU copying between the two BAR mappings.
pub struct CpuMmap<'a> {
    src: &'a GuardedMap,
    dst: &'a GuardedMap,
}

impl<'a> CpuMmap<'a> {
    /// Copies between two guarded mappings of the same length.
    pub(crate) fn new(src: &'a GuardedMap, dst: &'a GuardedMap) -> Self {
        debug_assert_eq!(src.map.len(), dst.map.len());
        CpuMmap { src, dst }
    }
}

impl Transport for CpuMmap<'_> {
    fn kind(&self) -> TransportKind {
        TransportKind::CpuMmap
    }

    fn engine(&self) -> Option<String> {
        None
    }

    fn max_step(&self) -> u64 {
        u64::MAX
    }

    fn step(&mut self, offset: u64, len: u64, _: Progress) -> Result<(), StepError> {
        let (off, n) = (offset as usize, len as usize);
        assert!(
            off.checked_add(n)
                .is_some_and(|end| end <= self.src.map.len() && end <= self.dst.map.len()),
            "step {off:#x}+{n:#x} outside the mappings"
        );
        // A revoke mid-access is caught by the SIGBUS guards.
        self.src
            .map
            .copy_to(off, &self.dst.map, off, n)
            .map_err(|e| StepError::Failed(e.into()))?;
        if self.src.map.revoked_under_access() {
            return Err(StepError::Revoked(Side::Src));
        }
        if self.dst.map.revoked_under_access() {
            return Err(StepError::Revoked(Side::Dst));
        }
        Ok(())
    }
}
