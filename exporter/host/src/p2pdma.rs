//! The PCI route between two functions and whether the kernel's P2P distance
//! check lets one DMA to the other: [`Sysfs::p2p_route`].
//!
//! This follows `calc_map_type_and_dist()` in `drivers/pci/p2pdma.c` (Linux
//! 7.2), which `pci_p2pdma_map_type()` runs when a DRM, RDMA or block importer
//! maps a peer's BAR (for a vfio-pci dma-buf: `dma_buf_phys_vec_to_sgt()`):
//!
//! - It walks up from the provider; at each function it reads ACS
//!   (`pci_bridge_has_acs_redir()`: P2P Request Redirect, Completion Redirect
//!   or Egress Control on), and stops at the first one that is also upstream
//!   of the client (the **common upstream bridge**), then reads ACS on the
//!   client's side up to it. No redirect on the way: the two talk by PCI bus
//!   address through that bridge (`PCI_P2PDMA_MAP_BUS_ADDR`): **direct**.
//! - A redirect on the way, or no common bridge at all (root-port siblings,
//!   functions on the root bus, different PCI roots): the traffic goes
//!   **through the host bridge** (`PCI_P2PDMA_MAP_THRU_HOST_BRIDGE`), which the
//!   kernel allows only when the CPU is an AMD Zen or later
//!   (`cpu_supports_p2pdma()`: vendor AMD, family >= 0x17) or the host bridge
//!   (function 00.0 of the root bus) is on `pci_p2pdma_whitelist[]` (some
//!   Intel Xeons; for two different host bridges both must be listed without
//!   the same-host-bridge flag). Otherwise: `PCI_P2PDMA_MAP_NOT_SUPPORTED`,
//!   and the importer's map fails with EINVAL: **blocked**.
//!
//! iommufd imports map the BAR's physical range without this check.
//!
//! The tree is read through [`Sysfs`] (its root is a parameter), so fixture
//! trees work: `bus/pci/devices/BDF` must be a link into `devices/pciDDDD:BB/…`;
//! each function's `config` file gives its port type and ACS ([`AcsState`]).

mod advice;
#[cfg(test)]
mod tests;

use std::fs;
use std::path::Path;

pub use advice::{Blocker, ImporterCheck};

use crate::acs::{bus_range, AcsState, PortKind};
use crate::error::{HostError, Result};
use crate::sysfs::Sysfs;
use crate::Bdf;

/// PCI vendor id of Intel.
const PCI_VENDOR_ID_INTEL: u16 = 0x8086;

/// Host bridges `pci_p2pdma_whitelist[]` in `drivers/pci/p2pdma.c` allows P2P
/// through (Intel Xeon E5/E7, Skylake-E, Ice Lake-SP root ports' host bridge).
pub const ALLOWED_INTEL_HOST_BRIDGES: &[u16] = &[
    0x3c00, 0x3c01, 0x2f00, 0x2f01, 0x2030, 0x2031, 0x2032, 0x2033, 0x2020, 0x09a2,
];

/// Entries of [`ALLOWED_INTEL_HOST_BRIDGES`] flagged `REQ_SAME_HOST_BRIDGE`:
/// allowed only between two functions under that one host bridge.
pub const SAME_HOST_BRIDGE_ONLY: &[u16] = &[0x3c00, 0x3c01, 0x2f00, 0x2f01];

/// The CPU facts `cpu_supports_p2pdma()` looks at, and whether this is a
/// virtual machine (which changes the advice, not the verdict).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostCpu {
    /// `vendor_id` is `AuthenticAMD`.
    pub amd: bool,
    /// `cpu family`.
    pub family: u32,
    /// `flags` has `hypervisor`: a guest.
    pub hypervisor: bool,
}

