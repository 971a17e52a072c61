//! Importing a dma-buf as a linear 2D image (`VK_EXT_image_drm_format_modifier` with
//! `DRM_FORMAT_MOD_LINEAR`): its layout, the formats this module knows, and the image.

use peerdma_exporter::posted::ImportGuard;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};

use ash::vk;

use super::device::{DeviceShared, LogicalDevice};
use super::error::{Result, VulkanError};
use super::import::{dma_buf_fdinfo, size_of, ImportDetails};
use super::instance::EXT_IMAGE_DRM_FORMAT_MODIFIER;
use super::resource::{Allocation, Created};

/// `DRM_FORMAT_MOD_LINEAR`.
pub const DRM_FORMAT_MOD_LINEAR: u64 = 0;

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
    /// Declared first, so dropped before the memory (and the implementation's mapping)
    /// goes.
    revoke_guard: Option<ImportGuard>,
    allocation: Allocation<vk::Image>,
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

impl ImportedImage {
    /// Whether the dma-buf behind it was revoked while the implementation accessed it
    /// through its own CPU mapping (a caught SIGBUS).
    pub fn revoked_under_access(&self) -> bool {
        self.revoke_guard
            .as_ref()
            .is_some_and(ImportGuard::revoked_under_access)
    }

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
        self.allocation.handle()
    }

    pub(super) fn shared(&self) -> &Arc<DeviceShared> {
        self.allocation.device()
    }

    /// Records that the image moves to `new`; returns the layout it leaves.
    pub(super) fn take_layout(&self, new: vk::ImageLayout) -> vk::ImageLayout {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *cur, new)
    }
}

impl LogicalDevice {
    /// Imports the dma-buf `fd` as a linear 2D image laid out as `layout` says
    /// (`VK_EXT_image_drm_format_modifier` with `DRM_FORMAT_MOD_LINEAR`).
    ///
    /// # Errors
    /// - [`VulkanError::ImageUnsupported`]: the device lacks the extension, or the
    ///   format, size or usage cannot be imported with `DRM_FORMAT_MOD_LINEAR`.
    /// - [`VulkanError::SizeMismatch`]: the rows do not fit the row pitch, or the image
    ///   (or the driver's memory requirements for it) does not fit the dma-buf.
    /// - [`VulkanError::Fd`], [`VulkanError::FdProperties`], [`VulkanError::NoMemoryType`],
    ///   [`VulkanError::CpuAccessRequired`], [`VulkanError::Import`],
    ///   [`VulkanError::Call`]: as for [`LogicalDevice::import_buffer`].
    pub fn import_image(
        &self,
        fd: BorrowedFd<'_>,
        layout: LinearImageLayout,
    ) -> Result<ImportedImage> {
        let s = &self.shared;
        let unsupported = |reason: String| VulkanError::ImageUnsupported {
            device: s.name(),
            driver: s.info.driver_label(),
            format: layout.format,
            reason,
        };
        if !s.image_modifiers {
            return Err(unsupported(format!(
                "the device lacks {} (or Vulkan 1.2, which it needs)",
                EXT_IMAGE_DRM_FORMAT_MODIFIER
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
        let info = dma_buf_fdinfo(fd)?;
        let have = size_of(&info);
        let needed = layout
            .row_pitch
            .checked_mul(layout.height as u64)
            .and_then(|n| n.checked_add(layout.offset))
            .unwrap_or(u64::MAX);
        if needed > have {
            return Err(VulkanError::SizeMismatch {
                what: format!(
                    "a {}x{} image with row pitch {} at offset {}",
                    layout.width, layout.height, layout.row_pitch, layout.offset
                ),
                needed,
                have,
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
        let create = vk::ImageCreateInfo::default()
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
        // live across the call; the image is new and only the guard owns it.
        let mut image =
            unsafe { Created::new(s, "vkCreateImage", |d| d.create_image(&create, None)) }?;
        let details = self.import_memory(fd, &info, fd_bits, &mut image, "image")?;
        let allocation = image.bind()?;
        Ok(ImportedImage {
            revoke_guard: ImportGuard::of_dma_buf(fd).ok(),
            allocation,
            layout,
            details,
            current: Mutex::new(vk::ImageLayout::GENERAL),
        })
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
}
