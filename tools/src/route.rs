//! Renders a [`P2pRoute`] for people and for JSON: the path drawn as
//! `lspci -t` draws a tree, the ACS bits of every function on it, the kernel's
//! verdict, what blocks it and the fix, and which importers it matters for.
//! `peerdma path` prints it; `p2pcopy` puts it in its report.

use std::collections::BTreeMap;

use peerdma_exporter::Errno;
use peerdma_host::acs::AcsState;
use peerdma_host::p2pdma::{P2pRoute, RouteNode, Upstream};
use serde_json::{json, Value};

/// The route as one JSON object.
pub fn to_json(r: &P2pRoute) -> Value {
    let nodes: Vec<Value> = r.nodes.iter().map(node_json).collect();
    let blockers: Vec<Value> = r
        .blockers()
        .iter()
        .map(|b| json!({ "element": b.element(), "fix": b.fix(r.cpu.hypervisor) }))
        .collect();
    let importers: Vec<Value> = r
        .importers()
        .iter()
        .map(|i| {
            json!({
                "importer": i.importer,
                "checks_distance": i.checks_distance,
                "works": i.works,
                "errno": i.errno.map(errno_name),
                "outcome": i.outcome,
            })
        })
        .collect();
    let end = |e: &peerdma_host::p2pdma::RouteEnd| {
        json!({
            "bdf": e.bdf.to_string(),
            "id": format!("{:04x}:{:04x}", e.vendor, e.device),
            "driver": e.driver,
            "iommu_group": e.iommu_group,
            "vfio_bound": e.vfio_bound,
        })
    };
    json!({
        "a": r.a.bdf.to_string(),
        "b": r.b.bdf.to_string(),
        "verdict": r.reach().as_str(),
        "map_type": r.map_type.kernel_name(),
        "rule": format!("{:?}", r.verdict),
        "why": r.verdict.why(),
        "route": upstream_text(r),
        "tree": lspci_tree(r),
        "a_chain": r.a_chain,
        "b_chain": r.b_chain,
        "ends": [end(&r.a), end(&r.b)],
        "same_iommu_group": r.same_iommu_group,
        "nodes": nodes,
        "acs_redirects": r.acs_redirects.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
        "acs_unreadable": r.acs_unreadable.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
        "disable_acs_redir": r.disable_acs_redir_parameter(),
        "blockers": blockers,
        "importers": importers,
        "cpu": { "amd": r.cpu.amd, "family": r.cpu.family, "hypervisor": r.cpu.hypervisor },
        // The summary fields of the first `peerdma path`.
        "iommufd_import": if r.a.translated() && r.b.translated() {
            "possible: iommufd maps the BAR's physical range without the distance check"
        } else {
            "impossible: no IOMMU translates these devices (no IOMMU group, or vfio's no-IOMMU mode)"
        },
        "drm_rdma_import": if r.verdict.allowed() { "possible" } else { "refused" },
    })
}

/// `EINVAL` for the one errno a refused map gives; the number otherwise.
fn errno_name(e: Errno) -> String {
    if e == Errno::INVAL {
        "EINVAL".to_string()
    } else {
        format!("errno {}", e.raw_os_error())
    }
}

fn node_json(n: &RouteNode) -> Value {
    let acs = match n.acs {
        AcsState::Absent => json!({ "state": "absent" }),
        AcsState::Present(a) => json!({
            "state": "present",
            "offset": a.offset,
            "cap": a.cap.names(),
            "ctrl": a.ctrl.names(),
        }),
        AcsState::Unreadable { bytes } => json!({ "state": "unreadable", "bytes": bytes }),
    };
    json!({
        "bdf": n.bdf.to_string(),
        "kind": n.kind.describe(),
        "id": format!("{:04x}:{:04x}", n.vendor, n.device),
        "buses": n.buses.map(|(s, e)| [s, e]),
        "acs": acs,
        "redirects": n.acs.redirects(),
        "checked": n.checked,
    })
}

pub use peerdma_copy::upstream_text;

/// One line: `direct (common upstream bridge 0000:01:00.0)`.
pub fn summary(r: &P2pRoute) -> String {
    format!("{} ({})", r.reach().as_str(), upstream_text(r))
}

