//! p2pcopy's command line: the clap definition, the value parsers, and which flags
//! apply to which kind of copy (a flag given where it would be ignored is refused).

use std::fmt;
use std::str::FromStr;

use anyhow::Result;
use clap::parser::ValueSource;
use clap::{ArgMatches, Parser, ValueEnum};
use peerdma_copy::{EndpointSpec, LocalSpec, Target};
use peerdma_host::Bdf;
use peerdma_tools::args::AccessPathArg;
use peerdma_tools::failure::usage;
use peerdma_tools::size::parse_size;

/// What moves the bytes.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Engine {
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
    /// A NIC streaming UDP/IPv4 datagrams (docs/nic.md) towards a peer named
    /// udp://HOST:PORT (the peer runs --serve --engine nic): with --via, an igb NIC on
    /// vfio-pci whose DMA reads or writes the BAR; without, a kernel socket through host
    /// memory (NOT peer-to-peer).
    Nic,
    /// The fastest available (today: cpu).
    Auto,
}

/// `--cpu-map`: how the CPU maps the two BARs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum CpuMapArg {
    /// The VFIO region mmap (every kernel).
    Region,
    /// A dma-buf of each span mapped through the dma-buf itself, write-combining
    /// (needs the kernel series "vfio/pci: Add mmap() for DMABUFs", not upstream yet).
    DmaBufWc,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum DataPointerArg {
    Auto,
    Prp,
    Sgl,
}

/// One end as the command line names it: a local target, or a receiver over RDMA.
#[derive(Clone, Debug)]
pub(crate) enum End {
    /// A device's BAR, an NVMe namespace or host memory.
    Local(Target),
    /// A receiver over RDMA (rdma://HOST:PORT) or over UDP (udp://HOST:PORT).
    Remote(String),
}

