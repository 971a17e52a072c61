//! The PCI path between two functions and whether the kernel's P2P distance
//! check lets one DMA to the other: [`Sysfs::p2p_route`].
//!
//! This follows `calc_map_type_and_dist()` in `drivers/pci/p2pdma.c`, which
//! DRM, RDMA and the block layer call (through `pci_p2pdma_distance` and
//! `pci_p2pdma_map_type`) before they map a peer's BAR:
//!
//! - two functions under a **common upstream bridge** (a switch port or a root
//!   port) talk through it: allowed (`PCI_P2PDMA_MAP_BUS_ADDR`);
//! - otherwise the traffic goes **through the host bridge**
//!   (`PCI_P2PDMA_MAP_THRU_HOST_BRIDGE`), allowed only when the host bridge
//!   (function 00.0 of the root bus) is on the kernel's allow-list
//!   (`pci_p2pdma_whitelist[]`, Intel Xeon families) or the CPU is an AMD Zen
//!   or later (`cpu_supports_p2pdma()`: vendor AMD, family >= 0x17);
//! - functions under **different PCI roots** are allowed only by the CPU rule
//!   here (the allow-list's cross-root entries are not modelled, so the answer
//!   errs on "refused").
//!
//! Not modelled: ACS redirection on the common bridge, which turns the first
//! case into the second. iommufd imports map the BAR's physical range without
//! this check at all.
//!
//! The tree is read through [`Sysfs`] (its root is a parameter), so fixture
//! trees work: `bus/pci/devices/BDF` must be a link into `devices/pciDDDD:BB/…`.

use std::fs;
use std::path::Path;

use crate::error::{Error, Result};
use crate::sysfs::Sysfs;
use crate::Bdf;

/// PCI vendor id of Intel.
const PCI_VENDOR_ID_INTEL: u16 = 0x8086;

/// Host bridges `pci_p2pdma_whitelist[]` in `drivers/pci/p2pdma.c` allows P2P
/// through (Intel Xeon E5/E7, Skylake-E, Ice Lake-SP root ports' host bridge).
pub const ALLOWED_INTEL_HOST_BRIDGES: &[u16] = &[
    0x3c00, 0x3c01, 0x2f00, 0x2f01, 0x2030, 0x2031, 0x2032, 0x2033, 0x2020, 0x09a2,
];

/// The CPU facts `cpu_supports_p2pdma()` looks at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostCpu {
    /// `vendor_id` is `AuthenticAMD`.
    pub amd: bool,
    /// `cpu family`.
    pub family: u32,
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
}

/// Where the two functions' paths meet.
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
    /// Allowed: a common upstream bridge.
    CommonBridge,
    /// Allowed: through a host bridge on the allow-list.
    AllowListedHostBridge,
    /// Allowed: through the host bridge, on an AMD Zen or later CPU.
    CpuSupportsP2p,
    /// Refused: through a host bridge on no allow-list, on a CPU the rule
    /// does not cover.
    HostBridgeNotAllowed,
    /// Refused: across PCI roots.
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

    /// Why, in a sentence (with the fix when refused).
    pub fn why(self) -> &'static str {
        match self {
            P2pVerdict::CommonBridge => {
                "devices under one bridge pass the P2P distance check (unless ACS redirects \
                 between them)"
            }
            P2pVerdict::AllowListedHostBridge => {
                "the host bridge is on the kernel's P2P allow-list"
            }
            P2pVerdict::CpuSupportsP2p => {
                "the CPU is an AMD Zen or later, which the kernel trusts to route P2P through \
                 its host bridge"
            }
            P2pVerdict::HostBridgeNotAllowed => {
                "the host bridge is on no P2P allow-list: DRM and RDMA imports fail with EINVAL \
                 (\"do not share an upstream bridge or whitelisted host bridge\"); put both \
                 devices under one PCIe switch"
            }
            P2pVerdict::AcrossRoots => {
                "devices on different PCI roots cannot do P2P through the distance check"
            }
        }
    }
}

/// The path between two PCI functions, as [`Sysfs::p2p_route`] finds it.
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
}

