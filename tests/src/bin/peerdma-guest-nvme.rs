//! Guest side of the NVMe suite's error and leak checks: runs the p2pcopy library's
//! storage copies (NVMe → BAR) with bad requests and a revoke mid-stream, twice, and
//! reports each case's error and the process's fd and mapping counts after each round,
//! as one JSON line.
//!
//! Then, on one engine in this process: a transfer whose commands never reach the
//! controller (the driver's test hook) must fail with the timeout naming the command,
//! queue and duration, within a bound, and the next transfer on the same engine must
//! read the image's bytes.
//!
//! Usage (in the testbed): `peerdma-guest-nvme NVME-ROLE BAR-ROLE IMAGE-SEED`

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use peerdma_copy::testing::{self, Hooks, RevokeTrigger};
use peerdma_copy::{EndpointSpec, NvmeTarget, Side, StorageRequest, Target};
use peerdma_engine::nvme::command::Io;
use peerdma_engine::nvme::IoStats;
use peerdma_engine::{AttachedEngine, EngineOptions, NvmeOptions};
use peerdma_host::Bdf;
use peerdma_importer::iommufd::{Iommufd, Iova, Prot, UserBuffer};
use peerdma_testbed::manifest::Manifest;
use peerdma_testbed::process::{fd_count as fds, map_count as maps};

fn request(nvme: Bdf, bar: Bdf) -> StorageRequest {
    StorageRequest {
        size: Some(1 << 20),
        nvme: NvmeOptions {
            queue_depth: 4,
            command_timeout: Duration::from_secs(10),
            ..NvmeOptions::default()
        },
        ..StorageRequest::new(
            Target::Nvme(NvmeTarget::first_namespace(nvme)),
            Target::Bar(EndpointSpec::whole(bar)),
            1,
        )
    }
}

fn run() -> Result<serde_json::Value> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let m = Manifest::load_in_guest()?;
    let bdf = |role: &str| -> Result<Bdf> {
        Ok(m.device(role)
            .with_context(|| format!("no role {role}"))?
            .bdf
            .parse()?)
    };
    let (nvme, bar) = (bdf(&args[0])?, bdf(&args[1])?);
    let at = |lba| {
        Target::Nvme(NvmeTarget {
            bdf: nvme,
            nsid: 1,
            lba,
        })
    };
    // Each case with the test hooks it runs with (none for most).
    let none = Hooks::default;
    let cases = || -> Vec<(&'static str, StorageRequest, Hooks<'static>)> {
        vec![
            (
                "LBA range past the namespace",
                StorageRequest {
                    src: at(262_144 - 16),
                    ..request(nvme, bar)
                },
                none(),
            ),
            (
                "size not a block multiple",
                StorageRequest {
                    size: Some(1000),
                    ..request(nvme, bar)
                },
                none(),
            ),
            (
                "not an NVMe controller",
                StorageRequest {
                    src: Target::Nvme(NvmeTarget {
                        bdf: bar,
                        nsid: 1,
                        lba: 0,
                    }),
                    dst: Target::Host,
                    ..request(nvme, bar)
                },
                none(),
            ),
            (
                "namespace 2 (absent)",
                StorageRequest {
                    src: Target::Nvme(NvmeTarget {
                        bdf: nvme,
                        nsid: 2,
                        lba: 0,
                    }),
                    ..request(nvme, bar)
                },
                none(),
            ),
            (
                "revoked mid-stream",
                StorageRequest {
                    size: Some(32 << 20),
                    ..request(nvme, bar)
                },
                // The BAR is the destination of an NVMe read.
                Hooks::revoke(Side::Dst, RevokeTrigger::AfterBytes(4 << 20)),
            ),
        ]
    };
    // Round 1 warms up what the process keeps on purpose (thread stacks, the SIGBUS
    // handler); round 2 must then leave the counts exactly where they were.
    let mut errors = Vec::new();
    let mut counts = Vec::new();
    for _round in 0..2 {
        peerdma_copy::run_storage(&request(nvme, bar), &mut |_| {})?;
        errors.clear();
        for (name, req, hooks) in cases() {
            match testing::run_storage(&req, &mut |_| {}, &hooks) {
                Ok(r) => errors.push(serde_json::json!({"case": name, "error": null, "report": r})),
                Err(e) => errors.push(serde_json::json!({"case": name, "error": e.to_string()})),
            }
        }
        counts.push((fds(), maps()));
    }
    let ((fd0, map0), (fd1, map1)) = (counts[0], counts[1]);
    // After all that, the controller still moves data in this process.
    let after = peerdma_copy::run_storage(
        &StorageRequest {
            dst: Target::Host,
            ..request(nvme, bar)
        },
        &mut |_| {},
    )?;
    let seed: u64 = args.get(2).context("the image seed")?.parse()?;
    let timeout = timeout_then_reuse(nvme, seed)?;
    Ok(serde_json::json!({
        "timeout": timeout,
        "fds_before": fd0, "fds_after": fd1,
        "maps_before": map0, "maps_after": map1,
        "cases": errors,
        "after": after,
    }))
}

/// A stalled transfer times out with its name, then the same engine reads the image.
fn timeout_then_reuse(nvme: Bdf, seed: u64) -> Result<serde_json::Value> {
    let iommufd = Iommufd::open()?;
    let opts = EngineOptions {
        nvme: NvmeOptions {
            queue_depth: 4,
            command_timeout: Duration::from_secs(1),
            ..NvmeOptions::default()
        },
        ..EngineOptions::default()
    };
    let mut engine = AttachedEngine::open_with(nvme, &iommufd, &opts)?;
    let len = 1usize << 20;
    let buf = engine
        .ioas()
        .map_host(UserBuffer::new(len)?, Iova::Guarded, Prot::Write)?;
    let n = engine.nvme_mut().context("not an NVMe engine")?;
    n.stall_next_transfer();
    let t0 = Instant::now();
    let stalled = n.transfer(Io::Read, 0, buf.iova(), len as u64, &mut IoStats::default());
    let waited = t0.elapsed().as_secs_f64();
    let mut stats = IoStats::default();
    n.transfer(Io::Read, 0, buf.iova(), len as u64, &mut stats)
        .context("the transfer after the timeout")?;
    let bytes = buf.buffer().to_vec();
    Ok(serde_json::json!({
        "error": stalled.err().map(|e| e.to_string()),
        "waited_s": waited,
        "after_commands": stats.commands,
        "after_matches_image": peerdma_copy::pattern::first_mismatch(seed, 0, &bytes).is_none(),
    }))
}

fn main() -> ExitCode {
    peerdma_testbed::process::report("peerdma-guest-nvme", run())
}
