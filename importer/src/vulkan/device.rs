//! A logical device opened for dma-buf import, with one transfer queue, and the GPU
//! copy that moves bytes between its buffers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ash::vk;

use super::buffer::BufferResource;
use super::error::{Result, VulkanError};
use super::import::ImportedImage;
use super::instance::{InstanceShared, PhysicalDeviceInfo, Vulkan};

/// A Vulkan device that can import dma-bufs, with a transfer queue.
///
/// Everything made from it (imported memory, buffers, images) keeps it alive; it is
/// destroyed after the last of them, and the instance after it.
pub struct Gpu {
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

/// How long one GPU copy took.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CopyTiming {
    /// Bytes copied.
    pub bytes: u64,
    /// Between timestamps written before and after the copy on the GPU, when the
    /// queue has timestamps.
    pub gpu: Option<Duration>,
    /// From submit to fence signalled, as seen by the host.
    pub wall: Duration,
}

impl CopyTiming {
    /// The GPU time when known, else the wall time.
    pub fn best(&self) -> Duration {
        self.gpu.unwrap_or(self.wall)
    }

    /// Bytes per second over [`CopyTiming::best`].
    pub fn bytes_per_second(&self) -> f64 {
        let s = self.best().as_secs_f64();
        if s > 0.0 {
            self.bytes as f64 / s
        } else {
            f64::INFINITY
        }
    }
}

/// One region of a buffer-to-buffer copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyRegion {
    /// Offset in the source.
    pub src_offset: u64,
    /// Offset in the destination.
    pub dst_offset: u64,
    /// Bytes.
    pub size: u64,
}

