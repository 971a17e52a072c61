//! `p2pcopy SRC DST`: stream data from one PCI device's BAR to another's, verify every
//! byte, report throughput.
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
use peerdma_tools::p2pcopy::{
    self, CopyError, CopyRequest, EndpointSpec, PathChoice, Progress, RevokeTrigger, Side,
    SpanField, Unavailable,
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
    /// Source device (0000:01:00.0 or 01:00.0).
    src: Bdf,
    /// Destination device.
    dst: Bdf,
    /// The engine device for --engine dma (default: the supported engine bound to
    /// vfio-pci nearest both devices).
    #[arg(long, value_name = "BDF")]
    via: Option<Bdf>,
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
        },
        _ => return None,
    })
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
    let req = CopyRequest {
        src: EndpointSpec {
            bdf: cli.src,
            bar: cli.src_bar,
            offset: cli.src_offset,
        },
        dst: EndpointSpec {
            bdf: cli.dst,
            bar: cli.dst_bar,
            offset: cli.dst_offset,
        },
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
        seed: cli.seed.unwrap_or_else(fresh_seed),
        allow_register_bars: cli.allow_register_bar,
        access: match cli.access {
            Access::Auto => AccessPath::Auto,
            Access::Cdev => AccessPath::Cdev,
            Access::Group => AccessPath::Group,
        },
        revoke_src: match (cli.test_revoke_after_bytes, cli.test_revoke_after_ms) {
            (Some(bytes), _) => Some(RevokeTrigger::AfterBytes(bytes)),
            (None, Some(ms)) => Some(RevokeTrigger::After(Duration::from_millis(ms))),
            (None, None) => None,
        },
    };
    let interactive = std::io::stderr().is_terminal()
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
        && !cli.quiet
        && !cli.json;
    let start = Instant::now();
    let mut bar: Option<ProgressBar> = None;
    let mut on_progress = |p: Progress| {
        if !interactive {
            return;
        }
        // Only copies longer than a second get a bar.
        if bar.is_none() && start.elapsed() > Duration::from_secs(1) {
            let b = ProgressBar::new(p.total);
            b.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar = Some(b);
        }
        if let Some(b) = &bar {
            b.set_position(p.done);
        }
    };
    let result = p2pcopy::run(&req, &mut on_progress);
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
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