/// The full text report.
pub fn to_text(r: &P2pRoute) -> String {
    let mut s = format!("{} → {}: {}\n", r.a.bdf, r.b.bdf, summary(r));
    s.push_str(&lspci_tree(r));
    s.push('\n');
    for (role, e) in [("A", &r.a), ("B", &r.b)] {
        let group = e
            .iommu_group
            .map_or("no IOMMU group".to_string(), |g| format!("IOMMU group {g}"));
        s.push_str(&format!(
            "{role} {} {:04x}:{:04x}  driver {}{}, {group}\n",
            e.bdf,
            e.vendor,
            e.device,
            e.driver.as_deref().unwrap_or("none"),
            if e.vfio_bound { " (vfio)" } else { "" },
        ));
    }
    if r.same_iommu_group {
        s.push_str(
            "  both devices are in one IOMMU group: VFIO needs every member bound to vfio-pci\n",
        );
    }
    let with_acs: Vec<&RouteNode> = r
        .nodes
        .iter()
        .filter(|n| n.kind.is_bridge() || matches!(n.acs, AcsState::Present(_)))
        .collect();
    if with_acs.is_empty() {
        s.push_str("ACS: no bridge and no ACS capability on the path\n");
    } else {
        s.push_str("ACS (P2P request/completion redirect or egress control on = redirects):\n");
    }
    for n in with_acs {
        let acs = match n.acs {
            AcsState::Absent => "no ACS capability".to_string(),
            AcsState::Present(a) => format!("ACSCtl: {}", a.ctrl.lspci()),
            AcsState::Unreadable { bytes: 0 } => "config space unreadable".to_string(),
            AcsState::Unreadable { bytes } => {
                format!("unreadable (only {bytes} bytes of config space; run as root)")
            }
        };
        let note = match (n.acs.redirects(), n.checked) {
            (Some(true), true) => "  ← redirects",
            (Some(true), false) => "  (redirects, but the check does not read it here)",
            _ => "",
        };
        s.push_str(&format!(
            "  {} {:<22} {acs}{note}\n",
            n.bdf,
            n.kind.describe()
        ));
    }
    s.push_str(&format!(
        "kernel: {} — {}\n",
        r.map_type.kernel_name(),
        r.verdict.why()
    ));
    s.push_str(&format!("verdict: {}\n", r.reach().as_str()));
    for b in r.blockers() {
        s.push_str(&format!(
            "  {}\n    fix: {}\n",
            b.element(),
            b.fix(r.cpu.hypervisor)
        ));
    }
    if let Some(p) = r.disable_acs_redir_parameter() {
        s.push_str(&format!("  all redirects off at once: {p}\n"));
    }
    if !r.acs_unreadable.is_empty() {
        let list: Vec<String> = r.acs_unreadable.iter().map(|b| b.to_string()).collect();
        s.push_str(&format!(
            "  ACS of {} could not be read (not root): assumed not to redirect\n",
            list.join(", ")
        ));
    }
    s.push_str("importers:\n");
    for i in r.importers() {
        let how = match (i.works, i.errno) {
            (true, _) => "works".to_string(),
            (false, Some(e)) => format!("fails ({})", errno_name(e)),
            (false, None) => "fails".to_string(),
        };
        s.push_str(&format!("  {}: {how} — {}\n", i.importer, i.outcome));
    }
    s
}

/// The path drawn as `lspci -t` draws the tree (only the functions on the
/// path, and the host bridge when the traffic crosses it), each endpoint
/// labelled A or B.
pub fn lspci_tree(r: &P2pRoute) -> String {
    let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut roots: Vec<String> = Vec::new();
    let mut add_chain = |chain: &[String]| {
        for pair in chain.windows(2) {
            let kids = children.entry(pair[0].clone()).or_default();
            if !kids.contains(&pair[1]) {
                kids.push(pair[1].clone());
            }
        }
        if let Some(root) = chain.first() {
            if !roots.contains(root) {
                roots.push(root.clone());
            }
        }
    };
    add_chain(&r.a_chain);
    add_chain(&r.b_chain);
    if let Upstream::HostBridge {
        root,
        host_bridge: Some(h),
    } = &r.upstream
    {
        children
            .entry(root.clone())
            .or_default()
            .push(h.bdf.to_string());
    }
    for kids in children.values_mut() {
        kids.sort();
    }
    let labels = |name: &str| -> String {
        if name == r.a.bdf.to_string() {
            format!("  A {:04x}:{:04x}", r.a.vendor, r.a.device)
        } else if name == r.b.bdf.to_string() {
            format!("  B {:04x}:{:04x}", r.b.vendor, r.b.device)
        } else if let Upstream::HostBridge {
            host_bridge: Some(h),
            ..
        } = &r.upstream
        {
            if name == h.bdf.to_string() {
                format!("  host bridge {:04x}:{:04x}", h.vendor, h.device)
            } else {
                String::new()
            }
        } else {
            String::new()
        }
    };
    let tree = Drawing {
        children: &children,
        nodes: &r.nodes,
        label: &labels,
    };
    let mut out = String::new();
    for root in &roots {
        let mut line: Vec<char> = Vec::new();
        let p = write_at(
            &mut line,
            0,
            &format!("-[{}]-", root.trim_start_matches("pci")),
        );
        tree.bus(root, &mut line, p, &mut out);
    }
    out
}

