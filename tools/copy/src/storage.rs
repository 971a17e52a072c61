//! Storage copies: an NVMe namespace to or from a BAR (peer-to-peer: the controller's
//! data IOVAs are the BAR's dma-buf, mapped in the controller's IOAS) or host memory
//! (the baseline), driven by the user-space NVMe engine
//! (`peerdma_engine::nvme`).
//!
//! NVMe → memory is a stream of Reads, memory → NVMe a stream of Writes, up to the
//! queue depth in flight, each command at most the transfer size (and the controller's
//! MDTS). Verification cannot pass on stale bytes: the destination is poisoned with a
//! pattern of this run first, then
//! - after a Read, the same LBA range is read again into a freshly poisoned host buffer
//!   and the destination must equal it byte for byte;
//! - after a Write (of the seeded pattern), the drive range was poisoned before the timed
//!   writes, and is read back into a poisoned host buffer that must hold the pattern.

use peerdma_exporter::{AccessPath, Device, DmaBuf, DmaRange, OpenOptions, RevokeState};

use peerdma_host::Bdf;

use peerdma_engine::nvme::command::Io;
use peerdma_engine::nvme::{IoStats, NamespaceInfo, NvmeError, NVME_CLASS};
use peerdma_engine::{AttachedEngine, EngineError, EngineOptions, Nvme, NvmeOptions};
use peerdma_host::sysfs::Sysfs;
use peerdma_importer::iommufd::{
    DmaBufMapping, Iommufd, Iova, MappingState, Prot, UserBuffer, UserMapping,
};
use serde::{Serialize, Serializer};

use super::harness::{Harness, Span};
use super::target::{NvmeTarget, Target};
use super::transport::{StepError, Transport, TransportKind};
use super::verify::{GuardedMap, Verification};
use super::MismatchDetail;
use super::{dma, page_align_check, verify, CopyError, Endpoint, Hooks, Progress};
use super::{Hop, IoasMapping, RouteProof, Side, SpanField, Unavailable};
use peerdma_host::p2pdma::HostCpu;

/// Serializes a BDF as its string.
pub(super) fn ser_bdf<S: Serializer>(bdf: &Bdf, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&bdf.to_string())
}

/// Default span when the request names none: 64 MiB (or what fits).
pub const DEFAULT_STORAGE_SIZE: u64 = 64 << 20;

/// A storage copy request.
#[derive(Clone, Debug)]
pub struct StorageRequest {
    /// Source.
    pub src: Target,
    /// Destination.
    pub dst: Target,
    /// Bytes; `None`: [`DEFAULT_STORAGE_SIZE`] or what fits the namespace and the BAR.
    pub size: Option<u64>,
    /// Bytes per progress step (at least the queue depth × the command size).
    pub chunk: u64,
    /// How many times to move the span.
    pub iterations: u32,
    /// Queue depth, transfer size and command timeout (namespace and LBA come from the
    /// NVMe side).
    pub nvme: NvmeOptions,
    /// Poison the destination, then check every byte after.
    pub verify: bool,
    /// Pattern seed.
    pub seed: u64,
    /// Use a BAR side that looks like registers (see [`Endpoint::check_not_registers`]).
    pub allow_register_bars: bool,
    /// VFIO access path for a BAR side.
    pub access: AccessPath,
}

impl StorageRequest {
    /// A verified storage copy from `src` to `dst` (one of them an NVMe namespace) with
    /// the pattern of `seed`, and what the `p2pcopy` command defaults to otherwise: the
    /// default size, 1 MiB progress steps, once, the driver's default queue depth,
    /// command size and timeout, the access path picked automatically, register BARs
    /// refused.
    pub fn new(src: Target, dst: Target, seed: u64) -> StorageRequest {
        StorageRequest {
            src,
            dst,
            size: None,
            chunk: 1 << 20,
            iterations: 1,
            nvme: NvmeOptions::default(),
            verify: true,
            seed,
            allow_register_bars: false,
            access: AccessPath::Auto,
        }
    }
}

