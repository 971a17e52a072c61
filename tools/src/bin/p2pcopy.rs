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
//! `iommufd` is the old spelling and still accepted), `rdma` or `auto`.
//!
//! RDMA (built with the `rdma` feature): `p2pcopy --serve [--listen ADDR:PORT] DST` on
//! the receiving host (DST a BDF or `host`), `p2pcopy SRC rdma://HOST:PORT` on the
//! sending one (SRC a BDF or `host`). The receiver checks every byte and both print
//! throughput; a side that goes through host memory is reported as NOT peer-to-peer.

use std::fmt;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use peerdma_copy::{
    self, CopyError, CopyReport, CopyRequest, EndpointSpec, PathChoice, Progress, Side, SpanField,
    StorageReport, StorageRequest, Target, Unavailable,
};
use peerdma_exporter::{AccessPath, Bdf};
use peerdma_importer::engine::nvme::DataPointer;
use peerdma_importer::engine::NvmeOptions;
use peerdma_tools::failure::{usage, Failure};
use peerdma_tools::size::{human, parse_size};

/// What moves the bytes.
#[derive(Clone, Copy, ValueEnum)]
enum Engine {
    /// The CPU, through the two BARs' VFIO mmaps.
    Cpu,
    /// A DMA engine device (--via) through an iommufd IOAS (old spelling: iommufd).
    #[value(alias = "iommufd")]
    Dma,
    /// An RDMA NIC, towards a peer named rdma://HOST:PORT (the peer runs --serve).
    #[cfg_attr(
        not(feature = "rdma"),
        value(help = "An RDMA NIC [not built in: cargo install --path tools --features rdma]")
    )]
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

/// One end as the command line names it: a local target, or a receiver over RDMA.
#[derive(Clone, Debug)]
enum End {
    /// A device's BAR, an NVMe namespace or host memory.
    Local(Target),
    /// A receiver over RDMA: rdma://HOST:PORT.
    Remote(String),
}

impl FromStr for End {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("rdma://") {
            Ok(End::Remote(s.to_string()))
        } else {
            s.parse::<Target>()
                .map(End::Local)
                .map_err(|e| format!("{e}; or, as DST, a receiver over RDMA: rdma://HOST:PORT"))
        }
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Local(t) => t.fmt(f),
            End::Remote(r) => f.write_str(r),
        }
    }
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
    about = "Copy between two PCI devices' BARs (named by BDF), verified, with throughput",
    after_help = "Also, as the only arguments: --completions SHELL prints a completion script \
                  (bash, zsh, fish, elvish, powershell); --man prints the man page, --man DIR \
                  writes it into DIR.\n\nExit status: 0 verified (or not asked to), 1 the bytes \
                  differ, 2 usage, 3 could not run. Under --json every outcome is one JSON \
                  object on stdout; a failure is {\"error\":{\"kind\",\"message\",\"fix\"}, ...}."
)]
struct Cli {
    /// Source: a device's BAR (0000:01:00.0 or 01:00.0), an NVMe namespace
    /// (nvme:BDF[/NSID][@LBA]) or host. With --serve: the destination (a BAR or host).
    src: End,
    /// Destination: as SRC, or a receiver over RDMA (rdma://HOST:PORT).
    #[arg(required_unless_present = "serve")]
    dst: Option<End>,
    /// Receive over RDMA: expose the one target named, wait for one sender, check every
    /// byte.
    #[arg(long)]
    #[cfg_attr(
        not(feature = "rdma"),
        arg(help = "Receive over RDMA [not built in: cargo install --path tools --features rdma]")
    )]
    serve: bool,
    /// Address and port the receiver listens on (an address of the RDMA device's netdev).
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:18520")]
    listen: std::net::SocketAddr,
    /// RDMA: queue pairs to stream over (1 to 16).
    #[arg(long, default_value_t = 1, value_parser = parse_qps)]
    qps: u8,
    /// RDMA: WRITEs in flight per queue pair (each --chunk bytes).
    #[arg(long, default_value_t = 16)]
    depth: u32,
    /// RDMA: seconds the peer may take to connect, answer or finish (with --serve, given:
    /// also how long to wait for the first sender; without it the receiver waits for one).
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// The engine device for --engine dma (default: the supported engine bound to
    /// vfio-pci nearest both devices; an NVMe controller, also spelled nvme:BDF, copies
    /// BAR → BAR in two steps through its namespace).
    #[arg(long, value_name = "BDF", value_parser = parse_via)]
    via: Option<Bdf>,
    /// NVMe commands kept in flight (default 32, or fewer where the controller's queues
    /// are smaller: CAP.MQES).
    #[arg(long, default_value_t = 32, value_parser = parse_queue_depth)]
    queue_depth: u32,
    /// Bytes per NVMe command (capped by the controller's MDTS).
    #[arg(long, value_parser = parse_size, default_value = "128K")]
    transfer_size: u64,
    /// How NVMe commands point at the data: auto (SGLs where the controller offers
    /// them), prp or sgl.
    #[arg(long, value_enum, default_value = "auto")]
    data_pointer: DataPointerArg,
    /// Source BAR (default: the largest exportable memory BAR).
    #[arg(long, value_parser = peerdma_tools::args::parse_bar)]
    src_bar: Option<u32>,
    /// Destination BAR (default: the largest exportable memory BAR).
    #[arg(long, value_parser = peerdma_tools::args::parse_bar)]
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
    /// Bytes per step (1 or more; over RDMA, bytes per WRITE).
    #[arg(long, value_parser = parse_chunk, default_value = "1M")]
    chunk: u64,
    /// Copy the span this many times.
    #[arg(long, default_value_t = 1)]
    iterations: u32,
    /// What moves the bytes: cpu, dma (a DMA engine device through iommufd; old
    /// spelling: iommufd), rdma, or auto.
    #[arg(long, value_enum, default_value = "auto")]
    engine: Engine,
    /// Fill the source with a seeded pattern and check every destination byte (default).
    #[arg(long, conflicts_with = "no_verify")]
    verify: bool,
    /// Skip the pattern fill and check.
    #[arg(long)]
    no_verify: bool,
    /// Pattern seed (default: a new one each run, so a destination that already holds
    /// an earlier run's bytes cannot pass; the report names the seed used).
    #[arg(long, conflicts_with = "no_verify")]
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
    /// The long explanations in full (why a side is not peer to peer, each hop of the
    /// route); without it each is said once, short.
    #[arg(long, short = 'v')]
    verbose: bool,
    /// Test hook (feature `testing` only): turn the source's (on a storage copy: the
    /// BAR side's) memory decode off this many ms into the copy.
    #[cfg(feature = "testing")]
    #[arg(long, hide = true)]
    test_revoke_after_ms: Option<u64>,
    /// Test hook (feature `testing` only): turn the source's (on a storage copy: the
    /// BAR side's) memory decode off once this many bytes are copied.
    #[cfg(feature = "testing")]
    #[arg(long, hide = true, value_parser = parse_size)]
    test_revoke_after_bytes: Option<u64>,
    /// The flags of [`SCOPED_FLAGS`] given on the command line (not defaulted).
    #[arg(skip)]
    given: Vec<&'static str>,
    /// The pattern seed the copy used (given or drawn), once it is known.
    #[arg(skip)]
    used_seed: std::cell::OnceCell<u64>,
}

