//! `p2pcopy SRC DST`: stream data from one PCI device's BAR to another's, verify every
//! byte, report throughput.
//!
//! SRC and DST name a device's BAR (`0000:00:11.0`), an NVMe namespace
//! (`nvme:0000:00:13.0[/NSID][@LBA]`, read or written by the user-space NVMe engine
//! straight from or into the other side) or `host` (host memory, the baseline for an
//! NVMe copy). A copy with an NVMe side reports IOPS, queue depth, transfer size and
//! latency percentiles too.
//!
//! `--engine` says what moves the bytes: `cpu` (the CPU through the two BARs' VFIO
//! mmaps), `dma` (a DMA engine device, named by `--via`, through an iommufd IOAS;
//! `iommufd` is the old spelling and still accepted), `rdma` (not yet) or `auto`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use peerdma_exporter::{AccessPath, Bdf};
use peerdma_importer::engine::nvme::DataPointer;
use peerdma_importer::engine::NvmeOptions;
use peerdma_tools::p2pcopy::{
    self, CopyError, CopyRequest, EndpointSpec, PathChoice, Progress, RevokeTrigger, Side,
    SpanField, StorageReport, StorageRequest, Target, Unavailable,
};
use peerdma_tools::size::{human, parse_size};

/// What moves the bytes.
#[derive(Clone, Copy, ValueEnum)]
enum Engine {
    /// The CPU, through the two BARs' VFIO mmaps.
    Cpu,
    /// A DMA engine device (--via) through an iommufd IOAS (old spelling: iommufd).
    #[value(alias = "iommufd")]
    Dma,
    /// An RDMA NIC (not supported yet).
    Rdma,
    /// The fastest available (today: cpu).
    Auto,
}

#[derive(Clone, Copy, ValueEnum)]
enum DataPointerArg {
    Auto,
    Prp,
    Sgl,
}

#[derive(Clone, Copy, ValueEnum)]
enum Access {
    Auto,
    Cdev,
    Group,
}

#[derive(Parser)]
#[command(
    name = "p2pcopy",
    version,
    about = "Copy between two PCI devices' BARs (named by BDF), verified, with throughput"
)]
struct Cli {
    /// Source: a device's BAR (0000:01:00.0 or 01:00.0), an NVMe namespace
    /// (nvme:BDF[/NSID][@LBA]) or host.
    src: Target,
    /// Destination: as SRC.
    dst: Target,
    /// The engine device for --engine dma (default: the supported engine bound to
    /// vfio-pci nearest both devices; an NVMe controller, also spelled nvme:BDF, copies
    /// BAR → BAR in two steps through its namespace).
    #[arg(long, value_name = "BDF", value_parser = parse_via)]
    via: Option<Bdf>,
    /// NVMe commands kept in flight.
    #[arg(long, default_value_t = 32)]
    queue_depth: u32,
    /// Bytes per NVMe command (capped by the controller's MDTS).
    #[arg(long, value_parser = parse_size, default_value = "128K")]
    transfer_size: u64,
    /// How NVMe commands point at the data: auto (SGLs where the controller offers
    /// them), prp or sgl.
    #[arg(long, value_enum, default_value = "auto")]
    data_pointer: DataPointerArg,
    /// Source BAR (default: the largest exportable memory BAR).
    #[arg(long)]
    src_bar: Option<u32>,
    /// Destination BAR (default: the largest exportable memory BAR).
    #[arg(long)]
    dst_bar: Option<u32>,
    /// Offset into the source BAR (page-aligned; 4K/2M/1G suffixes and hex accepted).
    #[arg(long, value_parser = parse_size, default_value = "0")]
    src_offset: u64,
    /// Offset into the destination BAR.
    #[arg(long, value_parser = parse_size, default_value = "0")]
    dst_offset: u64,
    /// Bytes to copy (default: all that fits both BARs past the offsets).
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// Bytes per step.
    #[arg(long, value_parser = parse_size, default_value = "1M")]
    chunk: u64,
    /// Copy the span this many times.
    #[arg(long, default_value_t = 1)]
    iterations: u32,
    /// What moves the bytes: cpu, dma (a DMA engine device through iommufd; old
    /// spelling: iommufd), rdma, or auto.
    #[arg(long, value_enum, default_value = "auto")]
    engine: Engine,
    /// Fill the source with a seeded pattern and check every destination byte (default).
    #[arg(long, overrides_with = "no_verify")]
    verify: bool,
    /// Skip the pattern fill and check.
    #[arg(long)]
    no_verify: bool,
    /// Pattern seed (default: a new one each run, so a destination that already holds
    /// an earlier run's bytes cannot pass; the report names the seed used).
    #[arg(long)]
    seed: Option<u64>,
    /// Allow a BAR that looks like registers (not prefetchable, a DMA engine's register
    /// BAR, MSI-X pages) as SRC or DST: only for a BAR you know is plain memory.
    #[arg(long)]
    allow_register_bar: bool,
    /// VFIO access path.
    #[arg(long, value_enum, default_value = "auto")]
    access: Access,
    /// One JSON object on stdout instead of the human summary.
    #[arg(long)]
    json: bool,
    /// No progress bar, no summary (exit status only; errors still go to stderr).
    #[arg(long)]
    quiet: bool,
    /// Test hook: turn the source's memory decode off this many ms into the copy.
    #[arg(long, hide = true)]
    test_revoke_after_ms: Option<u64>,
    /// Test hook: turn the source's memory decode off once this many bytes are copied.
    #[arg(long, hide = true, value_parser = parse_size)]
    test_revoke_after_bytes: Option<u64>,
}