/// One side in the report.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TargetReport {
    /// A BAR.
    Bar {
        /// Device.
        bdf: String,
        /// BAR index.
        bar: u32,
        /// BAR size.
        bar_size: u64,
        /// Offset into it.
        offset: u64,
    },
    /// An NVMe namespace.
    Nvme {
        /// Controller.
        bdf: String,
        /// Namespace.
        nsid: u32,
        /// First LBA.
        lba: u64,
        /// Block size.
        block_size: u32,
        /// Namespace size in blocks.
        blocks: u64,
    },
    /// A raw NVMe namespace on the kernel's nvme driver (a `blk:` side).
    Blk {
        /// The block device.
        path: String,
        /// First LBA.
        lba: u64,
        /// Logical block size in bytes.
        block_size: u64,
        /// Namespace size in bytes.
        capacity: u64,
    },
    /// Host memory.
    Host,
}

/// As the copy summary names a side: `0000:00:11.0 BAR2+0x200000` (the BAR and the offset
/// into it), `nvme:0000:00:13.0/1@2048`, `host`.
impl std::fmt::Display for TargetReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetReport::Bar {
                bdf, bar, offset, ..
            } => write!(f, "{bdf} BAR{bar}+{offset:#x}"),
            TargetReport::Nvme { bdf, nsid, lba, .. } => write!(f, "nvme:{bdf}/{nsid}@{lba}"),
            TargetReport::Blk { path, lba, .. } => write!(f, "blk:{path}@{lba}"),
            TargetReport::Host => f.write_str("host"),
        }
    }
}

/// Command latency percentiles, microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Slowest.
    pub max_us: f64,
}

impl Latency {
    /// From a transfer's statistics.
    pub fn of(stats: &IoStats) -> Latency {
        let us = |q| stats.percentile(q).map_or(0.0, |d| d.as_secs_f64() * 1e6);
        Latency {
            p50_us: us(0.5),
            p90_us: us(0.9),
            p99_us: us(0.99),
            max_us: us(1.0),
        }
    }
}

/// What a finished storage copy reports.
#[derive(Clone, Debug, Serialize)]
pub struct StorageReport {
    /// Source.
    pub src: TargetReport,
    /// Destination.
    pub dst: TargetReport,
    /// The transport (JSON key `path`): `nvme-read` (namespace → memory) or
    /// `nvme-write` (memory → namespace).
    #[serde(rename = "path")]
    pub transport: TransportKind,
    /// The importer that mapped the memory for the controller.
    pub importer: &'static str,
    /// The controller and its model.
    pub via: String,
    /// Why this path.
    pub engine_reason: String,
    /// Bytes per iteration.
    pub bytes: u64,
    /// Iterations.
    pub iterations: u32,
    /// Seconds spent moving data (poison, fill and verify excluded).
    pub seconds: f64,
    /// Throughput, 10^9 bytes per second.
    pub gbps: f64,
    /// Commands per second.
    pub iops: f64,
    /// Commands kept in flight.
    pub queue_depth: u32,
    /// Bytes per command.
    pub transfer_size: u64,
    /// How commands pointed at the data: `sgl` (one Data Block descriptor) or `prp`.
    pub data_pointer: &'static str,
    /// Commands issued (timed part).
    pub commands: u64,
    /// Command latencies (timed part).
    pub latency: Latency,
    /// The pattern seed of this run.
    pub seed: u64,
    /// For a BAR side: the route the bytes took (the controller reading or writing the
    /// BAR at IOVAs of its IOAS), as `peerdma path` would judge it. `None` for host
    /// memory, which is not peer to peer.
    pub route: Option<RouteProof>,
    /// Whether every byte was checked and matched (`None`: not verified).
    pub verified: Option<bool>,
    /// How the bytes were checked (`None`: not verified): for a read, the expected
    /// bytes are the namespace read again by the same controller.
    pub verification: Option<Verification>,
    /// IOMMU faults the kernel logged for the controller while the copy ran;
    /// `None` where the kernel log cannot be read.
    pub iommu_faults: Option<u64>,
}

/// The memory side of a storage copy: a BAR span exported and mapped in the
/// controller's IOAS (with a CPU mapping to poison and check it), or host memory.
enum Memory {
    Bar {
        // Field order is drop order: the IOAS mapping, then the CPU mapping.
        dma: DmaBufMapping<DmaBuf>,
        cpu: GuardedMap,
    },
    Host(UserMapping),
}

