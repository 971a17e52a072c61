//! Export PCI BAR ranges as dma-bufs through vfio-pci, with the revoke
//! lifecycle made visible.
//!
//! The data path reads top to bottom: a [`Bdf`] names the function, [`sysfs`]
//! describes it, a [`Device`] opens it through one of the two VFIO access paths
//! ([`AccessPath`], [`OpenOptions`]) and describes its regions and [`Bar`]s, [`ranges`] checks an
//! export request with the kernel's own rules in the kernel's order, and
//! [`Device::export_dma_buf`] yields a [`DmaBuf`] that any importer can borrow. The
//! device's [`RevokeState`] and [`RevokeEvent`]s follow what the kernel does to
//! the buffers on memory-decode changes, resets, power-state changes and close.
//!
//! Beside the VFIO path: [`fdinfo`] reads what the kernel says about any
//! dma-buf (no VFIO involved), and [`udmabuf`] is the system-memory exporter,
//! the baseline a BAR dma-buf is compared with.
//!
//! Modules that are a concept of their own stay public (`ranges`, `sysfs`,
//! `fdinfo`, `kernel`, `p2pdma`, `udmabuf`); the rest is re-exported here, one
//! path per item.
//!
//! `unsafe` lives in two places: the ioctl calls (private module `ioctl`) and
//! the BAR mapping ([`MappedRegion`]).

#![deny(missing_docs)]

mod acs;
mod addr;
mod bar;
mod config_space;
mod device;
mod dmabuf;
mod error;
mod explain;
mod export;
pub mod fdinfo;
#[cfg(test)]
mod fuzz;
mod holders;
mod info;
mod info_caps;
mod ioctl;
mod iommu_width;
pub mod kernel;
mod mmap;
mod mmio_copy;
mod msix;
mod open;
pub mod p2pdma;
mod pci_caps;
pub mod posted;
pub mod ranges;
mod region;
mod revoke;
mod shared;
mod sigbus;
pub mod sysfs;
pub mod udmabuf;

pub use acs::{Acs, AcsFlags, AcsState, PortKind, UNPRIVILEGED_CONFIG_BYTES};
pub use addr::{Bdf, ParseBdfError, RegionIndex};
pub use bar::{Bar, BarKind};
pub use device::{Device, OpenedVia};
pub use dmabuf::DmaBuf;
pub use error::{Error, Result};
pub use export::DmaBufSupport;
pub use fdinfo::{FdInfo, FdInfoError};
pub use holders::{holders, Holder, Holders};
pub use info::DeviceInfo;
pub use info_caps::{ChainError, DeviceCap, RegionCap, SparseMmapArea};
pub use iommu_width::{mgaw_from_cap, IommuWidth};
pub use mmap::{MappedRegion, MmioValue};
pub use msix::{MsixLayout, MsixStructure};
pub use open::{AccessPath, OpenOptions, PassedFds};
pub use p2pdma::{
    Blocker, HostCpu, ImporterCheck, MapType, P2pRoute, P2pVerdict, PathEnd, PathNode, Route,
    Upstream,
};
pub use pci_caps::{capabilities, FlrMethod, PciCap};
pub use ranges::{BarFacts, DmaRange, ExportOptions};
pub use region::{RegionFlags, RegionInfo};
pub use revoke::{
    PowerState, ResetMethod, ResetRecord, RevokeEvent, RevokeReason, RevokeState, SubscriptionToken,
};
pub use rustix::io::Errno;
pub use shared::shared_iommufd;
pub use sigbus::GuardError;
pub use sysfs::{PciDevice, Resource, Sysfs};
pub use udmabuf::{Udmabuf, UdmabufError};
