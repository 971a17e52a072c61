//! Guest side of the kernel-NVMe engine suite (`tests/tests/ahead_nvme.rs`): exports
//! `LENGTH` bytes of an ivshmem BAR2 as a dma-buf, registers it with io_uring for the
//! raw namespace of a controller left on the kernel's nvme driver
//! (`peerdma_engine::KernelNvme`), then
//!
//! 1. namespace bytes [0, LENGTH) → dma-buf [0, LENGTH) (READ_FIXED; the host finds the
//!    image's bytes in the ivshmem backing file);
//! 2. dma-buf [0, LENGTH) → namespace bytes [WRITE_AT, WRITE_AT + LENGTH) (WRITE_FIXED;
//!    the host finds them in the NVMe image);
//! 3. a dma-buf offset that is not 4-byte aligned (refused before any I/O, by name).
//!
//! Prints one JSON line; a step that failed is `{"kind", "message"}` (the open too:
//! then no step runs).
//!
//! 4. with `revoke`: REVOKE the dma-buf from this task with nothing in flight, then one
//!    more read (what the engine says about a revoked registration).
//!
//! With `oversize` / `oversize-async` / `oversize-close` instead: the reproducer of the
//! v3 series' leak (see `oversize`); with `revoke-inflight` / `revoke-inflight-thread`:
//! REVOKE with the task's own reads in flight (see `revoke_inflight`). The hanging modes
//! need a throwaway VM with a short `--timeout` (docs/nvme.md).
//!
//! Usage (in the testbed): `peerdma-guest-kernel-nvme BAR-ROLE NVME-ROLE LENGTH WRITE_AT
//! [revoke|oversize|oversize-async|oversize-close|revoke-inflight|revoke-inflight-thread]`

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use peerdma_engine::kernel_nvme::{KernelIoReport, KernelNvme, KernelNvmeError, KernelNvmeOptions};
use peerdma_exporter::{Device, DmaRange};
use peerdma_testbed::manifest::Manifest;
use serde_json::{json, Value};

fn failed(e: &KernelNvmeError) -> Value {
    json!({"kind": e.kind(), "message": e.to_string()})
}

fn outcome(r: Result<KernelIoReport, KernelNvmeError>) -> Value {
    match r {
        Ok(rep) => json!({"bytes": rep.bytes, "ios": rep.ios,
                          "elapsed_us": rep.elapsed.as_micros() as u64}),
        Err(e) => failed(&e),
    }
}

