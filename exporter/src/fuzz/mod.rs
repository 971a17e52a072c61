//! Fuzz targets for every parser and rule engine that takes outside input, this
//! crate's and those of `peerdma-host` it builds on (BDFs, the PCI capability list,
//! fdinfo, debugfs bufinfo, sysfs `resource`, through their public API), on stable
//! Rust: a seeded generator ([`Rng`]) and a small driver ([`run`]) instead of
//! cargo-fuzz (which needs a nightly toolchain).
//!
//! Each target takes one generated case and returns `Err(description)` when a
//! property fails (a disagreement with the model); a panic is caught and counted.
//! A target must never panic and never disagree.
//!
//! - In the normal suite each target runs [`SUITE_RUNS`] cases (well under a
//!   second each, debug build).
//! - The full count runs with one command (see docs/fuzzing.md):
//!   `PEERDMA_FUZZ_RUNS=10000000 cargo test -p peerdma-exporter --release --lib fuzz:: -- --ignored --nocapture --test-threads=1`
//!   (`PEERDMA_FUZZ_SEED` picks another base seed; a failure prints the case's seed).

mod kernel_model;
mod parsers;
mod ranges;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

/// Cases per target in the normal suite.
pub(crate) const SUITE_RUNS: u64 = 3_000;

/// Cases per target for the ignored full run when `PEERDMA_FUZZ_RUNS` is unset.
const FULL_RUNS: u64 = 10_000_000;

/// SplitMix64: small, fast, and every seed gives a full-period stream.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`; the bias is irrelevant here).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub(crate) fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    /// A u64 biased towards the values where arithmetic breaks: 0, 1, powers of
    /// two and their neighbours, the top of the range, page multiples.
    pub(crate) fn edgy_u64(&mut self) -> u64 {
        match self.below(8) {
            0 => self.below(4),
            1 => u64::MAX - self.below(4),
            2 => (1u64 << self.below(64))
                .wrapping_add(self.below(3))
                .wrapping_sub(1),
            3 => self.below(64) << 12,
            4 => (u64::MAX - self.below(1 << 20)) & !0xfff,
            5 => 1u64 << 63,
            6 => self.below(1 << 40),
            _ => self.next(),
        }
    }
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// What one target's run found.
pub(crate) struct Figures {
    pub(crate) runs: u64,
    pub(crate) seconds: f64,
    pub(crate) panics: u64,
    pub(crate) disagreements: u64,
}

fn base_seed() -> u64 {
    std::env::var("PEERDMA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0070_6565_7264_6d61)
}

/// Runs `target` on `runs` cases (case `i` uses seed `base ^ i`); returns the
/// figures and the first failure's description (with its seed).
pub(crate) fn run(name: &str, runs: u64, target: Target) -> (Figures, Option<String>) {
    let base = base_seed();
    let start = Instant::now();
    let mut figures = Figures {
        runs,
        seconds: 0.0,
        panics: 0,
        disagreements: 0,
    };
    let mut first = None;
    for i in 0..runs {
        let seed = base ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let outcome = catch_unwind(AssertUnwindSafe(|| target(&mut Rng::new(seed))));
        let failure = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(what)) => {
                figures.disagreements += 1;
                what
            }
            Err(_) => {
                figures.panics += 1;
                "panicked".to_owned()
            }
        };
        first.get_or_insert_with(|| format!("{name}: case seed {seed:#x}: {failure}"));
    }
    figures.seconds = start.elapsed().as_secs_f64();
    (figures, first)
}

/// One fuzz target: checks one generated case.
pub(crate) type Target = fn(&mut Rng) -> Result<(), String>;

/// Every target, by name.
pub(crate) const TARGETS: &[(&str, Target)] = &[
    ("bdf", parsers::bdf),
    ("vfio_cap_chain", parsers::vfio_cap_chain),
    ("pci_cap_list", parsers::pci_cap_list),
    ("msix_location", parsers::msix_location),
    ("fdinfo", parsers::fdinfo),
    ("bufinfo", parsers::bufinfo),
    ("sysfs_resource", parsers::sysfs_resource),
    ("ranges_vs_kernel", ranges::validate_vs_kernel),
    ("fill_checked_vs_kernel", ranges::fill_checked_vs_kernel),
];

fn check(name: &str, runs: u64) -> Figures {
    let target = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no target {name}"))
        .1;
    let (figures, first) = run(name, runs, target);
    assert!(
        first.is_none(),
        "{} panics, {} disagreements in {} runs; first: {}",
        figures.panics,
        figures.disagreements,
        runs,
        first.unwrap_or_default()
    );
    figures
}

mod tests {
    use super::*;

    #[test]
    fn bdf() {
        check("bdf", SUITE_RUNS);
    }
    #[test]
    fn vfio_cap_chain() {
        check("vfio_cap_chain", SUITE_RUNS);
    }
    #[test]
    fn pci_cap_list() {
        check("pci_cap_list", SUITE_RUNS);
    }
    #[test]
    fn msix_location() {
        check("msix_location", SUITE_RUNS);
    }
    #[test]
    fn fdinfo() {
        check("fdinfo", SUITE_RUNS);
    }
    #[test]
    fn bufinfo() {
        check("bufinfo", SUITE_RUNS);
    }
    #[test]
    fn sysfs_resource() {
        check("sysfs_resource", SUITE_RUNS);
    }
    #[test]
    fn ranges_vs_kernel() {
        check("ranges_vs_kernel", SUITE_RUNS * 10);
    }
    #[test]
    fn fill_checked_vs_kernel() {
        check("fill_checked_vs_kernel", SUITE_RUNS * 10);
    }

    /// The full run: `PEERDMA_FUZZ_RUNS` cases per target (10^7 when unset).
    #[test]
    #[ignore = "the full fuzz run takes minutes; run it by the command in docs/fuzzing.md"]
    fn full() {
        let runs = std::env::var("PEERDMA_FUZZ_RUNS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(FULL_RUNS);
        let mut failures = Vec::new();
        for (name, target) in TARGETS {
            let (f, first) = run(name, runs, *target);
            // The figures are this test's output (docs/fuzzing.md records them).
            println!(
                "fuzz {name:<24} runs {:>10}  seconds {:>8.1}  panics {}  disagreements {}",
                f.runs, f.seconds, f.panics, f.disagreements
            );
            failures.extend(first);
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }
}
