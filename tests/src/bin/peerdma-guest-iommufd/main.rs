//! Guest side of the iommufd import suite: QEMU's edu DMAs between host memory
//! and ivshmem0's BAR2 through an iommufd IOAS where the BAR is mapped as a
//! vfio-pci dma-buf. Prints one JSON line per scenario; the host checks the
//! lines and ivshmem0's backing file.
//!
//! Usage (in the testbed):
//! `peerdma-guest-iommufd SCENARIO... [--c-lib PATH] [--iters N] [--len BYTES]`
//!
//! Scenarios:
//! - `host-to-bar`: a pattern in host memory → edu buffer → the BAR dma-buf mapping;
//!   the host finds it in the backing file.
//! - `bar-to-host`: a pattern written into the BAR → edu → host memory, checked here.
//! - `guard`: a DMA that runs past an automatically placed mapping faults in the guard
//!   gap (the neighbour mapping's bytes stay as they were); the control pair mapped
//!   back to back without a gap shows the same overrun landing.
//! - `revoke`: memory decode off on ivshmem0 kills the mapping (a DMA does not land),
//!   decode on leaves it dead, `remap` brings it back at the same IOVA.
//! - `errors`: the explained errors (multi-range buffer, foreign exporter, DMA mask,
//!   wrong iommufd, not an edu) and no fd left behind.
//! - `stock`: the full request on a kernel without iommufd fails with the explained
//!   error and leaves no fd behind.
//! - `bench`: map/unmap of a dma-buf, Rust library against the same ioctls from C
//!   (`--c-lib`: importer/benches/iommufd_map_unmap.c built with `-shared -fPIC`).
//! - `revoke-latency`: from the config write that turns decode off to the moment the
//!   importer sees its mappings revoked, with 1 and 64 buffers mapped (`--iters`
//!   trials each), and how long that write blocks.
//! - `contract`: the engine contract (host→BAR, BAR→host, BAR→BAR, read-only
//!   destination, revoke, unmapped IOVA) on every engine device of the run through
//!   `AttachedEngine`'s checked copy; one typed `ContractCase` line per (engine, case).
//! - `nic`: the igb engine (igb0) beyond the contract: control frames in host buffers
//!   (ARP whole, UDP split), the unicast-only filter, its register BAR revoked (the
//!   copy fails as `igb_revoked`), a copy under 18 bytes refused, a wire link.
//! - `nic-wire`: two VMs, an igb each, on the testbed's wire: ARP, then 200 UDP
//!   datagrams NIC (IOVA) → wire → NIC (IOVA), headers and bytes checked, a verdict back.
//! - `all`: every reference-kernel scenario but `bench` and `revoke-latency`.

mod faults;
mod rig;
mod scenario;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use peerdma_testbed::manifest::Manifest;
use serde_json::{json, Value};

use crate::faults::Faults;
use crate::rig::{setup, MIB};
use crate::scenario::bar_to_host::bar_to_host;
use crate::scenario::bench::bench;
use crate::scenario::checked::checked;
use crate::scenario::errors::errors;
use crate::scenario::guard::guard;
use crate::scenario::host_to_bar::host_to_bar;
use crate::scenario::revoke::revoke;
use crate::scenario::revoke_latency::revoke_latency;
use crate::scenario::stock::stock;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Opts {
    scenarios: Vec<String>,
    c_lib: Option<String>,
    iters: u64,
    len: u64,
}

fn parse_args() -> Result<Opts> {
    let mut o = Opts {
        scenarios: Vec::new(),
        c_lib: None,
        iters: 2000,
        len: 2 * MIB,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--c-lib" => o.c_lib = Some(value()?),
            "--iters" => o.iters = value()?.parse()?,
            "--len" => o.len = value()?.parse()?,
            s if s.starts_with("--") => bail!("unknown option {s}"),
            s => o.scenarios.push(s.to_string()),
        }
    }
    if o.scenarios.is_empty() {
        bail!("usage: peerdma-guest-iommufd SCENARIO... (checked contract nic nic-wire host-to-bar bar-to-host guard revoke errors stock bench revoke-latency all)");
    }
    Ok(o)
}

fn run() -> Result<bool> {
    let opts = parse_args()?;
    let manifest = Manifest::load_in_guest()?;
    let mut names = Vec::new();
    for s in &opts.scenarios {
        if s == "all" {
            names.extend(
                [
                    "host-to-bar",
                    "bar-to-host",
                    "guard",
                    "revoke",
                    "errors",
                    "checked",
                    "contract",
                    "nic",
                ]
                .map(String::from),
            );
        } else {
            names.push(s.clone());
        }
    }
    let mut all_ok = true;
    let mut emit = |name: &str, r: Result<Value>| {
        let v = match r {
            Ok(mut v) => {
                v["scenario"] = json!(name);
                v
            }
            Err(e) => json!({"scenario": name, "ok": false, "error": format!("{e:#}")}),
        };
        all_ok &= v["ok"] == json!(true);
        println!("{v}");
    };
    if names.iter().any(|n| n == "nic-wire") {
        // Two VMs (--peer-devices), nothing else: no rig.
        emit("nic-wire", crate::scenario::nic_wire::nic_wire(&manifest));
        names.retain(|n| n != "nic-wire");
    }
    if names.iter().any(|n| n == "stock") {
        emit("stock", stock(&manifest));
        names.retain(|n| n != "stock");
    }
    // After the rig is gone (it holds edu raw; this takes it through AttachedEngine),
    // and last: its refused DMA must not stand in the fault log between the others'.
    let checked_too = names.iter().any(|n| n == "checked");
    let contract_too = names.iter().any(|n| n == "contract");
    let nic_too = names.iter().any(|n| n == "nic");
    names.retain(|n| n != "checked" && n != "contract" && n != "nic");
    if !names.is_empty() {
        let t = Instant::now();
        let mut rig = setup(&manifest)?;
        eprintln!("setup: {:.1} ms", ms(t.elapsed()));
        let mut faults = Faults::new();
        for name in &names {
            let t = Instant::now();
            let r = match name.as_str() {
                "host-to-bar" => host_to_bar(&mut rig),
                "bar-to-host" => bar_to_host(&mut rig),
                "guard" => guard(&mut rig, &mut faults),
                "revoke" => revoke(&mut rig, &mut faults),
                "errors" => errors(&mut rig),
                "bench" => bench(&mut rig, &opts),
                "revoke-latency" => revoke_latency(&mut rig, &opts),
                other => Err(anyhow!("unknown scenario {other}")),
            };
            let r = r.map(|mut v| {
                v["wall_ms"] = json!(ms(t.elapsed()));
                v
            });
            emit(name, r);
        }
        drop(rig);
    }
    if checked_too {
        let t = Instant::now();
        emit(
            "checked",
            checked(&manifest).map(|mut v| {
                v["wall_ms"] = json!(ms(t.elapsed()));
                v
            }),
        );
    }
    if nic_too {
        // Before the contract (no IOMMU fault of its own): igb0 through AttachedEngine.
        let t = Instant::now();
        emit(
            "nic",
            crate::scenario::nic::nic(&manifest).map(|mut v| {
                v["wall_ms"] = json!(ms(t.elapsed()));
                v
            }),
        );
    }
    if contract_too {
        // Last of all: it takes every engine through AttachedEngine, and its faulting
        // cases come after every other scenario's.
        for case in crate::scenario::contract::contract(&manifest)? {
            all_ok &= case.ok;
            println!("{}", serde_json::to_string(&case)?);
        }
    }
    Ok(all_ok)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("peerdma-guest-iommufd: {e:#}");
            ExitCode::from(2)
        }
    }
}
