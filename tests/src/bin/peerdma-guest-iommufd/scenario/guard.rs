//! `guard`: a DMA that runs past an automatically placed mapping faults in the guard gap;
//! the control pair mapped back to back without a gap shows the same overrun landing.

use anyhow::Result;
use peerdma_importer::iommufd::Iova;
use peerdma_testbed::pattern;
use serde_json::{json, Value};

use crate::faults::Faults;
use crate::rig::{at, Rig, EDU_BUF};

/// A DMA that overruns an automatic mapping faults in the guard gap; the same
/// overrun between two mappings placed back to back lands in the neighbour.
pub(crate) fn guard(rig: &mut Rig, faults: &mut Faults) -> Result<Value> {
    let seed = 0x3003;
    let sentinel = 0x3eee;
    let half = EDU_BUF / 2;
    // Guarded pair: both automatic.
    let a_buf = rig.export_dma_buf(at::GUARD, at::SMALL)?;
    let b_buf = rig.export_dma_buf(at::GUARD + at::SMALL, at::SMALL)?;
    // Control pair: the second one fixed right after the first.
    let c_buf = rig.export_dma_buf(at::CONTROL, at::SMALL)?;
    let d_buf = rig.export_dma_buf(at::CONTROL + at::SMALL, at::SMALL)?;
    rig.bar_write_pattern(sentinel, at::GUARD + at::SMALL, EDU_BUF)?;
    rig.bar_write_pattern(sentinel, at::CONTROL + at::SMALL, EDU_BUF)?;
    let a = rig.map_bar(&a_buf, Iova::Guarded)?;
    let b = rig.map_bar(&b_buf, Iova::Guarded)?;
    let c = rig.map_bar(&c_buf, Iova::Guarded)?;
    let d = rig.map_bar(&d_buf, Iova::Fixed(c.iova() + at::SMALL))?;
    let gap = b.iova() - (a.iova() + a.len());
    rig.load_edu(seed)?;
    faults.take();
    // 4 KiB starting 2 KiB before the end of A: half in A, half past it.
    let guarded_dst = a.iova() + a.len() - half;
    rig.edu.store(0, guarded_dst, EDU_BUF)?;
    let guarded_faults = faults.expect_fault();
    let control_dst = c.iova() + c.len() - half;
    rig.edu.store(0, control_dst, EDU_BUF)?;
    let control_faults = faults.expect_none();
    // What the guest sees (the host re-checks the backing file).
    let in_a = rig.bar_read(at::GUARD + at::SMALL - half, half)?;
    let in_b = rig.bar_read(at::GUARD + at::SMALL, EDU_BUF)?;
    let in_d = rig.bar_read(at::CONTROL + at::SMALL, half)?;
    let a_ok = pattern::first_mismatch(seed, 0, &in_a).is_none();
    let b_untouched = pattern::first_mismatch(sentinel, 0, &in_b).is_none();
    let d_hit = pattern::first_mismatch(seed, half, &in_d).is_none();
    Ok(json!({
        "ok": a_ok && b_untouched && d_hit && gap >= rig.ioas.placement().guard,
        "seed": seed,
        "sentinel": sentinel,
        "guard": rig.ioas.placement().guard,
        "gap": gap,
        "a_iova": a.iova(), "b_iova": b.iova(), "c_iova": c.iova(), "d_iova": d.iova(),
        "guarded_dst": guarded_dst,
        "control_dst": control_dst,
        "a_tail_offset": at::GUARD + at::SMALL - half,
        "b_offset": at::GUARD + at::SMALL,
        "d_offset": at::CONTROL + at::SMALL,
        "half": half,
        "len": EDU_BUF,
        "a_tail_written": a_ok,
        "b_untouched": b_untouched,
        "control_overrun_landed": d_hit,
        "guarded_faults": guarded_faults,
        "control_faults": control_faults,
    }))
}
