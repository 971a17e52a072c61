//! Engines: devices that move bytes through an IOAS. Each is a PCI function
//! driven from user space through VFIO that copies between bus addresses
//! (IOVAs) on request; the [`iommufd`](crate::iommufd) importer makes the
//! buffers visible to it by mapping them in the IOAS it is attached to.
//!
//! [`DmaEngine`] is what every engine offers: its name, the highest bus
//! address it can reach (its DMA mask), the longest single transfer, and
//! copies IOVA → IOVA, IOVA → its own buffer and its own buffer → IOVA.
//! Engines whose hardware copies only through an internal buffer (QEMU's
//! [`edu`]) get IOVA → IOVA copies from the provided method; engines that copy
//! directly (NVMe copy commands, RDMA) override it.
//!
//! [`DRIVERS`] lists the devices a driver here takes over, by PCI ID, and
//! [`open`] picks the driver for a device; [`AttachedEngine::open`] does the
//! whole setup (bind to an iommufd, take over, IOAS placed for the engine's
//! DMA mask, attach).
//!
//! The IOVAs must be mapped in the IOAS the engine's device is attached to.
//! The [`DmaEngine`] methods are the raw driver operations: an engine cannot tell
//! whether a DMA landed (edu's faults are silent), so they return `Ok` even when
//! the IOMMU refused every access. [`AttachedEngine::copy`] is the checked copy:
//! it checks both mappings before and after, and fails when the kernel logged an
//! IOMMU fault for the engine meanwhile.

mod attached;
pub mod edu;
pub mod nvme;

use std::time::Duration;

use peerdma_exporter::Device;
use peerdma_host::Bdf;
use peerdma_uapi::pci::{PCI_DEVICE_ID, PCI_VENDOR_ID};

pub use attached::{AttachedEngine, Span};
pub use edu::Edu;
pub use nvme::{Nvme, NvmeOptions};

/// A device a driver in this module takes over, by PCI ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Driver {
    /// PCI vendor id.
    pub vendor: u16,
    /// PCI device id.
    pub device: u16,
    /// What the device is, for messages ("QEMU edu").
    pub name: &'static str,
    /// The BAR holding its registers: never a copy endpoint.
    pub register_bar: u32,
}

/// Every device an engine driver here drives. NVMe controllers of other vendors are
/// taken by class code (see [`is_nvme_class`]); QEMU's is listed so that engine
/// discovery by id finds it.
pub const DRIVERS: &[Driver] = &[
    Driver {
        vendor: edu::EDU_VENDOR,
        device: edu::EDU_DEVICE,
        name: "QEMU edu",
        register_bar: 0,
    },
    Driver {
        vendor: nvme::QEMU_NVME_VENDOR,
        device: nvme::QEMU_NVME_DEVICE,
        name: "NVMe (QEMU nvme)",
        register_bar: 0,
    },
];

/// Whether a PCI class code (24 bits) is an NVMe controller's.
pub fn is_nvme_class(class: u32) -> bool {
    class == nvme::NVME_CLASS
}

/// Options for the drivers that take any ([`open_with`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineOptions {
    /// For NVMe controllers.
    pub nvme: NvmeOptions,
}

/// The driver for a device with these PCI ids, if there is one.
pub fn driver_for(vendor: u16, device: u16) -> Option<&'static Driver> {
    DRIVERS
        .iter()
        .find(|d| (d.vendor, d.device) == (vendor, device))
}

/// Takes over `device` with the driver its PCI ids call for.
///
/// # Errors
///
/// [`EngineError::Device`] when config space cannot be read,
/// [`EngineError::NoDriver`] for a device no driver here takes, and the
/// driver's own errors (for edu: [`Edu::open`]'s).
pub fn open(device: &Device) -> Result<Box<dyn DmaEngine + Send>> {
    open_with(device, &EngineOptions::default())
}

/// [`open`] with driver options.
///
/// # Errors
///
/// As [`open`]; for NVMe controllers [`Nvme::open`]'s errors as [`EngineError::Nvme`].
pub fn open_with(device: &Device, opts: &EngineOptions) -> Result<Box<dyn DmaEngine + Send>> {
    let bdf = device.bdf();
    let dev_err = |source| EngineError::Device {
        engine: bdf.to_string(),
        source,
    };
    let vendor = device.config_read_u16(PCI_VENDOR_ID).map_err(dev_err)?;
    let device_id = device.config_read_u16(PCI_DEVICE_ID).map_err(dev_err)?;
    let class = device.config_read_u32(0x08).map_err(dev_err)? >> 8;
    if is_nvme_class(class) {
        return Ok(Box::new(Nvme::open(device, opts.nvme)?));
    }
    match driver_for(vendor, device_id) {
        Some(d) if (d.vendor, d.device) == (edu::EDU_VENDOR, edu::EDU_DEVICE) => {
            Ok(Box::new(Edu::open(device)?))
        }
        _ => Err(EngineError::NoDriver {
            bdf,
            vendor,
            device: device_id,
        }),
    }
}

/// Result type of the engines.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// What a transfer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferReport {
    /// Bytes moved from the source to the destination (a copy through the engine's
    /// buffer moves each byte once, though the device transfers it twice).
    pub bytes: u64,
    /// Device transfers issued (a copy through a buffer takes two per chunk).
    pub transfers: u32,
    /// Wall time from the first start to the last completion.
    pub elapsed: Duration,
    /// IOMMU faults the kernel logged for the engine during the transfer: `Some(0)`
    /// from a checked copy ([`AttachedEngine::copy`]) that found none (it fails on
    /// any); `None` where nobody looked (the raw [`DmaEngine`] methods) or the kernel
    /// log could not be read.
    pub iommu_faults: Option<u64>,
}

