//! Typed reports the guest programs print (one JSON line each) and the host suites
//! read back: one struct on both sides instead of `Value["key"]` lookups.

use serde::{Deserialize, Serialize};

/// The engine contract's cases, run for every engine device of a run
/// (`peerdma-guest-iommufd contract`), as the kernel's `vfio_pci_driver_test.c` runs
/// every driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContractScenario {
    /// Host memory → an ivshmem BAR's dma-buf mapping: lands.
    HostToBar,
    /// An ivshmem BAR's dma-buf mapping → host memory: lands.
    BarToHost,
    /// ivshmem0's BAR → ivshmem1's BAR, both dma-buf mappings: lands.
    BarToBar,
    /// A destination mapped read-only: refused before any DMA (`mapping_unusable`).
    ReadOnly,
    /// The destination BAR revoked: through the importer's own device (refused before
    /// any DMA) and behind a mapping that does not follow its exporter (the IOMMU
    /// refuses the engine: `not_landed`).
    Revoke,
    /// A destination IOVA with nothing mapped (a stale handle): the IOMMU refuses the
    /// engine and the checked copy fails (`not_landed`), never `Ok`.
    UnmappedIova,
}

impl ContractScenario {
    /// Every case, in the order the guest reports them. The two that fault (`revoke`,
    /// `unmapped-iova`) run for all engines together after the others, once a whole
    /// DMAR log rate-limit window has passed, so the kernel logs each fault.
    pub const ALL: [ContractScenario; 6] = [
        ContractScenario::HostToBar,
        ContractScenario::BarToHost,
        ContractScenario::BarToBar,
        ContractScenario::ReadOnly,
        ContractScenario::Revoke,
        ContractScenario::UnmappedIova,
    ];
}

/// The line tag of a [`ContractCase`] (`"report": "contract"`).
pub const CONTRACT_REPORT: &str = "contract";

/// One (engine, scenario) of the engine contract, as the guest saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractCase {
    /// Always [`CONTRACT_REPORT`]: tells these lines from the other scenarios'.
    pub report: String,
    /// The engine device's role (`edu0`, `nvme0`).
    pub engine: String,
    /// The engine's own name (`edu 0000:00:12.0`); empty when it did not open.
    pub engine_name: String,
    /// Which case.
    pub scenario: ContractScenario,
    /// The engine's longest single transfer in bytes (`DmaEngine::max_transfer`).
    pub max_transfer: u64,
    /// The case's copy length: min(max_transfer, 64 KiB). The copies meant to fault
    /// (`unmapped-iova`, `revoke`'s second) move one page of it.
    pub len: u64,
    /// The seed of `peerdma_testbed::pattern` the source held.
    pub seed: u64,
    /// The ivshmem role whose BAR (and backing file) is the destination, if a BAR is.
    pub dst_role: Option<String>,
    /// Offset of the destination in that BAR (and in its backing file).
    pub dst_offset: Option<u64>,
    /// The bytes the copy reported moved (`None`: the copy failed).
    pub bytes: Option<u64>,
    /// IOMMU faults the kernel logged during a copy that returned (`Some(0)`), or the
    /// count the refusal named.
    pub iommu_faults: Option<u64>,
    /// `EngineError::kind` of the refusal (`mapping_unusable`, `not_landed`), for the
    /// cases that must fail; for `revoke` the second (IOMMU-refused) copy's.
    pub error_kind: Option<String>,
    /// The refusal's message.
    pub error: Option<String>,
    /// For `revoke`: the first copy's refusal kind (revoked through this process).
    pub refused_first_kind: Option<String>,
    /// The guest read the destination back: the pattern where the copy landed, the
    /// bytes as they were where it was refused.
    pub verified_in_guest: bool,
    /// Whether the case did what the contract says.
    pub ok: bool,
}
