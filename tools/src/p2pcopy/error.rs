//! Why a copy could not run or did not finish.

use peerdma_exporter::Bdf;

/// A p2pcopy failure: each names the device, BAR or offset at fault and the fix.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The BAR cannot hold the requested span.
    #[error(
        "{bdf} BAR{bar} is {bar_size:#x} bytes: {offset:#x} + {size:#x} does not fit; \
         fix: lower --size or the offset, or pick a larger BAR with --{side}-bar"
    )]
    BarTooSmall {
        /// Device.
        bdf: Bdf,
        /// src or dst.
        side: &'static str,
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
    #[error(
        "{bdf} BAR{bar} is {why}; fix: leave the BAR out to use the largest usable one, \
         or see `peerdma regions {bdf}`"
    )]
    BarUnusable {
        /// Device.
        bdf: Bdf,
        /// BAR index.
        bar: u32,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The data was not what was written.
    #[error(
        "verification failed: {count} byte(s) differ, the first at destination offset {first:#x}"
    )]
    Mismatch {
        /// First differing offset (relative to --dst-offset).
        first: u64,
        /// How many bytes differ.
        count: u64,
    },
    /// No BAR of the device can take part in a copy.
    #[error(
        "{bdf} has no memory BAR of at least a page that VFIO can mmap and export; \
         fix: check `peerdma regions {bdf}`"
    )]
    NoUsableBar {
        /// Device.
        bdf: Bdf,
    },
    /// The selected engine cannot run here.
    #[error("engine {engine} is unavailable: {why}")]
    EngineUnavailable {
        /// Engine name.
        engine: &'static str,
        /// Why, and the fix.
        why: String,
    },
    /// The DMA engine failed.
    #[error(transparent)]
    Engine(#[from] crate::engines::EngineError),
    /// The exporter library refused or failed.
    #[error(transparent)]
    Exporter(#[from] peerdma_exporter::Error),
    /// The iommufd importer refused or failed.
    #[error(transparent)]
    Importer(#[from] peerdma_importer::iommufd::Error),
    /// A device's memory decode went off (or it was reset) during the copy.
    #[error(
        "{bdf} was revoked during the copy after {done:#x} of {total:#x} bytes ({why}); \
         the copy stopped; fix: turn memory decode back on (or wait for the reset) and run again"
    )]
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
    /// SRC and DST are the same device.
    #[error(
        "SRC and DST are both {bdf}: p2pcopy moves data between two devices; \
         fix: name two different BDFs"
    )]
    SameDevice {
        /// Device.
        bdf: Bdf,
    },
    /// The SIGBUS guard could not be set up.
    #[error(transparent)]
    Guard(#[from] crate::sigbus::GuardError),
    /// An offset or size is not page-aligned.
    #[error(
        "{what} {value:#x} is not a multiple of the page size {page:#x}: dma-buf ranges and DMA \
         engines work in whole pages; fix: use {down:#x} or {up:#x}"
    )]
    Unaligned {
        /// Which option.
        what: &'static str,
        /// Its value.
        value: u64,
        /// Page size.
        page: u64,
        /// Rounded down.
        down: u64,
        /// Rounded up.
        up: u64,
    },
    /// Zero bytes requested.
    #[error("--size is 0: nothing to copy; fix: give a size such as 1M")]
    ZeroSize,
}
