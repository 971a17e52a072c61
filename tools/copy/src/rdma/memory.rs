//! One end's memory for an RDMA copy: host memory, or a BAR span registered
//! through its dma-buf (peer-to-peer), or — when the RDMA device cannot
//! register that dma-buf — a host-memory MR the CPU copies the BAR through,
//! which is NOT peer-to-peer and says so.

use std::sync::Arc;

use peerdma_exporter::{AccessPath, DmaRange};
use peerdma_importer::rdma::{Access, MemoryRegion, ProtectionDomain, RdmaError};

use crate::pattern;
use crate::stream_end::open_bar;
use crate::verify::{self, GuardedMap};
use crate::{page_align_check, CopyError, Endpoint, EndpointSpec, Side, SpanField};

pub use crate::LocalSpec;

/// A BAR side: the device, its CPU mapping (fill, poison, verify, staging).
pub(super) struct BarSide {
    pub(super) ep: Endpoint,
    pub(super) map: GuardedMap,
}

/// An end's memory, registered.
pub(super) struct Local {
    pub(super) mr: MemoryRegion,
    pub(super) bar: Option<BarSide>,
    /// Why the BAR goes through host memory, when it does.
    pub(super) staged: Option<String>,
    /// The memory in words.
    pub(super) what: String,
}

const CHUNK: usize = 1 << 20;

impl Local {
    /// The span of a BAR, opened, checked and mapped.
    fn open_bar(
        spec: &EndpointSpec,
        side: Side,
        size: u64,
        access: AccessPath,
    ) -> Result<BarSide, CopyError> {
        let (ep, page) = open_bar(spec, side, access)?;
        let bar_size = ep.bar.size();
        let off = ep.offset;
        page_align_check(SpanField::Size, size, page, |n| {
            n > 0 && off.checked_add(n).is_some_and(|e| e <= bar_size)
        })?;
        ep.check_span(side, size)?;
        let map = GuardedMap::new(&ep, size)?;
        Ok(BarSide { ep, map })
    }

    /// Registers the BAR span's dma-buf, or says why it cannot and stages.
    fn register_bar(
        pd: &Arc<ProtectionDomain>,
        bar: &BarSide,
        size: u64,
        access: Access,
    ) -> Result<(MemoryRegion, Option<String>), CopyError> {
        let buf = bar
            .ep
            .device
            .export_dma_buf(bar.ep.bar.index, &[DmaRange::new(bar.ep.offset, size)])?;
        match pd.register_dmabuf(buf, 0, size, 0, access) {
            Ok(mr) => Ok((mr, None)),
            Err(e @ RdmaError::DmabufRefused { .. }) => {
                let mr = pd.register_host(size as usize, access)?;
                Ok((mr, Some(e.to_string())))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Host memory registered with `access`, its bytes written by `fill` first.
    fn host(
        pd: &Arc<ProtectionDomain>,
        size: u64,
        access: Access,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<Local, CopyError> {
        let mut mr = pd.register_host(size as usize, access)?;
        fill(mr.host_bytes_mut().expect("a host MR"));
        Ok(Local {
            mr,
            bar: None,
            staged: None,
            what: "host memory".into(),
        })
    }

    /// A BAR side with its MR (staged: a host MR, and why).
    fn on_bar(mr: MemoryRegion, bar: BarSide, staged: Option<String>) -> Local {
        let what = format!(
            "{} BAR{}+{:#x}",
            bar.ep.bdf(),
            bar.ep.bar.index,
            bar.ep.offset
        );
        Local {
            mr,
            bar: Some(bar),
            staged,
            what,
        }
    }

    /// The source: filled with the pattern for `seed`.
    pub(super) fn source(
        pd: &Arc<ProtectionDomain>,
        spec: &LocalSpec,
        size: u64,
        seed: u64,
        access: AccessPath,
    ) -> Result<Local, CopyError> {
        match spec {
            LocalSpec::Host => {
                Self::host(pd, size, Access::LOCAL_READ, |b| pattern::fill(seed, 0, b))
            }
            LocalSpec::Bar(spec) => {
                let bar = Self::open_bar(spec, Side::Src, size, access)?;
                verify::fill(&bar.ep, &bar.map, seed, CHUNK)?;
                let (mut mr, staged) = Self::register_bar(pd, &bar, size, Access::LOCAL_READ)?;
                if staged.is_some() {
                    // The CPU reads the BAR into the host MR: the staging copy.
                    let host = mr.host_bytes_mut().expect("a host MR");
                    for off in (0..host.len()).step_by(CHUNK) {
                        let n = CHUNK.min(host.len() - off);
                        bar.map.read_at(&bar.ep, off, &mut host[off..off + n])?;
                    }
                }
                Ok(Self::on_bar(mr, bar, staged))
            }
        }
    }

    /// The destination: poisoned (no byte equals the pattern's) so that
    /// only this run's bytes can pass the check.
    pub(super) fn destination(
        pd: &Arc<ProtectionDomain>,
        spec: &LocalSpec,
        size: u64,
        seed: u64,
        access: AccessPath,
    ) -> Result<Local, CopyError> {
        match spec {
            LocalSpec::Host => Self::host(pd, size, Access::ALL, |b| {
                pattern::fill_complement(seed, 0, b)
            }),
            LocalSpec::Bar(spec) => {
                let bar = Self::open_bar(spec, Side::Dst, size, access)?;
                verify::poison(&bar.ep, &bar.map, seed, CHUNK)?;
                let (mut mr, staged) = Self::register_bar(pd, &bar, size, Access::ALL)?;
                if staged.is_some() {
                    pattern::fill_complement(seed, 0, mr.host_bytes_mut().expect("a host MR"));
                }
                Ok(Self::on_bar(mr, bar, staged))
            }
        }
    }

    /// Whether the NIC reads or writes this memory directly.
    pub(super) fn peer_to_peer(&self) -> bool {
        self.bar.is_some() && self.staged.is_none()
    }

    /// After the sender's last write: copies a staged BAR destination from
    /// host memory into the BAR, then checks every byte.
    pub(super) fn check_destination(&self, seed: u64) -> Result<Option<(u64, u64)>, CopyError> {
        if let Some(bar) = &self.bar {
            if self.staged.is_some() {
                let host = self.mr.host_bytes().expect("a host MR");
                for off in (0..host.len()).step_by(CHUNK) {
                    let n = CHUNK.min(host.len() - off);
                    bar.map.write_at(&bar.ep, off, &host[off..off + n])?;
                }
            }
            return match verify::check(&bar.ep, &bar.map, seed, CHUNK) {
                Ok(()) => Ok(None),
                Err(CopyError::Mismatch { first, count, .. }) => Ok(Some((first, count))),
                Err(e) => Err(e),
            };
        }
        let host = self.mr.host_bytes().expect("a host MR");
        Ok(pattern::first_mismatch(seed, 0, host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poison_differs_from_the_pattern_in_every_byte() {
        let mut p = vec![0u8; 4096];
        pattern::fill_complement(7, 100, &mut p);
        let mut q = vec![0u8; 4096];
        pattern::fill(7, 100, &mut q);
        assert!(p.iter().zip(&q).all(|(a, b)| a != b));
        assert_eq!(pattern::first_mismatch(7, 100, &p), Some((100, 4096)));
    }
}
