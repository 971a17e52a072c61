//! `open`: the access path the device ends up on, or the refusal.

use peerdma_testbed::manifest::ManifestDevice;
use peerdma_testbed::process::fd_count as fds;
use serde_json::json;

use crate::device::open;
use crate::json::{emit, err_json, state_json};
use crate::Args;

/// `open`: the access path the device ends up on, or the refusal.
pub(crate) fn scenario_open(a: &Args, d: &ManifestDevice) {
    let before = fds();
    let r = open(d, a.access);
    let fields = match &r {
        Ok(dev) => json!({
            "ok": true,
            "access_path": format!("{:?}", dev.access_path()),
            "iommufd": dev.iommufd().is_some(),
            "devid": dev.devid(),
            "supports_reset": dev.info().supports_reset(),
            "num_regions": dev.info().num_regions,
            "probe": state_json(dev.supports_dma_buf()),
            "page_size": dev.page_size(),
            "bars": dev.bars().map(|bars| bars.iter().map(|b| json!({
                "index": b.index, "size": b.size(), "memory": b.is_memory(), "mappable": b.is_mappable(),
            })).collect::<Vec<_>>()).unwrap_or_default(),
        }),
        Err(e) => err_json(e),
    };
    drop(r);
    let mut fields = fields;
    fields["fds_before"] = before.into();
    fields["fds_after"] = fds().into();
    emit("open", "open", &a.access_name, Some(d), fields);
}
