//! The DRM importer's one error type. Each variant names the card (node, driver,
//! BDF), what was attempted, the errno, and a `fix`. Variants are sorted by name.

use std::path::PathBuf;

use peerdma_exporter::RevokeReason;
use peerdma_host::p2pdma::P2pVerdict;
use peerdma_host::Bdf;
use rustix::io::Errno;

/// Result type of the DRM importer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong importing a dma-buf into DRM and scanning it out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The framebuffer's layout is invalid on its own (zero size, a pitch shorter than
    /// a row or wider than 32 bits).
    #[error("a {width}x{height} {format} framebuffer with pitch {pitch} is invalid: {fix}")]
    BadLayout {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// The fourcc, as text.
        format: String,
        /// Bytes per row.
        pitch: u32,
        /// What to change.
        fix: String,
    },

    /// A DRM ioctl failed where no more specific variant applies.
    #[error("{op} on {card} failed: {}", errno_text(*errno))]
    Ioctl {
        /// The card, as [`Card::describe`](super::Card::describe) writes it.
        card: String,
        /// The ioctl.
        op: &'static str,
        /// The kernel's answer.
        errno: Errno,
    },

    /// The framebuffer does not fit the buffer; checked before
    /// `DRM_IOCTL_MODE_ADDFB2`.
    #[error(
        "a {width}x{height} {format} framebuffer with pitch {pitch} needs {needed} bytes, \
         the buffer has {size}: {fix}"
    )]
    Layout {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// The fourcc, as text.
        format: String,
        /// Bytes per row.
        pitch: u32,
        /// `offset + (height - 1) * pitch + width * bytes_per_pixel` (`u64::MAX` when
        /// that overflows).
        needed: u64,
        /// The buffer's size.
        size: u64,
        /// What to change.
        fix: String,
    },

    /// No DRM card matches a BDF or driver name.
    #[error("no DRM card is {wanted}; cards: {cards}")]
    NoCard {
        /// What was asked for.
        wanted: String,
        /// The cards sysfs lists, with driver and BDF.
        cards: String,
    },

    /// No connected connector with a mode that fits the framebuffer.
    #[error("{card}: nothing to show a {width}x{height} framebuffer on: {fix}")]
    NoDisplay {
        /// The card.
        card: String,
        /// Framebuffer width.
        width: u32,
        /// Framebuffer height.
        height: u32,
        /// What exists, and what to change.
        fix: String,
    },

    /// The driver cannot import dma-bufs at all (`DRM_CAP_PRIME` lacks import).
    #[error("{card} cannot import dma-bufs (DRM_CAP_PRIME has no DRM_PRIME_CAP_IMPORT): {fix}")]
    NoPrimeImport {
        /// The card.
        card: String,
        /// The drivers that can.
        fix: String,
    },

    /// A mode-setting ioctl answered EACCES: another process is DRM master of the
    /// card (drm_ioctl's DRM_MASTER check, drivers/gpu/drm/drm_ioctl.c).
    #[error(
        "{op} on {card} failed: EACCES: another process is DRM master of the card ({holders}); \
         fix: stop it (a display server or compositor: switch to a text VT or stop its \
         service), then run again"
    )]
    NotMaster {
        /// The card.
        card: String,
        /// The ioctl.
        op: &'static str,
        /// Who else holds the card's node open (from /proc/*/fd).
        holders: String,
    },

    /// The exporter refused the driver's attachment (EOPNOTSUPP): the driver does
    /// not attach peer-to-peer and revocably.
    #[error("{card} refused the dma-buf{exporter_text}: {errno_text}; {fix}",
            errno_text = errno_text(*errno),
            exporter_text = exporter.map(|b| format!(" of {b}")).unwrap_or_default())]
    NotPeerToPeer {
        /// The card.
        card: String,
        /// The DRM driver.
        driver: String,
        /// The exporting device, when known.
        exporter: Option<Bdf>,
        /// EOPNOTSUPP.
        errno: Errno,
        /// Why, and the drivers that can.
        fix: String,
    },

    /// Opening the node failed.
    #[error("opening {}: {}; {fix}", path.display(), errno_text(*errno))]
    Open {
        /// The node.
        path: PathBuf,
        /// The kernel's answer.
        errno: Errno,
        /// What to do.
        fix: String,
    },

    /// The kernel's P2P distance check refused to map the peer BAR for the GPU
    /// (EINVAL; dmesg: "do not share an upstream bridge or whitelisted host
    /// bridge").
    #[error(
        "{card} cannot map the BAR of {exporter_text} peer-to-peer: {errno_text} (the \
         kernel's P2P distance check: \"do not share an upstream bridge or whitelisted host \
         bridge\"); {fix}",
        errno_text = errno_text(*errno),
        exporter_text = exporter.map(|b| b.to_string()).unwrap_or_else(|| "the exporter".into())
    )]
    P2pDistance {
        /// The card.
        card: String,
        /// The GPU's PCI function.
        gpu: Option<Bdf>,
        /// The exporting device.
        exporter: Option<Bdf>,
        /// What `peerdma path` (`Sysfs::p2p_route`) predicts for this pair.
        verdict: Option<P2pVerdict>,
        /// EINVAL.
        errno: Errno,
        /// The topology that works.
        fix: String,
    },

    /// `DRM_IOCTL_PRIME_FD_TO_HANDLE` failed for another reason.
    #[error("PRIME import into {card} failed: {}; {fix}", errno_text(*errno))]
    PrimeImport {
        /// The card.
        card: String,
        /// The kernel's answer.
        errno: Errno,
        /// What to check.
        fix: String,
    },

    /// The buffer is revoked: the exporter's device has memory decode off, is
    /// reset, in D3hot or closed; the scanout lost its pages.
    #[error("the dma-buf{exporter_text} is revoked{reason_text}: {fix}",
            exporter_text = exporter.map(|b| format!(" of {b}")).unwrap_or_default(),
            reason_text = reason.map(|r| format!(" ({r})")).unwrap_or_default())]
    Revoked {
        /// The card.
        card: String,
        /// The exporting device.
        exporter: Option<Bdf>,
        /// Why, when the exporter says.
        reason: Option<RevokeReason>,
        /// What to do.
        fix: String,
    },

    /// The framebuffer format is not a single-plane RGB format this importer knows.
    #[error("format {format}: {fix}")]
    UnsupportedFormat {
        /// The fourcc text.
        format: String,
        /// The formats that work.
        fix: String,
    },
}

/// `EOPNOTSUPP (Operation not supported)`: the kernel's name and the C library's text.
pub fn errno_text(errno: Errno) -> String {
    let name = match errno {
        Errno::OPNOTSUPP => "EOPNOTSUPP",
        Errno::INVAL => "EINVAL",
        Errno::NODEV => "ENODEV",
        Errno::NOENT => "ENOENT",
        Errno::ACCESS => "EACCES",
        Errno::PERM => "EPERM",
        Errno::NOSYS => "ENOSYS",
        Errno::BUSY => "EBUSY",
        Errno::NOMEM => "ENOMEM",
        Errno::FAULT => "EFAULT",
        Errno::NOSPC => "ENOSPC",
        Errno::IO => "EIO",
        _ => return format!("errno {} ({errno})", errno.raw_os_error()),
    };
    let text = errno.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    format!("{name} ({text})")
}

impl Error {
    /// The kernel's errno, where there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Ioctl { errno, .. }
            | Error::NotPeerToPeer { errno, .. }
            | Error::Open { errno, .. }
            | Error::P2pDistance { errno, .. }
            | Error::PrimeImport { errno, .. } => Some(*errno),
            Error::Revoked { .. } => Some(Errno::NODEV),
            _ => None,
        }
    }
}
