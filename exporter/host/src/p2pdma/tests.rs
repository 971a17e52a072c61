//! Fixture sysfs trees with config-space dumps: switches with and without ACS,
//! root-port siblings, shared groups, allow-listed and unlisted host bridges,
//! AMD and Intel CPUs, and the bad inputs.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use peerdma_uapi::pci::{
    PCI_ACS_CR, PCI_ACS_EC, PCI_ACS_RR, PCI_ACS_SV, PCI_ACS_TB, PCI_ACS_UF,
    PCI_EXP_TYPE_DOWNSTREAM, PCI_EXP_TYPE_ENDPOINT, PCI_EXP_TYPE_ROOT_PORT, PCI_EXP_TYPE_UPSTREAM,
};

use super::*;
use crate::acs::tests::config_dump;
use crate::fixture::TempTree;
use rustix::io::Errno;

/// A sysfs tree with PCI functions at given paths under `devices/`.
struct Tree {
    dir: TempTree,
    sys: Sysfs,
}

/// What to put at a path.
#[derive(Clone, Copy)]
enum Fn {
    /// Host bridge 00.0 with this vendor:device.
    Host(u16, u16),
    /// A port of this PCIe type with ACS (cap, ctrl) when given.
    Port(u16, Option<(u16, u16)>),
    /// An endpoint in this IOMMU group.
    Ep(Option<u32>),
}

impl Tree {
    fn new(tag: &str) -> Tree {
        let dir = TempTree::new(tag);
        fs::create_dir_all(dir.0.join("bus/pci/devices")).unwrap();
        let sys = Sysfs::new(&dir.0);
        Tree { dir, sys }
    }

    /// Adds a function at `devices/<path>` (its last component is the BDF)
    /// and links `bus/pci/devices/BDF` to it.
    fn add(&self, path: &str, f: Fn) -> &Tree {
        let bdf = path.rsplit('/').next().unwrap();
        let (vendor, device, class, config, group) = match f {
            Fn::Host(v, d) => (v, d, 0x060000, vec![0u8; 256], None),
            Fn::Port(t, acs) => {
                // Bus numbers: this port's children's bus, from the tree.
                let bus = u8::from_str_radix(&bdf[5..7], 16).unwrap();
                let c = config_dump(t, acs, (bus + 1, bus + 1));
                (0x1b36, 0x000c, 0x060400, c, None)
            }
            Fn::Ep(g) => (
                0x1af4,
                0x1110,
                0x050000,
                config_dump(PCI_EXP_TYPE_ENDPOINT, None, (0, 0)),
                g,
            ),
        };
        let dir: PathBuf = self.dir.function(path, (vendor, device), class);
        fs::write(dir.join("config"), config).unwrap();
        if let Some(g) = group {
            symlink(
                format!("../../../../kernel/iommu_groups/{g}"),
                dir.join("iommu_group"),
            )
            .unwrap();
        }
        self
    }

    /// Cuts `bdf`'s config file to what a non-root reader sees.
    fn unprivileged(&self, bdf: &str) {
        let path = self
            .sys
            .root()
            .join("bus/pci/devices")
            .join(bdf)
            .join("config");
        let c = fs::read(&path).unwrap();
        fs::write(&path, &c[..64]).unwrap();
    }
}

fn bdf(s: &str) -> Bdf {
    s.parse().unwrap()
}

const INTEL_ICX: u16 = 0x09a2;
const INTEL_SNB_E: u16 = 0x3c00;
const INTEL_SKX: u16 = 0x2030;
const QEMU_Q35: u16 = 0x29c0;
const INTEL: HostCpu = HostCpu {
    amd: false,
    family: 6,
    hypervisor: false,
};
const ZEN: HostCpu = HostCpu {
    amd: true,
    family: 0x19,
    hypervisor: false,
};
const OLD_AMD: HostCpu = HostCpu {
    amd: true,
    family: 0x15,
    hypervisor: false,
};

