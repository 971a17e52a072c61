//! Which kernel drivers can import a vfio-pci BAR dma-buf, read in the Linux 7.2
//! source: one table, [`IMPORTER_DRIVERS`], of RDMA and DRM drivers alike
//! ([`ImporterDriver`] rows), and the one reader of an RDMA device's driver from sysfs
//! ([`RdmaDriver::of_device`]). The atlas, the RDMA importer (`ibv_reg_dmabuf_mr`
//! refusals) and the DRM importer (PRIME import refusals) all judge by this table.
//!
//! The exporter (`drivers/vfio/pci/vfio_pci_dmabuf.c`, `vfio_pci_dma_buf_attach`)
//! admits an attachment only when the importer allows peer-to-peer
//! (`attach->peer2peer`) **and** can be revoked (`dma_buf_attach_revocable()`: its
//! attach ops supply `invalidate_mappings`); otherwise attach fails with EOPNOTSUPP,
//! and a revoked buffer fails with ENODEV.
//!
//! DRM (`drivers/gpu/drm/`):
//! - `drm_prime.c` `drm_gem_prime_import_dev()`, the import of every driver without its
//!   own, attaches with `dma_buf_attach()`: static, no peer2peer, so vgem and virtio-gpu
//!   without blob resources are refused.
//! - `virtio/virtgpu_prime.c` `virtgpu_gem_prime_import()` uses
//!   `dma_buf_dynamic_attach()` with `allow_peer2peer = true` and `invalidate_mappings`
//!   only when the device has resource blobs and no virgl 3D; otherwise it falls back to
//!   `drm_gem_prime_import()`.
//! - `amdgpu_dma_buf.c` and `xe_dma_buf.c` attach dynamically with `allow_peer2peer` and
//!   a move/invalidate callback.
//! - i915 (`i915_gem_dmabuf.c`: `dma_buf_attach()`) and nouveau (`nouveau_prime.c` has
//!   only `gem_prime_import_sg_table`, so the generic `drm_gem_prime_import()`) attach
//!   statically.
//!
//! RDMA (`drivers/infiniband/`, the source lines are in `docs/rdma.md`): mlx5 (default
//! MTT MRs) and irdma register a BAR dma-buf revocably; efa, bnxt_re, mana and ionic pin
//! dma-buf MRs without a revoke callback; rxe and siw have no dma-buf MRs.

use std::fmt;

use crate::kernel::HostPaths;

/// The kernel subsystem an importing driver belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subsystem {
    /// A DRM (GPU, display) driver: imports through PRIME (`DRM_IOCTL_PRIME_FD_TO_HANDLE`).
    Drm,
    /// An RDMA driver: imports as a memory region (`ibv_reg_dmabuf_mr`).
    Rdma,
}

/// What a driver does with a vfio-pci BAR dma-buf on Linux 7.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarImport {
    /// Attaches peer-to-peer and revocably: the import works where the P2P distance
    /// check passes.
    Accepted,
    /// Peer-to-peer and revocable only in one configuration (the row's `why` says which).
    Conditional,
    /// Imports dma-bufs, but statically or pinned without revoke, which the vfio-pci
    /// exporter refuses (EOPNOTSUPP).
    Refused,
    /// Imports no dma-buf at all (EOPNOTSUPP for any dma-buf, a udmabuf too).
    NoDmabufImport,
}

impl BarImport {
    /// Whether a BAR dma-buf can be imported at all (in the one configuration, for
    /// [`BarImport::Conditional`]).
    pub fn accepts(self) -> bool {
        matches!(self, BarImport::Accepted | BarImport::Conditional)
    }
}

/// One row of the table: a kernel driver and what it does with a BAR dma-buf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImporterDriver {
    /// The driver's name: for DRM as `DRM_IOCTL_VERSION` and the sysfs `driver` link
    /// give it (`amdgpu`, `virtio_gpu`), for RDMA its family ([`RdmaDriver::family`]:
    /// `mlx5`, `bnxt_re`).
    pub name: &'static str,
    /// DRM or RDMA.
    pub subsystem: Subsystem,
    /// What it does with a BAR dma-buf.
    pub bar: BarImport,
    /// Why, in a sentence (the condition, for [`BarImport::Conditional`]).
    pub why: &'static str,
}

const DRM_P2P: &str = "PRIME import attaches dynamically with P2P; the distance check decides";
const DRM_STATIC: &str = "imports without P2P: a BAR buffer is refused";
const RDMA_PINNED: &str = "this driver pins dma-buf MRs without a revoke callback; the \
                           vfio-pci exporter admits only revocable peer-to-peer importers, so \
                           the attach fails with EOPNOTSUPP";