impl HostCpu {
    /// The running CPU, from `/proc/cpuinfo` (an unreadable file reads as a
    /// CPU the rule does not cover).
    pub fn system() -> HostCpu {
        HostCpu::from_cpuinfo(&fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
    }

    /// Parses the first CPU of a `/proc/cpuinfo` text.
    pub fn from_cpuinfo(text: &str) -> HostCpu {
        let field = |name: &str| {
            text.lines()
                .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        };
        HostCpu {
            amd: field("vendor_id").as_deref() == Some("AuthenticAMD"),
            family: field("cpu family")
                .and_then(|f| f.parse().ok())
                .unwrap_or(0),
            hypervisor: field("flags")
                .is_some_and(|f| f.split_whitespace().any(|x| x == "hypervisor")),
        }
    }

    /// `cpu_supports_p2pdma()`: an AMD CPU of family 0x17 (Zen) or later.
    pub fn supports_p2pdma(&self) -> bool {
        self.amd && self.family >= 0x17
    }
}

/// The host bridge's function (00.0 of the root bus) and its ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostBridge {
    /// Address.
    pub bdf: Bdf,
    /// PCI vendor id.
    pub vendor: u16,
    /// PCI device id.
    pub device: u16,
}

impl HostBridge {
    /// Whether `pci_p2pdma_whitelist[]` lists it.
    pub fn is_allow_listed(&self) -> bool {
        self.vendor == PCI_VENDOR_ID_INTEL && ALLOWED_INTEL_HOST_BRIDGES.contains(&self.device)
    }

    /// Whether the allow-list lets traffic cross from it to another listed
    /// host bridge (its entry lacks `REQ_SAME_HOST_BRIDGE`).
    pub fn is_allow_listed_across(&self) -> bool {
        self.is_allow_listed() && !SAME_HOST_BRIDGE_ONLY.contains(&self.device)
    }
}

/// Where the two functions' chains meet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// A common upstream bridge (a switch port or a root port).
    Bridge(Bdf),
    /// Only the host bridge of one PCI root (`pciDDDD:BB`); `host_bridge` is
    /// its function 00.0 when sysfs has one.
    HostBridge {
        /// The root (`pci0000:00`).
        root: String,
        /// Function 00.0 of the root bus.
        host_bridge: Option<HostBridge>,
    },
    /// Different PCI roots.
    Roots {
        /// The first function's root.
        a: String,
        /// The second function's root.
        b: String,
    },
}

/// What the distance check decides, and on which rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum P2pVerdict {
    /// Allowed: a common upstream bridge and no ACS redirect on the way.
    CommonBridge,
    /// Allowed: through a host bridge on the allow-list.
    AllowListedHostBridge,
    /// Allowed: through the host bridge, on an AMD Zen or later CPU.
    CpuSupportsP2p,
    /// Refused: through a host bridge on no allow-list, on a CPU the rule
    /// does not cover.
    HostBridgeNotAllowed,
    /// Refused: across PCI roots whose host bridges the allow-list does not
    /// pair, on a CPU the rule does not cover.
    AcrossRoots,
}

impl P2pVerdict {
    /// Whether the check passes.
    pub fn allowed(self) -> bool {
        matches!(
            self,
            P2pVerdict::CommonBridge
                | P2pVerdict::AllowListedHostBridge
                | P2pVerdict::CpuSupportsP2p
        )
    }

    /// Why, in a sentence.
    pub fn why(self) -> &'static str {
        match self {
            P2pVerdict::CommonBridge => {
                "the devices share an upstream bridge and no ACS bit on the way redirects \
                 peer traffic upstream"
            }
            P2pVerdict::AllowListedHostBridge => {
                "the traffic crosses the host bridge, which is on the kernel's P2P allow-list"
            }
            P2pVerdict::CpuSupportsP2p => {
                "the traffic crosses the host bridge, and the CPU is an AMD Zen or later, \
                 which the kernel trusts to route P2P through its root complex"
            }
            P2pVerdict::HostBridgeNotAllowed => {
                "the traffic would cross the host bridge, which is on no P2P allow-list, on a \
                 CPU the kernel does not trust to route P2P: DRM and RDMA imports fail with \
                 EINVAL (\"do not share an upstream bridge or whitelisted host bridge\")"
            }
            P2pVerdict::AcrossRoots => {
                "the devices are on different PCI roots whose host bridges the allow-list \
                 does not pair, on a CPU the kernel does not trust to route P2P"
            }
        }
    }
}

