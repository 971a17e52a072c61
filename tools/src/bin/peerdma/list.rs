//! `peerdma list`: every PCI function sysfs knows, with what matters for P2P.

use anyhow::Result;
use peerdma_host::sysfs::{PciDevice, Sysfs};
use peerdma_tools::size::human;
use serde_json::json;

/// The page size below which a BAR cannot be mmapped or exported on its own.
fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// Whether vfio-pci could take the device. A bridge (base class 0x06: host, PCI-to-PCI,
/// ISA, CardBus … bridges) never: vfio-pci refuses any header type but a normal
/// function's (`vfio_pci_probe`), and a host bridge carries no device to pass through.
fn vfio_status(d: &PciDevice) -> &'static str {
    if d.is_vfio_bound() {
        "bound"
    } else if d.class >> 16 == 0x06 {
        "bridge"
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
    print!("{}", render(&rows));
    if rows.iter().any(|r| r["vfio"] == "bindable") {
        println!(
            "\nbind a device to vfio-pci (as root): echo vfio-pci > /sys/bus/pci/devices/BDF/driver_override; \
             echo BDF > /sys/bus/pci/devices/BDF/driver/unbind; echo BDF > /sys/bus/pci/drivers_probe \
             (every device of its IOMMU group must be bound to vfio-pci or to no driver)"
        );
    }
    Ok(())
}

/// The human table of `rows` (as `--json` gives them), each column as wide as its widest
/// entry.
fn render(rows: &[serde_json::Value]) -> String {
    let mut lines =
        vec![["BDF", "ID", "CLASS", "DRIVER", "GROUP", "VFIO", "BARs"].map(String::from)];
    for r in rows {
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
        let text = |k: &str, none: &str| r[k].as_str().unwrap_or(none).to_string();
        lines.push([
            text("bdf", ""),
            format!("{}:{}", text("vendor", ""), text("device", "")),
            text("class", ""),
            text("driver", "-"),
            r["iommu_group"]
                .as_u64()
                .map_or("-".to_string(), |g| g.to_string()),
            text("vfio", ""),
            bars.join(" "),
        ]);
    }
    crate::table(&lines)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn device(class: u32, driver: Option<&str>, group: Option<u32>) -> PciDevice {
        PciDevice {
            bdf: "00:01.0".parse().unwrap(),
            path: PathBuf::new(),
            vendor: 0x8086,
            device: 0x1234,
            class,
            driver: driver.map(String::from),
            iommu_group: group,
            resources: Vec::new(),
            vfio_dev: None,
            is_virtfn: false,
            unsafe_noiommu_mode: false,
        }
    }

    #[test]
    fn bridges_are_never_bindable() {
        for class in [0x060400, 0x060000, 0x060100, 0x060401, 0x060700, 0x068000] {
            assert_eq!(
                vfio_status(&device(class, Some("pcieport"), Some(3))),
                "bridge"
            );
            assert_eq!(vfio_status(&device(class, None, None)), "bridge");
        }
        assert_eq!(vfio_status(&device(0x050000, None, Some(3))), "bindable");
        assert_eq!(
            vfio_status(&device(0x050000, Some("ahci"), None)),
            "no-iommu-group"
        );
        assert_eq!(
            vfio_status(&device(0x050000, Some("vfio-pci"), Some(3))),
            "bound"
        );
    }

    #[test]
    fn columns_are_as_wide_as_their_widest_entry() {
        let row = |bdf: &str, driver: &str, group: Option<u32>, vfio: &str| {
            json!({
                "bdf": bdf, "vendor": "1af4", "device": "1110", "class": "050000",
                "driver": driver, "iommu_group": group, "vfio": vfio,
                "bars": [{"index": 2, "size": 1u64 << 20, "kind": "mem",
                          "prefetchable": true, "64bit": true, "subpage": false}],
            })
        };
        let text = render(&[
            row("0000:00:00.0", "a-long-driver-name", None, "no-iommu-group"),
            row("0000:00:10.0", "vfio-pci", Some(12), "bound"),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        // Every column starts at the same place on every line, and each cell is
        // followed by a space, however long the longest entry.
        let starts = |l: &str, cells: &[&str]| -> Vec<usize> {
            let mut at = 0;
            cells
                .iter()
                .map(|c| {
                    let i = at + l[at..].find(c).unwrap_or_else(|| panic!("{c} in {l:?}"));
                    at = i + c.len();
                    i
                })
                .collect()
        };
        let header = starts(
            lines[0],
            &["BDF", "ID", "CLASS", "DRIVER", "GROUP", "VFIO", "BARs"],
        );
        let first = starts(
            lines[1],
            &[
                "0000:00:00.0",
                "1af4:1110",
                "050000",
                "a-long-driver-name",
                "-",
                "no-iommu-group",
                "2:",
            ],
        );
        let second = starts(
            lines[2],
            &[
                "0000:00:10.0",
                "1af4:1110",
                "050000",
                "vfio-pci",
                "12",
                "bound",
                "2:",
            ],
        );
        assert_eq!(header, first, "{text}");
        assert_eq!(header, second, "{text}");
        assert!(
            lines[1].contains("no-iommu-group 2:1MiB(pref,64)"),
            "{text}"
        );
    }
}
