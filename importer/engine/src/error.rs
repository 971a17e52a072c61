//! [`EngineError`]: everything that can go wrong driving an engine, each variant
//! naming the engine and, where there is one, the fix.

use std::time::Duration;

use peerdma_host::Bdf;

use crate::id::ENGINES;
use crate::nvme::NvmeError;

/// Result type of the engines.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Everything that can go wrong driving an engine. Variants are sorted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A bus address span reaches past the engine's DMA mask: the device would
    /// truncate the address and DMA somewhere else.
    #[error(
        "{engine}: bus address {addr:#x}+{len:#x} reaches past the DMA mask {mask:#x}; the \
         device would truncate it; fix: map the buffer at a lower IOVA (Placement limit)"
    )]
    AddressOverMask {
        /// Engine.
        engine: String,
        /// Start address.
        addr: u64,
        /// Length.
        len: u64,
        /// DMA mask.
        mask: u64,
    },

    /// A span of the engine's buffer past its end.
    #[error(
        "{engine}: buffer span {offset:#x}+{len:#x} is past the end of its {size:#x}-byte buffer"
    )]
    BufferBounds {
        /// Engine.
        engine: String,
        /// Offset.
        offset: u64,
        /// Length.
        len: u64,
        /// Buffer size.
        size: u64,
    },

    /// The VFIO device could not be used (config space, BAR mapping...).
    #[error("{}", said_once(engine, source))]
    Device {
        /// Engine.
        engine: String,
        /// The exporter library's error.
        #[source]
        source: peerdma_exporter::Error,
    },

    /// The igb (Intel 82576) driver failed.
    #[error(transparent)]
    Igb(Box<crate::igb::IgbError>),

    /// The IOAS the engine DMAs through could not be set up (iommufd, IOAS,
    /// attach).
    #[error("{}", said_once(engine, source))]
    Iommufd {
        /// Engine.
        engine: String,
        /// The iommufd importer's error.
        #[source]
        source: peerdma_importer::iommufd::Error,
    },

    /// The kernel's nvme driver, driven through io_uring into a dma-buf, failed.
    #[error(transparent)]
    KernelNvme(Box<crate::kernel_nvme::KernelNvmeError>),

    /// A side of a checked copy that DMA does not reach: it is mapped in another
    /// IOAS, the span runs past the mapping, the mapping lacks the access the copy
    /// needs, or it is not live (revoked, waiting for a remap, unmapped).
    #[error("{engine}: the {side} {why}; nothing was copied; fix: {fix}")]
    MappingUnusable {
        /// Engine.
        engine: String,
        /// "source" or "destination".
        side: &'static str,
        /// What is wrong, in words.
        why: String,
        /// What to do.
        fix: &'static str,
    },

    /// No driver here takes this device.
    #[error(
        "{bdf} ({vendor:04x}:{device:04x}) is not a DMA engine this library drives; fix: name \
         one of: {known}",
        known = ENGINES
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )]
    NoDriver {
        /// Device.
        bdf: Bdf,
        /// PCI vendor id.
        vendor: u16,
        /// PCI device id.
        device: u16,
    },

    /// The device is not the engine the driver drives.
    #[error(
        "{bdf}: not a QEMU edu device (vendor:device {vendor:04x}:{device:04x}, identity \
         register {identity}); fix: pass the edu device's BDF (QEMU -device edu, 1234:11e8)",
        identity = .identity.map_or_else(|| "not read".to_string(), |v| format!("{v:#010x}"))
    )]
    NotEdu {
        /// Device.
        bdf: Bdf,
        /// PCI vendor id.
        vendor: u16,
        /// PCI device id.
        device: u16,
        /// BAR0 offset 0, when the ids matched.
        identity: Option<u32>,
    },

    /// The IOMMU refused the engine's DMA during a checked copy (the kernel logged
    /// it), or a side's mapping was revoked under the copy: whatever the engine
    /// reported, the bytes did not all land.
    #[error(
        "{engine}: the copy of {len:#x} bytes did not land: {cause}; fix: {fix}",
        fix = if .faults.is_empty() {
            "bring the device back (memory decode on, the reset over), remap the \
             mapping and copy again"
        } else {
            "give the engine only IOVAs its IOAS maps with the access it needs, and \
             check the device was not revoked"
        }
    )]
    NotLanded {
        /// Engine.
        engine: String,
        /// Bytes asked for.
        len: u64,
        /// The fault(s) or revoke, in words.
        cause: String,
        /// The faults the kernel logged for the engine (the IOMMU drivers rate-limit:
        /// a lower bound); empty when a revoke is the cause.
        faults: Vec<peerdma_host::fault_log::IommuFault>,
    },

    /// The NVMe driver failed.
    #[error(transparent)]
    Nvme(Box<NvmeError>),

    /// The engine did not report completion in time.
    #[error(
        "{engine}: {what} did not complete within {after:?} (command register {cmd:#x}); the \
         device may be wedged; its DMA errors are silent, so check the bytes"
    )]
    Timeout {
        /// Engine.
        engine: String,
        /// What was waited for.
        what: &'static str,
        /// How long.
        after: Duration,
        /// Last command register value.
        cmd: u64,
    },

    /// A transfer longer than the engine takes in one go.
    #[error("{engine}: a {len:#x}-byte transfer is longer than its maximum {max:#x}")]
    TooLong {
        /// Engine.
        engine: String,
        /// Length asked.
        len: u64,
        /// Maximum.
        max: u64,
    },

    /// The engine cannot do this.
    #[error("{engine} does not support {what}")]
    Unsupported {
        /// Engine.
        engine: String,
        /// What.
        what: &'static str,
    },

    /// A zero-length transfer.
    #[error("{engine}: a transfer needs a non-zero length")]
    ZeroLength {
        /// Engine.
        engine: String,
    },
}