/// `enum pci_p2pdma_map_type`: how a checking importer maps the peer's BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapType {
    /// `PCI_P2PDMA_MAP_BUS_ADDR`: by PCI bus address, through the common bridge.
    BusAddr,
    /// `PCI_P2PDMA_MAP_THRU_HOST_BRIDGE`: by a DMA (IOMMU) address, through the
    /// root complex.
    ThruHostBridge,
    /// `PCI_P2PDMA_MAP_NOT_SUPPORTED`: the map fails (EINVAL).
    NotSupported,
}

impl MapType {
    /// The kernel's name.
    pub fn kernel_name(self) -> &'static str {
        match self {
            MapType::BusAddr => "PCI_P2PDMA_MAP_BUS_ADDR",
            MapType::ThruHostBridge => "PCI_P2PDMA_MAP_THRU_HOST_BRIDGE",
            MapType::NotSupported => "PCI_P2PDMA_MAP_NOT_SUPPORTED",
        }
    }
}

/// Whether and how one function's DMA reaches the other's BAR, in the user's terms
/// ([`MapType`] is the kernel's): what `peerdma path` prints as the verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Peer to peer through a common PCIe bridge, never reaching the root
    /// complex.
    Direct,
    /// Allowed, but the traffic climbs to the root complex and back down.
    ThroughRootComplex,
    /// A checking importer (DRM, RDMA) refuses it.
    Blocked,
}

impl Reach {
    /// `direct`, `through the root complex`, `blocked`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reach::Direct => "direct",
            Reach::ThroughRootComplex => "through the root complex",
            Reach::Blocked => "blocked",
        }
    }
}

/// One PCI function on the route, with what the distance check reads of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteNode {
    /// Address.
    pub bdf: Bdf,
    /// Its role (root port, switch port, endpoint …).
    pub kind: PortKind,
    /// PCI vendor id.
    pub vendor: u16,
    /// PCI device id.
    pub device: u16,
    /// Secondary and subordinate bus of a bridge.
    pub buses: Option<(u8, u8)>,
    /// Its ACS capability and control bits.
    pub acs: AcsState,
    /// Whether the distance check reads its ACS: it lies between the two
    /// functions, the common bridge and the two functions included (only
    /// when they have a common bridge; otherwise the verdict ignores ACS).
    pub checked: bool,
}

/// One of the two functions: what VFIO and the user need to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEnd {
    /// Address.
    pub bdf: Bdf,
    /// PCI vendor id.
    pub vendor: u16,
    /// PCI device id.
    pub device: u16,
    /// Bound driver.
    pub driver: Option<String>,
    /// IOMMU group.
    pub iommu_group: Option<u32>,
    /// The group is one of vfio's no-IOMMU groups (its sysfs `name` is
    /// `vfio-noiommu`, drivers/vfio/group.c): no IOMMU translates the device.
    pub noiommu_group: bool,
    /// Bound to vfio-pci or a vfio variant driver.
    pub vfio_bound: bool,
}

impl RouteEnd {
    /// Whether an IOMMU translates this device's DMA: it has an IOMMU group that is
    /// not one of vfio's no-IOMMU groups (iommufd imports need one).
    pub fn translated(&self) -> bool {
        self.iommu_group.is_some() && !self.noiommu_group
    }
}

