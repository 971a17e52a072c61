//! `engine-bench`: what device memory costs an engine. Every engine device of the run
//! copies BAR → BAR (ivshmem0's BAR2 → ivshmem1's BAR2, both as vfio-pci dma-bufs in
//! its IOAS) and host → host (two user buffers in the same IOAS), the same length,
//! in interleaved rounds (the order flipped every round, so host noise under TCG hits
//! both alike), through the engine's raw copy (`DmaEngine::copy`, no fault-log read:
//! the driver's own work only). One JSON line per engine: the median of each, their
//! ratio, and datagrams (device transfers) per second.
//!
//! Every BAR → BAR round's bytes are checked once at the end (the last round's
//! pattern in ivshmem1's BAR, read through its region mmap), so a fast copy that did
//! not land cannot pass as a figure.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use peerdma_engine::{AttachedEngine, TransferReport};
use peerdma_exporter::DmaRange;
use peerdma_importer::iommufd::{Iommufd, Iova, Prot, UserBuffer};
use peerdma_testbed::manifest::Manifest;
use peerdma_testbed::pattern;
use serde_json::{json, Value};

use crate::rig::{open_cdev, MIB};
use crate::scenario::contract::engines;
use crate::Opts;

/// Where in both ivshmem BARs the benchmark works (past the contract's MiBs).
const BENCH_AT: u64 = 48 * MIB;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

/// One engine's rounds: `(bar GB/s, host GB/s, transfers per copy)` per round.
fn rounds(
    e: &mut AttachedEngine,
    src: (u64, u64),
    dst: (u64, u64),
    len: u64,
    n: u64,
) -> Result<(Vec<f64>, Vec<f64>, u32)> {
    let (mut bar, mut host) = (Vec::new(), Vec::new());
    let mut transfers = 0;
    for round in 0..n {
        for bar_side in [round % 2 == 0, round % 2 == 1] {
            let (s, d) = if bar_side {
                (src.0, dst.0)
            } else {
                (src.1, dst.1)
            };
            let t = Instant::now();
            let r: TransferReport = e
                .engine_mut()
                .copy(s, d, len)
                .with_context(|| format!("round {round}"))?;
            let took = t.elapsed();
            if r.bytes != len {
                bail!("round {round}: the engine moved {} of {len} bytes", r.bytes);
            }
            transfers = r.transfers;
            if bar_side { &mut bar } else { &mut host }.push(gbps(len, took));
        }
    }
    Ok((bar, host, transfers))
}

pub(crate) fn engine_bench(m: &Manifest, opts: &Opts) -> Result<Value> {
    let len = opts.len;
    let n = opts.iters.clamp(1, 99);
    let iommufd = Iommufd::open()?;
    let ivs0 = open_cdev(m, "ivshmem0")?;
    let ivs1 = open_cdev(m, "ivshmem1")?;
    let bar1 = ivs1.map_region(2)?;
    let range = [DmaRange {
        offset: BENCH_AT,
        length: len.next_multiple_of(4096),
    }];
    let mut lines = Vec::new();
    for dev in engines(m) {
        let bdf = dev.bdf.parse().context("engine BDF")?;
        let mut e = AttachedEngine::open(bdf, &iommufd)?;
        let sbuf = ivs0.export_dma_buf(2, &range)?;
        let dbuf = ivs1.export_dma_buf(2, &range)?;
        let sbar = e
            .ioas()
            .map_vfio_dmabuf(&ivs0, &sbuf, 0, len, Iova::Guarded, Prot::Read)?;
        let dbar = e
            .ioas()
            .map_vfio_dmabuf(&ivs1, &dbuf, 0, len, Iova::Guarded, Prot::Write)?;
        let shost = e
            .ioas()
            .map_host(UserBuffer::new(len as usize)?, Iova::Guarded, Prot::Read)?;
        let dhost =
            e.ioas()
                .map_host(UserBuffer::new(len as usize)?, Iova::Guarded, Prot::Write)?;
        // The pattern goes into both sources, so both sides move the same bytes.
        let seed = 0xbe4c_0000 + lines.len() as u64;
        let mut data = vec![0u8; len as usize];
        pattern::fill(seed, 0, &mut data);
        let bar0 = ivs0.map_region(2)?;
        bar0.write_bytes(BENCH_AT as usize, &data)?;
        shost.buffer().write(0, &data)?;
        bar1.write_bytes(BENCH_AT as usize, &vec![0u8; len as usize])?;
        let (mut bar, mut host, transfers) = rounds(
            &mut e,
            (sbar.iova(), shost.iova()),
            (dbar.iova(), dhost.iova()),
            len,
            n,
        )?;
        let mut arrived = vec![0u8; len as usize];
        bar1.read_bytes(BENCH_AT as usize, &mut arrived)?;
        let landed = arrived == data && dhost.buffer().to_vec() == data;
        let (bar_med, host_med) = (median(&mut bar), median(&mut host));
        lines.push(json!({
            "engine": dev.role,
            "engine_name": e.name(),
            "len": len,
            "rounds": n,
            "transfers_per_copy": transfers,
            "bar_to_bar_gbps": bar_med,
            "host_to_host_gbps": host_med,
            "ratio": bar_med / host_med,
            "bar_to_bar_transfers_per_s": bar_med * 1e9 / len as f64 * f64::from(transfers),
            "host_to_host_transfers_per_s": host_med * 1e9 / len as f64 * f64::from(transfers),
            "landed": landed,
        }));
    }
    let ok = !lines.is_empty() && lines.iter().all(|l| l["landed"] == json!(true));
    Ok(json!({ "ok": ok, "engines": lines }))
}