impl Memory {
    fn iova(&self) -> u64 {
        match self {
            Memory::Bar { dma, .. } => dma.iova(),
            Memory::Host(m) => m.iova(),
        }
    }

    fn revoked(&mut self) -> bool {
        match self {
            Memory::Bar { dma, .. } => !matches!(dma.state(), MappingState::Live),
            Memory::Host(_) => false,
        }
    }

    /// Writes the pattern of `seed` over the span with the CPU.
    fn fill(&self, ep: Option<&Endpoint>, seed: u64, len: u64) -> Result<(), CopyError> {
        match (self, ep) {
            (Memory::Bar { cpu, .. }, Some(ep)) => verify::fill(ep, cpu, seed, 1 << 20),
            (Memory::Host(m), _) => fill_host(m, seed, len),
            (Memory::Bar { .. }, None) => unreachable!("a BAR side has its endpoint"),
        }
    }

    /// Reads `out.len()` bytes at `off` with the CPU.
    fn read(&self, ep: Option<&Endpoint>, off: u64, out: &mut [u8]) -> Result<(), CopyError> {
        match (self, ep) {
            (Memory::Bar { cpu, .. }, Some(ep)) => {
                // A revoke is caught by the SIGBUS guard.
                cpu.read_at(ep, off as usize, out)
            }
            (Memory::Host(m), _) => Ok(m.buffer().read(off as usize, out)?),
            (Memory::Bar { .. }, None) => unreachable!("a BAR side has its endpoint"),
        }
    }
}

/// Writes the pattern of `seed` over a host buffer.
fn fill_host(m: &UserMapping, seed: u64, len: u64) -> Result<(), CopyError> {
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(1 << 20) as usize;
        crate::pattern::fill(seed, off, &mut buf[..n]);
        m.buffer().write(off as usize, &buf[..n])?;
        off += n as u64;
    }
    Ok(())
}

/// A seed for poison that differs from the data's.
fn poison(seed: u64, which: u64) -> u64 {
    seed ^ 0x5eed_dead_0000_0000 ^ which.wrapping_mul(0x9e37_79b9)
}

fn host_buffer(engine: &AttachedEngine, len: u64, access: Prot) -> Result<UserMapping, CopyError> {
    Ok(engine
        .ioas()
        .map_host(UserBuffer::new(len as usize)?, Iova::Guarded, access)?)
}

fn nvme(engine: &mut AttachedEngine) -> &mut Nvme {
    engine
        .nvme_mut()
        .expect("the engine was checked to be an NVMe controller")
}

fn nvme_err(e: NvmeError) -> CopyError {
    CopyError::Engine(EngineError::from(e))
}

/// Checks by sysfs that `bdf` is an NVMe controller, before anything is opened.
fn check_nvme(bdf: Bdf) -> Result<(), CopyError> {
    let dev = Sysfs::system()
        .device(bdf)
        .map_err(peerdma_exporter::Error::from)?;
    if dev.class != NVME_CLASS {
        return Err(CopyError::NotNvme {
            bdf,
            class: dev.class,
            vendor: dev.vendor,
            device: dev.device,
        });
    }
    Ok(())
}

/// Whether a request is a storage copy (one side an NVMe namespace).
pub fn is_storage(src: &Target, dst: &Target) -> bool {
    [src, dst]
        .iter()
        .any(|t| matches!(t, Target::Nvme(_) | Target::Blk(_)))
}

/// Runs a storage copy. `progress` is called between steps.
///
/// # Errors
///
/// [`CopyError::StorageSides`] for two NVMe sides or no NVMe side;
/// [`CopyError::NotNvme`] when the `nvme:` device is not an NVMe controller;
/// [`CopyError::TransportUnavailable`] without iommufd; [`CopyError::Engine`] with the NVMe
/// driver's errors (namespace too small, size not a block multiple, a command's status
/// by name, timeouts); [`CopyError::Unaligned`], [`CopyError::BarTooSmall`] and the
/// exporter's and importer's errors for the memory side; [`CopyError::Revoked`] when the
/// BAR is revoked mid-stream; [`CopyError::Mismatch`] when verification fails.
pub fn run_storage(
    req: &StorageRequest,
    progress: &mut dyn FnMut(Progress),
) -> Result<StorageReport, CopyError> {
    run_storage_inner(req, progress, &Hooks::default())
}

