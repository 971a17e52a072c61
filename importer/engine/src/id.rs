//! Which devices the drivers here take over: one table ([`ENGINES`]) of
//! [`EngineId`] rows, by PCI vendor:device id or by class code, and [`open`], which
//! takes a device over with the driver its row names. A new engine is a row here.

use peerdma_exporter::Device;
use peerdma_uapi::pci::{PCI_CLASS_REVISION, PCI_DEVICE_ID, PCI_VENDOR_ID};

use crate::dma_engine::DmaEngine;
use crate::edu::{self, Edu};
use crate::error::{EngineError, Result};
use crate::igb::{self, Igb, IgbOptions};
use crate::nvme::{self, Nvme, NvmeOptions};

/// A device a driver here takes over: one row of [`ENGINES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineId {
    /// PCI vendor id.
    pub vendor: u16,
    /// PCI device id.
    pub device: u16,
    /// A PCI class code (24 bits: base class, subclass, programming interface) whose
    /// every function the driver also takes, whatever its ids; `None`: these ids only.
    pub class: Option<u32>,
    /// What the device is, for messages ("QEMU edu").
    pub name: &'static str,
    /// The BAR holding its registers: never a copy endpoint.
    pub register_bar: u32,
    /// The driver that takes it over.
    driver: Driver,
}

/// The drivers of this crate, for [`open_with`]'s one dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Driver {
    Edu,
    Igb,
    Nvme,
}

impl EngineId {
    /// QEMU's `edu` (`-device edu`, `hw/misc/edu.c`).
    pub const EDU: EngineId = EngineId {
        vendor: edu::EDU_VENDOR,
        device: edu::EDU_DEVICE,
        class: None,
        name: "QEMU edu",
        register_bar: 0,
        driver: Driver::Edu,
    };

    /// An NVMe controller: QEMU's by its ids (`-device nvme`, `hw/nvme/ctrl.c`), any
    /// other by its class code [`nvme::NVME_CLASS`].
    pub const NVME: EngineId = EngineId {
        vendor: nvme::QEMU_NVME_VENDOR,
        device: nvme::QEMU_NVME_DEVICE,
        class: Some(nvme::NVME_CLASS),
        name: "NVMe (QEMU nvme)",
        register_bar: 0,
        driver: Driver::Nvme,
    };

    /// Intel's 82576 Gigabit Ethernet controller (`-device igb`, `hw/net/igb.c`), a
    /// memcpy engine in MAC loopback ([`Igb`]). BAR0 holds its registers and BAR3 its
    /// MSI-X table: neither is a copy endpoint (its packet buffers are not a BAR).
    pub const IGB: EngineId = EngineId {
        vendor: igb::IGB_VENDOR,
        device: igb::IGB_DEVICE,
        class: None,
        name: "Intel 82576 (igb)",
        register_bar: 0,
        driver: Driver::Igb,
    };

    /// The row listing exactly these PCI ids, if there is one (a device of another
    /// vendor taken by class code is not found here: see [`EngineId::of_function`]).
    pub fn by_pci_id(vendor: u16, device: u16) -> Option<&'static EngineId> {
        ENGINES
            .iter()
            .find(|e| (e.vendor, e.device) == (vendor, device))
    }

    /// The row that takes a function with these PCI ids and class code (24 bits): by
    /// its ids first, then by its class.
    pub fn of_function(vendor: u16, device: u16, class: u32) -> Option<&'static EngineId> {
        Self::by_pci_id(vendor, device).or_else(|| ENGINES.iter().find(|e| e.class == Some(class)))
    }

    /// Whether the row is a network controller (igb): a memcpy engine only in loopback,
    /// which resets its link and takes it off any wire, so a copy never picks it unasked.
    pub const fn is_nic(&self) -> bool {
        matches!(self.driver, Driver::Igb)
    }

    /// The PCI vendor and device id, as a pair.
    pub const fn pci_id(&self) -> (u16, u16) {
        (self.vendor, self.device)
    }
}

/// `QEMU edu 1234:11e8`, `NVMe (QEMU nvme) 1b36:0010 or class 010802`: the row as
/// messages list it.
impl std::fmt::Display for EngineId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:04x}:{:04x}", self.name, self.vendor, self.device)?;
        match self.class {
            Some(class) => write!(f, " or class {class:06x}"),
            None => Ok(()),
        }
    }
}

