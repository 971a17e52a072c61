//! Guest side of the p2pcopy suite's leak check: runs the p2pcopy library with bad
//! requests, a revoked copy and a DMA copy whose writes the IOMMU refuses, and reports the process's fd and mapping counts before
//! and after, as one JSON line.
//!
//! Usage (in the testbed): `peerdma-guest-p2pcopy SRC-ROLE DST-ROLE`

use std::process::ExitCode;

use anyhow::{Context, Result};
use peerdma_copy::testing::{self, Hooks, RevokeTrigger};
use peerdma_copy::{CopyRequest, EndpointSpec, Side, TransportChoice};
use peerdma_host::Bdf;
use peerdma_testbed::manifest::Manifest;

use peerdma_testbed::process::{fd_count as fds, map_count as maps};

fn request(src: Bdf, dst: Bdf) -> CopyRequest {
    CopyRequest {
        size: Some(1 << 20),
        transport: TransportChoice::CpuMmap,
        ..CopyRequest::new(EndpointSpec::whole(src), EndpointSpec::whole(dst), 1)
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
    let (src, dst) = (bdf(&args[0])?, bdf(&args[1])?);
    // Each case with the test hooks it runs with (none for most).
    let none = Hooks::default;
    let cases = || -> Result<Vec<(&'static str, CopyRequest, Hooks<'static>)>> {
        Ok(vec![
            ("same device", request(src, src), none()),
            (
                "unaligned",
                CopyRequest {
                    src: EndpointSpec {
                        offset: 0x123,
                        ..request(src, dst).src
                    },
                    ..request(src, dst)
                },
                none(),
            ),
            (
                "too big",
                CopyRequest {
                    size: Some(1 << 40),
                    ..request(src, dst)
                },
                none(),
            ),
            (
                "absent BAR",
                CopyRequest {
                    src: EndpointSpec {
                        bar: Some(5),
                        ..request(src, dst).src
                    },
                    ..request(src, dst)
                },
                none(),
            ),
            ("unknown BDF", request("0000:0e:00.0".parse()?, dst), none()),
            (
                "revoked mid-copy",
                CopyRequest {
                    size: Some(32 << 20),
                    chunk: 256 << 10,
                    ..request(src, dst)
                },
                Hooks::revoke(Side::Src, RevokeTrigger::AfterBytes(8 << 20)),
            ),
            (
                // edu writes past the destination's mapping: the vIOMMU refuses every
                // write and the kernel logs it; the error must name that as the cause.
                "IOMMU fault",
                CopyRequest {
                    size: Some(8 << 10),
                    chunk: 4 << 10,
                    transport: TransportChoice::Dma { engine: None },
                    ..request(src, dst)
                },
                Hooks::fault_dst(),
            ),
        ])
    };
    // Round 1 warms up what the process keeps on purpose (glibc's cache of thread stacks,
    // the SIGBUS handler); round 2 must then leave the counts exactly where they were.
    let mut errors = Vec::new();
    let mut counts = Vec::new();
    for _round in 0..2 {
        testing::run(&request(src, dst), &mut |_| {}, &none())?;
        errors.clear();
        for (name, req, hooks) in cases()? {
            match testing::run(&req, &mut |_| {}, &hooks) {
                Ok(_) => errors.push(serde_json::json!({"case": name, "error": null})),
                Err(e) => errors.push(serde_json::json!({"case": name, "error": e.to_string()})),
            }
        }
        counts.push((fds(), maps()));
    }
    let ((fd0, map0), (fd1, map1)) = (counts[0], counts[1]);
    Ok(serde_json::json!({
        "fds_before": fd0, "fds_after": fd1,
        "maps_before": map0, "maps_after": map1,
        "cases": errors,
    }))
}

fn main() -> ExitCode {
    peerdma_testbed::process::report("peerdma-guest-p2pcopy", run())
}
