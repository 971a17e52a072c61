//! [`DmaEngine`]: what every engine offers, and [`TransferReport`], what a transfer did.

use std::time::Duration;

use peerdma_importer::iommufd::Ioas;

use crate::error::{EngineError, Result};
use crate::nvme::Nvme;

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
    /// from a checked copy ([`AttachedEngine::copy`](crate::AttachedEngine::copy)) that found none (it fails on
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

    /// Called once the engine's device is attached to `ioas`, before any transfer:
    /// engines whose queues live in host memory (NVMe) map them there and start.
    ///
    /// # Errors
    ///
    /// The driver's start-up errors (the provided method has none).
    fn start_in(&mut self, ioas: &Ioas) -> Result<()> {
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

    /// The 82576 NIC driver behind this engine, for frames of its own (a NIC stream:
    /// [`Igb::transmit`](crate::Igb::transmit), [`Igb::poll_rx`](crate::Igb::poll_rx)).
    fn as_igb_mut(&mut self) -> Option<&mut crate::Igb> {
        None
    }

    /// Copies `len` bytes from IOVA `src` to IOVA `dst` with the device's DMA: directly
    /// (NVMe: a Write from `src`, then a Read into `dst`), or through the device's own
    /// buffer in chunks ([`Edu`](crate::Edu)).
    ///
    /// # Errors
    ///
    /// [`EngineError::ZeroLength`] and [`EngineError::AddressOverMask`] from the span
    /// checks ([`check_span`]), and the driver's transfer errors.
    fn copy(&mut self, src: u64, dst: u64, len: u64) -> Result<TransferReport>;
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
