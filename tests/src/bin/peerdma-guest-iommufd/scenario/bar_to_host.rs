//! `bar-to-host`: a pattern written into the BAR → edu → host memory, checked here.

use anyhow::Result;
use peerdma_engine::DmaEngine;
use peerdma_importer::iommufd::{Iova, Prot};
use peerdma_testbed::pattern;
use serde_json::{json, Value};

use crate::ms;
use crate::rig::{at, Rig, EDU_BUF};

/// BAR pattern → edu → host memory, checked here.
pub(crate) fn bar_to_host(rig: &mut Rig) -> Result<Value> {
    let seed = 0x2002;
    rig.bar_write_pattern(seed, at::BAR_TO_HOST, EDU_BUF)?;
    let buf = rig.export_dma_buf(at::BAR_TO_HOST, at::SMALL)?;
    let bar =
        rig.ioas
            .map_vfio_dmabuf(&rig.ivshmem, &buf, 0, at::SMALL, Iova::Guarded, Prot::Read)?;
    let host = rig.host(2 * EDU_BUF, Prot::Write)?;
    let report = rig.edu.copy(bar.iova(), host.iova() + EDU_BUF, EDU_BUF)?;
    let got = host.buffer().to_vec();
    let mismatch = pattern::first_mismatch(seed, 0, &got[EDU_BUF as usize..]);
    let untouched = got[..EDU_BUF as usize].iter().all(|&b| b == 0);
    Ok(json!({
        "ok": mismatch.is_none() && untouched,
        "seed": seed,
        "mismatch": mismatch,
        "first_page_untouched": untouched,
        "bar_iova": bar.iova(),
        "host_iova": host.iova(),
        "transfers": report.transfers,
        "edu_ms_total": ms(report.elapsed),
    }))
}
