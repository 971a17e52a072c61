//! Guest side of the soak check (`tests/tests/soak.rs`): `--cycles N` rounds of
//! export → map → DMA → unmap → close (two 4 KiB dma-bufs of ivshmem0's and ivshmem1's
//! BAR2, mapped into the IOAS edu is attached to, edu copying one to the other, both
//! unmapped and closed), then `--copies N` copies through p2pcopy's library API,
//! alternating the CPU path (64 KiB, ivshmem0 → ivshmem1) and the DMA path through edu
//! (4 KiB), each verified. For each phase: fds, mappings and RSS after a warm-up and
//! after the last cycle, as one JSON line.
//!
//! Usage (in the testbed): `peerdma-guest-soak [--cycles N] [--copies N]`

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use peerdma_copy::{CopyRequest, EndpointSpec, TransportChoice};
use peerdma_engine::AttachedEngine;
use peerdma_exporter::{AccessPath, Device, DmaRange, OpenOptions};
use peerdma_host::Bdf;
use peerdma_importer::iommufd::{Iommufd, Iova, Prot};
use peerdma_testbed::manifest::Manifest;
use peerdma_testbed::process::{fd_count as fds, map_count as maps, rss_kib};
use serde_json::{json, Value};

const PAGE: u64 = 4096;
const WARM_UP: u64 = 3;

/// fds, mappings and RSS now.
fn counts() -> Value {
    json!({"fds": fds(), "maps": maps(), "rss_kib": rss_kib()})
}

/// `cycles` export → map → DMA → unmap → close rounds after a warm-up.
fn importer_cycles(iv0: Bdf, iv1: Bdf, edu: Bdf, cycles: u64) -> Result<Value> {
    let cdev = || OpenOptions {
        access: AccessPath::Cdev,
        ..OpenOptions::default()
    };
    let iommufd = Iommufd::open()?;
    let mut engine = AttachedEngine::open(edu, &iommufd)?;
    let (src, dst) = (
        Device::open_with(iv0, cdev())?,
        Device::open_with(iv1, cdev())?,
    );
    let mut before = Value::Null;
    let start = Instant::now();
    for i in 0..WARM_UP + cycles {
        if i == WARM_UP {
            before = counts();
        }
        let at = (i % 256) * PAGE;
        let a = src.export_dma_buf(2, &[DmaRange::new(at, PAGE)])?;
        let b = dst.export_dma_buf(2, &[DmaRange::new(at, PAGE)])?;
        let ioas = engine.ioas();
        let ma = ioas.map_vfio_dmabuf(&src, a, 0, PAGE, Iova::Guarded, Prot::Read)?;
        let mb = ioas.map_vfio_dmabuf(&dst, b, 0, PAGE, Iova::Guarded, Prot::Write)?;
        let (s, d) = (ma.iova(), mb.iova());
        engine
            .engine_mut()
            .copy(s, d, PAGE)
            .with_context(|| format!("cycle {i}: the DMA"))?;
        ma.unmap().with_context(|| format!("cycle {i}: unmap"))?;
        mb.unmap().with_context(|| format!("cycle {i}: unmap"))?;
    }
    Ok(json!({
        "cycles": cycles, "seconds": start.elapsed().as_secs_f64(),
        "before": before, "after": counts(),
    }))
}

fn request(src: Bdf, dst: Bdf, path: TransportChoice, size: u64, seed: u64) -> CopyRequest {
    CopyRequest {
        size: Some(size),
        chunk: size,
        transport: path,
        ..CopyRequest::new(EndpointSpec::whole(src), EndpointSpec::whole(dst), seed)
    }
}

/// `copies` verified p2pcopy runs, CPU and DMA in turn, after a warm-up.
fn p2pcopy_cycles(iv0: Bdf, iv1: Bdf, edu: Bdf, copies: u64) -> Result<Value> {
    let mut before = Value::Null;
    let (mut cpu, mut dma) = (0u64, 0u64);
    let start = Instant::now();
    for i in 0..2 * WARM_UP + copies {
        if i == 2 * WARM_UP {
            before = counts();
        }
        let (path, size) = if i % 2 == 0 {
            (TransportChoice::CpuMmap, 64 << 10)
        } else {
            (TransportChoice::Dma { engine: Some(edu) }, PAGE)
        };
        let rep = peerdma_copy::run(&request(iv0, iv1, path, size, i + 1), &mut |_| {})
            .with_context(|| format!("copy {i}"))?;
        if rep.verified != Some(true) {
            bail!("copy {i} not verified: {rep:?}");
        }
        if i >= 2 * WARM_UP {
            if i % 2 == 0 {
                cpu += 1;
            } else {
                dma += 1;
            }
        }
    }
    Ok(json!({
        "copies": copies, "cpu": cpu, "dma": dma, "seconds": start.elapsed().as_secs_f64(),
        "before": before, "after": counts(),
    }))
}

fn run() -> Result<Value> {
    let (mut cycles, mut copies) = (20u64, 20u64);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--cycles" => cycles = value()?.parse()?,
            "--copies" => copies = value()?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    let m = Manifest::load_in_guest()?;
    let bdf = |role: &str| -> Result<Bdf> {
        Ok(m.device(role)
            .with_context(|| format!("no role {role}"))?
            .bdf
            .parse()?)
    };
    let (iv0, iv1, edu) = (bdf("ivshmem0")?, bdf("ivshmem1")?, bdf("edu0")?);
    let importer = importer_cycles(iv0, iv1, edu, cycles)?;
    let p2p = p2pcopy_cycles(iv0, iv1, edu, copies)?;
    Ok(json!({"importer": importer, "p2pcopy": p2p}))
}

fn main() -> ExitCode {
    peerdma_testbed::process::report("peerdma-guest-soak", run())
}
