//! The peerdma copy as a library: open both sides, check the request, fill the source
//! with a seeded pattern, move the bytes along one [`Transport`], verify every byte at
//! the destination, and report, with the proof of the route the bytes took. The
//! `p2pcopy` binary (crate `peerdma-tools`) is its command line; this crate has no
//! command-line dependency, never prints and never exits.
//!
//! BDF → device → BAR → span → (CPU mapping | dma-buf → importer) → engine.
//!
//! Every local copy runs under one harness (the test hooks' thread, the step loop
//! with progress and revoke checks, the engine's IOMMU faults, the revoke generations
//! that explain a mismatch); what moves the bytes is a [`Transport`]: [`CpuMmap`] or
//! [`Dma`] for [`run`] (BAR → BAR), the NVMe controller's stream for [`run_storage`].
//! The RDMA ends (module `rdma`, feature `rdma`) stream over their queue pairs and are
//! checked by the receiver. Errors name devices, BARs, spans and errnos, never
//! command-line flags.

#![deny(unsafe_code)]

pub mod buffer_state;
mod cpu_mmap;
mod dma;
mod endpoint;
mod error;
mod faults;
pub mod fix;
mod harness;
mod kernel_storage;
pub mod nic;
pub mod pattern;
mod proof;
#[cfg(feature = "rdma")]
pub mod rdma;
mod storage;
mod stream_end;
mod target;
#[cfg(feature = "testing")]
pub mod testing;
mod transport;
mod verify;
pub use verify::Verification;

use peerdma_exporter::{AccessPath, OpenOptions};

use peerdma_host::p2pdma::HostCpu;

use peerdma_host::sysfs::Sysfs;
use serde::Serialize;

pub use cpu_mmap::CpuMmap;
pub use dma::Dma;
pub use endpoint::{default_bar, Endpoint, EndpointSpec};
pub use error::{CopyError, MismatchDetail, SpanField, Unavailable};
pub use proof::{upstream_text, Hop, IoasMapping, RouteProof};
pub use storage::{
    is_storage, run_storage, Latency, StorageReport, StorageRequest, TargetReport,
    DEFAULT_STORAGE_SIZE,
};
pub use stream_end::LocalSpec;
pub use target::{BlkTarget, NvmeTarget, Target, TargetParseError};
pub use transport::{Side, StepError, Transport, TransportChoice, TransportKind};

use harness::{Harness, Span};
#[cfg(not(feature = "testing"))]
use no_hooks::{CopyWatch, Hooks};
#[cfg(feature = "testing")]
use testing::{CopyWatch, Hooks};
use verify::GuardedMap;

/// Without the feature `testing` a copy runs no test hook: these stand in for the
/// hooks' plumbing (`peerdma_copy::testing` with the feature) and do nothing.
#[cfg(not(feature = "testing"))]
mod no_hooks {
    use peerdma_exporter::Device;

    /// No hooks.
    #[derive(Default)]
    pub(super) struct Hooks<'h>(std::marker::PhantomData<&'h ()>);

    impl Hooks<'_> {
        pub(super) fn faults_dst(&self) -> bool {
            false
        }

        pub(super) fn spawn<'s, 'e: 's>(
            &'e self,
            _: &'s std::thread::Scope<'s, 'e>,
            _: &'e Device,
            _: &'e Device,
            _: u64,
            _: &'e CopyWatch,
        ) {
        }
    }

    /// Nobody watches (a field, so that both builds make it with `default()`).
    #[derive(Default)]
    pub(super) struct CopyWatch(());

    impl CopyWatch {
        pub(super) fn progress(&self, _: u64) {}
        pub(super) fn finish(&self) {}
    }
}

/// A copy request.
#[derive(Clone, Debug)]
pub struct CopyRequest {
    /// Source.
    pub src: EndpointSpec,
    /// Destination.
    pub dst: EndpointSpec,
    /// Bytes to copy; `None`: as much as both BARs hold past their offsets
    /// (at most 64 KiB on a DMA path as slow as edu's).
    pub size: Option<u64>,
    /// Bytes per step (progress and revoke checks happen between steps).
    pub chunk: u64,
    /// How many times to copy.
    pub iterations: u32,
    /// How the bytes move.
    pub transport: TransportChoice,
    /// Fill the source with a pattern first and check the destination after.
    pub verify: bool,
    /// Pattern seed.
    pub seed: u64,
    /// VFIO access path for the two devices.
    pub access: AccessPath,
    /// Use BARs that look like registers (not prefetchable, an engine's register
    /// BAR, MSI-X pages) as endpoints anyway: only for a BAR known to be plain
    /// memory despite its flags.
    pub allow_register_bars: bool,
    /// How the CPU transport maps the two BARs.
    pub cpu_mapping: CpuMapping,
}

