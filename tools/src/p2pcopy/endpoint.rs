//! One side of a copy: a device, one of its BARs, an offset into it, and the BAR's CPU
//! mapping.

use peerdma_exporter::{Bar, Bdf, Device, MappedRegion, OpenOptions};

use super::error::CopyError;
use super::path::Side;

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

/// An opened side of the copy.
pub struct Endpoint {
    /// The VFIO device (kept open for as long as the mapping lives).
    pub device: Device,
    /// The BAR used.
    pub bar: Bar,
    /// Offset into the BAR.
    pub offset: u64,
}

/// The largest memory BAR of at least a page that VFIO can mmap.
///
/// # Errors
///
/// [`CopyError::NoUsableBar`] when there is none; [`CopyError::Exporter`]
/// when the regions cannot be read.
pub fn default_bar(device: &Device) -> Result<Bar, CopyError> {
    let page = device.page_size();
    device
        .bars()?
        .into_iter()
        .filter(|b| b.is_memory() && b.is_mappable() && b.size() >= page)
        .max_by_key(|b| b.size())
        .ok_or(CopyError::NoUsableBar { bdf: device.bdf() })
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
