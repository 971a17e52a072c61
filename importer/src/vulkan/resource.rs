//! What every buffer and image of a [`LogicalDevice`](super::LogicalDevice) shares: the
//! [`BufferResource`] trait that copies accept, one [`Allocation`] (a `VkBuffer` or
//! `VkImage` with the `VkDeviceMemory` bound to it, both freed by one `Drop`), and the
//! [`Created`] guard that cleans up a half-built one on every error path of a
//! create → allocate or import → bind sequence.

use std::mem::ManuallyDrop;
use std::sync::Arc;

use ash::prelude::VkResult;
use ash::vk;

use super::device::DeviceShared;
use super::error::Result;

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

/// A buffer that [`LogicalDevice::copy`](super::LogicalDevice::copy) can read or write.
pub trait BufferResource: Sealed {
    /// The Vulkan handle.
    fn raw(&self) -> vk::Buffer;
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Whether its memory comes from outside Vulkan (an imported dma-buf): copies
    /// acquire it from `VK_QUEUE_FAMILY_EXTERNAL` first.
    fn is_external(&self) -> bool;
    /// Whether the dma-buf behind it was revoked while the implementation accessed it
    /// through its own CPU mapping (a caught SIGBUS; see `ImportGuard`); false for
    /// memory Vulkan owns.
    fn revoked_under_access(&self) -> bool;
}

/// A `VkBuffer` or `VkImage`: what memory is bound to.
pub(super) trait Bindable: Copy {
    /// The bind call's name, for errors.
    const BIND_CALL: &'static str;

    /// The `VkMemoryDedicatedAllocateInfo` that dedicates an allocation to this.
    fn dedicated(self) -> vk::MemoryDedicatedAllocateInfo<'static>;

    /// Destroys the handle.
    ///
    /// # Safety
    /// `self` was created from `device`, is not in use, and is destroyed only once.
    unsafe fn destroy(self, device: &ash::Device);

    /// `vkGet*MemoryRequirements`.
    ///
    /// # Safety
    /// `self` was created from `device` and is not destroyed.
    unsafe fn requirements(self, device: &ash::Device) -> vk::MemoryRequirements;

    /// `vkBind*Memory` at offset 0.
    ///
    /// # Safety
    /// Both were made from `device`; `memory` fits `self`'s requirements (size and
    /// type) and `self` has no memory bound yet.
    unsafe fn bind(self, device: &ash::Device, memory: vk::DeviceMemory) -> VkResult<()>;
}

impl Bindable for vk::Buffer {
    const BIND_CALL: &'static str = "vkBindBufferMemory";

    fn dedicated(self) -> vk::MemoryDedicatedAllocateInfo<'static> {
        vk::MemoryDedicatedAllocateInfo::default().buffer(self)
    }

    unsafe fn destroy(self, device: &ash::Device) {
        // SAFETY: the caller's contract.
        unsafe { device.destroy_buffer(self, None) }
    }

    unsafe fn requirements(self, device: &ash::Device) -> vk::MemoryRequirements {
        // SAFETY: the caller's contract.
        unsafe { device.get_buffer_memory_requirements(self) }
    }

    unsafe fn bind(self, device: &ash::Device, memory: vk::DeviceMemory) -> VkResult<()> {
        // SAFETY: the caller's contract.
        unsafe { device.bind_buffer_memory(self, memory, 0) }
    }
}

impl Bindable for vk::Image {
    const BIND_CALL: &'static str = "vkBindImageMemory";

    fn dedicated(self) -> vk::MemoryDedicatedAllocateInfo<'static> {
        vk::MemoryDedicatedAllocateInfo::default().image(self)
    }

    unsafe fn destroy(self, device: &ash::Device) {
        // SAFETY: the caller's contract.
        unsafe { device.destroy_image(self, None) }
    }

    unsafe fn requirements(self, device: &ash::Device) -> vk::MemoryRequirements {
        // SAFETY: the caller's contract.
        unsafe { device.get_image_memory_requirements(self) }
    }

    unsafe fn bind(self, device: &ash::Device, memory: vk::DeviceMemory) -> VkResult<()> {
        // SAFETY: the caller's contract.
        unsafe { device.bind_image_memory(self, memory, 0) }
    }
}