const RDMA_SOFTWARE: &str = "software RDMA (rxe, siw) has no dma-buf MR support: the kernel \
                             answers EOPNOTSUPP for any dma-buf (a udmabuf too), not only for \
                             a BAR";

/// The drivers whose dma-buf import this library knows, DRM then RDMA.
pub const IMPORTER_DRIVERS: &[ImporterDriver] = &[
    drm("amdgpu", BarImport::Accepted, DRM_P2P),
    drm("xe", BarImport::Accepted, DRM_P2P),
    drm(
        "virtio_gpu",
        BarImport::Conditional,
        "only with resource blobs and without virgl 3D (QEMU: -device \
         virtio-gpu-pci,blob=true, which needs /dev/udmabuf and a memfd memory backend on \
         the host); otherwise it falls back to drm_gem_prime_import(), a static attach",
    ),
    drm(
        "vgem",
        BarImport::Refused,
        "imports only static, page-backed buffers (EOPNOTSUPP)",
    ),
    drm("i915", BarImport::Refused, DRM_STATIC),
    drm("nouveau", BarImport::Refused, DRM_STATIC),
    rdma(
        "mlx5",
        BarImport::Accepted,
        "mlx5 accepts it for MRs in the default (MTT) mode, through the revocable dynamic \
         attachment, which needs CONFIG_INFINIBAND_ON_DEMAND_PAGING; data-direct MRs pin \
         without revoke and are refused",
    ),
    rdma(
        "irdma",
        BarImport::Accepted,
        "irdma accepts it (a pinned umem that is also revocable)",
    ),
    rdma("efa", BarImport::Refused, RDMA_PINNED),
    rdma("bnxt_re", BarImport::Refused, RDMA_PINNED),
    rdma("mana", BarImport::Refused, RDMA_PINNED),
    rdma("ionic", BarImport::Refused, RDMA_PINNED),
    rdma("rxe", BarImport::NoDmabufImport, RDMA_SOFTWARE),
    rdma("siw", BarImport::NoDmabufImport, RDMA_SOFTWARE),
];

const fn drm(name: &'static str, bar: BarImport, why: &'static str) -> ImporterDriver {
    ImporterDriver {
        name,
        subsystem: Subsystem::Drm,
        bar,
        why,
    }
}

const fn rdma(name: &'static str, bar: BarImport, why: &'static str) -> ImporterDriver {
    ImporterDriver {
        name,
        subsystem: Subsystem::Rdma,
        bar,
        why,
    }
}

/// The row of `name` in `subsystem`, `None` for a driver the table lacks.
pub fn importer_driver(subsystem: Subsystem, name: &str) -> Option<&'static ImporterDriver> {
    IMPORTER_DRIVERS
        .iter()
        .find(|d| d.subsystem == subsystem && d.name == name)
}

/// The DRM drivers known to import a vfio-pci BAR dma-buf, for messages.
pub const DRM_CAPABLE: &str = "amdgpu, xe, and virtio_gpu with blob resources and no virgl \
                               3D (QEMU: -device virtio-gpu-pci,blob=true)";

/// The one-line table of Linux 7.2's RDMA verdicts, for messages.
pub const RDMA_ACCEPTANCE: &str = "Linux 7.2 registers a vfio-pci BAR dma-buf as an MR on: \
     mlx5 (default MTT MRs, with CONFIG_INFINIBAND_ON_DEMAND_PAGING) and irdma; refuses it on \
     efa, bnxt_re, mana and ionic (they pin without revoke) and on mlx5 data-direct MRs; rxe \
     and siw have no dma-buf MRs (EOPNOTSUPP); see docs/rdma.md";

/// Why DRM driver `driver` refused a BAR dma-buf with EOPNOTSUPP, and what works
/// instead: a sentence for an error's fix.
pub fn drm_refusal_fix(driver: &str) -> String {
    let why = match importer_driver(Subsystem::Drm, driver) {
        Some(ImporterDriver {
            bar: BarImport::Accepted,
            ..
        }) => format!(
            "{driver} normally attaches peer-to-peer and revocably; check that the buffer \
             comes from vfio-pci (other exporters refuse differently)"
        ),
        Some(ImporterDriver {
            bar: BarImport::Conditional,
            why,
            ..
        }) => format!("{driver} imports a peer BAR {why}"),
        Some(ImporterDriver {
            bar: BarImport::Refused | BarImport::NoDmabufImport,
            ..
        }) => format!(
            "{driver} attaches dma-bufs statically (no peer2peer, not revocable), which the \
             vfio-pci exporter refuses"
        ),
        None => format!(
            "{driver} does not attach peer-to-peer and revocably, which the vfio-pci \
             exporter requires"
        ),
    };
    format!("{why}; drivers that import a vfio BAR in Linux 7.2: {DRM_CAPABLE}")
}

