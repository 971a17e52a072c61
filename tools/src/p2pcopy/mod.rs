//! p2pcopy as a library: open both sides, check the request, fill the source
//! with a seeded pattern, move the bytes along one [`CopyPath`], verify every
//! byte at the destination, and report.
//!
//! BDF → device → BAR → span → (CPU mapping | dma-buf → importer) → engine.
//!
//! The orchestration ([`run`]: open, map, fill, step with progress and revoke
//! checks, time, verify) is written once; what differs between the CPU and a
//! DMA engine is a [`CopyPath`]: [`CpuMmap`] or [`Dma`]. Errors name devices,
//! BARs, spans and errnos, never command-line flags.

mod cpu_mmap;
mod dma;
mod endpoint;
mod error;
mod path;
mod verify;

use std::time::{Duration, Instant};

use peerdma_exporter::{AccessPath, OpenOptions};
use serde::Serialize;

pub use cpu_mmap::CpuMmap;
pub use dma::Dma;
pub use endpoint::{default_bar, Endpoint, EndpointSpec};
pub use error::{CopyError, SpanField, Unavailable};
pub use path::{CopyPath, PathChoice, PathKind, Side, StepError};

use verify::GuardedMap;

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
    pub path: PathChoice,
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
    /// The path in the spelling of older versions: `cpu` or `iommufd` (kept
    /// for scripts; [`path`](Self::path) is the current name).
    pub engine: &'static str,
    /// The path the bytes took.
    pub path: PathKind,
    /// The importer that made the buffers visible to the engine (`iommufd`),
    /// when one did.
    pub importer: Option<&'static str>,
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
}

/// Progress of the copy: bytes done out of the total (all iterations).
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Bytes moved so far.
    pub done: u64,
    /// Bytes to move in all.
    pub total: u64,
}

fn page_align_check(field: SpanField, value: u64, page: u64) -> Result<(), CopyError> {
    if value.is_multiple_of(page) {
        Ok(())
    } else {
        let down = value / page * page;
        Err(CopyError::Unaligned {
            field,
            value,
            page,
            down,
            up: down + page,
        })
    }
}

/// Moves the span `iterations` times along `path`, in steps of at most
/// `chunk` bytes, reporting progress after each step.
fn drive(
    path: &mut dyn CopyPath,
    ends: [&Endpoint; 2],
    size: u64,
    chunk: u64,
    iterations: u32,
    progress: &mut dyn FnMut(Progress),
) -> Result<(), CopyError> {
    let total = size * u64::from(iterations);
    let step = chunk.min(path.max_step()).max(1);
    let mut done = 0;
    for _ in 0..iterations {
        let mut off = 0;
        while off < size {
            let n = step.min(size - off);
            path.step(off, n).map_err(|e| match e {
                StepError::Revoked(Side::Src) => verify::revoked(ends[0], done, total),
                StepError::Revoked(Side::Dst) => verify::revoked(ends[1], done, total),
                StepError::Failed(e) => e,
            })?;
            off += n;
            done += n;
            progress(Progress { done, total });
        }
    }
    Ok(())
}

/// Runs a copy. `progress` is called between steps.
///
/// # Errors
///
/// [`CopyError::SameDevice`], [`CopyError::Unaligned`], [`CopyError::ZeroSize`],
/// [`CopyError::BarTooSmall`], [`CopyError::BarUnusable`] and
/// [`CopyError::NoUsableBar`] for a request that cannot run;
/// [`CopyError::PathUnavailable`] when the path asked for cannot run here;
/// [`CopyError::Revoked`] when a side is revoked mid-copy;
/// [`CopyError::Mismatch`] when verification finds other bytes; and the
/// exporter's, importer's, engine's and SIGBUS guard's errors.
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
    page_align_check(SpanField::SrcOffset, src.offset, page)?;
    page_align_check(SpanField::DstOffset, dst.offset, page)?;
    let chosen = path::choose(req.path, &src, &dst)?;
    let size = match req.size {
        Some(s) => s,
        None => {
            let fit = (src.bar.size().saturating_sub(src.offset))
                .min(dst.bar.size().saturating_sub(dst.offset));
            match chosen.kind {
                // edu moves 4 KiB per ~100 ms: the whole BAR would take hours.
                PathKind::Dma => fit.min(dma::SLOW_ENGINE_DEFAULT_SIZE),
                PathKind::CpuMmap => fit,
            }
        }
    };
    if size == 0 {
        return Err(CopyError::ZeroSize);
    }
    page_align_check(SpanField::Size, size, page)?;
    src.check_span(Side::Src, size)?;
    dst.check_span(Side::Dst, size)?;
    let chunk = req.chunk.clamp(page, size) / page * page;
    let src_map = GuardedMap::new(&src, size)?;
    let dst_map = GuardedMap::new(&dst, size)?;
    if req.verify {
        verify::fill(&src, &src_map, req.seed, chunk as usize)?;
    }
    let iterations = req.iterations.max(1);
    let total = size * u64::from(iterations);
    let mut path: Box<dyn CopyPath + '_> = match chosen.engine {
        Some(engine) => Box::new(Dma::open(engine, &src, &dst, size)?),
        None => Box::new(CpuMmap::new(&src_map, &dst_map)),
    };
    let via = path.engine();
    let kind = path.kind();
    let start = Instant::now();
    let elapsed = std::thread::scope(|s| -> Result<Duration, CopyError> {
        if let Some(after) = req.revoke_src_after {
            let device = &src.device;
            s.spawn(move || {
                std::thread::sleep(after);
                let _ = device.set_memory_decode(false);
            });
        }
        drive(
            path.as_mut(),
            [&src, &dst],
            size,
            chunk,
            iterations,
            progress,
        )?;
        Ok(start.elapsed())
    })?;
    drop(path);
    let verified = if req.verify {
        verify::check(&dst, &dst_map, req.seed, chunk as usize)?;
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
        engine: kind.old_name(),
        path: kind,
        importer: (kind == PathKind::Dma).then_some("iommufd"),
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
    })
}
