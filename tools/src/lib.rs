//! Shared pieces of the peerdma command-line tools (`peerdma`, `p2pcopy`).

pub mod engines;
pub mod mmio;
pub mod p2pcopy;
pub mod pattern;
pub mod sigbus;
pub mod size;
