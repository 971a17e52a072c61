//! Guest side of the revoke chaos check (`tests/tests/chaos.rs`): copies run through
//! p2pcopy's library API (the CPU path between two ivshmem BARs and into nvme's CMB, the
//! DMA path through edu, and the NVMe engine reading its namespace into ivshmem's BAR)
//! while a second thread revokes one side at random intervals through the exporter's
//! `Device` operations: memory decode off and on, D3hot and back to D0,
//! `VFIO_DEVICE_RESET` and FLR where the device has them. On the NVMe kind one side is
//! the controller itself: the engine's registers are revoked or reset under it.
//!
//! It reports one JSON line per copy and a summary, with what the host asserts:
//! every copy ends verified or with the revoke error (never a mismatch, never another
//! error); while a side was held revoked the copy moved at most the one step already in
//! flight; no 8-byte word of this copy's pattern lies in the destination past the step
//! that met the revoke; every wait is bounded (longest copy, longest revoke operation);
//! fds and mappings are flat after the warm-up copy.
//!
//! Usage (in the testbed): `peerdma-guest-chaos [--revokes N] [--seed N] [--max-seconds N]`

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use peerdma_copy::testing::{self, Alongside, Hooks};
use peerdma_copy::{
    default_bar, CopyError, CopyRequest, EndpointSpec, NvmeTarget, StorageRequest, Target,
    TransportChoice,
};
use peerdma_engine::NvmeOptions;
use peerdma_exporter::{Device, Error, OpenOptions, PowerState};
use peerdma_host::Bdf;
use peerdma_testbed::manifest::Manifest;
use peerdma_testbed::process::{fd_count as fds, map_count as maps};
use peerdma_testbed::rng::Rng;
use serde_json::{json, Value};

/// One revoke the chaos thread made.
#[derive(Clone, Debug)]
struct Revoke {
    op: &'static str,
    side: &'static str,
    /// Bytes the copy had moved when the revoke was in force (observed).
    done_at_revoke: u64,
    /// Bytes moved when the revoke was lifted (held revokes only).
    done_at_restore: u64,
    /// How long the revoking operation itself took.
    op_us: u64,
}

/// The chaos thread's state, shared with the copy.
struct Chaos {
    rng: Mutex<Rng>,
    done: AtomicU64,
    /// The copy's step (from [`Alongside::step`]).
    step: AtomicU64,
    /// Revokes still to make in the whole run.
    budget: AtomicU64,
    log: Mutex<Vec<Revoke>>,
    errors: Mutex<Vec<String>>,
    /// Operations a device refused as unsupported (ivshmem has no reset, FLR or PM).
    unsupported: Mutex<Vec<(Bdf, &'static str)>>,
}

const OPS: [&str; 4] = ["decode", "D3hot", "reset", "flr"];

impl Chaos {
    fn random(&self, n: u64) -> u64 {
        self.rng.lock().expect("rng").below(n)
    }

    /// The operation for the next revoke of `dev`: the least used so far among those
    /// the device supports (ties at random), so that every kind is met even in a
    /// short run, whatever the seed.
    fn pick(&self, dev: &Device) -> &'static str {
        let unsupported = self.unsupported.lock().expect("unsupported");
        let log = self.log.lock().expect("log");
        let used = |op: &str| log.iter().filter(|r| r.op == op).count();
        let candidates: Vec<&'static str> = OPS
            .into_iter()
            .filter(|op| !unsupported.contains(&(dev.bdf(), *op)))
            .collect();
        let least = candidates.iter().map(|op| used(op)).min().unwrap_or(0);
        let ties: Vec<&'static str> = candidates
            .into_iter()
            .filter(|op| used(op) == least)
            .collect();
        drop((unsupported, log));
        match ties.len() {
            0 => "decode",
            n => ties[self.random(n as u64) as usize],
        }
    }

    /// Whether `dev` may support a kind of revoke the run has not met yet.
    fn has_unmet(&self, dev: &Device) -> bool {
        let unsupported = self.unsupported.lock().expect("unsupported");
        let log = self.log.lock().expect("log");
        OPS.into_iter()
            .any(|op| !unsupported.contains(&(dev.bdf(), op)) && !log.iter().any(|r| r.op == op))
    }

