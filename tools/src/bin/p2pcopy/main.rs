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
// Flag docs are clap help text, whose grammar ([/NSID][@LBA]) rustdoc would read as links.
#![allow(rustdoc::broken_intra_doc_links)]

mod advice;
mod bar;
mod flags;
mod nic;
mod rdma;
mod report;
mod storage;

use std::process::ExitCode;
#[cfg(feature = "testing")]
use std::time::Duration;
use std::time::Instant;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches};
#[cfg(feature = "testing")]
use peerdma_copy::Side;
use peerdma_copy::{
    CopyError, CopyReport, CopyRequest, CpuMapping, Progress, Target, TransportChoice,
};
use peerdma_tools::failure::usage;
use peerdma_tools::size::human;

use advice::{failure, with_advice};
use bar::Bar;
use flags::{check_flags, given_flags, with_bar, Cli, CopyKind, CpuMapArg, End, Engine};
use report::{iommu_line, one_schema, rate, timing};

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

/// A seed no earlier run is likely to have used: the clock's nanoseconds mixed with
/// the process id.
pub(crate) fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ u64::from(std::process::id()).rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn run(cli: &Cli) -> Result<()> {
    let nvme = |e: Option<&End>| matches!(e, Some(End::Local(Target::Nvme(_) | Target::Blk(_))));
    let kind = match (cli.serve, &cli.dst) {
        (true, _) if matches!(cli.engine, Engine::Nic) => CopyKind::NicServe,
        (true, _) => CopyKind::Serve,
        (false, Some(End::Remote(r))) if r.starts_with("udp://") => CopyKind::NicSend,
        (false, Some(End::Remote(_))) => CopyKind::Send,
        (false, dst) if nvme(Some(&cli.src)) || nvme(dst.as_ref()) => CopyKind::Nvme,
        (false, _) => CopyKind::Local,
    };
    check_flags(&cli.given, kind)?;
    let (src, dst) = match (cli.serve, &cli.src, &cli.dst) {
        (true, End::Local(dst), None) if kind == CopyKind::NicServe => return nic::serve(cli, dst),
        (true, End::Local(dst), None) => return rdma::serve(cli, dst),
        (true, _, _) => {
            return Err(usage(
                "wrong_number_of_values",
                "--serve takes one target, the destination",
                Some("give one BDF or `host` after --serve"),
            ))
        }
        (false, End::Local(src), Some(End::Remote(peer))) if kind == CopyKind::NicSend => {
            return nic::send(cli, src, peer)
        }
        (false, End::Local(_), Some(End::Remote(peer))) if matches!(cli.engine, Engine::Nic) => {
            return Err(usage(
                "engine_not_applicable",
                format!("{peer} is a receiver over RDMA; --engine nic streams UDP datagrams"),
                Some(
                    "give the receiver as udp://HOST:PORT (it runs --serve --engine nic), or \
                     leave --engine out",
                ),
            ))
        }
        (false, End::Local(src), Some(End::Remote(peer))) => return rdma::send(cli, src, peer),
        (false, End::Local(src), Some(End::Local(dst))) => (src, dst),
        (false, End::Remote(r), _) => {
            return Err(usage(
                "remote_source",
                format!("{r} names a remote receiver: it can only be DST"),
                Some(
                    "the receiving host runs `p2pcopy --serve DST` (with --engine nic for \
                      udp://); give its URL as DST",
                ),
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
        _ if peerdma_copy::is_storage(&src, &dst) => return storage::run(cli, src, dst, seed),
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
        transport: match (cli.engine, cli.via) {
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
            (Engine::Cpu, None) => TransportChoice::CpuMmap,
            // Naming an engine asks for the DMA path, also under --engine auto.
            (Engine::Dma | Engine::Auto, Some(via)) => TransportChoice::Dma { engine: Some(via) },
            (Engine::Dma, None) => TransportChoice::Dma { engine: None },
            (Engine::Rdma, None) => TransportChoice::Rdma,
            (Engine::Auto, None) => TransportChoice::Auto,
            // Between two BARs here a NIC copies in loopback: it is the DMA engine.
            (Engine::Nic, Some(via)) => TransportChoice::Dma { engine: Some(via) },
            (Engine::Nic, None) => {
                return Err(usage(
                    "nic_needs_via",
                    "--engine nic between two BARs on this host copies through a NIC in \
                     loopback, and needs that NIC",
                    Some("name the igb NIC bound to vfio-pci with --via BDF"),
                ))
            }
        },
        verify: !cli.no_verify,
        seed,
        allow_register_bars: cli.allow_register_bar,
        access: cli.access.into(),
        cpu_mapping: match cli.cpu_map {
            CpuMapArg::Region => CpuMapping::Region,
            CpuMapArg::DmaBufWc if !matches!(cli.engine, Engine::Cpu) => {
                return Err(usage(
                    "flag_not_applicable",
                    "--cpu-map dma-buf-wc says how the CPU maps the BARs, but the CPU copies \
                     only with --engine cpu"
                        .to_string(),
                    Some("add --engine cpu"),
                ))
            }
            CpuMapArg::DmaBufWc => CpuMapping::DmaBufWc,
        },
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

/// The copy, with the test hook the hidden flags ask for where the build has them.
fn copy(
    cli: &Cli,
    req: &CopyRequest,
    progress: &mut dyn FnMut(Progress),
) -> Result<CopyReport, CopyError> {
    #[cfg(feature = "testing")]
    return peerdma_copy::testing::run(
        req,
        progress,
        &test_hooks(
            cli,
            match cli.test_revoke_side.as_deref() {
                Some("dst") => Side::Dst,
                _ => Side::Src,
            },
        ),
    );
    #[cfg(not(feature = "testing"))]
    return {
        let _ = cli;
        peerdma_copy::run(req, progress)
    };
}

/// What `--test-revoke-after-{bytes,ms}` ask for: `side`'s decode turned off mid-copy.
#[cfg(feature = "testing")]
pub(crate) fn test_hooks(cli: &Cli, side: Side) -> peerdma_copy::testing::Hooks<'static> {
    use peerdma_copy::testing::{Hooks, RevokeTrigger};
    match (cli.test_revoke_after_bytes, cli.test_revoke_after_ms) {
        (Some(bytes), _) => Hooks::revoke(side, RevokeTrigger::AfterBytes(bytes)),
        (None, Some(ms)) => Hooks::revoke(side, RevokeTrigger::After(Duration::from_millis(ms))),
        (None, None) => Hooks::default(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use peerdma_copy::CopyError;

    use super::*;

    /// The test hooks' flags exist only in a build with the feature `testing`: without
    /// it the parser refuses them, and neither --help nor any completion script can
    /// name them. With it they parse and stay hidden. (`cargo test -p peerdma-tools`
    /// checks the build without; the testbed's builds turn the feature on.)
    #[test]
    fn test_hooks_exist_only_with_the_testing_feature() {
        let with = cfg!(feature = "testing");
        let cmd = Cli::command();
        for id in [
            "test_revoke_after_ms",
            "test_revoke_after_bytes",
            "test_revoke_side",
        ] {
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
    fn nic_ends_parse_and_their_flags_stay_on_their_side() {
        let cli = parse(&[
            "01:00.0",
            "udp://10.0.0.2:7000",
            "--via",
            "02:00.0",
            "--bind",
            "10.0.0.1",
        ]);
        assert!(matches!(
            (&cli.src, &cli.dst),
            (End::Local(Target::Bar(_)), Some(End::Remote(r))) if r == "udp://10.0.0.2:7000"
        ));
        assert!(check_flags(&cli.given, CopyKind::NicSend).is_ok());
        let serve = parse(&[
            "--serve",
            "--engine",
            "nic",
            "--via",
            "02:00.0",
            "--listen",
            "10.0.0.2:7000",
            "--mtu",
            "9000",
            "host",
        ]);
        assert!(matches!(serve.engine, Engine::Nic) && serve.mtu == 9000);
        assert!(check_flags(&serve.given, CopyKind::NicServe).is_ok());
        // --bind is the sender's, --qps and --chunk RDMA's or a local copy's.
        for (args, kind, flag) in [
            (
                &["--serve", "--engine", "nic", "--bind", "10.0.0.1", "host"][..],
                CopyKind::NicServe,
                "--bind",
            ),
            (
                &["host", "udp://10.0.0.2", "--qps", "2"][..],
                CopyKind::NicSend,
                "--qps",
            ),
            (
                &["host", "udp://10.0.0.2", "--chunk", "4K"][..],
                CopyKind::NicSend,
                "--chunk",
            ),
            (
                &["00:10.0", "00:11.0", "--mtu", "9000"][..],
                CopyKind::Local,
                "--mtu",
            ),
            (
                &["host", "udp://10.0.0.2", "--dst-offset", "4K"][..],
                CopyKind::NicSend,
                "--dst-offset",
            ),
            (
                &["--serve", "--engine", "nic", "--src-bar", "2", "host"][..],
                CopyKind::NicServe,
                "--src-bar",
            ),
            (
                &["host", "rdma://10.0.0.2", "--dst-bar", "2"][..],
                CopyKind::Send,
                "--dst-bar",
            ),
        ] {
            let e = check_flags(&parse(args).given, kind)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(flag) && e.contains("only applies to"),
                "{args:?}: {e}"
            );
        }
        for (bad, want) in [("0", "1 or more seconds"), ("1.5", "whole seconds")] {
            let e = Cli::try_parse_from(["p2pcopy", "host", "udp://10.0.0.2", "--timeout", bad])
                .err()
                .unwrap_or_else(|| panic!("--timeout {bad} is refused"))
                .to_string();
            assert!(e.contains(want), "{e}");
        }
        for bad in ["575", "9001", "x"] {
            let e = Cli::try_parse_from(["p2pcopy", "host", "udp://10.0.0.2", "--mtu", bad])
                .err()
                .unwrap_or_else(|| panic!("--mtu {bad} is refused"))
                .to_string();
            assert!(e.contains("576 to 9000"), "{e}");
        }
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
    fn a_zero_transfer_size_is_refused_not_raised() {
        let e = Cli::try_parse_from(["p2pcopy", "nvme:00:12.0", "00:11.0", "--transfer-size", "0"])
            .err()
            .expect("--transfer-size 0 is refused")
            .to_string();
        assert!(
            e.contains("'0'") && e.contains("--transfer-size") && e.contains("128K"),
            "{e}"
        );
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
    fn iommufd_is_still_accepted_as_the_dma_engine() {
        let cli =
            Cli::try_parse_from(["p2pcopy", "00:10.0", "00:11.0", "--engine", "iommufd"]).unwrap();
        assert!(matches!(cli.engine, Engine::Dma));
        let cli = Cli::try_parse_from(["p2pcopy", "00:10.0", "00:11.0"]).unwrap();
        assert!(matches!(cli.engine, Engine::Auto));
    }
}