/// The route between two PCI functions, as [`Sysfs::p2p_route`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct P2pRoute {
    /// The first function's chain from its root: `["pci0000:00",
    /// "0000:00:1c.0", …, BDF]`.
    pub a_chain: Vec<String>,
    /// The second function's chain.
    pub b_chain: Vec<String>,
    /// Where they meet.
    pub upstream: Upstream,
    /// What the kernel's distance check decides.
    pub verdict: P2pVerdict,
    /// Both are in one IOMMU group (VFIO then needs every member bound to
    /// vfio-pci).
    pub same_iommu_group: bool,
    /// The provider (exporter).
    pub a: RouteEnd,
    /// The client (importer).
    pub b: RouteEnd,
    /// Every function of both chains below the roots: from `a` up, then down
    /// to `b`, each once.
    pub nodes: Vec<RouteNode>,
    /// Checked functions whose ACS redirects peer traffic upstream, in the
    /// kernel's order (what it prints for `pci=disable_acs_redir=`).
    pub acs_redirects: Vec<Bdf>,
    /// Checked functions whose ACS could not be read (not root): the verdict
    /// assumes they do not redirect.
    pub acs_unreadable: Vec<Bdf>,
    /// How a checking importer maps the BAR.
    pub map_type: MapType,
    /// The CPU the verdict was made for.
    pub cpu: HostCpu,
}

impl P2pRoute {
    /// How the provider's BAR is reached, in the user's terms (from [`Self::map_type`]).
    pub fn reach(&self) -> Reach {
        match self.map_type {
            MapType::BusAddr => Reach::Direct,
            MapType::ThruHostBridge => Reach::ThroughRootComplex,
            MapType::NotSupported => Reach::Blocked,
        }
    }

    /// The node at `bdf`.
    pub fn node(&self, bdf: Bdf) -> Option<&RouteNode> {
        self.nodes.iter().find(|n| n.bdf == bdf)
    }
}

impl Sysfs {
    /// The chain of PCI components from the root to `bdf`: `["pci0000:00",
    /// "0000:00:1c.0", …, "BDF"]`, from where `bus/pci/devices/BDF` links to.
    ///
    /// # Errors
    ///
    /// [`HostError::NoSuchDevice`] for a BDF sysfs does not list,
    /// [`HostError::Sysfs`] when the link cannot be resolved.
    pub fn pci_chain(&self, bdf: Bdf) -> Result<Vec<String>> {
        let link = self.device_path(bdf);
        self.check_exists(bdf, &link)?;
        let real = fs::canonicalize(&link).map_err(|source| HostError::Sysfs {
            path: link.clone(),
            source,
        })?;
        // Strip the tree's own location so that a fixture under a directory
        // whose name starts with "pci" still parses.
        let devices = fs::canonicalize(self.root().join("devices")).ok();
        let rel = devices
            .as_deref()
            .and_then(|d| real.strip_prefix(d).ok())
            .unwrap_or(&real);
        Ok(chain_from_path(rel))
    }

    /// The route between `a` (the provider, whose BAR is exported) and `b`
    /// (the client, which imports) and what the kernel's P2P distance check
    /// decides for it on this machine's CPU ([`HostCpu::system`]).
    ///
    /// # Errors
    ///
    /// As [`p2p_route_on`](Self::p2p_route_on).
    pub fn p2p_route(&self, a: Bdf, b: Bdf) -> Result<P2pRoute> {
        self.p2p_route_on(a, b, HostCpu::system())
    }

