//! What stands in the way of a [`P2pRoute`], how to remove it, and which
//! importers the verdict applies to.

use rustix::io::Errno;

use super::{HostBridge, MapType, P2pRoute, P2pVerdict, Upstream};
use crate::acs::{AcsFlags, AcsState};
use crate::Bdf;

/// The caveat every ACS change carries.
pub const ACS_CAVEAT: &str = "this lets the devices below that port reach each other without \
     the IOMMU seeing the traffic: the kernel then puts them in one IOMMU group, and they can \
     no longer be isolated from each other (given to different VMs or users)";

/// One element that keeps the traffic from going peer to peer, and the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocker {
    /// The function's ACS control redirects peer requests upstream, so the
    /// route through the common bridge is not taken.
    AcsRedirect {
        /// The redirecting function.
        bdf: Bdf,
        /// Its ACS control bits.
        ctrl: AcsFlags,
    },
    /// The host bridge the traffic would cross is on no allow-list, on a CPU
    /// the kernel does not trust to route P2P.
    HostBridge {
        /// The root (`pci0000:00`).
        root: String,
        /// Its function 00.0, when sysfs has one.
        host_bridge: Option<HostBridge>,
    },
    /// The functions are on different PCI roots the kernel does not pair.
    AcrossRoots {
        /// The provider's root.
        a: String,
        /// The client's root.
        b: String,
    },
}

impl Blocker {
    /// The blocking element, in a few words.
    pub fn element(&self) -> String {
        match self {
            Blocker::AcsRedirect { bdf, ctrl } => {
                let redir = AcsFlags(ctrl.0 & AcsFlags::REDIRECT).names().join(" ");
                format!("ACS on {bdf} redirects peer traffic upstream ({redir})")
            }
            Blocker::HostBridge { root, host_bridge } => match host_bridge {
                Some(h) => format!(
                    "host bridge {} ({:04x}:{:04x}) of {root} is on no P2P allow-list",
                    h.bdf, h.vendor, h.device
                ),
                None => format!("the host bridge of {root} is on no P2P allow-list"),
            },
            Blocker::AcrossRoots { a, b } => {
                format!("the devices are under different PCI roots ({a}, {b})")
            }
        }
    }

    /// How to remove it; `in_vm` picks the advice for a guest.
    pub fn fix(&self, in_vm: bool) -> String {
        let topology = if in_vm {
            "put both devices under one emulated PCIe switch (QEMU: -device \
             pcie-root-port,id=rp0,chassis=1 -device x3130-upstream,id=up0,bus=rp0 and one \
             -device xio3130-downstream,id=dnN,bus=up0,chassis=N,slot=N per device, each device \
             on bus=dnN)"
        } else {
            "put both devices under one PCIe switch, or use a machine with an allow-listed host \
             bridge or an AMD Zen or later CPU"
        };
        match self {
            Blocker::AcsRedirect { bdf, .. } => format!(
                "boot with pci=disable_acs_redir={bdf}, or pci=config_acs={}@{bdf} to clear only \
                 P2P request/completion redirect and egress control (caveat: {ACS_CAVEAT})",
                AcsFlags::config_acs_clearing_redirects()
            ),
            Blocker::HostBridge { .. } | Blocker::AcrossRoots { .. } => {
                format!("{topology}; the iommufd importer does not need this check")
            }
        }
    }
}

/// How one kind of importer fares on the route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImporterCheck {
    /// The importer.
    pub importer: &'static str,
    /// Whether it runs the kernel's distance check.
    pub checks_distance: bool,
    /// Whether the import works.
    pub works: bool,
    /// The errno its map fails with, when it does.
    pub errno: Option<Errno>,
    /// What happens, in a sentence.
    pub outcome: &'static str,
}

