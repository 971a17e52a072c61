//! `peerdma regions BDF`: the VFIO view of one device.

use anyhow::{Context, Result};
use peerdma_exporter::RegionIndex;
use peerdma_exporter::{AccessPath, Bdf, Device, OpenOptions, RegionCap};
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

/// Describes the device's regions.
pub fn run(bdf: Bdf, access: AccessPath, json: bool) -> Result<()> {
    let device = Device::open_with(
        bdf,
        OpenOptions {
            access,
            ..OpenOptions::default()
        },
    )
    .with_context(|| format!("opening {bdf}"))?;
    let info = device.info();
    let mut regions = Vec::new();
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
        "opened_via": format!("{:?}", device.opened_via()),
        "num_regions": info.num_regions,
        "num_irqs": info.num_irqs,
        "reset": info.supports_reset(),
        "dma_buf_export": format!("{support:?}"),
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
        "{bdf} (opened via {}): {} regions, {} IRQ types, reset: {}, dma-buf export: {support:?}, buffers {}",
        out["opened_via"].as_str().unwrap_or(""),
        info.num_regions,
        info.num_irqs,
        if info.supports_reset() { "yes" } else { "no" },
        out["state"].as_str().unwrap_or("")
    );
    println!(
        "{:<5} {:<24} {:>10} {:<5} {:<16} CAPS",
        "INDEX", "NAME", "SIZE", "FLAGS", "FD OFFSET"
    );
    for r in &regions {
        let flags = format!(
            "{}{}{}",
            if r["read"] == true { "r" } else { "-" },
            if r["write"] == true { "w" } else { "-" },
            if r["mmap"] == true { "m" } else { "-" }
        );
        println!(
            "{:<5} {:<24} {:>10} {:<5} {:<#16x} {}",
            r["index"].as_u64().unwrap_or(0),
            r["name"].as_str().unwrap_or(""),
            human(r["size"].as_u64().unwrap_or(0)),
            flags,
            r["offset"].as_u64().unwrap_or(0),
            r["caps"]
        );
    }
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
