//! `peerdma path A B`: the PCI path between two devices and what it allows.
//!
//! iommufd imports take the BAR's physical range directly and skip the kernel's P2P
//! distance check; DRM and RDMA importers map through `pci_p2pdma_distance`, which
//! [`Sysfs::p2p_route`] models (`peerdma_exporter::p2pdma`).

use anyhow::Result;
use peerdma_exporter::{Bdf, Sysfs, Upstream};
use serde_json::json;

/// Reports the path.
pub fn run(a: Bdf, b: Bdf, json: bool) -> Result<()> {
    let route = Sysfs::system().p2p_route(a, b)?;
    let route_text = match &route.upstream {
        Upstream::Bridge(br) => format!("common upstream bridge {br}"),
        Upstream::HostBridge { root, host_bridge } => {
            let domain_bus = root.trim_start_matches("pci");
            let (vendor, device) = host_bridge.map_or((0, 0), |h| (h.vendor, h.device));
            format!("through host bridge {domain_bus}:00.0 ({vendor:04x}:{device:04x})")
        }
        Upstream::Roots { .. } => "across PCI roots".to_string(),
    };
    let why = route.verdict.why();
    let out = json!({
        "a": a.to_string(),
        "b": b.to_string(),
        "a_chain": route.a_chain,
        "b_chain": route.b_chain,
        "route": route_text,
        "same_iommu_group": route.same_iommu_group,
        "iommufd_import": "possible: iommufd maps the BAR's physical range without the distance check",
        "drm_rdma_import": if route.verdict.allowed() { "possible" } else { "refused" },
        "why": why,
    });
    if json {
        crate::print_json(&out);
    } else {
        println!("{a} → {b}: {route_text}");
        println!(
            "  iommufd import: {}",
            out["iommufd_import"].as_str().unwrap_or("")
        );
        println!(
            "  DRM/RDMA import: {} ({why})",
            out["drm_rdma_import"].as_str().unwrap_or("")
        );
        if route.same_iommu_group {
            println!(
                "  both devices are in one IOMMU group: VFIO needs every member bound to vfio-pci"
            );
        }
    }
    Ok(())
}
