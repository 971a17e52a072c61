//! Storage copies through the kernel's own nvme driver (a `blk:` side): a raw NVMe
//! namespace left on nvme-pci, with the BAR's dma-buf registered with io_uring for it
//! (`peerdma_engine::kernel_nvme`, kernel series "Add dmabuf read/write via io_uring",
//! not upstream yet). The report has the shape of the user-space NVMe engine's
//! ([`StorageReport`]).
//!
//! Verification cannot pass on stale bytes, and does not use the path it checks:
//! - namespace → BAR: the BAR span is poisoned by the CPU first, then compared with the
//!   namespace read by `pread(2)` O_DIRECT into host memory (the kernel's ordinary
//!   block path, not the dma-buf one);
//! - BAR → namespace: the BAR holds the seeded pattern, the drive range is poisoned
//!   first by `pwrite(2)` O_DIRECT, then read back by `pread(2)` O_DIRECT and compared
//!   with the pattern.

use std::fs::OpenOptions as FileOptions;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::time::Duration;

use peerdma_engine::kernel_nvme::{KernelNvme, KernelNvmeError, KernelNvmeOptions};
use peerdma_engine::EngineError;
use peerdma_exporter::{DmaRange, OpenOptions};

use super::harness::{self, Harness};
use super::storage::{Latency, StorageReport, StorageRequest, TargetReport};
use super::target::{BlkTarget, Target};
use super::transport::{Side, StepError, Transport, TransportKind};
use super::verify::{self, GuardedMap, Verification};
use super::{CopyError, Endpoint, Hooks, Hop, Progress, RouteProof};
use peerdma_host::p2pdma::HostCpu;
use peerdma_host::sysfs::Sysfs;
use peerdma_host::Bdf;

/// The kernel NVMe engine's Reads (namespace → dma-buf) or Writes (dma-buf → namespace)
/// as the copy's transport; it keeps the I/O statistics for the report.
struct BlkStream<'a> {
    engine: &'a mut KernelNvme,
    read: bool,
    /// The namespace byte of the span's start.
    dev_off: u64,
    /// The BAR's side of the copy.
    side: Side,
    max_step: u64,
    seconds: f64,
    ios: u64,
    lat: Vec<Duration>,
}

impl Transport for BlkStream<'_> {
    fn kind(&self) -> TransportKind {
        if self.read {
            TransportKind::BlkRead
        } else {
            TransportKind::BlkWrite
        }
    }

    fn engine(&self) -> Option<String> {
        Some(self.engine.name().to_string())
    }

    fn max_step(&self) -> u64 {
        self.max_step
    }

    fn step(&mut self, offset: u64, len: u64, _: Progress) -> Result<(), StepError> {
        let r = if self.read {
            self.engine.read(self.dev_off + offset, offset, len)
        } else {
            self.engine.write(self.dev_off + offset, offset, len)
        };
        let r = match r {
            Ok(r) => r,
            Err(KernelNvmeError::Revoked { .. }) => return Err(StepError::Revoked(self.side)),
            Err(e) => return Err(StepError::Failed(engine_err(e))),
        };
        self.seconds += r.elapsed.as_secs_f64();
        self.ios += u64::from(r.ios);
        self.lat.extend(r.latencies);
        Ok(())
    }
}

/// Default queue depth when the request leaves it to the library (`queue_depth` 0).
const DEFAULT_QD: u32 = 32;

fn engine_err(e: peerdma_engine::kernel_nvme::KernelNvmeError) -> CopyError {
    CopyError::Engine(EngineError::from(e))
}

fn io_err(path: &std::path::Path, what: &'static str, source: std::io::Error) -> CopyError {
    engine_err(peerdma_engine::kernel_nvme::KernelNvmeError::PlainIo {
        path: path.to_owned(),
        what,
        source,
    })
}

/// A host buffer aligned for O_DIRECT (4 KiB), `len` bytes.
struct Aligned {
    raw: Vec<u8>,
    at: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let raw = vec![0u8; len + 4096];
        let at = raw.as_ptr().align_offset(4096);
        Aligned { raw, at, len }
    }
    fn bytes(&mut self) -> &mut [u8] {
        &mut self.raw[self.at..self.at + self.len]
    }
}