/// A buffer or image with the memory bound to it. Dropping destroys the handle, then
/// frees the memory (for an imported dma-buf that releases Vulkan's reference to it);
/// the `Arc` keeps the device alive until then.
pub(super) struct Allocation<H: Bindable> {
    device: Arc<DeviceShared>,
    handle: H,
    memory: vk::DeviceMemory,
}

impl<H: Bindable> Allocation<H> {
    /// The device both belong to.
    pub(super) fn device(&self) -> &Arc<DeviceShared> {
        &self.device
    }

    /// The buffer or image.
    pub(super) fn handle(&self) -> H {
        self.handle
    }

    /// The memory bound to it.
    pub(super) fn memory(&self) -> vk::DeviceMemory {
        self.memory
    }
}

impl<H: Bindable> Drop for Allocation<H> {
    fn drop(&mut self) {
        let d = &self.device.device;
        // SAFETY: both were made from this device (only `Created::bind` builds an
        // Allocation), which the Arc keeps alive; copies wait for their fence, so the
        // GPU no longer uses them; the handle goes before the memory bound to it, each
        // exactly once; freeing mapped memory unmaps it.
        unsafe {
            self.handle.destroy(d);
            d.free_memory(self.memory, None);
        }
    }
}

/// A buffer or image being built: destroyed (and the memory given to it freed) when
/// dropped, unless [`Created::bind`] turned it into an [`Allocation`].
pub(super) struct Created<'d, H: Bindable> {
    device: &'d Arc<DeviceShared>,
    handle: H,
    memory: Option<vk::DeviceMemory>,
}

impl<'d, H: Bindable> Created<'d, H> {
    /// Runs `create` (a `vkCreate*` call on `device`) and guards what it returns.
    ///
    /// # Safety
    /// `create` returns a new handle made from `device.device`, owned by nobody else.
    pub(super) unsafe fn new(
        device: &'d Arc<DeviceShared>,
        call: &'static str,
        create: impl FnOnce(&ash::Device) -> VkResult<H>,
    ) -> Result<Self> {
        let handle = create(&device.device).map_err(device.call_err(call))?;
        Ok(Created {
            device,
            handle,
            memory: None,
        })
    }

    /// The handle (for chaining it into a dedicated allocation).
    pub(super) fn handle(&self) -> H {
        self.handle
    }

    /// Its memory requirements.
    pub(super) fn requirements(&self) -> vk::MemoryRequirements {
        // SAFETY: the handle was made from this device (`new`'s contract) and is alive.
        unsafe { self.handle.requirements(&self.device.device) }
    }

    /// Allocates (or imports) its memory with `allocate`; from then on the guard frees
    /// that memory too.
    ///
    /// # Safety
    /// `allocate` returns new memory made from `device.device`, owned by nobody else.
    pub(super) unsafe fn allocate<E>(
        &mut self,
        allocate: impl FnOnce(&ash::Device) -> std::result::Result<vk::DeviceMemory, E>,
    ) -> std::result::Result<(), E> {
        debug_assert!(self.memory.is_none(), "memory allocated twice");
        self.memory = Some(allocate(&self.device.device)?);
        Ok(())
    }

    /// Binds the memory and hands both to an [`Allocation`]; on failure both are freed.
    pub(super) fn bind(self) -> Result<Allocation<H>> {
        let memory = self.memory.expect("Created::bind before allocate");
        // SAFETY: both were made from this device; `allocate` sized and typed the memory
        // from `requirements()` (its callers' duty); nothing was bound to the handle.
        unsafe { self.handle.bind(&self.device.device, memory) }
            .map_err(self.device.call_err(H::BIND_CALL))?;
        let this = ManuallyDrop::new(self);
        Ok(Allocation {
            device: Arc::clone(this.device),
            handle: this.handle,
            memory,
        })
    }
}

impl<H: Bindable> Drop for Created<'_, H> {
    fn drop(&mut self) {
        let d = &self.device.device;
        // SAFETY: made from this device (the contracts of `new` and `allocate`), never
        // submitted to the GPU, owned by nobody else; handle before memory.
        unsafe {
            self.handle.destroy(d);
            if let Some(m) = self.memory.take() {
                d.free_memory(m, None);
            }
        }
    }
}
