//! Copies on the logical device's transfer queue: buffer to buffer
//! ([`LogicalDevice::copy`]), linear image to buffer
//! ([`LogicalDevice::copy_image_to_buffer`]), the one recording-and-submit path they share
//! and the one pipeline-barrier helper.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ash::vk;

use super::device::{LogicalDevice, Submit};
use super::error::{Result, VulkanError};
use super::image::{texel_size, ImportedImage};
use super::resource::BufferResource;

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

/// The stages and barriers of one `vkCmdPipelineBarrier`.
struct Barriers<'a> {
    src_stage: vk::PipelineStageFlags,
    dst_stage: vk::PipelineStageFlags,
    memory: &'a [vk::MemoryBarrier<'a>],
    buffers: &'a [vk::BufferMemoryBarrier<'a>],
    images: &'a [vk::ImageMemoryBarrier<'a>],
}

impl<'a> Barriers<'a> {
    /// Before the transfer: acquire resources (from `VK_QUEUE_FAMILY_EXTERNAL`) for it.
    fn acquire() -> Self {
        Barriers {
            src_stage: vk::PipelineStageFlags::TOP_OF_PIPE,
            dst_stage: vk::PipelineStageFlags::TRANSFER,
            memory: &[],
            buffers: &[],
            images: &[],
        }
    }

    /// After the transfer: make its writes visible to the host.
    fn to_host(memory: &'a [vk::MemoryBarrier<'a>]) -> Self {
        Barriers {
            src_stage: vk::PipelineStageFlags::TRANSFER,
            dst_stage: vk::PipelineStageFlags::HOST,
            memory,
            buffers: &[],
            images: &[],
        }
    }

    fn buffers(self, buffers: &'a [vk::BufferMemoryBarrier<'a>]) -> Self {
        Barriers { buffers, ..self }
    }

    fn images(self, images: &'a [vk::ImageMemoryBarrier<'a>]) -> Self {
        Barriers { images, ..self }
    }
}

/// Records one `vkCmdPipelineBarrier`.
///
/// # Safety
/// `cb` is a command buffer of `d` in the recording state; every buffer and image the
/// barriers name belongs to `d` and outlives the submission.
unsafe fn barrier(d: &ash::Device, cb: vk::CommandBuffer, b: Barriers<'_>) {
    // SAFETY: the caller's contract.
    unsafe {
        d.cmd_pipeline_barrier(
            cb,
            b.src_stage,
            b.dst_stage,
            vk::DependencyFlags::empty(),
            b.memory,
            b.buffers,
            b.images,
        )
    }
}

impl LogicalDevice {
    /// Copies `region` from `src` to `dst` on the transfer queue with
    /// `vkCmdCopyBuffer` and waits for it. Imported buffers are acquired from
    /// `VK_QUEUE_FAMILY_EXTERNAL` first; the result is made visible to the host.
    ///
    /// # Errors
    /// [`VulkanError::DeviceMismatch`] when a buffer belongs to another device,
    /// [`VulkanError::SizeMismatch`] when the region is empty or falls outside a
    /// buffer, [`VulkanError::Call`] when recording, submitting or waiting fails.
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
        let timing = self.run_transfer(
            region.size,
            |d, cb| {
                if !acquire.is_empty() {
                    // SAFETY: `cb` is recording; both buffers belong to this device
                    // (checked above) and outlive the submission, which `run_transfer`
                    // waits for; the region lies inside both (checked above).
                    unsafe { barrier(d, cb, Barriers::acquire().buffers(&acquire)) };
                }
            },
            |d, cb| {
                // SAFETY: as above.
                unsafe { d.cmd_copy_buffer(cb, src.raw(), dst.raw(), &copy) }
            },
        )?;
        for (what, b) in [("copy source", src), ("copy destination", dst)] {
            if b.revoked_under_access() {
                return Err(VulkanError::RevokedUnderAccess {
                    what,
                    device: self.shared.name(),
                });
            }
        }
        Ok(timing)
    }

    /// Copies the whole of an imported linear image into `dst` (tightly packed rows,
    /// `width * texel size` bytes each) with `vkCmdCopyImageToBuffer`, and waits.
    /// The image is acquired from `VK_QUEUE_FAMILY_EXTERNAL` and moved to
    /// `TRANSFER_SRC_OPTIMAL` (from `GENERAL` the first time: the layout in which a
    /// foreign agent hands over a linear dma-buf, which keeps its contents).
    ///
    /// # Errors
    /// [`VulkanError::DeviceMismatch`], [`VulkanError::SizeMismatch`] (the image does
    /// not fit `dst`) and [`VulkanError::Call`], as for [`LogicalDevice::copy`].
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
        let texel = texel_size(l.format).expect("checked at import");
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
        let timing = self.run_transfer(
            bytes,
            |d, cb| {
                // SAFETY: `cb` is recording; the image belongs to this device and is
                // bound to memory; the barrier covers its only subresource.
                unsafe { barrier(d, cb, Barriers::acquire().images(&acquire)) }
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
        )?;
        if src.revoked_under_access() {
            return Err(VulkanError::RevokedUnderAccess {
                what: "image copy source",
                device: self.shared.name(),
            });
        }
        if dst.revoked_under_access() {
            return Err(VulkanError::RevokedUnderAccess {
                what: "image copy destination",
                device: self.shared.name(),
            });
        }
        Ok(timing)
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
            barrier(d, cb, Barriers::to_host(&to_host));
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

    /// Runs on the host's Vulkan device (lavapipe in the testbed: `tests/run-suite.sh`
    /// installs it first): copies through device-local memory and back, and refuses
    /// out-of-range regions. Fails, naming the packages, on a host without one.
    #[test]
    fn copies_between_own_buffers_on_the_hosts_device() {
        use super::super::{DeviceSelector, Vulkan};
        const FIX: &str = "this test needs a Vulkan device that imports dma-bufs: \
            apt-get install libvulkan1 && apt-get install -t bookworm-backports mesa-vulkan-drivers \
            (or: target/debug/peerdma-testbed host-packages vulkan, as root)";
        let vk = Vulkan::load().unwrap_or_else(|e| panic!("{e}; {FIX}"));
        let pd = vk
            .select(&DeviceSelector::Auto)
            .unwrap_or_else(|e| panic!("{e}; {FIX}"));
        assert!(
            pd.can_import_dma_buf(),
            "{} cannot import dma-bufs (lacks {}); {FIX}",
            pd.name,
            pd.missing_for_import().join(", ")
        );
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
}
