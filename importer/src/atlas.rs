//! Which importers on this machine could take a vfio-pci BAR dma-buf: iommufd,
//! the RDMA devices and the DRM render nodes, each judged by its driver
//! against what Linux 7.2 accepts (the RDMA table is [`crate::rdma_driver`], the one
//! the RDMA importer uses; the DRM table is [`DRM_DRIVERS`]).
//!
//! A BAR dma-buf is MMIO (no struct pages) and revocable: an importer must
//! attach it dynamically with peer-to-peer allowed and handle `move_notify`.
//! Only reads sysfs and `/dev` (through a [`HostPaths`] root, so fixture trees
//! work).

use peerdma_exporter::kernel::HostPaths;

use crate::rdma_driver::Driver;

/// What Linux 7.2 does with a BAR dma-buf, per DRM driver.
pub const DRM_DRIVERS: &[(&str, bool, &str)] = &[
    (
        "amdgpu",
        true,
        "PRIME import attaches dynamically with P2P; the distance check decides",
    ),
    (
        "xe",
        true,
        "PRIME import attaches dynamically with P2P; the distance check decides",
    ),
    (
        "virtio_gpu",
        true,
        "with blob resources (QEMU blob=true) PRIME import attaches dynamically with P2P; the \
         distance check decides",
    ),
    (
        "vgem",
        false,
        "imports only static, page-backed buffers (EOPNOTSUPP)",
    ),
    (
        "i915",
        false,
        "imports without P2P: a BAR buffer is refused",
    ),
    (
        "nouveau",
        false,
        "imports without P2P: a BAR buffer is refused",
    ),
];

/// One RDMA device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdmaDevice {
    /// `mlx5_0`, `rxe0` …
    pub name: String,
    /// Its driver family (`mlx5`, `irdma`, `rxe` …), when known.
    pub driver: Option<String>,
    /// Whether it takes a BAR dma-buf (`None`: a driver the table lacks).
    pub accepts_bar: Option<bool>,
    /// Why.
    pub note: &'static str,
}

/// One DRM render node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderNode {
    /// `renderD128`.
    pub name: String,
    /// Its DRM driver.
    pub driver: Option<String>,
    /// Whether it can import a BAR dma-buf (`None`: a driver the table lacks).
    pub imports_bar: Option<bool>,
    /// Why.
    pub note: &'static str,
}

/// The importers of one machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Atlas {
    /// `/dev/iommu` exists.
    pub iommufd: bool,
    /// `/sys/class/infiniband/*`.
    pub rdma: Vec<RdmaDevice>,
    /// `/sys/class/drm/renderD*`.
    pub render_nodes: Vec<RenderNode>,
}

impl Atlas {
    /// Reads the machine's importers.
    pub fn read(host: &HostPaths) -> Atlas {
        let rdma = host
            .list("sys/class/infiniband")
            .into_iter()
            .map(|name| {
                let (driver, verdict) = match rdma_driver(host, &name) {
                    Some(d) => (Some(d.family().to_string()), d.bar_dmabuf()),
                    None => (None, crate::rdma_driver::BarDmabuf::Unknown),
                };
                RdmaDevice {
                    name,
                    driver,
                    accepts_bar: verdict.accepts(),
                    note: verdict.note(),
                }
            })
            .collect();
        let render_nodes = host
            .list("sys/class/drm")
            .into_iter()
            .filter(|n| n.starts_with("renderD"))
            .map(|name| {
                let driver = drm_driver(host, &name);
                let (imports_bar, note) = lookup(DRM_DRIVERS, driver.as_deref());
                RenderNode {
                    name,
                    driver,
                    imports_bar,
                    note,
                }
            })
            .collect();
        Atlas {
            iommufd: host.exists("dev/iommu"),
            rdma,
            render_nodes,
        }
    }
}

