//! The Vulkan loader and instance, and what each physical device can do with dma-bufs.

use std::ffi::CStr;
use std::fmt;
use std::sync::Arc;

use ash::vk;
use peerdma_host::Bdf;

use super::error::{Result, VulkanError};

/// The extension that imports and exports memory as POSIX fds.
pub const EXT_EXTERNAL_MEMORY_FD: &str = "VK_KHR_external_memory_fd";
/// The extension that adds the dma-buf handle type.
pub const EXT_EXTERNAL_MEMORY_DMA_BUF: &str = "VK_EXT_external_memory_dma_buf";
/// The extension that describes images by DRM format modifier (needed for images).
pub const EXT_IMAGE_DRM_FORMAT_MODIFIER: &str = "VK_EXT_image_drm_format_modifier";
/// The extension that reports a device's PCI address.
pub const EXT_PCI_BUS_INFO: &str = "VK_EXT_pci_bus_info";
/// The extension that imports host pointers (a workaround for CPU drivers).
pub const EXT_EXTERNAL_MEMORY_HOST: &str = "VK_EXT_external_memory_host";

/// The loaded Vulkan library and one instance; physical devices come from here.
pub struct Vulkan {
    pub(super) shared: Arc<InstanceShared>,
}

/// Owns the instance; destroyed after the last device made from it.
pub(super) struct InstanceShared {
    /// Kept alive: the loader library must outlive every call through `instance`.
    _entry: ash::Entry,
    pub(super) instance: ash::Instance,
    pub(super) api_version: u32,
}

impl Drop for InstanceShared {
    fn drop(&mut self) {
        // SAFETY: every child object (devices) holds an Arc to this and is gone; the
        // instance is destroyed exactly once.
        unsafe { self.instance.destroy_instance(None) };
    }
}

/// What one memory type of a device is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryType {
    /// Index in `VkPhysicalDeviceMemoryProperties::memoryTypes`.
    pub index: u32,
    /// Its property flags.
    pub flags: vk::MemoryPropertyFlags,
    /// The heap it comes from.
    pub heap: u32,
    /// That heap's size in bytes.
    pub heap_size: u64,
}

/// A Vulkan physical device as far as dma-buf import is concerned.
#[derive(Clone, Debug)]
pub struct PhysicalDeviceInfo {
    pub(super) handle: vk::PhysicalDevice,
    /// Position in `vkEnumeratePhysicalDevices`.
    pub index: usize,
    /// `deviceName` (lavapipe: `llvmpipe (LLVM …)`).
    pub name: String,
    /// Discrete, integrated, virtual or CPU.
    pub device_type: vk::PhysicalDeviceType,
    /// PCI vendor id.
    pub vendor_id: u32,
    /// PCI device id.
    pub device_id: u32,
    /// The device's Vulkan version.
    pub api_version: u32,
    /// `VkDriverId` (`MESA_LLVMPIPE`, `NVIDIA_PROPRIETARY`, …).
    pub driver_id: vk::DriverId,
    /// `driverName` (lavapipe: `llvmpipe`).
    pub driver_name: String,
    /// `driverInfo` (Mesa: `Mesa 25.0.7 …`).
    pub driver_info: String,
    /// PCI address, when the device has `VK_EXT_pci_bus_info`.
    pub pci: Option<Bdf>,
    /// `VK_KHR_external_memory_fd` is offered.
    pub external_memory_fd: bool,
    /// `VK_EXT_external_memory_dma_buf` is offered.
    pub external_memory_dma_buf: bool,
    /// `VK_EXT_image_drm_format_modifier` is offered.
    pub image_drm_format_modifier: bool,
    /// `VK_EXT_external_memory_host` is offered.
    pub external_memory_host: bool,
    /// Whether buffers can be imported from dma-bufs
    /// (`vkGetPhysicalDeviceExternalBufferProperties`), and the reported features.
    pub dma_buf_buffer_features: vk::ExternalMemoryFeatureFlags,
    /// The memory types.
    pub memory_types: Vec<MemoryType>,
}

impl PhysicalDeviceInfo {
    /// Whether the extensions for importing a dma-buf as a buffer are there.
    pub fn can_import_dma_buf(&self) -> bool {
        self.external_memory_fd && self.external_memory_dma_buf
    }