pub(super) fn run_storage_inner(
    req: &StorageRequest,
    progress: &mut dyn FnMut(Progress),
    hooks: &Hooks<'_>,
) -> Result<StorageReport, CopyError> {
    if matches!(req.src, Target::Blk(_)) || matches!(req.dst, Target::Blk(_)) {
        return super::kernel_storage::run(req, progress);
    }
    let (nv, mem, dir) = match (&req.src, &req.dst) {
        (Target::Nvme(_), Target::Nvme(_))
        | (Target::Bar(_) | Target::Host, Target::Bar(_) | Target::Host) => {
            return Err(CopyError::StorageSides {
                src: req.src.to_string(),
                dst: req.dst.to_string(),
            })
        }
        (Target::Blk(_), _) | (_, Target::Blk(_)) => {
            unreachable!("a blk: side runs in kernel_storage")
        }
        (Target::Nvme(n), m) => (*n, m, Io::Read),
        (m, Target::Nvme(n)) => (*n, m, Io::Write),
    };
    if req.iterations == 0 {
        return Err(CopyError::ZeroIterations);
    }
    check_nvme(nv.bdf)?;
    if dma::available().is_err() {
        return Err(CopyError::TransportUnavailable {
            transport: "nvme",
            why: Unavailable::NvmeNeedsIommufd,
        });
    }
    let iommufd = Iommufd::shared()?;
    let opts = EngineOptions {
        nvme: NvmeOptions {
            nsid: nv.nsid,
            ..req.nvme
        },
        ..EngineOptions::default()
    };
    let mut engine = AttachedEngine::open_with(nv.bdf, &iommufd, &opts)?;
    let ns = nvme(&mut engine)
        .namespace()
        .expect("a started controller has its namespace");
    let cmd_bytes = nvme(&mut engine).command_bytes();
    // What the controller runs with: the depth asked for, or the default lowered to
    // CAP.MQES; and why a command moves other than the transfer size asked for.
    let queue_depth = nvme(&mut engine).options().queue_depth;
    let cmd_note = nvme(&mut engine).command_bytes_note();
    let sgl = nvme(&mut engine).uses_sgl();
    let model = nvme(&mut engine)
        .controller()
        .map(|c| c.model.clone())
        .unwrap_or_default();
    // The memory side's BAR, if any, opened before the size is settled (it bounds it).
    let ep = match mem {
        Target::Bar(spec) => Some(Endpoint::open(
            spec,
            OpenOptions {
                access: req.access,
                ..OpenOptions::default()
            },
        )?),
        _ => None,
    };
    let room = ns
        .blocks
        .saturating_sub(nv.lba)
        .saturating_mul(u64::from(ns.block_size));
    let size = match req.size {
        Some(s) => s,
        None => {
            if room == 0 {
                return Err(CopyError::NoRoom {
                    at: format!(
                        "LBA {:#x} is at or past the end of {} namespace {} ({} blocks)",
                        nv.lba, nv.bdf, nv.nsid, ns.blocks
                    ),
                });
            }
            if let Some(ep) = ep.as_ref().filter(|ep| ep.offset >= ep.bar.size()) {
                let side = if dir == Io::Read {
                    Side::Dst
                } else {
                    Side::Src
                };
                return Err(CopyError::NoRoom {
                    at: super::no_room_in_bar(side, ep),
                });
            }
            let mut s = DEFAULT_STORAGE_SIZE.min(room);
            if let Some(ep) = &ep {
                s = s.min(ep.bar.size().saturating_sub(ep.offset));
            }
            s
        }
    };
    if size == 0 {
        return Err(CopyError::ZeroSize);
    }
    check_range(&ns, nv, size)?;
    let memory = match &ep {
        Some(ep) => {
            let page = ep.device.page_size();
            let bar_size = ep.bar.size();
            page_align_check(SpanField::Size, size, page, |n| {
                n > 0 && ep.offset.checked_add(n).is_some_and(|e| e <= bar_size)
            })?;
            let field = if dir == Io::Read {
                SpanField::DstOffset
            } else {
                SpanField::SrcOffset
            };
            page_align_check(field, ep.offset, page, |o| o < bar_size)?;
            let side = if dir == Io::Read {
                Side::Dst
            } else {
                Side::Src
            };
            ep.check_span(side, size)?;
            if !req.allow_register_bars {
                ep.check_not_registers(side, size)?;
            }
            let cpu = GuardedMap::new(ep, size)?;
            let buf = ep
                .device
                .export_dma_buf(ep.bar.index, &[DmaRange::new(ep.offset, size)])?;
            let access = if dir == Io::Read {
                Prot::Write
            } else {
                Prot::Read
            };
            let dma =
                engine
                    .ioas()
                    .map_vfio_dmabuf(&ep.device, buf, 0, size, Iova::Guarded, access)?;
            Memory::Bar { dma, cpu }
        }
        None => Memory::Host(host_buffer(&engine, size, Prot::ReadWrite)?),
    };
    let report_of = |t: &Target, m: &Memory| match (t, m, &ep) {
        (Target::Nvme(n), _, _) => TargetReport::Nvme {
            bdf: n.bdf.to_string(),
            nsid: n.nsid,
            lba: n.lba,
            block_size: ns.block_size,
            blocks: ns.blocks,
        },
        (_, _, Some(ep)) => TargetReport::Bar {
            bdf: ep.bdf().to_string(),
            bar: ep.bar.index,
            bar_size: ep.bar.size(),
            offset: ep.offset,
        },
        (_, _, None) => TargetReport::Host,
    };
    let (src_report, dst_report) = (report_of(&req.src, &memory), report_of(&req.dst, &memory));
    let mut memory = memory;
    // A host buffer for poisoning the drive and reading it back for the check.
    let check_buf = if req.verify {
        Some(host_buffer(&engine, size, Prot::ReadWrite)?)
    } else {
        None
    };
    // One page to show the controller answers again after a failed stream.
    let probe = host_buffer(&engine, u64::from(ns.block_size), Prot::Write)?;
    if let Some(check) = &check_buf {
        match dir {
            Io::Read => memory.fill(ep.as_ref(), poison(req.seed, 1), size)?,
            Io::Write => {
                memory.fill(ep.as_ref(), req.seed, size)?;
                fill_host(check, poison(req.seed, 2), size)?;
                let mut scratch = IoStats::default();
                nvme(&mut engine)
                    .transfer(Io::Write, nv.lba, check.iova(), size, &mut scratch)
                    .map_err(nvme_err)?;
            }
        }
    }
    let step = req
        .chunk
        .max(cmd_bytes * u64::from(queue_depth) * 4)
        .min(size)
        / u64::from(ns.block_size)
        * u64::from(ns.block_size);
    let span = Span {
        size,
        chunk: step,
        iterations: req.iterations,
    };
    let total = span.total();
    let mut stats = IoStats::default();
    let bar_device = ep.as_ref().map(|ep| &ep.device);
    let iova = memory.iova();
    let controller = engine.device().clone();
    // The hooks act on a BAR side; with host memory as the other side they do not run.
    let sides = bar_device.map(|bar| match dir {
        Io::Read => (&controller, bar),
        Io::Write => (bar, &controller),
    });
    let mut harness = Harness::start(hooks, sides, Some(nv.bdf));
    let controller_generation = controller.revoke_generation();
    let elapsed = {
        let mut stream = NvmeStream {
            engine: &mut engine,
            dir,
            nv,
            block_size: u64::from(ns.block_size),
            iova,
            memory: &mut memory,
            ep: ep.as_ref(),
            stats: &mut stats,
            probe: &probe,
            controller: &controller,
            controller_generation,
            bar_generation: bar_device.map(|d| d.revoke_generation()),
        };
        // The stream says its own revokes (with the bytes the controller acknowledged).
        let revoked = |_, done, total| match ep.as_ref() {
            Some(ep) => verify::revoked(ep, done, total),
            None => verify::revoked_device(&controller, "the controller was revoked", done, total),
        };
        harness.drive(&mut stream, span, progress, &revoked)?
    };
    let verified = match &check_buf {
        None => None,
        Some(check) => {
            fill_host(check, poison(req.seed, 3), size)?;
            let mut scratch = IoStats::default();
            nvme(&mut engine)
                .transfer(Io::Read, nv.lba, check.iova(), size, &mut scratch)
                .map_err(|e| {
                    harness.explain(engine_err(
                        &controller,
                        controller_generation,
                        e,
                        total,
                        total,
                    ))
                })?;
            let compared = compare(&memory, ep.as_ref(), check, size, dir, req.seed);
            harness.checked(compared, |h, _| {
                // A BAR revoked and restored after the last step is the cause, as in `run`.
                let ep = ep.as_ref()?;
                let side = if dir == Io::Read {
                    Side::Dst
                } else {
                    Side::Src
                };
                h.generation_moved(side)
                    .map(|_| verify::revoked(ep, total, total))
            })?;
            Some(true)
        }
    };
    // A fault by the controller fails the copy, whatever the compare said.
    let iommu_faults = harness.finish(verified.is_some())?;
    let route = ep.as_ref().map(|ep| {
        let sys = Sysfs::system();
        let hop = Hop::find(&sys, ep.bdf(), nv.bdf, HostCpu::system());
        let side = if dir == Io::Read {
            Side::Dst
        } else {
            Side::Src
        };
        RouteProof {
            peer_to_peer: true,
            summary: format!(
                "peer to peer: NVMe controller {} {} {}'s BAR at IOVAs of its iommufd IOAS, \
                 translated by the IOMMU; no CPU mapping touched the bytes (iommufd skips the \
                 kernel's P2P distance check; for a DRM or RDMA importer it would say \
                 controller ↔ BAR: {})",
                nv.bdf,
                if dir == Io::Read { "wrote" } else { "read" },
                ep.bdf(),
                hop.verdict
            ),
            devices: hop.clone(),
            engine_hops: vec![hop],
            ioas_mappings: vec![IoasMapping {
                side,
                bdf: ep.bdf().to_string(),
                bar: ep.bar.index,
                offset: ep.offset,
                iova,
                length: size,
            }],
        }
    });
    let seconds = elapsed.as_secs_f64();
    let per_s = |x: f64| if seconds > 0.0 { x / seconds } else { 0.0 };
    Ok(StorageReport {
        src: src_report,
        dst: dst_report,
        transport: match dir {
            Io::Read => TransportKind::NvmeRead,
            Io::Write => TransportKind::NvmeWrite,
        },
        importer: "iommufd",
        via: format!("{} ({})", nv.bdf, model),
        engine_reason: format!(
            "the NVMe controller {} moves the data itself ({}), queue depth {}, {} bytes per \
             command{}, data pointers: {}",
            nv.bdf,
            match (dir, &memory) {
                (Io::Read, Memory::Bar { .. }) => "Reads straight into the BAR, peer to peer",
                (Io::Write, Memory::Bar { .. }) => "Writes straight from the BAR, peer to peer",
                (Io::Read, Memory::Host(_)) => "Reads into host memory, the baseline",
                (Io::Write, Memory::Host(_)) => "Writes from host memory, the baseline",
            },
            queue_depth,
            cmd_bytes,
            cmd_note.map(|why| format!(" ({why})")).unwrap_or_default(),
            if sgl {
                "one SGL Data Block descriptor per command (the controller offers SGLs)"
            } else {
                "PRP entries and lists"
            }
        ),
        bytes: size,
        iterations: req.iterations,
        seconds,
        gbps: per_s(total as f64) / 1e9,
        iops: per_s(stats.commands as f64),
        queue_depth,
        transfer_size: cmd_bytes,
        data_pointer: if sgl { "sgl" } else { "prp" },
        commands: stats.commands,
        latency: Latency::of(&stats),
        seed: req.seed,
        route,
        verified,
        verification: verified.map(|_| {
            let memory = match &ep {
                Some(ep) => format!("{} BAR{} through a VFIO mmap", ep.bdf(), ep.bar.index),
                None => "host memory".to_string(),
            };
            let layout = format!(
                "{}-byte blocks without metadata (Identify Namespace, LBA format {}), LBAs \
                 {:#x} to {:#x} inside the namespace's {} blocks",
                ns.block_size,
                ns.format,
                nv.lba,
                nv.lba + size / u64::from(ns.block_size) - 1,
                ns.blocks
            );
            match dir {
                Io::Read => Verification {
                    expected: "namespace-read-back",
                    read_by: format!(
                        "the CPU from {memory}, against the namespace read again by the same \
                         controller into host memory"
                    ),
                    same_engine: true,
                    layout,
                },
                Io::Write => Verification {
                    expected: "pattern",
                    read_by: "the namespace read back by the same controller into host memory"
                        .to_string(),
                    same_engine: true,
                    layout,
                },
            }
        }),
        iommu_faults,
    })
}