impl FromStr for End {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("rdma://") || s.starts_with("udp://") {
            Ok(End::Remote(s.to_string()))
        } else {
            s.parse::<Target>().map(End::Local).map_err(|e| {
                format!(
                    "{e}; or, as DST, a receiver over RDMA (rdma://HOST:PORT) or UDP \
                         (udp://HOST:PORT)"
                )
            })
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
pub(crate) struct Cli {
    /// Source: a device's BAR (0000:01:00.0 or 01:00.0), an NVMe namespace
    /// (nvme:BDF[/NSID][@LBA]), a raw namespace on the kernel's nvme driver
    /// (blk:/dev/nvme0n1[@LBA], kernel series "Add dmabuf read/write via io_uring") or
    /// host. With --serve: the destination (a BAR or host).
    pub(crate) src: End,
    /// Destination: as SRC, or a receiver over RDMA (rdma://HOST:PORT) or over UDP
    /// through a NIC (udp://HOST:PORT).
    #[arg(required_unless_present = "serve")]
    pub(crate) dst: Option<End>,
    /// Receive over RDMA (or, with --engine nic, over UDP): expose the one target named,
    /// wait for one sender, check every byte.
    #[arg(long)]
    #[cfg_attr(
        not(feature = "rdma"),
        arg(help = "Receive over RDMA [not built in: cargo install --path tools --features rdma]")
    )]
    pub(crate) serve: bool,
    /// Address and port the receiver listens on (an address of the RDMA device's netdev;
    /// for --engine nic with --via, the NIC's own IPv4 address, required; without
    /// --via the default port is 18521).
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:18520")]
    pub(crate) listen: std::net::SocketAddr,
    /// RDMA: queue pairs to stream over (1 to 16).
    #[arg(long, default_value_t = 1, value_parser = parse_qps)]
    pub(crate) qps: u8,
    /// RDMA: WRITEs in flight per queue pair (each --chunk bytes).
    #[arg(long, default_value_t = 16)]
    pub(crate) depth: u32,
    /// RDMA and NIC: seconds the peer may take to connect, answer or finish (with --serve,
    /// given: also how long to wait for the first sender; without it the receiver waits
    /// for one).
    #[arg(long, default_value_t = 60, value_parser = parse_timeout)]
    pub(crate) timeout: u64,
    /// The engine device for --engine dma (default: the supported engine bound to
    /// vfio-pci nearest both devices; an NVMe controller, also spelled nvme:BDF, copies
    /// BAR → BAR in two steps through its namespace; an igb NIC in loopback). For a NIC
    /// stream (--engine nic, udp://): the igb NIC on vfio-pci that moves this side's
    /// bytes (without it, a kernel socket).
    #[arg(long, value_name = "BDF", value_parser = parse_via)]
    pub(crate) via: Option<Bdf>,
    /// NIC stream: this side's IPv4 address on the wire, for a sender with --via (the
    /// kernel does not drive the NIC, so it has no address of its own).
    #[arg(long, value_name = "ADDR")]
    pub(crate) bind: Option<String>,
    /// NIC stream: the link's MTU in bytes (576 to 9000; each datagram carries MTU − 28
    /// payload bytes). Both ends must agree.
    #[arg(long, default_value_t = 1500, value_parser = parse_mtu)]
    pub(crate) mtu: u32,
    /// NVMe commands kept in flight (default 32, or fewer where the controller's queues
    /// are smaller: CAP.MQES).
    #[arg(long, default_value_t = 32, value_parser = parse_queue_depth)]
    pub(crate) queue_depth: u32,
    /// Bytes per NVMe command (capped by the controller's MDTS).
    #[arg(long, value_parser = parse_transfer_size, default_value = "128K")]
    pub(crate) transfer_size: u64,
    /// How NVMe commands point at the data: auto (SGLs where the controller offers
    /// them), prp or sgl.
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) data_pointer: DataPointerArg,
    /// How the CPU maps the BARs with --engine cpu: region (the VFIO region mmap) or
    /// dma-buf-wc (each span's dma-buf mapped write-combining; needs a kernel with the
    /// posted dma-buf mmap series).
    #[arg(long, value_enum, default_value = "region")]
    pub(crate) cpu_map: CpuMapArg,
    /// Source BAR (default: the largest exportable memory BAR).
    #[arg(long, value_parser = peerdma_tools::args::parse_bar)]
    pub(crate) src_bar: Option<u32>,
    /// Destination BAR (default: the largest exportable memory BAR).
    #[arg(long, value_parser = peerdma_tools::args::parse_bar)]
    pub(crate) dst_bar: Option<u32>,
    /// Offset into the source BAR (page-aligned; 4K/2M/1G suffixes and hex accepted).
    #[arg(long, value_parser = parse_size, default_value = "0")]
    pub(crate) src_offset: u64,
    /// Offset into the destination BAR.
    #[arg(long, value_parser = parse_size, default_value = "0")]
    pub(crate) dst_offset: u64,
    /// Bytes to copy (default: all that fits both BARs past the offsets).
    #[arg(long, value_parser = parse_size)]
    pub(crate) size: Option<u64>,
    /// Bytes per step (1 or more; over RDMA, bytes per WRITE).
    #[arg(long, value_parser = parse_chunk, default_value = "1M")]
    pub(crate) chunk: u64,
    /// Copy the span this many times.
    #[arg(long, default_value_t = 1)]
    pub(crate) iterations: u32,
    /// What moves the bytes: cpu, dma (a DMA engine device through iommufd; old
    /// spelling: iommufd), rdma, nic (UDP datagrams through a NIC), or auto.
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) engine: Engine,
    /// Fill the source with a seeded pattern and check every destination byte (default).
    #[arg(long, conflicts_with = "no_verify")]
    pub(crate) verify: bool,
    /// Skip the pattern fill and check.
    #[arg(long)]
    pub(crate) no_verify: bool,
    /// Pattern seed (default: a new one each run, so a destination that already holds
    /// an earlier run's bytes cannot pass; the report names the seed used).
    #[arg(long, conflicts_with = "no_verify")]
    pub(crate) seed: Option<u64>,
    /// Allow a BAR that looks like registers (not prefetchable, a DMA engine's register
    /// BAR, MSI-X pages) as SRC or DST: only for a BAR you know is plain memory.
    #[arg(long)]
    pub(crate) allow_register_bar: bool,
    /// VFIO access path.
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) access: AccessPathArg,
    /// One JSON object on stdout instead of the human summary.
    #[arg(long)]
    pub(crate) json: bool,
    /// No progress bar, no summary (exit status only; errors still go to stderr).
    #[arg(long)]
    pub(crate) quiet: bool,
    /// The long explanations in full (why a side is not peer to peer, each hop of the
    /// route); without it each is said once, short.
    #[arg(long, short = 'v')]
    pub(crate) verbose: bool,
    /// Test hook (feature `testing` only): turn the source's (on a storage copy: the
    /// BAR side's) memory decode off this many ms into the copy.
    #[cfg(feature = "testing")]
    #[arg(long, hide = true)]
    pub(crate) test_revoke_after_ms: Option<u64>,
    /// Test hook (feature `testing` only): turn the source's (on a storage copy: the
    /// BAR side's) memory decode off once this many bytes are copied.
    #[cfg(feature = "testing")]
    #[arg(long, hide = true, value_parser = parse_size)]
    pub(crate) test_revoke_after_bytes: Option<u64>,
    /// Test hook (feature `testing` only): on a copy between two BARs, revoke the
    /// destination instead of the source (`dst`).
    #[cfg(feature = "testing")]
    #[arg(long, hide = true, value_parser = ["src", "dst"])]
    pub(crate) test_revoke_side: Option<String>,
    /// The flags of [`SCOPED_FLAGS`] given on the command line (not defaulted).
    #[arg(skip)]
    pub(crate) given: Vec<&'static str>,
    /// The pattern seed the copy used (given or drawn), once it is known.
    #[arg(skip)]
    pub(crate) used_seed: std::cell::OnceCell<u64>,
}

