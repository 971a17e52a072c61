//! `nvme-bench NVME BAR-DEVICE`: the user-space NVMe engine moving data between its
//! namespace and a peer BAR against the same transfers with host memory, on the same
//! controller in the same run: Reads (NVMe → BAR against NVMe → host) and Writes
//! (BAR → NVMe against host → NVMe), at queue depths 1, 4, 16, 64 and transfer sizes
//! 4 KiB..1 MiB, with the BAR / host ratio per cell, and the 4 KiB queue-depth-1 read
//! latency (p50/p99) into each.
//!
//! Method: per cell the controller is brought up once, with the BAR's dma-buf and a host
//! buffer of the same size both mapped in its IOAS, so the two targets differ in nothing
//! but the IOVA the commands carry. Batches (one span each) then alternate BAR and host,
//! the order flipping every pair (BAR, host, host, BAR, ...), so the host's load hits
//! both alike; a cell's **ratio** is the median over pairs of BAR / host of the two
//! adjacent batches, printed with the smallest and largest pair ratio (the spread).
//! Timed batches are not verified; one verified copy of each target and direction
//! through `p2pcopy` comes first. Prints Markdown tables and one JSON object per cell.
//!
//! In the testbed: `peerdma-testbed run --devices ivshmem,ivshmem,nvme --
//! target/release/nvme-bench 00:12.0 00:11.0`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use peerdma_copy::{Endpoint, EndpointSpec, NvmeTarget, StorageReport, StorageRequest, Target};
use peerdma_engine::nvme::command::Io;
use peerdma_engine::nvme::{DataPointer, IoStats};
use peerdma_engine::{AttachedEngine, EngineOptions, NvmeOptions};
use peerdma_exporter::{DmaBuf, DmaRange, OpenOptions};
use peerdma_host::Bdf;
use peerdma_importer::iommufd::{DmaBufMapping, Iommufd, Iova, Prot, UserBuffer, UserMapping};
use peerdma_tools::size::human;

#[derive(Parser)]
#[command(
    name = "nvme-bench",
    about = "NVMe ↔ BAR against NVMe ↔ host memory: interleaved batches, throughput ratios \
             per cell (median of adjacent pairs, with the spread) and 4 KiB latency"
)]
struct Cli {
    /// The NVMe controller (bound to vfio-pci).
    nvme: Bdf,
    /// The device whose BAR is the peer target.
    bar: Bdf,
    /// Queue depths.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64",
          value_parser = clap::value_parser!(u32).range(1..1024))]
    queue_depths: Vec<u32>,
    /// Transfer sizes in KiB.
    #[arg(long, value_delimiter = ',', default_value = "4,16,64,256,1024",
          value_parser = clap::value_parser!(u64).range(1..=2048))]
    transfer_kib: Vec<u64>,
    /// BAR/host batch pairs per cell and direction (the ratio is their median).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    reps: u32,
    /// Directions: read (NVMe → memory), write (memory → NVMe) or both.
    #[arg(long, default_value = "both", value_parser = ["read", "write", "both"])]
    direction: String,
    /// Commands per 4 KiB latency batch (four batches per target).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    latency_commands: u64,
    /// Data pointers: auto (SGLs where offered), prp or sgl.
    #[arg(long, default_value = "auto", value_parser = ["auto", "prp", "sgl"])]
    data_pointer: String,
    /// Host buffer pages: 4k (anonymous memory, as p2pcopy's `host` side) or 2m (2 MiB
    /// huge pages at a 2 MiB-aligned IOVA, as the BAR's contiguous memory gets; needs
    /// huge pages reserved: /proc/sys/vm/nr_hugepages).
    #[arg(long, default_value = "4k", value_parser = ["4k", "2m"])]
    host_pages: String,
    /// Most bytes per batch (a small BAR, such as an NVMe CMB, needs less than 32 MiB).
    #[arg(long, value_parser = peerdma_tools::size::parse_size, default_value = "32M")]
    max_bytes: u64,
}

impl Cli {
    fn data_pointer(&self) -> DataPointer {
        match self.data_pointer.as_str() {
            "prp" => DataPointer::Prp,
            "sgl" => DataPointer::Sgl,
            _ => DataPointer::Auto,
        }
    }

    fn directions(&self) -> Vec<Io> {
        match self.direction.as_str() {
            "read" => vec![Io::Read],
            "write" => vec![Io::Write],
            _ => vec![Io::Read, Io::Write],
        }
    }
}

