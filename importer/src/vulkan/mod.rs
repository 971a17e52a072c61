//! Import dma-bufs into Vulkan (`VK_KHR_external_memory_fd` +
//! `VK_EXT_external_memory_dma_buf`), bind them to buffers and linear images, and copy
//! from them on the GPU.
//!
//! The path reads top to bottom: [`Vulkan::load`] loads `libvulkan.so.1` at run time
//! (a missing loader is an error, not a link failure) → [`Vulkan::select`] picks a
//! physical device by PCI address (`VK_EXT_pci_bus_info`) or name →
//! [`Vulkan::open`] checks the extensions and opens it with a transfer queue
//! ([`Gpu`]) → [`Gpu::dma_buf_memory_types`] asks which memory types the dma-buf can
//! become → [`Gpu::import_buffer`] / [`Gpu::import_image`] import a dup of the fd
//! and bind it → [`Gpu::copy`] moves bytes with `vkCmdCopyBuffer`.
//!
//! Every object owns what it created and keeps its parent alive: buffers and memory
//! are freed before their device, the device before its instance.
//!
//! What happens where (see `docs/vulkan.md`): lavapipe imports udmabufs; it cannot
//! import a Linux 7.2 vfio-pci BAR dma-buf, because as a CPU implementation it mmaps
//! the dma-buf and that exporter has no mmap ([`VulkanError::CpuAccessRequired`]);
//! NVIDIA's proprietary driver has no dma-buf import at all
//! ([`VulkanError::DmaBufImportUnsupported`]).

mod buffer;
mod device;
mod error;
mod import;
mod instance;

pub use ash::vk;
pub use buffer::{BufferKind, BufferResource, DeviceBuffer};
pub use device::{CopyRegion, CopyTiming, Gpu};
pub use error::{Result, VulkanError};
pub use import::{
    texel_size, DmaBufFacts, ImportDetails, ImportedBuffer, ImportedImage, LinearImageLayout,
    DRM_FORMAT_MOD_LINEAR,
};
pub use instance::{
    version_string, DeviceSelector, MemoryType, PciAddress, PhysicalDeviceInfo, Vulkan,
    EXT_EXTERNAL_MEMORY_DMA_BUF, EXT_EXTERNAL_MEMORY_FD, EXT_EXTERNAL_MEMORY_HOST,
    EXT_IMAGE_DRM_FORMAT_MODIFIER, EXT_PCI_BUS_INFO,
};
