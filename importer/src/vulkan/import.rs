//! Importing a dma-buf: `vkGetMemoryFdPropertiesKHR` for the memory types it can
//! become, `VkImportMemoryFdInfoKHR` with a dup of the fd (Vulkan owns the dup once
//! the import succeeds), and a `VkBuffer` or linear `VkImage` bound to it.

use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use ash::vk;
use rustix::io::Errno;

use super::buffer::{BufferResource, Sealed};
use super::device::{DeviceShared, Gpu};
use super::error::{Result, VulkanError};

/// `DRM_FORMAT_MOD_LINEAR`.
pub const DRM_FORMAT_MOD_LINEAR: u64 = 0;

/// What the kernel says about a dma-buf fd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmaBufFacts {
    /// Its size in bytes.
    pub size: u64,
    /// The exporter (`exp_name` in fdinfo: `vfio_pci_core`, `udmabuf`, …).
    pub exporter: Option<String>,
}

impl DmaBufFacts {
    /// Reads the size and exporter of `fd` from `/proc/self/fdinfo`, falling back
    /// to `lseek(SEEK_END)` for the size.
    pub fn of(fd: BorrowedFd<'_>) -> Result<Self> {
        if let Ok(info) = peerdma_exporter::FdInfo::of(fd) {
            if let Some(size) = info.size {
                return Ok(DmaBufFacts {
                    size,
                    exporter: info.exp_name,
                });
            }
        }
        let size = rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0)).map_err(|errno| {
            VulkanError::Fd {
                what: "lseek(SEEK_END)",
                errno,
            }
        })?;
        let _ = rustix::fs::seek(fd, rustix::fs::SeekFrom::Start(0));
        Ok(DmaBufFacts {
            size,
            exporter: None,
        })
    }

    fn exporter_name(&self) -> String {
        self.exporter.clone().unwrap_or_else(|| "unknown".into())
    }
}

/// How an import went, for reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportDetails {
    /// The dma-buf as the kernel describes it.
    pub dma_buf: DmaBufFacts,
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
    device: Arc<DeviceShared>,
    buffer: vk::Buffer,
    memory: vk::DeviceMemory,
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

impl Drop for ImportedBuffer {
    fn drop(&mut self) {
        let d = &self.device.device;
        // SAFETY: both belong to this device (kept alive by the Arc); copies wait for
        // completion, so the GPU no longer uses them; buffer before its memory.
        unsafe {
            d.destroy_buffer(self.buffer, None);
            d.free_memory(self.memory, None);
        }
    }
}

impl Sealed for ImportedBuffer {
    fn device_shared(&self) -> &Arc<DeviceShared> {
        &self.device
    }
}

impl BufferResource for ImportedBuffer {
    fn raw(&self) -> vk::Buffer {
        self.buffer
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn is_external(&self) -> bool {
        true
    }
}

impl ImportedBuffer {
    /// How the import went.
    pub fn details(&self) -> &ImportDetails {
        &self.details
    }
}

/// The layout of a linear image inside a dma-buf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearImageLayout {
    /// Width in texels.
    pub width: u32,
    /// Height in rows.
    pub height: u32,
    /// The Vulkan format (one of [`texel_size`]'s).
    pub format: vk::Format,
    /// Byte offset of the first row in the dma-buf.
    pub offset: u64,
    /// Bytes from one row to the next (at least `width * texel size`).
    pub row_pitch: u64,
}

/// Bytes per texel of the uncompressed single-plane formats image import supports.
pub fn texel_size(format: vk::Format) -> Option<u64> {
    use vk::Format as F;
    Some(match format {
        F::R8_UNORM | F::R8_UINT => 1,
        F::R8G8_UNORM | F::R16_UNORM | F::R16_UINT | F::R16_SFLOAT => 2,
        F::R8G8B8A8_UNORM
        | F::R8G8B8A8_SRGB
        | F::B8G8R8A8_UNORM
        | F::B8G8R8A8_SRGB
        | F::R8G8B8A8_UINT
        | F::R32_UINT
        | F::R32_SFLOAT
        | F::A2R10G10B10_UNORM_PACK32
        | F::A2B10G10R10_UNORM_PACK32 => 4,
        F::R16G16B16A16_UNORM | F::R16G16B16A16_SFLOAT | F::R32G32_UINT => 8,
        F::R32G32B32A32_UINT | F::R32G32B32A32_SFLOAT => 16,
        _ => return None,
    })
}

