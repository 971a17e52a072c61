//! Import dma-bufs into other devices.
//!
//! - [`iommufd`]: map a vfio-pci BAR dma-buf into an iommufd I/O address space
//!   so that a device attached there DMAs to the peer BAR (always built);
//! - `drm` (feature `drm`): import a BAR dma-buf into a DRM driver that attaches
//!   peer-to-peer (amdgpu, xe, virtio-gpu with blob resources) and scan it out;
//! - `rdma` (feature `rdma`): memory regions from host memory or any dma-buf,
//!   RC queue pairs over RDMA CM, RDMA WRITE/READ streams.
//!
//! Which importers a machine has and what each driver does with a BAR dma-buf (the
//! atlas, the driver table), and the IOMMU fault log, are host facts: they live in
//! `peerdma-host` (`peerdma_host::{atlas, importers, fault_log}`).

#[cfg(feature = "drm")]
#[deny(missing_docs)]
pub mod drm;
#[deny(missing_docs)]
pub mod iommufd;
#[cfg(feature = "rdma")]
#[deny(missing_docs)]
pub mod rdma;
#[cfg(feature = "vulkan")]
pub mod vulkan;