/// The controller's error, or the revoke when the library revoked or reset the
/// controller during the copy (its registers faulted, or it stopped, or it came back
/// without the queues and a command timed out): `generation` is the controller's revoke
/// generation when the copy started.
fn engine_err(
    controller: &Device,
    generation: u64,
    e: NvmeError,
    done: u64,
    total: u64,
) -> CopyError {
    if matches!(e, NvmeError::Revoked { .. }) || controller.revoke_generation() != generation {
        verify::revoked_device(
            controller,
            &format!("the controller was revoked or reset under the copy ({e})"),
            done,
            total,
        )
    } else {
        nvme_err(e)
    }
}

/// The NVMe controller streaming Reads (namespace → memory) or Writes (memory →
/// namespace) of the span, up to the queue depth in flight: the storage copy's
/// [`Transport`].
struct NvmeStream<'a> {
    engine: &'a mut AttachedEngine,
    dir: Io,
    nv: NvmeTarget,
    block_size: u64,
    /// The memory side's IOVA in the controller's IOAS.
    iova: u64,
    memory: &'a mut Memory,
    /// The memory side's BAR, if it is one.
    ep: Option<&'a Endpoint>,
    stats: &'a mut IoStats,
    /// One block of host memory, to show the controller answers again after a failure.
    probe: &'a UserMapping,
    controller: &'a Device,
    controller_generation: u64,
    /// The BAR's revoke generation when the copy started.
    bar_generation: Option<u64>,
}