    /// [`p2p_route`](Self::p2p_route) for a given CPU.
    ///
    /// # Errors
    ///
    /// [`HostError::RouteToItself`] when `a` and `b` are one function;
    /// [`HostError::NoSuchDevice`] for a BDF sysfs does not list;
    /// [`HostError::NotAnEndpoint`] when `a` or `b` is a bridge; [`HostError::Sysfs`]
    /// and [`HostError::SysfsParse`] when a link or attribute of a function on the
    /// route or of the host bridge cannot be read.
    pub fn p2p_route_on(&self, a: Bdf, b: Bdf, cpu: HostCpu) -> Result<P2pRoute> {
        if a == b {
            return Err(HostError::RouteToItself { bdf: a });
        }
        let a_chain = self.pci_chain(a)?;
        let b_chain = self.pci_chain(b)?;
        let a_end = self.route_end(a)?;
        let b_end = self.route_end(b)?;
        let meeting = meeting(&a_chain, &b_chain);

        // The nodes, and which of them the distance check reads.
        let checked: Vec<String> = match &meeting {
            Meeting::Bridge(common) => {
                let up_to = |chain: &[String], inclusive: bool| -> Vec<String> {
                    let pos = chain.iter().position(|c| c == common).unwrap_or(0);
                    let from = if inclusive { pos } else { pos + 1 };
                    chain[from..].iter().rev().cloned().collect()
                };
                let mut v = up_to(&a_chain, true);
                v.extend(up_to(&b_chain, false));
                v
            }
            _ => Vec::new(),
        };
        let mut names: Vec<&String> = a_chain.iter().rev().filter(|c| !is_root(c)).collect();
        for c in b_chain.iter().filter(|c| !is_root(c)) {
            if !names.contains(&c) {
                names.push(c);
            }
        }
        let mut nodes = Vec::with_capacity(names.len());
        for name in names {
            let bdf = parse_component(self, name)?;
            nodes.push(self.route_node(bdf, checked.contains(name))?);
        }
        for end in [a, b] {
            let node = nodes.iter().find(|n| n.bdf == end);
            if let Some(kind) = node.map(|n| n.kind) {
                if kind.is_bridge() || kind == PortKind::HostBridge {
                    return Err(HostError::NotAnEndpoint {
                        bdf: end,
                        kind: kind.describe(),
                    });
                }
            }
        }
        // The kernel's order: a's side from a up to the common bridge, then
        // b's side from b up.
        let mut acs_redirects = Vec::new();
        let mut acs_unreadable = Vec::new();
        for name in &checked {
            let bdf = parse_component(self, name)?;
            if let Some(n) = nodes.iter().find(|n| n.bdf == bdf) {
                match n.acs.redirects() {
                    Some(true) => acs_redirects.push(bdf),
                    Some(false) => {}
                    None => acs_unreadable.push(bdf),
                }
            }
        }

        let upstream = match &meeting {
            Meeting::Bridge(name) => Upstream::Bridge(parse_component(self, name)?),
            Meeting::Root(root) => Upstream::HostBridge {
                root: root.clone(),
                host_bridge: self.host_bridge(root)?,
            },
            Meeting::Roots => Upstream::Roots {
                a: a_chain.first().cloned().unwrap_or_default(),
                b: b_chain.first().cloned().unwrap_or_default(),
            },
        };
        let verdict = match &upstream {
            Upstream::Bridge(_) if acs_redirects.is_empty() => P2pVerdict::CommonBridge,
            Upstream::Bridge(_) => {
                let root = a_chain.first().cloned().unwrap_or_default();
                self.through_one_host_bridge(&root, cpu)?
            }
            Upstream::HostBridge { host_bridge, .. } => {
                through_host_bridge(host_bridge.is_some_and(|h| h.is_allow_listed()), cpu)
            }
            Upstream::Roots { a: ra, b: rb } => {
                let listed = |r: &str| -> Result<bool> {
                    Ok(self
                        .host_bridge(r)?
                        .is_some_and(|h| h.is_allow_listed_across()))
                };
                if cpu.supports_p2pdma() {
                    P2pVerdict::CpuSupportsP2p
                } else if listed(ra)? && listed(rb)? {
                    P2pVerdict::AllowListedHostBridge
                } else {
                    P2pVerdict::AcrossRoots
                }
            }
        };
        let map_type = match verdict {
            P2pVerdict::CommonBridge => MapType::BusAddr,
            v if v.allowed() => MapType::ThruHostBridge,
            _ => MapType::NotSupported,
        };
        Ok(P2pRoute {
            a_chain,
            b_chain,
            upstream,
            verdict,
            same_iommu_group: a_end.iommu_group.is_some() && a_end.iommu_group == b_end.iommu_group,
            a: a_end,
            b: b_end,
            nodes,
            acs_redirects,
            acs_unreadable,
            map_type,
            cpu,
        })
    }

    /// The host-bridge rule for a route under one root.
    fn through_one_host_bridge(&self, root: &str, cpu: HostCpu) -> Result<P2pVerdict> {
        let listed = self.host_bridge(root)?.is_some_and(|h| h.is_allow_listed());
        Ok(through_host_bridge(listed, cpu))
    }

