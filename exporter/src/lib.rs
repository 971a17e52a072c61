//! Export PCI BAR ranges as dma-bufs through vfio-pci, with the revoke
//! lifecycle made visible.
//!
//! The data path reads top to bottom: a [`Bdf`](peerdma_host::Bdf) names the
//! function, [`peerdma_host::sysfs`] describes it, a [`Device`] opens it through one of
//! the two VFIO access paths ([`AccessPath`], [`OpenOptions`]) and describes its regions
//! and [`Bar`]s, [`validate_ranges`] checks an export request with the kernel's own rules in the
//! kernel's order, and [`Device::export_dma_buf`] yields a [`DmaBuf`] that any importer
//! can borrow. The device's [`RevokeState`] and [`RevokeEvent`]s follow what the kernel
//! does to the buffers on memory-decode changes, resets, power-state changes and close.
//!
//! Beside the VFIO path: [`Udmabuf`] is the system-memory exporter, the baseline a BAR
//! dma-buf is compared with. What the host says without VFIO (sysfs, the P2P route,
//! kernel facts, fdinfo, the PCI vocabulary [`Bdf`](peerdma_host::Bdf) and
//! [`RegionIndex`](peerdma_host::RegionIndex)) is the crate `peerdma-host`; import it
//! from there.
//!
//! Every item is re-exported here, one path per item; the posted kernel series'
//! features are the module [`posted`].
//!
//! `unsafe` lives in two places: the ioctl calls (private module `ioctl`) and
//! the BAR mapping ([`MappedRegion`]).

#![deny(missing_docs)]

mod bar;
mod config_space;
mod device;
mod dmabuf;
mod error;
mod explain;
mod export;
#[cfg(test)]
mod fuzz;
mod info;
mod info_caps;
mod ioctl;
mod mmap;
mod mmio_copy;
mod msix;
mod open;
pub mod posted;
mod ranges;
mod region;
mod revoke;
mod shared;
mod sigbus;
mod udmabuf;

pub use bar::{Bar, BarKind};
pub use device::Device;
pub use dmabuf::DmaBuf;
pub use error::{Error, Result};
pub use export::DmaBufSupport;
pub use info::DeviceInfo;
pub use info_caps::{DeviceCap, RegionCap, SparseMmapArea};
pub use mmap::{MappedRegion, MmioValue};
pub use msix::{MsixLayout, MsixStructure};
pub use open::{AccessPath, OpenOptions, PassedFds};
pub use ranges::{
    validate as validate_ranges, BarFacts, DmaRange, ExportOptions, DMA_IOVA_USE_SWIOTLB,
};
pub use region::{RegionFlags, RegionInfo};
pub use revoke::{
    PowerState, ResetMethod, ResetRecord, RevokeEvent, RevokeReason, RevokeState, SubscriptionToken,
};
pub use rustix::io::Errno;
pub use shared::shared_iommufd;
pub use sigbus::GuardError;
pub use udmabuf::{Udmabuf, UdmabufError, UDMABUF_DEVICE};