/// Every device an engine driver here drives, in the order engine discovery tries them.
pub const ENGINES: &[EngineId] = &[EngineId::EDU, EngineId::NVME, EngineId::IGB];

/// Whether a PCI class code (24 bits) is an NVMe controller's.
pub fn is_nvme_class(class: u32) -> bool {
    class == nvme::NVME_CLASS
}

/// Options for the drivers that take any ([`open_with`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineOptions {
    /// For NVMe controllers.
    pub nvme: NvmeOptions,
    /// For 82576 NICs (a DMA-engine copy needs [`igb::LinkMode::Loopback`], the default).
    pub igb: IgbOptions,
}

/// Takes over `device` with the driver its [`ENGINES`] row names.
///
/// # Errors
///
/// [`EngineError::Device`] when config space cannot be read,
/// [`EngineError::NoDriver`] for a device no row takes, and the driver's own
/// errors (for edu: [`Edu::open`]'s).
pub fn open(device: &Device) -> Result<Box<dyn DmaEngine + Send>> {
    open_with(device, &EngineOptions::default())
}

/// [`open`] with driver options.
///
/// # Errors
///
/// As [`open`]; for NVMe controllers [`Nvme::open`]'s errors as [`EngineError::Nvme`],
/// for 82576 NICs [`Igb::open`]'s as [`EngineError::Igb`].
pub fn open_with(device: &Device, opts: &EngineOptions) -> Result<Box<dyn DmaEngine + Send>> {
    let bdf = device.bdf();
    let dev_err = |source| EngineError::Device {
        engine: bdf.to_string(),
        source,
    };
    let vendor = device.config_read_u16(PCI_VENDOR_ID).map_err(dev_err)?;
    let device_id = device.config_read_u16(PCI_DEVICE_ID).map_err(dev_err)?;
    let class = device
        .config_read_u32(PCI_CLASS_REVISION)
        .map_err(dev_err)?
        >> 8;
    let Some(id) = EngineId::of_function(vendor, device_id, class) else {
        return Err(EngineError::NoDriver {
            bdf,
            vendor,
            device: device_id,
        });
    };
    Ok(match id.driver {
        Driver::Edu => Box::new(Edu::open(device)?),
        Driver::Nvme => Box::new(Nvme::open(device, opts.nvme)?),
        Driver::Igb => Box::new(Igb::open(device, opts.igb)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_found_by_ids_and_nvme_also_by_class() {
        assert_eq!(EngineId::by_pci_id(0x1234, 0x11e8), Some(&EngineId::EDU));
        assert_eq!(EngineId::by_pci_id(0x144d, 0xa808), None);
        // Another vendor's NVMe controller: taken by class code.
        assert_eq!(
            EngineId::of_function(0x144d, 0xa808, 0x010802),
            Some(&EngineId::NVME)
        );
        assert_eq!(EngineId::of_function(0x1af4, 0x1110, 0x050000), None);
        // QEMU's igb by its ids; another Ethernet controller is not taken.
        assert_eq!(EngineId::by_pci_id(0x8086, 0x10c9), Some(&EngineId::IGB));
        assert_eq!(EngineId::of_function(0x8086, 0x10d3, 0x020000), None);
    }

    #[test]
    fn a_device_no_row_takes_is_told_every_row() {
        let e = EngineError::NoDriver {
            bdf: "0000:00:05.0".parse().unwrap(),
            vendor: 0x1af4,
            device: 0x1110,
        };
        let msg = e.to_string();
        assert!(msg.starts_with("0000:00:05.0 (1af4:1110)"), "{msg}");
        assert!(msg.contains("QEMU edu 1234:11e8"), "{msg}");
        assert!(msg.contains("1b36:0010 or class 010802"), "{msg}");
        assert!(msg.contains("Intel 82576 (igb) 8086:10c9"), "{msg}");
        assert_eq!(e.kind(), "no_driver");
    }

    #[test]
    fn each_row_lists_distinct_ids() {
        for (i, a) in ENGINES.iter().enumerate() {
            for b in &ENGINES[i + 1..] {
                assert_ne!(a.pci_id(), b.pci_id(), "{} and {}", a.name, b.name);
            }
        }
    }
}