/// What kind of copy the command line asks for: the flags that apply differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CopyKind {
    /// Both ends here, one of them an NVMe namespace.
    Nvme,
    /// Both ends here, neither an NVMe namespace.
    Local,
    /// The receiving end of an RDMA copy (--serve).
    Serve,
    /// The sending end of an RDMA copy (DST rdma://HOST:PORT).
    Send,
}

/// Flags that only some kinds of copy use: (clap id, spelling, the kinds it applies to,
/// those kinds in words).
const SCOPED_FLAGS: &[(&str, &str, &[CopyKind], &str)] = &[
    (
        "via",
        "--via",
        &[CopyKind::Local],
        "a copy between two BARs on this host (on a copy with an nvme: side that \
         namespace's controller is the engine; over RDMA the NICs move the bytes)",
    ),
    ("queue_depth", "--queue-depth", &[CopyKind::Nvme], NVME_ONLY),
    (
        "transfer_size",
        "--transfer-size",
        &[CopyKind::Nvme],
        NVME_ONLY,
    ),
    (
        "data_pointer",
        "--data-pointer",
        &[CopyKind::Nvme],
        NVME_ONLY,
    ),
    (
        "qps",
        "--qps",
        &[CopyKind::Send],
        "the sending end of an RDMA copy (DST rdma://HOST:PORT)",
    ),
    (
        "depth",
        "--depth",
        &[CopyKind::Send],
        "the sending end of an RDMA copy (DST rdma://HOST:PORT)",
    ),
    (
        "listen",
        "--listen",
        &[CopyKind::Serve],
        "the receiving end of an RDMA copy (--serve)",
    ),
    (
        "timeout",
        "--timeout",
        &[CopyKind::Serve, CopyKind::Send],
        "an RDMA copy (--serve, or DST rdma://HOST:PORT)",
    ),
    ("size", "--size", SENDS, SENDING),
    ("chunk", "--chunk", SENDS, SENDING),
    ("seed", "--seed", SENDS, SENDING),
    (
        "iterations",
        "--iterations",
        &[CopyKind::Local, CopyKind::Nvme],
        "a copy on this host (an RDMA copy sends its span once)",
    ),
    (
        "no_verify",
        "--no-verify",
        &[CopyKind::Local, CopyKind::Nvme],
        "a copy on this host (over RDMA the receiver always checks every byte)",
    ),
    (
        "verify",
        "--verify",
        &[CopyKind::Local, CopyKind::Nvme],
        "a copy on this host (over RDMA the receiver always checks every byte)",
    ),
];

/// The kinds of copy that send bytes they chose (the receiver of an RDMA copy takes
/// the sender's size, chunk and pattern).
const SENDS: &[CopyKind] = &[CopyKind::Local, CopyKind::Nvme, CopyKind::Send];
const SENDING: &str = "the sending side: on --serve the sender's choice is used";

const NVME_ONLY: &str = "NVMe endpoints: a copy with an nvme:BDF[/NSID][@LBA] side (a BAR → BAR \
                         copy through an NVMe engine named by --via runs the engine with its \
                         defaults)";

/// The scoped flags the user gave (not defaulted), by clap id.
fn given_flags(m: &ArgMatches) -> Vec<&'static str> {
    SCOPED_FLAGS
        .iter()
        .filter(|(id, ..)| m.value_source(id) == Some(ValueSource::CommandLine))
        .map(|(id, ..)| *id)
        .collect()
}

/// Refuses a flag given on a copy it does not apply to (it would be ignored silently).
fn check_flags(given: &[&str], kind: CopyKind) -> Result<()> {
    for (id, flag, kinds, words) in SCOPED_FLAGS {
        if given.contains(id) && !kinds.contains(&kind) {
            return Err(usage(
                "flag_not_applicable",
                format!(
                    "{flag} only applies to {words}; this copy is {}",
                    match kind {
                        CopyKind::Nvme => "a copy with an NVMe side",
                        CopyKind::Local => "between BARs on this host, with no NVMe side",
                        CopyKind::Serve => "the receiving end of an RDMA copy",
                        CopyKind::Send => "the sending end of an RDMA copy",
                    }
                ),
                Some(&format!("leave {flag} out")),
            ));
        }
    }
    Ok(())
}

/// `--chunk`: a size of 1 byte or more.
fn parse_chunk(s: &str) -> Result<u64, String> {
    match parse_size(s).map_err(|e| e.to_string())? {
        0 => Err(
            "a chunk of 0 bytes would never move a byte; give 1 or more, e.g. 1M (the \
                  default)"
                .to_string(),
        ),
        n => Ok(n),
    }
}

/// `--queue-depth`: 1 or more commands in flight.
fn parse_queue_depth(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(0) => Err("0 commands in flight would move no byte; give 1 or more (default 32)".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("give a number of commands in flight, 1 or more (default 32)".into()),
    }
}

