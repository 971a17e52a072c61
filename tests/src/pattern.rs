//! Seeded byte patterns shared with the tools (`p2pcopy --verify` writes the same ones).

pub use peerdma_copy::pattern::*;