    /// One revoke of `dev`, held for a random short while where the revoke lasts.
    fn revoke(&self, side: &'static str, dev: &Device) {
        let op = self.pick(dev);
        let start = Instant::now();
        let result: Result<bool, Error> = match op {
            "decode" => dev.set_memory_decode(false).map(|()| true),
            "D3hot" => dev.set_power_state(PowerState::D3hot).map(|()| true),
            "reset" => dev.reset().map(|()| false),
            _ => dev.flr().map(|()| false),
        };
        let op_us = start.elapsed().as_micros() as u64;
        let held = match result {
            Ok(held) => held,
            // Devices without reset, FLR or PM: never that op on it again.
            Err(
                Error::ResetUnsupported { .. }
                | Error::FlrUnsupported { .. }
                | Error::PowerStateUnsupported { .. },
            ) => {
                self.unsupported
                    .lock()
                    .expect("unsupported")
                    .push((dev.bdf(), op));
                return;
            }
            Err(e) => {
                self.errors
                    .lock()
                    .expect("errors")
                    .push(format!("{op} on {side}: {e}"));
                return;
            }
        };
        let done_at_revoke = self.done.load(Ordering::Acquire);
        if held {
            std::thread::sleep(Duration::from_micros(self.random(3000)));
        }
        let done_at_restore = self.done.load(Ordering::Acquire);
        let restored = match op {
            "decode" => dev.set_memory_decode(true),
            "D3hot" => dev.set_power_state(PowerState::D0),
            _ => Ok(()),
        };
        if let Err(e) = restored {
            self.errors
                .lock()
                .expect("errors")
                .push(format!("restoring after {op} on {side}: {e}"));
        }
        self.log.lock().expect("log").push(Revoke {
            op,
            side,
            done_at_revoke,
            done_at_restore,
            op_us,
        });
        self.budget.fetch_sub(1, Ordering::AcqRel);
    }

    /// The hook: revokes a random side at random intervals while the copy runs.
    fn run(&self, a: Alongside<'_>, max_interval_us: u64) {
        self.step.store(a.step, Ordering::Release);
        while a.copying() {
            // A random pause, cut short when the copy ends.
            let copying = a.wait_for(Duration::from_micros(self.random(max_interval_us)));
            if !copying || self.budget.load(Ordering::Acquire) == 0 {
                continue;
            }
            // A side whose device still has a kind of revoke not yet met goes first, so
            // a short run meets every kind its devices support; otherwise either side.
            let (src_new, dst_new) = (self.has_unmet(a.src), self.has_unmet(a.dst));
            let src_side = match (src_new, dst_new) {
                (true, false) => true,
                (false, true) => false,
                _ => self.random(2) == 0,
            };
            if src_side {
                self.revoke("src", a.src);
            } else {
                self.revoke("dst", a.dst);
            }
        }
    }
}

/// How a kind of copy moves its bytes.
#[derive(Clone, Copy)]
enum Via {
    /// `peerdma_copy::run` between two BARs along this path.
    Path(TransportChoice),
    /// `peerdma_copy::run_storage`: the NVMe controller `src` reads namespace 1 into `dst`.
    NvmeEngine,
}

/// One kind of copy of the run.
struct Kind {
    name: &'static str,
    src: Bdf,
    dst: Bdf,
    via: Via,
    size: u64,
    chunk: u64,
    /// Longest pause between two revokes.
    max_interval_us: u64,
}

fn request(k: &Kind, path: TransportChoice, seed: u64) -> CopyRequest {
    CopyRequest {
        size: Some(k.size),
        chunk: k.chunk,
        transport: path,
        ..CopyRequest::new(EndpointSpec::whole(k.src), EndpointSpec::whole(k.dst), seed)
    }
}

fn storage_request(k: &Kind, seed: u64) -> StorageRequest {
    StorageRequest {
        size: Some(k.size),
        chunk: k.chunk,
        // Small commands and a shallow queue: a step (4 × depth × command) of 512 KiB.
        nvme: NvmeOptions {
            queue_depth: 2,
            transfer_size: 64 << 10,
            ..NvmeOptions::default()
        },
        ..StorageRequest::new(
            Target::Nvme(NvmeTarget::first_namespace(k.src)),
            Target::Bar(EndpointSpec::whole(k.dst)),
            seed,
        )
    }
}