fn verified(cli: &Cli, dir: Io, host: bool) -> Result<StorageReport> {
    let mem = if host {
        Target::Host
    } else {
        Target::Bar(EndpointSpec::whole(cli.bar))
    };
    let nvme = Target::Nvme(NvmeTarget::first_namespace(cli.nvme));
    let (src, dst) = match dir {
        Io::Read => (nvme, mem),
        Io::Write => (mem, nvme),
    };
    let size = cli.max_bytes.min(16 << 20);
    let req = StorageRequest {
        size: Some(size),
        chunk: size,
        nvme: NvmeOptions {
            queue_depth: 16,
            data_pointer: cli.data_pointer(),
            ..NvmeOptions::default()
        },
        verify: true,
        ..StorageRequest::new(src, dst, 0x6e76_6d65)
    };
    let r = peerdma_copy::run_storage(&req, &mut |_| {})
        .with_context(|| format!("{} → {}", req.src, req.dst))?;
    anyhow::ensure!(
        r.verified == Some(true),
        "{} → {}: verification did not run",
        req.src,
        req.dst
    );
    Ok(r)
}

/// One controller at one queue depth and transfer size, with the BAR's dma-buf and a host
/// buffer of `size` bytes both mapped in its IOAS.
struct Cell {
    engine: AttachedEngine,
    bar_iova: u64,
    host_iova: u64,
    per_command: u64,
    // Unmapped after the engine (fields drop in order): the controller is disabled
    // before the memory it could still write leaves the IOAS.
    _bar: DmaBufMapping<DmaBuf>,
    _host: UserMapping,
}

impl Cell {
    fn open(
        cli: &Cli,
        iommufd: &Iommufd,
        bar: &Endpoint,
        qd: u32,
        transfer: u64,
        size: u64,
    ) -> Result<Cell> {
        let opts = EngineOptions {
            nvme: NvmeOptions {
                queue_depth: qd,
                transfer_size: transfer,
                command_timeout: Duration::from_secs(10),
                data_pointer: cli.data_pointer(),
                ..NvmeOptions::default()
            },
            ..EngineOptions::default()
        };
        let mut engine = AttachedEngine::open_with(cli.nvme, iommufd, &opts)
            .with_context(|| format!("opening {}", cli.nvme))?;
        let per_command = engine
            .nvme_mut()
            .context("not an NVMe controller")?
            .command_bytes();
        let buf = bar
            .device
            .export_dma_buf(bar.bar.index, &[DmaRange::new(bar.offset, size)])
            .with_context(|| format!("exporting {} BAR{}", cli.bar, bar.bar.index))?;
        let dma = engine
            .ioas()
            .map_vfio_dmabuf(&bar.device, buf, 0, size, Iova::Guarded, Prot::ReadWrite)
            .context("mapping the BAR's dma-buf")?;
        let host = engine
            .ioas()
            .map_host(
                if cli.host_pages == "2m" {
                    UserBuffer::huge(size as usize).context("--host-pages 2m")?
                } else {
                    UserBuffer::new(size as usize)?
                },
                Iova::Guarded,
                Prot::ReadWrite,
            )
            .context("mapping the host buffer")?;
        Ok(Cell {
            bar_iova: dma.iova(),
            host_iova: host.iova(),
            per_command,
            _bar: dma,
            _host: host,
            engine,
        })
    }

    /// One batch: `size` bytes in direction `dir` to or from `iova`; GB/s.
    fn batch(&mut self, dir: Io, iova: u64, size: u64, stats: &mut IoStats) -> Result<f64> {
        let before = stats.elapsed;
        self.engine
            .nvme_mut()
            .context("not an NVMe controller")?
            .transfer(dir, 0, iova, size, stats)?;
        let secs = (stats.elapsed - before).as_secs_f64();
        Ok(size as f64 / secs.max(f64::MIN_POSITIVE) / 1e9)
    }

    /// `pairs` BAR/host batch pairs, the order flipping each pair; per target the GB/s of
    /// each batch, and the BAR / host ratio of each pair.
    fn pairs(&mut self, dir: Io, size: u64, pairs: u32) -> Result<Pairs> {
        let mut p = Pairs::default();
        for i in 0..pairs {
            let (mut b, mut h) = (0.0, 0.0);
            for bar_side in if i % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            } {
                if bar_side {
                    b = self.batch(dir, self.bar_iova, size, &mut p.bar_stats)?;
                } else {
                    h = self.batch(dir, self.host_iova, size, &mut p.host_stats)?;
                }
            }
            p.bar.push(b);
            p.host.push(h);
            p.ratios.push(if h > 0.0 { b / h } else { 0.0 });
        }
        Ok(p)
    }
}

