//! Why a copy could not run or did not finish. Each error names the device,
//! BAR, span or errno at fault and the fix in the library's terms; the
//! `p2pcopy` binary adds which of its flags that fix is.

use std::fmt;

use peerdma_engine::ENGINES;
use peerdma_host::Bdf;

use super::fix::foreign;
use super::transport::Side;

/// A request field that must be page-aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanField {
    /// The offset into the source BAR.
    SrcOffset,
    /// The offset into the destination BAR.
    DstOffset,
    /// The copy size.
    Size,
}

impl fmt::Display for SpanField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpanField::SrcOffset => "source offset",
            SpanField::DstOffset => "destination offset",
            SpanField::Size => "size",
        })
    }
}

/// Why a transport cannot run here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// `/dev/iommu` is missing: no iommufd importer.
    NoIommufd,
    /// The engine device named is also the source or the destination.
    EngineIsEndpoint {
        /// The engine device.
        engine: Bdf,
    },
    /// No supported engine device is bound to vfio-pci.
    NoEngine,
    /// `/dev/iommu` is missing, and the NVMe engine needs it.
    NvmeNeedsIommufd,
    /// The RDMA path writes into a peer's memory: two local devices are not
    /// its job.
    RdmaNeedsPeer,
    /// This build has no RDMA support (the `rdma` feature is off).
    RdmaNotBuilt,
    /// A remote destination can only be reached over RDMA.
    RemoteNeedsRdma,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; fix: {}", self.what(), self.fix())
    }
}

impl Unavailable {
    /// Why the transport cannot run, without the fix.
    pub fn what(&self) -> String {
        match self {
            Unavailable::NoIommufd => "/dev/iommu does not exist: this kernel has no \
                                       CONFIG_IOMMUFD (Debian's stock kernels leave it off), so \
                                       a dma-buf cannot be imported into an IOAS"
                .to_string(),
            Unavailable::EngineIsEndpoint { engine } => format!(
                "engine device {engine} is also the source or the destination: the engine must \
                 be a third device (a VFIO cdev device can be opened once)"
            ),
            Unavailable::NoEngine => format!(
                "no supported DMA engine is bound to vfio-pci (supported: {})",
                ENGINES
                    .iter()
                    .map(|d| format!("{} {:04x}:{:04x}", d.name, d.vendor, d.device))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Unavailable::NvmeNeedsIommufd => "/dev/iommu does not exist: this kernel has no \
                                              CONFIG_IOMMUFD (Debian's stock kernels leave it \
                                              off); the NVMe engine maps its queues and the other \
                                              side's memory (a BAR's dma-buf, host pages) into an \
                                              iommufd IOAS, so it cannot run here"
                .to_string(),
            Unavailable::RdmaNeedsPeer => "the RDMA path writes into another host's (or \
                                           namespace's) memory, not between two local devices"
                .to_string(),
            Unavailable::RdmaNotBuilt => "this p2pcopy was built without RDMA support".to_string(),
            Unavailable::RemoteNeedsRdma => {
                "an rdma:// destination is reached over RDMA only".to_string()
            }
        }
    }

    /// What to do about it, in the library's terms (no command-line flag).
    pub fn fix(&self) -> &'static str {
        match self {
            Unavailable::NoIommufd => "copy with the CPU through the BAR mmaps",
            Unavailable::EngineIsEndpoint { .. } => "name another engine device",
            Unavailable::NoEngine => "bind one, name it, or copy with the CPU",
            Unavailable::NvmeNeedsIommufd => {
                "boot a kernel with CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV (the project's \
                 reference kernel)"
            }
            Unavailable::RdmaNeedsPeer => {
                "run p2pcopy's receiver (serve mode) there and name it as the destination, \
                 rdma://HOST:PORT, or copy locally with the CPU or a DMA engine"
            }
            Unavailable::RdmaNotBuilt => {
                "rebuild with the peerdma-tools crate's rdma feature (it needs libibverbs-dev \
                 and librdmacm-dev)"
            }
            Unavailable::RemoteNeedsRdma => "use the rdma path (or auto) for it",
        }
    }
}