/// A dma-buf imported as a linear 2D image (`DRM_FORMAT_MOD_LINEAR`), usable as a
/// transfer source and destination; destroyed, then its memory freed, on drop.
pub struct ImportedImage {
    device: Arc<DeviceShared>,
    image: vk::Image,
    memory: vk::DeviceMemory,
    layout: LinearImageLayout,
    details: ImportDetails,
    /// The image layout after the last recorded use (`GENERAL` until the first:
    /// external images are created `UNDEFINED`, but a foreign agent's contents are
    /// handed over as `GENERAL`).
    current: Mutex<vk::ImageLayout>,
}

impl std::fmt::Debug for ImportedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportedImage")
            .field("layout", &self.layout)
            .field("details", &self.details)
            .finish()
    }
}

impl Drop for ImportedImage {
    fn drop(&mut self) {
        let d = &self.device.device;
        // SAFETY: as for ImportedBuffer: image before its memory, both of this device,
        // no GPU work pending.
        unsafe {
            d.destroy_image(self.image, None);
            d.free_memory(self.memory, None);
        }
    }
}

impl ImportedImage {
    /// How the import went.
    pub fn details(&self) -> &ImportDetails {
        &self.details
    }

    /// The image's layout in the dma-buf.
    pub fn layout(&self) -> &LinearImageLayout {
        &self.layout
    }

    /// The Vulkan handle.
    pub fn raw(&self) -> vk::Image {
        self.image
    }

    pub(super) fn shared(&self) -> &Arc<DeviceShared> {
        &self.device
    }

    /// Records that the image moves to `new`; returns the layout it leaves.
    pub(super) fn take_layout(&self, new: vk::ImageLayout) -> vk::ImageLayout {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *cur, new)
    }
}

/// The (device, inode) of whatever file descriptor number `raw` names now, found
/// through `/proc/self/fd` so that a number the driver may have closed is never
/// used as a descriptor.
fn identity(raw: i32) -> std::result::Result<(u64, u64), Errno> {
    let st = rustix::fs::stat(format!("/proc/self/fd/{raw}"))?;
    Ok((st.st_dev, st.st_ino))
}

/// Who holds the dup after a failed import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DupAfterFailure {
    /// The number still names our file: ours to close (what the spec says).
    StillOurs,
    /// The number is closed, or names another file now: the driver closed it.
    ClosedByDriver,
    /// `/proc` cannot tell: keep the number open rather than risk closing someone
    /// else's descriptor.
    Unknown,
}

fn dup_after_failure(raw: i32, ours: (u64, u64)) -> DupAfterFailure {
    match identity(raw) {
        Ok(id) if id == ours => DupAfterFailure::StillOurs,
        Ok(_) => DupAfterFailure::ClosedByDriver,
        Err(_) if rustix::fs::stat("/proc/self/fd").is_ok() => DupAfterFailure::ClosedByDriver,
        Err(_) => DupAfterFailure::Unknown,
    }
}

/// Probes whether the dma-buf can be mapped by the CPU (what CPU drivers need).
fn mmap_probe(fd: BorrowedFd<'_>, len: u64) -> std::result::Result<(), Errno> {
    let len = len.clamp(1, rustix::param::page_size() as u64) as usize;
    // SAFETY: a fresh shared read-only mapping at an address the kernel picks; it
    // aliases no Rust object and is unmapped right away without being touched.
    unsafe {
        let p = rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            rustix::mm::ProtFlags::READ,
            rustix::mm::MapFlags::SHARED,
            fd,
            0,
        )?;
        let _ = rustix::mm::munmap(p, len);
    }
    Ok(())
}

/// What to bind the imported memory to, for the dedicated allocation.
enum Dedicated {
    Buffer(vk::Buffer),
    Image(vk::Image),
}

