//! Proof after the fact: which route a copy's bytes took, in the terms of
//! `peerdma path` (the kernel's P2P verdict for each hop), the IOAS mappings a
//! DMA engine used, and a plain statement when the copy was not peer to peer.

use peerdma_host::p2pdma::{HostCpu, P2pRoute, Upstream};
use peerdma_host::sysfs::Sysfs;
use peerdma_host::Bdf;
use serde::Serialize;

use super::transport::{Side, TransportKind};

/// The kernel's verdict for one hop: `provider`'s BAR read or written by
/// `client`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hop {
    /// The device whose BAR is accessed.
    pub provider: String,
    /// The device that accesses it.
    pub client: String,
    /// `direct`, `through the root complex`, `blocked`, or `unknown`.
    pub verdict: String,
    /// `PCI_P2PDMA_MAP_*`, when known.
    pub map_type: Option<String>,
    /// Where the two meet (`common upstream bridge 0000:01:00.0` …), or why
    /// that is unknown.
    pub route: String,
    /// What keeps it from being direct.
    pub blockers: Vec<String>,
}

impl Hop {
    /// The verdict for `provider` → `client` on this machine.
    pub fn find(sys: &Sysfs, provider: Bdf, client: Bdf, cpu: HostCpu) -> Hop {
        match sys.p2p_route_on(provider, client, cpu) {
            Ok(r) => Hop {
                provider: provider.to_string(),
                client: client.to_string(),
                verdict: r.reach().as_str().to_string(),
                map_type: Some(r.map_type.kernel_name().to_string()),
                route: upstream_text(&r),
                blockers: r.blockers().iter().map(|b| b.element()).collect(),
            },
            Err(e) => Hop {
                provider: provider.to_string(),
                client: client.to_string(),
                verdict: "unknown".to_string(),
                map_type: None,
                route: e.to_string(),
                blockers: Vec::new(),
            },
        }
    }
}

/// Where the two ends of `r` meet, in a phrase: `common upstream bridge 0000:01:00.0`,
/// `through host bridge 0000:00:00.0 (8086:29c0)`, `across PCI roots pci0000:00 and
/// pci0000:40`.
pub fn upstream_text(r: &P2pRoute) -> String {
    match &r.upstream {
        Upstream::Bridge(br) => format!("common upstream bridge {br}"),
        Upstream::HostBridge { root, host_bridge } => {
            let domain_bus = root.trim_start_matches("pci");
            match host_bridge {
                Some(h) => format!(
                    "through host bridge {domain_bus}:00.0 ({:04x}:{:04x})",
                    h.vendor, h.device
                ),
                None => format!("through the host bridge of {root}"),
            }
        }
        Upstream::Roots { a, b } => format!("across PCI roots {a} and {b}"),
    }
}

/// One IOAS mapping a DMA engine used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IoasMapping {
    /// Which side's span.
    pub side: Side,
    /// The device whose BAR it maps.
    pub bdf: String,
    /// Its BAR.
    pub bar: u32,
    /// The span's offset in the BAR.
    pub offset: u64,
    /// The IOVA the engine addressed.
    pub iova: u64,
    /// Bytes mapped.
    pub length: u64,
}

/// The route the bytes took.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteProof {
    /// Whether the bytes went from device to device without passing through
    /// the CPU.
    pub peer_to_peer: bool,
    /// What happened, in a sentence.
    pub summary: String,
    /// The kernel's verdict for the two devices (source as provider,
    /// destination as client): what a DRM or RDMA importer between them would
    /// get.
    pub devices: Hop,
    /// For a DMA path: the engine reading the source and writing the
    /// destination.
    pub engine_hops: Vec<Hop>,
    /// For a DMA path: the IOAS mappings the engine addressed.
    pub ioas_mappings: Vec<IoasMapping>,
}

impl RouteProof {
    /// The proof for a copy along `kind` (with `engine` for a DMA path).
    pub fn new(
        sys: &Sysfs,
        cpu: HostCpu,
        kind: TransportKind,
        src: Bdf,
        dst: Bdf,
        engine: Option<Bdf>,
        ioas_mappings: Vec<IoasMapping>,
    ) -> RouteProof {
        let devices = Hop::find(sys, src, dst, cpu);
        match (kind, engine) {
            (TransportKind::Dma, Some(engine)) => {
                let engine_hops = vec![
                    Hop::find(sys, src, engine, cpu),
                    Hop::find(sys, dst, engine, cpu),
                ];
                let summary = format!(
                    "peer to peer: DMA engine {engine} read {src}'s BAR and wrote {dst}'s BAR at \
                     IOVAs of its iommufd IOAS, translated by the IOMMU; no CPU mapping touched \
                     the bytes (iommufd skips the kernel's P2P distance check; for a DRM or RDMA \
                     importer it would say engine ← source: {}, engine → destination: {})",
                    engine_hops[0].verdict, engine_hops[1].verdict
                );
                RouteProof {
                    peer_to_peer: true,
                    summary,
                    devices,
                    engine_hops,
                    ioas_mappings,
                }
            }
            _ => RouteProof {
                peer_to_peer: false,
                summary: format!(
                    "not peer to peer: the CPU copied through its mappings of both BARs (the \
                     bytes bounced through the CPU); a DMA importer between {src} and {dst} \
                     would go {}",
                    devices.verdict
                ),
                devices,
                engine_hops: Vec::new(),
                ioas_mappings: Vec::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_copy_says_it_was_not_peer_to_peer_and_unknown_devices_stay_unknown() {
        let sys = Sysfs::new("/nonexistent-peerdma-sysfs");
        let (a, b): (Bdf, Bdf) = ("00:10.0".parse().unwrap(), "00:11.0".parse().unwrap());
        let p = RouteProof::new(
            &sys,
            HostCpu::default(),
            TransportKind::CpuMmap,
            a,
            b,
            None,
            Vec::new(),
        );
        assert!(!p.peer_to_peer);
        assert!(p.summary.starts_with("not peer to peer"), "{}", p.summary);
        assert_eq!(p.devices.verdict, "unknown");
        let e: Bdf = "00:12.0".parse().unwrap();
        let p = RouteProof::new(
            &sys,
            HostCpu::default(),
            TransportKind::Dma,
            a,
            b,
            Some(e),
            vec![IoasMapping {
                side: Side::Src,
                bdf: a.to_string(),
                bar: 2,
                offset: 0,
                iova: 0x1000_0000,
                length: 4096,
            }],
        );
        assert!(p.peer_to_peer);
        assert_eq!(p.engine_hops.len(), 2);
        assert_eq!(p.engine_hops[1].provider, b.to_string());
        assert_eq!(p.engine_hops[1].client, e.to_string());
        let j = serde_json::to_value(&p).unwrap();
        assert_eq!(j["ioas_mappings"][0]["side"], "src");
        assert_eq!(j["ioas_mappings"][0]["iova"], 0x1000_0000u64);
    }
}