    /// Whether this is a CPU implementation (lavapipe, SwiftShader).
    pub fn is_cpu(&self) -> bool {
        self.device_type == vk::PhysicalDeviceType::CPU
    }

    /// Whether this is NVIDIA's proprietary driver.
    pub fn is_nvidia_proprietary(&self) -> bool {
        self.driver_id == vk::DriverId::NVIDIA_PROPRIETARY
            || (self.vendor_id == 0x10de && self.driver_id != vk::DriverId::MESA_NVK)
    }

    /// The extensions dma-buf import needs that this device lacks.
    pub fn missing_for_import(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if !self.external_memory_fd {
            m.push(EXT_EXTERNAL_MEMORY_FD);
        }
        if !self.external_memory_dma_buf {
            m.push(EXT_EXTERNAL_MEMORY_DMA_BUF);
        }
        m
    }

    /// The error for a device that cannot import dma-bufs, with the advice that fits.
    pub(super) fn import_unsupported(&self) -> VulkanError {
        let fix = if self.is_nvidia_proprietary() {
            "NVIDIA's proprietary driver has no dma-buf import in Vulkan (it imports only \
             opaque fds from its own allocations); use Mesa's NVK (nouveau) or CUDA's \
             cudaImportExternalMemory for this GPU"
                .to_string()
        } else if self.api_version < vk::API_VERSION_1_1 {
            format!(
                "the device only speaks Vulkan {}, external memory needs 1.1",
                version_string(self.api_version)
            )
        } else if self.driver_id == vk::DriverId::MESA_LLVMPIPE {
            "Lavapipe gained dma-buf import after Mesa 22.3 (Debian bookworm's); Mesa 25.0 \
             from bookworm-backports has it (apt-get install -t bookworm-backports \
             mesa-vulkan-drivers)"
                .to_string()
        } else {
            "Update the driver: Mesa's RADV, ANV and NVK import dma-bufs".to_string()
        };
        VulkanError::DmaBufImportUnsupported {
            device: self.name.clone(),
            driver: self.driver_label(),
            missing: self.missing_for_import(),
            fix,
        }
    }

    /// `driverName` with `driverInfo`, for messages.
    pub fn driver_label(&self) -> String {
        if self.driver_info.is_empty() {
            self.driver_name.clone()
        } else {
            format!("{} {}", self.driver_name, self.driver_info)
        }
    }

    /// The memory types, described for error messages.
    pub fn describe_memory_types(&self) -> String {
        self.memory_types
            .iter()
            .map(|t| format!("{}={:?}", t.index, t.flags))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether `selector` picks this device.
    pub fn matches(&self, selector: &DeviceSelector) -> bool {
        match selector {
            DeviceSelector::Auto => true,
            DeviceSelector::Pci(addr) => self.pci == Some(*addr),
            DeviceSelector::Name(n) => {
                let n = n.to_lowercase();
                self.name.to_lowercase().contains(&n)
                    || self.driver_name.to_lowercase().contains(&n)
            }
            DeviceSelector::Index(i) => self.index == *i,
        }
    }
}

/// `major.minor.patch` of a Vulkan version number.
pub fn version_string(v: u32) -> String {
    format!(
        "{}.{}.{}",
        vk::api_version_major(v),
        vk::api_version_minor(v),
        vk::api_version_patch(v)
    )
}

/// Which physical device to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSelector {
    /// The best device that can import dma-bufs (discrete, then integrated, then
    /// virtual, then CPU); failing that, the first device.
    Auto,
    /// The device at this PCI address (needs `VK_EXT_pci_bus_info`).
    Pci(Bdf),
    /// The first device whose name or driver name contains this (any case).
    Name(String),
    /// The n-th device of `vkEnumeratePhysicalDevices`.
    Index(usize),
}

impl std::str::FromStr for DeviceSelector {
    type Err = std::convert::Infallible;

