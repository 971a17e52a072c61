//! `VFIO_DEVICE_FEATURE_DMA_BUF`: probing for it, and exporting BAR ranges as a
//! dma-buf after checking them with the kernel's rules (`ranges`).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use peerdma_uapi::flex::{Feature, FlexBuf};
use peerdma_uapi::vfio::{
    vfio_device_feature_dma_buf, VFIO_DEVICE_FEATURE_DMA_BUF, VFIO_DEVICE_FEATURE_GET,
};
use rustix::io::Errno;

use crate::bar::BarKind;
use crate::device::Device;
use crate::dmabuf::DmaBuf;
use crate::error::{Error, Result};
use crate::explain;
use crate::ioctl::{self, VfioIoctl};
use crate::ranges::{self, BarFacts, DmaRange, ExportOptions};
use peerdma_host::Bdf;
use peerdma_host::RegionIndex;

/// Whether a device can export dma-bufs, from `VFIO_DEVICE_FEATURE` PROBE|GET.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaBufSupport {
    /// The device exports dma-bufs.
    Supported,
    /// The kernel has the feature but this device's vfio driver does not
    /// offer it (EOPNOTSUPP).
    DriverLacksExport,
    /// The kernel has no `VFIO_DEVICE_FEATURE_DMA_BUF` (ENOTTY).
    KernelLacksFeature,
}

impl DmaBufSupport {
    /// Whether exports can succeed.
    pub fn is_supported(self) -> bool {
        self == DmaBufSupport::Supported
    }
}

/// Size of `vfio_device_feature` + `vfio_device_feature_dma_buf`.
const ARG_HEADER_BYTES: usize = 8 + 16;

/// Whether an argument with `count` ranges fits the 32-bit argsz.
fn fits_argsz(count: usize) -> bool {
    count
        .checked_mul(size_of::<DmaRange>())
        .and_then(|n| n.checked_add(ARG_HEADER_BYTES))
        .is_some_and(|n| n <= u32::MAX as usize)
}

impl Device {
    /// Asks the kernel whether this device can export dma-bufs.
    ///
    /// # Errors
    ///
    /// [`Error::Ioctl`] when the PROBE fails with anything but EOPNOTSUPP or
    /// ENOTTY (which are answers, not errors).
    pub fn supports_dma_buf(&self) -> Result<DmaBufSupport> {
        match ioctl::device_feature_probe_get(self.fd(), VFIO_DEVICE_FEATURE_DMA_BUF) {
            Ok(()) => Ok(DmaBufSupport::Supported),
            Err(Errno::OPNOTSUPP) => Ok(DmaBufSupport::DriverLacksExport),
            Err(Errno::NOTTY) => Ok(DmaBufSupport::KernelLacksFeature),
            Err(errno) => Err(Error::Ioctl {
                bdf: self.bdf(),
                ioctl: "VFIO_DEVICE_FEATURE(PROBE|GET|DMA_BUF)",
                errno,
                fix: explain::ioctl(VfioIoctl::DeviceFeature, errno),
            }),
        }
    }

    /// What validation needs to know about region `region`. For a BAR the
    /// device has, it is read once (region info, sysfs) and then kept: exports
    /// then cost no ioctl besides the export itself.
    ///
    /// # Errors
    ///
    /// As [`Device::bar`]: [`Error::Ioctl`] when region info cannot be read,
    /// [`Error::ConfigAccess`] when the BAR register cannot.
    pub fn bar_facts(&self, region: impl Into<RegionIndex>) -> Result<BarFacts> {
        let region = region.into();
        let cached = region.is_bar() && region.get() < self.info().num_regions;
        if cached {
            if let Some(target) = self.inner.bar_facts[region.get() as usize].get() {
                return Ok(*target);
            }
        }
        let mut target = BarFacts {
            bdf: self.bdf(),
            region,
            size: 0,
            base: 0,
            is_memory: true,
            msix: self.msix(),
            msix_mappable: false,
            page_size: self.page_size(),
        };
        if cached {
            let bar = self.bar(region)?;
            target.size = bar.size();
            target.base = bar.base.unwrap_or(0);
            target.is_memory = !matches!(bar.kind, BarKind::Io);
            target.msix_mappable = bar.msix_mappable();
            let _ = self.inner.bar_facts[region.get() as usize].set(target);
        }
        Ok(target)
    }

