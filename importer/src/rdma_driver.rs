//! Which kernel driver runs an RDMA device, and whether Linux 7.2 lets that driver
//! register a vfio-pci BAR dma-buf as an MR: the one acceptance table (with the source
//! lines in `docs/rdma.md`), used by the importer atlas (always built) and by the RDMA
//! importer (feature `rdma`, which adds `Driver::of_device`, the reader of `/sys`).
//!
//! Pure: it judges names sysfs gives (`/sys/class/infiniband/IBDEV/device/driver`,
//! `parent`, `node_type`) and reads nothing itself.

use std::fmt;

/// The kernel RDMA drivers this library knows the dma-buf story of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Driver {
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

/// What a driver does with a vfio-pci BAR dma-buf on Linux 7.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarDmabuf {
    /// The driver registers it (peer-to-peer and revocable), with a caveat.
    Accepted(&'static str),
    /// The driver has dma-buf MRs but attaches in a way the vfio exporter refuses.
    Refused(&'static str),
    /// The driver has no dma-buf MRs at all.
    NoDmabufMrs(&'static str),
    /// Not in the table.
    Unknown,
}

impl Driver {
    /// The driver of an RDMA device from what sysfs says of it: the driver of its
    /// parent PCI function (`device/driver`: `mlx5_core`, `ice` …) or, for a software
    /// device, its attributes. An irdma device's parent is the Ethernet function,
    /// bound to `ice` (E810) or `i40e` (X722); the ib driver is irdma either way.
    pub fn from_names(
        pci_driver: Option<&str>,
        ibdev: &str,
        has_parent_attr: bool,
        node_type: Option<&str>,
    ) -> Driver {
        match pci_driver {
            Some("mlx5_core") => Driver::Mlx5,
            Some("irdma") | Some("ice") | Some("i40e") => Driver::Irdma,
            Some("efa") => Driver::Efa,
            Some("bnxt_en") | Some("bnxt_re") => Driver::BnxtRe,
            Some("mana") => Driver::Mana,
            Some("ionic") => Driver::Ionic,
            Some(other) => Driver::Other(other.to_string()),
            None if has_parent_attr || ibdev.starts_with("rxe") => Driver::Rxe,
            None if ibdev.starts_with("siw") || node_type.is_some_and(|t| t.starts_with('4')) => {
                Driver::Siw
            }
            None => Driver::Other(format!("{ibdev} (no parent device in sysfs)")),
        }
    }

    /// What Linux 7.2 does when this driver registers a vfio-pci BAR dma-buf.
    pub fn bar_dmabuf(&self) -> BarDmabuf {
        match self {
            Driver::Mlx5 => BarDmabuf::Accepted(
                "mlx5 accepts it for MRs in the default (MTT) mode, through the revocable \
                 dynamic attachment, which needs CONFIG_INFINIBAND_ON_DEMAND_PAGING; \
                 data-direct MRs pin without revoke and are refused",
            ),
            Driver::Irdma => {
                BarDmabuf::Accepted("irdma accepts it (a pinned umem that is also revocable)")
            }
            Driver::Efa | Driver::BnxtRe | Driver::Mana | Driver::Ionic => BarDmabuf::Refused(
                "this driver pins dma-buf MRs without a revoke callback; the vfio-pci \
                 exporter admits only revocable peer-to-peer importers, so the attach fails \
                 with EOPNOTSUPP",
            ),
            Driver::Rxe | Driver::Siw => BarDmabuf::NoDmabufMrs(
                "software RDMA (rxe, siw) has no dma-buf MR support: the kernel answers \
                 EOPNOTSUPP for any dma-buf (a udmabuf too), not only for a BAR",
            ),
            Driver::Other(_) => BarDmabuf::Unknown,
        }
    }
}

impl Driver {
    /// The driver's name as the acceptance table spells it (`mlx5`, `irdma`, `bnxt_re`,
    /// `rxe` …); for another driver, the name sysfs gave.
    pub fn family(&self) -> &str {
        match self {
            Driver::Mlx5 => "mlx5",
            Driver::Irdma => "irdma",
            Driver::Efa => "efa",
            Driver::BnxtRe => "bnxt_re",
            Driver::Mana => "mana",
            Driver::Ionic => "ionic",
            Driver::Rxe => "rxe",
            Driver::Siw => "siw",
            Driver::Other(name) => name,
        }
    }
}

impl BarDmabuf {
    /// Whether the driver takes a BAR dma-buf (`None`: a driver the table lacks).
    pub fn accepts(&self) -> Option<bool> {
        match self {
            BarDmabuf::Accepted(_) => Some(true),
            BarDmabuf::Refused(_) | BarDmabuf::NoDmabufMrs(_) => Some(false),
            BarDmabuf::Unknown => None,
        }
    }

    /// Why, in a sentence.
    pub fn note(&self) -> &'static str {
        match self {
            BarDmabuf::Accepted(n) | BarDmabuf::Refused(n) | BarDmabuf::NoDmabufMrs(n) => n,
            BarDmabuf::Unknown => "a driver the acceptance table does not cover",
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::Mlx5 => "mlx5",
            Driver::Irdma => "irdma",
            Driver::Efa => "efa",
            Driver::BnxtRe => "bnxt_re",
            Driver::Mana => "mana_ib",
            Driver::Ionic => "ionic",
            Driver::Rxe => "rxe (soft-RoCE)",
            Driver::Siw => "siw (soft-iWARP)",
            Driver::Other(name) => name,
        })
    }
}

/// The one-line table of Linux 7.2's verdicts, for error messages.
pub const ACCEPTANCE_TABLE: &str = "Linux 7.2 registers a vfio-pci BAR dma-buf as an MR on: \
     mlx5 (default MTT MRs, with CONFIG_INFINIBAND_ON_DEMAND_PAGING) and irdma; refuses it on \
     efa, bnxt_re, mana and ionic (they pin without revoke) and on mlx5 data-direct MRs; rxe \
     and siw have no dma-buf MRs (EOPNOTSUPP); see docs/rdma.md";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_are_told_apart_by_sysfs() {
        assert_eq!(
            Driver::from_names(Some("mlx5_core"), "mlx5_0", false, None),
            Driver::Mlx5
        );
        // irdma's parent is the Ethernet PCI function: ice (E810) or i40e (X722).
        for pci in ["ice", "i40e", "irdma"] {
            let d = Driver::from_names(Some(pci), "irdma0", false, None);
            assert_eq!(d, Driver::Irdma, "{pci}");
            assert_eq!(d.family(), "irdma");
            assert_eq!(d.bar_dmabuf().accepts(), Some(true), "{pci}");
        }
        assert_eq!(
            Driver::from_names(None, "peer1", true, Some("1: CA")),
            Driver::Rxe
        );
        assert_eq!(
            Driver::from_names(None, "siw0", false, Some("4: RNIC")),
            Driver::Siw
        );
        assert!(matches!(Driver::Mlx5.bar_dmabuf(), BarDmabuf::Accepted(_)));
        assert!(matches!(Driver::Efa.bar_dmabuf(), BarDmabuf::Refused(_)));
        assert!(matches!(
            Driver::Rxe.bar_dmabuf(),
            BarDmabuf::NoDmabufMrs(_)
        ));
        let other = Driver::from_names(Some("hfi1"), "hfi1_0", false, None);
        assert_eq!(
            (other.family(), other.bar_dmabuf().accepts()),
            ("hfi1", None)
        );
    }
}