/// What kind of copy the command line asks for: the flags that apply differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CopyKind {
    /// Both ends here, one of them an NVMe namespace.
    Nvme,
    /// Both ends here, neither an NVMe namespace.
    Local,
    /// The receiving end of an RDMA copy (--serve).
    Serve,
    /// The sending end of an RDMA copy (DST rdma://HOST:PORT).
    Send,
    /// The receiving end of a NIC stream (--serve --engine nic).
    NicServe,
    /// The sending end of a NIC stream (DST udp://HOST:PORT).
    NicSend,
}

/// Flags that only some kinds of copy use: (clap id, spelling, the kinds it applies to,
/// those kinds in words).
pub(crate) const SCOPED_FLAGS: &[(&str, &str, &[CopyKind], &str)] = &[
    (
        "via",
        "--via",
        &[CopyKind::Local, CopyKind::NicServe, CopyKind::NicSend],
        "a copy between two BARs on this host, or a NIC stream (on a copy with an nvme: \
         side that namespace's controller is the engine; over RDMA the RDMA NICs move the \
         bytes)",
    ),
    ("queue_depth", "--queue-depth", &[CopyKind::Nvme], NVME_ONLY),
    (
        "cpu_map",
        "--cpu-map",
        &[CopyKind::Local],
        "a copy between two BARs on this host by the CPU (--engine cpu)",
    ),
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
        &[CopyKind::Serve, CopyKind::NicServe],
        "the receiving end of an RDMA copy or NIC stream (--serve)",
    ),
    (
        "timeout",
        "--timeout",
        &[
            CopyKind::Serve,
            CopyKind::Send,
            CopyKind::NicServe,
            CopyKind::NicSend,
        ],
        "an RDMA copy or NIC stream (--serve, or DST rdma:// or udp://)",
    ),
    (
        "bind",
        "--bind",
        &[CopyKind::NicSend],
        "the sending end of a NIC stream (DST udp://HOST:PORT)",
    ),
    (
        "mtu",
        "--mtu",
        &[CopyKind::NicServe, CopyKind::NicSend],
        "a NIC stream (--serve --engine nic, or DST udp://HOST:PORT)",
    ),
    ("size", "--size", SENDS, SENDING),
    ("src_bar", "--src-bar", SENDS, SRC_SIDE),
    ("src_offset", "--src-offset", SENDS, SRC_SIDE),
    ("dst_bar", "--dst-bar", RECEIVES, DST_SIDE),
    ("dst_offset", "--dst-offset", RECEIVES, DST_SIDE),
    (
        "chunk",
        "--chunk",
        &[CopyKind::Local, CopyKind::Nvme, CopyKind::Send],
        "a copy on this host or the sending end of an RDMA copy (a NIC stream sends \
         one datagram at a time: --mtu)",
    ),
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
        "a copy on this host (over RDMA or UDP the receiver always checks every byte)",
    ),
    (
        "verify",
        "--verify",
        &[CopyKind::Local, CopyKind::Nvme],
        "a copy on this host (over RDMA or UDP the receiver always checks every byte)",
    ),
];

/// The kinds of copy that send bytes they chose (the receiver of an RDMA copy takes
/// the sender's size, chunk and pattern).
pub(crate) const SENDS: &[CopyKind] = &[
    CopyKind::Local,
    CopyKind::Nvme,
    CopyKind::Send,
    CopyKind::NicSend,
];
pub(crate) const SENDING: &str = "the sending side: on --serve the sender's choice is used";
pub(crate) const SRC_SIDE: &str =
    "the source of a copy on this host or of a sending end (on --serve this end is DST)";

/// The kinds of copy whose destination is on this host.
pub(crate) const RECEIVES: &[CopyKind] = &[
    CopyKind::Local,
    CopyKind::Nvme,
    CopyKind::Serve,
    CopyKind::NicServe,
];
pub(crate) const DST_SIDE: &str =
    "the destination of a copy on this host or of a receiving end (the receiver chooses its own)";

pub(crate) const NVME_ONLY: &str =
    "NVMe endpoints: a copy with an nvme:BDF[/NSID][@LBA] side (a BAR → BAR \
                         copy through an NVMe engine named by --via runs the engine with its \
                         defaults)";

/// The scoped flags the user gave (not defaulted), by clap id.
pub(crate) fn given_flags(m: &ArgMatches) -> Vec<&'static str> {
    SCOPED_FLAGS
        .iter()
        .filter(|(id, ..)| m.value_source(id) == Some(ValueSource::CommandLine))
        .map(|(id, ..)| *id)
        .collect()
}

