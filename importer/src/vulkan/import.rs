//! Importing a dma-buf as a buffer: `vkGetMemoryFdPropertiesKHR` for the memory types it
//! can become, `VkImportMemoryFdInfoKHR` with a dup of the fd (Vulkan owns the dup once
//! the import succeeds), and a `VkBuffer` bound to it. `image.rs` imports linear images
//! through the same [`LogicalDevice::import_memory`].

use peerdma_exporter::posted::ImportGuard;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::sync::Arc;

use ash::vk;
use peerdma_host::fdinfo::FdInfo;

use super::device::{DeviceShared, LogicalDevice};
use super::diagnose::{dup_after_failure, mmap_probe, DupAfterFailure};
use super::error::{Result, VulkanError};
use super::resource::{Allocation, Bindable, BufferResource, Created, Sealed};

/// What the kernel says about the dma-buf `fd` (`/proc/self/fdinfo`: `size`, `exp_name`,
/// …), with `size` always set: when fdinfo cannot be read or has no `size` line, it
/// comes from `lseek(SEEK_END)` (and the rest is empty).
///
/// # Errors
/// [`VulkanError::Fd`] when fdinfo has no size and `lseek` fails too (not a dma-buf).
pub fn dma_buf_fdinfo(fd: BorrowedFd<'_>) -> Result<FdInfo> {
    let mut info = FdInfo::of(fd).unwrap_or_default();
    if info.size.is_none() {
        let size = rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0)).map_err(|errno| {
            VulkanError::Fd {
                what: "lseek(SEEK_END)",
                errno,
            }
        })?;
        let _ = rustix::fs::seek(fd, rustix::fs::SeekFrom::Start(0));
        info.size = Some(size);
    }
    Ok(info)
}

/// The size of a dma-buf whose fdinfo came from [`dma_buf_fdinfo`].
pub(super) fn size_of(info: &FdInfo) -> u64 {
    info.size.unwrap_or(0)
}

/// The exporter's name for messages, or "unknown".
pub(super) fn exporter_of(info: &FdInfo) -> String {
    info.exp_name.clone().unwrap_or_else(|| "unknown".into())
}

/// How an import went, for reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportDetails {
    /// The dma-buf as the kernel describes it (from [`dma_buf_fdinfo`]: `size` is set).
    pub dma_buf: FdInfo,
    /// `VkMemoryFdPropertiesKHR::memoryTypeBits`: the types the dma-buf can become.
    pub fd_memory_type_bits: u32,
    /// `VkMemoryRequirements::memoryTypeBits` of the buffer or image.
    pub resource_memory_type_bits: u32,
    /// The memory type chosen.
    pub memory_type: u32,
    /// Its property flags.
    pub memory_flags: vk::MemoryPropertyFlags,
    /// The allocation size given to `vkAllocateMemory`.
    pub allocation_size: u64,
    /// Whether a dedicated allocation was used.
    pub dedicated: bool,
}

/// A dma-buf imported as `VkDeviceMemory`, with a `VkBuffer` bound to all of it.
/// Dropping destroys the buffer, then frees the memory (which releases Vulkan's
/// reference to the dma-buf).
pub struct ImportedBuffer {
    /// Declared first, so dropped before the memory (and the implementation's mapping)
    /// goes.
    revoke_guard: Option<ImportGuard>,
    allocation: Allocation<vk::Buffer>,
    size: u64,
    details: ImportDetails,
}

impl std::fmt::Debug for ImportedBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportedBuffer")
            .field("size", &self.size)
            .field("details", &self.details)
            .finish()
    }
}

impl Sealed for ImportedBuffer {
    fn device_shared(&self) -> &Arc<DeviceShared> {
        self.allocation.device()
    }
}

