//! `peerdma regions BDF`: the VFIO view of one device.

use anyhow::Result;
use peerdma_exporter::{AccessPath, Device, DmaBufSupport, OpenOptions, RegionCap};
use peerdma_host::Bdf;
use peerdma_host::RegionIndex;
use peerdma_tools::size::human;
use serde_json::{json, Value};

fn cap_json(c: &RegionCap) -> Value {
    match c {
        RegionCap::SparseMmap(areas) => json!({
            "sparse_mmap": areas.iter().map(|a| json!({"offset": a.offset, "size": a.size})).collect::<Vec<_>>()
        }),
        RegionCap::Type {
            region_type,
            subtype,
        } => json!({"type": region_type, "subtype": subtype}),
        RegionCap::MsixMappable => json!("msix_mappable"),
        RegionCap::Unknown { id, version } => json!({"unknown": id, "version": version}),
    }
}

/// The access path in `--json` (`cdev`, `group`, as `--access` spells them) and in
/// words.
pub(crate) fn access_path(v: AccessPath) -> (&'static str, &'static str) {
    match v {
        AccessPath::Cdev => ("cdev", "cdev + iommufd"),
        AccessPath::Group => ("group", "group + container"),
        // Device::access_path is never Auto.
        AccessPath::Auto => ("auto", "auto"),
    }
}

/// dma-buf export support in `--json` (`supported`, `driver_lacks_export`,
/// `kernel_lacks_feature`) and in words.
fn dma_buf_export(s: DmaBufSupport) -> (&'static str, &'static str) {
    match s {
        DmaBufSupport::Supported => ("supported", "supported"),
        DmaBufSupport::DriverLacksExport => (
            "driver_lacks_export",
            "no (the device's vfio driver does not offer it)",
        ),
        DmaBufSupport::KernelLacksFeature => (
            "kernel_lacks_feature",
            "no (the kernel has no VFIO_DEVICE_FEATURE_DMA_BUF)",
        ),
    }
}

/// A region capability in words.
fn cap_text(c: &RegionCap) -> String {
    match c {
        RegionCap::SparseMmap(areas) => format!(
            "sparse mmap {}",
            areas
                .iter()
                .map(|a| format!("{:#x}+{:#x}", a.offset, a.size))
                .collect::<Vec<_>>()
                .join(",")
        ),
        RegionCap::Type {
            region_type,
            subtype,
        } => format!("type {region_type:#x}/{subtype:#x}"),
        RegionCap::MsixMappable => "MSI-X mappable".to_string(),
        RegionCap::Unknown { id, version } => format!("capability {id} v{version}"),
    }
}

/// Describes the device's regions.
pub fn run(bdf: Bdf, access: AccessPath, json: bool) -> Result<()> {
    let device = Device::open_with(
        bdf,
        OpenOptions {
            access,
            ..OpenOptions::default()
        },
    )
    // The exporter's errors name the BDF: no "opening BDF" before them (said once).
    ?;
    let info = device.info();
    let mut regions = Vec::new();
    let mut cap_words = Vec::new();
    for index in 0..info.num_regions {
        let r = match device.region_info(index) {
            Ok(r) => r,
            // Some regions (VGA on a non-VGA device) are refused with EINVAL: skip them.
            Err(_) => continue,
        };
        if r.size == 0 {
            continue;
        }
        regions.push(json!({
            "index": index,
            "name": RegionIndex(index).to_string(),
            "size": r.size,
            "offset": r.offset,
            "read": r.flags.read(),
            "write": r.flags.write(),
            "mmap": r.flags.mmap(),
            "caps": r.caps.iter().map(cap_json).collect::<Vec<_>>(),
        }));
        cap_words.push(r.caps.iter().map(cap_text).collect::<Vec<_>>().join("; "));
    }
    let msix = device.msix().map(|m| {
        json!({
            "vectors": m.vectors,
            "table_bar": m.table_bir,
            "table_offset": m.table_offset,
            "table_len": m.table_len(),
            "pba_bar": m.pba_bir,
            "pba_offset": m.pba_offset,
            "pba_len": m.pba_len(),
        })
    });
    let support = device.supports_dma_buf()?;
    let state = device.revoke_state()?;
    let out = json!({
        "bdf": bdf.to_string(),
        "access_path": access_path(device.access_path()).0,
        "num_regions": info.num_regions,
        "num_irqs": info.num_irqs,
        "reset": info.supports_reset(),
        "dma_buf_export": dma_buf_export(support).0,
        "state": match state {
            peerdma_exporter::RevokeState::Live => "live".to_string(),
            peerdma_exporter::RevokeState::Revoked(why) => format!("revoked: {why}"),
        },
        "regions": regions,
        "msix": msix,
    });
    if json {
        crate::print_json(&out);
        return Ok(());
    }
    println!(
        "{bdf} (opened via {}): {} regions, {} IRQ types, reset: {}, dma-buf export: {}, buffers {}",
        access_path(device.access_path()).1,
        info.num_regions,
        info.num_irqs,
        if info.supports_reset() { "yes" } else { "no" },
        dma_buf_export(support).1,
        out["state"].as_str().unwrap_or("")
    );
    let mut lines = vec![["INDEX", "NAME", "SIZE", "FLAGS", "FD OFFSET", "CAPS"].map(String::from)];
    for (r, caps) in regions.iter().zip(&cap_words) {
        let flags = format!(
            "{}{}{}",
            if r["read"] == true { "r" } else { "-" },
            if r["write"] == true { "w" } else { "-" },
            if r["mmap"] == true { "m" } else { "-" }
        );
        lines.push([
            r["index"].as_u64().unwrap_or(0).to_string(),
            r["name"].as_str().unwrap_or("").to_string(),
            human(r["size"].as_u64().unwrap_or(0)),
            flags,
            format!("{:#x}", r["offset"].as_u64().unwrap_or(0)),
            if caps.is_empty() {
                "-".to_string()
            } else {
                caps.clone()
            },
        ]);
    }
    print!("{}", crate::table(&lines));
    match &out["msix"] {
        Value::Null => println!("MSI-X: none"),
        m => println!(
            "MSI-X: {} vectors, table in BAR{} at {:#x} ({} bytes), PBA in BAR{} at {:#x}",
            m["vectors"],
            m["table_bar"],
            m["table_offset"].as_u64().unwrap_or(0),
            m["table_len"],
            m["pba_bar"],
            m["pba_offset"].as_u64().unwrap_or(0)
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use peerdma_exporter::SparseMmapArea;

    use super::*;

    #[test]
    fn human_output_uses_words_and_json_keeps_its_values() {
        assert_eq!(access_path(AccessPath::Cdev), ("cdev", "cdev + iommufd"));
        assert_eq!(
            access_path(AccessPath::Group),
            ("group", "group + container")
        );
        assert_eq!(
            dma_buf_export(DmaBufSupport::Supported),
            ("supported", "supported")
        );
        for s in [
            DmaBufSupport::Supported,
            DmaBufSupport::DriverLacksExport,
            DmaBufSupport::KernelLacksFeature,
        ] {
            // The JSON value is snake_case, never the Rust spelling.
            let v = dma_buf_export(s).0;
            assert!(v.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{v}");
            assert!(dma_buf_export(s).1.chars().next().unwrap().is_lowercase());
        }
        assert_eq!(cap_text(&RegionCap::MsixMappable), "MSI-X mappable");
        let sparse = RegionCap::SparseMmap(vec![SparseMmapArea {
            offset: 0,
            size: 0x1000,
        }]);
        assert_eq!(cap_text(&sparse), "sparse mmap 0x0+0x1000");
    }
}
