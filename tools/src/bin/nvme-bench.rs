//! `nvme-bench NVME BAR-DEVICE`: the user-space NVMe engine reading into a peer BAR
//! against reading into host memory, on the same controller in the same run, at queue
//! depths 1, 4, 16, 64 and transfer sizes 4 KiB..1 MiB, with the ratio per cell, and the
//! 4 KiB queue-depth-1 read latency (p50/p99) into each.
//!
//! Each cell runs BAR, host, BAR, host, BAR, host (alternating, so drift hits both) and
//! reports the median throughput of each. Timed runs are not verified; one verified run
//! of each target comes first. Prints a Markdown table and one JSON object per cell.
//!
//! In the testbed: `peerdma-testbed run --devices ivshmem,ivshmem,nvme --
//! target/release/nvme-bench 00:12.0 00:11.0`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use peerdma_exporter::Bdf;
use peerdma_importer::engine::nvme::DataPointer;
use peerdma_importer::engine::NvmeOptions;
use peerdma_tools::p2pcopy::{
    self, EndpointSpec, NvmeTarget, StorageReport, StorageRequest, Target,
};
use peerdma_tools::size::human;

#[derive(Parser)]
#[command(
    name = "nvme-bench",
    about = "NVMe → BAR against NVMe → host memory: throughput ratios and 4 KiB latency"
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
    /// Repetitions per target per cell (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    reps: u32,
    /// Commands per 4 KiB latency run.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    latency_commands: u64,
    /// Data pointers: auto (SGLs where offered), prp or sgl.
    #[arg(long, default_value = "auto", value_parser = ["auto", "prp", "sgl"])]
    data_pointer: String,
    /// Most bytes per run (a small BAR, such as an NVMe CMB, needs less than 32 MiB).
    #[arg(long, value_parser = peerdma_tools::size::parse_size, default_value = "64M")]
    max_bytes: u64,
}

fn request(
    cli: &Cli,
    host: bool,
    qd: u32,
    transfer: u64,
    size: u64,
    verify: bool,
) -> StorageRequest {
    let dst = if host {
        Target::Host
    } else {
        Target::Bar(EndpointSpec::whole(cli.bar))
    };
    StorageRequest {
        size: Some(size),
        chunk: size,
        nvme: NvmeOptions {
            queue_depth: qd,
            transfer_size: transfer,
            command_timeout: Duration::from_secs(10),
            data_pointer: match cli.data_pointer.as_str() {
                "prp" => DataPointer::Prp,
                "sgl" => DataPointer::Sgl,
                _ => DataPointer::Auto,
            },
            ..NvmeOptions::default()
        },
        verify,
        ..StorageRequest::new(
            Target::Nvme(NvmeTarget::first_namespace(cli.nvme)),
            dst,
            0x6e76_6d65,
        )
    }
}

fn once(req: &StorageRequest) -> Result<StorageReport> {
    p2pcopy::run_storage(req, &mut |_| {}).with_context(|| format!("{} → {}", req.src, req.dst))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn run(cli: &Cli) -> Result<()> {
    for host in [false, true] {
        let r = once(&request(
            cli,
            host,
            16,
            128 << 10,
            cli.max_bytes.min(16 << 20),
            true,
        ))?;
        anyhow::ensure!(r.verified == Some(true), "verification did not run");
        if !host {
            println!("data pointers: {}\n", r.data_pointer);
        }
    }
    println!("| QD | transfer | per command | NVMe → BAR GB/s | NVMe → host GB/s | BAR / host |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let mut ratios = Vec::new();
    for &qd in &cli.queue_depths {
        for &kib in &cli.transfer_kib {
            let transfer = kib << 10;
            // Enough commands to fill the queue many times: 8 MiB (4 KiB) to 64 MiB.
            let size = (transfer * 2048)
                .clamp(8 << 20, 64 << 20)
                .min(cli.max_bytes);
            if size < transfer {
                continue;
            }
            let (mut bar, mut host) = (Vec::new(), Vec::new());
            let mut per_cmd = 0;
            for _ in 0..cli.reps {
                let b = once(&request(cli, false, qd, transfer, size, false))?;
                let h = once(&request(cli, true, qd, transfer, size, false))?;
                per_cmd = b.transfer_size;
                bar.push(b.gbps);
                host.push(h.gbps);
            }
            let (b, h) = (median(bar), median(host));
            let ratio = if h > 0.0 { b / h } else { 0.0 };
            ratios.push(ratio);
            println!(
                "| {qd} | {} | {} | {b:.3} | {h:.3} | {ratio:.2} |",
                human(transfer),
                human(per_cmd)
            );
            eprintln!(
                "{}",
                serde_json::json!({"qd": qd, "transfer": transfer, "per_command": per_cmd,
                    "bytes": size, "bar_gbps": b, "host_gbps": h, "ratio": ratio})
            );
        }
    }
    let size = (cli.latency_commands * 4096).min(cli.max_bytes);
    let b = once(&request(cli, false, 1, 4096, size, false))?;
    let h = once(&request(cli, true, 1, 4096, size, false))?;
    println!();
    println!("| 4 KiB reads, QD 1 | p50 µs | p99 µs |");
    println!("|---|---:|---:|");
    println!(
        "| into the BAR | {:.1} | {:.1} |",
        b.latency.p50_us, b.latency.p99_us
    );
    println!(
        "| into host memory | {:.1} | {:.1} |",
        h.latency.p50_us, h.latency.p99_us
    );
    println!(
        "\nthroughput ratio BAR / host over {} cells: min {:.2}, median {:.2}; 4 KiB p50 \
         latency ratio BAR / host {:.2}",
        ratios.len(),
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
        median(ratios.clone()),
        b.latency.p50_us / h.latency.p50_us.max(f64::MIN_POSITIVE)
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
