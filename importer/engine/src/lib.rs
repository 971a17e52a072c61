//! The user-space drivers of the devices that move bytes (DMA engines): edu, NVMe and
//! a NIC (igb).
//!
//! Each engine is a PCI function driven from user space through VFIO that copies
//! between bus addresses (IOVAs) on request; the iommufd importer
//! (`peerdma_importer::iommufd`) makes the buffers visible to it by mapping them in
//! the IOAS it is attached to.
//!
//! - [`DmaEngine`] ([`dma_engine`]): what every engine offers: its name, the highest
//!   bus address it can reach (its DMA mask), the longest single transfer, start-up in
//!   the IOAS, and IOVA → IOVA copies (through the device's own buffer for QEMU's
//!   [`edu`], whose `load`/`store` are its own methods; a Write then a Read for NVMe);
//! - [`EngineId`] ([`id`]): the devices a driver here takes over, by PCI id or class
//!   code, in one table ([`ENGINES`]); [`open`] picks the driver from that table;
//! - [`AttachedEngine`]: the whole setup (bind to an iommufd, take over, IOAS placed
//!   for the engine's DMA mask, attach) and the checked copy;
//! - [`edu`]: QEMU's `edu` device; [`nvme`]: an NVMe controller (admin and one I/O
//!   queue, PRPs, Write/Read/Copy);
//! - [`igb`]: an Intel 82576 NIC (QEMU `igb`): TX/RX rings in the IOAS, RX header
//!   split so UDP payloads land at caller IOVAs (a BAR), link in loopback or on a
//!   wire; in loopback a memcpy engine (UDP datagrams sent to itself);
//! - [`net`]: the packet formats it speaks (Ethernet, IPv4, UDP, ARP; pure logic);
//! - [`backing`]: the seam under the VFIO drivers (BAR0 register I/O guarded against a
//!   revoke, DMA memory in the IOAS);
//! - [`EngineError`] ([`error`]): what can go wrong, with a stable `kind()`;
//! - [`kernel_nvme`]: the other storage engine, with no VFIO: the kernel's own nvme
//!   driver doing O_DIRECT I/O on a raw namespace straight into a dma-buf registered
//!   with io_uring (kernel series "Add dmabuf read/write via io_uring", not upstream).
//!
//! The IOVAs must be mapped in the IOAS the engine's device is attached to.
//! The [`DmaEngine`] methods are the raw driver operations: an engine cannot tell
//! whether a DMA landed (edu's faults are silent), so they return `Ok` even when
//! the IOMMU refused every access. [`AttachedEngine::copy`] is the checked copy:
//! it checks both mappings before and after, and fails when the kernel logged an
//! IOMMU fault for the engine meanwhile.

#![deny(missing_docs)]

mod attached;
pub mod backing;
pub mod dma_engine;
pub mod edu;
pub mod error;
pub mod id;
pub mod igb;
pub mod kernel_nvme;
pub mod net;
pub mod nvme;

pub use attached::{AttachedEngine, Span};
pub use dma_engine::{check_span, DmaEngine, TransferReport};
pub use edu::Edu;
pub use error::{EngineError, Result};
pub use id::{is_nvme_class, open, open_with, EngineId, EngineOptions, ENGINES};
pub use igb::{Igb, IgbError, IgbOptions};
pub use kernel_nvme::{KernelNvme, KernelNvmeError, KernelNvmeOptions};
pub use nvme::{Nvme, NvmeOptions};