impl TransferReport {
    /// Adds another report's work (bytes included: for transfers in sequence).
    pub fn add(&mut self, other: TransferReport) {
        self.bytes += other.bytes;
        self.transfers += other.transfers;
        self.elapsed += other.elapsed;
    }
}

/// A device that DMAs between bus addresses on request.
pub trait DmaEngine {
    /// A short name for messages ("edu 0000:00:05.0").
    fn name(&self) -> String;

    /// The highest bus address the engine can reach (inclusive), e.g.
    /// `(1 << 28) - 1` for a 28-bit mask. IOVAs must stay at or below it.
    fn dma_mask(&self) -> u64;

    /// The longest single device transfer, in bytes.
    fn max_transfer(&self) -> u64;

    /// Size of the engine's own buffer (0: it has none).
    fn buffer_size(&self) -> u64 {
        0
    }

    /// Called once the engine's device is attached to `ioas`, before any transfer:
    /// engines whose queues live in host memory (NVMe) map them there and start.
    ///
    /// # Errors
    ///
    /// The driver's start-up errors (the provided method has none).
    fn start_in(&mut self, ioas: &crate::iommufd::Ioas) -> Result<()> {
        let _ = ioas;
        Ok(())
    }

    /// Device passes one IOVA → IOVA [`copy`](Self::copy) takes: 1 for a direct copy,
    /// 2 for one through an intermediate (edu's buffer counts as internal: 1; an NVMe
    /// namespace: 2, a Write then a Read).
    fn steps_per_copy(&self) -> u32 {
        1
    }

    /// The NVMe driver behind this engine, for storage transfers.
    fn as_nvme_mut(&mut self) -> Option<&mut Nvme> {
        None
    }

    /// Load: DMA `len` bytes from IOVA `src` into the engine's buffer at `offset`.
    ///
    /// # Errors
    ///
    /// [`EngineError::Unsupported`] for an engine without a buffer (the
    /// provided method); a driver's transfer errors otherwise.
    fn load(&mut self, src: u64, offset: u64, len: u64) -> Result<TransferReport> {
        let _ = (src, offset, len);
        Err(EngineError::Unsupported {
            engine: self.name(),
            what: "transfers to an engine buffer",
        })
    }

    /// Store: DMA `len` bytes from the engine's buffer at `offset` to IOVA `dst`.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load).
    fn store(&mut self, offset: u64, dst: u64, len: u64) -> Result<TransferReport> {
        let _ = (offset, dst, len);
        Err(EngineError::Unsupported {
            engine: self.name(),
            what: "transfers from an engine buffer",
        })
    }

    /// Copies `len` bytes from IOVA `src` to IOVA `dst`. The provided method
    /// goes through the engine's buffer in chunks of
    /// `min(buffer_size, max_transfer)`.
    ///
    /// # Errors
    ///
    /// [`EngineError::ZeroLength`] and [`EngineError::AddressOverMask`] from
    /// the span checks, [`EngineError::Unsupported`] for an engine with
    /// neither a buffer nor a direct copy, and [`load`](Self::load) /
    /// [`store`](Self::store)'s errors.
    fn copy(&mut self, src: u64, dst: u64, len: u64) -> Result<TransferReport> {
        check_span(&self.name(), src, len, self.dma_mask())?;
        check_span(&self.name(), dst, len, self.dma_mask())?;
        let chunk = self.buffer_size().min(self.max_transfer());
        if chunk == 0 {
            return Err(EngineError::Unsupported {
                engine: self.name(),
                what: "copies (no buffer and no direct copy)",
            });
        }
        let mut report = TransferReport::default();
        let mut done = 0;
        while done < len {
            let n = chunk.min(len - done);
            report.add(self.load(src + done, 0, n)?);
            report.add(self.store(0, dst + done, n)?);
            done += n;
        }
        // A load and a store move each byte once from source to destination.
        report.bytes = done;
        Ok(report)
    }
}

/// Checks that `addr..addr+len` is a non-empty span under `mask`.
///
/// # Errors
///
/// [`EngineError::ZeroLength`] for `len == 0`, [`EngineError::AddressOverMask`]
/// when the span's last byte is above `mask` (or the span wraps).
pub fn check_span(engine: &str, addr: u64, len: u64, mask: u64) -> Result<()> {
    if len == 0 {
        return Err(EngineError::ZeroLength {
            engine: engine.to_string(),
        });
    }
    match addr.checked_add(len - 1) {
        Some(last) if last <= mask => Ok(()),
        _ => Err(EngineError::AddressOverMask {
            engine: engine.to_string(),
            addr,
            len,
            mask,
        }),
    }
}

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
    #[error("{}", crate::said_once(engine, source))]
    Device {
        /// Engine.
        engine: String,
        /// The exporter library's error.
        #[source]
        source: peerdma_exporter::Error,
    },

    /// The IOAS the engine DMAs through could not be set up (iommufd, IOAS,
    /// attach).
    #[error("{}", crate::said_once(engine, source))]
    Iommufd {
        /// Engine.
        engine: String,
        /// The iommufd importer's error.
        #[source]
        source: crate::iommufd::Error,
    },

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
        known = DRIVERS
            .iter()
            .map(|d| format!("{} {:04x}:{:04x}", d.name, d.vendor, d.device))
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
    Nvme(Box<nvme::NvmeError>),

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
            EngineError::Iommufd { source, .. } => source.kind(),
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
