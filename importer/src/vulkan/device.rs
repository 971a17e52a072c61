//! The logical device (`VkDevice`) opened for dma-buf import, with one transfer queue.
//! What is made from it lives in `own_buffer.rs`, `import.rs` and `image.rs`; the copies
//! that run on its queue in `transfer.rs`.

use std::sync::{Arc, Mutex};

use ash::vk;

use super::error::{Result, VulkanError};
use super::instance::{InstanceShared, PhysicalDeviceInfo, Vulkan};

/// A Vulkan logical device (`VkDevice`) that can import dma-bufs, with a transfer queue.
///
/// Everything made from it (imported memory, buffers, images) keeps it alive; it is
/// destroyed after the last of them, and the instance after it.
pub struct LogicalDevice {
    pub(super) shared: Arc<DeviceShared>,
}

/// The queue and its command pool: used from one thread at a time.
pub(super) struct Submit {
    pub(super) queue: vk::Queue,
    pub(super) pool: vk::CommandPool,
    pub(super) query_pool: Option<vk::QueryPool>,
}

/// Owns the logical device (public only to the sealed trait, not exported).
pub struct DeviceShared {
    pub(super) info: PhysicalDeviceInfo,
    pub(super) device: ash::Device,
    pub(super) memory_fd: ash::khr::external_memory_fd::Device,
    pub(super) queue_family: u32,
    pub(super) queue_flags: vk::QueueFlags,
    pub(super) timestamp_period_ns: f64,
    pub(super) submit: Mutex<Submit>,
    pub(super) image_modifiers: bool,
    /// Declared last: `Drop` destroys the device first, then the fields drop in
    /// order, so the instance can only go after its device.
    pub(super) instance: Arc<InstanceShared>,
}

impl Drop for DeviceShared {
    fn drop(&mut self) {
        let submit = self.submit.get_mut().unwrap_or_else(|e| e.into_inner());
        // SAFETY: every object made from this device holds an Arc to it, so none is
        // left; the pools belong to this device; nothing runs on the queue after the
        // wait; each object is destroyed exactly once, children before the device.
        unsafe {
            let _ = self.device.device_wait_idle();
            if let Some(q) = submit.query_pool.take() {
                self.device.destroy_query_pool(q, None);
            }
            self.device.destroy_command_pool(submit.pool, None);
            self.device.destroy_device(None);
        }
    }
}

impl DeviceShared {
    pub(super) fn name(&self) -> String {
        self.info.name.clone()
    }