/// The namespace block device of the controller at `bdf` (`/dev/nvmeXn1`). The driver
/// probes asynchronously after boot: bounded at 30 s.
fn block_device(bdf: &str) -> Result<PathBuf> {
    let dir = Path::new("/sys/bus/pci/devices").join(bdf).join("nvme");
    let start = Instant::now();
    loop {
        if let Ok(ctrls) = std::fs::read_dir(&dir) {
            for c in ctrls.flatten() {
                let dev = PathBuf::from(format!("/dev/{}n1", c.file_name().to_string_lossy()));
                if dev.exists() {
                    return Ok(dev);
                }
            }
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("{bdf}: no /dev/nvmeXn1 within 30 s (is it on the kernel nvme driver?)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run() -> Result<Value> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(4..=5).contains(&args.len()) {
        bail!("usage: peerdma-guest-kernel-nvme BAR-ROLE NVME-ROLE LENGTH WRITE_AT [revoke]");
    }
    let manifest = Manifest::load_in_guest()?;
    let role = |r: &str| {
        manifest
            .device(r)
            .with_context(|| format!("no device with role {r} in testbed.json"))
    };
    let bar = role(&args[0])?;
    let nvme = role(&args[1])?;
    let length: u64 = args[2].parse()?;
    let write_at: u64 = args[3].parse()?;
    let dev_path = block_device(&nvme.bdf)?;
    let device = Device::open(bar.bdf.parse()?)?;
    let buf = device.export_dma_buf(2, &[DmaRange { offset: 0, length }])?;
    let mut engine =
        match KernelNvme::open(&dev_path, buf.as_fd(), KernelNvmeOptions { queue_depth: 8 }) {
            Ok(e) => e,
            Err(e) => return Ok(json!({"device": dev_path, "open": failed(&e)})),
        };
    let l = engine.limits();
    if let Some(mode @ ("revoke-inflight" | "revoke-inflight-thread")) =
        args.get(4).map(String::as_str)
    {
        let other = mode == "revoke-inflight-thread";
        return revoke_inflight(engine, device, buf, l.max_io, length, other);
    }
    if let Some(mode @ ("oversize" | "oversize-async" | "oversize-close")) =
        args.get(4).map(String::as_str)
    {
        let revoke = mode != "oversize-close";
        return oversize(
            engine,
            device,
            buf,
            l.max_io,
            mode == "oversize-async",
            revoke,
        );
    }
    let limits = json!({"logical_block": l.logical_block, "max_io": l.max_io,
                        "capacity": l.capacity});
    let read = outcome(engine.read(0, 0, length));
    let write = outcome(engine.write(write_at, 0, length));
    let misaligned = outcome(engine.read(0, 2, l.logical_block));
    // With `revoke` (ahead kernel only): REVOKE the registered dma-buf from this task,
    // nothing in flight (every transfer above drained), then read once more.
    let (revoke, after_revoke) = if args.get(4).map(String::as_str) == Some("revoke") {
        let r = device.revoke_dma_buf(&buf);
        let revoke = match &r {
            Ok(()) => json!("ok"),
            Err(e) => json!({"kind": e.kind(), "message": e.to_string()}),
        };
        (revoke, outcome(engine.read(0, 0, l.logical_block)))
    } else {
        (Value::Null, Value::Null)
    };
    Ok(json!({
        "revoke": revoke,
        "after_revoke": after_revoke,
        "device": dev_path,
        "controller": engine.controller(),
        "dmabuf_size": engine.dmabuf_size(),
        "open": "ok",
        "limits": limits,
        "read": read,
        "write": write,
        "misaligned": misaligned,
    }))
}

/// The v3 series' leak, reproduced (`oversize`; a throwaway VM only): a READ_FIXED within
/// `max_hw_sectors_kb` (creates the dma-buf map), one of twice the limit without
/// IOSQE_ASYNC (`oversize-async`: with it), one within again, then close the ring,
/// REVOKE (not with `oversize-close`), close the dma-buf and the vfio device, each step announced on stdout before it starts (a hang
/// shows as the last announcement). Seen: `oversize` hangs in REVOKE; `oversize-async`
/// does not.
fn oversize(
    mut engine: KernelNvme,
    device: Device,
    buf: peerdma_exporter::DmaBuf,
    max_io: u64,
    async_: bool,
    revoke: bool,
) -> Result<Value> {
    use peerdma_engine::kernel_nvme::{Direction, FixedIo};
    use std::io::Write;
    let say = |s: &str| {
        println!("## {s}");
        let _ = std::io::stdout().flush();
    };
    let io = FixedIo {
        device_offset: 0,
        buf_offset: 0,
        len: (2 * max_io) as u32,
    };
    // A first I/O within the limit creates the dma-buf map (the very first I/O of a
    // registration is punted to io-wq, where the map is made).
    let first = engine.submit_one_unsplit(
        Direction::Read,
        FixedIo {
            len: max_io as u32,
            ..io
        },
        false,
    )?;
    say(&format!("a read within the limit res={first}"));
    say(&format!(
        "oversize read of {} bytes (max_io {max_io}, IOSQE_ASYNC {async_}) submitting",
        io.len
    ));
    let res = engine.submit_one_unsplit(Direction::Read, io, async_)?;
    say(&format!("oversize read res={res}"));
    let again = engine.submit_one_unsplit(
        Direction::Read,
        FixedIo {
            len: max_io as u32,
            ..io
        },
        false,
    )?;
    say(&format!("then a read within the limit res={again}"));
    drop(engine);
    say("io_uring closed");
    if revoke {
        say("REVOKE starting");
        let r = device.revoke_dma_buf(&buf);
        say(&format!(
            "REVOKE returned {:?}",
            r.err().map(|e| e.to_string())
        ));
    }
    drop(buf);
    say("dma-buf closed; closing the vfio device");
    drop(device);
    say("vfio device closed");
    Ok(json!({"oversize_res": res, "after": again}))
}

/// The series' second hang, probed (`revoke-inflight`; a throwaway VM only): after one
/// read has created the map, LENGTH / max_io reads are submitted without waiting and the
/// same thread REVOKEs the dma-buf while they are in flight (seen: REVOKE never
/// returns), or another thread does while this one waits for them (`other_thread`;
/// seen: REVOKE returns after them, all complete), then reaps them.
fn revoke_inflight(
    mut engine: KernelNvme,
    device: Device,
    buf: peerdma_exporter::DmaBuf,
    max_io: u64,
    length: u64,
    other_thread: bool,
) -> Result<Value> {
    use peerdma_engine::kernel_nvme::{Direction, FixedIo};
    use std::io::Write;
    let say = |s: &str| {
        println!("## {s}");
        let _ = std::io::stdout().flush();
    };
    let first = engine.read(0, 0, max_io)?;
    say(&format!("a first read: {} bytes", first.bytes));
    let ios: Vec<FixedIo> = (0..length / max_io)
        .map(|i| FixedIo {
            device_offset: i * max_io,
            buf_offset: i * max_io,
            len: max_io as u32,
        })
        .collect();
    engine.submit_nowait_for_testing(Direction::Read, &ios)?;
    let res = if other_thread {
        // The submitting thread waits for its completions while another thread revokes.
        let res = std::thread::scope(|s| {
            let revoker = s.spawn(|| {
                say(&format!(
                    "{} reads in flight; REVOKE starting in another thread",
                    ios.len()
                ));
                let r = device.revoke_dma_buf(&buf);
                say(&format!(
                    "REVOKE returned {:?}",
                    r.err().map(|e| e.to_string())
                ));
            });
            let res = engine.wait_for_testing(ios.len());
            let _ = revoker.join();
            res
        })?;
        res
    } else {
        say(&format!("{} reads in flight; REVOKE starting", ios.len()));
        let r = device.revoke_dma_buf(&buf);
        say(&format!(
            "REVOKE returned {:?}",
            r.err().map(|e| e.to_string())
        ));
        engine.wait_for_testing(ios.len())?
    };
    say(&format!("reaped {res:?}"));
    drop(engine);
    drop(buf);
    drop(device);
    say("all closed");
    Ok(json!({"inflight_res": res}))
}

fn main() -> ExitCode {
    peerdma_testbed::process::report("peerdma-guest-kernel-nvme", run())
}
