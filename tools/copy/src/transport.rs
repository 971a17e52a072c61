//! How the bytes move: the [`Transport`] trait every transport implements, the
//! [`TransportChoice`] a request makes, and the choice itself. ("Path" is the VFIO
//! access path; a transport is what moves the bytes.)
//!
//! - [`CpuMmap`](super::CpuMmap): the CPU copies between the two BARs' VFIO
//!   mmaps;
//! - [`Dma`](super::Dma): both spans exported as dma-bufs, mapped by the
//!   iommufd importer into the IOAS of an engine (a device that moves bytes,
//!   `peerdma_importer::engine`), which DMAs from one IOVA to the other;
//! - the NVMe stream of a storage copy (`run_storage`): the controller's Reads or
//!   Writes between its namespace and a BAR or host memory;
//! - RDMA: to another host's memory only, through the `rdma` module (feature
//!   `rdma`: `send`/`serve`), not a [`Transport`] between two local BARs.

use std::fmt;

use peerdma_host::sysfs::Sysfs;
use peerdma_host::Bdf;
use serde::Serialize;

use super::dma;
use super::{CopyError, Endpoint, Progress, Unavailable};

/// How a request wants the bytes moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportChoice {
    /// The best transport available (today the CPU: the only DMA engine, QEMU's
    /// edu, is far slower).
    Auto,
    /// The CPU through the two BARs' VFIO mmaps.
    CpuMmap,
    /// A DMA engine through an iommufd IOAS; `engine` names the engine device
    /// (`None`: the one supported engine bound to vfio-pci).
    Dma {
        /// The engine device.
        engine: Option<Bdf>,
    },
    /// An RDMA NIC: only towards a peer (the `rdma` module, feature `rdma`);
    /// between two local devices an explained error.
    Rdma,
}

/// Which transport a copy took.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    /// The CPU through the VFIO mmaps.
    CpuMmap,
    /// A DMA engine through an iommufd IOAS.
    Dma,
    /// An NVMe controller's Reads, namespace → memory (a storage copy).
    NvmeRead,
    /// An NVMe controller's Writes, memory → namespace (a storage copy).
    NvmeWrite,
    /// An RDMA NIC's WRITEs into a peer's memory region (the receiver checks).
    RdmaWrite,
    /// The kernel's nvme driver reading a raw namespace into a dma-buf through io_uring
    /// (`blk:` side; kernel series "Add dmabuf read/write via io_uring").
    BlkRead,
    /// The kernel's nvme driver writing a raw namespace from a dma-buf through io_uring.
    BlkWrite,
}

impl TransportKind {
    /// What moved the bytes, as `--engine` spells it (the JSON `engine` key): `cpu`,
    /// `dma`, `nvme` or `rdma`.
    pub fn engine_name(self) -> &'static str {
        match self {
            TransportKind::CpuMmap => "cpu",
            TransportKind::Dma => "dma",
            TransportKind::NvmeRead
            | TransportKind::NvmeWrite
            | TransportKind::BlkRead
            | TransportKind::BlkWrite => "nvme",
            TransportKind::RdmaWrite => "rdma",
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::CpuMmap => "cpu-mmap",
            TransportKind::Dma => "dma",
            TransportKind::NvmeRead => "nvme-read",
            TransportKind::NvmeWrite => "nvme-write",
            TransportKind::RdmaWrite => "rdma-write",
            TransportKind::BlkRead => "blk-read",
            TransportKind::BlkWrite => "blk-write",
        })
    }
}

/// One side of a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The source.
    Src,
    /// The destination.
    Dst,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Src => "source",
            Side::Dst => "destination",
        })
    }
}

/// Why a step of a [`Transport`] stopped.
#[derive(Debug)]
pub enum StepError {
    /// A side's BAR was revoked (memory decode off, reset): nothing more can
    /// move. The orchestration turns this into [`CopyError::Revoked`].
    Revoked(Side),
    /// The transport failed.
    Failed(CopyError),
}

impl From<CopyError> for StepError {
    fn from(e: CopyError) -> Self {
        StepError::Failed(e)
    }
}