/// The kernel driver of an RDMA device, told apart by what sysfs says of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RdmaDriver {
    /// NVIDIA/Mellanox ConnectX (`mlx5_ib` over `mlx5_core`).
    Mlx5,
    /// Intel Ethernet RDMA (E810, X722).
    Irdma,
    /// AWS Elastic Fabric Adapter.
    Efa,
    /// Broadcom NetXtreme-E.
    BnxtRe,
    /// Microsoft Azure Network Adapter.
    Mana,
    /// AMD Pensando.
    Ionic,
    /// Soft-RoCE (RoCE v2 in software over any netdev).
    Rxe,
    /// Soft-iWARP.
    Siw,
    /// Another driver, by the name sysfs gives.
    Other(String),
}

impl RdmaDriver {
    /// The driver of an RDMA device from what sysfs says of it: the driver of its
    /// parent PCI function (`device/driver`: `mlx5_core`, `ice` …) or, for a software
    /// device, its attributes (`parent` for rxe, `node_type` 4 (RNIC) for siw). An
    /// irdma device's parent is the Ethernet function, bound to `ice` (E810) or `i40e`
    /// (X722); the ib driver is irdma either way. `None` when sysfs says nothing of it
    /// (no parent PCI function, no software-device attributes).
    pub fn from_names(
        pci_driver: Option<&str>,
        ibdev: &str,
        has_parent_attr: bool,
        node_type: Option<&str>,
    ) -> Option<RdmaDriver> {
        Some(match pci_driver {
            Some("mlx5_core") => RdmaDriver::Mlx5,
            Some("irdma") | Some("ice") | Some("i40e") => RdmaDriver::Irdma,
            Some("efa") => RdmaDriver::Efa,
            Some("bnxt_en") | Some("bnxt_re") => RdmaDriver::BnxtRe,
            Some("mana") => RdmaDriver::Mana,
            Some("ionic") => RdmaDriver::Ionic,
            Some(other) => RdmaDriver::Other(other.to_string()),
            None if has_parent_attr || ibdev.starts_with("rxe") => RdmaDriver::Rxe,
            None if ibdev.starts_with("siw") || node_type.is_some_and(|t| t.starts_with('4')) => {
                RdmaDriver::Siw
            }
            None => return None,
        })
    }

    /// Reads `sys/class/infiniband/IBDEV/` under `host` (`device/driver`, `parent`,
    /// `node_type`) and judges it by [`RdmaDriver::from_names`]: the one sysfs reader
    /// of an RDMA device. `None` for a device sysfs says nothing of.
    pub fn of_device(host: &HostPaths, ibdev: &str) -> Option<RdmaDriver> {
        let dir = format!("sys/class/infiniband/{ibdev}");
        let pci = host.link_name(&format!("{dir}/device/driver"));
        let node_type = host.read(&format!("{dir}/node_type"));
        RdmaDriver::from_names(
            pci.as_deref(),
            ibdev,
            host.exists(&format!("{dir}/parent")),
            node_type.as_deref(),
        )
    }

    /// The driver's name as the table spells it (`mlx5`, `irdma`, `bnxt_re`, `rxe` …);
    /// for another driver, the name sysfs gave.
    pub fn family(&self) -> &str {
        match self {
            RdmaDriver::Mlx5 => "mlx5",
            RdmaDriver::Irdma => "irdma",
            RdmaDriver::Efa => "efa",
            RdmaDriver::BnxtRe => "bnxt_re",
            RdmaDriver::Mana => "mana",
            RdmaDriver::Ionic => "ionic",
            RdmaDriver::Rxe => "rxe",
            RdmaDriver::Siw => "siw",
            RdmaDriver::Other(name) => name,
        }
    }

    /// Its row of [`IMPORTER_DRIVERS`]; `None` for a driver the table lacks.
    pub fn importer(&self) -> Option<&'static ImporterDriver> {
        importer_driver(Subsystem::Rdma, self.family())
    }
}