    /// One of the two functions.
    fn route_end(&self, bdf: Bdf) -> Result<RouteEnd> {
        let d = self.device(bdf)?;
        let noiommu_group = d.iommu_group.is_some_and(|g| {
            std::fs::read_to_string(
                self.root()
                    .join("kernel/iommu_groups")
                    .join(g.to_string())
                    .join("name"),
            )
            .is_ok_and(|name| name.trim() == "vfio-noiommu")
        });
        Ok(RouteEnd {
            bdf,
            vendor: d.vendor,
            device: d.device,
            vfio_bound: d.is_vfio_bound(),
            driver: d.driver,
            iommu_group: d.iommu_group,
            noiommu_group,
        })
    }

    /// One function on the route; an unreadable `config` reads as no bytes.
    fn route_node(&self, bdf: Bdf, checked: bool) -> Result<RouteNode> {
        let d = self.device(bdf)?;
        let config = self.config_space(bdf).unwrap_or_default();
        Ok(RouteNode {
            bdf,
            kind: PortKind::from_config(&config, d.class),
            vendor: d.vendor,
            device: d.device,
            buses: bus_range(&config),
            acs: AcsState::from_config(&config),
            checked,
        })
    }

    /// Function 00.0 of the root bus `pciDDDD:BB`, when sysfs has it.
    fn host_bridge(&self, root: &str) -> Result<Option<HostBridge>> {
        let Ok(bdf) = format!("{}:00.0", root.trim_start_matches("pci")).parse::<Bdf>() else {
            return Ok(None);
        };
        match self.device(bdf) {
            Ok(d) => Ok(Some(HostBridge {
                bdf,
                vendor: d.vendor,
                device: d.device,
            })),
            Err(HostError::NoSuchDevice { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// `!cpu_supports_p2pdma() && !host_bridge_whitelist()` refuses.
fn through_host_bridge(allow_listed: bool, cpu: HostCpu) -> P2pVerdict {
    if allow_listed {
        P2pVerdict::AllowListedHostBridge
    } else if cpu.supports_p2pdma() {
        P2pVerdict::CpuSupportsP2p
    } else {
        P2pVerdict::HostBridgeNotAllowed
    }
}

/// A bridge's chain component as a BDF.
fn parse_component(sys: &Sysfs, name: &str) -> Result<Bdf> {
    name.parse().map_err(|_| HostError::SysfsParse {
        path: sys.root().join("devices"),
        value: name.to_string(),
        reason: "a PCI bridge's directory name is not a BDF",
    })
}

/// Whether a sysfs path component is a PCI root, `pciDDDD:BB` (VMD domains
/// have five digits: `pci10000:00`).
fn is_root(component: &str) -> bool {
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    component
        .strip_prefix("pci")
        .and_then(|r| r.split_once(':'))
        .is_some_and(|(domain, bus)| {
            (4..=8).contains(&domain.len()) && hex(domain) && bus.len() == 2 && hex(bus)
        })
}

/// The PCI components of a sysfs device path: from the last PCI root on (a
/// VMD domain sits below a function of another root, and is a host bridge of
/// its own).
fn chain_from_path(path: &Path) -> Vec<String> {
    let all: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match all.iter().rposition(|c| is_root(c)) {
        Some(root) => all[root..].to_vec(),
        None => Vec::new(),
    }
}

/// Where two chains meet, before the host bridge is looked at.
#[derive(Debug, PartialEq, Eq)]
enum Meeting {
    Bridge(String),
    Root(String),
    Roots,
}

fn meeting(a: &[String], b: &[String]) -> Meeting {
    // The devices themselves are not bridges between them.
    let upstream = a
        .iter()
        .zip(b)
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .filter(|c| Some(*c) != a.last() && Some(*c) != b.last())
        .last();
    match upstream {
        Some(c) if !is_root(c) => Meeting::Bridge(c.clone()),
        Some(root) => Meeting::Root(root.clone()),
        None => Meeting::Roots,
    }
}
