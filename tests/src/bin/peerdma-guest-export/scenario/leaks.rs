//! `leaks`: fds and mappings before and after many export/close cycles.

use std::time::Instant;

use anyhow::Result;
use peerdma_exporter::{Device, DmaRange};
use peerdma_testbed::manifest::ManifestDevice;
use peerdma_testbed::process::{fd_count as fds, map_count as maps};
use serde_json::json;

use crate::device::{export_bar, open, skip};
use crate::json::emit;
use crate::Args;

/// `leaks`: fds and mappings across many exports, failed exports and opens.
pub(crate) fn scenario_leaks(a: &Args, d: &ManifestDevice) -> Result<()> {
    let cycle = |dev: &Device, bar: u32, page: u64| -> Result<()> {
        let ranges = [
            DmaRange::new(0, page),
            DmaRange::new(2 * page, page),
            DmaRange::new(4 * page, page),
        ];
        drop(dev.export_dma_buf(bar, &ranges)?);
        let bad = [DmaRange::new(page / 2, page)];
        anyhow::ensure!(
            dev.export_dma_buf(bar, &bad).is_err(),
            "an unaligned export succeeded"
        );
        anyhow::ensure!(
            dev.export_dma_buf_with(bar, &bad, &skip()).is_err(),
            "the kernel took an unaligned export"
        );
        Ok(())
    };
    // Warm up what the process keeps on purpose (allocator arenas, the std's caches).
    {
        let dev = open(d, a.access)?;
        let (bar, _) = export_bar(&dev)?;
        cycle(&dev, bar, dev.page_size())?;
    }
    let (fd0, map0) = (fds(), maps());
    let dev = open(d, a.access)?;
    let (bar, _) = export_bar(&dev)?;
    let page = dev.page_size();
    let fd_open = fds();
    let t = Instant::now();
    let ranges = [
        DmaRange::new(0, page),
        DmaRange::new(2 * page, page),
        DmaRange::new(4 * page, page),
    ];
    for _ in 0..a.cycles {
        drop(dev.export_dma_buf(bar, &ranges)?);
    }
    let export_time = t.elapsed();
    let fd_cycles = fds();
    let failed = a.cycles / 10;
    let bad = [DmaRange::new(page / 2, page)];
    let mut refused = 0u32;
    for _ in 0..failed {
        refused += u32::from(dev.export_dma_buf(bar, &bad).is_err());
        refused += u32::from(dev.export_dma_buf_with(bar, &bad, &skip()).is_err());
    }
    let fd_failed = fds();
    drop(dev);
    let opens = 50u32;
    for _ in 0..opens {
        drop(open(d, a.access)?);
    }
    emit(
        "leaks",
        "cycles",
        &a.access_name,
        Some(d),
        json!({
            "cycles": a.cycles, "failed_exports": 2 * failed, "refused": refused, "opens": opens,
            "fds_before": fd0, "fds_device_open": fd_open, "fds_after_cycles": fd_cycles,
            "fds_after_failed": fd_failed, "fds_after": fds(),
            "maps_before": map0, "maps_after": maps(),
            "us_per_export_close": export_time.as_secs_f64() * 1e6 / f64::from(a.cycles.max(1)),
        }),
    );
    Ok(())
}