impl Gpu {
    /// The memory types (a bit mask over [`super::PhysicalDeviceInfo::memory_types`])
    /// the dma-buf `fd` can be imported as (`vkGetMemoryFdPropertiesKHR`).
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
            exporter: DmaBufFacts::of(fd)
                .map(|f| f.exporter_name())
                .unwrap_or_else(|_| "unknown".into()),
        })?;
        Ok(props.memory_type_bits)
    }

    /// Imports the dma-buf `fd` and binds a buffer of `size` bytes (the whole
    /// dma-buf when `None`) to it. The caller keeps `fd`; Vulkan gets a dup.
    pub fn import_buffer(&self, fd: BorrowedFd<'_>, size: Option<u64>) -> Result<ImportedBuffer> {
        let s = &self.shared;
        let d = &s.device;
        let facts = DmaBufFacts::of(fd)?;
        let size = size.unwrap_or(facts.size);
        if size == 0 || size > facts.size {
            return Err(VulkanError::SizeMismatch {
                what: format!("a buffer of {size} bytes from the dma-buf"),
                needed: size,
                have: facts.size,
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
        let info = vk::BufferCreateInfo::default()
            .size(size)
            .usage(usage)
            .sharing_mode(vk::SharingMode::EXCLUSIVE)
            .push_next(&mut external);
        // SAFETY: valid device; the chained struct is core 1.1 and lives across the call.
        let buffer =
            unsafe { d.create_buffer(&info, None) }.map_err(s.call_err("vkCreateBuffer"))?;
        // SAFETY: the buffer belongs to this device.
        let reqs = unsafe { d.get_buffer_memory_requirements(buffer) };
        let memory = self.import_memory(
            fd,
            &facts,
            fd_bits,
            reqs,
            "buffer",
            Dedicated::Buffer(buffer),
        );
        let (memory, details) = match memory {
            Ok(m) => m,
            Err(e) => {
                // SAFETY: the buffer was created above and never used.
                unsafe { d.destroy_buffer(buffer, None) };
                return Err(e);
            }
        };
        // SAFETY: the memory was imported for this buffer (dedicated) with its
        // requirements' size and a type it allows.
        if let Err(e) = unsafe { d.bind_buffer_memory(buffer, memory, 0) } {
            // SAFETY: neither object is in use; buffer before memory.
            unsafe {
                d.destroy_buffer(buffer, None);
                d.free_memory(memory, None);
            }
            return Err(s.call_err("vkBindBufferMemory")(e));
        }
        Ok(ImportedBuffer {
            device: Arc::clone(s),
            buffer,
            memory,
            size,
            details,
        })
    }

    /// Imports the dma-buf `fd` as a linear 2D image laid out as `layout` says
    /// (`VK_EXT_image_drm_format_modifier` with `DRM_FORMAT_MOD_LINEAR`).
    pub fn import_image(
        &self,
        fd: BorrowedFd<'_>,
        layout: LinearImageLayout,
    ) -> Result<ImportedImage> {
        let s = &self.shared;
        let d = &s.device;
        let unsupported = |reason: String| VulkanError::ImageUnsupported {
            device: s.name(),
            driver: s.info.driver_label(),
            format: layout.format,
            reason,
        };
        if !s.image_modifiers {
            return Err(unsupported(format!(
                "the device lacks {} (or Vulkan 1.2, which it needs)",
                super::instance::EXT_IMAGE_DRM_FORMAT_MODIFIER
            )));
        }
        let texel = texel_size(layout.format).ok_or_else(|| {
            unsupported("not an uncompressed single-plane format this module knows".into())
        })?;
        if layout.width == 0 || layout.height == 0 {
            return Err(unsupported("zero width or height".into()));
        }
        let row = layout.width as u64 * texel;
        if layout.row_pitch < row {
            return Err(VulkanError::SizeMismatch {
                what: format!(
                    "a row of {} texels of {texel} bytes (row pitch {})",
                    layout.width, layout.row_pitch
                ),
                needed: row,
                have: layout.row_pitch,
            });
        }
        let facts = DmaBufFacts::of(fd)?;
        let needed = layout
            .row_pitch
            .checked_mul(layout.height as u64)
            .and_then(|n| n.checked_add(layout.offset))
            .unwrap_or(u64::MAX);
        if needed > facts.size {
            return Err(VulkanError::SizeMismatch {
                what: format!(
                    "a {}x{} image with row pitch {} at offset {}",
                    layout.width, layout.height, layout.row_pitch, layout.offset
                ),
                needed,
                have: facts.size,
            });
        }
        let usage = vk::ImageUsageFlags::TRANSFER_SRC | vk::ImageUsageFlags::TRANSFER_DST;
        // Ask first whether this format/modifier/usage can be imported.
        {
            let mut modifier_info = vk::PhysicalDeviceImageDrmFormatModifierInfoEXT::default()
                .drm_format_modifier(DRM_FORMAT_MOD_LINEAR)
                .sharing_mode(vk::SharingMode::EXCLUSIVE);
            let mut ext_info = vk::PhysicalDeviceExternalImageFormatInfo::default()
                .handle_type(vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT);
            let fmt_info = vk::PhysicalDeviceImageFormatInfo2::default()
                .format(layout.format)
                .ty(vk::ImageType::TYPE_2D)
                .tiling(vk::ImageTiling::DRM_FORMAT_MODIFIER_EXT)
                .usage(usage)
                .push_next(&mut modifier_info)
                .push_next(&mut ext_info);
            let mut ext_props = vk::ExternalImageFormatProperties::default();
            let mut props = vk::ImageFormatProperties2::default().push_next(&mut ext_props);
            // SAFETY: the physical device belongs to this instance; the chained
            // structs are of enabled extensions (or core) and live across the call.
            let r = unsafe {
                s.instance
                    .instance
                    .get_physical_device_image_format_properties2(
                        s.info.handle,
                        &fmt_info,
                        &mut props,
                    )
            };
            let limits = props.image_format_properties;
            match r {
                Ok(()) => {
                    let feats = ext_props
                        .external_memory_properties
                        .external_memory_features;
                    if !feats.contains(vk::ExternalMemoryFeatureFlags::IMPORTABLE) {
                        return Err(unsupported(format!("not importable (features {feats:?})")));
                    }
                    if layout.width > limits.max_extent.width
                        || layout.height > limits.max_extent.height
                    {
                        return Err(unsupported(format!(
                            "{}x{} exceeds the maximum {}x{}",
                            layout.width,
                            layout.height,
                            limits.max_extent.width,
                            limits.max_extent.height
                        )));
                    }
                }
                Err(vk::Result::ERROR_FORMAT_NOT_SUPPORTED) => {
                    return Err(unsupported(
                        "format not supported with DRM_FORMAT_MOD_LINEAR for transfers".into(),
                    ))
                }
                Err(e) => return Err(s.call_err("vkGetPhysicalDeviceImageFormatProperties2")(e)),
            }
        }
        let fd_bits = self.dma_buf_memory_types(fd)?;
        let planes = [vk::SubresourceLayout {
            offset: layout.offset,
            size: 0,
            row_pitch: layout.row_pitch,
            array_pitch: 0,
            depth_pitch: 0,
        }];
        let mut explicit = vk::ImageDrmFormatModifierExplicitCreateInfoEXT::default()
            .drm_format_modifier(DRM_FORMAT_MOD_LINEAR)
            .plane_layouts(&planes);
        let mut external = vk::ExternalMemoryImageCreateInfo::default()
            .handle_types(vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT);
        let info = vk::ImageCreateInfo::default()
            .image_type(vk::ImageType::TYPE_2D)
            .format(layout.format)
            .extent(vk::Extent3D {
                width: layout.width,
                height: layout.height,
                depth: 1,
            })
            .mip_levels(1)
            .array_layers(1)
            .samples(vk::SampleCountFlags::TYPE_1)
            .tiling(vk::ImageTiling::DRM_FORMAT_MODIFIER_EXT)
            .usage(usage)
            .sharing_mode(vk::SharingMode::EXCLUSIVE)
            .initial_layout(vk::ImageLayout::UNDEFINED)
            .push_next(&mut explicit)
            .push_next(&mut external);
        // SAFETY: valid device; the chain holds structs of enabled extensions; all
        // live across the call.
        let image = unsafe { d.create_image(&info, None) }.map_err(s.call_err("vkCreateImage"))?;
        // SAFETY: the image belongs to this device.
        let reqs = unsafe { d.get_image_memory_requirements(image) };
        let (memory, details) =
            match self.import_memory(fd, &facts, fd_bits, reqs, "image", Dedicated::Image(image)) {
                Ok(m) => m,
                Err(e) => {
                    // SAFETY: created above, never used.
                    unsafe { d.destroy_image(image, None) };
                    return Err(e);
                }
            };
        // SAFETY: dedicated memory imported for this image with its requirements.
        if let Err(e) = unsafe { d.bind_image_memory(image, memory, 0) } {
            // SAFETY: neither is in use; image before memory.
            unsafe {
                d.destroy_image(image, None);
                d.free_memory(memory, None);
            }
            return Err(s.call_err("vkBindImageMemory")(e));
        }
        Ok(ImportedImage {
            device: Arc::clone(s),
            image,
            memory,
            layout,
            details,
            current: Mutex::new(vk::ImageLayout::GENERAL),
        })
    }

    /// The import proper: picks the memory type, dups `fd`, allocates with
    /// `VkImportMemoryFdInfoKHR` (dedicated to `target`), and on failure closes the
    /// dup only if the driver has not (lavapipe closes it although the spec leaves it
    /// to the application) and explains the failure.
    fn import_memory(
        &self,
        fd: BorrowedFd<'_>,
        facts: &DmaBufFacts,
        fd_bits: u32,
        reqs: vk::MemoryRequirements,
        what: &'static str,
        target: Dedicated,
    ) -> Result<(vk::DeviceMemory, ImportDetails)> {
        let s = &self.shared;
        let d = &s.device;
        if reqs.size > facts.size {
            return Err(VulkanError::SizeMismatch {
                what: format!(
                    "the {what}'s memory requirements (vkGet*MemoryRequirements: the driver may pad \
                     what the dma-buf holds exactly)"
                ),
                needed: reqs.size,
                have: facts.size,
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
        let mut dedicated = match target {
            Dedicated::Buffer(b) => vk::MemoryDedicatedAllocateInfo::default().buffer(b),
            Dedicated::Image(i) => vk::MemoryDedicatedAllocateInfo::default().image(i),
        };
        let alloc = vk::MemoryAllocateInfo::default()
            .allocation_size(reqs.size)
            .memory_type_index(memory_type)
            .push_next(&mut import)
            .push_next(&mut dedicated);
        // SAFETY: valid device; the import struct names an fd we own (the dup) of
        // the handle type the device supports, and the dedicated struct a resource of
        // this device without memory; all live across the call.
        match unsafe { d.allocate_memory(&alloc, None) } {
            Ok(memory) => {
                // Success: the implementation owns the dup now.
                let _ = dup.into_raw_fd();
                Ok((
                    memory,
                    ImportDetails {
                        dma_buf: facts.clone(),
                        fd_memory_type_bits: fd_bits,
                        resource_memory_type_bits: reqs.memory_type_bits,
                        memory_type,
                        memory_flags: s.info.memory_types[memory_type as usize].flags,
                        allocation_size: reqs.size,
                        dedicated: true,
                    },
                ))
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
                let exporter = facts.exporter_name();
                if s.info.is_cpu() {
                    if let Err(mmap_errno) = mmap_probe(fd, facts.size) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texel_sizes() {
        assert_eq!(texel_size(vk::Format::R8G8B8A8_UNORM), Some(4));
        assert_eq!(texel_size(vk::Format::R8_UNORM), Some(1));
        assert_eq!(texel_size(vk::Format::BC1_RGB_UNORM_BLOCK), None);
    }

    #[test]
    fn identity_follows_the_file() {
        let a = rustix::fs::memfd_create("t", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let b = rustix::io::fcntl_dupfd_cloexec(&a, 0).unwrap();
        assert_eq!(identity(a.as_raw_fd()), identity(b.as_raw_fd()));
        let raw = b.as_raw_fd();
        drop(b);
        // Closed, or (another test thread) reused for a different file.
        assert_ne!(identity(raw), identity(a.as_raw_fd()));
        let st = rustix::fs::fstat(&a).unwrap();
        let ours = (st.st_dev, st.st_ino);
        assert_eq!(
            dup_after_failure(a.as_raw_fd(), ours),
            DupAfterFailure::StillOurs
        );
        assert_eq!(
            dup_after_failure(raw, ours),
            DupAfterFailure::ClosedByDriver
        );
    }
}
