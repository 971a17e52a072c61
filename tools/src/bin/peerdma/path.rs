//! `peerdma path A B`: the PCI path between two devices and what it allows.
//!
//! iommufd imports take the BAR's physical range directly and skip the kernel's P2P
//! distance check; DRM and RDMA importers map through `pci_p2pdma_distance`, which
//! accepts two devices under a common upstream bridge (no ACS redirect between them),
//! or under a host bridge on the kernel's allow-list (or an AMD Zen CPU).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use peerdma_exporter::Bdf;
use serde_json::json;

/// Host bridges `drivers/pci/p2pdma.c` allows P2P through (Intel Xeon families).
const ALLOWED_INTEL_HOST_BRIDGES: &[u16] = &[
    0x3c00, 0x3c01, 0x2f00, 0x2f01, 0x2030, 0x2031, 0x2032, 0x2033, 0x2020, 0x09a2,
];

/// The chain from the PCI root to the device: `["pci0000:00", "0000:00:1c.0", ..., BDF]`.
pub fn chain(sysfs_devices: &Path, bdf: Bdf) -> Result<Vec<String>> {
    let link = sysfs_devices.join(bdf.to_string());
    let real = std::fs::canonicalize(&link).with_context(|| {
        format!(
            "{bdf}: no such PCI device ({} does not resolve)",
            link.display()
        )
    })?;
    Ok(chain_from_path(&real))
}

/// The PCI components of a canonical sysfs device path.
pub fn chain_from_path(real: &Path) -> Vec<String> {
    real.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .skip_while(|c| !c.starts_with("pci"))
        .collect()
}

/// How two devices reach each other.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// Under a common upstream bridge (a switch port or root port).
    Bridge(String),
    /// Through the host bridge of one PCI root.
    HostBridge(String),
    /// Across PCI roots.
    Roots,
}

/// The route between two chains.
pub fn route(a: &[String], b: &[String]) -> Route {
    let common: Vec<&String> = a
        .iter()
        .zip(b.iter())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect();
    // The devices themselves are not bridges between them.
    let upstream: Vec<&&String> = common
        .iter()
        .filter(|c| Some(**c) != a.last() && Some(**c) != b.last())
        .collect();
    match upstream.last() {
        Some(c) if !c.starts_with("pci") => Route::Bridge((**c).clone()),
        Some(root) => Route::HostBridge((**root).clone()),
        None => Route::Roots,
    }
}

fn read_hex(p: PathBuf) -> Option<u16> {
    let t = std::fs::read_to_string(p).ok()?;
    u16::from_str_radix(t.trim().trim_start_matches("0x"), 16).ok()
}

fn amd_zen() -> bool {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let amd = info
        .lines()
        .any(|l| l.starts_with("vendor_id") && l.contains("AuthenticAMD"));
    let family = info
        .lines()
        .find(|l| l.starts_with("cpu family"))
        .and_then(|l| l.split(':').nth(1)?.trim().parse::<u32>().ok())
        .unwrap_or(0);
    amd && family >= 0x17
}

/// Reports the path.
pub fn run(a: Bdf, b: Bdf, json: bool) -> Result<()> {
    let devices = Path::new("/sys/bus/pci/devices");
    let ca = chain(devices, a)?;
    let cb = chain(devices, b)?;
    let group = |bdf: Bdf| {
        std::fs::read_link(devices.join(bdf.to_string()).join("iommu_group"))
            .ok()
            .and_then(|p| p.file_name()?.to_str()?.parse::<u32>().ok())
    };
    let r = route(&ca, &cb);
    let (route_text, distance_ok, why) = match &r {
        Route::Bridge(br) => (
            format!("common upstream bridge {br}"),
            true,
            "devices under one bridge pass the P2P distance check (unless ACS redirects between them)".to_string(),
        ),
        Route::HostBridge(root) => {
            let domain_bus = root.trim_start_matches("pci");
            let hb = devices.join(format!("{domain_bus}:00.0"));
            let vendor = read_hex(hb.join("vendor"));
            let device = read_hex(hb.join("device"));
            let allowed = (vendor == Some(0x8086)
                && device.is_some_and(|d| ALLOWED_INTEL_HOST_BRIDGES.contains(&d)))
                || amd_zen();
            (
                format!(
                    "through host bridge {domain_bus}:00.0 ({:04x}:{:04x})",
                    vendor.unwrap_or(0),
                    device.unwrap_or(0)
                ),
                allowed,
                if allowed {
                    "the host bridge is on the kernel's P2P allow-list".to_string()
                } else {
                    "the host bridge is on no P2P allow-list: DRM and RDMA imports fail with EINVAL \
                     (\"do not share an upstream bridge or whitelisted host bridge\"); put both devices \
                     under one PCIe switch"
                        .to_string()
                },
            )
        }
        Route::Roots => (
            "across PCI roots".to_string(),
            false,
            "devices on different PCI roots cannot do P2P through the distance check".to_string(),
        ),
    };
    let out = json!({
        "a": a.to_string(),
        "b": b.to_string(),
        "a_chain": ca,
        "b_chain": cb,
        "route": route_text,
        "same_iommu_group": group(a).is_some() && group(a) == group(b),
        "iommufd_import": "possible: iommufd maps the BAR's physical range without the distance check",
        "drm_rdma_import": if distance_ok { "possible" } else { "refused" },
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
        if out["same_iommu_group"] == true {
            println!(
                "  both devices are in one IOMMU group: VFIO needs every member bound to vfio-pci"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(p: &str) -> Vec<String> {
        chain_from_path(Path::new(p))
    }

    #[test]
    fn routes_follow_the_sysfs_tree() {
        let a = c("/sys/devices/pci0000:00/0000:00:10.0");
        let b = c("/sys/devices/pci0000:00/0000:00:11.0");
        assert_eq!(route(&a, &b), Route::HostBridge("pci0000:00".into()));
        let a = c("/sys/devices/pci0000:00/0000:00:1c.0/0000:01:00.0/0000:02:00.0/0000:03:00.0");
        let b = c("/sys/devices/pci0000:00/0000:00:1c.0/0000:01:00.0/0000:02:01.0/0000:04:00.0");
        assert_eq!(route(&a, &b), Route::Bridge("0000:01:00.0".into()));
        let a = c("/sys/devices/pci0000:00/0000:00:10.0");
        let b = c("/sys/devices/pci0000:80/0000:80:01.0");
        assert_eq!(route(&a, &b), Route::Roots);
    }
}
