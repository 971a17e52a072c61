//! Export PCI BAR ranges as dma-bufs through vfio-pci, with the revoke
//! lifecycle made visible.
//!
//! The data path reads top to bottom: a [`Bdf`] names the function, [`sysfs`]
//! describes it, a `Device` opens it through one of the two VFIO access paths
//! and describes its regions, [`ranges`] checks an export request with the
//! kernel's own rules, and the export yields a `DmaBuf` that any importer can
//! borrow.

#![deny(missing_docs)]

pub mod bdf;
pub mod caps;
pub mod error;
pub mod fdinfo;
pub mod msix;
pub mod pci_caps;
pub mod ranges;
pub mod region;
pub mod sysfs;

pub use bdf::Bdf;
pub use caps::{DeviceCap, RegionCap, SparseMmapArea};
pub use error::{Error, Result};
pub use fdinfo::FdInfo;
pub use msix::{MsixLayout, MsixStructure};
pub use ranges::{BarTarget, DmaRange, ExportOptions};
pub use region::{RegionFlags, RegionInfo};
pub use sysfs::{PciDevice, Resource, Sysfs};