/// What `lspci -t`'s `show_tree_*` walk over.
struct Drawing<'a> {
    children: &'a BTreeMap<String, Vec<String>>,
    nodes: &'a [RouteNode],
    label: &'a dyn Fn(&str) -> String,
}

impl Drawing<'_> {
    /// `show_tree_bus`: one child continues the line with `--`, several
    /// branch with `+-` and a final `\-`.
    fn bus(&self, parent: &str, line: &mut Vec<char>, p: usize, out: &mut String) {
        let kids = self.children.get(parent).map(Vec::as_slice).unwrap_or(&[]);
        match kids {
            [] => {
                line.truncate(p);
                print_it(line, out);
            }
            [only] => {
                let p = write_at(line, p, "--");
                self.dev(only, line, p, out);
            }
            many => {
                for (i, k) in many.iter().enumerate() {
                    let branch = if i + 1 < many.len() { "+-" } else { "\\-" };
                    let p = write_at(line, p, branch);
                    self.dev(k, line, p, out);
                }
            }
        }
    }

    /// `show_tree_dev`: `DD.F`, then for a bridge `-[SS]-` or `-[SS-UU]-` and
    /// its bus.
    fn dev(&self, name: &str, line: &mut Vec<char>, p: usize, out: &mut String) {
        let short = name.get(name.len().saturating_sub(4)..).unwrap_or(name);
        let p = write_at(line, p, short);
        if self.children.contains_key(name) {
            let buses = self
                .nodes
                .iter()
                .find(|n| n.bdf.to_string() == name)
                .and_then(|n| n.buses)
                .or_else(|| self.child_buses(name));
            let range = match buses {
                Some((s, e)) if s == e => format!("-[{s:02x}]-"),
                Some((s, e)) => format!("-[{s:02x}-{e:02x}]-"),
                None => "-[??]-".to_string(),
            };
            let p = write_at(line, p, &range);
            let p = write_at(line, p, "-");
            self.bus(name, line, p, out);
        } else {
            let p = write_at(line, p, &(self.label)(name));
            line.truncate(p);
            print_it(line, out);
        }
    }

    /// The bus range of a bridge from its drawn children (when its config
    /// space was unreadable).
    fn child_buses(&self, name: &str) -> Option<(u8, u8)> {
        let bus = |n: &str| u8::from_str_radix(n.get(5..7)?, 16).ok();
        let kids = self.children.get(name)?;
        let lo = kids.iter().filter_map(|k| bus(k)).min()?;
        let hi = kids.iter().filter_map(|k| bus(k)).max()?;
        Some((lo, hi))
    }
}

/// Writes `s` at column `p` (dropping what followed) and returns the new end.
fn write_at(line: &mut Vec<char>, p: usize, s: &str) -> usize {
    line.truncate(p);
    line.extend(s.chars());
    line.len()
}