impl P2pRoute {
    /// What keeps this route from being direct peer to peer, each with its
    /// fix. Empty for a direct route; for an allowed route through the root
    /// complex it names the ACS redirects that sent it there.
    pub fn blockers(&self) -> Vec<Blocker> {
        let mut out: Vec<Blocker> = self
            .acs_redirects
            .iter()
            .map(|bdf| Blocker::AcsRedirect {
                bdf: *bdf,
                ctrl: match self.node(*bdf).map(|n| n.acs) {
                    Some(AcsState::Present(acs)) => acs.ctrl,
                    _ => AcsFlags::default(),
                },
            })
            .collect();
        if !self.verdict.allowed() {
            match (&self.upstream, self.verdict) {
                (Upstream::Roots { a, b }, _) => out.push(Blocker::AcrossRoots {
                    a: a.clone(),
                    b: b.clone(),
                }),
                (_, P2pVerdict::HostBridgeNotAllowed) => {
                    let root = self.a_chain.first().cloned().unwrap_or_default();
                    let host_bridge = match &self.upstream {
                        Upstream::HostBridge { host_bridge, .. } => *host_bridge,
                        _ => None,
                    };
                    out.push(Blocker::HostBridge { root, host_bridge });
                }
                _ => {}
            }
        }
        out
    }

    /// The kernel parameter that turns every ACS redirect on the route off:
    /// `pci=disable_acs_redir=BDF;BDF` (the list the kernel prints), when
    /// there are any.
    pub fn disable_acs_redir_parameter(&self) -> Option<String> {
        if self.acs_redirects.is_empty() {
            return None;
        }
        let list: Vec<String> = self.acs_redirects.iter().map(|b| b.to_string()).collect();
        Some(format!("pci=disable_acs_redir={}", list.join(";")))
    }

    /// Which importers the verdict applies to and how each fares.
    pub fn importers(&self) -> Vec<ImporterCheck> {
        let (works, errno, checked_outcome) = match self.map_type {
            MapType::BusAddr => (
                true,
                None,
                "maps the BAR by PCI bus address: the traffic goes peer to peer through the \
                 common bridge",
            ),
            MapType::ThruHostBridge => (
                true,
                None,
                "maps the BAR's physical address (translated by the IOMMU where there is one): \
                 the traffic climbs to the root complex and back",
            ),
            MapType::NotSupported => (
                false,
                Some(Errno::INVAL),
                "the dma-buf map fails with EINVAL (pci_p2pdma_map_type: \
                 PCI_P2PDMA_MAP_NOT_SUPPORTED)",
            ),
        };
        let checked = |importer| ImporterCheck {
            importer,
            checks_distance: true,
            works,
            errno,
            outcome: checked_outcome,
        };
        // Without an IOMMU group, or in one of vfio's no-IOMMU groups, no IOMMU
        // translates for iommufd (and such devices have no VFIO cdev to bind).
        let no_iommu = !self.a.translated() || !self.b.translated();
        vec![
            if no_iommu {
                ImporterCheck {
                    importer: "iommufd (IOMMU_IOAS_MAP_FILE)",
                    checks_distance: false,
                    works: false,
                    errno: None,
                    outcome: "no IOMMU translates these devices (no IOMMU group, or vfio's \
                              no-IOMMU mode): iommufd has nothing to map through; enable the \
                              IOMMU (intel_iommu=on / amd_iommu=on)",
                }
            } else {
                ImporterCheck {
                    importer: "iommufd (IOMMU_IOAS_MAP_FILE)",
                    checks_distance: false,
                    works: true,
                    errno: None,
                    outcome: "maps the BAR's physical range without the distance check; the \
                              importing device's DMA is translated by the IOMMU",
                }
            },
            checked("RDMA (ibv_reg_dmabuf_mr: mlx5, irdma)"),
            checked("DRM PRIME (amdgpu, xe, virtio-gpu)"),
            checked("Vulkan (VK_EXT_external_memory_dma_buf, through its DRM driver)"),
        ]
    }
}