impl fmt::Display for RdmaDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RdmaDriver::Mlx5 => "mlx5",
            RdmaDriver::Irdma => "irdma",
            RdmaDriver::Efa => "efa",
            RdmaDriver::BnxtRe => "bnxt_re",
            RdmaDriver::Mana => "mana_ib",
            RdmaDriver::Ionic => "ionic",
            RdmaDriver::Rxe => "rxe (soft-RoCE)",
            RdmaDriver::Siw => "siw (soft-iWARP)",
            RdmaDriver::Other(name) => name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::TempTree;

    #[test]
    fn each_driver_has_one_row() {
        for (i, a) in IMPORTER_DRIVERS.iter().enumerate() {
            for b in &IMPORTER_DRIVERS[i + 1..] {
                assert!(
                    (a.subsystem, a.name) != (b.subsystem, b.name),
                    "{} twice",
                    a.name
                );
            }
        }
        for d in [
            RdmaDriver::Mlx5,
            RdmaDriver::Irdma,
            RdmaDriver::Efa,
            RdmaDriver::BnxtRe,
            RdmaDriver::Mana,
            RdmaDriver::Ionic,
            RdmaDriver::Rxe,
            RdmaDriver::Siw,
        ] {
            assert!(d.importer().is_some(), "{d} has no row");
        }
    }

    #[test]
    fn the_drm_rows_match_the_72_source() {
        let bar = |d| importer_driver(Subsystem::Drm, d).map(|r| r.bar);
        assert_eq!(bar("amdgpu"), Some(BarImport::Accepted));
        assert_eq!(bar("xe"), Some(BarImport::Accepted));
        assert_eq!(bar("virtio_gpu"), Some(BarImport::Conditional));
        for d in ["vgem", "i915", "nouveau"] {
            assert_eq!(bar(d), Some(BarImport::Refused), "{d}");
        }
        assert_eq!(bar("mlx5"), None, "an RDMA row is not a DRM row");
        let fix = drm_refusal_fix("vgem");
        assert!(fix.contains("vgem") && fix.contains("amdgpu, xe"), "{fix}");
        assert!(drm_refusal_fix("virtio_gpu").contains("blob=true"));
    }

    #[test]
    fn rdma_drivers_are_told_apart_by_sysfs_names() {
        assert_eq!(
            RdmaDriver::from_names(Some("mlx5_core"), "mlx5_0", false, None),
            Some(RdmaDriver::Mlx5)
        );
        // irdma's parent is the Ethernet PCI function: ice (E810) or i40e (X722).
        for pci in ["ice", "i40e", "irdma"] {
            let d = RdmaDriver::from_names(Some(pci), "irdma0", false, None).unwrap();
            assert_eq!(d, RdmaDriver::Irdma, "{pci}");
            assert_eq!(d.family(), "irdma");
            assert_eq!(d.importer().map(|r| r.bar), Some(BarImport::Accepted));
        }
        assert_eq!(
            RdmaDriver::from_names(None, "peer1", true, Some("1: CA")),
            Some(RdmaDriver::Rxe)
        );
        assert_eq!(
            RdmaDriver::from_names(None, "siw0", false, Some("4: RNIC")),
            Some(RdmaDriver::Siw)
        );
        assert_eq!(RdmaDriver::from_names(None, "odd0", false, None), None);
        assert_eq!(RdmaDriver::Efa.importer().unwrap().bar, BarImport::Refused);
        assert_eq!(
            RdmaDriver::Rxe.importer().unwrap().bar,
            BarImport::NoDmabufImport
        );
        let other = RdmaDriver::from_names(Some("hfi1"), "hfi1_0", false, None).unwrap();
        assert_eq!((other.family(), other.importer()), ("hfi1", None));
    }

    #[test]
    fn an_rdma_device_is_read_from_its_sysfs_directory() {
        let t = TempTree::new("ibclass");
        t.write("sys/class/infiniband/rxe_a/parent", "veth0\n");
        t.link(
            "sys/class/infiniband/mlx5_0/device/driver",
            "../../bus/pci/drivers/mlx5_core",
        );
        t.dir("sys/class/infiniband/odd0");
        let host = HostPaths::under(t.path());
        assert_eq!(RdmaDriver::of_device(&host, "rxe_a"), Some(RdmaDriver::Rxe));
        assert_eq!(
            RdmaDriver::of_device(&host, "mlx5_0"),
            Some(RdmaDriver::Mlx5)
        );
        assert_eq!(RdmaDriver::of_device(&host, "odd0"), None);
    }
}
