//! Buffers in the device's own memory: device-local copy targets and host-visible
//! staging buffers for reading results back.

use std::ptr::NonNull;
use std::sync::Arc;

use ash::vk;

use super::device::{DeviceShared, Gpu};
use super::error::{Result, VulkanError};

mod sealed {
    use std::sync::Arc;

    /// Keeps [`super::BufferResource`] to this module's types and gives access to the
    /// owning device.
    pub trait Sealed {
        /// The device the buffer belongs to.
        fn device_shared(&self) -> &Arc<super::DeviceShared>;
    }
}
pub(super) use sealed::Sealed;

/// A buffer that [`Gpu::copy`] can read or write.
pub trait BufferResource: Sealed {
    /// The Vulkan handle.
    fn raw(&self) -> vk::Buffer;
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Whether its memory comes from outside Vulkan (an imported dma-buf): copies
    /// acquire it from `VK_QUEUE_FAMILY_EXTERNAL` first.
    fn is_external(&self) -> bool;
}

/// What a [`DeviceBuffer`] is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferKind {
    /// Device-local memory (VRAM on a discrete GPU), not necessarily host-visible.
    DeviceLocal,
    /// Host-visible memory, mapped for the buffer's lifetime.
    Staging,
}

/// A buffer with its own memory allocated on the device; both freed on drop.
pub struct DeviceBuffer {
    device: Arc<DeviceShared>,
    buffer: vk::Buffer,
    memory: vk::DeviceMemory,
    size: u64,
    memory_type: u32,
    flags: vk::MemoryPropertyFlags,
    mapped: Option<NonNull<u8>>,
    kind: BufferKind,
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceBuffer")
            .field("kind", &self.kind)
            .field("size", &self.size)
            .field("memory_type", &self.memory_type)
            .field("flags", &self.flags)
            .finish()
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        let d = &self.device.device;
        // SAFETY: the buffer and memory belong to this device, which the Arc keeps
        // alive; copies wait for their fence, so nothing on the GPU uses them; the
        // buffer goes before the memory bound to it; freeing mapped memory unmaps it.
        unsafe {
            d.destroy_buffer(self.buffer, None);
            d.free_memory(self.memory, None);
        }
    }
}

impl Sealed for DeviceBuffer {
    fn device_shared(&self) -> &Arc<DeviceShared> {
        &self.device
    }
}

impl BufferResource for DeviceBuffer {
    fn raw(&self) -> vk::Buffer {
        self.buffer
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn is_external(&self) -> bool {
        false
    }
}

impl DeviceBuffer {
    /// What the buffer is for.
    pub fn kind(&self) -> BufferKind {
        self.kind
    }

    /// The memory type index and its flags.
    pub fn memory_type(&self) -> (u32, vk::MemoryPropertyFlags) {
        (self.memory_type, self.flags)
    }

    fn range_check(&self, what: &str, offset: u64, len: usize) -> Result<NonNull<u8>> {
        let Some(ptr) = self.mapped else {
            return Err(VulkanError::SizeMismatch {
                what: format!("{what} through a buffer that is not host-visible"),
                needed: len as u64,
                have: 0,
            });
        };
        if offset.checked_add(len as u64).is_none_or(|e| e > self.size) {
            return Err(VulkanError::SizeMismatch {
                what: format!("{what} of {len} bytes at offset {offset}"),
                needed: offset.saturating_add(len as u64),
                have: self.size,
            });
        }
        Ok(ptr)
    }

    fn whole_range(&self) -> [vk::MappedMemoryRange<'static>; 1] {
        [vk::MappedMemoryRange::default()
            .memory(self.memory)
            .offset(0)
            .size(vk::WHOLE_SIZE)]
    }