/// `--qps`: 1 to 16 queue pairs.
fn parse_qps(s: &str) -> Result<u8, String> {
    match s.trim().parse::<u8>() {
        Ok(n @ 1..=16) => Ok(n),
        Ok(0) => Err("0 queue pairs would move no byte; give 1 to 16 (default 1)".to_string()),
        _ => Err("give a number of queue pairs from 1 to 16 (default 1)".to_string()),
    }
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
    let json = args.iter().any(|a| a == "--json");
    let matches = match Cli::command()
        .long_version(peerdma_tools::install::long_version())
        .try_get_matches_from(&args)
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)))
    {
        Ok(m) => m,
        Err(e) => return peerdma_tools::failure::clap_exit(e, json),
    };
    let (mut cli, matches) = matches;
    cli.given = given_flags(&matches);
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failure(&cli, &e).report("p2pcopy", cli.json).into(),
    }
}

/// The failure `e` as p2pcopy reports it: the fix in its flags where it has them, and
/// what the copy had done (sides, seed, bytes, the mismatch).
fn failure(cli: &Cli, e: &anyhow::Error) -> Failure {
    let mut f = Failure::from_error(e);
    f = f.with("src", cli.src.to_string());
    if let Some(dst) = &cli.dst {
        f = f.with("dst", dst.to_string());
    }
    let Some(c) = e.downcast_ref::<CopyError>() else {
        return f;
    };
    if let Some(flags) = advice(c, f.fix.as_deref()) {
        f.fix = Some(flags);
    }
    let mut c = c;
    if let CopyError::DmaFaulted { outcome, .. } = c {
        c = outcome;
    }
    match c {
        CopyError::Mismatch { first, count, .. } | CopyError::PeerMismatch { first, count, .. } => {
            let detail = match c {
                CopyError::Mismatch { detail, .. } => detail.as_deref(),
                _ => None,
            };
            if let Some(seed) = cli.used_seed.get() {
                // The library's message names the seed where its detail has it.
                if detail.and_then(|d| d.seed).is_none() {
                    f.message.push_str(&format!(" (pattern seed {seed})"));
                }
                f = f.with("seed", *seed);
            }
            let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
            f = f.with("verified", false).with(
                "mismatch",
                serde_json::json!({
                    "first_offset": first,
                    "count": count,
                    "expected": detail.map(|d| hex(&d.expected)),
                    "actual": detail.map(|d| hex(&d.actual)),
                    "expected_from": detail.map(|d| if d.seed.is_some() {
                        "pattern"
                    } else {
                        "namespace-read-back"
                    }),
                }),
            );
        }
        CopyError::FaultedAfterAll { .. } => {
            f = f.with("verified", false);
            if let Some(seed) = cli.used_seed.get() {
                f = f.with("seed", *seed);
            }
        }
        CopyError::Revoked {
            done, total, bdf, ..
        } => {
            f = f
                .with("verified", false)
                .with("revoked", bdf.to_string())
                .with("bytes_done", *done)
                .with("bytes_total", *total);
            if let Some(seed) = cli.used_seed.get() {
                f = f.with("seed", *seed);
            }
        }
        _ => {}
    }
    f
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

/// The fix of a library error in p2pcopy's flags (`fix` is the library's own, in its
/// words), said once; `None` where the library's fix needs no flag.
fn advice(e: &CopyError, fix: Option<&str>) -> Option<String> {
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
        CopyError::Unaligned { field, .. } => {
            let flag = match field {
                SpanField::SrcOffset => "--src-offset",
                SpanField::DstOffset => "--dst-offset",
                SpanField::Size => "--size",
            };
            match fix {
                Some(fix) => format!("{flag}: {fix}"),
                None => flag.to_string(),
            }
        }
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
            Unavailable::RdmaNeedsPeer => {
                "run `p2pcopy --serve DST` on the receiving side and give rdma://HOST:PORT as DST, \
                 or use --engine cpu or --engine dma"
                    .to_string()
            }
            Unavailable::RdmaNotBuilt => {
                "reinstall with `cargo install --path tools --features rdma` (needs \
                 libibverbs-dev and librdmacm-dev)"
                    .to_string()
            }
            Unavailable::RemoteNeedsRdma => "use --engine rdma (or auto)".to_string(),
            Unavailable::NvmeNeedsIommufd => return None,
        },
        _ => return None,
    })
}

/// A side with the BAR flags applied.
fn with_bar(t: &Target, bar: Option<u32>, offset: u64, side: &str) -> Result<Target> {
    check_bar_flags(t, bar, offset, side)?;
    Ok(match t {
        Target::Bar(spec) => Target::Bar(EndpointSpec {
            bdf: spec.bdf,
            bar,
            offset,
        }),
        other => other.clone(),
    })
}

/// Refuses `--{side}-bar` / `--{side}-offset` for a side that is no BAR (they would be
/// ignored silently).
fn check_bar_flags(t: &Target, bar: Option<u32>, offset: u64, side: &str) -> Result<()> {
    let flag = match (bar, offset) {
        (Some(_), _) => format!("--{side}-bar"),
        (None, 0) => return Ok(()),
        (None, _) => format!("--{side}-offset"),
    };
    let how = match t {
        Target::Bar(_) => return Ok(()),
        Target::Nvme(_) => "an NVMe namespace: its start is the LBA, nvme:BDF[/NSID]@LBA",
        Target::Host => "host memory, allocated for the copy",
    };
    Err(usage(
        "flag_not_applicable",
        format!(
            "{flag} applies to a BAR side, but {} {t} is {how}",
            side.to_uppercase()
        ),
        Some(&format!("leave {flag} out")),
    ))
}