/// QEMU's pcie-root-port: SV TB RR CR UF implemented and, under Linux, on.
const ROOT_PORT_ACS: (u16, u16) = (
    PCI_ACS_SV | PCI_ACS_TB | PCI_ACS_RR | PCI_ACS_CR | PCI_ACS_UF,
    PCI_ACS_SV | PCI_ACS_TB | PCI_ACS_RR | PCI_ACS_CR | PCI_ACS_UF,
);
/// A hardware switch downstream port with the kernel's defaults on.
const DOWNSTREAM_ACS_ON: (u16, u16) = (
    PCI_ACS_SV | PCI_ACS_RR | PCI_ACS_CR | PCI_ACS_UF | PCI_ACS_EC,
    PCI_ACS_SV | PCI_ACS_RR | PCI_ACS_CR | PCI_ACS_UF,
);
/// The same port with only source validation and upstream forwarding on.
const DOWNSTREAM_ACS_OFF: (u16, u16) = (DOWNSTREAM_ACS_ON.0, PCI_ACS_SV | PCI_ACS_UF);

/// Root port 00:1c.0 → switch 01:00.0 → downstream 02:00.0 and 02:01.0 →
/// endpoints 03:00.0 (group 2) and 04:00.0 (group `b_group`).
fn switch_tree(tag: &str, host: u16, downstream: Option<(u16, u16)>, b_group: u32) -> Tree {
    let t = Tree::new(tag);
    let rp = "pci0000:00/0000:00:1c.0";
    let up = format!("{rp}/0000:01:00.0");
    t.add("pci0000:00/0000:00:00.0", Fn::Host(0x8086, host))
        .add(rp, Fn::Port(PCI_EXP_TYPE_ROOT_PORT, Some(ROOT_PORT_ACS)))
        .add(&up, Fn::Port(PCI_EXP_TYPE_UPSTREAM, None))
        .add(
            &format!("{up}/0000:02:00.0"),
            Fn::Port(PCI_EXP_TYPE_DOWNSTREAM, downstream),
        )
        .add(
            &format!("{up}/0000:02:01.0"),
            Fn::Port(PCI_EXP_TYPE_DOWNSTREAM, downstream),
        )
        .add(&format!("{up}/0000:02:00.0/0000:03:00.0"), Fn::Ep(Some(2)))
        .add(
            &format!("{up}/0000:02:01.0/0000:04:00.0"),
            Fn::Ep(Some(b_group)),
        );
    t
}

#[test]
fn a_switch_without_acs_on_its_downstream_ports_is_direct() {
    // The testbed's x3130 switch: only the root port above has ACS.
    let t = switch_tree("p2p-switch", QEMU_Q35, None, 3);
    let r = t
        .sys
        .p2p_route_on(bdf("03:00.0"), bdf("04:00.0"), INTEL)
        .unwrap();
    assert_eq!(r.upstream, Upstream::Bridge(bdf("01:00.0")));
    assert_eq!(r.verdict, P2pVerdict::CommonBridge);
    assert_eq!(r.map_type, MapType::BusAddr);
    assert_eq!(r.reach(), Reach::Direct);
    assert!(r.acs_redirects.is_empty() && r.acs_unreadable.is_empty());
    assert!(r.blockers().is_empty());
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
    // Every function once, from a up and down to b.
    let order: Vec<String> = r.nodes.iter().map(|n| n.bdf.to_string()).collect();
    assert_eq!(
        order,
        [
            "0000:03:00.0",
            "0000:02:00.0",
            "0000:01:00.0",
            "0000:00:1c.0",
            "0000:02:01.0",
            "0000:04:00.0"
        ]
    );
    // The root port redirects, but it is above the common bridge: unchecked.
    let rp = r.node(bdf("00:1c.0")).unwrap();
    assert_eq!(rp.kind, PortKind::RootPort);
    assert_eq!(rp.acs.redirects(), Some(true));
    assert!(!rp.checked);
    assert!(r.node(bdf("01:00.0")).unwrap().checked);
    assert_eq!(
        r.node(bdf("02:01.0")).unwrap().kind,
        PortKind::SwitchDownstream
    );
    assert_eq!(r.node(bdf("02:01.0")).unwrap().buses, Some((3, 3)));
    assert!(r.importers().iter().all(|i| i.works));
}

