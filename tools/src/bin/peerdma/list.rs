//! `peerdma list`: every PCI function sysfs knows, with what matters for P2P.

use anyhow::Result;
use peerdma_exporter::{PciDevice, Sysfs};
use peerdma_tools::size::human;
use serde_json::json;

/// The page size below which a BAR cannot be mmapped or exported on its own.
fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

fn vfio_status(d: &PciDevice) -> &'static str {
    if d.is_vfio_bound() {
        "bound"
    } else if d.iommu_group.is_some() {
        "bindable"
    } else {
        "no-iommu-group"
    }
}

/// Lists the PCI devices.
pub fn run(json: bool, only_vfio: bool) -> Result<()> {
    let sys = Sysfs::system();
    let bdfs = sys.devices()?;
    let mut rows = Vec::new();
    for bdf in bdfs {
        let d = sys.device(bdf)?;
        if only_vfio && !d.is_vfio_bound() {
            continue;
        }
        let bars: Vec<_> = d
            .resources
            .iter()
            .take(6)
            .enumerate()
            .filter(|(_, r)| r.size() > 0)
            .map(|(i, r)| {
                json!({
                    "index": i,
                    "size": r.size(),
                    "kind": if r.is_io() { "io" } else { "mem" },
                    "prefetchable": r.is_prefetchable(),
                    "64bit": r.is_mem64(),
                    // vfio-pci mmaps every memory BAR; a sub-page one through a reserved
                    // page, and it cannot be exported as a dma-buf.
                    "mmap": r.is_mem(),
                    "subpage": r.is_mem() && r.size() < page_size(),
                })
            })
            .collect();
        rows.push(json!({
            "bdf": bdf.to_string(),
            "vendor": format!("{:04x}", d.vendor),
            "device": format!("{:04x}", d.device),
            "class": format!("{:06x}", d.class),
            "driver": d.driver,
            "iommu_group": d.iommu_group,
            "vfio": vfio_status(&d),
            "vfio_cdev": d.vfio_dev.as_ref().map(|n| format!("/dev/vfio/devices/{n}")),
            "bars": bars,
        }));
    }
    if json {
        crate::print_json(&json!({ "devices": rows }));
        return Ok(());
    }
    println!(
        "{:<13} {:<9} {:<6} {:<12} {:<5} {:<9} BARs",
        "BDF", "ID", "CLASS", "DRIVER", "GROUP", "VFIO"
    );
    for r in &rows {
        let bars: Vec<String> = r["bars"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                let mut s = format!(
                    "{}:{}",
                    b["index"],
                    human(b["size"].as_u64().unwrap_or(0)).replace(' ', "")
                );
                if b["kind"] == "io" {
                    s.push_str("(io)");
                } else {
                    let mut f = Vec::new();
                    if b["prefetchable"] == true {
                        f.push("pref");
                    }
                    if b["64bit"] == true {
                        f.push("64");
                    }
                    if b["subpage"] == true {
                        f.push("subpage");
                    }
                    if !f.is_empty() {
                        s.push_str(&format!("({})", f.join(",")));
                    }
                }
                s
            })
            .collect();
        println!(
            "{:<13} {:<9} {:<6} {:<12} {:<5} {:<9} {}",
            r["bdf"].as_str().unwrap_or(""),
            format!(
                "{}:{}",
                r["vendor"].as_str().unwrap_or(""),
                r["device"].as_str().unwrap_or("")
            ),
            r["class"].as_str().unwrap_or(""),
            r["driver"].as_str().unwrap_or("-"),
            r["iommu_group"]
                .as_u64()
                .map(|g| g.to_string())
                .unwrap_or("-".into()),
            r["vfio"].as_str().unwrap_or(""),
            bars.join(" ")
        );
    }
    if rows.iter().any(|r| r["vfio"] == "bindable") {
        println!(
            "\nbind a device to vfio-pci (as root): echo vfio-pci > /sys/bus/pci/devices/BDF/driver_override; \
             echo BDF > /sys/bus/pci/devices/BDF/driver/unbind; echo BDF > /sys/bus/pci/drivers_probe \
             (every device of its IOMMU group must be bound to vfio-pci or to no driver)"
        );
    }
    Ok(())
}