fn lookup(
    table: &[(&str, bool, &'static str)],
    driver: Option<&str>,
) -> (Option<bool>, &'static str) {
    match driver.and_then(|d| table.iter().find(|(n, ..)| *n == d)) {
        Some((_, ok, note)) => (Some(*ok), note),
        None => (None, "a driver this table does not cover"),
    }
}

/// The RDMA device's driver, judged by [`Driver::from_names`] from what sysfs says
/// (the parent PCI function's driver: `mlx5_core` → mlx5, `ice`/`i40e` → irdma,
/// `bnxt_en` → bnxt_re; else a software device's attributes). `None` for a device
/// sysfs says nothing of (no parent, no software-device attributes).
fn rdma_driver(host: &HostPaths, name: &str) -> Option<Driver> {
    let dir = format!("sys/class/infiniband/{name}");
    let pci = host.link_name(&format!("{dir}/device/driver"));
    let node_type = host.read(&format!("{dir}/node_type"));
    let driver = Driver::from_names(
        pci.as_deref(),
        name,
        host.exists(&format!("{dir}/parent")),
        node_type.as_deref(),
    );
    match driver {
        Driver::Other(_) if pci.is_none() => None,
        d => Some(d),
    }
}

/// The DRM driver of a render node: its device's driver (`amdgpu`, `xe`,
/// `virtio_gpu` …), else, for a device without one of its own (vgem sits on a
/// faux device bound to `faux_driver`), the device's name (`vgem`).
fn drm_driver(host: &HostPaths, node: &str) -> Option<String> {
    match host.link_name(&format!("sys/class/drm/{node}/device/driver")) {
        Some(d) if d != "faux_driver" => Some(d),
        _ => host.link_name(&format!("sys/class/drm/{node}/device")),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    use super::*;

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn link(root: &std::path::Path, rel: &str, target: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }

    #[test]
    fn the_atlas_judges_each_importer_by_its_driver() {
        let t = Tmp(std::env::temp_dir().join(format!("peerdma-atlas-{}", std::process::id())));
        let _ = fs::remove_dir_all(&t.0);
        let r = &t.0;
        link(
            r,
            "sys/class/infiniband/mlx5_0/device/driver",
            "../../bus/pci/drivers/mlx5_core",
        );
        link(
            r,
            "sys/class/infiniband/bnxt_re0/device/driver",
            "../../bus/pci/drivers/bnxt_en",
        );
        // irdma's parent is the Ethernet function: ice on an E810, i40e on an X722.
        link(
            r,
            "sys/class/infiniband/irdma0/device/driver",
            "../../bus/pci/drivers/ice",
        );
        link(
            r,
            "sys/class/infiniband/irdma1/device/driver",
            "../../bus/pci/drivers/i40e",
        );
        fs::create_dir_all(r.join("sys/class/infiniband/rxe0")).unwrap();
        fs::create_dir_all(r.join("sys/class/infiniband/odd0")).unwrap();
        link(
            r,
            "sys/class/drm/renderD128/device/driver",
            "../../bus/pci/drivers/amdgpu",
        );
        link(
            r,
            "sys/class/drm/renderD129/device",
            "../../devices/faux/vgem",
        );
        link(
            r,
            "sys/class/drm/card0/device/driver",
            "../../bus/pci/drivers/amdgpu",
        );
        let a = Atlas::read(&HostPaths::under(r));
        assert!(!a.iommufd);
        let rdma: Vec<(&str, Option<&str>, Option<bool>)> = a
            .rdma
            .iter()
            .map(|d| (d.name.as_str(), d.driver.as_deref(), d.accepts_bar))
            .collect();
        assert_eq!(
            rdma,
            [
                ("bnxt_re0", Some("bnxt_re"), Some(false)),
                ("irdma0", Some("irdma"), Some(true)),
                ("irdma1", Some("irdma"), Some(true)),
                ("mlx5_0", Some("mlx5"), Some(true)),
                ("odd0", None, None),
                ("rxe0", Some("rxe"), Some(false)),
            ]
        );
        let drm: Vec<(&str, Option<&str>, Option<bool>)> = a
            .render_nodes
            .iter()
            .map(|d| (d.name.as_str(), d.driver.as_deref(), d.imports_bar))
            .collect();
        assert_eq!(
            drm,
            [
                ("renderD128", Some("amdgpu"), Some(true)),
                ("renderD129", Some("vgem"), Some(false)),
            ]
        );
        fs::create_dir_all(r.join("dev")).unwrap();
        fs::write(r.join("dev/iommu"), "").unwrap();
        assert!(Atlas::read(&HostPaths::under(r)).iommufd);
    }
}