#[test]
fn acs_redirect_on_a_switch_port_sends_the_traffic_to_the_host_bridge() {
    let t = switch_tree("p2p-acs", QEMU_Q35, Some(DOWNSTREAM_ACS_ON), 3);
    let (a, b) = (bdf("03:00.0"), bdf("04:00.0"));
    let r = t.sys.p2p_route_on(a, b, INTEL).unwrap();
    assert_eq!(r.upstream, Upstream::Bridge(bdf("01:00.0")));
    // The kernel's order: the provider's side first.
    assert_eq!(r.acs_redirects, [bdf("02:00.0"), bdf("02:01.0")]);
    assert_eq!(r.verdict, P2pVerdict::HostBridgeNotAllowed);
    assert_eq!(r.reach(), Reach::Blocked);
    assert_eq!(
        r.disable_acs_redir_parameter().as_deref(),
        Some("pci=disable_acs_redir=0000:02:00.0;0000:02:01.0")
    );
    let blockers = r.blockers();
    assert_eq!(blockers.len(), 3, "{blockers:?}");
    assert!(matches!(
        blockers[0],
        Blocker::AcsRedirect { bdf: b, .. } if b == bdf("02:00.0")
    ));
    assert!(
        blockers[0].element().contains("ReqRedir CmpltRedir"),
        "{}",
        blockers[0].element()
    );
    let fix = blockers[0].fix(false);
    assert!(
        fix.contains("pci=disable_acs_redir=0000:02:00.0")
            && fix.contains("pci=config_acs=x0x00xx@0000:02:00.0")
            && fix.contains("IOMMU group"),
        "{fix}"
    );
    assert!(matches!(blockers[2], Blocker::HostBridge { .. }));
    let drm = &r.importers()[2];
    assert!(drm.checks_distance && !drm.works);
    assert_eq!(drm.errno, Some(Errno::INVAL));
    assert!(r.importers()[0].works, "iommufd skips the check");

    // On a Zen CPU the redirected traffic is allowed through the root complex.
    let r = t.sys.p2p_route_on(a, b, ZEN).unwrap();
    assert_eq!(r.verdict, P2pVerdict::CpuSupportsP2p);
    assert_eq!(r.reach(), Reach::ThroughRootComplex);
    assert_eq!(r.map_type, MapType::ThruHostBridge);
    assert_eq!(
        r.blockers().len(),
        2,
        "the redirects still explain the detour"
    );

    // Only source validation and upstream forwarding on: no redirect.
    let t = switch_tree("p2p-acs-off", QEMU_Q35, Some(DOWNSTREAM_ACS_OFF), 3);
    let r = t.sys.p2p_route_on(a, b, INTEL).unwrap();
    assert_eq!(r.reach(), Reach::Direct);
    let AcsState::Present(acs) = r.node(bdf("02:00.0")).unwrap().acs else {
        panic!("ACS expected");
    };
    assert!(acs.cap.redirects() && !acs.ctrl.redirects());
}

#[test]
fn egress_control_alone_redirects_and_an_allow_listed_host_bridge_passes_it() {
    let ec = Some((DOWNSTREAM_ACS_ON.0, PCI_ACS_EC));
    let t = switch_tree("p2p-ec", INTEL_ICX, ec, 3);
    let r = t
        .sys
        .p2p_route_on(bdf("03:00.0"), bdf("04:00.0"), INTEL)
        .unwrap();
    assert_eq!(r.acs_redirects.len(), 2);
    assert_eq!(r.verdict, P2pVerdict::AllowListedHostBridge);
    assert_eq!(r.reach(), Reach::ThroughRootComplex);
}

#[test]
fn a_shared_iommu_group_is_reported() {
    let t = switch_tree("p2p-group", QEMU_Q35, None, 2);
    let r = t
        .sys
        .p2p_route_on(bdf("03:00.0"), bdf("04:00.0"), INTEL)
        .unwrap();
    assert!(r.same_iommu_group);
    assert_eq!((r.a.iommu_group, r.b.iommu_group), (Some(2), Some(2)));
    assert!(!r.a.vfio_bound);
}