/// How the CPU transport maps the BARs it copies between.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CpuMapping {
    /// The VFIO region mmap of each BAR (every kernel).
    #[default]
    Region,
    /// A dma-buf of each span, mapped through the dma-buf itself with MEMATTR WC
    /// (write-combining): the posted kernel series "vfio/pci: Add mmap() for DMABUFs";
    /// on a kernel without it, [`CopyError::KernelFeature`]. The check still reads
    /// through the region mmap.
    DmaBufWc,
}

impl CopyRequest {
    /// A verified copy from `src` to `dst` with the pattern of `seed`, and what the
    /// `p2pcopy` command defaults to otherwise: as many bytes as both spans hold, 1 MiB
    /// steps, once, the path picked automatically, the access path picked
    /// automatically, register BARs refused.
    pub fn new(src: EndpointSpec, dst: EndpointSpec, seed: u64) -> CopyRequest {
        CopyRequest {
            src,
            dst,
            size: None,
            chunk: 1 << 20,
            iterations: 1,
            transport: TransportChoice::Auto,
            verify: true,
            seed,
            access: AccessPath::Auto,
            allow_register_bars: false,
            cpu_mapping: CpuMapping::Region,
        }
    }
}

/// One side in the report.
#[derive(Clone, Debug, Serialize)]
pub struct SideReport {
    /// Device.
    pub bdf: String,
    /// BAR index.
    pub bar: u32,
    /// BAR size.
    pub bar_size: u64,
    /// Offset into the BAR.
    pub offset: u64,
}

/// What a finished copy reports.
#[derive(Clone, Debug, Serialize)]
pub struct CopyReport {
    /// Source.
    pub src: SideReport,
    /// Destination.
    pub dst: SideReport,
    /// What moved the bytes, as `--engine` spells it: `cpu` or `dma` (JSON `engine`;
    /// [`transport`](Self::transport) says how).
    pub engine: &'static str,
    /// The transport the bytes took (JSON key `path`: `cpu-mmap`, `dma`).
    #[serde(rename = "path")]
    pub transport: TransportKind,
    /// The importer that made the buffers visible to the engine (`iommufd`),
    /// when one did.
    pub importer: Option<&'static str>,
    /// How the CPU mapped the BARs (`region` or `dma-buf-wc`), when the CPU copied.
    pub cpu_mapping: Option<CpuMapping>,
    /// Why that path.
    pub engine_reason: String,
    /// The engine device, when a device moved the bytes.
    pub via: Option<String>,
    /// Bytes per iteration.
    pub bytes: u64,
    /// Iterations.
    pub iterations: u32,
    /// Seconds spent copying (fill and verify excluded).
    pub seconds: f64,
    /// Throughput in GB/s (10^9 bytes per second).
    pub gbps: f64,
    /// Whether every byte was checked and matched (`None`: not verified).
    pub verified: Option<bool>,
    /// The pattern's seed (`None`: not verified).
    pub seed: Option<u64>,
    /// How the bytes were checked (`None`: not verified).
    pub verification: Option<verify::Verification>,
    /// IOMMU faults the kernel logged for the engine while the copy ran (0 on a
    /// healthy DMA copy); `None` on the CPU path or where the kernel log cannot be
    /// read (`/dev/kmsg` needs `CAP_SYSLOG` under `kernel.dmesg_restrict`).
    pub iommu_faults: Option<u64>,
    /// The route the bytes took, and whether it was peer to peer.
    pub route: RouteProof,
}

/// Progress of the copy: bytes done out of the total (all iterations).
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Bytes moved so far.
    pub done: u64,
    /// Bytes to move in all.
    pub total: u64,
}

/// "the source offset 0x4000000 is at or past the end of 0000:00:10.0 BAR2 (0x4000000
/// bytes)", for [`CopyError::NoRoom`].
pub(crate) fn no_room_in_bar(side: Side, e: &Endpoint) -> String {
    format!(
        "the {side} offset {:#x} is at or past the end of {} BAR{} ({:#x} bytes)",
        e.offset,
        e.bdf(),
        e.bar.index,
        e.bar.size()
    )
}