impl Sysfs {
    /// The chain of PCI components from the root to `bdf`: `["pci0000:00",
    /// "0000:00:1c.0", …, "BDF"]`, from where `bus/pci/devices/BDF` links to.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchDevice`] for a BDF sysfs does not list,
    /// [`Error::Sysfs`] when the link cannot be resolved.
    pub fn pci_chain(&self, bdf: Bdf) -> Result<Vec<String>> {
        let link = self.device_path(bdf);
        self.check_exists(bdf, &link)?;
        let real = fs::canonicalize(&link).map_err(|source| Error::Sysfs {
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

    /// The route between `a` and `b` and what the kernel's P2P distance check
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
    /// [`Error::NoSuchDevice`] for a BDF sysfs does not list; [`Error::Sysfs`]
    /// and [`Error::SysfsParse`] when a link or attribute of `a`, `b` or the
    /// host bridge cannot be read.
    pub fn p2p_route_on(&self, a: Bdf, b: Bdf, cpu: HostCpu) -> Result<P2pRoute> {
        let a_chain = self.pci_chain(a)?;
        let b_chain = self.pci_chain(b)?;
        let upstream = match meeting(&a_chain, &b_chain) {
            Meeting::Bridge(name) => Upstream::Bridge(parse_component(self, &name)?),
            Meeting::Root(root) => {
                let host_bridge = self.host_bridge(&root)?;
                Upstream::HostBridge { root, host_bridge }
            }
            Meeting::Roots => Upstream::Roots {
                a: a_chain.first().cloned().unwrap_or_default(),
                b: b_chain.first().cloned().unwrap_or_default(),
            },
        };
        let verdict = match &upstream {
            Upstream::Bridge(_) => P2pVerdict::CommonBridge,
            Upstream::HostBridge { host_bridge, .. } => {
                if host_bridge.is_some_and(|h| h.is_allow_listed()) {
                    P2pVerdict::AllowListedHostBridge
                } else if cpu.supports_p2pdma() {
                    P2pVerdict::CpuSupportsP2p
                } else {
                    P2pVerdict::HostBridgeNotAllowed
                }
            }
            Upstream::Roots { .. } if cpu.supports_p2pdma() => P2pVerdict::CpuSupportsP2p,
            Upstream::Roots { .. } => P2pVerdict::AcrossRoots,
        };
        let group_a = self.device(a)?.iommu_group;
        let group_b = self.device(b)?.iommu_group;
        Ok(P2pRoute {
            a_chain,
            b_chain,
            upstream,
            verdict,
            same_iommu_group: group_a.is_some() && group_a == group_b,
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
            Err(Error::NoSuchDevice { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A bridge's chain component as a BDF.
fn parse_component(sys: &Sysfs, name: &str) -> Result<Bdf> {
    name.parse().map_err(|_| Error::SysfsParse {
        path: sys.root().join("devices"),
        value: name.to_string(),
        reason: "a PCI bridge's directory name is not a BDF",
    })
}

/// Whether a sysfs path component is a PCI root, `pciDDDD:BB`.
fn is_root(component: &str) -> bool {
    component.strip_prefix("pci").is_some_and(|r| {
        r.len() == 7
            && r.bytes().enumerate().all(|(i, b)| {
                if i == 4 {
                    b == b':'
                } else {
                    b.is_ascii_hexdigit()
                }
            })
    })
}

/// The PCI components of a sysfs device path: from the PCI root on.
fn chain_from_path(path: &Path) -> Vec<String> {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .skip_while(|c| !is_root(c))
        .collect()
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    use super::*;
    use crate::sysfs::tests::TempTree;

    /// A sysfs tree with PCI functions at given paths under `devices/`.
    struct Tree {
        _dir: TempTree,
        sys: Sysfs,
    }

    impl Tree {
        fn new(tag: &str) -> Tree {
            let dir = TempTree::new(tag);
            fs::create_dir_all(dir.0.join("bus/pci/devices")).unwrap();
            let sys = Sysfs::new(&dir.0);
            Tree { _dir: dir, sys }
        }

        /// Adds a function at `devices/<path>` (its last component is the
        /// BDF) with the given ids, and links `bus/pci/devices/BDF` to it.
        fn add(&self, path: &str, vendor: u16, device: u16, group: Option<u32>) -> &Tree {
            let dir: PathBuf = self.sys.root().join("devices").join(path);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("vendor"), format!("{vendor:#06x}\n")).unwrap();
            fs::write(dir.join("device"), format!("{device:#06x}\n")).unwrap();
            fs::write(dir.join("class"), "0x060400\n").unwrap();
            fs::write(dir.join("resource"), "").unwrap();
            if let Some(g) = group {
                symlink(
                    format!("../../../../kernel/iommu_groups/{g}"),
                    dir.join("iommu_group"),
                )
                .unwrap();
            }
            let bdf = path.rsplit('/').next().unwrap();
            symlink(
                format!("../../../devices/{path}"),
                self.sys.root().join("bus/pci/devices").join(bdf),
            )
            .unwrap();
            self
        }
    }

    fn bdf(s: &str) -> Bdf {
        s.parse().unwrap()
    }

    const INTEL_ICX: u16 = 0x09a2;
    const QEMU_Q35: u16 = 0x29c0;
    const NO_RULE: HostCpu = HostCpu {
        amd: false,
        family: 6,
    };
    const ZEN: HostCpu = HostCpu {
        amd: true,
        family: 0x19,
    };
    const OLD_AMD: HostCpu = HostCpu {
        amd: true,
        family: 0x15,
    };

    #[test]
    fn two_functions_under_one_switch_meet_at_its_upstream_port() {
        let t = Tree::new("p2p-switch");
        t.add("pci0000:00/0000:00:00.0", 0x8086, QEMU_Q35, None)
            .add("pci0000:00/0000:00:1c.0", 0x8086, 0x1234, Some(1))
            .add(
                "pci0000:00/0000:00:1c.0/0000:01:00.0",
                0x10b5,
                0x8747,
                Some(1),
            )
            .add(
                "pci0000:00/0000:00:1c.0/0000:01:00.0/0000:02:00.0",
                0x10b5,
                0x8747,
                Some(1),
            )
            .add(
                "pci0000:00/0000:00:1c.0/0000:01:00.0/0000:02:01.0",
                0x10b5,
                0x8747,
                Some(1),
            )
            .add(
                "pci0000:00/0000:00:1c.0/0000:01:00.0/0000:02:00.0/0000:03:00.0",
                0x1af4,
                0x1110,
                Some(2),
            )
            .add(
                "pci0000:00/0000:00:1c.0/0000:01:00.0/0000:02:01.0/0000:04:00.0",
                0x1af4,
                0x1110,
                Some(3),
            );
        let r = t
            .sys
            .p2p_route_on(bdf("03:00.0"), bdf("04:00.0"), NO_RULE)
            .unwrap();
        assert_eq!(r.upstream, Upstream::Bridge(bdf("01:00.0")));
        assert_eq!(r.verdict, P2pVerdict::CommonBridge);
        assert!(r.verdict.allowed());
        assert!(!r.same_iommu_group);
        assert_eq!(
            r.a_chain,
            [
                "pci0000:00",
                "0000:00:1c.0",
                "0000:01:00.0",
                "0000:02:00.0",
                "0000:03:00.0"
            ]
        );
    }

    #[test]
    fn root_port_siblings_meet_at_the_host_bridge_which_decides() {
        let t = Tree::new("p2p-rootports");
        t.add("pci0000:00/0000:00:00.0", 0x8086, QEMU_Q35, None)
            .add("pci0000:00/0000:00:1c.0", 0x8086, 0x1234, Some(1))
            .add("pci0000:00/0000:00:1c.1", 0x8086, 0x1234, Some(2))
            .add(
                "pci0000:00/0000:00:1c.0/0000:01:00.0",
                0x1af4,
                0x1110,
                Some(1),
            )
            .add(
                "pci0000:00/0000:00:1c.1/0000:02:00.0",
                0x1af4,
                0x1110,
                Some(1),
            );
        let r = t
            .sys
            .p2p_route_on(bdf("01:00.0"), bdf("02:00.0"), NO_RULE)
            .unwrap();
        assert_eq!(
            r.upstream,
            Upstream::HostBridge {
                root: "pci0000:00".into(),
                host_bridge: Some(HostBridge {
                    bdf: bdf("00:00.0"),
                    vendor: 0x8086,
                    device: QEMU_Q35
                })
            }
        );
        assert_eq!(r.verdict, P2pVerdict::HostBridgeNotAllowed);
        assert!(!r.verdict.allowed());
        assert!(r.verdict.why().contains("one PCIe switch"));
        assert!(r.same_iommu_group);
        // Functions on the root bus itself meet there too.
        let r = t
            .sys
            .p2p_route_on(bdf("00:1c.0"), bdf("00:1c.1"), NO_RULE)
            .unwrap();
        assert_eq!(r.verdict, P2pVerdict::HostBridgeNotAllowed);
    }

    #[test]
    fn an_allow_listed_host_bridge_passes_and_an_unlisted_one_does_not() {
        let t = Tree::new("p2p-allow");
        t.add("pci0000:00/0000:00:00.0", 0x8086, INTEL_ICX, None)
            .add("pci0000:00/0000:00:10.0", 0x1af4, 0x1110, None)
            .add("pci0000:00/0000:00:11.0", 0x1af4, 0x1110, None)
            .add("pci0000:80/0000:80:00.0", 0x8086, 0x1234, None)
            .add("pci0000:80/0000:80:10.0", 0x1af4, 0x1110, None)
            .add("pci0000:80/0000:80:11.0", 0x1af4, 0x1110, None);
        let r = t
            .sys
            .p2p_route_on(bdf("00:10.0"), bdf("00:11.0"), NO_RULE)
            .unwrap();
        assert_eq!(r.verdict, P2pVerdict::AllowListedHostBridge);
        let r = t
            .sys
            .p2p_route_on(bdf("80:10.0"), bdf("80:11.0"), NO_RULE)
            .unwrap();
        assert_eq!(r.verdict, P2pVerdict::HostBridgeNotAllowed);
        let r = t
            .sys
            .p2p_route_on(bdf("00:10.0"), bdf("80:10.0"), NO_RULE)
            .unwrap();
        assert_eq!(
            r.upstream,
            Upstream::Roots {
                a: "pci0000:00".into(),
                b: "pci0000:80".into()
            }
        );
        assert_eq!(r.verdict, P2pVerdict::AcrossRoots);
    }

    #[test]
    fn amd_family_0x17_and_later_pass_through_any_host_bridge() {
        let t = Tree::new("p2p-amd");
        t.add("pci0000:00/0000:00:00.0", 0x1022, 0x1480, None)
            .add("pci0000:00/0000:00:10.0", 0x1af4, 0x1110, None)
            .add("pci0000:00/0000:00:11.0", 0x1af4, 0x1110, None)
            .add("pci0000:40/0000:40:10.0", 0x1af4, 0x1110, None);
        let (a, b, far) = (bdf("00:10.0"), bdf("00:11.0"), bdf("40:10.0"));
        assert_eq!(
            t.sys.p2p_route_on(a, b, ZEN).unwrap().verdict,
            P2pVerdict::CpuSupportsP2p
        );
        assert_eq!(
            t.sys.p2p_route_on(a, far, ZEN).unwrap().verdict,
            P2pVerdict::CpuSupportsP2p
        );
        assert_eq!(
            t.sys.p2p_route_on(a, b, OLD_AMD).unwrap().verdict,
            P2pVerdict::HostBridgeNotAllowed
        );
        assert_eq!(
            t.sys.p2p_route_on(a, far, OLD_AMD).unwrap().verdict,
            P2pVerdict::AcrossRoots
        );
        // No 40:00.0 in sysfs: no host bridge to look at.
        assert!(matches!(
            t.sys.p2p_route_on(far, far, NO_RULE).unwrap().upstream,
            Upstream::HostBridge {
                host_bridge: None,
                ..
            }
        ));
    }

    #[test]
    fn cpuinfo_is_parsed_for_the_amd_rule() {
        let zen = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n";
        assert_eq!(
            HostCpu::from_cpuinfo(zen),
            HostCpu {
                amd: true,
                family: 25
            }
        );
        assert!(HostCpu::from_cpuinfo(zen).supports_p2pdma());
        let k10 = "vendor_id\t: AuthenticAMD\ncpu family\t: 16\n";
        assert!(!HostCpu::from_cpuinfo(k10).supports_p2pdma());
        let intel = "vendor_id\t: GenuineIntel\ncpu family\t: 6\n";
        assert!(!HostCpu::from_cpuinfo(intel).supports_p2pdma());
        assert_eq!(HostCpu::from_cpuinfo(""), HostCpu::default());
    }

    #[test]
    fn an_unknown_function_is_named() {
        let t = Tree::new("p2p-missing");
        t.add("pci0000:00/0000:00:10.0", 0x1af4, 0x1110, None);
        let err = t
            .sys
            .p2p_route_on(bdf("00:10.0"), bdf("0e:00.0"), NO_RULE)
            .unwrap_err();
        assert!(
            matches!(err, Error::NoSuchDevice { bdf: b } if b == bdf("0e:00.0")),
            "{err:?}"
        );
    }

    #[test]
    fn chains_start_at_the_pci_root() {
        assert_eq!(
            chain_from_path(Path::new(
                "/sys/devices/platform/soc/pcie/pci0001:00/0001:00:00.0/0001:01:00.0"
            )),
            ["pci0001:00", "0001:00:00.0", "0001:01:00.0"]
        );
        let c = |s: &str| chain_from_path(Path::new(s));
        assert_eq!(
            meeting(
                &c("/sys/devices/pci0000:00/0000:00:10.0"),
                &c("/sys/devices/pci0000:00/0000:00:11.0")
            ),
            Meeting::Root("pci0000:00".into())
        );
    }
}
