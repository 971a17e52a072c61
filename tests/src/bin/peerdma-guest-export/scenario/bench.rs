//! `bench`: export latency of the library against the same ioctl from C.

use anyhow::Result;
use peerdma_exporter::{DmaRange, ExportOptions};
use peerdma_testbed::manifest::ManifestDevice;
use serde_json::json;

use crate::clib::CLib;
use crate::device::{export_bar, open, skip};
use crate::json::{emit, rounded};
use crate::Args;

/// CLOCK_MONOTONIC in nanoseconds, read as `now_ns` in tests/c/export_bench.c reads it,
/// so that both sides of the benchmark pay the same for their clock reads.
#[inline(always)]
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the kernel (vDSO) to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(crate) fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// `bench`: export latency of the library against the same ioctl from C, on the same
/// device fd in the same run, for 1, 16 and 1024 ranges. Small batches of each kind
/// alternate (C with its argument built once, C building it per export, the library,
/// the library without validation; the order flips every batch) so that drift and
/// neighbours' load hit all of them alike. The ratio is the median over batches of
/// library / C-per-export of adjacent batches; medians and the fastest batches are
/// reported beside it.
pub(crate) fn scenario_bench(a: &Args, d: &ManifestDevice, c: &CLib) -> Result<()> {
    let dev = open(d, a.access)?;
    let (bar, size) = export_bar(&dev)?;
    let page = dev.page_size();
    anyhow::ensure!(
        size >= 2048 * page,
        "the bench needs a BAR of 2048 pages at least"
    );
    let batches = a.batches.max(1);
    let mut per_count = Vec::new();
    for (nr, batch) in [(1u64, 50u32), (16, 50), (1024, 10)] {
        let ranges: Vec<DmaRange> = (0..nr).map(|i| DmaRange::new(2 * i * page, page)).collect();
        let rust = |opts: &ExportOptions| -> Result<f64> {
            let mut total = 0u64;
            for _ in 0..batch {
                // Like the C side: the same clock read (clock_gettime, as its
                // now_ns), the argument buffer (kept by the DmaBuf as its record of
                // the ranges) freed inside the timed part, the fd closed outside it.
                let t0 = now_ns();
                let fd = dev.export_dma_buf_with(bar, &ranges, opts)?.into_fd();
                let t1 = now_ns();
                total += t1 - t0;
                drop(fd);
            }
            Ok(total as f64 / f64::from(batch))
        };
        // Warm-up, not counted.
        c.bench(&dev, bar, &ranges, batch, false)?;
        c.bench(&dev, bar, &ranges, batch, true)?;
        rust(&ExportOptions::default())?;
        rust(&skip())?;
        // C with the argument built once, C building it per export, the library, the
        // library without validation; the order flips every batch.
        let mut t: [Vec<f64>; 4] = Default::default();
        for i in 0..batches {
            for k in 0..4 {
                let k = if i % 2 == 0 { k } else { 3 - k };
                t[k].push(match k {
                    0 => c.bench(&dev, bar, &ranges, batch, false)?,
                    1 => c.bench(&dev, bar, &ranges, batch, true)?,
                    2 => rust(&ExportOptions::default())?,
                    _ => rust(&skip())?,
                });
            }
        }
        let med: Vec<f64> = t.iter().map(|v| median(v.clone())).collect();
        let fast: Vec<f64> = t.iter().map(|v| min(v)).collect();
        let ratio = |a: f64, b: f64| (a / b * 1000.0).round() / 1000.0;
        // Batches that ran side by side shared whatever load the host had: the median
        // of their ratios is the figure least moved by it.
        let paired = median(t[2].iter().zip(&t[1]).map(|(r, c)| r / c).collect());
        per_count.push((nr, med[1], med[2]));
        emit(
            "bench",
            "latency",
            &a.access_name,
            Some(d),
            json!({
                "nr_ranges": nr, "batch": batch, "batches": batches, "bar": bar,
                "access_path": format!("{:?}", dev.access_path()),
                "c_prebuilt_ns": rounded(med[0]), "c_ns": rounded(med[1]),
                "rust_ns": rounded(med[2]), "rust_unvalidated_ns": rounded(med[3]),
                "ratio": ratio(paired, 1.0),
                "ratio_of_medians": ratio(med[2], med[1]),
                "ratio_to_prebuilt": ratio(med[2], med[0]),
                "fastest_ns": fast.iter().map(|v| rounded(*v)).collect::<Vec<_>>(),
                "ratio_fastest": ratio(fast[2], fast[1]),
            }),
        );
        eprintln!(
            "export {nr:>4} ranges: C {:>9.0} ns (prebuilt {:>9.0})  Rust {:>9.0} ns \
             (unvalidated {:>9.0})  ratio {:.3} (paired batches; of medians {:.3}, \
             to prebuilt {:.3}, fastest batches {:.3})",
            med[1],
            med[0],
            med[2],
            med[3],
            paired,
            med[2] / med[1],
            med[2] / med[0],
            fast[2] / fast[1]
        );
    }
    let (first, last) = (per_count[0], per_count[per_count.len() - 1]);
    let span = (last.0 - first.0) as f64;
    emit(
        "bench",
        "growth",
        &a.access_name,
        Some(d),
        json!({
            "from_ranges": first.0, "to_ranges": last.0,
            "c_ns_per_range": rounded((last.1 - first.1) / span),
            "rust_ns_per_range": rounded((last.2 - first.2) / span),
        }),
    );
    Ok(())
}