/// Refuses a flag given on a copy it does not apply to (it would be ignored silently).
pub(crate) fn check_flags(given: &[&str], kind: CopyKind) -> Result<()> {
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
                        CopyKind::NicServe => "the receiving end of a NIC stream",
                        CopyKind::NicSend => "the sending end of a NIC stream",
                    }
                ),
                Some(&format!("leave {flag} out")),
            ));
        }
    }
    Ok(())
}

/// `--chunk`: a size of 1 byte or more.
pub(crate) fn parse_chunk(s: &str) -> Result<u64, String> {
    match parse_size(s).map_err(|e| e.to_string())? {
        0 => Err(
            "a chunk of 0 bytes would never move a byte; give 1 or more, e.g. 1M (the \
                  default)"
                .to_string(),
        ),
        n => Ok(n),
    }
}

/// `--transfer-size`: 1 byte or more per NVMe command (rounded to blocks later).
pub(crate) fn parse_transfer_size(s: &str) -> Result<u64, String> {
    match parse_size(s).map_err(|e| e.to_string())? {
        0 => Err(
            "a command of 0 bytes would move no byte; give one block or more, e.g. 128K (the \
             default)"
                .to_string(),
        ),
        n => Ok(n),
    }
}

/// `--queue-depth`: 1 or more commands in flight.
pub(crate) fn parse_queue_depth(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(0) => Err("0 commands in flight would move no byte; give 1 or more (default 32)".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("give a number of commands in flight, 1 or more (default 32)".into()),
    }
}

/// `--mtu`: 576 (the least IPv4 datagram every host takes whole, RFC 791) to 9000 (a
/// jumbo frame, the most an 82576 takes here).
pub(crate) fn parse_mtu(s: &str) -> Result<u32, String> {
    let max = peerdma_copy::nic::plan::MAX_MTU;
    match s.trim().parse::<u32>() {
        Ok(n) if (576..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "give an MTU from 576 to {max} bytes (1500 on most links, up to {max} with jumbo \
             frames; both ends must agree)"
        )),
    }
}

/// `--timeout`: whole seconds, 1 or more.
pub(crate) fn parse_timeout(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => {
            Err("a peer given 0 s could never answer; give 1 or more seconds (default 60)".into())
        }
        Ok(n) => Ok(n),
        Err(_) => Err("give whole seconds, 1 or more (default 60)".into()),
    }
}

/// `--qps`: 1 to 16 queue pairs.
pub(crate) fn parse_qps(s: &str) -> Result<u8, String> {
    match s.trim().parse::<u8>() {
        Ok(n @ 1..=16) => Ok(n),
        Ok(0) => Err("0 queue pairs would move no byte; give 1 to 16 (default 1)".to_string()),
        _ => Err("give a number of queue pairs from 1 to 16 (default 1)".to_string()),
    }
}

/// `--via`: a BDF, or `nvme:BDF`.
pub(crate) fn parse_via(s: &str) -> Result<Bdf, String> {
    s.strip_prefix("nvme:")
        .unwrap_or(s)
        .parse::<Bdf>()
        .map_err(|e| e.to_string())
}

/// One end of a stream to another host (`stream`: "an RDMA copy", "a NIC stream"):
/// host memory, or a BAR with the BAR flags of its side applied.
pub(crate) fn stream_end(cli: &Cli, t: &Target, src: bool, stream: &str) -> Result<LocalSpec> {
    let (bar, offset, side) = if src {
        (cli.src_bar, cli.src_offset, "src")
    } else {
        (cli.dst_bar, cli.dst_offset, "dst")
    };
    Ok(match with_bar(t, bar, offset, side)? {
        Target::Host => LocalSpec::Host,
        Target::Bar(spec) => LocalSpec::Bar(spec),
        Target::Nvme(_) | Target::Blk(_) => {
            return Err(usage(
                "unsupported_pair",
                format!("{t}: an NVMe namespace is not an end of {stream}"),
                Some("name a BAR (a BDF) or host"),
            ))
        }
    })
}

/// A side with the BAR flags applied.
pub(crate) fn with_bar(t: &Target, bar: Option<u32>, offset: u64, side: &str) -> Result<Target> {
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
pub(crate) fn check_bar_flags(t: &Target, bar: Option<u32>, offset: u64, side: &str) -> Result<()> {
    let flag = match (bar, offset) {
        (Some(_), _) => format!("--{side}-bar"),
        (None, 0) => return Ok(()),
        (None, _) => format!("--{side}-offset"),
    };
    let how = match t {
        Target::Bar(_) => return Ok(()),
        Target::Nvme(_) => "an NVMe namespace: its start is the LBA, nvme:BDF[/NSID]@LBA",
        Target::Blk(_) => "a raw NVMe namespace: its start is the LBA, blk:/dev/nvmeXnY@LBA",
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