#[test]
fn vfio_no_iommu_groups_rule_out_iommufd() {
    let t = switch_tree("p2p-noiommu", QEMU_Q35, None, 2);
    let importers = |t: &Tree| {
        let r = t
            .sys
            .p2p_route_on(bdf("03:00.0"), bdf("04:00.0"), INTEL)
            .unwrap();
        let iommufd = r
            .importers()
            .into_iter()
            .find(|i| i.importer.starts_with("iommufd"))
            .unwrap();
        (r.a.translated(), iommufd.works, iommufd.outcome)
    };
    assert!(importers(&t).1, "an IOMMU group translates");
    // vfio's no-IOMMU mode names its groups vfio-noiommu.
    let group = t.sys.root().join("kernel/iommu_groups/2");
    fs::create_dir_all(&group).unwrap();
    fs::write(group.join("name"), "vfio-noiommu\n").unwrap();
    let (translated, works, outcome) = importers(&t);
    assert!(!translated && !works, "{outcome}");
    assert!(outcome.contains("no-IOMMU mode"), "{outcome}");
}

#[test]
fn root_port_siblings_meet_at_the_host_bridge_which_decides() {
    let t = Tree::new("p2p-rootports");
    t.add("pci0000:00/0000:00:00.0", Fn::Host(0x8086, QEMU_Q35))
        .add(
            "pci0000:00/0000:00:1c.0",
            Fn::Port(PCI_EXP_TYPE_ROOT_PORT, Some(ROOT_PORT_ACS)),
        )
        .add(
            "pci0000:00/0000:00:1c.1",
            Fn::Port(PCI_EXP_TYPE_ROOT_PORT, Some(ROOT_PORT_ACS)),
        )
        .add("pci0000:00/0000:00:1c.0/0000:01:00.0", Fn::Ep(Some(1)))
        .add("pci0000:00/0000:00:1c.1/0000:02:00.0", Fn::Ep(Some(1)))
        .add("pci0000:00/0000:00:10.0", Fn::Ep(None))
        .add("pci0000:00/0000:00:11.0", Fn::Ep(None));
    let (a, b) = (bdf("01:00.0"), bdf("02:00.0"));
    let r = t.sys.p2p_route_on(a, b, INTEL).unwrap();
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
    assert_eq!(r.reach(), Reach::Blocked);
    // Without a common bridge the kernel ignores ACS.
    assert!(r.acs_redirects.is_empty());
    assert!(r.nodes.iter().all(|n| !n.checked));
    assert!(r.same_iommu_group);
    let blockers = r.blockers();
    assert_eq!(blockers.len(), 1);
    assert!(
        blockers[0].element().contains("8086:29c0"),
        "{}",
        blockers[0].element()
    );
    assert!(blockers[0].fix(true).contains("emulated PCIe switch"));
    assert!(blockers[0].fix(false).contains("one PCIe switch"));
    assert_eq!(
        t.sys.p2p_route_on(a, b, ZEN).unwrap().reach(),
        Reach::ThroughRootComplex
    );
    // Functions on the root bus itself meet there too.
    let r = t
        .sys
        .p2p_route_on(bdf("00:10.0"), bdf("00:11.0"), INTEL)
        .unwrap();
    assert_eq!(r.verdict, P2pVerdict::HostBridgeNotAllowed);
    let r = t
        .sys
        .p2p_route_on(bdf("00:10.0"), bdf("00:11.0"), ZEN)
        .unwrap();
    assert_eq!(r.verdict, P2pVerdict::CpuSupportsP2p);
}

#[test]
fn functions_of_one_device_under_a_redirecting_root_port_are_refused() {
    // The common bridge is the root port itself, and the kernel reads its ACS.
    let t = Tree::new("p2p-mf");
    t.add("pci0000:00/0000:00:00.0", Fn::Host(0x8086, QEMU_Q35))
        .add(
            "pci0000:00/0000:00:1c.0",
            Fn::Port(PCI_EXP_TYPE_ROOT_PORT, Some(ROOT_PORT_ACS)),
        )
        .add("pci0000:00/0000:00:1c.0/0000:01:00.0", Fn::Ep(Some(1)))
        .add("pci0000:00/0000:00:1c.0/0000:01:00.1", Fn::Ep(Some(1)));
    let r = t
        .sys
        .p2p_route_on(bdf("01:00.0"), bdf("01:00.1"), INTEL)
        .unwrap();
    assert_eq!(r.upstream, Upstream::Bridge(bdf("00:1c.0")));
    assert_eq!(r.acs_redirects, [bdf("00:1c.0")]);
    assert_eq!(r.reach(), Reach::Blocked);
}

