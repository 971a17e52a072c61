//! `host-to-bar`: a pattern in host memory → edu buffer → the BAR dma-buf mapping; the
//! host finds it in the backing file.

use anyhow::Result;
use peerdma_importer::iommufd::{Iova, Prot};
use peerdma_testbed::pattern;
use serde_json::{json, Value};

use crate::ms;
use crate::rig::{at, Rig, EDU_BUF, MIB};

/// Host memory pattern → edu → BAR dma-buf mapping. The host checks the file.
pub(crate) fn host_to_bar(rig: &mut Rig) -> Result<Value> {
    let seed = 0x1001;
    let host = rig.host(EDU_BUF, Prot::Read)?;
    let mut data = vec![0u8; EDU_BUF as usize];
    pattern::fill(seed, 0, &mut data);
    host.buffer().write(0, &data)?;
    let buf = rig.export_dma_buf(at::HOST_TO_BAR, MIB)?;
    let bar = rig.map_bar(&buf, Iova::Guarded)?;
    let to = rig.edu.load(host.iova(), 0, EDU_BUF)?;
    let from = rig
        .edu
        .store(0, bar.iova() + at::HOST_TO_BAR_IN_BUF, EDU_BUF)?;
    let back = rig.bar_read(at::HOST_TO_BAR + at::HOST_TO_BAR_IN_BUF, EDU_BUF)?;
    let mismatch = pattern::first_mismatch(seed, 0, &back);
    Ok(json!({
        "ok": mismatch.is_none(),
        "seed": seed,
        "bar_offset": at::HOST_TO_BAR + at::HOST_TO_BAR_IN_BUF,
        "len": EDU_BUF,
        "host_iova": host.iova(),
        "bar_iova": bar.iova(),
        "guest_mismatch": mismatch,
        "edu_ms": [ms(to.elapsed), ms(from.elapsed)],
        "mappings": rig.ioas.mappings(),
    }))
}
