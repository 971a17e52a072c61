//! DMA engines: devices that copy bytes between bus addresses (IOVAs) on
//! request, driven from user space through VFIO.
//!
//! [`DmaEngine`] is what every engine offers: its name, the highest bus
//! address it can reach (its DMA mask), the longest single transfer, and
//! copies IOVA → IOVA, IOVA → its own buffer and its own buffer → IOVA.
//! Engines whose hardware copies only through an internal buffer (QEMU's
//! [`edu`]) get IOVA → IOVA copies from the provided method; engines that copy
//! directly (NVMe copy commands, RDMA) override it.
//!
//! The IOVAs must be mapped in the IOAS the engine's device is attached to
//! (see `peerdma_importer::iommufd`); an engine cannot tell whether a DMA
//! landed (edu's faults are silent), so callers check the bytes.

pub mod edu;

use std::time::Duration;

use peerdma_exporter::Bdf;

pub use edu::Edu;

/// Result type of the engines.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// What a transfer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferReport {
    /// Bytes moved.
    pub bytes: u64,
    /// Device transfers issued (a copy through a buffer takes two per chunk).
    pub transfers: u32,
    /// Wall time from the first start to the last completion.
    pub elapsed: Duration,
}

impl TransferReport {
    /// Adds another report's work.
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

    /// Load: DMA `len` bytes from IOVA `src` into the engine's buffer at `offset`.
    fn load(&mut self, src: u64, offset: u64, len: u64) -> Result<TransferReport> {
        let _ = (src, offset, len);
        Err(EngineError::Unsupported {
            engine: self.name(),
            what: "transfers to an engine buffer",
        })
    }

    /// Store: DMA `len` bytes from the engine's buffer at `offset` to IOVA `dst`.
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
        Ok(report)
    }
}

/// Checks that `addr..addr+len` is a non-empty span under `mask`.
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
    #[error("{engine}: {source}")]
    Device {
        /// Engine.
        engine: String,
        /// The exporter library's error.
        #[source]
        source: peerdma_exporter::Error,
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
