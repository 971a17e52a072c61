//! `peerdma path A B`: the PCI path between two devices, the ACS bits on it, what
//! the kernel's P2P distance check decides and which importers that matters for.
//!
//! The model is `peerdma_exporter::p2pdma` ([`Sysfs::p2p_route`]); the rendering is
//! `peerdma_tools::route`.

use anyhow::Result;
use peerdma_exporter::{Bdf, Sysfs};
use peerdma_tools::route;

/// Reports the path.
pub fn run(a: Bdf, b: Bdf, json: bool) -> Result<()> {
    let r = Sysfs::system().p2p_route(a, b)?;
    if json {
        crate::print_json(&route::to_json(&r));
    } else {
        print!("{}", route::to_text(&r));
    }
    Ok(())
}
