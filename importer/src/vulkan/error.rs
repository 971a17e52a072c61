//! What can go wrong between a dma-buf and a Vulkan device, each error naming the
//! device, its driver and what to do.

use ash::vk;
use rustix::io::Errno;

/// Result of this module.
pub type Result<T, E = VulkanError> = std::result::Result<T, E>;

/// Why a dma-buf could not be imported or used through Vulkan (variants sorted by name).
#[derive(Debug, thiserror::Error)]
pub enum VulkanError {
    /// A Vulkan call failed where nothing more specific can be said.
    #[error("{call} failed on {device}: {result}")]
    Call {
        /// The Vulkan entry point.
        call: &'static str,
        /// The device (or "instance").
        device: String,
        /// What it returned.
        result: vk::Result,
    },

    /// The driver's import of the dma-buf needs CPU access to it (it mmaps the
    /// dma-buf), and the exporter cannot give it.
    #[error(
        "{device} (driver {driver}) cannot import this dma-buf: it is a CPU implementation that \
         imports a dma-buf by mmap()ing it, and mmap of this dma-buf fails with {mmap_errno} \
         (exporter {exporter}{exporter_note}); vkAllocateMemory(VkImportMemoryFdInfoKHR, \
         DMA_BUF) returned {result}{closed}. Use a GPU driver that imports dma-bufs by DMA \
         (amdgpu/RADV, xe/ANV) or, for a CPU driver, map the BAR through the VFIO region and \
         import the pointer with VK_EXT_external_memory_host",
        closed = if *driver_closed_fd { "; the driver also closed the fd it was given, although the import failed" } else { "" },
        exporter_note = exporter_note(exporter),
    )]
    CpuAccessRequired {
        /// The device name.
        device: String,
        /// The driver name.
        driver: String,
        /// What `vkAllocateMemory` returned.
        result: vk::Result,
        /// What `mmap` of the dma-buf returned.
        mmap_errno: Errno,
        /// The dma-buf's exporter (`exp_name` in fdinfo), or "unknown".
        exporter: String,
        /// Whether the driver closed the fd on failure (ownership passes only on
        /// success; lavapipe closes it anyway).
        driver_closed_fd: bool,
    },

    /// Two objects of different devices were used together.
    #[error("{0}: the objects belong to different Vulkan devices")]
    DeviceMismatch(&'static str),

    /// The physical device lacks an extension that dma-buf import needs.
    #[error(
        "{device} (driver {driver}) cannot import dma-bufs: it lacks {}. {fix}",
        missing.join(" and ")
    )]
    DmaBufImportUnsupported {
        /// The device name.
        device: String,
        /// The driver name.
        driver: String,
        /// The missing extensions.
        missing: Vec<&'static str>,
        /// What to do instead.
        fix: String,
    },

    /// An fd operation on the dma-buf failed.
    #[error("{what} on the dma-buf failed: {errno}")]
    Fd {
        /// `dup`, `fstat`, `lseek`.
        what: &'static str,
        /// The errno.
        errno: Errno,
    },

    /// `vkGetMemoryFdPropertiesKHR` refused the fd.
    #[error(
        "{device} (driver {driver}) rejects the dma-buf in vkGetMemoryFdPropertiesKHR: {result} \
         (is the fd a dma-buf? exporter {exporter})"
    )]
    FdProperties {
        /// The device name.
        device: String,
        /// The driver name.
        driver: String,
        /// What the call returned.
        result: vk::Result,
        /// The dma-buf's exporter, or "unknown".
        exporter: String,
    },

    /// The device cannot import dma-bufs for buffers of this usage
    /// (`vkGetPhysicalDeviceExternalBufferProperties` has no IMPORTABLE bit).
    #[error("{device} (driver {driver}) does not import dma-bufs as buffers with usage {usage:?} (external memory features {features:?})")]
    HandleTypeNotImportable {
        /// The device name.
        device: String,
        /// The driver name.
        driver: String,
        /// The buffer usage asked for.
        usage: vk::BufferUsageFlags,
        /// What the device reported.
        features: vk::ExternalMemoryFeatureFlags,
    },

    /// An image with this format/modifier cannot be imported.
    #[error(
        "{device} (driver {driver}) cannot import a dma-buf as a {format:?} linear image: {reason}"
    )]
    ImageUnsupported {
        /// The device name.
        device: String,
        /// The driver name.
        driver: String,
        /// The format.
        format: vk::Format,
        /// Why.
        reason: String,
    },

    /// The import itself failed for a reason other than CPU access.
    #[error(
        "{device} (driver {driver}) failed to import the dma-buf (exporter {exporter}): \
         vkAllocateMemory returned {result}{closed}",
        closed = if *driver_closed_fd { "; the driver closed the fd it was given, although the import failed" } else { "" }
    )]
    Import {
        /// The device name.
        device: String,
        /// The driver name.
        driver: String,
        /// What `vkAllocateMemory` returned.
        result: vk::Result,
        /// The dma-buf's exporter, or "unknown".
        exporter: String,
        /// Whether the driver closed the fd on failure.
        driver_closed_fd: bool,
    },

    /// Loading `libvulkan.so.1` failed.
    #[error(
        "cannot load the Vulkan loader: {0}. Install it and a driver \
         (Debian: apt-get install libvulkan1 mesa-vulkan-drivers)"
    )]
    Loader(String),

    /// The instance has no physical device at all.
    #[error(
        "no Vulkan physical device (no driver installed? Debian's mesa-vulkan-drivers provides \
         lavapipe, a CPU implementation)"
    )]
    NoDevice,

    /// No memory type with the properties a helper buffer needs.
    #[error("{device} has no memory type with {wanted:?} for a {what} (types: {types})")]
    NoHelperMemory {
        /// The device name.
        device: String,
        /// What the buffer is for.
        what: &'static str,
        /// The properties needed.
        wanted: vk::MemoryPropertyFlags,
        /// The device's memory types, described.
        types: String,
    },

    /// No Vulkan physical device matches the selection.
    #[error("no Vulkan device matches {wanted:?}; devices: {available}")]
    NoMatchingDevice {
        /// What was asked for.
        wanted: String,
        /// What exists.
        available: String,
    },

    /// No memory type fits both the resource and the dma-buf.
    #[error(
        "no memory type of {device} (driver {driver}) fits: the {what} accepts types {resource_bits:#b}, \
         the dma-buf can be imported as {fd_bits:#b} (types: {types})"
    )]
    NoMemoryType {
        /// The device name.
        device: String,
        /// The driver name.
        driver: String,
        /// "buffer" or "image".
        what: &'static str,
        /// `VkMemoryRequirements::memoryTypeBits`.
        resource_bits: u32,
        /// `VkMemoryFdPropertiesKHR::memoryTypeBits`.
        fd_bits: u32,
        /// The device's memory types, described.
        types: String,
    },

    /// No queue family can transfer.
    #[error("{device} has no queue family with transfer, compute or graphics")]
    NoTransferQueue {
        /// The device name.
        device: String,
    },

    /// The dma-buf behind an imported resource was revoked (REVOKE, memory decode off,
    /// reset) while the implementation read or wrote it through its own CPU mapping:
    /// the access was caught (no SIGBUS death) and landed on anonymous memory.
    #[error(
        "{what}: its dma-buf was revoked while {device} accessed it through its CPU mapping \
         (SIGBUS caught), so the transfer did not move the buffer's bytes; fix: export a new \
         dma-buf (or turn memory decode back on) and import it again"
    )]
    RevokedUnderAccess {
        /// The resource ("copy source", ...).
        what: &'static str,
        /// The device name.
        device: String,
    },

    /// A resource needs more bytes than the dma-buf has, or a range falls outside
    /// a buffer.
    #[error("size mismatch: {what}: {needed} bytes needed, {have} available")]
    SizeMismatch {
        /// What needs the bytes.
        what: String,
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        have: u64,
    },
}