/// A way of moving bytes from the source span to the destination span, set
/// up and ready. The copy's harness drives it in steps of at most
/// [`max_step`](Self::max_step) bytes; progress and revokes are checked
/// between steps.
pub trait Transport {
    /// Which transport this is.
    fn kind(&self) -> TransportKind;

    /// The device that moves the bytes, for the report (`None`: the CPU).
    fn engine(&self) -> Option<String>;

    /// The longest step, in bytes.
    fn max_step(&self) -> u64;

    /// The IOAS mappings the engine addresses, per side: `(side, IOVA,
    /// length)` (none for a transport without an IOAS).
    fn ioas_mappings(&self) -> Vec<(Side, u64, u64)> {
        Vec::new()
    }

    /// Moves bytes `offset..offset + len` of the span (offsets relative to
    /// each side's start); `at`: the bytes moved before this step, of all
    /// iterations, and the total (for an error that says how far the copy got).
    ///
    /// # Errors
    ///
    /// [`StepError::Revoked`] when a side was revoked during the step,
    /// [`StepError::Failed`] when the transport itself failed.
    fn step(&mut self, offset: u64, len: u64, at: Progress) -> Result<(), StepError>;
}

/// The transport a request gets, before it is set up.
#[derive(Clone, Debug)]
pub(super) struct Chosen {
    pub(super) kind: TransportKind,
    pub(super) engine: Option<Bdf>,
    /// Whether a copy without a size moves a small default span rather than the whole
    /// BAR: for edu (4 KiB per ~100 ms) and an NVMe engine (its staging range may be
    /// smaller than the BAR), not for a NIC (any number of datagrams).
    pub(super) small_default: bool,
    pub(super) reason: String,
}

/// Picks the transport (and, for DMA, its engine device) and says why.
pub(super) fn choose(
    choice: TransportChoice,
    src: &Endpoint,
    dst: &Endpoint,
) -> Result<Chosen, CopyError> {
    let ends = [src.bdf(), dst.bdf()];
    match choice {
        TransportChoice::CpuMmap => Ok(Chosen {
            kind: TransportKind::CpuMmap,
            engine: None,
            small_default: false,
            reason: "requested: the CPU through the VFIO mmaps".into(),
        }),
        TransportChoice::Dma { engine } => {
            dma::available()?;
            let sys = Sysfs::system();
            let (bdf, why) = dma::find_engine(&sys, engine, &ends)?;
            let id = dma::engine_id(&sys, bdf);
            let nic = id.is_some_and(|e| e.is_nic());
            Ok(Chosen {
                kind: TransportKind::Dma,
                engine: Some(bdf),
                small_default: !nic,
                reason: format!(
                    "requested: DMA through iommufd; engine device {bdf} ({why}){}",
                    if id == Some(&peerdma_engine::EngineId::NVME) {
                        "; an NVMe controller copies BAR → BAR in two steps through its namespace"
                    } else if nic {
                        "; a NIC in loopback: UDP datagrams to itself, its TX DMA reading the \
                         source, its RX header split writing the destination"
                    } else {
                        ""
                    }
                ),
            })
        }
        TransportChoice::Rdma => Err(CopyError::TransportUnavailable {
            transport: "rdma",
            why: if cfg!(feature = "rdma") {
                Unavailable::RdmaNeedsPeer
            } else {
                Unavailable::RdmaNotBuilt
            },
        }),
        TransportChoice::Auto => {
            // The only DMA engine supported so far (QEMU's edu) moves ~40 KB/s: the CPU
            // is faster whenever it can map both BARs, so auto prefers it and says so.
            let dma =
                dma::available().and_then(|()| dma::find_engine(&Sysfs::system(), None, &ends));
            let reason = match dma {
                Ok((bdf, _)) => format!(
                    "auto: the CPU, because the only DMA engine found ({bdf}, QEMU edu) moves \
                     4 KiB per ~100 ms; the DMA path uses it when asked for"
                ),
                Err(CopyError::TransportUnavailable { why, .. }) => format!(
                    "auto: the CPU; the DMA path is unavailable ({})",
                    why.what()
                ),
                Err(e) => format!("auto: the CPU; the DMA path is unavailable ({})", e.what()),
            };
            Ok(Chosen {
                kind: TransportKind::CpuMmap,
                engine: None,
                small_default: false,
                reason,
            })
        }
    }
}