    pub(super) fn call_err(&self, call: &'static str) -> impl Fn(vk::Result) -> VulkanError + '_ {
        move |result| VulkanError::Call {
            call,
            device: self.name(),
            result,
        }
    }

    /// The first memory type in `allowed` that has all of `required`, preferring one
    /// that also has `preferred` and none of `avoid`.
    pub(super) fn pick_memory_type(
        &self,
        allowed: u32,
        required: vk::MemoryPropertyFlags,
        preferred: vk::MemoryPropertyFlags,
        avoid: vk::MemoryPropertyFlags,
    ) -> Option<u32> {
        let candidates = || {
            self.info
                .memory_types
                .iter()
                .filter(move |t| allowed & (1 << t.index) != 0 && t.flags.contains(required))
        };
        candidates()
            .find(|t| t.flags.contains(preferred) && !t.flags.intersects(avoid))
            .or_else(|| candidates().find(|t| t.flags.contains(preferred)))
            .or_else(|| candidates().next())
            .map(|t| t.index)
    }
}

/// Picks the queue family for copies: a transfer-only family if there is one (the
/// DMA engine on discrete GPUs), else any with transfer, compute or graphics.
fn pick_queue_family(
    props: &[vk::QueueFamilyProperties],
) -> Option<(u32, vk::QueueFamilyProperties)> {
    let gc = vk::QueueFlags::GRAPHICS | vk::QueueFlags::COMPUTE;
    let usable = |p: &vk::QueueFamilyProperties| {
        p.queue_count > 0 && p.queue_flags.intersects(vk::QueueFlags::TRANSFER | gc)
    };
    props
        .iter()
        .enumerate()
        .find(|(_, p)| {
            usable(p)
                && p.queue_flags.contains(vk::QueueFlags::TRANSFER)
                && !p.queue_flags.intersects(gc)
        })
        .or_else(|| props.iter().enumerate().find(|(_, p)| usable(p)))
        .map(|(i, p)| (i as u32, *p))
}

impl Vulkan {
    /// Opens `physical` for dma-buf import: checks the extensions first (an error
    /// names what is missing and, for NVIDIA's proprietary driver, says that it has no
    /// dma-buf import), then creates the device with one transfer queue.
    ///
    /// # Errors
    /// [`VulkanError::DmaBufImportUnsupported`] (naming the missing extensions and the
    /// fix) when the device cannot import dma-bufs or speaks only Vulkan 1.0,
    /// [`VulkanError::NoTransferQueue`] when no queue family can copy, and
    /// [`VulkanError::Call`] when creating the device or its pools fails.
    pub fn open(&self, physical: &PhysicalDeviceInfo) -> Result<LogicalDevice> {
        if !physical.can_import_dma_buf() || physical.api_version < vk::API_VERSION_1_1 {
            return Err(physical.import_unsupported());
        }
        let instance = &self.shared.instance;
        let pd = physical.handle;
        // SAFETY: `pd` comes from this instance.
        let families = unsafe { instance.get_physical_device_queue_family_properties(pd) };
        let (family, family_props) =
            pick_queue_family(&families).ok_or_else(|| VulkanError::NoTransferQueue {
                device: physical.name.clone(),
            })?;
        let mut ext_names = vec![
            ash::khr::external_memory_fd::NAME.as_ptr(),
            ash::ext::external_memory_dma_buf::NAME.as_ptr(),
        ];
        // Image import needs DRM format modifiers, which need image_format_list
        // (core in 1.2).
        let image_modifiers = physical.image_drm_format_modifier
            && physical.api_version >= vk::API_VERSION_1_2
            && self.shared.api_version >= vk::API_VERSION_1_2;
        if image_modifiers {
            ext_names.push(ash::ext::image_drm_format_modifier::NAME.as_ptr());
        }
        let priorities = [1.0f32];
        let queue_info = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(family)
            .queue_priorities(&priorities)];
        let info = vk::DeviceCreateInfo::default()
            .queue_create_infos(&queue_info)
            .enabled_extension_names(&ext_names);
        // SAFETY: `pd` comes from this instance; every extension enabled is offered
        // by the device; `info` and its arrays live across the call.
        let device = unsafe { instance.create_device(pd, &info, None) }.map_err(|result| {
            VulkanError::Call {
                call: "vkCreateDevice",
                device: physical.name.clone(),
                result,
            }
        })?;
        // From here on `device` must be destroyed on every error path.
        let cleanup = |device: &ash::Device, pool: Option<vk::CommandPool>| {
            // SAFETY: the device (and pool) were just created and nothing uses them.
            unsafe {
                if let Some(p) = pool {
                    device.destroy_command_pool(p, None);
                }
                device.destroy_device(None);
            }
        };
        // SAFETY: the family and index 0 were requested at creation.
        let queue = unsafe { device.get_device_queue(family, 0) };
        let pool_info = vk::CommandPoolCreateInfo::default()
            .queue_family_index(family)
            .flags(
                vk::CommandPoolCreateFlags::TRANSIENT
                    | vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER,
            );
        // SAFETY: valid device and create info.
        let pool = match unsafe { device.create_command_pool(&pool_info, None) } {
            Ok(p) => p,
            Err(result) => {
                cleanup(&device, None);
                return Err(VulkanError::Call {
                    call: "vkCreateCommandPool",
                    device: physical.name.clone(),
                    result,
                });
            }
        };
        // SAFETY: `pd` comes from this instance.
        let limits = unsafe { instance.get_physical_device_properties(pd) }.limits;
        let query_pool = if family_props.timestamp_valid_bits > 0 && limits.timestamp_period > 0.0 {
            let qinfo = vk::QueryPoolCreateInfo::default()
                .query_type(vk::QueryType::TIMESTAMP)
                .query_count(2);
            // SAFETY: valid device and create info.
            match unsafe { device.create_query_pool(&qinfo, None) } {
                Ok(q) => Some(q),
                Err(result) => {
                    cleanup(&device, Some(pool));
                    return Err(VulkanError::Call {
                        call: "vkCreateQueryPool",
                        device: physical.name.clone(),
                        result,
                    });
                }
            }
        } else {
            None
        };
        let memory_fd = ash::khr::external_memory_fd::Device::new(instance, &device);
        Ok(LogicalDevice {
            shared: Arc::new(DeviceShared {
                info: physical.clone(),
                device,
                memory_fd,
                queue_family: family,
                queue_flags: family_props.queue_flags,
                timestamp_period_ns: limits.timestamp_period as f64,
                submit: Mutex::new(Submit {
                    queue,
                    pool,
                    query_pool,
                }),
                image_modifiers,
                instance: Arc::clone(&self.shared),
            }),
        })
    }
}

impl LogicalDevice {
    /// The physical device this was opened on.
    pub fn info(&self) -> &PhysicalDeviceInfo {
        &self.shared.info
    }

    /// The queue family used for copies, and its capabilities.
    pub fn queue_family(&self) -> (u32, vk::QueueFlags) {
        (self.shared.queue_family, self.shared.queue_flags)
    }

    /// Whether the queue has timestamps (then copies report GPU time).
    pub fn has_timestamps(&self) -> bool {
        self.shared
            .submit
            .lock()
            .map(|s| s.query_pool.is_some())
            .unwrap_or(false)
    }

    /// Whether linear images can be imported (`VK_EXT_image_drm_format_modifier`
    /// enabled).
    pub fn can_import_images(&self) -> bool {
        self.shared.image_modifiers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fam(flags: vk::QueueFlags) -> vk::QueueFamilyProperties {
        vk::QueueFamilyProperties {
            queue_flags: flags,
            queue_count: 1,
            ..Default::default()
        }
    }

    #[test]
    fn prefers_a_transfer_only_family() {
        let f = [
            fam(vk::QueueFlags::GRAPHICS | vk::QueueFlags::COMPUTE | vk::QueueFlags::TRANSFER),
            fam(vk::QueueFlags::COMPUTE | vk::QueueFlags::TRANSFER),
            fam(vk::QueueFlags::TRANSFER | vk::QueueFlags::SPARSE_BINDING),
        ];
        assert_eq!(pick_queue_family(&f).unwrap().0, 2);
        assert_eq!(pick_queue_family(&f[..2]).unwrap().0, 0);
        assert!(pick_queue_family(&[fam(vk::QueueFlags::SPARSE_BINDING)]).is_none());
    }
}
