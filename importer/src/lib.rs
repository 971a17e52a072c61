//! Import dma-bufs into other devices.
pub mod udmabuf;
#[cfg(feature = "vulkan")]
pub mod vulkan;
