//! p2pcopy's engine-independent part: open both sides, check the request, fill the
//! source with a seeded pattern, run the engine, verify every byte at the destination.
//!
//! BDF → device → BAR → span → (CPU mapping | dma-buf → importer) → engine.

mod cpu;
mod endpoint;
mod error;
mod iommufd;

use std::time::{Duration, Instant};

use peerdma_exporter::{AccessPath, Bdf, MappedRegion, OpenOptions};
use serde::Serialize;

pub use endpoint::{default_bar, Endpoint, EndpointSpec};
pub use error::CopyError;

use crate::sigbus::SigbusGuard;

/// Which engine moves the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineChoice {
    /// The CPU copies between the two BARs' VFIO mmaps.
    Cpu,
    /// A DMA-capable device attached to an iommufd IOAS moves it between dma-buf mappings.
    Iommufd,
    /// An RDMA NIC (needs dma-buf MRs, which soft-RoCE lacks).
    Rdma,
    /// The best engine available.
    Auto,
}

/// A copy request.
#[derive(Clone, Debug)]
pub struct CopyRequest {
    /// Source.
    pub src: EndpointSpec,
    /// Destination.
    pub dst: EndpointSpec,
    /// Bytes to copy; `None`: as much as both BARs hold past their offsets.
    pub size: Option<u64>,
    /// Bytes per engine step (progress and revoke checks happen between steps).
    pub chunk: u64,
    /// How many times to copy.
    pub iterations: u32,
    /// Engine.
    pub engine: EngineChoice,
    /// The engine device for the iommufd engine.
    pub via: Option<Bdf>,
    /// Fill the source with a pattern first and check the destination after.
    pub verify: bool,
    /// Pattern seed.
    pub seed: u64,
    /// VFIO access path for the two devices.
    pub access: AccessPath,
    /// Test hook: turn the source's memory decode off this long after the copy starts.
    pub revoke_src_after: Option<Duration>,
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
    /// Engine used.
    pub engine: EngineChoice,
    /// Why that engine.
    pub engine_reason: String,
    /// The engine device, when one was used.
    pub via: Option<String>,
    /// Bytes per iteration.
    pub bytes: u64,
    /// Iterations.
    pub iterations: u32,
    /// Seconds spent copying (fill and verify excluded).
    pub seconds: f64,
    /// Throughput in GB/s (10^9 bytes per second).
    pub gbps: f64,
    /// Whether every byte was checked and matched (`None`: --no-verify).
    pub verified: Option<bool>,
}

/// Progress of the copy: bytes done out of the total (all iterations).
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Bytes moved so far.
    pub done: u64,
    /// Bytes to move in all.
    pub total: u64,
}

fn page_align_check(what: &'static str, value: u64, page: u64) -> Result<(), CopyError> {
    if value.is_multiple_of(page) {
        Ok(())
    } else {
        let down = value / page * page;
        Err(CopyError::Unaligned {
            what,
            value,
            page,
            down,
            up: down + page,
        })
    }
}

/// A BAR span mapped for the CPU with a SIGBUS guard over it.
pub(crate) struct GuardedMap {
    pub(crate) map: MappedRegion,
    pub(crate) guard: SigbusGuard,
}

impl GuardedMap {
    fn new(ep: &Endpoint, size: u64) -> Result<GuardedMap, CopyError> {
        let map = ep.map(size)?;
        let guard = SigbusGuard::new(map.as_ptr(), map.len())?;
        Ok(GuardedMap { map, guard })
    }
}

fn revoked(ep: &Endpoint, done: u64, total: u64) -> CopyError {
    let why = match ep.device.revoke_state() {
        Ok(peerdma_exporter::RevokeState::Revoked(r)) => r.to_string(),
        Ok(peerdma_exporter::RevokeState::Live) => "the BAR mapping faulted".to_string(),
        Err(e) => format!("state unreadable: {e}"),
    };
    CopyError::Revoked {
        bdf: ep.bdf(),
        done,
        total,
        why,
    }
}

/// Writes the pattern into the whole span, chunk by chunk.
fn fill(ep: &Endpoint, m: &GuardedMap, seed: u64, chunk: usize) -> Result<(), CopyError> {
    let len = m.map.len();
    let mut buf = vec![0u8; chunk.min(len)];
    let mut off = 0;
    while off < len {
        let n = chunk.min(len - off);
        crate::pattern::fill(seed, off as u64, &mut buf[..n]);
        // SAFETY: the span [off, off + n) is inside the mapping; buf holds n bytes.
        unsafe { crate::mmio::copy(m.map.as_ptr().add(off), buf.as_ptr(), n) };
        if m.guard.faulted() {
            return Err(revoked(ep, off as u64, len as u64));
        }
        off += n;
    }
    Ok(())
}