impl BufferResource for ImportedBuffer {
    fn raw(&self) -> vk::Buffer {
        self.allocation.handle()
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn is_external(&self) -> bool {
        true
    }
    fn revoked_under_access(&self) -> bool {
        self.revoke_guard
            .as_ref()
            .is_some_and(ImportGuard::revoked_under_access)
    }
}

impl ImportedBuffer {
    /// How the import went.
    pub fn details(&self) -> &ImportDetails {
        &self.details
    }
}

impl LogicalDevice {
    /// The memory types (a bit mask over [`super::PhysicalDeviceInfo::memory_types`])
    /// the dma-buf `fd` can be imported as (`vkGetMemoryFdPropertiesKHR`).
    ///
    /// # Errors
    /// [`VulkanError::FdProperties`] when the driver rejects the fd.
    pub fn dma_buf_memory_types(&self, fd: BorrowedFd<'_>) -> Result<u32> {
        let mut props = vk::MemoryFdPropertiesKHR::default();
        // SAFETY: the extension is enabled on this device; `fd` is open for the call
        // and not consumed by it.
        unsafe {
            self.shared.memory_fd.get_memory_fd_properties(
                vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT,
                fd.as_raw_fd(),
                &mut props,
            )
        }
        .map_err(|result| VulkanError::FdProperties {
            device: self.shared.name(),
            driver: self.shared.info.driver_label(),
            result,
            exporter: dma_buf_fdinfo(fd)
                .map(|f| exporter_of(&f))
                .unwrap_or_else(|_| "unknown".into()),
        })?;
        Ok(props.memory_type_bits)
    }

    /// Imports the dma-buf `fd` and binds a buffer of `size` bytes (the whole
    /// dma-buf when `None`) to it. The caller keeps `fd`; Vulkan gets a dup.
    ///
    /// # Errors
    /// - [`VulkanError::Fd`]: the size of `fd` cannot be read, or `dup`/`fstat` failed.
    /// - [`VulkanError::SizeMismatch`]: `size` is 0 or larger than the dma-buf, or the
    ///   driver needs more memory than the dma-buf has.
    /// - [`VulkanError::HandleTypeNotImportable`]: the device imports no dma-bufs as
    ///   transfer buffers.
    /// - [`VulkanError::FdProperties`], [`VulkanError::NoMemoryType`]: the driver rejects
    ///   the fd, or no memory type fits both.
    /// - [`VulkanError::CpuAccessRequired`], [`VulkanError::Import`]: the import failed.
    /// - [`VulkanError::Call`]: creating or binding the buffer failed.
    pub fn import_buffer(&self, fd: BorrowedFd<'_>, size: Option<u64>) -> Result<ImportedBuffer> {
        let s = &self.shared;
        let info = dma_buf_fdinfo(fd)?;
        let have = size_of(&info);
        let size = size.unwrap_or(have);
        if size == 0 || size > have {
            return Err(VulkanError::SizeMismatch {
                what: format!("a buffer of {size} bytes from the dma-buf"),
                needed: size,
                have,
            });
        }
        let usage = vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST;
        let features = s.info.dma_buf_buffer_features;
        if !features.contains(vk::ExternalMemoryFeatureFlags::IMPORTABLE) {
            return Err(VulkanError::HandleTypeNotImportable {
                device: s.name(),
                driver: s.info.driver_label(),
                usage,
                features,
            });
        }
        let fd_bits = self.dma_buf_memory_types(fd)?;
        let mut external = vk::ExternalMemoryBufferCreateInfo::default()
            .handle_types(vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT);
        let create = vk::BufferCreateInfo::default()
            .size(size)
            .usage(usage)
            .sharing_mode(vk::SharingMode::EXCLUSIVE)
            .push_next(&mut external);
        // SAFETY: valid device; the chained struct is core 1.1 and lives across the
        // call; the buffer is new and only the guard owns it.
        let mut buffer =
            unsafe { Created::new(s, "vkCreateBuffer", |d| d.create_buffer(&create, None)) }?;
        let details = self.import_memory(fd, &info, fd_bits, &mut buffer, "buffer")?;
        let allocation = buffer.bind()?;
        Ok(ImportedBuffer {
            revoke_guard: ImportGuard::of_dma_buf(fd).ok(),
            allocation,
            size,
            details,
        })
    }