impl Transport for NvmeStream<'_> {
    fn kind(&self) -> TransportKind {
        match self.dir {
            Io::Read => TransportKind::NvmeRead,
            Io::Write => TransportKind::NvmeWrite,
        }
    }

    fn engine(&self) -> Option<String> {
        Some(self.nv.bdf.to_string())
    }

    fn max_step(&self) -> u64 {
        u64::MAX
    }

    fn step(&mut self, off: u64, n: u64, at: Progress) -> Result<(), StepError> {
        let before = self.stats.bytes;
        let r = nvme(self.engine).transfer(
            self.dir,
            self.nv.lba + off / self.block_size,
            self.iova + off,
            n,
            self.stats,
        );
        let acked = at.done + (self.stats.bytes - before);
        // A Data Transfer Error on the BAR side is the revoke when the library revoked
        // the device meanwhile (the mapping may already be back); else it is the
        // controller's error, explained by IOMMU faults where logged.
        let transfer_error = matches!(&r, Err(NvmeError::Command { status, .. }) if status.sct == 0 && status.sc == 0x04);
        // Asked only after such an error: it reads config space.
        let revoked_meanwhile = || {
            self.ep.is_some_and(|ep| {
                Some(ep.device.revoke_generation()) != self.bar_generation
                    || !matches!(ep.device.revoke_state(), Ok(RevokeState::Live))
            })
        };
        if self.memory.revoked() || (transfer_error && revoked_meanwhile()) {
            let ep = self.ep.expect("only a BAR side is revoked");
            let mut err = verify::revoked(ep, acked, at.total);
            if let CopyError::Revoked { why, .. } = &mut err {
                why.push_str(&recovery_note(
                    nvme(self.engine),
                    self.nv,
                    self.probe,
                    r.err(),
                ));
            }
            return Err(StepError::Failed(err));
        }
        r.map_err(|e| {
            StepError::Failed(engine_err(
                self.controller,
                self.controller_generation,
                e,
                acked,
                at.total,
            ))
        })
    }
}

