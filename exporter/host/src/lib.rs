//! What a Linux host says about its PCI functions, the routes between them, its
//! kernel, its IOMMU and its dma-buf importers, read from sysfs, config-space dumps,
//! `/proc` and `/dev/kmsg`. No VFIO: nothing here opens a device or calls an ioctl, so
//! every reader takes a root directory and runs against a fixture tree.
//!
//! - [`Bdf`] names a PCI function, [`RegionIndex`] a VFIO region of it: the leaf
//!   vocabulary of the workspace (`addr`);
//! - [`sysfs`]: `/sys/bus/pci/devices/BDF/` ([`sysfs::Sysfs`], [`sysfs::PciDevice`]);
//! - [`pci_caps`] and [`acs`]: the capability list and the ACS/PCIe facts of a
//!   config-space snapshot;
//! - [`p2pdma`]: the PCI route between two functions and whether the kernel's P2P
//!   distance check lets one reach the other ([`p2pdma::Reach`], named after
//!   `drivers/pci/p2pdma.c`);
//! - [`kernel`]: the running kernel's release, build options, IOMMU mode and vfio
//!   drivers; [`iommu_width`]: the address width of the IOMMU in front of a device;
//! - [`holders`]: which processes hold a device node open (`/proc/PID/fd`);
//! - [`fdinfo`]: what the kernel says about any dma-buf (`/proc/self/fdinfo`);
//! - [`fault_log`]: the DMA faults the IOMMU refused, from `/dev/kmsg`;
//! - [`importers`]: the RDMA and DRM drivers and what Linux 7.2 does with a BAR
//!   dma-buf on each, one table; [`atlas`]: which of them this machine has.
//!
//! Errors are [`HostError`] (and [`fdinfo::FdInfoError`], which that module keeps so
//! that it depends on nothing else here).

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod acs;
mod addr;
pub mod atlas;
mod error;
pub mod fault_log;
pub mod fdinfo;
#[cfg(any(test, feature = "testing"))]
pub mod fixture;
pub mod holders;
pub mod importers;
pub mod iommu_width;
pub mod kernel;
pub mod p2pdma;
pub mod pci_caps;
pub mod sysfs;

pub use addr::{Bdf, ParseBdfError, RegionIndex};
pub use error::{errno_name, errno_name_raw, HostError, Result};