    /// The import proper: picks the memory type, dups `fd`, allocates with
    /// `VkImportMemoryFdInfoKHR` (dedicated to `target`, which owns the memory from
    /// then on), and on failure closes the dup only if the driver has not (lavapipe
    /// closes it although the spec leaves it to the application) and explains the
    /// failure.
    pub(super) fn import_memory<H: Bindable>(
        &self,
        fd: BorrowedFd<'_>,
        info: &FdInfo,
        fd_bits: u32,
        target: &mut Created<'_, H>,
        what: &'static str,
    ) -> Result<ImportDetails> {
        let s = &self.shared;
        let reqs = target.requirements();
        let have = size_of(info);
        if reqs.size > have {
            return Err(VulkanError::SizeMismatch {
                what: format!(
                    "the {what}'s memory requirements (vkGet*MemoryRequirements: the driver may pad \
                     what the dma-buf holds exactly)"
                ),
                needed: reqs.size,
                have,
            });
        }
        let allowed = reqs.memory_type_bits & fd_bits;
        let Some(memory_type) = s.pick_memory_type(
            allowed,
            vk::MemoryPropertyFlags::empty(),
            vk::MemoryPropertyFlags::DEVICE_LOCAL,
            vk::MemoryPropertyFlags::empty(),
        ) else {
            return Err(VulkanError::NoMemoryType {
                device: s.name(),
                driver: s.info.driver_label(),
                what,
                resource_bits: reqs.memory_type_bits,
                fd_bits,
                types: s.info.describe_memory_types(),
            });
        };
        let dup: OwnedFd = rustix::io::fcntl_dupfd_cloexec(fd, 0)
            .map_err(|errno| VulkanError::Fd { what: "dup", errno })?;
        let st = rustix::fs::fstat(&dup).map_err(|errno| VulkanError::Fd {
            what: "fstat",
            errno,
        })?;
        let dup_identity = (st.st_dev, st.st_ino);
        let mut import = vk::ImportMemoryFdInfoKHR::default()
            .handle_type(vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT)
            .fd(dup.as_raw_fd());
        let mut dedicated = target.handle().dedicated();
        let alloc = vk::MemoryAllocateInfo::default()
            .allocation_size(reqs.size)
            .memory_type_index(memory_type)
            .push_next(&mut import)
            .push_next(&mut dedicated);
        // SAFETY: valid device; the import struct names an fd we own (the dup) of
        // the handle type the device supports, and the dedicated struct a resource of
        // this device without memory; all live across the call; the memory is new and
        // goes to the guard.
        let allocated = unsafe { target.allocate(|d| d.allocate_memory(&alloc, None)) };
        match allocated {
            Ok(()) => {
                // Success: the implementation owns the dup now.
                let _ = dup.into_raw_fd();
                Ok(ImportDetails {
                    dma_buf: info.clone(),
                    fd_memory_type_bits: fd_bits,
                    resource_memory_type_bits: reqs.memory_type_bits,
                    memory_type,
                    memory_flags: s.info.memory_types[memory_type as usize].flags,
                    allocation_size: reqs.size,
                    dedicated: true,
                })
            }
            Err(result) => {
                // Ownership passes only on success, so the dup is still ours, unless
                // the driver closed it anyway. Close it only if the number still
                // names the same file.
                let after = dup_after_failure(dup.as_raw_fd(), dup_identity);
                if after == DupAfterFailure::StillOurs {
                    drop(dup);
                } else {
                    let _ = dup.into_raw_fd();
                }
                let driver_closed_fd = after == DupAfterFailure::ClosedByDriver;
                let exporter = exporter_of(info);
                if s.info.is_cpu() {
                    if let Err(mmap_errno) = mmap_probe(fd, have) {
                        return Err(VulkanError::CpuAccessRequired {
                            device: s.name(),
                            driver: s.info.driver_label(),
                            result,
                            mmap_errno,
                            exporter,
                            driver_closed_fd,
                        });
                    }
                }
                Err(VulkanError::Import {
                    device: s.name(),
                    driver: s.info.driver_label(),
                    result,
                    exporter,
                    driver_closed_fd,
                })
            }
        }
    }
}