/// Checks that `size` bytes from the target's LBA are whole blocks inside the namespace.
fn check_range(ns: &NamespaceInfo, nv: NvmeTarget, size: u64) -> Result<(), CopyError> {
    let bs = u64::from(ns.block_size);
    if !size.is_multiple_of(bs) {
        return Err(nvme_err(NvmeError::NotBlockMultiple {
            bdf: nv.bdf,
            nsid: ns.nsid,
            len: size,
            block_size: ns.block_size,
        }));
    }
    let blocks = size / bs;
    if nv.lba.checked_add(blocks).is_none_or(|e| e > ns.blocks) {
        return Err(nvme_err(NvmeError::OutOfRange {
            bdf: nv.bdf,
            nsid: ns.nsid,
            lba: nv.lba,
            blocks,
            capacity: ns.blocks,
            block_size: ns.block_size,
        }));
    }
    Ok(())
}

/// After a failed stream: the driver reset the controller; one block read into host
/// memory shows whether it is usable again.
fn recovery_note(
    nvme: &mut Nvme,
    nv: NvmeTarget,
    probe: &UserMapping,
    cause: Option<NvmeError>,
) -> String {
    // Causes without their own fix: the revoke error that carries this note has one.
    let cause = cause.map_or(String::new(), |e| {
        format!("; the controller said: {}", crate::fix::foreign::what(&e))
    });
    let bs = nvme.namespace().map_or(512, |n| u64::from(n.block_size));
    let mut stats = IoStats::default();
    let state = match nvme.transfer(Io::Read, nv.lba, probe.iova(), bs, &mut stats) {
        Ok(()) => "the controller was reset and a read after the reset succeeded".to_string(),
        Err(e) => format!(
            "the controller is not usable after the reset: {}",
            crate::fix::foreign::what(&e)
        ),
    };
    format!("{cause}; NVMe {}: {state}", nv.bdf)
}