    /// Reads `buf.len()` bytes at `offset` of a staging buffer (after a copy into it
    /// has completed).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let ptr = self.range_check("read", offset, buf.len())?;
        if !self.flags.contains(vk::MemoryPropertyFlags::HOST_COHERENT) {
            // SAFETY: the memory is mapped and belongs to this device.
            unsafe {
                self.device
                    .device
                    .invalidate_mapped_memory_ranges(&self.whole_range())
            }
            .map_err(self.device.call_err("vkInvalidateMappedMemoryRanges"))?;
        }
        // SAFETY: the mapping covers `size` bytes and [offset, offset+len) lies inside
        // it (checked); `buf` is a distinct host allocation; no GPU work writes the
        // buffer now (copies wait for completion).
        unsafe {
            std::ptr::copy_nonoverlapping(
                ptr.as_ptr().add(offset as usize),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        Ok(())
    }

    /// Writes `data` at `offset` of a staging buffer.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        let ptr = self.range_check("write", offset, data.len())?;
        // SAFETY: as in `read`, with the roles of the two sides swapped.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                ptr.as_ptr().add(offset as usize),
                data.len(),
            )
        };
        if !self.flags.contains(vk::MemoryPropertyFlags::HOST_COHERENT) {
            // SAFETY: the memory is mapped and belongs to this device.
            unsafe {
                self.device
                    .device
                    .flush_mapped_memory_ranges(&self.whole_range())
            }
            .map_err(self.device.call_err("vkFlushMappedMemoryRanges"))?;
        }
        Ok(())
    }
}

impl Gpu {
    /// A buffer of `size` bytes in device-local memory (preferring memory the host
    /// cannot see, i.e. VRAM), usable as copy source and destination.
    pub fn device_local_buffer(&self, size: u64) -> Result<DeviceBuffer> {
        self.own_buffer(size, BufferKind::DeviceLocal)
    }

    /// A host-visible, mapped buffer of `size` bytes (preferring cached memory, for
    /// reading back), usable as copy source and destination.
    pub fn staging_buffer(&self, size: u64) -> Result<DeviceBuffer> {
        self.own_buffer(size, BufferKind::Staging)
    }

    fn own_buffer(&self, size: u64, kind: BufferKind) -> Result<DeviceBuffer> {
        let s = &self.shared;
        let d = &s.device;
        let info = vk::BufferCreateInfo::default()
            .size(size)
            .usage(vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST)
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        // SAFETY: valid device and create info.
        let buffer =
            unsafe { d.create_buffer(&info, None) }.map_err(s.call_err("vkCreateBuffer"))?;
        let destroy_buffer = || {
            // SAFETY: the buffer was just created and nothing uses it.
            unsafe { d.destroy_buffer(buffer, None) }
        };
        // SAFETY: the buffer belongs to this device.
        let reqs = unsafe { d.get_buffer_memory_requirements(buffer) };
        use vk::MemoryPropertyFlags as M;
        let (what, required, preferred, avoid) = match kind {
            BufferKind::DeviceLocal => (
                "device-local buffer",
                M::DEVICE_LOCAL,
                M::DEVICE_LOCAL,
                M::HOST_VISIBLE,
            ),
            BufferKind::Staging => (
                "staging buffer",
                M::HOST_VISIBLE,
                M::HOST_VISIBLE | M::HOST_CACHED | M::HOST_COHERENT,
                M::empty(),
            ),
        };
        let Some(memory_type) =
            s.pick_memory_type(reqs.memory_type_bits, required, preferred, avoid)
        else {
            destroy_buffer();
            return Err(VulkanError::NoHelperMemory {
                device: s.name(),
                what,
                wanted: required,
                types: s.info.describe_memory_types(),
            });
        };
        let flags = s.info.memory_types[memory_type as usize].flags;
        let alloc = vk::MemoryAllocateInfo::default()
            .allocation_size(reqs.size)
            .memory_type_index(memory_type);
        // SAFETY: valid device; the type index comes from this device's properties.
        let memory = match unsafe { d.allocate_memory(&alloc, None) } {
            Ok(m) => m,
            Err(e) => {
                destroy_buffer();
                return Err(s.call_err("vkAllocateMemory")(e));
            }
        };
        let free_both = || {
            // SAFETY: both were just created here and nothing uses them.
            unsafe {
                d.destroy_buffer(buffer, None);
                d.free_memory(memory, None);
            }
        };
        // SAFETY: the memory fits the buffer's requirements (its size and type).
        if let Err(e) = unsafe { d.bind_buffer_memory(buffer, memory, 0) } {
            free_both();
            return Err(s.call_err("vkBindBufferMemory")(e));
        }
        let mapped = if kind == BufferKind::Staging {
            // SAFETY: host-visible memory of this device, not mapped yet.
            match unsafe { d.map_memory(memory, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty()) } {
                Ok(p) => NonNull::new(p.cast::<u8>()),
                Err(e) => {
                    free_both();
                    return Err(s.call_err("vkMapMemory")(e));
                }
            }
        } else {
            None
        };
        Ok(DeviceBuffer {
            device: Arc::clone(s),
            buffer,
            memory,
            size,
            memory_type,
            flags,
            mapped,
            kind,
        })
    }
}