fn page_align_check(
    field: SpanField,
    value: u64,
    page: u64,
    valid: impl Fn(u64) -> bool,
) -> Result<(), CopyError> {
    if value.is_multiple_of(page) {
        return Ok(());
    }
    let down = value / page * page;
    let suggestions = [Some(down), down.checked_add(page)]
        .into_iter()
        .flatten()
        .filter(|&v| valid(v))
        .collect();
    Err(CopyError::Unaligned {
        field,
        value,
        page,
        suggestions,
    })
}

/// Runs a copy. `progress` is called between steps.
///
/// # Errors
///
/// [`CopyError::SameDevice`], [`CopyError::Unaligned`], [`CopyError::ZeroSize`],
/// [`CopyError::BarTooSmall`], [`CopyError::BarUnusable`] and
/// [`CopyError::NoUsableBar`] for a request that cannot run;
/// [`CopyError::TransportUnavailable`] when the path asked for cannot run here;
/// [`CopyError::Revoked`] when a side is revoked mid-copy;
/// [`CopyError::Mismatch`] when verification finds other bytes; and the
/// exporter's, importer's, engine's and SIGBUS guard's errors.
pub fn run(req: &CopyRequest, progress: &mut dyn FnMut(Progress)) -> Result<CopyReport, CopyError> {
    run_inner(req, progress, &Hooks::default())
}

