//! Import dma-bufs into other devices.
//!
//! - [`atlas`]: which importers this machine has and whether each can take a
//!   BAR dma-buf;
//! - [`rdma_driver`]: the RDMA drivers and what Linux 7.2 does with a BAR dma-buf
//!   on each (always built: the atlas and `rdma` share it);
//! - [`iommufd`]: map a vfio-pci BAR dma-buf into an iommufd I/O address space
//!   so that a device attached there DMAs to the peer BAR (always built);
//! - [`fault_log`]: the DMA faults the IOMMU refused, read back from the
//!   kernel log, to name as the cause when bytes did not arrive;
//! - `drm` (feature `drm`): import a BAR dma-buf into a DRM driver that attaches
//!   peer-to-peer (amdgpu, xe, virtio-gpu with blob resources) and scan it out;
//! - `rdma` (feature `rdma`): memory regions from host memory or any dma-buf,
//!   RC queue pairs over RDMA CM, RDMA WRITE/READ streams.

#[deny(missing_docs)]
pub mod atlas;
#[cfg(feature = "drm")]
#[deny(missing_docs)]
pub mod drm;
#[deny(missing_docs)]
pub mod fault_log;
#[deny(missing_docs)]
pub mod iommufd;
#[cfg(feature = "rdma")]
#[deny(missing_docs)]
pub mod rdma;
#[deny(missing_docs)]
pub mod rdma_driver;
#[cfg(feature = "vulkan")]
pub mod vulkan;
