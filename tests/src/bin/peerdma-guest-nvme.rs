//! Guest side of the NVMe suite's error and leak checks: runs the p2pcopy library's
//! storage copies (NVMe → BAR) with bad requests and a revoke mid-stream, twice, and
//! reports each case's error and the process's fd and mapping counts after each round,
//! as one JSON line.
//!
//! Usage (in the testbed): `peerdma-guest-nvme NVME-ROLE BAR-ROLE`

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use peerdma_exporter::{AccessPath, Bdf};
use peerdma_importer::engine::NvmeOptions;
use peerdma_testbed::manifest::Manifest;
use peerdma_testbed::process::{fd_count as fds, map_count as maps};
use peerdma_tools::p2pcopy::{
    self, EndpointSpec, NvmeTarget, RevokeTrigger, StorageRequest, Target,
};

fn request(nvme: Bdf, bar: Bdf) -> StorageRequest {
    StorageRequest {
        src: Target::Nvme(NvmeTarget {
            bdf: nvme,
            nsid: 1,
            lba: 0,
        }),
        dst: Target::Bar(EndpointSpec {
            bdf: bar,
            bar: None,
            offset: 0,
        }),
        size: Some(1 << 20),
        chunk: 1 << 20,
        iterations: 1,
        nvme: NvmeOptions {
            queue_depth: 4,
            command_timeout: Duration::from_secs(10),
            ..NvmeOptions::default()
        },
        verify: true,
        seed: 1,
        allow_register_bars: false,
        access: AccessPath::Auto,
        revoke_bar: None,
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
    let cases = || -> Vec<(&'static str, StorageRequest)> {
        vec![
            (
                "LBA range past the namespace",
                StorageRequest {
                    src: at(262_144 - 16),
                    ..request(nvme, bar)
                },
            ),
            (
                "size not a block multiple",
                StorageRequest {
                    size: Some(1000),
                    ..request(nvme, bar)
                },
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
            ),
            (
                "revoked mid-stream",
                StorageRequest {
                    size: Some(32 << 20),
                    revoke_bar: Some(RevokeTrigger::AfterBytes(4 << 20)),
                    ..request(nvme, bar)
                },
            ),
        ]
    };
    // Round 1 warms up what the process keeps on purpose (thread stacks, the SIGBUS
    // handler); round 2 must then leave the counts exactly where they were.
    let mut errors = Vec::new();
    let mut counts = Vec::new();
    for _round in 0..2 {
        p2pcopy::run_storage(&request(nvme, bar), &mut |_| {})?;
        errors.clear();
        for (name, req) in cases() {
            match p2pcopy::run_storage(&req, &mut |_| {}) {
                Ok(r) => errors.push(serde_json::json!({"case": name, "error": null, "report": r})),
                Err(e) => errors.push(serde_json::json!({"case": name, "error": e.to_string()})),
            }
        }
        counts.push((fds(), maps()));
    }
    let ((fd0, map0), (fd1, map1)) = (counts[0], counts[1]);
    // After all that, the controller still moves data in this process.
    let after = p2pcopy::run_storage(
        &StorageRequest {
            dst: Target::Host,
            ..request(nvme, bar)
        },
        &mut |_| {},
    )?;
    Ok(serde_json::json!({
        "fds_before": fd0, "fds_after": fd1,
        "maps_before": map0, "maps_after": map1,
        "cases": errors,
        "after": after,
    }))
}

fn main() -> ExitCode {
    peerdma_testbed::process::report("peerdma-guest-nvme", run())
}