/// What the kernel log said about the engine's DMA during the copy.
fn iommu_line(faults: Option<u64>) -> String {
    match faults {
        Some(0) => "IOMMU: no fault logged for the engine during the copy".to_string(),
        Some(n) => format!(
            "IOMMU: warning: the kernel logged {n} fault(s) for the engine during the copy \
             (see dmesg), though every check passed"
        ),
        None => "IOMMU: faults not checked: the kernel log (/dev/kmsg) is unreadable here \
                 (CAP_SYSLOG needed under kernel.dmesg_restrict=1)"
            .to_string(),
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

/// A library error kept typed, so that the report can give its kind and its fix in
/// p2pcopy's flags ([`failure`]).
fn with_advice(e: CopyError) -> anyhow::Error {
    e.into()
}

fn run(cli: &Cli) -> Result<()> {
    let nvme = |e: Option<&End>| matches!(e, Some(End::Local(Target::Nvme(_))));
    let kind = match (cli.serve, &cli.dst) {
        (true, _) => CopyKind::Serve,
        (false, Some(End::Remote(_))) => CopyKind::Send,
        (false, dst) if nvme(Some(&cli.src)) || nvme(dst.as_ref()) => CopyKind::Nvme,
        (false, _) => CopyKind::Local,
    };
    check_flags(&cli.given, kind)?;
    let (src, dst) = match (cli.serve, &cli.src, &cli.dst) {
        (true, End::Local(dst), None) => return rdma_cli::serve(cli, dst),
        (true, _, _) => {
            return Err(usage(
                "wrong_number_of_values",
                "--serve takes one target, the destination",
                Some("give one BDF or `host` after --serve"),
            ))
        }
        (false, End::Local(src), Some(End::Remote(peer))) => return rdma_cli::send(cli, src, peer),
        (false, End::Local(src), Some(End::Local(dst))) => (src, dst),
        (false, End::Remote(r), _) => {
            return Err(usage(
                "remote_source",
                format!("{r} names a receiver over RDMA: it can only be DST"),
                Some("the receiving host runs `p2pcopy --serve DST`; give rdma://HOST:PORT as DST"),
            ))
        }
        (false, _, None) => {
            return Err(usage(
                "missing_argument",
                "DST is missing",
                Some("give SRC and DST (or --serve DST to receive over RDMA)"),
            ))
        }
    };
    let seed = *cli
        .used_seed
        .get_or_init(|| cli.seed.unwrap_or_else(fresh_seed));
    let src = with_bar(src, cli.src_bar, cli.src_offset, "src")?;
    let dst = with_bar(dst, cli.dst_bar, cli.dst_offset, "dst")?;
    let (src_spec, dst_spec) = match (src.bar(), dst.bar()) {
        (Some(s), Some(d)) => (s.clone(), d.clone()),
        _ if peerdma_copy::is_storage(&src, &dst) => {
            if matches!(cli.engine, Engine::Cpu | Engine::Rdma) {
                return Err(usage(
                    "engine_not_applicable",
                    "an NVMe side is read and written by the NVMe controller's own DMA, not \
                     the CPU or a NIC",
                    Some("use --engine auto or --engine dma"),
                ));
            }
            let req = StorageRequest {
                src,
                dst,
                size: cli.size,
                chunk: cli.chunk,
                iterations: cli.iterations,
                nvme: NvmeOptions {
                    // Not given: the library's default, lowered to the controller's CAP.MQES.
                    queue_depth: if cli.given.contains(&"queue_depth") {
                        cli.queue_depth
                    } else {
                        0
                    },
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
            };
            return run_storage(cli, &req);
        }
        _ => {
            return Err(usage(
                "unsupported_pair",
                format!("cannot copy {src} → {dst}: host memory pairs with an nvme: side only"),
                Some("name two devices, or an nvme: namespace and a device or host"),
            ))
        }
    };
    let req = CopyRequest {
        src: src_spec,
        dst: dst_spec,
        size: cli.size,
        chunk: cli.chunk,
        iterations: cli.iterations,
        path: match (cli.engine, cli.via) {
            (Engine::Cpu | Engine::Rdma, Some(via)) => {
                return Err(usage(
                    "flag_not_applicable",
                    format!(
                        "--via {via} names a DMA engine, but --engine {} does not use one",
                        if matches!(cli.engine, Engine::Cpu) {
                            "cpu"
                        } else {
                            "rdma"
                        }
                    ),
                    Some("leave --via out, or use --engine dma (or auto) with it"),
                ))
            }
            (Engine::Cpu, None) => PathChoice::CpuMmap,
            // Naming an engine asks for the DMA path, also under --engine auto.
            (Engine::Dma | Engine::Auto, Some(via)) => PathChoice::Dma { engine: Some(via) },
            (Engine::Dma, None) => PathChoice::Dma { engine: None },
            (Engine::Rdma, None) => PathChoice::Rdma,
            (Engine::Auto, None) => PathChoice::Auto,
        },
        verify: !cli.no_verify,
        seed,
        allow_register_bars: cli.allow_register_bar,
        access: access_path(cli.access),
    };
    let mut bar = Bar::new(cli);
    let started = Instant::now();
    let result = copy(cli, &req, &mut |p| bar.update(p));
    let wall = started.elapsed().as_secs_f64();
    bar.finish();
    let report = result.map_err(with_advice)?;
    if cli.json {
        println!("{}", one_schema(serde_json::to_value(&report)?, wall));
    } else if !cli.quiet {
        println!(
            "copied {} × {} from {} BAR{}+{:#x} to {} BAR{}+{:#x} {} in {}: {}{}",
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
            timing(report.seconds, wall),
            rate(report.gbps),
            match (report.verified, report.seed) {
                (Some(true), Some(seed)) =>
                    format!(", every byte verified (destination poisoned first, seed {seed:#x})"),
                _ => " (not verified)".to_string(),
            }
        );
        println!("engine: {}", report.engine_reason);
        if report.via.is_some() {
            println!("{}", iommu_line(report.iommu_faults));
        }
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

/// The time a summary gives: the copy alone (what the rate is computed from), and the
/// whole command's when filling, checking and opening took noticeably longer.
fn timing(copy: f64, wall: f64) -> String {
    if wall >= copy * 1.5 && wall - copy >= 0.05 {
        format!("{copy:.3} s of copying ({wall:.3} s in all, with opening, fill and check)")
    } else {
        format!("{copy:.3} s")
    }
}

/// Every copy report in one schema: the keys of a BAR → BAR report and of a report
/// with an NVMe or host side are the same (the ones a kind does not have are null),
/// each side has its `kind` (`bar`, `nvme`, `host`), and `wall_seconds` is the whole
/// command's time beside `seconds`, the copy's (fill and verify excluded).
fn one_schema(mut v: serde_json::Value, wall: f64) -> serde_json::Value {
    use serde_json::Value;
    const KEYS: &[&str] = &[
        "src",
        "dst",
        "engine",
        "path",
        "importer",
        "engine_reason",
        "via",
        "bytes",
        "iterations",
        "seconds",
        "wall_seconds",
        "gbps",
        "verified",
        "seed",
        "iommu_faults",
        "route",
        "iops",
        "queue_depth",
        "transfer_size",
        "data_pointer",
        "commands",
        "latency",
    ];
    let Value::Object(obj) = &mut v else {
        return v;
    };
    let storage = obj.contains_key("iops");
    for side in ["src", "dst"] {
        if let Some(Value::Object(s)) = obj.get_mut(side) {
            s.entry("kind").or_insert_with(|| "bar".into());
        }
    }
    if storage {
        obj.entry("engine").or_insert_with(|| "nvme".into());
    }
    obj.insert("wall_seconds".into(), wall.into());
    for k in KEYS {
        obj.entry(*k).or_insert(Value::Null);
    }
    v
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

/// The copy, with the test hook the hidden flags ask for where the build has them.
fn copy(
    cli: &Cli,
    req: &CopyRequest,
    progress: &mut dyn FnMut(Progress),
) -> Result<CopyReport, CopyError> {
    #[cfg(feature = "testing")]
    return peerdma_copy::testing::run(req, progress, &test_hooks(cli, Side::Src));
    #[cfg(not(feature = "testing"))]
    return {
        let _ = cli;
        peerdma_copy::run(req, progress)
    };
}

/// The storage copy, with the test hook the hidden flags ask for (on the BAR side) where
/// the build has them.
fn copy_storage(
    cli: &Cli,
    req: &StorageRequest,
    progress: &mut dyn FnMut(Progress),
) -> Result<StorageReport, CopyError> {
    #[cfg(feature = "testing")]
    return {
        let bar_side = match req.src {
            Target::Nvme(_) => Side::Dst,
            _ => Side::Src,
        };
        peerdma_copy::testing::run_storage(req, progress, &test_hooks(cli, bar_side))
    };
    #[cfg(not(feature = "testing"))]
    return {
        let _ = cli;
        peerdma_copy::run_storage(req, progress)
    };
}

/// What `--test-revoke-after-{bytes,ms}` ask for: `side`'s decode turned off mid-copy.
#[cfg(feature = "testing")]
fn test_hooks(cli: &Cli, side: Side) -> peerdma_copy::testing::Hooks<'static> {
    use peerdma_copy::testing::{Hooks, RevokeTrigger};
    match (cli.test_revoke_after_bytes, cli.test_revoke_after_ms) {
        (Some(bytes), _) => Hooks::revoke(side, RevokeTrigger::AfterBytes(bytes)),
        (None, Some(ms)) => Hooks::revoke(side, RevokeTrigger::After(Duration::from_millis(ms))),
        (None, None) => Hooks::default(),
    }
}

fn run_storage(cli: &Cli, req: &StorageRequest) -> Result<()> {
    let mut bar = Bar::new(cli);
    let started = Instant::now();
    let result = copy_storage(cli, req, &mut |p| bar.update(p));
    let wall = started.elapsed().as_secs_f64();
    bar.finish();
    let r: StorageReport = result.map_err(with_advice)?;
    if cli.json {
        println!("{}", one_schema(serde_json::to_value(&r)?, wall));
    } else if !cli.quiet {
        println!(
            "copied {} × {} from {} to {} by NVMe {} in {}: {}, {:.0} IOPS, QD {}, {} per \
             command, latency p50 {:.1} µs p99 {:.1} µs{}",
            human(r.bytes),
            r.iterations,
            r.src,
            r.dst,
            r.via,
            timing(r.seconds, wall),
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
        if let Some(v) = &r.verification {
            // What the check shares with the copy (a read-back by the same controller).
            println!("check: {}; layout: {}", v.read_by, v.layout);
        }
        println!("{}", iommu_line(r.iommu_faults));
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

/// The RDMA ends: `--serve DST` and `SRC rdma://HOST:PORT`.
#[cfg(feature = "rdma")]
mod rdma_cli {
    use std::io::Write as _;
    use std::time::Duration;

    use anyhow::Result;
    use peerdma_copy::rdma::{self, LocalSpec, RdmaReport, SendRequest, ServeRequest};
    use peerdma_copy::EndpointSpec;
    use peerdma_tools::size::human;

    use super::{access_path, rate, with_advice, Cli, Engine};
    use peerdma_copy::Target;

    fn local(cli: &Cli, t: &Target, src: bool) -> Result<LocalSpec> {
        if src {
            super::check_bar_flags(t, cli.src_bar, cli.src_offset, "src")?;
        } else {
            super::check_bar_flags(t, cli.dst_bar, cli.dst_offset, "dst")?;
        }
        Ok(match t {
            Target::Host => LocalSpec::Host,
            Target::Bar(spec) => LocalSpec::Bar(EndpointSpec {
                bdf: spec.bdf,
                bar: if src { cli.src_bar } else { cli.dst_bar },
                offset: if src { cli.src_offset } else { cli.dst_offset },
            }),
            Target::Nvme(n) => {
                return Err(peerdma_tools::failure::usage(
                    "unsupported_pair",
                    format!("{n}: an NVMe namespace is not an end of an RDMA copy"),
                    Some("name a BAR (a BDF) or host"),
                ))
            }
        })
    }

    /// A long explanation, short: its first clause, unless --verbose.
    fn short(cli: &Cli, why: &str) -> String {
        if cli.verbose {
            return why.to_string();
        }
        match why.find([';', '(']) {
            Some(at) if at > 20 => {
                let more = if cli.json {
                    "why: in the report"
                } else {
                    "--verbose says why"
                };
                format!("{} ({more})", why[..at].trim_end())
            }
            _ => why.to_string(),
        }
    }

    /// The reasons a side was not peer to peer, each once, short unless --verbose.
    fn not_p2p(cli: &Cli, r: &RdmaReport) -> Vec<String> {
        let mut whys: Vec<String> = Vec::new();
        for w in r.not_p2p.iter().map(|w| short(cli, w)) {
            if !whys.contains(&w) {
                whys.push(w);
            }
        }
        whys
    }

    fn print(cli: &Cli, r: &RdmaReport) -> Result<()> {
        if cli.json {
            // The report has the reasons in full; a person watching stderr gets them once.
            for why in not_p2p(cli, r) {
                eprintln!("p2pcopy: NOT peer-to-peer: {why}");
            }
            println!("{}", serde_json::to_string(r)?);
        } else if !cli.quiet {
            let verb = if r.role == "sender" {
                "sent"
            } else {
                "received"
            };
            println!(
                "{verb} {} {} {} ({}) over RDMA with {} QP(s) on {} ({}) in {:.3} s: {}, every byte verified by the receiver",
                human(r.bytes),
                if r.role == "sender" { "from" } else { "into" },
                r.local,
                if r.role == "sender" { format!("to {} at {}", r.remote, r.peer) } else { format!("from {}", r.peer) },
                r.qps,
                r.device,
                r.driver,
                r.seconds,
                rate(r.gbps),
            );
            if !r.not_p2p.is_empty() {
                let whys = not_p2p(cli, r);
                println!("path: NOT peer-to-peer: {}", whys.join("; "));
            } else if r.peer_to_peer {
                println!("path: peer-to-peer (the NICs read and write the device memory directly)");
            } else {
                println!("path: host memory at both ends (no device memory involved)");
            }
        }
        Ok(())
    }

    pub(super) fn serve(cli: &Cli, dst: &Target) -> Result<()> {
        let req = ServeRequest {
            dst: local(cli, dst, false)?,
            listen: cli.listen,
            access: access_path(cli.access),
            // --timeout given bounds the wait for a sender too; by default it has no end.
            wait: cli
                .given
                .contains(&"timeout")
                .then(|| Duration::from_secs(cli.timeout)),
            timeout: Duration::from_secs(cli.timeout),
            max_host_size: 4 << 30,
        };
        let report = rdma::serve(&req, &mut |addr| {
            eprintln!("p2pcopy: listening on {addr} (RDMA CM)");
            let _ = std::io::stderr().flush();
        })
        .map_err(with_advice)?;
        print(cli, &report)
    }

    pub(super) fn send(cli: &Cli, src: &Target, peer: &str) -> Result<()> {
        if matches!(cli.engine, Engine::Cpu | Engine::Dma) {
            return Err(with_advice(peerdma_copy::CopyError::PathUnavailable {
                path: "cpu/dma",
                why: peerdma_copy::Unavailable::RemoteNeedsRdma,
            }));
        }
        let req = SendRequest {
            src: local(cli, src, true)?,
            peer: rdma::parse_peer(peer).map_err(with_advice)?,
            size: cli.size,
            seed: *cli
                .used_seed
                .get_or_init(|| cli.seed.unwrap_or_else(super::fresh_seed)),
            qps: cli.qps,
            msg_size: u32::try_from(cli.chunk).unwrap_or(u32::MAX),
            depth: cli.depth,
            access: access_path(cli.access),
            timeout: Duration::from_secs(cli.timeout),
        };
        let report = rdma::send(&req, &mut |_, _| {}).map_err(with_advice)?;
        print(cli, &report)
    }
}

/// Without the rdma feature the RDMA ends are an explained error.
#[cfg(not(feature = "rdma"))]
mod rdma_cli {
    use anyhow::Result;
    use peerdma_copy::{CopyError, Unavailable};

    use super::{with_advice, Cli};
    use peerdma_copy::Target;

    fn not_built() -> anyhow::Error {
        with_advice(CopyError::PathUnavailable {
            path: "rdma",
            why: Unavailable::RdmaNotBuilt,
        })
    }

    pub(super) fn serve(_: &Cli, _: &Target) -> Result<()> {
        Err(not_built())
    }

    pub(super) fn send(_: &Cli, _: &Target, _: &str) -> Result<()> {
        Err(not_built())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test hooks' flags exist only in a build with the feature `testing`: without
    /// it the parser refuses them, and neither --help nor any completion script can
    /// name them. With it they parse and stay hidden. (`cargo test -p peerdma-tools`
    /// checks the build without; the testbed's builds turn the feature on.)
    #[test]
    fn test_hooks_exist_only_with_the_testing_feature() {
        let with = cfg!(feature = "testing");
        let cmd = Cli::command();
        for id in ["test_revoke_after_ms", "test_revoke_after_bytes"] {
            let arg = cmd.get_arguments().find(|a| a.get_id() == id);
            assert_eq!(arg.is_some(), with, "{id}");
            assert!(arg.is_none_or(|a| a.is_hide_set()), "{id} is hidden");
        }
        for flag in ["--test-revoke-after-ms", "--test-revoke-after-bytes"] {
            let parsed = Cli::try_parse_from(["p2pcopy", "00:10.0", "00:11.0", flag, "8"]);
            assert_eq!(parsed.is_ok(), with, "{flag}");
        }
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains("--size") && !help.contains("test-revoke"),
            "{help}"
        );
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut script = Vec::new();
            peerdma_tools::install::write_completions(Cli::command(), shell, &mut script);
            let script = String::from_utf8(script).unwrap();
            assert!(script.contains("size"), "{shell}");
            assert!(!script.contains("test-revoke"), "{shell}");
        }
    }

    #[test]
    fn library_fixes_get_the_flags_that_carry_them_out() {
        let unaligned = CopyError::Unaligned {
            field: SpanField::DstOffset,
            value: 0x123,
            page: 4096,
            suggestions: vec![0, 4096],
        };
        assert_eq!(
            advice(&unaligned, Some("use 0x0 or 0x1000")).as_deref(),
            Some("--dst-offset: use 0x0 or 0x1000")
        );
        let via = CopyError::PathUnavailable {
            path: "dma",
            why: Unavailable::EngineIsEndpoint {
                engine: "00:11.0".parse().unwrap(),
            },
        };
        assert!(advice(&via, None)
            .unwrap()
            .contains("--via 0000:00:11.0 is also SRC or DST"));
        let no_iommufd = CopyError::PathUnavailable {
            path: "dma",
            why: Unavailable::NoIommufd,
        };
        assert_eq!(
            advice(&no_iommufd, None).as_deref(),
            Some("use --engine cpu")
        );
        let small = CopyError::BarTooSmall {
            bdf: "00:10.0".parse().unwrap(),
            side: Side::Src,
            bar: 2,
            bar_size: 1 << 20,
            offset: 0,
            size: 2 << 20,
        };
        assert!(advice(&small, None).unwrap().contains("--src-bar"));
        let mismatch = CopyError::Mismatch {
            first: 0,
            count: 1,
            detail: None,
        };
        assert!(advice(&mismatch, None).is_none());
    }

    #[test]
    fn rdma_ends_parse_and_old_bdf_pairs_still_do() {
        let cli = Cli::try_parse_from(["p2pcopy", "--serve", "--listen", "10.0.0.2:7000", "host"])
            .unwrap();
        assert!(cli.serve && matches!((&cli.src, &cli.dst), (End::Local(Target::Host), None)));
        let cli = Cli::try_parse_from(["p2pcopy", "01:00.0", "rdma://10.0.0.2:7000", "--qps", "2"])
            .unwrap();
        assert!(matches!(
            (&cli.src, &cli.dst),
            (End::Local(Target::Bar(_)), Some(End::Remote(r))) if r == "rdma://10.0.0.2:7000"
        ));
        let cli = Cli::try_parse_from(["p2pcopy", "00:10.0", "00:11.0"]).unwrap();
        assert!(matches!(
            (&cli.src, &cli.dst),
            (End::Local(Target::Bar(_)), Some(End::Local(Target::Bar(_))))
        ));
        assert!(Cli::try_parse_from(["p2pcopy", "zz:10.0", "00:11.0"]).is_err());
        assert!(
            Cli::try_parse_from(["p2pcopy", "00:10.0"]).is_err(),
            "DST is required"
        );
        assert!(Cli::try_parse_from(["p2pcopy", "a", "b", "c"]).is_err());
    }

    fn parse(args: &[&str]) -> Cli {
        let m = Cli::command()
            .try_get_matches_from(["p2pcopy"].iter().chain(args))
            .unwrap();
        let mut cli = Cli::from_arg_matches(&m).unwrap();
        cli.given = given_flags(&m);
        cli
    }

    #[test]
    fn qps_outside_1_to_16_are_refused() {
        for n in ["0", "17"] {
            let e = Cli::try_parse_from(["p2pcopy", "00:10.0", "rdma://10.0.0.2:7000", "--qps", n])
                .err()
                .unwrap_or_else(|| panic!("--qps {n} is refused"))
                .to_string();
            assert!(e.contains("--qps") && e.contains("1 to 16"), "{e}");
        }
        assert_eq!(
            parse(&["00:10.0", "rdma://10.0.0.2:7000", "--qps", "16"]).qps,
            16
        );
    }

    #[test]
    fn a_zero_chunk_is_refused_with_the_value_and_a_valid_one() {
        let e = Cli::try_parse_from(["p2pcopy", "00:10.0", "00:11.0", "--chunk", "0"])
            .err()
            .expect("--chunk 0 is refused")
            .to_string();
        assert!(
            e.contains("'0'") && e.contains("--chunk") && e.contains("1M"),
            "{e}"
        );
        assert_eq!(parse(&["00:10.0", "00:11.0", "--chunk", "4K"]).chunk, 4096);
    }

    #[test]
    fn nvme_and_rdma_flags_are_refused_where_they_would_be_ignored() {
        // Defaults are never "given".
        let cli = parse(&["00:10.0", "00:11.0"]);
        assert!(cli.given.is_empty());
        assert!(check_flags(&cli.given, CopyKind::Local).is_ok());
        for flag in [
            ["--queue-depth", "8"],
            ["--transfer-size", "4K"],
            ["--data-pointer", "prp"],
        ] {
            let cli = parse(&["00:10.0", "00:11.0", flag[0], flag[1]]);
            let e = run(&cli)
                .expect_err("refused before any device is opened")
                .to_string();
            assert!(
                e.contains(flag[0]) && e.contains("only applies to NVMe endpoints"),
                "{e}"
            );
            let cli = parse(&["nvme:00:13.0", "00:11.0", flag[0], flag[1]]);
            assert!(check_flags(&cli.given, CopyKind::Nvme).is_ok());
            let cli = parse(&["00:10.0", "rdma://10.0.0.2:7000", flag[0], flag[1]]);
            let e = run(&cli).expect_err("refused on an RDMA copy").to_string();
            assert!(e.contains(flag[0]) && e.contains("NVMe"), "{e}");
        }
        let cli = parse(&["00:10.0", "00:11.0", "--qps", "2"]);
        let e = run(&cli).unwrap_err().to_string();
        assert!(e.contains("--qps") && e.contains("rdma://"), "{e}");
        let cli = parse(&["--serve", "host", "--depth", "4"]);
        assert!(run(&cli)
            .unwrap_err()
            .to_string()
            .contains("--depth only applies"));
        let cli = parse(&["00:10.0", "rdma://10.0.0.2:7000", "--listen", "0.0.0.0:1"]);
        assert!(run(&cli).unwrap_err().to_string().contains("--serve"));
        let cli = parse(&[
            "00:10.0",
            "rdma://10.0.0.2:7000",
            "--qps",
            "2",
            "--timeout",
            "5",
        ]);
        assert!(check_flags(&cli.given, CopyKind::Send).is_ok());
    }

    #[test]
    fn via_on_an_nvme_or_rdma_copy_is_refused_where_it_would_be_ignored() {
        let cli = parse(&["nvme:00:13.0", "00:11.0", "--via", "00:12.0"]);
        let e = run(&cli)
            .expect_err("refused before any device is opened")
            .to_string();
        assert!(
            e.contains("--via only applies to a copy between two BARs")
                && e.contains("this copy is a copy with an NVMe side"),
            "{e}"
        );
        let cli = parse(&[
            "00:11.0",
            "nvme:00:13.0",
            "--engine",
            "dma",
            "--via",
            "00:12.0",
        ]);
        assert!(run(&cli)
            .unwrap_err()
            .to_string()
            .contains("--via only applies"));
        let cli = parse(&["00:10.0", "rdma://10.0.0.2:7000", "--via", "00:12.0"]);
        assert!(run(&cli)
            .unwrap_err()
            .to_string()
            .contains("--via only applies"));
        let cli = parse(&["00:10.0", "00:11.0", "--via", "nvme:00:13.0"]);
        assert!(check_flags(&cli.given, CopyKind::Local).is_ok());
    }

    #[test]
    fn via_with_an_engine_that_uses_none_is_refused_before_any_device_is_opened() {
        for engine in ["cpu", "rdma"] {
            let cli = parse(&["00:10.0", "00:11.0", "--engine", engine, "--via", "00:12.0"]);
            let e = run(&cli).unwrap_err().to_string();
            assert!(
                e.contains("--via 0000:00:12.0 names a DMA engine")
                    && e.contains(&format!("--engine {engine} does not use one")),
                "{e}"
            );
        }
    }

    #[test]
    fn bar_flags_on_a_side_that_is_no_bar_are_refused() {
        let cases: [(&[&str], &str); 3] = [
            (
                &["nvme:00:13.0", "00:11.0", "--src-offset", "4K"],
                "--src-offset applies to a BAR side, but SRC nvme:",
            ),
            (
                &["host", "00:11.0", "--src-bar", "2"],
                "--src-bar applies to a BAR side, but SRC host is host memory",
            ),
            (
                &["00:11.0", "nvme:00:13.0", "--dst-bar", "0"],
                "--dst-bar applies to a BAR side, but DST nvme:",
            ),
        ];
        for (args, want) in cases {
            let e = run(&parse(args)).unwrap_err().to_string();
            assert!(e.contains(want), "{args:?}: {e}");
        }
        #[cfg(feature = "rdma")]
        {
            let e = run(&parse(&["--serve", "host", "--dst-offset", "1M"]))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("--dst-offset applies to a BAR side, but DST host"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_failed_verification_says_the_seed_and_the_first_differing_offset() {
        let cli = parse(&["00:10.0", "00:11.0", "--json"]);
        cli.used_seed.set(0x5eed).unwrap();
        let e = anyhow::Error::from(CopyError::Mismatch {
            first: 0x2000,
            count: 3,
            detail: None,
        });
        let f = failure(&cli, &e);
        assert_eq!(f.exit, peerdma_tools::exit::Exit::DataDiffers);
        assert!(
            f.message.contains("0x2000") && f.message.contains("seed 24301"),
            "{}",
            f.message
        );
        let j = f.to_json();
        assert_eq!(j["error"]["kind"], "mismatch");
        assert_eq!(j["verified"], false);
        assert_eq!(j["seed"], 0x5eed);
        assert_eq!(j["mismatch"]["first_offset"], 0x2000);
        assert_eq!(j["mismatch"]["count"], 3);
        // With the bytes at the first difference: the seed said once, the bytes in the
        // text and the JSON.
        let e = anyhow::Error::from(CopyError::Mismatch {
            first: 0x2000,
            count: 3,
            detail: Some(Box::new(peerdma_copy::MismatchDetail {
                seed: Some(0x5eed),
                expected: vec![0x12, 0x34],
                actual: vec![0xed, 0xcb],
            })),
        });
        let f = failure(&cli, &e);
        assert_eq!(f.message.matches("seed").count(), 1, "{}", f.message);
        assert!(
            f.message.contains("expected 12 34, found ed cb"),
            "{}",
            f.message
        );
        let j = f.to_json();
        assert_eq!(j["mismatch"]["expected"], "1234");
        assert_eq!(j["mismatch"]["actual"], "edcb");
        assert_eq!(j["mismatch"]["expected_from"], "pattern");
        assert_eq!(j["src"], "0000:00:10.0");
        // A revoke keeps what was done: bytes, seed, the device revoked.
        let e = anyhow::Error::from(CopyError::Revoked {
            bdf: "00:10.0".parse().unwrap(),
            done: 16 << 20,
            total: 64 << 20,
            why: "memory decode is off".into(),
        });
        let j = failure(&cli, &e).to_json();
        assert_eq!(j["error"]["kind"], "revoked");
        assert_eq!(j["bytes_done"], 16u64 << 20);
        assert_eq!(j["bytes_total"], 64u64 << 20);
        assert_eq!(j["seed"], 0x5eed);
        // The library's fix and p2pcopy's flags are one fix, not two.
        let e = anyhow::Error::from(CopyError::ZeroIterations);
        let f = failure(&cli, &e);
        assert_eq!(f.fix.as_deref(), Some("give --iterations 1 or more"));
        assert!(!f.text("p2pcopy").contains("(p2pcopy:"));
    }

    #[test]
    fn the_time_says_what_it_covers_and_reports_share_one_schema() {
        assert_eq!(timing(0.5, 0.52), "0.500 s");
        let t = timing(0.014, 6.2);
        assert!(
            t.starts_with("0.014 s of copying") && t.contains("6.200 s in all"),
            "{t}"
        );
        let bar = one_schema(
            serde_json::json!({"src": {"bdf": "a"}, "dst": {"bdf": "b"}, "engine": "cpu",
                               "seconds": 0.1}),
            0.3,
        );
        let nvme = one_schema(
            serde_json::json!({"src": {"kind": "nvme"}, "dst": {"kind": "bar"}, "iops": 1.0,
                               "seconds": 0.1}),
            0.3,
        );
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&bar), keys(&nvme));
        assert_eq!(bar["src"]["kind"], "bar");
        assert_eq!(nvme["engine"], "nvme");
        assert_eq!(bar["wall_seconds"], 0.3);
        assert!(bar["iops"].is_null());
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
