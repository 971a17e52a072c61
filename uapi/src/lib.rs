//! Raw kernel ABI for peerdma.
