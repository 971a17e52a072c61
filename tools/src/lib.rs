//! Shared pieces of the peerdma command-line tools (`peerdma`, `p2pcopy`).

pub mod size;