/// Compares the destination with what the check buffer holds (a Read: the drive read
/// again) or the seeded pattern (a Write: the check buffer holds the drive read back).
fn compare(
    memory: &Memory,
    ep: Option<&Endpoint>,
    check: &UserMapping,
    size: u64,
    dir: Io,
    seed: u64,
) -> Result<(), CopyError> {
    let chunk = 1usize << 20;
    let (mut a, mut b) = (vec![0u8; chunk], vec![0u8; chunk]);
    let mut first = None;
    let mut detail = None;
    let mut count = 0u64;
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(chunk as u64) as usize;
        check.buffer().read(off as usize, &mut b[..n])?;
        match dir {
            Io::Read => {
                memory.read(ep, off, &mut a[..n])?;
                for i in 0..n {
                    if a[i] != b[i] {
                        if first.is_none() {
                            first = Some(off + i as u64);
                            let end = (i + MismatchDetail::BYTES).min(n);
                            detail = Some(Box::new(MismatchDetail {
                                seed: None,
                                expected: b[i..end].to_vec(),
                                actual: a[i..end].to_vec(),
                            }));
                        }
                        count += 1;
                    }
                }
            }
            Io::Write => {
                if let Some((f, c)) = crate::pattern::first_mismatch(seed, off, &b[..n]) {
                    if first.is_none() {
                        first = Some(f);
                        detail = Some(verify::pattern_detail(seed, f, &b[(f - off) as usize..n]));
                    }
                    count += c;
                }
            }
        }
        off += n as u64;
    }
    match first {
        None => Ok(()),
        Some(first) => Err(CopyError::Mismatch {
            first,
            count,
            detail,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_side_is_reported_with_its_bar_and_offset() {
        let bar = TargetReport::Bar {
            bdf: "0000:00:11.0".into(),
            bar: 2,
            bar_size: 64 << 20,
            offset: 0x20_0000,
        };
        assert_eq!(bar.to_string(), "0000:00:11.0 BAR2+0x200000");
        let j = serde_json::to_value(&bar).unwrap();
        assert_eq!(
            (&j["kind"], &j["bar"], &j["offset"]),
            (&"bar".into(), &2.into(), &0x20_0000.into())
        );
        let nvme = TargetReport::Nvme {
            bdf: "0000:00:13.0".into(),
            nsid: 1,
            lba: 2048,
            block_size: 512,
            blocks: 1 << 20,
        };
        assert_eq!(nvme.to_string(), "nvme:0000:00:13.0/1@2048");
        assert_eq!(TargetReport::Host.to_string(), "host");
    }
}