/// `print_it`: prints the line, then turns it into the prefix of the next
/// one (`+` and `|` become `|`, everything else a space).
fn print_it(line: &mut [char], out: &mut String) {
    out.extend(line.iter());
    // lspci pads nothing; trailing spaces of a continued prefix are trimmed.
    let trimmed = out.trim_end_matches(' ').len();
    out.truncate(trimmed);
    out.push('\n');
    for c in line.iter_mut() {
        *c = if *c == '+' || *c == '|' { '|' } else { ' ' };
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use peerdma_host::p2pdma::HostCpu;
    use peerdma_host::sysfs::Sysfs;
    use peerdma_host::Bdf;

    use super::*;

    use peerdma_host::fixture::TempTree as Tree;

    /// Adds a 1af4:1110 function of class `class`; an endpoint gets its own IOMMU group.
    trait AddClass {
        fn add(&self, path: &str, class: u32) -> &Self;
    }

    impl AddClass for Tree {
        fn add(&self, path: &str, class: u32) -> &Tree {
            let dir = self.function(path, (0x1af4, 0x1110), class);
            let bdf = path.rsplit('/').next().unwrap();
            if class == MEM {
                // Each endpoint in its own IOMMU group, as behind a vIOMMU.
                let group = u32::from_str_radix(&bdf[8..10], 16).unwrap();
                symlink(
                    format!("../../../../kernel/iommu_groups/{group}"),
                    dir.join("iommu_group"),
                )
                .unwrap();
            }
            self
        }
    }

    fn bdf(s: &str) -> Bdf {
        s.parse().unwrap()
    }

    const BRIDGE: u32 = 0x060400;
    const MEM: u32 = 0x050000;
    const INTEL: HostCpu = HostCpu {
        amd: false,
        family: 6,
        hypervisor: true,
    };

    #[test]
    fn a_switch_is_drawn_as_lspci_t_draws_it() {
        let t = Tree::new("switch");
        let up = "pci0000:00/0000:00:1c.0/0000:01:00.0";
        t.add("pci0000:00/0000:00:1c.0", BRIDGE)
            .add(up, BRIDGE)
            .add(&format!("{up}/0000:02:00.0"), BRIDGE)
            .add(&format!("{up}/0000:02:01.0"), BRIDGE)
            .add(&format!("{up}/0000:02:00.0/0000:03:00.0"), MEM)
            .add(&format!("{up}/0000:02:01.0/0000:04:00.0"), MEM);
        let r = Sysfs::new(&t.0)
            .p2p_route_on(bdf("03:00.0"), bdf("04:00.0"), INTEL)
            .unwrap();
        assert_eq!(
            lspci_tree(&r),
            "-[0000:00]---1c.0-[01]----00.0-[02]--+-00.0-[03]----00.0  A 1af4:1110\n\
             \x20                                    \\-01.0-[04]----00.0  B 1af4:1110\n"
        );
        let text = to_text(&r);
        assert!(
            text.starts_with(
                "0000:03:00.0 → 0000:04:00.0: direct (common upstream bridge 0000:01:00.0)"
            ),
            "{text}"
        );
        assert!(text.contains("PCI bridge"), "{text}");
        assert!(text.contains("config space unreadable"), "{text}");
        let j = to_json(&r);
        assert_eq!(j["verdict"], "direct");
        assert_eq!(j["map_type"], "PCI_P2PDMA_MAP_BUS_ADDR");
        assert_eq!(j["nodes"].as_array().unwrap().len(), 6);
        assert_eq!(j["blockers"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn root_bus_siblings_show_the_host_bridge_and_the_fix() {
        let t = Tree::new("root");
        t.add("pci0000:00/0000:00:00.0", 0x060000)
            .add("pci0000:00/0000:00:10.0", MEM)
            .add("pci0000:00/0000:00:11.0", MEM);
        let r = Sysfs::new(&t.0)
            .p2p_route_on(bdf("00:10.0"), bdf("00:11.0"), INTEL)
            .unwrap();
        assert_eq!(
            lspci_tree(&r),
            "-[0000:00]-+-00.0  host bridge 1af4:1110\n\
             \x20          +-10.0  A 1af4:1110\n\
             \x20          \\-11.0  B 1af4:1110\n"
        );
        let j = to_json(&r);
        assert_eq!(j["verdict"], "blocked");
        assert_eq!(j["drm_rdma_import"], "refused");
        let fix = j["blockers"][0]["fix"].as_str().unwrap();
        assert!(fix.contains("emulated PCIe switch"), "{fix}");
        assert_eq!(j["importers"][1]["errno"], "EINVAL");
        assert_eq!(j["importers"][0]["works"], true);
        assert!(to_text(&r).contains("fails (EINVAL)"));
    }
}