#[derive(Default)]
struct Pairs {
    bar: Vec<f64>,
    host: Vec<f64>,
    ratios: Vec<f64>,
    bar_stats: IoStats,
    host_stats: IoStats,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

fn label(dir: Io) -> (&'static str, &'static str, &'static str) {
    match dir {
        Io::Read => ("read", "NVMe → BAR", "NVMe → host"),
        Io::Write => ("write", "BAR → NVMe", "host → NVMe"),
    }
}

fn run(cli: &Cli) -> Result<()> {
    for dir in cli.directions() {
        for host in [false, true] {
            let r = verified(cli, dir, host)?;
            if !host && dir == cli.directions()[0] {
                println!(
                    "data pointers: {}; host buffer pages: {}\n",
                    r.data_pointer, cli.host_pages
                );
            }
        }
    }
    let bar = Endpoint::open(&EndpointSpec::whole(cli.bar), OpenOptions::default())
        .with_context(|| format!("opening {}", cli.bar))?;
    let iommufd = Iommufd::open()?;
    let mut ratios: Vec<(Io, Vec<f64>)> =
        cli.directions().into_iter().map(|d| (d, vec![])).collect();
    let mut rows: Vec<(Io, String)> = Vec::new();
    for &qd in &cli.queue_depths {
        for &kib in &cli.transfer_kib {
            let transfer = kib << 10;
            // Enough commands to fill the queue many times: 8 MiB (4 KiB) to 32 MiB.
            let size = (transfer * 2048)
                .clamp(8 << 20, 32 << 20)
                .min(cli.max_bytes)
                .min(bar.bar.size() - bar.offset);
            if size < transfer {
                continue;
            }
            let mut cell = Cell::open(cli, &iommufd, &bar, qd, transfer, size)?;
            for (dir, all) in ratios.iter_mut() {
                let p = cell.pairs(*dir, size, cli.reps)?;
                let (b, h, r) = (median(&p.bar), median(&p.host), median(&p.ratios));
                all.push(r);
                rows.push((
                    *dir,
                    format!(
                        "| {qd} | {} | {} | {b:.3} | {h:.3} | **{r:.2}** | {:.2}–{:.2} |",
                        human(transfer),
                        human(cell.per_command),
                        min(&p.ratios),
                        max(&p.ratios)
                    ),
                ));
                eprintln!(
                    "{}",
                    serde_json::json!({"direction": label(*dir).0, "qd": qd,
                        "transfer": transfer, "per_command": cell.per_command, "bytes": size,
                        "bar_gbps": b, "host_gbps": h, "ratio": r,
                        "pair_ratios": p.ratios})
                );
            }
        }
    }
    for (dir, _) in &ratios {
        let (_, b, h) = label(*dir);
        println!(
            "| QD | transfer | per command | {b} GB/s | {h} GB/s | BAR / host | pair spread |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        for (_, row) in rows.iter().filter(|(d, _)| d == dir) {
            println!("{row}");
        }
        println!();
    }
    // 4 KiB reads at QD 1: per-command latency into each target, batches alternating.
    let size = (cli.latency_commands * 4096).min(cli.max_bytes);
    let mut cell = Cell::open(cli, &iommufd, &bar, 1, 4096, size)?;
    let p = cell.pairs(Io::Read, size, 4)?;
    let us = |s: &IoStats, q| s.percentile(q).unwrap_or_default().as_secs_f64() * 1e6;
    println!("| 4 KiB reads, QD 1 | p50 µs | p99 µs |");
    println!("|---|---:|---:|");
    println!(
        "| into the BAR | {:.1} | {:.1} |",
        us(&p.bar_stats, 0.5),
        us(&p.bar_stats, 0.99)
    );
    println!(
        "| into host memory | {:.1} | {:.1} |",
        us(&p.host_stats, 0.5),
        us(&p.host_stats, 0.99)
    );
    println!();
    for (dir, r) in &ratios {
        let (name, b, h) = label(*dir);
        println!(
            "{name}: {b} / {h} over {} cells: median {:.2}, min {:.2}, max {:.2}",
            r.len(),
            median(r),
            min(r),
            max(r)
        );
    }
    println!(
        "4 KiB QD 1 read p50 latency BAR / host: {:.2}",
        us(&p.bar_stats, 0.5) / us(&p.host_stats, 0.5).max(f64::MIN_POSITIVE)
    );
    Ok(())
}

fn main() -> ExitCode {
    peerdma_tools::cli::default_sigpipe();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nvme-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