    /// Checks an export with the kernel's rules and this library's MSI-X rule
    /// without exporting; returns the size the dma-buf would have.
    ///
    /// # Errors
    ///
    /// The kernel-predicted refusals of [`ranges::validate`] in the kernel's
    /// order ([`Error::NoRanges`], [`Error::RegionNotBar`], [`Error::BarAbsent`],
    /// [`Error::RangeEmpty`], [`Error::RangeUnaligned`],
    /// [`Error::RangesTotalOverflow`], [`Error::RangesTotalTooLarge`],
    /// [`Error::BarNotMemory`], [`Error::RangeOverflow`],
    /// [`Error::BarSmallerThanPage`], [`Error::RangePastEnd`]), then
    /// [`Error::MsixOverlap`]; and what [`Device::bar_facts`] returns.
    pub fn check_export(
        &self,
        region: impl Into<RegionIndex>,
        ranges: &[DmaRange],
        allow_msix_overlap: bool,
    ) -> Result<u64> {
        ranges::validate(&self.bar_facts(region)?, ranges, allow_msix_overlap)
    }

    /// Exports `ranges` of BAR `region` as one dma-buf, `O_CLOEXEC | O_RDWR`.
    ///
    /// # Errors
    ///
    /// As [`Device::export_dma_buf_with`].
    pub fn export_dma_buf(
        &self,
        region: impl Into<RegionIndex>,
        ranges: &[DmaRange],
    ) -> Result<DmaBuf> {
        self.export_dma_buf_with(region, ranges, &ExportOptions::default())
    }

    /// Exports `ranges` of BAR `region` as one dma-buf, as `opts` says.
    ///
    /// Unless `opts.skip_validation` (a test hook, feature `testing`), the request
    /// is checked first and refused
    /// with the error the kernel would give (same errno). If the device's
    /// memory decode is off, the buffer is born revoked.
    ///
    /// The ranges are checked while they are copied into the ioctl's argument,
    /// the one allocation of an export, which the [`DmaBuf`] then keeps as its
    /// record of them ([`DmaBuf::ranges`]).
    ///
    /// # Errors
    ///
    /// [`Error::TooManyRanges`] when the argument would not fit `argsz`; unless
    /// `opts.skip_validation`, the predicted refusals of
    /// [`Device::check_export`] (same errno as the kernel's); and
    /// [`Error::Export`] with the kernel's errno, meaning and fix when
    /// `VFIO_DEVICE_FEATURE_DMA_BUF` fails.
    pub fn export_dma_buf_with(
        &self,
        region: impl Into<RegionIndex>,
        ranges: &[DmaRange],
        opts: &ExportOptions,
    ) -> Result<DmaBuf> {
        let region = region.into();
        let bdf = self.bdf();
        if !fits_argsz(ranges.len()) {
            return Err(Error::TooManyRanges {
                bdf,
                region,
                count: ranges.len(),
            });
        }
        let read;
        let target = if opts.skips_validation() {
            None
        } else if let Some(cached) = self.cached_bar_facts(region) {
            Some(cached)
        } else {
            read = self.bar_facts(region)?;
            Some(&read)
        };
        let payload = vfio_device_feature_dma_buf {
            region_index: region.get(),
            open_flags: opts.open_flags.bits(),
            flags: 0,
            ..Default::default()
        };
        let feature = Feature::new(
            VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF,
            payload,
        );
        let mut arg = FlexBuf::new(feature, ranges.len());
        let size = match target {
            Some(target) => {
                ranges::fill_checked(target, ranges, arg.elems_mut(), opts.allow_msix_overlap)?
            }
            None => ranges::fill_unchecked(ranges, arg.elems_mut()),
        };
        let generation = self.inner.generation.get();
        let fd = ioctl::device_feature_dma_buf(self.fd(), &mut arg)
            .map_err(|errno| export_error(bdf, region, errno))?;
        Ok(DmaBuf {
            fd,
            bdf,
            region: region.get(),
            arg,
            size,
            generation,
            device: Arc::downgrade(&self.inner),
            revoked_on_request: AtomicBool::new(false),
        })
    }

    /// The [`BarFacts`] of region `region` if [`Device::bar_facts`] has read it.
    fn cached_bar_facts(&self, region: RegionIndex) -> Option<&BarFacts> {
        self.inner
            .bar_facts
            .get(usize::try_from(region.get()).ok()?)?
            .get()
    }
}

/// The error of a refused `VFIO_DEVICE_FEATURE(GET | DMA_BUF)`; out of the
/// export's hot path.
#[cold]
#[inline(never)]
fn export_error(bdf: Bdf, region: RegionIndex, errno: Errno) -> Error {
    let (meaning, fix) = explain::dma_buf(errno);
    Error::Export {
        bdf,
        region,
        errno,
        meaning,
        fix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argsz_limit() {
        assert!(fits_argsz(0));
        assert!(fits_argsz(1));
        let max = (u32::MAX as usize - ARG_HEADER_BYTES) / 16;
        assert!(fits_argsz(max));
        assert!(!fits_argsz(max + 1));
        assert!(!fits_argsz(usize::MAX));
    }

    #[test]
    fn header_size_matches_uapi() {
        assert_eq!(
            size_of::<Feature<vfio_device_feature_dma_buf>>(),
            ARG_HEADER_BYTES
        );
    }
}
