//! Which importers on this machine could take a vfio-pci BAR dma-buf: iommufd,
//! the RDMA devices and the DRM render nodes, each judged by its driver
//! against what Linux 7.2 accepts ([`crate::importers`], the one table the RDMA and
//! DRM importers use too).
//!
//! A BAR dma-buf is MMIO (no struct pages) and revocable: an importer must
//! attach it dynamically with peer-to-peer allowed and handle `move_notify`.
//! Only reads sysfs and `/dev` (through a [`HostPaths`] root, so fixture trees
//! work).

use crate::importers::{importer_driver, ImporterDriver, RdmaDriver, Subsystem};
use crate::kernel::HostPaths;

/// One importing device of the machine (an RDMA device, a DRM render node) and its
/// driver's row of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImporterDevice {
    /// `mlx5_0`, `rxe0`, `renderD128` …
    pub name: String,
    /// Its driver (RDMA: the family, `mlx5`, `irdma`, `rxe` …; DRM: `amdgpu`,
    /// `virtio_gpu` …), when sysfs names one.
    pub driver: Option<String>,
    /// The driver's row of [`IMPORTER_DRIVERS`](crate::importers::IMPORTER_DRIVERS);
    /// `None` for a driver the table lacks.
    pub row: Option<&'static ImporterDriver>,
}

impl ImporterDevice {
    /// Whether it can import a BAR dma-buf (`None`: a driver the table lacks).
    pub fn imports_bar(&self) -> Option<bool> {
        self.row.map(|r| r.bar.accepts())
    }

    /// Why, in a sentence.
    pub fn why(&self) -> &'static str {
        self.row
            .map_or("a driver the table does not cover", |r| r.why)
    }
}

/// The importers of one machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Atlas {
    /// `/dev/iommu` exists.
    pub iommufd: bool,
    /// `/sys/class/infiniband/*`.
    pub rdma: Vec<ImporterDevice>,
    /// `/sys/class/drm/renderD*`.
    pub render_nodes: Vec<ImporterDevice>,
}

impl Atlas {
    /// Reads the machine's importers.
    pub fn read(host: &HostPaths) -> Atlas {
        let rdma = host
            .list("sys/class/infiniband")
            .into_iter()
            .map(|name| {
                let driver = RdmaDriver::of_device(host, &name);
                ImporterDevice {
                    row: driver.as_ref().and_then(RdmaDriver::importer),
                    driver: driver.map(|d| d.family().to_string()),
                    name,
                }
            })
            .collect();
        let render_nodes = host
            .list("sys/class/drm")
            .into_iter()
            .filter(|n| n.starts_with("renderD"))
            .map(|name| {
                let driver = drm_driver(host, &name);
                ImporterDevice {
                    row: driver
                        .as_deref()
                        .and_then(|d| importer_driver(Subsystem::Drm, d)),
                    driver,
                    name,
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
    use super::*;
    use crate::fixture::TempTree;

    #[test]
    fn the_atlas_judges_each_importer_by_its_driver() {
        let t = TempTree::new("atlas");
        let link = |rel: &str, target: &str| t.link(rel, target);
        link(
            "sys/class/infiniband/mlx5_0/device/driver",
            "../../bus/pci/drivers/mlx5_core",
        );
        link(
            "sys/class/infiniband/bnxt_re0/device/driver",
            "../../bus/pci/drivers/bnxt_en",
        );
        // irdma's parent is the Ethernet function: ice on an E810, i40e on an X722.
        link(
            "sys/class/infiniband/irdma0/device/driver",
            "../../bus/pci/drivers/ice",
        );
        link(
            "sys/class/infiniband/irdma1/device/driver",
            "../../bus/pci/drivers/i40e",
        );
        t.dir("sys/class/infiniband/rxe0");
        t.dir("sys/class/infiniband/odd0");
        link(
            "sys/class/drm/renderD128/device/driver",
            "../../bus/pci/drivers/amdgpu",
        );
        link("sys/class/drm/renderD129/device", "../../devices/faux/vgem");
        link(
            "sys/class/drm/card0/device/driver",
            "../../bus/pci/drivers/amdgpu",
        );
        let a = Atlas::read(&HostPaths::under(t.path()));
        assert!(!a.iommufd);
        let rdma: Vec<(&str, Option<&str>, Option<bool>)> = a
            .rdma
            .iter()
            .map(|d| (d.name.as_str(), d.driver.as_deref(), d.imports_bar()))
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
            .map(|d| (d.name.as_str(), d.driver.as_deref(), d.imports_bar()))
            .collect();
        assert_eq!(
            drm,
            [
                ("renderD128", Some("amdgpu"), Some(true)),
                ("renderD129", Some("vgem"), Some(false)),
            ]
        );
        t.write("dev/iommu", "");
        assert!(Atlas::read(&HostPaths::under(t.path())).iommufd);
    }
}