impl EngineError {
    /// A stable, machine-readable name for this error: the variant in snake_case
    /// (`not_landed`, `mapping_unusable`), or the NVMe driver's, exporter's or
    /// importer's own kind for theirs. Kinds are never renamed.
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::AddressOverMask { .. } => "address_over_mask",
            EngineError::BufferBounds { .. } => "buffer_bounds",
            EngineError::Device { source, .. } => source.kind(),
            EngineError::Igb(e) => e.kind(),
            EngineError::Iommufd { source, .. } => source.kind(),
            EngineError::KernelNvme(e) => e.kind(),
            EngineError::MappingUnusable { .. } => "mapping_unusable",
            EngineError::NoDriver { .. } => "no_driver",
            EngineError::NotEdu { .. } => "not_edu",
            EngineError::NotLanded { .. } => "not_landed",
            EngineError::Nvme(e) => e.kind(),
            EngineError::Timeout { .. } => "engine_timeout",
            EngineError::TooLong { .. } => "too_long",
            EngineError::Unsupported { .. } => "unsupported",
            EngineError::ZeroLength { .. } => "zero_length",
        }
    }
}

/// `subject: cause`, or the cause alone where it already starts with the subject (an
/// exporter error names its BDF first): the BDF said once.
pub(crate) fn said_once(subject: &str, cause: &dyn std::fmt::Display) -> String {
    let cause = cause.to_string();
    if cause.starts_with(subject) {
        cause
    } else {
        format!("{subject}: {cause}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cause_that_names_the_subject_first_is_not_prefixed_again() {
        let bdf = "0000:00:12.0";
        assert_eq!(
            super::said_once(bdf, &"0000:00:12.0 is in use: pid 86"),
            "0000:00:12.0 is in use: pid 86"
        );
        assert_eq!(
            super::said_once(bdf, &"config read failed"),
            "0000:00:12.0: config read failed"
        );
    }
}
