//! Buffers in the device's own memory: device-local copy targets and host-visible
//! staging buffers for reading results back.

use std::ptr::NonNull;
use std::sync::Arc;

use ash::vk;

use super::device::{DeviceShared, LogicalDevice};
use super::error::{Result, VulkanError};
use super::resource::{Allocation, BufferResource, Created, Sealed};

/// What an [`OwnBuffer`] is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferKind {
    /// Device-local memory (VRAM on a discrete GPU), not necessarily host-visible.
    DeviceLocal,
    /// Host-visible memory, mapped for the buffer's lifetime.
    Staging,
}

/// A buffer with its own memory allocated on the device (device-local or staging, see
/// [`BufferKind`]); both freed on drop.
pub struct OwnBuffer {
    allocation: Allocation<vk::Buffer>,
    size: u64,
    memory_type: u32,
    flags: vk::MemoryPropertyFlags,
    mapped: Option<NonNull<u8>>,
    kind: BufferKind,
}

impl std::fmt::Debug for OwnBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnBuffer")
            .field("kind", &self.kind)
            .field("size", &self.size)
            .field("memory_type", &self.memory_type)
            .field("flags", &self.flags)
            .finish()
    }
}

impl Sealed for OwnBuffer {
    fn device_shared(&self) -> &Arc<DeviceShared> {
        self.allocation.device()
    }
}

impl BufferResource for OwnBuffer {
    fn raw(&self) -> vk::Buffer {
        self.allocation.handle()
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn is_external(&self) -> bool {
        false
    }
    fn revoked_under_access(&self) -> bool {
        false
    }
}

impl OwnBuffer {
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
            .memory(self.allocation.memory())
            .offset(0)
            .size(vk::WHOLE_SIZE)]
    }

    /// Reads `buf.len()` bytes at `offset` of a staging buffer (after a copy into it
    /// has completed).
    ///
    /// # Errors
    /// [`VulkanError::SizeMismatch`] when the buffer is not host-visible or the range
    /// falls outside it; [`VulkanError::Call`] when invalidating the mapping fails.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let ptr = self.range_check("read", offset, buf.len())?;
        if !self.flags.contains(vk::MemoryPropertyFlags::HOST_COHERENT) {
            let device = self.allocation.device();
            // SAFETY: the memory is mapped and belongs to this device.
            unsafe {
                device
                    .device
                    .invalidate_mapped_memory_ranges(&self.whole_range())
            }
            .map_err(device.call_err("vkInvalidateMappedMemoryRanges"))?;
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
    ///
    /// # Errors
    /// As for [`OwnBuffer::read`] (flushing instead of invalidating).
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
            let device = self.allocation.device();
            // SAFETY: the memory is mapped and belongs to this device.
            unsafe {
                device
                    .device
                    .flush_mapped_memory_ranges(&self.whole_range())
            }
            .map_err(device.call_err("vkFlushMappedMemoryRanges"))?;
        }
        Ok(())
    }
}

impl LogicalDevice {
    /// A buffer of `size` bytes in device-local memory (preferring memory the host
    /// cannot see, i.e. VRAM), usable as copy source and destination.
    ///
    /// # Errors
    /// [`VulkanError::NoHelperMemory`] when no memory type fits, [`VulkanError::Call`]
    /// when creating, allocating or binding fails (nothing is left behind).
    pub fn device_local_buffer(&self, size: u64) -> Result<OwnBuffer> {
        self.own_buffer(size, BufferKind::DeviceLocal)
    }

    /// A host-visible, mapped buffer of `size` bytes (preferring cached memory, for
    /// reading back), usable as copy source and destination.
    ///
    /// # Errors
    /// As for [`LogicalDevice::device_local_buffer`], and [`VulkanError::Call`] when
    /// mapping fails.
    pub fn staging_buffer(&self, size: u64) -> Result<OwnBuffer> {
        self.own_buffer(size, BufferKind::Staging)
    }

    fn own_buffer(&self, size: u64, kind: BufferKind) -> Result<OwnBuffer> {
        let s = &self.shared;
        let info = vk::BufferCreateInfo::default()
            .size(size)
            .usage(vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST)
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        // SAFETY: valid device and create info; the buffer is new and only the guard
        // owns it.
        let mut buffer =
            unsafe { Created::new(s, "vkCreateBuffer", |d| d.create_buffer(&info, None)) }?;
        let reqs = buffer.requirements();
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
        let memory_type = s
            .pick_memory_type(reqs.memory_type_bits, required, preferred, avoid)
            .ok_or_else(|| VulkanError::NoHelperMemory {
                device: s.name(),
                what,
                wanted: required,
                types: s.info.describe_memory_types(),
            })?;
        let flags = s.info.memory_types[memory_type as usize].flags;
        let alloc = vk::MemoryAllocateInfo::default()
            .allocation_size(reqs.size)
            .memory_type_index(memory_type);
        // SAFETY: valid device; the type index comes from this device's properties and
        // the size from the buffer's requirements; the memory is new.
        unsafe {
            buffer.allocate(|d| {
                d.allocate_memory(&alloc, None)
                    .map_err(s.call_err("vkAllocateMemory"))
            })
        }?;
        let allocation = buffer.bind()?;
        let mapped = if kind == BufferKind::Staging {
            // SAFETY: host-visible memory of this device, not mapped yet; dropping the
            // allocation on error frees (and so unmaps) it.
            let p = unsafe {
                s.device.map_memory(
                    allocation.memory(),
                    0,
                    vk::WHOLE_SIZE,
                    vk::MemoryMapFlags::empty(),
                )
            }
            .map_err(s.call_err("vkMapMemory"))?;
            NonNull::new(p.cast::<u8>())
        } else {
            None
        };
        Ok(OwnBuffer {
            allocation,
            size,
            memory_type,
            flags,
            mapped,
            kind,
        })
    }
}
