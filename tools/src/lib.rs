//! Shared pieces of the peerdma command-line tools (`peerdma`, `p2pcopy`).

pub mod buffer_state;
pub mod cli;
pub mod doctor;
pub mod fix;
pub mod install;
pub mod mmio;
pub mod p2pcopy;
pub mod pattern;
pub mod route;
pub mod sigbus;
pub mod size;
#[cfg(test)]
mod size_fuzz;

/// The engines moved to the importer crate; this path stays for old users.
pub use peerdma_importer::engine as engines;
