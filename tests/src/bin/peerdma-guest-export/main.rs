//! Guest side of the export suite (`tests/tests/export.rs`) and of the export latency
//! benchmark: drives peerdma-exporter against the testbed's vfio-pci devices and prints
//! one JSON line per check with the real values (sizes, errnos, fd counts, states), for
//! the host to assert on. It decides nothing itself: a failed check is a line with
//! unexpected values, and the exit status is 0 unless the program could not run.
//!
//! Usage (inside the testbed, as root):
//!
//! ```text
//! peerdma-guest-export [--access auto|cdev|group] [--devices ROLE,..] [--c-lib PATH]
//!                      [--cycles N] [--batches N] [--cases N] [--seed N] SCENARIO..
//! ```
//!
//! Scenarios: `open`, `handover`, `mmap`, `exports`, `errors`, `revoke`, `iommufd`,
//! `leaks`, `all` (all of these), and `bench` and `oracle` (not part of `all`; `oracle`
//! runs `--cases` random export requests per device, 300 by default, from `--seed`,
//! random by default and printed). Every line carries
//! `scenario`, `check` and `access`; per-device lines also `role` and `bdf`.
//!
//! Where `/dev/iommu` exists, whether the kernel really revoked a buffer is asked of the
//! kernel: `IOMMU_IOAS_MAP_FILE` of the buffer into a private IOAS attaches to it, which
//! the exporter refuses with ENODEV while the buffer is revoked (the `kernel` fields).
//!
//! `--c-lib` names the shared object built from `tests/c/export_bench.c` (raw exports
//! with arguments the library never builds, and the benchmark's C baseline); `bench`
//! compiles it with `cc` when it is not given.

mod clib;
mod device;
mod json;
mod probe;
mod scenario;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use peerdma_exporter::AccessPath;
use peerdma_testbed::manifest::{Manifest, ManifestDevice};
use serde_json::json;

use crate::clib::CLib;
use crate::device::open;
use crate::json::emit;
use crate::probe::KernelProbe;
use crate::scenario::bench::scenario_bench;
use crate::scenario::errors::{scenario_errors, scenario_unknown_bdf};
use crate::scenario::exports::scenario_exports;
use crate::scenario::handover::scenario_handover;
use crate::scenario::iommufd::scenario_iommufd;
use crate::scenario::leaks::scenario_leaks;
use crate::scenario::mmap::scenario_mmap;
use crate::scenario::open::scenario_open;
use crate::scenario::oracle::scenario_oracle;
use crate::scenario::revoke::scenario_revoke;

/// What the command line asks for.
struct Args {
    access: AccessPath,
    access_name: String,
    roles: Option<Vec<String>>,
    c_lib: Option<PathBuf>,
    cycles: u32,
    batches: u32,
    cases: u32,
    seed: u64,
    scenarios: Vec<String>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        access: AccessPath::Auto,
        access_name: "auto".into(),
        roles: None,
        c_lib: None,
        cycles: 10_000,
        batches: 40,
        cases: 300,
        seed: peerdma_testbed::rng::Rng::fresh_seed(),
        scenarios: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--access" => {
                let v = value()?;
                args.access = match v.as_str() {
                    "auto" => AccessPath::Auto,
                    "cdev" => AccessPath::Cdev,
                    "group" => AccessPath::Group,
                    other => bail!("--access {other}: use auto, cdev or group"),
                };
                args.access_name = v;
            }
            "--devices" => args.roles = Some(value()?.split(',').map(str::to_owned).collect()),
            "--c-lib" => args.c_lib = Some(PathBuf::from(value()?)),
            "--cycles" => args.cycles = value()?.parse().context("--cycles")?,
            "--batches" => args.batches = value()?.parse().context("--batches")?,
            "--cases" => args.cases = value()?.parse().context("--cases")?,
            "--seed" => args.seed = value()?.parse().context("--seed")?,
            s if s.starts_with("--") => bail!("unknown option {s}"),
            s => args.scenarios.push(s.to_owned()),
        }
    }
    if args.scenarios.iter().any(|s| s == "all") {
        args.scenarios.retain(|s| s != "all");
        for s in [
            "open", "handover", "mmap", "exports", "errors", "revoke", "iommufd", "leaks",
        ] {
            args.scenarios.push(s.into());
        }
    }
    if args.scenarios.is_empty() {
        bail!(
            "name at least one scenario: open exports errors revoke iommufd leaks all bench oracle"
        );
    }
    Ok(args)
}

/// The devices this run drives.
fn devices(m: &Manifest, roles: &Option<Vec<String>>) -> Vec<ManifestDevice> {
    m.devices
        .iter()
        .filter(|d| d.driver.as_deref() == Some("vfio-pci"))
        .filter(|d| roles.as_ref().is_none_or(|r| r.contains(&d.role)))
        .cloned()
        .collect()
}

fn run() -> Result<()> {
    let a = parse_args()?;
    let m = Manifest::load_in_guest()?;
    let devs = devices(&m, &a.roles);
    let has = |s: &str| a.scenarios.iter().any(|x| x == s);
    emit(
        "meta",
        "run",
        &a.access_name,
        None,
        json!({
            "kernel": m.kernel, "release": m.kernel_release, "iommufd": m.iommufd,
            "roles": devs.iter().map(|d| d.role.clone()).collect::<Vec<_>>(),
            "scenarios": a.scenarios,
        }),
    );
    let c = match (&a.c_lib, has("bench")) {
        (Some(p), _) => Some(CLib::load(p)?),
        (None, true) => Some(CLib::load(&CLib::compile()?)?),
        (None, false) => None,
    };
    let kp = KernelProbe::open()?;
    if has("errors") {
        scenario_unknown_bdf(&a);
    }
    let mut leak_done = false;
    for d in &devs {
        if has("open") {
            scenario_open(&a, d);
        }
        // Each scenario opens the device afresh, so revoke generations start at 0; a
        // device that does not open on this path was reported by `open`.
        if open(d, a.access).is_err() {
            continue;
        }
        if has("handover") {
            scenario_handover(&a, d)?;
        }
        if has("mmap") {
            scenario_mmap(&a, d, &open(d, a.access)?)?;
        }
        if has("exports") {
            scenario_exports(&a, d, &open(d, a.access)?)?;
        }
        if has("errors") {
            scenario_errors(&a, d, &open(d, a.access)?, c.as_ref())?;
        }
        if has("oracle") {
            scenario_oracle(&a, d, &open(d, a.access)?, c.as_ref(), a.cases, a.seed)?;
        }
        if let (true, Some(kp)) = (has("iommufd"), &kp) {
            scenario_iommufd(&a, d, &open(d, a.access)?, kp)?;
        }
        if has("revoke") {
            scenario_revoke(&a, d, open(d, a.access)?, kp.as_ref())?;
        }
        if has("leaks") && !leak_done && d.kind == peerdma_testbed::devices::DeviceKind::IVSHMEM {
            scenario_leaks(&a, d)?;
            leak_done = true;
        }
    }
    if has("bench") {
        let d = devs
            .iter()
            .find(|d| d.kind == peerdma_testbed::devices::DeviceKind::IVSHMEM)
            .context("the bench needs an ivshmem device")?;
        scenario_bench(&a, d, c.as_ref().context("no C library")?)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peerdma-guest-export: {e:#}");
            ExitCode::FAILURE
        }
    }
}
