//! The DMA path: both spans exported as single-range dma-bufs, mapped by the
//! iommufd importer into the IOAS an engine (`peerdma_engine`) is
//! attached to, and the engine moves the data from one IOVA to the other. The
//! CPU never touches the data on this path.

use std::path::Path;

use peerdma_engine::{self as engine, AttachedEngine};
use peerdma_exporter::{DmaBuf, DmaRange};
use peerdma_host::sysfs::Sysfs;
use peerdma_host::Bdf;
use peerdma_importer::iommufd::{DmaBufMapping, Iommufd, Iova, MappingState, Prot, DEV_IOMMU};

use super::transport::{Side, StepError, Transport, TransportKind};
use super::Progress;
use super::{CopyError, Endpoint, Unavailable};

/// Default span for an engine as slow as edu (4 KiB per ~100 ms).
pub(super) const SLOW_ENGINE_DEFAULT_SIZE: u64 = 64 << 10;

/// Whether this kernel has the iommufd importer at all.
pub(super) fn available() -> Result<(), CopyError> {
    if Path::new(DEV_IOMMU).exists() {
        Ok(())
    } else {
        Err(CopyError::TransportUnavailable {
            transport: "dma",
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
            return Err(CopyError::TransportUnavailable {
                transport: "dma",
                why: Unavailable::EngineIsEndpoint { engine: bdf },
            });
        }
        return Ok((bdf, reach(sys, bdf, ends)));
    }
    // Ranked by how many sides share a bridge with the engine, then by BDF. An NVMe
    // controller is never picked unasked: a BAR → BAR copy through it writes its
    // namespace from LBA 0, destroying what the drive held; it must be named. Nor is a
    // NIC (igb): its copy resets it into loopback, taking it off its wire.
    let mut found: Vec<(usize, bool, Bdf)> = sys
        .devices()
        .map_err(peerdma_exporter::Error::from)?
        .into_iter()
        .filter(|b| !ends.contains(b))
        .filter(|b| {
            sys.device(*b).is_ok_and(|d| {
                d.is_vfio_bound()
                    && engine::EngineId::by_pci_id(d.vendor, d.device)
                        .is_some_and(|id| !id.is_nic())
                    && !engine::is_nvme_class(d.class)
            })
        })
        .map(|b| {
            let near = ends
                .iter()
                .filter(|e| {
                    sys.p2p_route(b, **e).is_ok_and(|r| {
                        matches!(r.upstream, peerdma_host::p2pdma::Upstream::Bridge(_))
                    })
                })
                .count();
            (usize::MAX - near, !is_nvme(sys, b), b)
        })
        .collect();
    found.sort();
    match found.first() {
        Some(&(_, _, bdf)) => Ok((bdf, reach(sys, bdf, ends))),
        None => Err(CopyError::TransportUnavailable {
            transport: "dma",
            why: Unavailable::NoEngine,
        }),
    }
}

/// Whether sysfs says `bdf` is an NVMe controller.
pub(super) fn is_nvme(sys: &Sysfs, bdf: Bdf) -> bool {
    sys.device(bdf)
        .is_ok_and(|d| engine::is_nvme_class(d.class))
}

/// The engine-table row of the device at `bdf`, by its PCI ids and class.
pub(super) fn engine_id(sys: &Sysfs, bdf: Bdf) -> Option<&'static engine::EngineId> {
    let d = sys.device(bdf).ok()?;
    engine::EngineId::of_function(d.vendor, d.device, d.class)
}

