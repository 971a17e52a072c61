//! One side of a copy: a device, one of its BARs, an offset into it, and the BAR's CPU
//! mapping.

use peerdma_engine::EngineId;
use peerdma_exporter::{Bar, BarKind, Device, MappedRegion, OpenOptions};
use peerdma_host::Bdf;
use peerdma_uapi::pci::{PCI_DEVICE_ID, PCI_VENDOR_ID};

use super::error::CopyError;
use super::transport::Side;

/// What the user asked for on one side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSpec {
    /// The device.
    pub bdf: Bdf,
    /// BAR index; `None` picks the largest exportable memory BAR.
    pub bar: Option<u32>,
    /// Byte offset into the BAR.
    pub offset: u64,
}

impl EndpointSpec {
    /// The device's default BAR (the largest exportable memory BAR), from its start.
    pub fn whole(bdf: Bdf) -> EndpointSpec {
        EndpointSpec {
            bdf,
            bar: None,
            offset: 0,
        }
    }
}

/// An opened side of the copy.
pub struct Endpoint {
    /// The VFIO device (kept open for as long as the mapping lives).
    pub device: Device,
    /// The BAR used.
    pub bar: Bar,
    /// Offset into the BAR.
    pub offset: u64,
}

/// The largest memory BAR of at least a page that VFIO can mmap, preferring
/// prefetchable BARs that are not a DMA engine's registers (the ones a copy may
/// write); a register BAR chosen for want of another is refused later by
/// [`Endpoint::check_not_registers`], with the reason.
///
/// # Errors
///
/// [`CopyError::NoUsableBar`] when there is none; [`CopyError::Exporter`]
/// when the regions cannot be read.
pub fn default_bar(device: &Device) -> Result<Bar, CopyError> {
    let page = device.page_size();
    let engine_bar = engine_register_bar(device);
    device
        .bars()?
        .into_iter()
        .filter(|b| b.is_memory() && b.is_mappable() && b.size() >= page)
        .max_by_key(|b| (is_plain_memory(b, engine_bar), b.size()))
        .ok_or(CopyError::NoUsableBar { bdf: device.bdf() })
}

/// The register BAR of a device that one of the importer's DMA engine drivers
/// drives (edu's BAR0), if it is one.
fn engine_register_bar(device: &Device) -> Option<(u32, &'static str)> {
    let vendor = device.config_read_u16(PCI_VENDOR_ID).ok()?;
    let id = device.config_read_u16(PCI_DEVICE_ID).ok()?;
    EngineId::by_pci_id(vendor, id).map(|d| (d.register_bar, d.name))
}

/// Prefetchable memory that is not an engine's register BAR.
fn is_plain_memory(bar: &Bar, engine_bar: Option<(u32, &str)>) -> bool {
    matches!(
        bar.kind,
        BarKind::Memory {
            prefetchable: true,
            ..
        }
    ) && engine_bar.is_none_or(|(i, _)| i != bar.index)
}

impl Endpoint {
    /// Opens the device and picks the BAR.
    ///
    /// # Errors
    ///
    /// [`CopyError::BarUnusable`] for a named BAR that is absent, I/O, under
    /// a page or not mmap-able; [`default_bar`]'s errors otherwise; and
    /// [`CopyError::Exporter`] when the device cannot be opened.
    pub fn open(spec: &EndpointSpec, opts: OpenOptions) -> Result<Endpoint, CopyError> {
        let device = Device::open_with(spec.bdf, opts)?;
        let bar = match spec.bar {
            Some(i) => {
                let bar = device.bar(i)?;
                let why = if bar.size() == 0 {
                    Some("absent")
                } else if !bar.is_memory() {
                    Some("an I/O port BAR")
                } else if bar.size() < device.page_size() {
                    Some("smaller than a page")
                } else if !bar.is_mappable() {
                    Some("not mmap-able through VFIO")
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(CopyError::BarUnusable {
                        bdf: spec.bdf,
                        bar: i,
                        why,
                    });
                }
                bar
            }
            None => default_bar(&device)?,
        };
        Ok(Endpoint {
            device,
            bar,
            offset: spec.offset,
        })
    }

    /// Checks that `[offset, offset + size)` fits the BAR.
    ///
    /// # Errors
    ///
    /// [`CopyError::BarTooSmall`] when it does not.
    pub fn check_span(&self, side: Side, size: u64) -> Result<(), CopyError> {
        let fits = self
            .offset
            .checked_add(size)
            .is_some_and(|end| end <= self.bar.size());
        if fits {
            Ok(())
        } else {
            Err(CopyError::BarTooSmall {
                bdf: self.device.bdf(),
                side,
                bar: self.bar.index,
                bar_size: self.bar.size(),
                offset: self.offset,
                size,
            })
        }
    }

    /// Checks that the span `[offset, offset + size)` holds memory, not registers,
    /// before anything is written into it: not a DMA engine's register BAR, not a
    /// BAR that is not prefetchable (by the PCI convention, registers with side
    /// effects), and no page of the MSI-X table or PBA, whatever VFIO's
    /// `msix_mappable` says (PCI Local Bus 3.0 §6.2.5.1; PCIe base §7.7.2).
    ///
    /// # Errors
    ///
    /// [`CopyError::RegisterBar`] naming the device, BAR and what it holds.
    pub fn check_not_registers(&self, side: Side, size: u64) -> Result<(), CopyError> {
        let refuse = |why: String| CopyError::RegisterBar {
            bdf: self.bdf(),
            side,
            bar: self.bar.index,
            why,
        };
        if let Some((bar, name)) = engine_register_bar(&self.device) {
            if bar == self.bar.index {
                return Err(refuse(format!(
                    "it holds the registers of the {name} DMA engine; writing a pattern there \
                     issues commands to the device"
                )));
            }
        }
        if let BarKind::Memory {
            prefetchable: false,
            ..
        } = self.bar.kind
        {
            return Err(refuse(
                "it is not prefetchable memory: by the PCI convention it holds registers, whose \
                 reads and writes have side effects"
                    .to_string(),
            ));
        }
        let end = self.offset.saturating_add(size);
        if let Some(msix) = self.device.msix() {
            for span in msix.spans_in(self.bar.index, self.device.page_size()) {
                if self.offset < span.end && span.start < end {
                    return Err(refuse(format!(
                        "the span {:#x} to {:#x} covers the MSI-X {} pages {:#x} to {:#x}",
                        self.offset,
                        end - 1,
                        span.structure,
                        span.start,
                        span.end - 1
                    )));
                }
            }
        }
        Ok(())
    }

    /// Maps the span `[offset, offset + size)` of the BAR for the CPU.
    ///
    /// # Errors
    ///
    /// [`CopyError::Exporter`] when VFIO refuses the mapping.
    pub fn map(&self, size: u64) -> Result<MappedRegion, CopyError> {
        Ok(self
            .device
            .map_region_range(self.bar.index, self.offset, size)?)
    }

    /// The device's address.
    pub fn bdf(&self) -> Bdf {
        self.device.bdf()
    }
}
