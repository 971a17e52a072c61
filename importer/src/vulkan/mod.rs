//! Import dma-bufs into Vulkan (`VK_KHR_external_memory_fd` +
//! `VK_EXT_external_memory_dma_buf`), bind them to buffers and linear images, and copy
//! from them on the GPU.
//!
//! The path reads top to bottom: [`Vulkan::load`] loads `libvulkan.so.1` at run time
//! (a missing loader is an error, not a link failure) → [`Vulkan::select`] picks a
//! physical device by PCI address (`VK_EXT_pci_bus_info`) or name →
//! [`Vulkan::open`] checks the extensions and opens it with a transfer queue
//! ([`LogicalDevice`]) → [`LogicalDevice::dma_buf_memory_types`] asks which memory types
//! the dma-buf can become → [`LogicalDevice::import_buffer`] /
//! [`LogicalDevice::import_image`] import a dup of the fd and bind it →
//! [`LogicalDevice::copy`] moves bytes with `vkCmdCopyBuffer`.
//!
//! Modules, each using only those above it: `error` → `instance` (loader, physical
//! devices) → `device` (the logical device) → `resource` (the [`BufferResource`] trait,
//! one allocation type with the one `Drop`, the create → bind guard) → `own_buffer`,
//! `import` (+ `diagnose`), `image` → `transfer` (the copies).
//!
//! Every object owns what it created and keeps its parent alive: buffers and memory
//! are freed before their device, the device before its instance.
//!
//! What happens where (see `docs/vulkan.md`): lavapipe imports udmabufs; it cannot
//! import a Linux 7.2 vfio-pci BAR dma-buf, because as a CPU implementation it mmaps
//! the dma-buf and that exporter has no mmap ([`VulkanError::CpuAccessRequired`]);
//! NVIDIA's proprietary driver has no dma-buf import at all
//! ([`VulkanError::DmaBufImportUnsupported`]).

mod device;
mod diagnose;
mod error;
mod image;
mod import;
mod instance;
mod own_buffer;
mod resource;
mod transfer;

pub use ash::vk;
pub use device::LogicalDevice;
pub use error::{Result, VulkanError};
pub use image::{texel_size, ImportedImage, LinearImageLayout, DRM_FORMAT_MOD_LINEAR};
pub use import::{dma_buf_fdinfo, ImportDetails, ImportedBuffer};
pub use instance::{
    version_string, DeviceSelector, MemoryType, PhysicalDeviceInfo, Vulkan,
    EXT_EXTERNAL_MEMORY_DMA_BUF, EXT_EXTERNAL_MEMORY_FD, EXT_EXTERNAL_MEMORY_HOST,
    EXT_IMAGE_DRM_FORMAT_MODIFIER, EXT_PCI_BUS_INFO,
};
pub use own_buffer::{BufferKind, OwnBuffer};
pub use resource::BufferResource;
pub use transfer::{CopyRegion, CopyTiming};