/// How `engine` reaches the sides, in words ("shares host bridge pci0000:00
/// with both").
fn reach(sys: &Sysfs, engine: Bdf, ends: &[Bdf]) -> String {
    let routes: Vec<String> = ends
        .iter()
        .map(|e| match sys.p2p_route(engine, *e) {
            Ok(r) => match r.upstream {
                peerdma_host::p2pdma::Upstream::Bridge(b) => format!("{e} under bridge {b}"),
                peerdma_host::p2pdma::Upstream::HostBridge { root, .. } => {
                    format!("{e} through host bridge {root}")
                }
                peerdma_host::p2pdma::Upstream::Roots { .. } => format!("{e} across PCI roots"),
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
    /// Added to every destination IOVA: 0, or the mapping's length for the
    /// fault test hook (`peerdma_copy::testing::Hooks::fault_dst`, feature `testing`).
    dst_shift: u64,
}

impl Dma {
    /// Opens the engine `engine` on a fresh iommufd, exports `size` bytes of
    /// each side's BAR at its offset as a single-range dma-buf, and maps them
    /// (source readable, destination writable) at guarded IOVAs under the
    /// engine's DMA mask.
    ///
    /// # Errors
    ///
    /// [`CopyError::TransportUnavailable`] without iommufd; [`CopyError::Engine`]
    /// when the engine cannot be opened or attached; [`CopyError::Exporter`]
    /// when a span cannot be exported; [`CopyError::Importer`] when the
    /// iommufd cannot be opened or a span mapped.
    pub fn open(engine: Bdf, src: &Endpoint, dst: &Endpoint, size: u64) -> Result<Dma, CopyError> {
        Dma::open_aimed(engine, src, dst, size, false)
    }

    /// [`Dma::open`], with `fault_dst` (only the test hook sets it) aiming the engine's
    /// writes just past the destination mapping, into its unmapped guard gap.
    pub(super) fn open_aimed(
        engine: Bdf,
        src: &Endpoint,
        dst: &Endpoint,
        size: u64,
        fault_dst: bool,
    ) -> Result<Dma, CopyError> {
        available()?;
        let iommufd = Iommufd::shared()?;
        let engine = AttachedEngine::open(engine, &iommufd)?;
        let map = |ep: &Endpoint, access| -> Result<DmaBufMapping<DmaBuf>, CopyError> {
            let buf = ep
                .device
                .export_dma_buf(ep.bar.index, &[DmaRange::new(ep.offset, size)])?;
            Ok(engine
                .ioas()
                .map_vfio_dmabuf(&ep.device, buf, 0, size, Iova::Guarded, access)?)
        };
        let src_map = map(src, Prot::Read)?;
        let dst_map = map(dst, Prot::Write)?;
        let dst_shift = if fault_dst { dst_map.len() } else { 0 };
        Ok(Dma {
            src_map,
            dst_map,
            engine,
            dst_shift,
        })
    }
}

impl Transport for Dma {
    fn kind(&self) -> TransportKind {
        TransportKind::Dma
    }

    fn engine(&self) -> Option<String> {
        let steps = if self.engine.engine().steps_per_copy() > 1 {
            ", two steps: Write over the namespace from LBA 0 (what the drive held there is \
             lost), then Read back"
        } else {
            ""
        };
        Some(format!(
            "{} ({}{steps})",
            self.engine.device().bdf(),
            self.engine.name()
        ))
    }

    fn ioas_mappings(&self) -> Vec<(Side, u64, u64)> {
        vec![
            (Side::Src, self.src_map.iova(), self.src_map.len()),
            (Side::Dst, self.dst_map.iova(), self.dst_map.len()),
        ]
    }

    fn max_step(&self) -> u64 {
        // The engine's own transfer size, so a revoke is seen within one transfer.
        self.engine.engine().max_transfer()
    }

    fn step(&mut self, offset: u64, len: u64, _: Progress) -> Result<(), StepError> {
        let (s, d) = (self.src_map.iova(), self.dst_map.iova() + self.dst_shift);
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    use peerdma_host::fixture::TempTree as Tree;

    /// Adds a function bound to `driver`.
    trait AddBound {
        fn add(&self, path: &str, ids: (u16, u16), driver: &str) -> &Self;
    }

    impl AddBound for Tree {
        fn add(&self, path: &str, ids: (u16, u16), driver: &str) -> &Tree {
            let dir = self.function(path, ids, 0x00ff00);
            symlink(
                format!("../../../../bus/pci/drivers/{driver}"),
                dir.join("driver"),
            )
            .unwrap();
            self
        }
    }

    const EDU: (u16, u16) = (engine::edu::EDU_VENDOR, engine::edu::EDU_DEVICE);
    const IVSHMEM: (u16, u16) = (0x1af4, 0x1110);

    fn bdf(s: &str) -> Bdf {
        s.parse().unwrap()
    }

    #[test]
    fn the_engine_under_the_sides_switch_wins_over_a_lower_bdf() {
        let t = Tree::new("find-engine");
        t.add("pci0000:00/0000:00:00.0", (0x8086, 0x29c0), "none")
            .add("pci0000:00/0000:00:03.0", EDU, "vfio-pci")
            .add("pci0000:00/0000:00:04.0", EDU, "edu")
            .add("pci0000:00/0000:00:1c.0", (0x8086, 0x1234), "pcieport")
            .add("pci0000:00/0000:00:1c.0/0000:01:00.0", IVSHMEM, "vfio-pci")
            .add("pci0000:00/0000:00:1c.0/0000:01:00.1", IVSHMEM, "vfio-pci")
            .add("pci0000:00/0000:00:1c.0/0000:01:00.2", EDU, "vfio-pci");
        let sys = Sysfs::new(&t.0);
        let ends = [bdf("01:00.0"), bdf("01:00.1")];
        let (found, why) = find_engine(&sys, None, &ends).unwrap();
        assert_eq!(found, bdf("01:00.2"), "{why}");
        assert!(why.contains("under bridge 0000:00:1c.0"), "{why}");
        // Without the near one, the vfio-bound edu on the root bus; the one bound
        // to its kernel driver is never picked.
        let (found, why) = find_engine(&sys, None, &[bdf("01:00.0"), bdf("01:00.2")]).unwrap();
        assert_eq!(found, bdf("00:03.0"), "{why}");
        assert!(why.contains("through host bridge pci0000:00"), "{why}");
        // Named engines are taken as they are, unless they are a side.
        assert_eq!(
            find_engine(&sys, Some(bdf("00:04.0")), &ends).unwrap().0,
            bdf("00:04.0")
        );
        assert!(matches!(
            find_engine(&sys, Some(bdf("01:00.1")), &ends),
            Err(CopyError::TransportUnavailable {
                why: Unavailable::EngineIsEndpoint { .. },
                ..
            })
        ));
        let bare = Tree::new("find-engine-none");
        bare.add("pci0000:00/0000:00:10.0", IVSHMEM, "vfio-pci");
        assert!(matches!(
            find_engine(&Sysfs::new(&bare.0), None, &ends),
            Err(CopyError::TransportUnavailable {
                why: Unavailable::NoEngine,
                ..
            })
        ));
    }
}