/// Checks the whole span against the pattern.
fn check(ep: &Endpoint, m: &GuardedMap, seed: u64, chunk: usize) -> Result<(), CopyError> {
    let len = m.map.len();
    let mut buf = vec![0u8; chunk.min(len)];
    let mut off = 0;
    let mut first = None;
    let mut count = 0;
    while off < len {
        let n = chunk.min(len - off);
        // SAFETY: the span [off, off + n) is inside the mapping; buf holds n bytes.
        unsafe { crate::mmio::copy(buf.as_mut_ptr(), m.map.as_ptr().add(off), n) };
        if m.guard.faulted() {
            return Err(revoked(ep, off as u64, len as u64));
        }
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

/// Picks the engine (and, for iommufd, its device) and says why.
fn choose_engine(
    req: &CopyRequest,
    src: &Endpoint,
    dst: &Endpoint,
) -> Result<(EngineChoice, Option<Bdf>, String), CopyError> {
    match req.engine {
        EngineChoice::Cpu => Ok((
            EngineChoice::Cpu,
            None,
            "requested with --engine cpu".into(),
        )),
        EngineChoice::Iommufd => {
            iommufd::available()?;
            let bdf = iommufd::find_engine(req.via, &[src.bdf(), dst.bdf()])?;
            Ok((
                EngineChoice::Iommufd,
                Some(bdf),
                format!("requested with --engine iommufd; engine device {bdf}"),
            ))
        }
        EngineChoice::Rdma => Err(CopyError::EngineUnavailable {
            engine: "rdma",
            why: "no RDMA engine yet: it needs a NIC whose driver registers dma-buf MRs \
                  (mlx5, efa, bnxt_re, irdma, mana, ionic); soft-RoCE (rxe, siw) has none; \
                  use --engine cpu or iommufd"
                .into(),
        }),
        EngineChoice::Auto => {
            // The only DMA engine supported so far (QEMU's edu) moves ~40 KB/s: the CPU
            // is faster whenever it can map both BARs, so auto prefers it and says so.
            let dma = iommufd::available()
                .and_then(|()| iommufd::find_engine(req.via, &[src.bdf(), dst.bdf()]));
            let why = match dma {
                Ok(bdf) => format!(
                    "auto: cpu, because the only DMA engine found ({bdf}, QEMU edu) moves 4 KiB \
                     per ~100 ms; --engine iommufd uses it anyway"
                ),
                Err(e) => format!("auto: cpu, the iommufd engine is unavailable ({e})"),
            };
            Ok((EngineChoice::Cpu, None, why))
        }
    }
}

/// Runs a copy. `progress` is called between steps.
pub fn run(req: &CopyRequest, progress: &mut dyn FnMut(Progress)) -> Result<CopyReport, CopyError> {
    if req.src.bdf == req.dst.bdf {
        return Err(CopyError::SameDevice { bdf: req.src.bdf });
    }
    let opts = || OpenOptions {
        access: req.access,
        ..OpenOptions::default()
    };
    let src = Endpoint::open(&req.src, opts())?;
    let dst = Endpoint::open(&req.dst, opts())?;
    let page = src.device.page_size();
    page_align_check("--src-offset", src.offset, page)?;
    page_align_check("--dst-offset", dst.offset, page)?;
    let (engine, engine_dev, reason) = choose_engine(req, &src, &dst)?;
    let size = match req.size {
        Some(s) => s,
        None => {
            let fit = (src.bar.size().saturating_sub(src.offset))
                .min(dst.bar.size().saturating_sub(dst.offset));
            if engine == EngineChoice::Iommufd {
                // edu moves 4 KiB per ~100 ms: the whole BAR would take hours.
                fit.min(iommufd::EDU_DEFAULT_SIZE)
            } else {
                fit
            }
        }
    };
    if size == 0 {
        return Err(CopyError::ZeroSize);
    }
    page_align_check("--size", size, page)?;
    src.check_span("src", size)?;
    dst.check_span("dst", size)?;
    let chunk = req.chunk.clamp(page, size) / page * page;
    let src_map = GuardedMap::new(&src, size)?;
    let dst_map = GuardedMap::new(&dst, size)?;
    if req.verify {
        fill(&src, &src_map, req.seed, chunk as usize)?;
    }
    let total = size * u64::from(req.iterations.max(1));
    let iterations = req.iterations.max(1);
    let mut via = None;
    let mut dma = match engine_dev {
        Some(bdf) => {
            let e = iommufd::IommufdCopy::new(bdf, &src, &dst, size)?;
            via = Some(e.via());
            Some(e)
        }
        None => None,
    };
    let start = Instant::now();
    let elapsed = std::thread::scope(|s| -> Result<Duration, CopyError> {
        if let Some(after) = req.revoke_src_after {
            let device = &src.device;
            s.spawn(move || {
                std::thread::sleep(after);
                let _ = device.set_memory_decode(false);
            });
        }
        match dma.as_mut() {
            Some(e) => e.copy(chunk, iterations, total, progress)?,
            None => cpu::copy(
                &src, &src_map, &dst, &dst_map, chunk, iterations, total, progress,
            )?,
        }
        Ok(start.elapsed())
    })?;
    drop(dma);
    let verified = if req.verify {
        check(&dst, &dst_map, req.seed, chunk as usize)?;
        Some(true)
    } else {
        None
    };
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
        engine,
        engine_reason: reason,
        via,
        bytes: size,
        iterations: req.iterations.max(1),
        seconds,
        gbps: if seconds > 0.0 {
            total as f64 / seconds / 1e9
        } else {
            0.0
        },
        verified,
    })
}
