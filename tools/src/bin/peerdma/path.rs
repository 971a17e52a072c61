//! `peerdma path A B`: the PCI path between two devices, the ACS bits on it, what
//! the kernel's P2P distance check decides and which importers that matters for.
//!
//! The model is `peerdma_host::p2pdma` ([`Sysfs::p2p_route`]); the rendering is
//! `peerdma_tools::route`. An iommufd import is called possible unless a memory BAR of
//! either device lies beyond its IOMMU's address width (then every DMA would fault).

use anyhow::Result;
use peerdma_host::sysfs::Sysfs;
use peerdma_host::Bdf;
use peerdma_tools::route;

/// Memory BARs of `bdf` beyond its IOMMU's address width, in words; `None` when all
/// are reachable or the width cannot be read.
fn beyond_iommu(sys: &Sysfs, bdf: Bdf) -> Option<String> {
    let width = sys.iommu_address_width(bdf)?;
    let dev = sys.device(bdf).ok()?;
    let far: Vec<String> = dev
        .resources
        .iter()
        .enumerate()
        .take(6)
        .filter(|(_, r)| r.is_mem() && r.size() > 0 && !width.reaches(r.end))
        .map(|(i, r)| format!("{bdf} BAR{i} at {:#x} to {:#x}", r.start, r.end))
        .collect();
    (!far.is_empty()).then(|| {
        format!(
            "{} beyond the {}-bit address width of IOMMU {} ({})",
            far.join(", "),
            width.bits,
            width.iommu,
            width.source
        )
    })
}

/// Reports the path.
pub fn run(a: Bdf, b: Bdf, json: bool) -> Result<()> {
    let sys = Sysfs::system();
    let r = sys.p2p_route(a, b)?;
    let far: Vec<String> = [a, b]
        .iter()
        .filter_map(|&d| beyond_iommu(&sys, d))
        .collect();
    let refusal = (!far.is_empty()).then(|| {
        format!(
            "refused: {}; the kernel would map such a BAR into an IOAS and every DMA to it \
             would fault",
            far.join("; ")
        )
    });
    if json {
        let mut out = route::to_json(&r);
        if let Some(refusal) = &refusal {
            out["iommufd_import"] = refusal.clone().into();
        }
        crate::print_json(&out);
    } else {
        print!("{}", route::to_text(&r));
        if let Some(refusal) = &refusal {
            println!("iommufd import: {refusal}");
        }
    }
    Ok(())
}
