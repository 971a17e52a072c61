//! `mmap`: the BAR through the VFIO region mmap (the CPU path the dma-buf lacks).

use anyhow::Result;
use peerdma_exporter::Device;
use peerdma_testbed::manifest::ManifestDevice;
use serde_json::json;

use crate::device::export_bar;
use crate::json::{emit, err_json};
use crate::Args;

/// `mmap`: the BAR through the VFIO region mmap (the CPU path the dma-buf lacks):
/// ivshmem RAM written and read back, edu's identification register, NVMe's CAP; an
/// access past the mapping is refused.
pub(crate) fn scenario_mmap(a: &Args, d: &ManifestDevice, dev: &Device) -> Result<()> {
    use peerdma_testbed::devices::DeviceKind;
    let (bar, _) = export_bar(dev)?;
    let bar = if d.kind == DeviceKind::NVME { 0 } else { bar };
    let map = dev.map_region(bar)?;
    let mut f = json!({"bar": bar, "len": map.len()});
    if d.kind == DeviceKind::IVSHMEM {
        map.write::<u32>(0x100, 0xdead_beef)?;
        f["read_back"] = map.read::<u32>(0x100)?.into();
    } else if d.kind == DeviceKind::NVME {
        f["cap"] = map.read::<u64>(0)?.into();
    } else {
        f["id"] = map.read::<u32>(0)?.into();
    }
    f["past_the_end"] = match map.read::<u32>(map.len()) {
        Ok(v) => json!({"ok": true, "value": v}),
        Err(e) => err_json(&e),
    };
    emit("mmap", "region", &a.access_name, Some(d), f);
    Ok(())
}
