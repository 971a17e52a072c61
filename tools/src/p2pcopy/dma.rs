//! The DMA path: both spans exported as single-range dma-bufs, mapped by the
//! iommufd importer into the IOAS an engine (`peerdma_importer::engine`) is
//! attached to, and the engine moves the data from one IOVA to the other. The
//! CPU never touches the data on this path.

use std::path::Path;

use peerdma_exporter::{Bdf, DmaBuf, DmaRange, Sysfs};
use peerdma_importer::engine::{self, AttachedEngine};
use peerdma_importer::iommufd::{Access, DmaBufMapping, Iommufd, Iova, MappingState, DEV_IOMMU};

use super::path::{CopyPath, PathKind, Side, StepError};
use super::{CopyError, Endpoint, Unavailable};

/// Default span for an engine as slow as edu (4 KiB per ~100 ms).
pub(super) const SLOW_ENGINE_DEFAULT_SIZE: u64 = 64 << 10;

/// Whether this kernel has the iommufd importer at all.
pub(super) fn available() -> Result<(), CopyError> {
    if Path::new(DEV_IOMMU).exists() {
        Ok(())
    } else {
        Err(CopyError::PathUnavailable {
            path: "dma",
            why: Unavailable::NoIommufd,
        })
    }
}

/// The engine device: `requested`, or the supported engine bound to vfio-pci
/// that reaches the most of `ends` under a common bridge (then the lowest BDF).
/// Returns it and how it reaches the two sides.
pub(super) fn find_engine(
    sys: &Sysfs,
    requested: Option<Bdf>,
    ends: &[Bdf],
) -> Result<(Bdf, String), CopyError> {
    if let Some(bdf) = requested {
        if ends.contains(&bdf) {
            return Err(CopyError::PathUnavailable {
                path: "dma",
                why: Unavailable::EngineIsEndpoint { engine: bdf },
            });
        }
        return Ok((bdf, reach(sys, bdf, ends)));
    }
    let mut found: Vec<(usize, Bdf)> = sys
        .devices()?
        .into_iter()
        .filter(|b| !ends.contains(b))
        .filter(|b| {
            sys.device(*b).is_ok_and(|d| {
                d.is_vfio_bound() && engine::driver_for(d.vendor, d.device).is_some()
            })
        })
        .map(|b| {
            let near = ends
                .iter()
                .filter(|e| {
                    sys.p2p_route(b, **e)
                        .is_ok_and(|r| matches!(r.upstream, peerdma_exporter::Upstream::Bridge(_)))
                })
                .count();
            (usize::MAX - near, b)
        })
        .collect();
    found.sort();
    match found.first() {
        Some(&(_, bdf)) => Ok((bdf, reach(sys, bdf, ends))),
        None => Err(CopyError::PathUnavailable {
            path: "dma",
            why: Unavailable::NoEngine,
        }),
    }
}

/// How `engine` reaches the sides, in words ("shares host bridge pci0000:00
/// with both").
fn reach(sys: &Sysfs, engine: Bdf, ends: &[Bdf]) -> String {
    let routes: Vec<String> = ends
        .iter()
        .map(|e| match sys.p2p_route(engine, *e) {
            Ok(r) => match r.upstream {
                peerdma_exporter::Upstream::Bridge(b) => format!("{e} under bridge {b}"),
                peerdma_exporter::Upstream::HostBridge { root, .. } => {
                    format!("{e} through host bridge {root}")
                }
                peerdma_exporter::Upstream::Roots { .. } => format!("{e} across PCI roots"),
            },
            Err(_) => format!("{e} by an unknown route"),
        })
        .collect();
    format!("reaches {}", routes.join(", "))
}

/// An engine attached to its IOAS with both spans mapped there.
pub struct Dma {
    // Field order is drop order: unmap both spans, then let the engine go.
    src_map: DmaBufMapping<DmaBuf>,
    dst_map: DmaBufMapping<DmaBuf>,
    engine: AttachedEngine,
}

impl Dma {
    /// Opens the engine `engine` on a fresh iommufd, exports `size` bytes of
    /// each side's BAR at its offset as a single-range dma-buf, and maps them
    /// (source readable, destination writable) at guarded IOVAs under the
    /// engine's DMA mask.
    ///
    /// # Errors
    ///
    /// [`CopyError::PathUnavailable`] without iommufd; [`CopyError::Engine`]
    /// when the engine cannot be opened or attached; [`CopyError::Exporter`]
    /// when a span cannot be exported; [`CopyError::Importer`] when the
    /// iommufd cannot be opened or a span mapped.
    pub fn open(engine: Bdf, src: &Endpoint, dst: &Endpoint, size: u64) -> Result<Dma, CopyError> {
        available()?;
        let iommufd = Iommufd::open()?;
        let engine = AttachedEngine::open(engine, &iommufd)?;
        let map = |ep: &Endpoint, access| -> Result<DmaBufMapping<DmaBuf>, CopyError> {
            let buf = ep
                .device
                .export_dma_buf(ep.bar.index, &[DmaRange::new(ep.offset, size)])?;
            Ok(engine
                .ioas()
                .map_vfio_dmabuf(&ep.device, buf, 0, size, Iova::Guarded, access)?)
        };
        let src_map = map(src, Access::Read)?;
        let dst_map = map(dst, Access::Write)?;
        Ok(Dma {
            src_map,
            dst_map,
            engine,
        })
    }
}

impl CopyPath for Dma {
    fn kind(&self) -> PathKind {
        PathKind::Dma
    }

    fn engine(&self) -> Option<String> {
        Some(format!(
            "{} ({})",
            self.engine.device().bdf(),
            self.engine.name()
        ))
    }

    fn max_step(&self) -> u64 {
        // The engine's own transfer size, so a revoke is seen within one transfer.
        self.engine.engine().max_transfer()
    }

    fn step(&mut self, offset: u64, len: u64) -> Result<(), StepError> {
        let (s, d) = (self.src_map.iova(), self.dst_map.iova());
        self.engine
            .engine_mut()
            .copy(s + offset, d + offset, len)
            .map_err(|e| StepError::Failed(e.into()))?;
        // A revoke tears the IOMMU mapping down: the engine's DMA faulted and
        // nothing landed. Stop rather than report bytes that never moved.
        for (map, side) in [
            (&mut self.src_map, Side::Src),
            (&mut self.dst_map, Side::Dst),
        ] {
            if !matches!(map.state(), MappingState::Live) {
                return Err(StepError::Revoked(side));
            }
        }
        Ok(())
    }
}