#[test]
fn allow_listed_host_bridges_pass_within_and_across_roots_as_flagged() {
    let t = Tree::new("p2p-allow");
    t.add("pci0000:00/0000:00:00.0", Fn::Host(0x8086, INTEL_ICX))
        .add("pci0000:00/0000:00:10.0", Fn::Ep(None))
        .add("pci0000:00/0000:00:11.0", Fn::Ep(None))
        .add("pci0000:80/0000:80:00.0", Fn::Host(0x8086, 0x1234))
        .add("pci0000:80/0000:80:10.0", Fn::Ep(None))
        .add("pci0000:80/0000:80:11.0", Fn::Ep(None))
        .add("pci0000:40/0000:40:00.0", Fn::Host(0x8086, INTEL_SKX))
        .add("pci0000:40/0000:40:10.0", Fn::Ep(None))
        .add("pci0000:c0/0000:c0:00.0", Fn::Host(0x8086, INTEL_SNB_E))
        .add("pci0000:c0/0000:c0:10.0", Fn::Ep(None))
        .add("pci0000:c0/0000:c0:11.0", Fn::Ep(None));
    let v = |a: &str, b: &str| t.sys.p2p_route_on(bdf(a), bdf(b), INTEL).unwrap().verdict;
    assert_eq!(v("00:10.0", "00:11.0"), P2pVerdict::AllowListedHostBridge);
    assert_eq!(v("80:10.0", "80:11.0"), P2pVerdict::HostBridgeNotAllowed);
    assert_eq!(v("c0:10.0", "c0:11.0"), P2pVerdict::AllowListedHostBridge);
    // Across roots: both listed without REQ_SAME_HOST_BRIDGE.
    assert_eq!(v("00:10.0", "40:10.0"), P2pVerdict::AllowListedHostBridge);
    assert_eq!(v("00:10.0", "c0:10.0"), P2pVerdict::AcrossRoots);
    let r = t
        .sys
        .p2p_route_on(bdf("00:10.0"), bdf("80:10.0"), INTEL)
        .unwrap();
    assert_eq!(
        r.upstream,
        Upstream::Roots {
            a: "pci0000:00".into(),
            b: "pci0000:80".into()
        }
    );
    assert_eq!(r.verdict, P2pVerdict::AcrossRoots);
    assert!(matches!(r.blockers()[..], [Blocker::AcrossRoots { .. }]));
}

#[test]
fn amd_family_0x17_and_later_pass_through_any_host_bridge() {
    let t = Tree::new("p2p-amd");
    t.add("pci0000:00/0000:00:00.0", Fn::Host(0x1022, 0x1480))
        .add("pci0000:00/0000:00:10.0", Fn::Ep(None))
        .add("pci0000:00/0000:00:11.0", Fn::Ep(None))
        .add("pci0000:40/0000:40:10.0", Fn::Ep(None))
        .add("pci0000:40/0000:40:11.0", Fn::Ep(None));
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
        t.sys
            .p2p_route_on(far, bdf("40:11.0"), INTEL)
            .unwrap()
            .upstream,
        Upstream::HostBridge {
            host_bridge: None,
            ..
        }
    ));
}

#[test]
fn unreadable_acs_is_named_and_assumed_off() {
    let t = switch_tree("p2p-nonroot", QEMU_Q35, Some(DOWNSTREAM_ACS_ON), 3);
    t.unprivileged("0000:02:00.0");
    let r = t
        .sys
        .p2p_route_on(bdf("03:00.0"), bdf("04:00.0"), INTEL)
        .unwrap();
    assert_eq!(r.acs_unreadable, [bdf("02:00.0")]);
    assert_eq!(r.acs_redirects, [bdf("02:01.0")]);
    assert_eq!(
        r.node(bdf("02:00.0")).unwrap().acs,
        AcsState::Unreadable { bytes: 64 }
    );
    // The type 1 header is in the first 64 bytes.
    assert_eq!(r.node(bdf("02:00.0")).unwrap().buses, Some((3, 3)));
}