/// What a failed verification saw at its first difference: enough to reproduce it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MismatchDetail {
    /// The pattern's seed, where the expected bytes are the pattern (`None` where they
    /// are the namespace read again).
    pub seed: Option<u64>,
    /// Up to 16 expected bytes from the first difference on.
    pub expected: Vec<u8>,
    /// The bytes found there.
    pub actual: Vec<u8>,
}

impl MismatchDetail {
    /// How many bytes from the first difference a detail shows.
    pub const BYTES: usize = 16;
}

impl std::fmt::Display for MismatchDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = |b: &[u8]| {
            b.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        if let Some(seed) = self.seed {
            write!(f, "pattern seed {seed}: ")?;
        }
        write!(
            f,
            "expected {}, found {}",
            hex(&self.expected),
            hex(&self.actual)
        )
    }
}

/// A p2pcopy failure: each names the device, BAR or offset at fault and the fix.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The BAR cannot hold the requested span.
    #[error("{}", self.said())]
    BarTooSmall {
        /// Device.
        bdf: Bdf,
        /// Which side.
        side: Side,
        /// BAR index.
        bar: u32,
        /// BAR size.
        bar_size: u64,
        /// Requested offset.
        offset: u64,
        /// Requested size.
        size: u64,
    },
    /// The named BAR cannot take part in a copy.
    #[error("{}", self.said())]
    BarUnusable {
        /// Device.
        bdf: Bdf,
        /// BAR index.
        bar: u32,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The data was not what was written.
    #[error("{}", self.said())]
    Mismatch {
        /// First differing offset (relative to the destination offset).
        first: u64,
        /// How many bytes differ.
        count: u64,
        /// The bytes at the first difference, expected and found, where the checker
        /// had them (a remote receiver reports offsets only).
        detail: Option<Box<MismatchDetail>>,
    },
    /// No BAR of the device can take part in a copy.
    #[error("{}", self.said())]
    NoUsableBar {
        /// Device.
        bdf: Bdf,
    },
    /// The requested transport cannot run here.
    #[error("{}", self.said())]
    TransportUnavailable {
        /// The transport as `--engine` names it ("dma", "rdma", "nvme").
        transport: &'static str,
        /// Why, with the fix.
        why: Unavailable,
    },
    /// The DMA engine failed.
    #[error(transparent)]
    Engine(#[from] peerdma_engine::EngineError),
    /// The IOMMU refused the engine's DMA while the copy ran (the kernel logged it):
    /// the cause of `outcome`.
    #[error("{}", self.said())]
    DmaFaulted {
        /// The engine whose DMA faulted.
        engine: Bdf,
        /// Faults logged for it (the IOMMU drivers rate-limit: a lower bound).
        count: usize,
        /// The first one.
        first: Box<peerdma_host::fault_log::IommuFault>,
        /// What the copy saw: the mismatch or the engine's error.
        outcome: Box<CopyError>,
    },
    /// The copy ran to its end (and, where verified, the compared bytes matched), but
    /// the IOMMU refused some of the engine's DMA meanwhile: the outcome of a
    /// [`CopyError::DmaFaulted`]. Such a copy never counts as verified: a refused
    /// access means part of this run's transfer did not land where it was meant to,
    /// and a match can come from bytes that were already there.
    #[error("{}", self.said())]
    FaultedAfterAll {
        /// Whether the bytes were compared (and matched).
        compared: bool,
    },
    /// The exporter library refused or failed.
    #[error(transparent)]
    Exporter(#[from] peerdma_exporter::Error),
    /// The iommufd importer refused or failed.
    #[error(transparent)]
    Importer(#[from] peerdma_importer::iommufd::Error),
    /// A feature of a posted kernel series was needed and the kernel lacks it, or
    /// refused (the dma-buf mapping of `CpuMapping::DmaBufWc`).
    #[error(transparent)]
    KernelFeature(#[from] peerdma_exporter::posted::FeatureError),
    /// A device's memory decode went off (or it was reset) during the copy.
    #[error("{}", self.said())]
    Revoked {
        /// Device.
        bdf: Bdf,
        /// Bytes copied before the stop.
        done: u64,
        /// Bytes requested.
        total: u64,
        /// What the device's state says.
        why: String,
    },
    /// The `nvme:` device is not an NVMe controller.
    #[error("{}", self.said())]
    NotNvme {
        /// Device.
        bdf: Bdf,
        /// PCI class code.
        class: u32,
        /// Vendor id.
        vendor: u16,
        /// Device id.
        device: u16,
    },
    /// A storage copy needs exactly one NVMe side.
    #[error("{}", self.said())]
    StorageSides {
        /// Source as named.
        src: String,
        /// Destination as named.
        dst: String,
    },
    /// SRC and DST are the same device.
    #[error("{}", self.said())]
    SameDevice {
        /// Device.
        bdf: Bdf,
    },
    /// An offset or size is not page-aligned.
    #[error("{}", self.said())]
    Unaligned {
        /// Which field.
        field: SpanField,
        /// Its value.
        value: u64,
        /// Page size.
        page: u64,
        /// The nearest page multiples (below, above) that are valid here: they
        /// fit the BARs, and a size is not 0. Empty when neither is.
        suggestions: Vec<u64>,
    },
    /// A copy endpoint holds registers, not memory (checked before anything is
    /// written).
    #[error("{}", self.said())]
    RegisterBar {
        /// Device.
        bdf: Bdf,
        /// Which side.
        side: Side,
        /// BAR index.
        bar: u32,
        /// What the BAR holds.
        why: String,
    },
    /// The RDMA peer could not be resolved.
    #[error("{}", self.said())]
    BadPeer {
        /// What was given.
        peer: String,
    },
    /// The RDMA peer's port is no port a receiver can listen on.
    #[error("{}", self.said())]
    BadPeerPort {
        /// What was given.
        peer: String,
        /// The port as written.
        port: String,
    },
    /// The RDMA receiver found other bytes than the pattern.
    #[error("{}", self.said())]
    PeerMismatch {
        /// The receiver.
        peer: String,
        /// First differing offset.
        first: u64,
        /// How many differ.
        count: u64,
    },
    /// The RDMA receiver failed before it could check.
    #[error("{}", self.said())]
    PeerFailed {
        /// The receiver.
        peer: String,
    },
    /// An RDMA step failed.
    #[cfg(feature = "rdma")]
    #[error(transparent)]
    Rdma(#[from] peerdma_importer::rdma::RdmaError),
    /// A NIC stream (module `nic`) failed.
    #[error(transparent)]
    Nic(#[from] crate::nic::NicError),
    /// Zero iterations requested.
    #[error("{}", self.said())]
    ZeroIterations,
    /// Zero bytes requested.
    #[error("{}", self.said())]
    ZeroSize,
    /// No size was given and nothing fits past the start: a BAR offset at the BAR's
    /// end, or an LBA at the namespace's end.
    #[error("{}", self.said())]
    NoRoom {
        /// Which start leaves no room, and the size it is measured against.
        at: String,
    },
}

/// "use 0x1000 or 0x2000", or what to do when no nearby value is valid.
fn suggest(values: &[u64]) -> String {
    match values {
        [] => "use a page multiple that fits both BARs".to_string(),
        [one] => format!("use {one:#x}"),
        [a, b, ..] => format!("use {a:#x} or {b:#x}"),
    }
}

impl Unavailable {
    /// A stable, machine-readable name for the reason (`no_iommufd`, `no_engine`).
    pub fn kind(&self) -> &'static str {
        match self {
            Unavailable::NoIommufd | Unavailable::NvmeNeedsIommufd => "no_iommufd",
            Unavailable::EngineIsEndpoint { .. } => "engine_is_endpoint",
            Unavailable::NoEngine => "no_engine",
            Unavailable::RdmaNeedsPeer => "rdma_needs_peer",
            Unavailable::RdmaNotBuilt => "rdma_not_built",
            Unavailable::RemoteNeedsRdma => "remote_needs_rdma",
        }
    }
}

impl CopyError {
    /// What went wrong, in the user's words, without the fix: the message a report
    /// shows beside [`fix`](Self::fix). For an exporter's, importer's, engine's or RDMA
    /// error, its own message up to its fix.
    pub fn what(&self) -> String {
        match self {
            CopyError::BarTooSmall {
                bdf,
                bar,
                bar_size,
                offset,
                size,
                ..
            } => format!(
                "{bdf} BAR{bar} is {bar_size:#x} bytes: {offset:#x} + {size:#x} does not fit"
            ),
            CopyError::BarUnusable { bdf, bar, why } => format!("{bdf} BAR{bar} is {why}"),
            CopyError::Mismatch {
                first,
                count,
                detail,
            } => format!(
                "verification failed: {count} byte(s) differ, the first at destination offset \
                 {first:#x}{}",
                detail.as_ref().map_or_else(String::new, |d| format!("; {d}"))
            ),
            CopyError::NoUsableBar { bdf } => format!(
                "{bdf} has no memory BAR of at least a page that VFIO can mmap and export"
            ),
            CopyError::TransportUnavailable { transport, why } => {
                format!("the {transport} path is unavailable: {}", why.what())
            }
            CopyError::DmaFaulted {
                engine,
                count,
                first,
                outcome,
            } => format!(
                "the IOMMU refused {count} DMA access(es) by the engine {engine} during the \
                 copy, so {}; the first refused: {first} (kernel log: \"{}\")",
                outcome.what(),
                first.message
            ),
            CopyError::FaultedAfterAll { compared } => if *compared {
                "the copy is not verified although the compared bytes match: a refused access \
                 means part of this run's transfer did not land where it was meant to"
            } else {
                "the copy failed (verification was off; it would not have counted either)"
            }
            .to_string(),
            CopyError::Revoked {
                bdf,
                done,
                total,
                why,
            } => format!(
                "{bdf} was revoked during the copy after {done:#x} of {total:#x} bytes ({why}); \
                 the copy stopped"
            ),
            CopyError::NotNvme {
                bdf,
                class,
                vendor,
                device,
            } => format!(
                "{bdf} is not an NVMe controller (class {class:#08x}, ids {vendor:04x}:{device:04x})"
            ),
            CopyError::StorageSides { src, dst } => format!(
                "cannot copy {src} → {dst}: a storage copy moves data between one NVMe namespace \
                 and one BAR or host memory"
            ),
            CopyError::SameDevice { bdf } => format!(
                "SRC and DST are both {bdf}: p2pcopy moves data between two devices"
            ),
            CopyError::Unaligned {
                field, value, page, ..
            } => format!(
                "the {field} {value:#x} is not a multiple of the page size {page:#x}: dma-buf \
                 ranges and DMA engines work in whole pages"
            ),
            CopyError::RegisterBar {
                bdf,
                side,
                bar,
                why,
            } => format!("{bdf} BAR{bar} ({side}) cannot be a copy endpoint: {why}"),
            CopyError::BadPeer { peer } => format!("cannot resolve the RDMA peer {peer:?}"),
            CopyError::BadPeerPort { peer, port } => format!(
                "the RDMA peer {peer:?} names port {port}, which no receiver listens on (ports \
                 are 1 to 65535)"
            ),
            CopyError::PeerMismatch { peer, first, count } => format!(
                "the receiver at {peer} found {count} byte(s) that differ from the pattern, the \
                 first at destination offset {first:#x}"
            ),
            CopyError::PeerFailed { peer } => {
                format!("the receiver at {peer} failed before it could check the bytes")
            }
            CopyError::Nic(e) => e.what(),
            CopyError::ZeroIterations => {
                "the iteration count is 0: nothing would be copied".to_string()
            }
            CopyError::ZeroSize => "the copy size is 0: nothing to copy".to_string(),
            CopyError::NoRoom { at } => format!("nothing to copy: {at}"),
            CopyError::Engine(e) => foreign::what(e),
            CopyError::Exporter(e) => foreign::what(e),
            CopyError::Importer(e) => foreign::what(e),
            CopyError::KernelFeature(e) => foreign::what(e),
            #[cfg(feature = "rdma")]
            CopyError::Rdma(e) => foreign::what(e),
        }
    }

    /// What to do about it, in the library's terms (never a command-line flag: a
    /// binary says which of its flags carries the fix out); `None` where the failure
    /// is the outcome itself (bytes differ, a faulted copy). For an exporter's,
    /// importer's, engine's or RDMA error, the fix its message gives.
    pub fn fix(&self) -> Option<String> {
        let fix = match self {
            CopyError::BarTooSmall { side, .. } => {
                format!("copy less, start lower, or use a larger BAR of the {side}")
            }
            CopyError::BarUnusable { bdf, .. } => format!(
                "leave the BAR out to use the largest usable one, or see `peerdma regions {bdf}`"
            ),
            CopyError::Mismatch { .. } | CopyError::FaultedAfterAll { .. } => return None,
            CopyError::NoUsableBar { bdf } => format!("check `peerdma regions {bdf}`"),
            CopyError::TransportUnavailable { why, .. } => why.fix().to_string(),
            CopyError::DmaFaulted { .. } => "give the engine only IOVAs that its IOAS maps with \
                                             that access (the report's route lists the mappings)"
                .to_string(),
            CopyError::Revoked { .. } => {
                "turn memory decode back on (or wait for the reset) and run again".to_string()
            }
            CopyError::NotNvme { .. } => "name an NVMe controller (class 0x010802) bound to \
                                          vfio-pci as the nvme: side"
                .to_string(),
            CopyError::StorageSides { .. } => "name an nvme: side and a device or host as the \
                                               other (a BAR → BAR copy through a drive goes \
                                               through the DMA path with the controller as its \
                                               engine)"
                .to_string(),
            CopyError::SameDevice { .. } => "name two different BDFs".to_string(),
            CopyError::Unaligned { suggestions, .. } => suggest(suggestions),
            CopyError::RegisterBar { .. } => "pick a BAR that is prefetchable memory, or \
                                              override the register-BAR check if this BAR \
                                              really is plain memory"
                .to_string(),
            CopyError::BadPeer { .. } => {
                "give rdma://IP:PORT (or a host name that resolves)".to_string()
            }
            CopyError::BadPeerPort { .. } => "give the port the receiver printed (p2pcopy \
                                              --serve says \"listening on ADDR:PORT\"), or \
                                              leave it out for the default"
                .to_string(),
            CopyError::PeerMismatch { .. } => "see the receiver's output".to_string(),
            CopyError::PeerFailed { .. } => "see its output".to_string(),
            CopyError::Nic(e) => e.fix(),
            CopyError::ZeroIterations => "give 1 or more".to_string(),
            CopyError::ZeroSize => "give a size such as 1 MiB".to_string(),
            CopyError::NoRoom { .. } => "start lower".to_string(),
            CopyError::Engine(e) => return foreign::fix(e),
            CopyError::Exporter(e) => return foreign::fix(e),
            CopyError::Importer(e) => return foreign::fix(e),
            CopyError::KernelFeature(e) => return foreign::fix(e),
            #[cfg(feature = "rdma")]
            CopyError::Rdma(e) => return foreign::fix(e),
        };
        Some(fix)
    }

    /// Whether [`what`](Self::what) and [`fix`](Self::fix) are this crate's own (not
    /// read from an exporter's, importer's, engine's or RDMA error's message).
    pub fn is_own(&self) -> bool {
        match self {
            CopyError::Engine(_)
            | CopyError::Exporter(_)
            | CopyError::Importer(_)
            | CopyError::KernelFeature(_) => false,
            #[cfg(feature = "rdma")]
            CopyError::Rdma(_) => false,
            _ => true,
        }
    }

    /// The message: what, then `; fix: ` and the fix where there is one.
    fn said(&self) -> String {
        match self.fix() {
            Some(fix) => format!("{}; fix: {fix}", self.what()),
            None => self.what(),
        }
    }

    /// A stable, machine-readable name for this failure, for scripts that branch on it
    /// instead of parsing the message: the variant in snake_case (`bar_too_small`,
    /// `mismatch`, `revoked`), the exporter's or importer's own kind for their errors
    /// (`no_such_device`, `dma_buf_revoked`), and the reason for an unavailable path
    /// (`no_iommufd`). Kinds are never renamed; new variants add new kinds.
    pub fn kind(&self) -> &'static str {
        match self {
            CopyError::BarTooSmall { .. } => "bar_too_small",
            CopyError::BarUnusable { .. } => "bar_unusable",
            CopyError::Mismatch { .. } => "mismatch",
            CopyError::NoUsableBar { .. } => "no_usable_bar",
            CopyError::TransportUnavailable { why, .. } => why.kind(),
            CopyError::Engine(e) => e.kind(),
            CopyError::DmaFaulted { .. } => "dma_faulted",
            CopyError::FaultedAfterAll { .. } => "faulted_after_all",
            CopyError::Exporter(e) => e.kind(),
            CopyError::Importer(e) => e.kind(),
            CopyError::KernelFeature(e) => e.kind(),
            CopyError::Revoked { .. } => "revoked",
            CopyError::NotNvme { .. } => "not_nvme",
            CopyError::StorageSides { .. } => "storage_sides",
            CopyError::SameDevice { .. } => "same_device",
            CopyError::Unaligned { .. } => "unaligned",
            CopyError::RegisterBar { .. } => "register_bar",
            CopyError::BadPeer { .. } => "bad_peer",
            CopyError::BadPeerPort { .. } => "bad_peer_port",
            CopyError::PeerMismatch { .. } => "peer_mismatch",
            CopyError::PeerFailed { .. } => "peer_failed",
            #[cfg(feature = "rdma")]
            CopyError::Rdma(..) => "rdma",
            CopyError::Nic(e) => e.kind(),
            CopyError::ZeroIterations => "zero_iterations",
            CopyError::ZeroSize => "zero_size",
            CopyError::NoRoom { .. } => "no_room",
        }
    }

    /// Whether the request itself is wrong (a zero size or count, the same device on
    /// both sides, two NVMe sides, an unaligned offset, an engine that is also a side,
    /// the RDMA path without a remote peer, a peer port of 0 or past 65535, a UDP
    /// address that is none): the user's input to change, as opposed to
    /// a device or kernel that could not do it.
    pub fn is_usage(&self) -> bool {
        match self {
            CopyError::ZeroIterations
            | CopyError::ZeroSize
            | CopyError::SameDevice { .. }
            | CopyError::BadPeerPort { .. }
            | CopyError::Nic(crate::nic::NicError::BadAddress { .. })
            // The stream's own plan (size, payload, MTU) is the request's; an odd one is
            // refused by a NIC receiver, which is the peer's limit.
            | CopyError::Nic(crate::nic::NicError::Plan(
                crate::nic::PlanError::TooShort { .. }
                | crate::nic::PlanError::PayloadTooSmall { .. }
                | crate::nic::PlanError::PayloadTooLarge { .. }
                | crate::nic::PlanError::Mtu { .. },
            ))
            | CopyError::StorageSides { .. }
            | CopyError::Unaligned { .. } => true,
            CopyError::TransportUnavailable { why, .. } => matches!(
                why,
                Unavailable::EngineIsEndpoint { .. }
                    | Unavailable::RdmaNeedsPeer
                    | Unavailable::RemoteNeedsRdma
            ),
            _ => false,
        }
    }

    /// Whether the copy ran and the destination holds other bytes than the source
    /// sent, or cannot be trusted to hold them (the IOMMU refused some of the engine's
    /// DMA), as opposed to a copy that could not run or stopped.
    pub fn data_differs(&self) -> bool {
        match self {
            CopyError::Mismatch { .. }
            | CopyError::PeerMismatch { .. }
            | CopyError::FaultedAfterAll { .. }
            | CopyError::Nic(crate::nic::NicError::PeerVerdict { .. }) => true,
            CopyError::DmaFaulted { outcome, .. } => outcome.data_differs(),
            _ => false,
        }
    }
}