/// Runs one copy of kind `k` with `hook` alongside: whether it ended verified, or
/// the error.
fn copy(
    k: &Kind,
    seed: u64,
    progress: &mut dyn FnMut(peerdma_copy::Progress),
    hook: &(dyn Fn(Alongside<'_>) + Sync),
) -> Result<bool, CopyError> {
    let hooks = Hooks::alongside(hook);
    match k.via {
        Via::Path(path) => testing::run(&request(k, path, seed), progress, &hooks)
            .map(|r| r.verified == Some(true)),
        Via::NvmeEngine => testing::run_storage(&storage_request(k, seed), progress, &hooks)
            .map(|r| r.verified == Some(true)),
    }
}

/// The destination's first `size` bytes, read once the device is live again.
fn read_back(bdf: Bdf, size: u64) -> Result<Vec<u8>> {
    let dev = Device::open_with(bdf, OpenOptions::default())?;
    if dev.power_state()? != Some(PowerState::D0) && dev.power_state()?.is_some() {
        dev.set_power_state(PowerState::D0)?;
    }
    if !dev.memory_decode()? {
        dev.set_memory_decode(true)?;
    }
    let bar = default_bar(&dev)?;
    let map = dev.map_region_range(bar.index, 0, size)?;
    let mut out = vec![0u8; size as usize];
    // The device is live (decode on, D0) and nothing else revokes it now.
    map.read_bytes(0, &mut out)?;
    Ok(out)
}

/// Offsets (8-byte aligned, at or past `from`) whose word is this copy's pattern.
fn pattern_words_from(seed: u64, bytes: &[u8], from: u64) -> Vec<u64> {
    let mut want = [0u8; 8];
    let mut hits = Vec::new();
    let mut at = from.next_multiple_of(8);
    while at + 8 <= bytes.len() as u64 {
        peerdma_copy::pattern::fill(seed, at, &mut want);
        if bytes[at as usize..at as usize + 8] == want && want != [0u8; 8] {
            hits.push(at);
        }
        at += 8;
    }
    hits
}

fn run() -> Result<Value> {
    let mut revokes = 1000u64;
    let mut seed = Rng::fresh_seed();
    let mut max_seconds = 1200u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--revokes" => revokes = value()?.parse()?,
            "--seed" => seed = value()?.parse()?,
            "--max-seconds" => max_seconds = value()?.parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let m = Manifest::load_in_guest()?;
    let bdf = |role: &str| -> Result<Bdf> {
        Ok(m.device(role)
            .with_context(|| format!("no role {role}"))?
            .bdf
            .parse()?)
    };
    let (iv0, iv1, edu, nvme) = (
        bdf("ivshmem0")?,
        bdf("ivshmem1")?,
        bdf("edu0")?,
        bdf("nvme0")?,
    );
    let kinds = [
        Kind {
            name: "cpu ivshmem0 -> ivshmem1",
            src: iv0,
            dst: iv1,
            via: Via::Path(TransportChoice::CpuMmap),
            size: 1 << 20,
            chunk: 16 << 10,
            max_interval_us: 8_000,
        },
        Kind {
            name: "cpu ivshmem0 -> nvme0 CMB",
            src: iv0,
            dst: nvme,
            via: Via::Path(TransportChoice::CpuMmap),
            size: 512 << 10,
            chunk: 16 << 10,
            max_interval_us: 8_000,
        },
        Kind {
            name: "dma via edu0 ivshmem0 -> ivshmem1",
            src: iv0,
            dst: iv1,
            via: Via::Path(TransportChoice::Dma { engine: Some(edu) }),
            size: 8 << 10,
            chunk: 4 << 10,
            max_interval_us: 40_000,
        },
        Kind {
            name: "nvme engine nvme0 -> ivshmem1",
            src: nvme,
            dst: iv1,
            via: Via::NvmeEngine,
            size: 4 << 20,
            chunk: 512 << 10,
            max_interval_us: 20_000,
        },
    ];
    let chaos = Chaos {
        rng: Mutex::new(Rng::new(seed)),
        done: AtomicU64::new(0),
        step: AtomicU64::new(0),
        budget: AtomicU64::new(revokes),
        log: Mutex::new(Vec::new()),
        errors: Mutex::new(Vec::new()),
        unsupported: Mutex::new(Vec::new()),
    };
    // Warm-up copies of each kind with a hook that revokes nothing: what the process
    // keeps on purpose (cached thread stacks, the hook thread's malloc arena, the SIGBUS
    // handler) is there before the counts are taken.
    for _ in 0..2 {
        for k in &kinds {
            copy(k, 1, &mut |_| {}, &|a| {
                let mut words = vec![format!("{}", a.step)];
                while a.wait_for(Duration::from_millis(1)) {
                    words.push(String::from("warm"));
                }
                drop(words);
            })
            .with_context(|| format!("warm-up copy {}", k.name))?;
        }
    }
    let (fds_before, maps_before) = (fds(), maps());
    let started = Instant::now();
    let mut copies = Vec::new();
    let (mut verified, mut revoked, mut failed) = (0u64, 0u64, 0u64);
    let mut max_copy_s = 0f64;
    let mut round = 0u64;
    while chaos.budget.load(Ordering::Acquire) > 0 && started.elapsed().as_secs() < max_seconds {
        let k = &kinds[(round % kinds.len() as u64) as usize];
        round += 1;
        let copy_seed = seed ^ round.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        chaos.done.store(0, Ordering::Release);
        let first_revoke = chaos.log.lock().expect("log").len();
        let t = Instant::now();
        let result = copy(
            k,
            copy_seed,
            &mut |p| chaos.done.store(p.done, Ordering::Release),
            &|a| chaos.run(a, k.max_interval_us),
        );
        let secs = t.elapsed().as_secs_f64();
        max_copy_s = max_copy_s.max(secs);
        let these: Vec<Revoke> = chaos.log.lock().expect("log")[first_revoke..].to_vec();
        let step = chaos.step.load(Ordering::Acquire).max(k.chunk.min(4096));
        // While a side was held revoked, at most the step already in flight completed.
        let moved_while_revoked: Vec<String> = these
            .iter()
            .filter(|r| r.done_at_restore > r.done_at_revoke + step)
            .map(|r| format!("{r:?}"))
            .collect();
        let (outcome, late_words) = match &result {
            Ok(true) => {
                verified += 1;
                ("verified".to_string(), Vec::new())
            }
            Ok(_) => {
                failed += 1;
                ("not verified".to_string(), Vec::new())
            }
            Err(CopyError::Revoked { done, .. }) => {
                revoked += 1;
                let bytes = read_back(k.dst, k.size)?;
                let late = pattern_words_from(copy_seed, &bytes, done + step);
                ("revoked".to_string(), late)
            }
            Err(e) => {
                failed += 1;
                (format!("error: {e}"), Vec::new())
            }
        };
        copies.push(json!({
            "kind": k.name, "outcome": outcome, "seconds": secs,
            "revokes": these.len(),
            "ops": these.iter().map(|r| format!("{} {}", r.op, r.side)).collect::<Vec<_>>(),
            "moved_while_revoked": moved_while_revoked,
            "late_words": late_words.len(), "first_late_word": late_words.first(),
            "error": result.as_ref().err().map(ToString::to_string),
        }));
    }
    let log = chaos.log.lock().expect("log").clone();
    let mut by_op = serde_json::Map::new();
    for r in &log {
        let key = format!("{} {}", r.op, r.side);
        let n = by_op.get(&key).and_then(Value::as_u64).unwrap_or(0);
        by_op.insert(key, (n + 1).into());
    }
    let max_op_us = log.iter().map(|r| r.op_us).max().unwrap_or(0);
    Ok(json!({
        "seed": seed, "revokes_asked": revokes, "revokes": log.len(), "by_op": by_op,
        "copies": copies.len(), "verified": verified, "revoked": revoked, "failed": failed,
        "max_copy_seconds": max_copy_s, "max_revoke_op_us": max_op_us,
        "seconds": started.elapsed().as_secs_f64(),
        "op_errors": *chaos.errors.lock().expect("errors"),
        "fds_before": fds_before, "fds_after": fds(),
        "maps_before": maps_before, "maps_after": maps(),
        "copy_log": copies,
    }))
}

fn main() -> ExitCode {
    peerdma_testbed::process::report("peerdma-guest-chaos", run())
}
