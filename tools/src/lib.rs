//! Shared pieces of the peerdma command-line tools.