#[test]
fn cpuinfo_is_parsed_for_the_amd_rule() {
    let zen = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n\
               flags\t\t: fpu vme hypervisor lahf_lm\n";
    assert_eq!(
        HostCpu::from_cpuinfo(zen),
        HostCpu {
            amd: true,
            family: 25,
            hypervisor: true
        }
    );
    assert!(HostCpu::from_cpuinfo(zen).supports_p2pdma());
    let k10 = "vendor_id\t: AuthenticAMD\ncpu family\t: 16\n";
    assert!(!HostCpu::from_cpuinfo(k10).supports_p2pdma());
    assert!(!HostCpu::from_cpuinfo(k10).hypervisor);
    let intel = "vendor_id\t: GenuineIntel\ncpu family\t: 6\n";
    assert!(!HostCpu::from_cpuinfo(intel).supports_p2pdma());
    assert_eq!(HostCpu::from_cpuinfo(""), HostCpu::default());
}

#[test]
fn bad_input_is_named() {
    let t = switch_tree("p2p-bad", QEMU_Q35, None, 3);
    let err = t
        .sys
        .p2p_route_on(bdf("03:00.0"), bdf("0e:00.0"), INTEL)
        .unwrap_err();
    assert!(
        matches!(err, HostError::NoSuchDevice { bdf: b } if b == bdf("0e:00.0")),
        "{err:?}"
    );
    let err = t
        .sys
        .p2p_route_on(bdf("03:00.0"), bdf("03:00.0"), INTEL)
        .unwrap_err();
    assert!(matches!(err, HostError::RouteToItself { .. }), "{err:?}");
    assert!(err.to_string().contains("named twice"), "{err}");
    let err = t
        .sys
        .p2p_route_on(bdf("02:00.0"), bdf("04:00.0"), INTEL)
        .unwrap_err();
    assert!(
        matches!(err, HostError::NotAnEndpoint { bdf: b, kind: "switch downstream port" } if b == bdf("02:00.0")),
        "{err:?}"
    );
    let err = t
        .sys
        .p2p_route_on(bdf("03:00.0"), bdf("00:00.0"), INTEL)
        .unwrap_err();
    assert!(
        matches!(
            err,
            HostError::NotAnEndpoint {
                kind: "host bridge",
                ..
            }
        ),
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
    assert_eq!(
        chain_from_path(Path::new(
            "/sys/devices/pci0000:00/0000:00:0e.0/pci10000:e0/10000:e0:06.0/10000:e1:00.0"
        )),
        ["pci10000:e0", "10000:e0:06.0", "10000:e1:00.0"],
        "a VMD domain is a root of its own"
    );
    assert!(
        !is_root("pci0000:0") && !is_root("pci_bus") && !is_root("pci0000:zz") && !is_root("pcie")
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

#[test]
fn without_an_iommu_group_no_importer_is_said_to_map_through_an_iommu() {
    let t = Tree::new("p2p-noiommu");
    t.add("pci0000:00/0000:00:00.0", Fn::Host(0x8086, QEMU_Q35))
        .add("pci0000:00/0000:00:10.0", Fn::Ep(None))
        .add("pci0000:00/0000:00:11.0", Fn::Ep(None));
    let r = t
        .sys
        .p2p_route_on(bdf("00:10.0"), bdf("00:11.0"), ZEN)
        .unwrap();
    let importers = r.importers();
    let iommufd = importers
        .iter()
        .find(|i| i.importer.starts_with("iommufd"))
        .unwrap();
    assert!(!iommufd.works, "{iommufd:?}");
    assert!(iommufd.outcome.contains("no IOMMU"), "{iommufd:?}");
    for i in &importers {
        assert!(
            !i.outcome.contains("maps the BAR through the IOMMU"),
            "{i:?}"
        );
    }
}