impl CopyRegion {
    /// `size` bytes from offset 0 to offset 0.
    pub fn whole(size: u64) -> Self {
        CopyRegion {
            src_offset: 0,
            dst_offset: 0,
            size,
        }
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
    pub fn open(&self, physical: &PhysicalDeviceInfo) -> Result<Gpu> {
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
        Ok(Gpu {
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

impl Gpu {
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

    /// Copies `region` from `src` to `dst` on the transfer queue with
    /// `vkCmdCopyBuffer` and waits for it. Imported buffers are acquired from
    /// `VK_QUEUE_FAMILY_EXTERNAL` first; the result is made visible to the host.
    pub fn copy(
        &self,
        src: &dyn BufferResource,
        dst: &dyn BufferResource,
        region: CopyRegion,
    ) -> Result<CopyTiming> {
        for (what, b) in [("copy source", src), ("copy destination", dst)] {
            if !Arc::ptr_eq(b.device_shared(), &self.shared) {
                return Err(VulkanError::DeviceMismatch(what));
            }
        }
        let check = |what: &str, offset: u64, size: u64| -> Result<()> {
            if offset.checked_add(region.size).is_none_or(|end| end > size) || region.size == 0 {
                return Err(VulkanError::SizeMismatch {
                    what: format!("{what} of {} bytes at offset {offset}", region.size),
                    needed: offset.saturating_add(region.size),
                    have: size,
                });
            }
            Ok(())
        };
        check("copy source", region.src_offset, src.size())?;
        check("copy destination", region.dst_offset, dst.size())?;

        let family = self.shared.queue_family;
        let mut acquire = Vec::new();
        for (b, access) in [
            (src, vk::AccessFlags::TRANSFER_READ),
            (dst, vk::AccessFlags::TRANSFER_WRITE),
        ] {
            if b.is_external() {
                acquire.push(
                    vk::BufferMemoryBarrier::default()
                        .src_access_mask(vk::AccessFlags::empty())
                        .dst_access_mask(access)
                        .src_queue_family_index(vk::QUEUE_FAMILY_EXTERNAL)
                        .dst_queue_family_index(family)
                        .buffer(b.raw())
                        .offset(0)
                        .size(vk::WHOLE_SIZE),
                );
            }
        }
        let copy = [vk::BufferCopy {
            src_offset: region.src_offset,
            dst_offset: region.dst_offset,
            size: region.size,
        }];
        self.run_transfer(
            region.size,
            |d, cb| {
                // SAFETY: `cb` is recording; both buffers belong to this device (checked
                // above) and outlive the submission, which `run_transfer` waits for; the
                // region lies inside both (checked above).
                unsafe {
                    if !acquire.is_empty() {
                        d.cmd_pipeline_barrier(
                            cb,
                            vk::PipelineStageFlags::TOP_OF_PIPE,
                            vk::PipelineStageFlags::TRANSFER,
                            vk::DependencyFlags::empty(),
                            &[],
                            &acquire,
                            &[],
                        );
                    }
                }
            },
            |d, cb| {
                // SAFETY: as above.
                unsafe { d.cmd_copy_buffer(cb, src.raw(), dst.raw(), &copy) }
            },
        )
    }

    /// Copies the whole of an imported linear image into `dst` (tightly packed rows,
    /// `width * texel size` bytes each) with `vkCmdCopyImageToBuffer`, and waits.
    /// The image is acquired from `VK_QUEUE_FAMILY_EXTERNAL` and moved to
    /// `TRANSFER_SRC_OPTIMAL` (from `GENERAL` the first time: the layout in which a
    /// foreign agent hands over a linear dma-buf, which keeps its contents).
    pub fn copy_image_to_buffer(
        &self,
        src: &ImportedImage,
        dst: &dyn BufferResource,
    ) -> Result<CopyTiming> {
        if !Arc::ptr_eq(src.shared(), &self.shared) {
            return Err(VulkanError::DeviceMismatch("image copy source"));
        }
        if !Arc::ptr_eq(dst.device_shared(), &self.shared) {
            return Err(VulkanError::DeviceMismatch("image copy destination"));
        }
        let l = *src.layout();
        let texel = super::import::texel_size(l.format).expect("checked at import");
        let bytes = l.width as u64 * l.height as u64 * texel;
        if bytes > dst.size() {
            return Err(VulkanError::SizeMismatch {
                what: format!(
                    "a {}x{} {:?} image copied into a buffer",
                    l.width, l.height, l.format
                ),
                needed: bytes,
                have: dst.size(),
            });
        }
        let old_layout = src.take_layout(vk::ImageLayout::TRANSFER_SRC_OPTIMAL);
        let range = vk::ImageSubresourceRange {
            aspect_mask: vk::ImageAspectFlags::COLOR,
            base_mip_level: 0,
            level_count: 1,
            base_array_layer: 0,
            layer_count: 1,
        };
        let acquire = [vk::ImageMemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::empty())
            .dst_access_mask(vk::AccessFlags::TRANSFER_READ)
            .old_layout(old_layout)
            .new_layout(vk::ImageLayout::TRANSFER_SRC_OPTIMAL)
            .src_queue_family_index(vk::QUEUE_FAMILY_EXTERNAL)
            .dst_queue_family_index(self.shared.queue_family)
            .image(src.raw())
            .subresource_range(range)];
        let region = [vk::BufferImageCopy {
            buffer_offset: 0,
            buffer_row_length: 0,
            buffer_image_height: 0,
            image_subresource: vk::ImageSubresourceLayers {
                aspect_mask: vk::ImageAspectFlags::COLOR,
                mip_level: 0,
                base_array_layer: 0,
                layer_count: 1,
            },
            image_offset: vk::Offset3D::default(),
            image_extent: vk::Extent3D {
                width: l.width,
                height: l.height,
                depth: 1,
            },
        }];
        self.run_transfer(
            bytes,
            |d, cb| {
                // SAFETY: `cb` is recording; the image belongs to this device and is
                // bound to memory; the barrier covers its only subresource.
                unsafe {
                    d.cmd_pipeline_barrier(
                        cb,
                        vk::PipelineStageFlags::TOP_OF_PIPE,
                        vk::PipelineStageFlags::TRANSFER,
                        vk::DependencyFlags::empty(),
                        &[],
                        &[],
                        &acquire,
                    )
                }
            },
            |d, cb| {
                // SAFETY: the image is in TRANSFER_SRC_OPTIMAL after the barrier; the
                // destination belongs to this device and holds `bytes` (checked above).
                unsafe {
                    d.cmd_copy_image_to_buffer(
                        cb,
                        src.raw(),
                        vk::ImageLayout::TRANSFER_SRC_OPTIMAL,
                        dst.raw(),
                        &region,
                    )
                }
            },
        )
    }

    /// Records `prepare` (barriers), then `transfer` between two timestamps, then a
    /// barrier that makes transfer writes visible to the host; submits on the queue
    /// and waits for the fence. The command buffer and fence are freed on every path.
    fn run_transfer(
        &self,
        bytes: u64,
        prepare: impl FnOnce(&ash::Device, vk::CommandBuffer),
        transfer: impl FnOnce(&ash::Device, vk::CommandBuffer),
    ) -> Result<CopyTiming> {
        let d = &self.shared.device;
        let err = |call| self.shared.call_err(call);
        let submit = self.shared.submit.lock().unwrap_or_else(|e| e.into_inner());
        let alloc = vk::CommandBufferAllocateInfo::default()
            .command_pool(submit.pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        // SAFETY: the pool belongs to this device and is only used under `submit`.
        let cb = unsafe { d.allocate_command_buffers(&alloc) }
            .map_err(err("vkAllocateCommandBuffers"))?[0];
        // SAFETY: valid device; the fence is destroyed below.
        let fence = match unsafe { d.create_fence(&vk::FenceCreateInfo::default(), None) } {
            Ok(f) => f,
            Err(e) => {
                // SAFETY: `cb` came from this pool and was never submitted.
                unsafe { d.free_command_buffers(submit.pool, &[cb]) };
                return Err(err("vkCreateFence")(e));
            }
        };
        let result = self.record_and_run(&submit, cb, fence, bytes, prepare, transfer);
        // SAFETY: the fence was waited on, or never submitted, or the wait failed and
        // the device was drained with vkDeviceWaitIdle; so neither object is in use.
        unsafe {
            d.destroy_fence(fence, None);
            d.free_command_buffers(submit.pool, &[cb]);
        }
        result
    }

    fn record_and_run(
        &self,
        submit: &Submit,
        cb: vk::CommandBuffer,
        fence: vk::Fence,
        bytes: u64,
        prepare: impl FnOnce(&ash::Device, vk::CommandBuffer),
        transfer: impl FnOnce(&ash::Device, vk::CommandBuffer),
    ) -> Result<CopyTiming> {
        let d = &self.shared.device;
        let err = |call| self.shared.call_err(call);
        let begin = vk::CommandBufferBeginInfo::default()
            .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
        let to_host = [vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::TRANSFER_WRITE)
            .dst_access_mask(vk::AccessFlags::HOST_READ | vk::AccessFlags::MEMORY_READ)];
        // SAFETY: `cb` is a fresh primary command buffer of this device, recorded
        // once; the query pool holds 2 timestamp queries.
        unsafe {
            d.begin_command_buffer(cb, &begin)
                .map_err(err("vkBeginCommandBuffer"))?;
            if let Some(q) = submit.query_pool {
                d.cmd_reset_query_pool(cb, q, 0, 2);
            }
        }
        prepare(d, cb);
        if let Some(q) = submit.query_pool {
            // SAFETY: as above; query 0 was reset in this command buffer.
            unsafe { d.cmd_write_timestamp(cb, vk::PipelineStageFlags::TOP_OF_PIPE, q, 0) };
        }
        transfer(d, cb);
        // SAFETY: as above.
        unsafe {
            if let Some(q) = submit.query_pool {
                d.cmd_write_timestamp(cb, vk::PipelineStageFlags::BOTTOM_OF_PIPE, q, 1);
            }
            d.cmd_pipeline_barrier(
                cb,
                vk::PipelineStageFlags::TRANSFER,
                vk::PipelineStageFlags::HOST,
                vk::DependencyFlags::empty(),
                &to_host,
                &[],
                &[],
            );
            d.end_command_buffer(cb)
                .map_err(err("vkEndCommandBuffer"))?;
        }
        let cbs = [cb];
        let info = [vk::SubmitInfo::default().command_buffers(&cbs)];
        let start = Instant::now();
        // SAFETY: the queue is used only under the `submit` lock the caller holds;
        // `cb` is fully recorded; the fence is unsignalled and of this device.
        unsafe { d.queue_submit(submit.queue, &info, fence) }.map_err(err("vkQueueSubmit"))?;
        // SAFETY: the fence belongs to this device.
        if let Err(e) = unsafe { d.wait_for_fences(&[fence], true, u64::MAX) } {
            // SAFETY: drains the device so that the caller may free `cb` and `fence`.
            let _ = unsafe { d.device_wait_idle() };
            return Err(err("vkWaitForFences")(e));
        }
        let wall = start.elapsed();
        let gpu = match submit.query_pool {
            Some(q) => {
                let mut ts = [0u64; 2];
                // SAFETY: both queries were written by the completed submission.
                unsafe {
                    d.get_query_pool_results(
                        q,
                        0,
                        &mut ts,
                        vk::QueryResultFlags::TYPE_64 | vk::QueryResultFlags::WAIT,
                    )
                }
                .map_err(err("vkGetQueryPoolResults"))?;
                let ticks = ts[1].wrapping_sub(ts[0]);
                Some(Duration::from_nanos(
                    (ticks as f64 * self.shared.timestamp_period_ns) as u64,
                ))
            }
            None => None,
        };
        Ok(CopyTiming { bytes, gpu, wall })
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

    /// Runs on the host's Vulkan device when there is one (lavapipe here): copies
    /// through device-local memory and back, and refuses out-of-range regions.
    #[test]
    fn copies_between_own_buffers_on_the_hosts_device() {
        use super::super::{DeviceSelector, Vulkan};
        let Ok(vk) = Vulkan::load() else {
            eprintln!("skipped: no Vulkan loader");
            return;
        };
        let Ok(pd) = vk.select(&DeviceSelector::Auto) else {
            eprintln!("skipped: no Vulkan device");
            return;
        };
        if !pd.can_import_dma_buf() {
            eprintln!("skipped: {} cannot import dma-bufs", pd.name);
            return;
        }
        let gpu = vk.open(&pd).expect("open");
        drop(vk); // the device keeps the instance alive
        let size = 1u64 << 20;
        let src = gpu.staging_buffer(size).unwrap();
        let mid = gpu.device_local_buffer(size).unwrap();
        let dst = gpu.staging_buffer(size).unwrap();
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + i / 4096) as u8).collect();
        src.write(0, &data).unwrap();
        let t = gpu.copy(&src, &mid, CopyRegion::whole(size)).unwrap();
        assert_eq!(t.bytes, size);
        gpu.copy(&mid, &dst, CopyRegion::whole(size)).unwrap();
        let mut back = vec![0u8; size as usize];
        dst.read(0, &mut back).unwrap();
        assert!(back == data, "bytes differ after the round trip");
        let bad = CopyRegion {
            src_offset: 4096,
            dst_offset: 0,
            size,
        };
        let err = gpu.copy(&src, &dst, bad).unwrap_err();
        assert_eq!(err.kind(), "size_mismatch", "{err}");
        assert!(
            mid.read(0, &mut back[..16]).is_err(),
            "device-local memory is not mapped"
        );
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