    /// A PCI address if it parses as a [`Bdf`] (`0000:01:00.0` or `01:00.0`), else a
    /// name substring; empty or `auto` means [`DeviceSelector::Auto`].
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("auto") {
            return Ok(DeviceSelector::Auto);
        }
        if let Ok(addr) = s.parse::<Bdf>() {
            return Ok(DeviceSelector::Pci(addr));
        }
        Ok(DeviceSelector::Name(s.to_string()))
    }
}

impl fmt::Display for DeviceSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSelector::Auto => write!(f, "auto"),
            DeviceSelector::Pci(a) => write!(f, "PCI {a}"),
            DeviceSelector::Name(n) => write!(f, "name containing {n:?}"),
            DeviceSelector::Index(i) => write!(f, "device #{i}"),
        }
    }
}

fn cstr_lossy(r: std::result::Result<&CStr, std::ffi::FromBytesUntilNulError>) -> String {
    r.map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Vulkan {
    /// Loads `libvulkan.so.1` at run time (a missing loader is an error, not a link
    /// failure) and creates an instance for Vulkan 1.1 or newer.
    ///
    /// # Errors
    /// [`VulkanError::Loader`] when the loader is missing or older than 1.1;
    /// [`VulkanError::Call`] when creating the instance fails.
    pub fn load() -> Result<Self> {
        // SAFETY: loading the system Vulkan loader runs its initialisers; it is the
        // library every Vulkan program loads, and we keep `entry` for as long as any
        // function pointer from it can be called (it lives in InstanceShared).
        let entry =
            unsafe { ash::Entry::load() }.map_err(|e| VulkanError::Loader(e.to_string()))?;
        // SAFETY: a global command on a valid entry.
        let loader_version = match unsafe { entry.try_enumerate_instance_version() } {
            Ok(Some(v)) => v,
            Ok(None) => vk::API_VERSION_1_0,
            Err(result) => {
                return Err(VulkanError::Call {
                    call: "vkEnumerateInstanceVersion",
                    device: "instance".into(),
                    result,
                })
            }
        };
        if loader_version < vk::API_VERSION_1_1 {
            return Err(VulkanError::Loader(format!(
                "the loader only offers Vulkan {}, external memory needs 1.1",
                version_string(loader_version)
            )));
        }
        let api_version = loader_version.min(vk::API_VERSION_1_3);
        let app = vk::ApplicationInfo::default()
            .application_name(c"peerdma")
            .engine_name(c"peerdma-importer")
            .api_version(api_version);
        let info = vk::InstanceCreateInfo::default().application_info(&app);
        // SAFETY: `info` and what it points to live across the call.
        let instance =
            unsafe { entry.create_instance(&info, None) }.map_err(|result| VulkanError::Call {
                call: "vkCreateInstance",
                device: "instance".into(),
                result,
            })?;
        Ok(Vulkan {
            shared: Arc::new(InstanceShared {
                _entry: entry,
                instance,
                api_version,
            }),
        })
    }

    /// The instance's Vulkan version.
    pub fn api_version(&self) -> u32 {
        self.shared.api_version
    }

    /// Every physical device, with its dma-buf capabilities.
    ///
    /// # Errors
    /// [`VulkanError::Call`] when enumerating the devices or their extensions fails.
    pub fn physical_devices(&self) -> Result<Vec<PhysicalDeviceInfo>> {
        let instance = &self.shared.instance;
        // SAFETY: valid instance.
        let handles = unsafe { instance.enumerate_physical_devices() }.map_err(|result| {
            VulkanError::Call {
                call: "vkEnumeratePhysicalDevices",
                device: "instance".into(),
                result,
            }
        })?;
        handles
            .into_iter()
            .enumerate()
            .map(|(index, pd)| self.describe(index, pd))
            .collect()
    }

    fn describe(&self, index: usize, pd: vk::PhysicalDevice) -> Result<PhysicalDeviceInfo> {
        let instance = &self.shared.instance;
        // SAFETY: `pd` comes from this instance.
        let exts =
            unsafe { instance.enumerate_device_extension_properties(pd) }.map_err(|result| {
                VulkanError::Call {
                    call: "vkEnumerateDeviceExtensionProperties",
                    device: format!("device #{index}"),
                    result,
                }
            })?;
        let has = |name: &str| {
            exts.iter().any(|e| {
                e.extension_name_as_c_str()
                    .is_ok_and(|c| c.to_bytes() == name.as_bytes())
            })
        };
        let pci_ext = has(EXT_PCI_BUS_INFO);
        // SAFETY: `pd` comes from this instance.
        let base = unsafe { instance.get_physical_device_properties(pd) };
        let mut driver = vk::PhysicalDeviceDriverProperties::default();
        let mut pci = vk::PhysicalDevicePCIBusInfoPropertiesEXT::default();
        let driver_ok = base.api_version >= vk::API_VERSION_1_2 || has("VK_KHR_driver_properties");
        {
            let mut props2 = vk::PhysicalDeviceProperties2::default();
            if driver_ok {
                props2 = props2.push_next(&mut driver);
            }
            if pci_ext {
                props2 = props2.push_next(&mut pci);
            }
            // SAFETY: the chain holds only structs of extensions the device offers
            // (or core in its version); all live across the call.
            unsafe { instance.get_physical_device_properties2(pd, &mut props2) };
        }
        // SAFETY: `pd` comes from this instance.
        let mem = unsafe { instance.get_physical_device_memory_properties(pd) };
        let memory_types = mem.memory_types[..mem.memory_type_count as usize]
            .iter()
            .enumerate()
            .map(|(i, t)| MemoryType {
                index: i as u32,
                flags: t.property_flags,
                heap: t.heap_index,
                heap_size: mem.memory_heaps[t.heap_index as usize].size,
            })
            .collect();
        let dma_buf = has(EXT_EXTERNAL_MEMORY_DMA_BUF);
        let mut features = vk::ExternalMemoryFeatureFlags::empty();
        if dma_buf && base.api_version >= vk::API_VERSION_1_1 {
            let info = vk::PhysicalDeviceExternalBufferInfo::default()
                .usage(vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST)
                .handle_type(vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT);
            let mut out = vk::ExternalBufferProperties::default();
            // SAFETY: core 1.1 query on a device of this instance; structs live.
            unsafe { instance.get_physical_device_external_buffer_properties(pd, &info, &mut out) };
            features = out.external_memory_properties.external_memory_features;
        }
        Ok(PhysicalDeviceInfo {
            handle: pd,
            index,
            name: cstr_lossy(base.device_name_as_c_str()),
            device_type: base.device_type,
            vendor_id: base.vendor_id,
            device_id: base.device_id,
            api_version: base.api_version,
            driver_id: if driver_ok {
                driver.driver_id
            } else {
                vk::DriverId::from_raw(0)
            },
            driver_name: if driver_ok {
                cstr_lossy(driver.driver_name_as_c_str())
            } else {
                String::new()
            },
            driver_info: if driver_ok {
                cstr_lossy(driver.driver_info_as_c_str())
            } else {
                String::new()
            },
            pci: pci_ext
                .then(|| {
                    Bdf::new(
                        pci.pci_domain,
                        pci.pci_bus as u8,
                        pci.pci_device as u8,
                        pci.pci_function as u8,
                    )
                    .ok()
                })
                .flatten(),
            external_memory_fd: has(EXT_EXTERNAL_MEMORY_FD),
            external_memory_dma_buf: dma_buf,
            image_drm_format_modifier: has(EXT_IMAGE_DRM_FORMAT_MODIFIER),
            external_memory_host: has(EXT_EXTERNAL_MEMORY_HOST),
            dma_buf_buffer_features: features,
            memory_types,
        })
    }

    /// The device `selector` names. [`DeviceSelector::Auto`] prefers devices that can
    /// import dma-bufs, then discrete over integrated over virtual over CPU.
    ///
    /// # Errors
    /// [`VulkanError::NoDevice`] when there is no device at all,
    /// [`VulkanError::NoMatchingDevice`] (listing the devices) when none matches, and
    /// [`VulkanError::Call`] as for [`Vulkan::physical_devices`].
    pub fn select(&self, selector: &DeviceSelector) -> Result<PhysicalDeviceInfo> {
        let all = self.physical_devices()?;
        if all.is_empty() {
            return Err(VulkanError::NoDevice);
        }
        if *selector == DeviceSelector::Auto {
            let rank = |d: &PhysicalDeviceInfo| {
                let kind = match d.device_type {
                    vk::PhysicalDeviceType::DISCRETE_GPU => 0,
                    vk::PhysicalDeviceType::INTEGRATED_GPU => 1,
                    vk::PhysicalDeviceType::VIRTUAL_GPU => 2,
                    vk::PhysicalDeviceType::CPU => 3,
                    _ => 4,
                };
                (!d.can_import_dma_buf(), kind, d.index)
            };
            return Ok(all.into_iter().min_by_key(rank).expect("not empty"));
        }
        let available = all
            .iter()
            .map(|d| match d.pci {
                Some(p) => format!("#{} {} [{}] at {p}", d.index, d.name, d.driver_name),
                None => format!(
                    "#{} {} [{}] (no PCI address)",
                    d.index, d.name, d.driver_name
                ),
            })
            .collect::<Vec<_>>()
            .join("; ");
        all.into_iter()
            .find(|d| d.matches(selector))
            .ok_or_else(|| VulkanError::NoMatchingDevice {
                wanted: selector.to_string(),
                available,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses_are_bdfs() {
        let a: Bdf = "0000:00:03.0".parse().unwrap();
        assert_eq!(a.to_string(), "0000:00:03.0");
        assert_eq!(
            "01:00.1".parse::<DeviceSelector>().unwrap(),
            DeviceSelector::Pci(Bdf::new(0, 1, 0, 1).unwrap())
        );
        for name in ["llvmpipe", "00:20.0", "00:1f.8"] {
            assert_eq!(
                name.parse::<DeviceSelector>().unwrap(),
                DeviceSelector::Name(name.into()),
                "{name} is no PCI address"
            );
        }
    }

    fn fake(
        name: &str,
        vendor_id: u32,
        driver_id: vk::DriverId,
        driver_name: &str,
    ) -> PhysicalDeviceInfo {
        PhysicalDeviceInfo {
            handle: vk::PhysicalDevice::null(),
            index: 0,
            name: name.into(),
            device_type: vk::PhysicalDeviceType::DISCRETE_GPU,
            vendor_id,
            device_id: 0x2204,
            api_version: vk::API_VERSION_1_3,
            driver_id,
            driver_name: driver_name.into(),
            driver_info: "550.54".into(),
            pci: Some("0000:65:00.0".parse().unwrap()),
            external_memory_fd: true,
            external_memory_dma_buf: false,
            image_drm_format_modifier: true,
            external_memory_host: true,
            dma_buf_buffer_features: vk::ExternalMemoryFeatureFlags::empty(),
            memory_types: Vec::new(),
        }
    }

    #[test]
    fn nvidia_proprietary_is_named() {
        let d = fake(
            "NVIDIA GeForce RTX 3090",
            0x10de,
            vk::DriverId::NVIDIA_PROPRIETARY,
            "NVIDIA",
        );
        assert!(!d.can_import_dma_buf());
        let msg = d.import_unsupported().to_string();
        assert!(
            msg.contains("lacks VK_EXT_external_memory_dma_buf"),
            "{msg}"
        );
        assert!(
            msg.contains("NVIDIA's proprietary driver has no dma-buf import"),
            "{msg}"
        );
        let nvk = fake(
            "NVIDIA GeForce RTX 3090 (NVK GA102)",
            0x10de,
            vk::DriverId::MESA_NVK,
            "NVK",
        );
        assert!(!nvk.is_nvidia_proprietary());
        assert!(d.matches(&"0000:65:00.0".parse().unwrap()));
        assert!(d.matches(&"geforce".parse().unwrap()));
        assert!(!d.matches(&"llvmpipe".parse().unwrap()));
    }

    #[test]
    fn selectors_parse() {
        assert_eq!("".parse::<DeviceSelector>().unwrap(), DeviceSelector::Auto);
        assert!(matches!(
            "0000:65:00.0".parse::<DeviceSelector>().unwrap(),
            DeviceSelector::Pci(_)
        ));
        assert_eq!(
            "llvmpipe".parse::<DeviceSelector>().unwrap(),
            DeviceSelector::Name("llvmpipe".into())
        );
    }
}
