//! `revoke-latency`: how long a revoke takes to reach an importer. With 1 and with 64
//! one-page dma-bufs of ivshmem0's BAR2 mapped into the IOAS, each trial times
//!
//! - the revoking write itself: the config-space write that clears Memory Space
//!   Enable (`Device::set_memory_decode(false)`). In 7.2 the kernel revokes every
//!   dma-buf of the device inside that write (`vfio_pci_dma_buf_move`: each importer's
//!   mapping is invalidated, iommufd unmaps its IOVA, and the write waits for every
//!   importer without a timeout), so when the write returns no mapping is left;
//! - until the importer sees it: a second thread polls every mapping's
//!   `DmaBufMapping::state()` and notes when the first and the last turned `Revoked`
//!   (the importer learns it from the exporter's revoke event, sent once the write
//!   returned).
//!
//! Between trials decode goes back on and every mapping is mapped again (untimed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use peerdma_exporter::DmaBuf;
use peerdma_importer::iommufd::{DmaBufMapping, Iova, MappingState};
use serde_json::{json, Value};

use crate::rig::{at, Rig};
use crate::Opts;

const PAGE: u64 = 4096;

/// Percentile `p` (0..=100) of `v` (sorted here), in microseconds.
fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One set of trials with `n` buffers mapped.
fn trials(rig: &Rig, n: u64, iters: u64) -> Result<Value> {
    let bufs: Vec<DmaBuf> = (0..n)
        .map(|i| rig.export_dma_buf(at::LATENCY + i * PAGE, PAGE))
        .collect::<Result<_>>()?;
    let mut maps: Vec<DmaBufMapping<&DmaBuf>> = bufs
        .iter()
        .map(|b| rig.map_bar(b, Iova::Guarded))
        .collect::<Result<_>>()?;
    let (mut write, mut first, mut last) = (Vec::new(), Vec::new(), Vec::new());
    let watch_limit = Duration::from_secs(5);
    for _ in 0..iters {
        for m in &mut maps {
            m.remap_if_needed()?;
        }
        let barrier = Barrier::new(2);
        let go = AtomicBool::new(false);
        let (t0, t1, seen) = std::thread::scope(|s| -> Result<_> {
            let watcher = s.spawn(|| {
                barrier.wait();
                let start = Instant::now();
                let mut first = None;
                let mut left: Vec<usize> = (0..maps.len()).collect();
                // Spin on the states (bounded: 5 s, far beyond any figure here).
                while !left.is_empty() && start.elapsed() < watch_limit {
                    left.retain(|&i| !matches!(maps[i].state(), MappingState::Revoked(_)));
                    if go.load(Ordering::Acquire) && first.is_none() && left.len() < maps.len() {
                        first = Some(Instant::now());
                    }
                    // Let the revoking thread run where there is one CPU.
                    std::thread::yield_now();
                }
                (first, left.is_empty().then(Instant::now))
            });
            barrier.wait();
            let t0 = Instant::now();
            go.store(true, Ordering::Release);
            rig.ivshmem.set_memory_decode(false)?;
            let t1 = Instant::now();
            let seen = watcher.join().expect("the watcher thread");
            Ok((t0, t1, seen))
        })?;
        rig.ivshmem.set_memory_decode(true)?;
        let (Some(f), Some(l)) = seen else {
            anyhow::bail!("{n} mappings: not every mapping was seen revoked within 5 s");
        };
        write.push(us(t1 - t0));
        first.push(us(f.saturating_duration_since(t0)));
        last.push(us(l.saturating_duration_since(t0)));
    }
    for m in &mut maps {
        m.remap_if_needed()
            .context("mapping again after the last trial")?;
    }
    drop(maps);
    Ok(json!({
        "buffers": n, "trials": iters,
        "write_us_p50": pct(&mut write, 50.0), "write_us_p99": pct(&mut write, 99.0),
        "write_us_max": pct(&mut write, 100.0),
        "first_seen_us_p50": pct(&mut first, 50.0), "first_seen_us_p99": pct(&mut first, 99.0),
        "all_seen_us_p50": pct(&mut last, 50.0), "all_seen_us_p99": pct(&mut last, 99.0),
        "all_seen_us_max": pct(&mut last, 100.0),
    }))
}

pub(crate) fn revoke_latency(rig: &mut Rig, opts: &Opts) -> Result<Value> {
    let iters = opts.iters.min(100_000);
    let one = trials(rig, 1, iters)?;
    let many = trials(rig, 64, iters)?;
    Ok(json!({"ok": true, "one": one, "sixty_four": many}))
}