/// Percentiles of `lat` (sorted in place), microseconds.
fn latency(lat: &mut [Duration]) -> Latency {
    lat.sort_unstable();
    let us = |q: f64| {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_secs_f64() * 1e6
    };
    Latency {
        p50_us: us(0.5),
        p90_us: us(0.9),
        p99_us: us(0.99),
        max_us: us(1.0),
    }
}

/// Runs a storage copy with a `blk:` side (the other a BAR). Called by
/// [`run_storage`](super::run_storage) for such requests.
pub(super) fn run(
    req: &StorageRequest,
    progress: &mut dyn FnMut(Progress),
) -> Result<StorageReport, CopyError> {
    let (blk, bar, read) = match (&req.src, &req.dst) {
        (Target::Blk(b), Target::Bar(s)) => (b.clone(), s, true),
        (Target::Bar(s), Target::Blk(b)) => (b.clone(), s, false),
        _ => {
            return Err(CopyError::StorageSides {
                src: req.src.to_string(),
                dst: req.dst.to_string(),
            })
        }
    };
    if req.iterations == 0 {
        return Err(CopyError::ZeroIterations);
    }
    let side = if read { Side::Dst } else { Side::Src };
    let ep = Endpoint::open(
        bar,
        OpenOptions {
            access: req.access,
            ..OpenOptions::default()
        },
    )?;
    let bar_room = ep.bar.size().saturating_sub(ep.offset);
    let size = req
        .size
        .unwrap_or(super::DEFAULT_STORAGE_SIZE.min(bar_room));
    if size == 0 {
        return Err(CopyError::ZeroSize);
    }
    ep.check_span(side, size)?;
    if !req.allow_register_bars {
        ep.check_not_registers(side, size)?;
    }
    let cpu = GuardedMap::new(&ep, size)?;
    let buf = ep
        .device
        .export_dma_buf(ep.bar.index, &[DmaRange::new(ep.offset, size)])?;
    let qd = if req.nvme.queue_depth == 0 {
        DEFAULT_QD
    } else {
        req.nvme.queue_depth
    };
    let mut engine = KernelNvme::open(
        &blk.path,
        buf.as_fd(),
        KernelNvmeOptions { queue_depth: qd },
    )
    .map_err(engine_err)?;
    let limits = engine.limits();
    let dev_off = blk.lba * limits.logical_block;
    // The plain O_DIRECT fd of the checks (the kernel's ordinary block path).
    let check = FileOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_DIRECT)
        .open(&blk.path)
        .map_err(|e| io_err(&blk.path, "open", e))?;
    if req.verify {
        if read {
            verify::poison(&ep, &cpu, req.seed, 1 << 20)?;
        } else {
            verify::fill(&ep, &cpu, req.seed, 1 << 20)?;
            let mut p = Aligned::new(size as usize);
            super::pattern::fill(!req.seed, 0, p.bytes());
            check
                .write_all_at(p.bytes(), dev_off)
                .map_err(|e| io_err(&blk.path, "pwrite", e))?;
        }
    }
    let step = req.chunk.max(limits.max_io * u64::from(qd)).min(size) / limits.logical_block
        * limits.logical_block;
    let total = size * u64::from(req.iterations);
    // The steps go through the one harness every copy runs under (progress, the revoke
    // that ends a step), as the user-space NVMe stream's do.
    let mut stream = BlkStream {
        engine: &mut engine,
        read,
        dev_off,
        side,
        max_step: step.max(limits.logical_block),
        seconds: 0.0,
        ios: 0,
        lat: Vec::new(),
    };
    let hooks = Hooks::default();
    let mut harness = Harness::start(&hooks, None, None);
    let span = harness::Span {
        size,
        chunk: stream.max_step,
        iterations: req.iterations,
    };
    harness.drive(&mut stream, span, progress, &|_, done, total| {
        verify::revoked(&ep, done, total)
    })?;
    let BlkStream {
        seconds,
        ios,
        mut lat,
        ..
    } = stream;
    let verified = if req.verify {
        let mut host = Aligned::new(size as usize);
        check
            .read_exact_at(host.bytes(), dev_off)
            .map_err(|e| io_err(&blk.path, "pread", e))?;
        let mut got = vec![0u8; size as usize];
        let first = if read {
            cpu.read_at(&ep, 0, &mut got)?;
            got.iter()
                .zip(host.bytes().iter())
                .position(|(a, b)| a != b)
        } else {
            super::pattern::first_mismatch(req.seed, 0, host.bytes()).map(|(at, _)| at as usize)
        };
        if let Some(first) = first {
            return Err(CopyError::Mismatch {
                first: first as u64,
                count: 1,
                detail: None,
            });
        }
        Some(true)
    } else {
        None
    };
    let blk_report = |b: &BlkTarget| TargetReport::Blk {
        path: b.path.display().to_string(),
        lba: b.lba,
        block_size: limits.logical_block,
        capacity: limits.capacity,
    };
    let bar_report = TargetReport::Bar {
        bdf: ep.bdf().to_string(),
        bar: ep.bar.index,
        bar_size: ep.bar.size(),
        offset: ep.offset,
    };
    let (src, dst) = if read {
        (blk_report(&blk), bar_report)
    } else {
        (bar_report, blk_report(&blk))
    };
    // The I/Os succeeded, so the kernel's P2P distance check passed (it refuses every
    // I/O otherwise): the controller reached the BAR peer to peer.
    let route = engine.controller().parse::<Bdf>().ok().map(|controller| {
        let hop = Hop::find(&Sysfs::system(), ep.bdf(), controller, HostCpu::system());
        RouteProof {
            peer_to_peer: true,
            summary: format!(
                "peer to peer: NVMe controller {controller} (kernel nvme driver) {} {}'s BAR \
                 through the dma-buf's DMA-API mapping; the kernel's P2P distance check \
                 allowed it (controller ↔ BAR: {})",
                if read { "wrote" } else { "read" },
                ep.bdf(),
                hop.verdict
            ),
            devices: hop.clone(),
            engine_hops: vec![hop],
            ioas_mappings: Vec::new(),
        }
    });
    let per_s = |x: f64| if seconds > 0.0 { x / seconds } else { 0.0 };
    Ok(StorageReport {
        src,
        dst,
        transport: if read {
            TransportKind::BlkRead
        } else {
            TransportKind::BlkWrite
        },
        importer: "io_uring dma-buf (nvme-pci)",
        via: format!(
            "{} (kernel nvme driver, controller {})",
            engine.name(),
            engine.controller()
        ),
        engine_reason: format!(
            "the kernel's nvme driver {} the BAR's dma-buf registered with io_uring \
             (IORING_OP_{}_FIXED), queue depth {qd}, at most {} bytes per I/O \
             (max_hw_sectors_kb)",
            if read {
                "reads straight into"
            } else {
                "writes straight from"
            },
            if read { "READ" } else { "WRITE" },
            limits.max_io
        ),
        bytes: size,
        iterations: req.iterations,
        seconds,
        gbps: per_s(total as f64) / 1e9,
        iops: per_s(ios as f64),
        queue_depth: qd,
        transfer_size: limits.max_io.min(size),
        data_pointer: "dma-buf",
        commands: ios,
        latency: latency(&mut lat),
        seed: req.verify.then_some(req.seed),
        route,
        verified,
        verification: verified.map(|_| Verification {
            expected: if read {
                "namespace-read-back"
            } else {
                "pattern"
            },
            read_by: if read {
                format!(
                    "the CPU from {} BAR{} through a VFIO mmap, against the namespace read \
                     by pread(2) O_DIRECT into host memory (the kernel's ordinary block path)",
                    ep.bdf(),
                    ep.bar.index
                )
            } else {
                "the namespace read back by pread(2) O_DIRECT into host memory (the kernel's \
                 ordinary block path)"
                    .to_string()
            },
            same_engine: false,
            layout: format!(
                "{}-byte logical blocks, bytes {dev_off:#x} to {:#x} inside the namespace's \
                 {} bytes",
                limits.logical_block,
                dev_off + size - 1,
                limits.capacity
            ),
        }),
        iommu_faults: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_pick_the_right_sample() {
        let mut lat: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let l = latency(&mut lat);
        assert_eq!((l.p50_us, l.p99_us, l.max_us), (50.0, 99.0, 100.0));
        assert_eq!(latency(&mut []).p50_us, 0.0);
    }

    #[test]
    fn aligned_buffers_suit_o_direct() {
        let mut a = Aligned::new(8192);
        assert_eq!(a.bytes().len(), 8192);
        assert_eq!(a.bytes().as_ptr() as usize % 4096, 0);
    }
}