fn exporter_note(exporter: &str) -> String {
    if exporter == "vfio_pci_core" {
        format!(
            ": Linux 7.2's vfio-pci exporter has no mmap and no vmap; mmap comes with the \
             kernel series {}",
            peerdma_exporter::posted::SERIES
        )
    } else {
        String::new()
    }
}

impl VulkanError {
    /// A short, stable name of the variant, for machine-readable output.
    pub fn kind(&self) -> &'static str {
        match self {
            VulkanError::Call { .. } => "vulkan_call",
            VulkanError::CpuAccessRequired { .. } => "cpu_access_required",
            VulkanError::DeviceMismatch(_) => "device_mismatch",
            VulkanError::RevokedUnderAccess { .. } => "revoked_under_access",
            VulkanError::DmaBufImportUnsupported { .. } => "dma_buf_import_unsupported",
            VulkanError::Fd { .. } => "fd",
            VulkanError::FdProperties { .. } => "fd_properties",
            VulkanError::HandleTypeNotImportable { .. } => "handle_type_not_importable",
            VulkanError::ImageUnsupported { .. } => "image_unsupported",
            VulkanError::Import { .. } => "import",
            VulkanError::Loader(_) => "loader",
            VulkanError::NoDevice => "no_device",
            VulkanError::NoHelperMemory { .. } => "no_helper_memory",
            VulkanError::NoMatchingDevice { .. } => "no_matching_device",
            VulkanError::NoMemoryType { .. } => "no_memory_type",
            VulkanError::NoTransferQueue { .. } => "no_transfer_queue",
            VulkanError::SizeMismatch { .. } => "size_mismatch",
        }
    }
}