/// `--via`: a BDF, or `nvme:BDF`.
fn parse_via(s: &str) -> Result<Bdf, String> {
    s.strip_prefix("nvme:")
        .unwrap_or(s)
        .parse::<Bdf>()
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    peerdma_tools::cli::default_sigpipe();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(status) = peerdma_tools::install::handle_generate_flags::<Cli>(&args) {
        return ExitCode::from(status as u8);
    }
    let cli = match Cli::from_arg_matches(
        &Cli::command()
            .long_version(peerdma_tools::install::long_version())
            .get_matches_from(args),
    ) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if cli.json {
                println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            }
            eprintln!("p2pcopy: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A throughput in the unit that suits it.
fn rate(gbps: f64) -> String {
    if gbps >= 0.1 {
        format!("{gbps:.3} GB/s")
    } else if gbps * 1e3 >= 0.1 {
        format!("{:.2} MB/s", gbps * 1e3)
    } else {
        format!("{:.2} KB/s", gbps * 1e6)
    }
}

/// The flags that carry out a library error's fix.
fn advice(e: &CopyError) -> Option<String> {
    let side = |s: &Side| match s {
        Side::Src => "src",
        Side::Dst => "dst",
    };
    Some(match e {
        CopyError::BarTooSmall { side: s, .. } => {
            let s = side(s);
            format!("lower --size or --{s}-offset, or pick a larger BAR with --{s}-bar")
        }
        CopyError::BarUnusable { .. } | CopyError::NoUsableBar { .. } => {
            "leave out --src-bar/--dst-bar to use the largest usable BAR".to_string()
        }
        CopyError::Unaligned { field, .. } => match field {
            SpanField::SrcOffset => "--src-offset",
            SpanField::DstOffset => "--dst-offset",
            SpanField::Size => "--size",
        }
        .to_string(),
        CopyError::ZeroSize => "--size is 0; give e.g. --size 1M".to_string(),
        CopyError::RegisterBar { side: s, .. } => format!(
            "pick another BAR with --{}-bar, or --allow-register-bar if it is plain memory",
            side(s)
        ),
        CopyError::ZeroIterations => "give --iterations 1 or more".to_string(),
        CopyError::PathUnavailable { why, .. } => match why {
            Unavailable::NoIommufd => "use --engine cpu".to_string(),
            Unavailable::EngineIsEndpoint { engine } => {
                format!("--via {engine} is also SRC or DST; name another device with --via")
            }
            Unavailable::NoEngine => {
                "bind one to vfio-pci and name it with --via BDF, or use --engine cpu".to_string()
            }
            Unavailable::RdmaNotYet => "use --engine cpu or --engine dma".to_string(),
            Unavailable::NvmeNeedsIommufd => return None,
        },
        _ => return None,
    })
}

/// A side with the BAR flags applied.
fn with_bar(t: &Target, bar: Option<u32>, offset: u64) -> Target {
    match t {
        Target::Bar(spec) => Target::Bar(EndpointSpec {
            bdf: spec.bdf,
            bar,
            offset,
        }),
        other => other.clone(),
    }
}

/// A seed no earlier run is likely to have used: the clock's nanoseconds mixed with
/// the process id.
fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ u64::from(std::process::id()).rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn run(cli: &Cli) -> Result<()> {
    let seed = cli.seed.unwrap_or_else(fresh_seed);
    let src = with_bar(&cli.src, cli.src_bar, cli.src_offset);
    let dst = with_bar(&cli.dst, cli.dst_bar, cli.dst_offset);
    let revoke = match (cli.test_revoke_after_bytes, cli.test_revoke_after_ms) {
        (Some(bytes), _) => Some(RevokeTrigger::AfterBytes(bytes)),
        (None, Some(ms)) => Some(RevokeTrigger::After(Duration::from_millis(ms))),
        (None, None) => None,
    };
    let (src_spec, dst_spec) = match (src.bar(), dst.bar()) {
        (Some(s), Some(d)) => (s.clone(), d.clone()),
        _ if p2pcopy::is_storage(&src, &dst) => {
            if matches!(cli.engine, Engine::Cpu | Engine::Rdma) {
                anyhow::bail!(
                    "an NVMe side is read and written by the NVMe controller's own DMA, not \
                     the CPU or a NIC (p2pcopy: use --engine auto or --engine dma)"
                );
            }
            let req = StorageRequest {
                src,
                dst,
                size: cli.size,
                chunk: cli.chunk,
                iterations: cli.iterations,
                nvme: NvmeOptions {
                    queue_depth: cli.queue_depth,
                    transfer_size: cli.transfer_size,
                    data_pointer: match cli.data_pointer {
                        DataPointerArg::Auto => DataPointer::Auto,
                        DataPointerArg::Prp => DataPointer::Prp,
                        DataPointerArg::Sgl => DataPointer::Sgl,
                    },
                    ..NvmeOptions::default()
                },
                verify: !cli.no_verify,
                seed,
                allow_register_bars: cli.allow_register_bar,
                access: access_path(cli.access),
                revoke_bar: revoke,
            };
            return run_storage(cli, &req);
        }
        _ => anyhow::bail!(
            "cannot copy {} → {}: host memory pairs with an nvme: side only (p2pcopy: name \
             two devices, or an nvme: namespace and a device or host)",
            cli.src,
            cli.dst
        ),
    };
    let req = CopyRequest {
        src: src_spec,
        dst: dst_spec,
        size: cli.size,
        chunk: cli.chunk,
        iterations: cli.iterations,
        path: match cli.engine {
            Engine::Cpu => PathChoice::CpuMmap,
            Engine::Dma => PathChoice::Dma { engine: cli.via },
            Engine::Rdma => PathChoice::Rdma,
            Engine::Auto => PathChoice::Auto,
        },
        verify: !cli.no_verify,
        seed,
        allow_register_bars: cli.allow_register_bar,
        access: access_path(cli.access),
        revoke_src: revoke,
    };
    let mut bar = Bar::new(cli);
    let result = p2pcopy::run(&req, &mut |p| bar.update(p));
    bar.finish();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            return Err(match advice(&e) {
                Some(flags) => anyhow::anyhow!("{:#} (p2pcopy: {flags})", anyhow::Error::from(e)),
                None => e.into(),
            })
        }
    };
    if cli.json {
        println!("{}", serde_json::to_string(&report)?);
    } else if !cli.quiet {
        println!(
            "copied {} × {} from {} BAR{}+{:#x} to {} BAR{}+{:#x} {} in {:.3} s: {}{}",
            human(report.bytes),
            report.iterations,
            report.src.bdf,
            report.src.bar,
            report.src.offset,
            report.dst.bdf,
            report.dst.bar,
            report.dst.offset,
            match &report.via {
                Some(engine) => format!("by DMA engine {engine} through iommufd"),
                None => "by the CPU through the VFIO mmaps".to_string(),
            },
            report.seconds,
            rate(report.gbps),
            match (report.verified, report.seed) {
                (Some(true), Some(seed)) =>
                    format!(", every byte verified (destination poisoned first, seed {seed:#x})"),
                _ => " (not verified)".to_string(),
            }
        );
        println!("engine: {}", report.engine_reason);
        println!("route: {}", report.route.summary);
        let d = &report.route.devices;
        println!(
            "  {} → {}: {} ({})",
            d.provider, d.client, d.verdict, d.route
        );
        for h in &report.route.engine_hops {
            println!(
                "  engine {} ↔ {}: {} ({})",
                h.client, h.provider, h.verdict, h.route
            );
        }
        for m in &report.route.ioas_mappings {
            println!(
                "  IOAS: {} {} BAR{}+{:#x} at IOVA {:#x}, {} bytes",
                m.side, m.bdf, m.bar, m.offset, m.iova, m.length
            );
        }
    }
    Ok(())
}