fn run_inner(
    req: &CopyRequest,
    progress: &mut dyn FnMut(Progress),
    hooks: &Hooks<'_>,
) -> Result<CopyReport, CopyError> {
    if req.src.bdf == req.dst.bdf {
        return Err(CopyError::SameDevice { bdf: req.src.bdf });
    }
    if req.iterations == 0 {
        return Err(CopyError::ZeroIterations);
    }
    let opts = || OpenOptions {
        access: req.access,
        ..OpenOptions::default()
    };
    let src = Endpoint::open(&req.src, opts())?;
    let dst = Endpoint::open(&req.dst, opts())?;
    let page = src.device.page_size();
    let below = |bar_size: u64| move |off: u64| off < bar_size;
    page_align_check(
        SpanField::SrcOffset,
        src.offset,
        page,
        below(src.bar.size()),
    )?;
    page_align_check(
        SpanField::DstOffset,
        dst.offset,
        page,
        below(dst.bar.size()),
    )?;
    let chosen = transport::choose(req.transport, &src, &dst)?;
    let size = match req.size {
        Some(s) => s,
        None => {
            for (side, e) in [(Side::Src, &src), (Side::Dst, &dst)] {
                if e.offset >= e.bar.size() {
                    return Err(CopyError::NoRoom {
                        at: no_room_in_bar(side, e),
                    });
                }
            }
            let fit = (src.bar.size().saturating_sub(src.offset))
                .min(dst.bar.size().saturating_sub(dst.offset));
            match chosen.kind {
                // edu moves 4 KiB per ~100 ms: the whole BAR would take hours.
                TransportKind::Dma if chosen.small_default => {
                    fit.min(dma::SLOW_ENGINE_DEFAULT_SIZE)
                }
                TransportKind::Dma => fit,
                // (A BAR → BAR copy never chooses an NVMe stream, nor RDMA WRITEs: an
                // NVMe engine between two BARs is the DMA transport; RDMA is towards a
                // peer only.)
                TransportKind::CpuMmap
                | TransportKind::NvmeRead
                | TransportKind::NvmeWrite
                | TransportKind::BlkRead
                | TransportKind::BlkWrite
                | TransportKind::RdmaWrite => fit,
            }
        }
    };
    if size == 0 {
        return Err(CopyError::ZeroSize);
    }
    let fits = |e: &Endpoint, n: u64| {
        e.offset
            .checked_add(n)
            .is_some_and(|end| end <= e.bar.size())
    };
    page_align_check(SpanField::Size, size, page, |n| {
        n > 0 && fits(&src, n) && fits(&dst, n)
    })?;
    src.check_span(Side::Src, size)?;
    dst.check_span(Side::Dst, size)?;
    if !req.allow_register_bars {
        src.check_not_registers(Side::Src, size)?;
        dst.check_not_registers(Side::Dst, size)?;
    }
    let chunk = req.chunk.clamp(page, size) / page * page;
    let src_map = GuardedMap::new(&src, size)?;
    let dst_map = GuardedMap::new(&dst, size)?;
    let iterations = req.iterations;
    // The DMA path (engine attached, both spans exported and mapped) is the last
    // check: it is set up before the first byte is written anywhere.
    // The CPU's own mappings of two dma-bufs, for CpuMapping::DmaBufWc (declared before
    // the transport that borrows them).
    let wc_maps: Option<(GuardedMap, GuardedMap)>;
    let mut path: Box<dyn Transport + '_> = match chosen.engine {
        Some(engine) => Box::new(Dma::open_aimed(
            engine,
            &src,
            &dst,
            size,
            hooks.faults_dst(),
        )?),
        None => match req.cpu_mapping {
            CpuMapping::Region => Box::new(CpuMmap::new(&src_map, &dst_map)),
            CpuMapping::DmaBufWc => {
                wc_maps = Some((
                    GuardedMap::dma_buf_wc(&src, size)?,
                    GuardedMap::dma_buf_wc(&dst, size)?,
                ));
                let (s, d) = wc_maps.as_ref().expect("just set");
                Box::new(CpuMmap::new(s, d))
            }
        },
    };
    if req.verify {
        // The destination first gets the pattern's complement, so that no byte of it
        // can pass the check unless this copy wrote it.
        verify::poison(&dst, &dst_map, req.seed, chunk as usize)?;
        verify::fill(&src, &src_map, req.seed, chunk as usize)?;
    }
    let via = path.engine();
    let kind = path.kind();
    let span = Span {
        size,
        chunk,
        iterations,
    };
    let total = span.total();
    let mut harness = Harness::start(hooks, Some((&src.device, &dst.device)), chosen.engine);
    let revoked = |side, done, total| match side {
        Side::Src => verify::revoked(&src, done, total),
        Side::Dst => verify::revoked(&dst, done, total),
    };
    let elapsed = harness.drive(path.as_mut(), span, progress, &revoked)?;
    let mapped = path.ioas_mappings();
    drop(path);
    let route = {
        let span = |side| match side {
            Side::Src => (&src, Side::Src),
            Side::Dst => (&dst, Side::Dst),
        };
        let mappings = mapped
            .into_iter()
            .map(|(side, iova, length)| {
                let (ep, side) = span(side);
                IoasMapping {
                    side,
                    bdf: ep.bdf().to_string(),
                    bar: ep.bar.index,
                    offset: ep.offset,
                    iova,
                    length,
                }
            })
            .collect();
        RouteProof::new(
            &Sysfs::system(),
            HostCpu::system(),
            kind,
            src.bdf(),
            dst.bdf(),
            chosen.engine,
            mappings,
        )
    };
    let verified = if req.verify {
        let check = verify::check(&dst, &dst_map, req.seed, chunk as usize);
        harness.checked(check, |h, mismatch| {
            // A revoke (and restore) between two steps is not met by the copy; if one
            // happened, it is the cause, not "bytes differ".
            let CopyError::Mismatch { first, count, .. } = mismatch else {
                return None;
            };
            let moved = |side, e: &Endpoint| {
                h.generation_moved(side)
                    .map(|(before, after)| CopyError::Revoked {
                        bdf: e.bdf(),
                        done: total,
                        total,
                        why: format!(
                            "revoked and restored between two steps (revoke generation \
                             {before} -> {after}); {count} byte(s) differ from offset {first:#x}"
                        ),
                    })
            };
            moved(Side::Dst, &dst).or_else(|| moved(Side::Src, &src))
        })?;
        Some(true)
    } else {
        None
    };
    // A fault by the engine fails the copy, whatever the compare said.
    let iommu_faults = harness.finish(verified.is_some())?;
    let seconds = elapsed.as_secs_f64();
    let side = |e: &Endpoint| SideReport {
        bdf: e.bdf().to_string(),
        bar: e.bar.index,
        bar_size: e.bar.size(),
        offset: e.offset,
    };
    Ok(CopyReport {
        src: side(&src),
        dst: side(&dst),
        engine: kind.engine_name(),
        transport: kind,
        importer: (kind == TransportKind::Dma).then_some("iommufd"),
        cpu_mapping: (kind == TransportKind::CpuMmap).then_some(req.cpu_mapping),
        engine_reason: chosen.reason,
        via,
        bytes: size,
        iterations,
        seconds,
        gbps: if seconds > 0.0 {
            total as f64 / seconds / 1e9
        } else {
            0.0
        },
        verified,
        seed: req.verify.then_some(req.seed),
        verification: req.verify.then(|| verify::Verification {
            expected: "pattern",
            read_by: format!(
                "the CPU through a VFIO mmap of {} BAR{} (not through the copy's {})",
                dst.bdf(),
                dst.bar.index,
                if kind == TransportKind::Dma {
                    "engine and IOAS"
                } else if req.cpu_mapping == CpuMapping::DmaBufWc {
                    "loop, which wrote through write-combining dma-buf mappings"
                } else {
                    "loop, though the same kind of mapping"
                }
            ),
            same_engine: kind == TransportKind::CpuMmap,
            layout: format!(
                "source and destination spans at BAR offsets {:#x} and {:#x}, {size:#x} bytes, \
                 inside each BAR (region info)",
                src.offset, dst.offset
            ),
        }),
        iommu_faults,
        route,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unaligned_suggestions_are_valid_values_and_never_wrap() {
        let err = |r: Result<(), CopyError>| match r.unwrap_err() {
            CopyError::Unaligned { suggestions, .. } => suggestions,
            e => panic!("{e}"),
        };
        let bar = 1u64 << 26;
        let size_ok = |n: u64| n > 0 && n <= bar;
        assert_eq!(
            err(page_align_check(SpanField::Size, u64::MAX, 4096, size_ok)),
            Vec::<u64>::new()
        );
        assert_eq!(
            err(page_align_check(SpanField::Size, 0x123, 4096, size_ok)),
            vec![0x1000]
        );
        assert_eq!(
            err(page_align_check(SpanField::Size, 0x1123, 4096, size_ok)),
            vec![0x1000, 0x2000]
        );
        let off_ok = |o: u64| o < bar;
        assert_eq!(
            err(page_align_check(
                SpanField::SrcOffset,
                bar - 1,
                4096,
                off_ok
            )),
            vec![bar - 4096]
        );
        let msg = CopyError::Unaligned {
            field: SpanField::Size,
            value: u64::MAX,
            page: 4096,
            suggestions: vec![],
        }
        .to_string();
        assert!(
            msg.contains("fits both BARs") && !msg.contains("0x0 "),
            "{msg}"
        );
        assert!(page_align_check(SpanField::Size, 0x2000, 4096, size_ok).is_ok());
    }

    #[test]
    fn errors_name_no_command_line_flags() {
        let errors = [
            CopyError::Unaligned {
                field: SpanField::SrcOffset,
                value: 0x123,
                page: 4096,
                suggestions: vec![0, 4096],
            },
            CopyError::ZeroSize,
            CopyError::NoRoom {
                at: "the source offset 0x4000000 is at or past the end of 0000:00:10.0 BAR2 \
                     (0x4000000 bytes)"
                    .into(),
            },
            CopyError::ZeroIterations,
            CopyError::TransportUnavailable {
                transport: "dma",
                why: Unavailable::NoIommufd,
            },
            CopyError::TransportUnavailable {
                transport: "dma",
                why: Unavailable::EngineIsEndpoint {
                    engine: "00:11.0".parse().unwrap(),
                },
            },
            CopyError::TransportUnavailable {
                transport: "dma",
                why: Unavailable::NoEngine,
            },
            CopyError::TransportUnavailable {
                transport: "rdma",
                why: Unavailable::RdmaNeedsPeer,
            },
            CopyError::TransportUnavailable {
                transport: "rdma",
                why: Unavailable::RdmaNotBuilt,
            },
            CopyError::TransportUnavailable {
                transport: "rdma",
                why: Unavailable::RemoteNeedsRdma,
            },
            CopyError::BadPeer { peer: "x".into() },
            CopyError::PeerMismatch {
                peer: "x".into(),
                first: 0,
                count: 1,
            },
            CopyError::PeerFailed { peer: "x".into() },
            CopyError::TransportUnavailable {
                transport: "nvme",
                why: Unavailable::NvmeNeedsIommufd,
            },
            CopyError::NotNvme {
                bdf: "00:10.0".parse().unwrap(),
                class: 0x050000,
                vendor: 0x1af4,
                device: 0x1110,
            },
            CopyError::StorageSides {
                src: "host".into(),
                dst: "00:11.0".into(),
            },
            CopyError::BarTooSmall {
                bdf: "00:10.0".parse().unwrap(),
                side: Side::Dst,
                bar: 2,
                bar_size: 1 << 20,
                offset: 0,
                size: 2 << 20,
            },
        ];
        for e in errors {
            let msg = e.to_string();
            assert!(!msg.contains("--"), "{msg}");
            assert!(msg.contains("fix:"), "{msg}");
        }
    }
}