fn access_path(a: Access) -> AccessPath {
    match a {
        Access::Auto => AccessPath::Auto,
        Access::Cdev => AccessPath::Cdev,
        Access::Group => AccessPath::Group,
    }
}

/// The progress bar: shown on a terminal for copies longer than a second.
struct Bar {
    interactive: bool,
    start: Instant,
    bar: Option<ProgressBar>,
}

impl Bar {
    fn new(cli: &Cli) -> Bar {
        Bar {
            interactive: std::io::stderr().is_terminal()
                && std::env::var("TERM").map_or(true, |t| t != "dumb")
                && !cli.quiet
                && !cli.json,
            start: Instant::now(),
            bar: None,
        }
    }

    fn update(&mut self, p: Progress) {
        if !self.interactive {
            return;
        }
        if self.bar.is_none() && self.start.elapsed() > Duration::from_secs(1) {
            let b = ProgressBar::new(p.total);
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            self.bar = Some(b);
        }
        if let Some(b) = &self.bar {
            b.set_position(p.done);
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

fn run_storage(cli: &Cli, req: &StorageRequest) -> Result<()> {
    let mut bar = Bar::new(cli);
    let result = p2pcopy::run_storage(req, &mut |p| bar.update(p));
    bar.finish();
    let r: StorageReport = match result {
        Ok(r) => r,
        Err(e) => {
            return Err(match advice(&e) {
                Some(flags) => anyhow::anyhow!("{:#} (p2pcopy: {flags})", anyhow::Error::from(e)),
                None => e.into(),
            })
        }
    };
    if cli.json {
        println!("{}", serde_json::to_string(&r)?);
    } else if !cli.quiet {
        println!(
            "copied {} × {} from {} to {} by NVMe {} in {:.3} s: {}, {:.0} IOPS, QD {}, {} per \
             command, latency p50 {:.1} µs p99 {:.1} µs{}",
            human(r.bytes),
            r.iterations,
            cli.src,
            cli.dst,
            r.via,
            r.seconds,
            rate(r.gbps),
            r.iops,
            r.queue_depth,
            human(r.transfer_size),
            r.latency.p50_us,
            r.latency.p99_us,
            match r.verified {
                Some(true) => format!(
                    ", every byte verified (destination poisoned first, seed {:#x})",
                    r.seed
                ),
                _ => " (not verified)".to_string(),
            }
        );
        println!("engine: {}", r.engine_reason);
        match &r.route {
            Some(route) => println!("route: {}", route.summary),
            None => println!(
                "route: not peer to peer: the controller moved the bytes to or from host memory \
                 (the baseline)"
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_fixes_get_the_flags_that_carry_them_out() {
        let unaligned = CopyError::Unaligned {
            field: SpanField::DstOffset,
            value: 0x123,
            page: 4096,
            suggestions: vec![0, 4096],
        };
        assert_eq!(advice(&unaligned).as_deref(), Some("--dst-offset"));
        let via = CopyError::PathUnavailable {
            path: "dma",
            why: Unavailable::EngineIsEndpoint {
                engine: "00:11.0".parse().unwrap(),
            },
        };
        assert!(advice(&via)
            .unwrap()
            .contains("--via 0000:00:11.0 is also SRC or DST"));
        let no_iommufd = CopyError::PathUnavailable {
            path: "dma",
            why: Unavailable::NoIommufd,
        };
        assert_eq!(advice(&no_iommufd).as_deref(), Some("use --engine cpu"));
        let small = CopyError::BarTooSmall {
            bdf: "00:10.0".parse().unwrap(),
            side: Side::Src,
            bar: 2,
            bar_size: 1 << 20,
            offset: 0,
            size: 2 << 20,
        };
        assert!(advice(&small).unwrap().contains("--src-bar"));
        assert!(advice(&CopyError::Mismatch { first: 0, count: 1 }).is_none());
    }

    #[test]
    fn iommufd_is_still_accepted_as_the_dma_engine() {
        let cli =
            Cli::try_parse_from(["p2pcopy", "00:10.0", "00:11.0", "--engine", "iommufd"]).unwrap();
        assert!(matches!(cli.engine, Engine::Dma));
        let cli = Cli::try_parse_from(["p2pcopy", "00:10.0", "00:11.0"]).unwrap();
        assert!(matches!(cli.engine, Engine::Auto));
    }
}
