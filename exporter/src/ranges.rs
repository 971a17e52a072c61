//! Pure validation of a dma-buf export request, with the kernel's rules in the
//! kernel's order (drivers/vfio/pci/vfio_pci_dmabuf.c, Linux 7.2):
//!
//! 1. `nr_ranges == 0` → EINVAL;
//! 2. the region must be BAR0..BAR5 (else ENODEV) and implemented/claimed (else ENODEV);
//! 3. for every range: length != 0, offset and length page-aligned (EINVAL), and
//!    the running total must not overflow (EINVAL);
//! 4. the total must not have bit 63 set (DMA_IOVA_USE_SWIOTLB, EINVAL);
//! 5. the BAR must have a P2P provider: I/O BARs have none (EINVAL);
//! 6. for every range: BAR base + offset + length must not overflow (EOVERFLOW)
//!    and must end inside the BAR (EINVAL); the BAR's end is `base + size`,
//!    which wraps to 0 for a BAR ending at 2^64 - 1 (every range refused).
//!
//! The kernel checks all ranges for step 3 before any range for step 6, so the
//! first error reported here is the one the kernel returns. A BAR smaller than a
//! page fails step 6 for every aligned range; it is reported by name.
//!
//! After the kernel's rules, one rule of this library's own: no range may touch
//! the pages of the MSI-X table or PBA unless the region is MSI-X mappable or the
//! caller sets [`ExportOptions::allow_msix_overlap`].
//!
//! [`validate`] checks rule by rule. An export uses `fill_checked`, which applies
//! the same rules in the one pass that copies the ranges into the ioctl argument
//! and leaves finding *which* error comes first to [`validate`], only when one
//! of them failed.

use rustix::fs::OFlags;

use crate::error::{Error, Result};
use crate::msix::MsixLayout;
use peerdma_host::{Bdf, RegionIndex};

/// The kernel's `DMA_IOVA_USE_SWIOTLB`: a dma-buf size with this bit is refused.
pub const DMA_IOVA_USE_SWIOTLB: u64 = 1 << 63;

/// One slice of a BAR, relative to the BAR start: the kernel's `struct
/// vfio_region_dma_range` itself (`offset`, `length`, [`DmaRange::new`]), so that the
/// ranges are copied into the export argument as they are and read back from it.
pub use peerdma_uapi::vfio::vfio_region_dma_range as DmaRange;

/// How to export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportOptions {
    /// Flags for the new dma-buf file (`open_flags`): `O_CLOEXEC | O_RDWR` by default.
    pub open_flags: OFlags,
    /// Let ranges touch the MSI-X table/PBA pages even when the region does not
    /// advertise MSI-X mappable. A peer device can then write MSI-X vectors.
    pub allow_msix_overlap: bool,
    /// Test hook (feature `testing`): skip every check of this library and let the
    /// kernel decide, so a test can prove that the kernel returns the errno the
    /// library predicts.
    #[cfg(feature = "testing")]
    pub skip_validation: bool,
}

impl ExportOptions {
    /// Whether these options skip this library's checks: only the test hook
    /// `skip_validation` (feature `testing`) does.
    pub(crate) fn skips_validation(&self) -> bool {
        #[cfg(feature = "testing")]
        return self.skip_validation;
        #[cfg(not(feature = "testing"))]
        return false;
    }
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            open_flags: OFlags::CLOEXEC | OFlags::RDWR,
            allow_msix_overlap: false,
            #[cfg(feature = "testing")]
            skip_validation: false,
        }
    }
}

/// What validation needs to know about the BAR being exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarFacts {
    /// Device.
    pub bdf: Bdf,
    /// Region index asked for.
    pub region: RegionIndex,
    /// BAR size from region info (`pci_resource_len`); 0 when absent.
    pub size: u64,
    /// Physical base address of the BAR (sysfs `resource`); 0 when unknown,
    /// which only weakens the EOVERFLOW prediction for offsets near 2^64.
    pub base: u64,
    /// Whether the BAR decodes memory (false: I/O ports).
    pub is_memory: bool,
    /// MSI-X layout of the device, if it has the capability.
    pub msix: Option<MsixLayout>,
    /// Whether region info advertises `VFIO_REGION_INFO_CAP_MSIX_MAPPABLE`.
    pub msix_mappable: bool,
    /// The kernel's page size.
    pub page_size: u64,
}

/// Checks an export request; returns the dma-buf size (sum of the lengths).
pub fn validate(target: &BarFacts, ranges: &[DmaRange], allow_msix_overlap: bool) -> Result<u64> {
    let BarFacts {
        bdf,
        region,
        size: bar_size,
        base,
        page_size,
        ..
    } = *target;

    // 1. nr_ranges.
    if ranges.is_empty() {
        return Err(Error::NoRanges { bdf, region });
    }

    // 2. A claimed BAR.
    if !region.is_bar() {
        return Err(Error::RegionNotBar { bdf, region });
    }
    if bar_size == 0 {
        return Err(Error::BarAbsent { bdf, region });
    }

    // 3. Each range non-empty and aligned; running total without overflow.
    // PAGE_ALIGNED(); page sizes are powers of two.
    let aligned = |v: u64| v & (page_size - 1) == 0;
    let mut total: u64 = 0;
    for (range, r) in ranges.iter().enumerate() {
        if r.length == 0 {
            return Err(Error::RangeEmpty {
                bdf,
                region,
                range,
                offset: r.offset,
            });
        }
        if !aligned(r.offset) || !aligned(r.length) {
            return Err(Error::RangeUnaligned {
                bdf,
                region,
                range,
                offset: r.offset,
                length: r.length,
                page_size,
            });
        }
        total = total
            .checked_add(r.length)
            .ok_or(Error::RangesTotalOverflow {
                bdf,
                region,
                range,
                total,
                length: r.length,
            })?;
    }

    // 4. The swiotlb bit.
    if total & DMA_IOVA_USE_SWIOTLB != 0 {
        return Err(Error::RangesTotalTooLarge { bdf, region, total });
    }

    // 5. A P2P provider: memory BARs only.
    if !target.is_memory {
        return Err(Error::BarNotMemory { bdf, region });
    }

    // 6. Each range inside the BAR, in physical addresses. The kernel's
    // `max_addr = start + len` wraps (to 0) for a BAR that ends at 2^64 - 1.
    let max_addr = base.wrapping_add(bar_size);
    for (range, r) in ranges.iter().enumerate() {
        let end = base
            .checked_add(r.offset)
            .and_then(|start| start.checked_add(r.length));
        let Some(end) = end else {
            return Err(Error::RangeOverflow {
                bdf,
                region,
                range,
                offset: r.offset,
                length: r.length,
                base,
            });
        };
        if end > max_addr {
            if max_addr < base {
                return Err(Error::BarEndsAtAddressTop {
                    bdf,
                    region,
                    base,
                    bar_size,
                });
            }
            if bar_size < page_size {
                return Err(Error::BarSmallerThanPage {
                    bdf,
                    region,
                    bar_size,
                    page_size,
                });
            }
            return Err(Error::RangePastEnd {
                bdf,
                region,
                range,
                offset: r.offset,
                length: r.length,
                bar_size,
            });
        }
    }

    // This library's rule: keep peers away from MSI-X structures.
    if let Some(msix) = target.msix {
        if !target.msix_mappable && !allow_msix_overlap {
            for span in msix.spans_in(region.get(), page_size) {
                for (range, r) in ranges.iter().enumerate() {
                    let end = r.offset + r.length; // checked in step 6
                    if r.offset < span.end && span.start < end {
                        return Err(Error::MsixOverlap {
                            bdf,
                            region,
                            range,
                            offset: r.offset,
                            length: r.length,
                            structure: span.structure,
                            start: span.start,
                            end: span.end,
                        });
                    }
                }
            }
        }
    }

    Ok(total)
}

/// Copies `ranges` into `dst` (the export argument) and checks them with
/// [`validate`]'s rules in the same pass; returns the dma-buf size.
///
/// The pass only gathers whether some rule failed, without branching per rule;
/// when one did, [`validate`] walks the ranges again to report the first error
/// the kernel would (errors are rare, exports are not).
///
/// # Errors
///
/// Those of [`validate`].
///
/// `dst` is as long as `ranges` (the argument buffer is made for them).
#[inline]
pub(crate) fn fill_checked(
    target: &BarFacts,
    ranges: &[DmaRange],
    dst: &mut [DmaRange],
    allow_msix_overlap: bool,
) -> Result<u64> {
    debug_assert_eq!(dst.len(), ranges.len(), "argument buffer and ranges differ");
    // Steps 1, 2 and 5 do not depend on the ranges. (`|`, not `||`: no branches.)
    let target_refused =
        ranges.is_empty() | !target.region.is_bar() | (target.size == 0) | !target.is_memory;
    let spans = match target.msix {
        Some(msix) if !target.msix_mappable && !allow_msix_overlap => {
            msix.span_slots(target.region.get(), target.page_size)
        }
        _ => [None, None],
    };
    let pass = match spans {
        [None, None] => fill_pass::<false>(ranges, dst, target.page_size, [(0, 0); 2]),
        _ => {
            let bounds = spans.map(|s| s.map_or((0, 0), |s| (s.start, s.end)));
            fill_pass::<true>(ranges, dst, target.page_size, bounds)
        }
    };
    // Step 6 for every range at once: each end is base + offset + length and the
    // sum grows with offset + length, so all fit if the largest does.
    let max_addr = target.base.wrapping_add(target.size); // wraps as the kernel's does
    let past_end = target
        .base
        .checked_add(pass.max_end)
        .is_none_or(|end| end > max_addr);
    if target_refused | pass.flagged | (pass.total & DMA_IOVA_USE_SWIOTLB != 0) | past_end {
        first_error(target, ranges, allow_msix_overlap)?;
    }
    Ok(pass.total)
}

/// The slow path of [`fill_checked`]: [`validate`] finds the error the kernel
/// reports first.
#[cold]
#[inline(never)]
fn first_error(target: &BarFacts, ranges: &[DmaRange], allow_msix_overlap: bool) -> Result<()> {
    validate(target, ranges, allow_msix_overlap).map(|_| ())
}

/// Copies `ranges` into `dst` unchecked (`skip_validation`); returns the sum of
/// the lengths, wrapping as the kernel's would not.
#[inline]
pub(crate) fn fill_unchecked(ranges: &[DmaRange], dst: &mut [DmaRange]) -> u64 {
    let mut total = 0u64;
    for (d, &r) in dst.iter_mut().zip(ranges) {
        *d = r;
        total = total.wrapping_add(r.length);
    }
    total
}

/// What one pass over the ranges found.
struct Pass {
    /// Sum of the lengths (wrapped if it overflowed: then `flagged`).
    total: u64,
    /// The largest `offset + length` (wrapped if one overflowed: then `flagged`).
    max_end: u64,
    /// Some range is empty or unaligned, the total or an end overflowed, or a
    /// range touches an MSI-X span.
    flagged: bool,
}

/// The loop of [`fill_checked`]: one copy and a few flag updates per range, no
/// branch but the loop's. `MSIX`: whether `spans` (`[start, end)`, empty
/// ones `(0, 0)`) are checked at all.
#[inline(always)]
fn fill_pass<const MSIX: bool>(
    ranges: &[DmaRange],
    dst: &mut [DmaRange],
    page_size: u64,
    spans: [(u64, u64); 2],
) -> Pass {
    let mask = page_size.wrapping_sub(1);
    let mut bits = 0u64; // unaligned bits of any offset or length
    let mut min_length = u64::MAX;
    let mut carries = 0u64; // overflows of the total or of an offset + length
    let mut msix = false;
    let mut total = 0u64;
    let mut max_end = 0u64;
    for (d, &r) in dst.iter_mut().zip(ranges) {
        *d = r;
        bits |= (r.offset | r.length) & mask;
        min_length = min_length.min(r.length);
        let (sum, carry) = total.overflowing_add(r.length);
        total = sum;
        let (end, carry_end) = r.offset.overflowing_add(r.length);
        carries += u64::from(carry) + u64::from(carry_end);
        max_end = max_end.max(end);
        if MSIX {
            for (start, stop) in spans {
                msix |= (r.offset < stop) & (start < end);
            }
        }
    }
    Pass {
        total,
        max_end,
        flagged: (bits != 0) | (min_length == 0) | (carries != 0) | msix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msix::MsixStructure;
    use rustix::io::Errno;

    const PAGE: u64 = 0x1000;
    /// The last page-aligned offset below 2^64.
    const LAST_PAGE: u64 = !0xfff;

    fn bar2() -> BarFacts {
        BarFacts {
            bdf: "0000:00:03.0".parse().unwrap(),
            region: RegionIndex(2),
            size: 0x100_0000,
            base: 0xfc00_0000,
            is_memory: true,
            msix: None,
            msix_mappable: false,
            page_size: PAGE,
        }
    }

    fn with_msix() -> BarFacts {
        // 32 vectors: table at 0x2000 (one page), PBA at 0x3800.
        BarFacts {
            msix: Some(MsixLayout {
                vectors: 32,
                table_bir: 2,
                table_offset: 0x2000,
                pba_bir: 2,
                pba_offset: 0x3800,
            }),
            ..bar2()
        }
    }

    fn r(offset: u64, length: u64) -> DmaRange {
        DmaRange::new(offset, length)
    }

    fn check(t: &BarFacts, ranges: &[DmaRange]) -> Result<u64> {
        validate(t, ranges, false)
    }

    #[test]
    fn accepts_one_and_many_ranges() {
        assert_eq!(check(&bar2(), &[r(0, PAGE)]).unwrap(), PAGE);
        assert_eq!(check(&bar2(), &[r(0, 0x100_0000)]).unwrap(), 0x100_0000);
        assert_eq!(
            check(
                &bar2(),
                &[r(0, PAGE), r(0x10_0000, 2 * PAGE), r(0xff_f000, PAGE)]
            )
            .unwrap(),
            4 * PAGE
        );
        // Overlapping and repeated ranges are the kernel's business: allowed.
        assert_eq!(check(&bar2(), &[r(0, PAGE), r(0, PAGE)]).unwrap(), 2 * PAGE);
    }

    #[test]
    fn a_bar_ending_at_the_top_of_the_address_space_refuses_every_range() {
        // Found by fuzzing against the kernel's rules: the kernel's
        // `max_addr = start + len` wraps to 0 for a BAR whose resource ends at
        // 2^64 - 1, so it refuses even a range well inside the BAR.
        let t = BarFacts {
            base: 0u64.wrapping_sub(0x100_0000),
            ..bar2()
        };
        let err = check(&t, &[r(0, PAGE)]).unwrap_err();
        assert!(matches!(err, Error::BarEndsAtAddressTop { .. }), "{err:?}");
        assert_eq!(err.errno(), Some(Errno::INVAL));
        let mut dst = [DmaRange::default()];
        let err = fill_checked(&t, &[r(0, PAGE)], &mut dst, false).unwrap_err();
        assert!(matches!(err, Error::BarEndsAtAddressTop { .. }), "{err:?}");
    }

    #[test]
    fn no_ranges_first() {
        // nr_ranges is checked before the region.
        let t = BarFacts {
            region: RegionIndex(7),
            ..bar2()
        };
        let err = check(&t, &[]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NoRanges {
                    region: RegionIndex(7),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.errno(), Some(Errno::INVAL));
    }

    #[test]
    fn non_bar_regions_are_enodev() {
        for region in [6, 7, 8, 9, 100] {
            let t = BarFacts {
                region: RegionIndex(region),
                ..bar2()
            };
            let err = check(&t, &[r(0, PAGE)]).unwrap_err();
            assert!(
                matches!(err, Error::RegionNotBar { .. }),
                "{region}: {err:?}"
            );
            assert_eq!(err.errno(), Some(Errno::NODEV));
        }
    }

    #[test]
    fn absent_bar_is_enodev_before_range_checks() {
        let t = BarFacts { size: 0, ..bar2() };
        let err = check(&t, &[r(1, 0)]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::BarAbsent {
                    region: RegionIndex(2),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.errno(), Some(Errno::NODEV));
    }

    #[test]
    fn empty_range() {
        let err = check(&bar2(), &[r(0, PAGE), r(PAGE, 0)]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::RangeEmpty {
                    range: 1,
                    offset: PAGE,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.errno(), Some(Errno::INVAL));
    }

    #[test]
    fn unaligned_offset_or_length() {
        for (i, bad) in [r(0x800, PAGE), r(0, 0x800), r(1, PAGE), r(0, PAGE + 1)]
            .into_iter()
            .enumerate()
        {
            let err = check(&bar2(), &[bad]).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::RangeUnaligned {
                        range: 0,
                        page_size: PAGE,
                        ..
                    }
                ),
                "{i}: {err:?}"
            );
            assert_eq!(err.errno(), Some(Errno::INVAL));
        }
    }

    #[test]
    fn page_size_is_a_parameter() {
        let t = BarFacts {
            page_size: 0x10000,
            ..bar2()
        };
        assert!(matches!(
            check(&t, &[r(0, PAGE)]),
            Err(Error::RangeUnaligned {
                page_size: 0x10000,
                ..
            })
        ));
        assert_eq!(check(&t, &[r(0x10000, 0x10000)]).unwrap(), 0x10000);
    }

    #[test]
    fn alignment_errors_of_later_ranges_win_over_bounds_of_earlier_ones() {
        // The kernel checks every range for alignment before any for bounds.
        let err = check(&bar2(), &[r(0x200_0000, PAGE), r(0x800, PAGE)]).unwrap_err();
        assert!(
            matches!(err, Error::RangeUnaligned { range: 1, .. }),
            "{err:?}"
        );
        let err = check(&bar2(), &[r(LAST_PAGE, PAGE), r(0, 0)]).unwrap_err();
        assert!(matches!(err, Error::RangeEmpty { range: 1, .. }), "{err:?}");
    }

    #[test]
    fn running_total_overflow() {
        let huge = LAST_PAGE;
        let err = check(&bar2(), &[r(0, huge), r(0, PAGE)]).unwrap_err();
        assert!(
            matches!(err, Error::RangesTotalOverflow { range: 1, total, length: PAGE, .. } if total == huge),
            "{err:?}"
        );
        assert_eq!(err.errno(), Some(Errno::INVAL));
    }

    #[test]
    fn total_with_bit_63_is_refused() {
        let err = check(&bar2(), &[r(0, 1 << 62), r(0, 1 << 62)]).unwrap_err();
        assert!(
            matches!(err, Error::RangesTotalTooLarge { total, .. } if total == 1 << 63),
            "{err:?}"
        );
        assert_eq!(err.errno(), Some(Errno::INVAL));
        // Just below is only refused later, by the BAR bounds.
        let err = check(&bar2(), &[r(0, (1 << 63) - PAGE)]).unwrap_err();
        assert!(matches!(err, Error::RangePastEnd { .. }), "{err:?}");
    }

    #[test]
    fn io_bar_has_no_provider() {
        let t = BarFacts {
            is_memory: false,
            ..bar2()
        };
        let err = check(&t, &[r(0, PAGE)]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::BarNotMemory {
                    region: RegionIndex(2),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.errno(), Some(Errno::INVAL));
        // Alignment is checked first.
        assert!(matches!(
            check(&t, &[r(1, PAGE)]),
            Err(Error::RangeUnaligned { .. })
        ));
    }

    #[test]
    fn overflow_is_eoverflow() {
        // offset + length wraps.
        let err = check(&bar2(), &[r(LAST_PAGE, PAGE)]).unwrap_err();
        assert!(
            matches!(err, Error::RangeOverflow { range: 0, .. }),
            "{err:?}"
        );
        assert_eq!(err.errno(), Some(Errno::OVERFLOW));
        // base + offset wraps although offset + length does not.
        let offset = (u64::MAX - 0xfc00_0000 + 1) & !0xfff;
        assert!(offset.checked_add(PAGE).is_some());
        let err = check(&bar2(), &[r(offset, PAGE)]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::RangeOverflow {
                    base: 0xfc00_0000,
                    ..
                }
            ),
            "{err:?}"
        );
        // Overflow of a later range is reported after earlier in-bounds ranges.
        let err = check(&bar2(), &[r(0, PAGE), r(LAST_PAGE, PAGE)]).unwrap_err();
        assert!(
            matches!(err, Error::RangeOverflow { range: 1, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn past_the_end() {
        let err = check(&bar2(), &[r(0xfff_000, 2 * PAGE)]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::RangePastEnd {
                    range: 0,
                    offset: 0xfff_000,
                    bar_size: 0x100_0000,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.errno(), Some(Errno::INVAL));
        let err = check(&bar2(), &[r(0x100_0000, PAGE)]).unwrap_err();
        assert!(matches!(err, Error::RangePastEnd { .. }), "{err:?}");
        // A bounds error of range 0 comes before an overflow of range 1.
        let err = check(&bar2(), &[r(0x200_0000, PAGE), r(LAST_PAGE, PAGE)]).unwrap_err();
        assert!(
            matches!(err, Error::RangePastEnd { range: 0, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn unknown_base_still_catches_offset_plus_length_overflow() {
        let t = BarFacts { base: 0, ..bar2() };
        assert!(matches!(
            check(&t, &[r(LAST_PAGE, PAGE)]),
            Err(Error::RangeOverflow { base: 0, .. })
        ));
        assert!(matches!(
            check(&t, &[r(0x100_0000, PAGE)]),
            Err(Error::RangePastEnd { .. })
        ));
    }

    #[test]
    fn sub_page_bar_is_named() {
        let t = BarFacts {
            size: 0x100,
            ..bar2()
        };
        let err = check(&t, &[r(0, PAGE)]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::BarSmallerThanPage {
                    bar_size: 0x100,
                    page_size: PAGE,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.errno(), Some(Errno::INVAL));
        // The kernel's EOVERFLOW still comes first when it applies.
        assert!(matches!(
            check(&t, &[r(LAST_PAGE, PAGE)]),
            Err(Error::RangeOverflow { .. })
        ));
        // And alignment before that.
        assert!(matches!(
            check(&t, &[r(0, 0x100)]),
            Err(Error::RangeUnaligned { .. })
        ));
    }

    #[test]
    fn msix_table_page_is_refused() {
        let err = check(&with_msix(), &[r(0x2000, PAGE)]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::MsixOverlap {
                    range: 0,
                    structure: MsixStructure::Table,
                    start: 0x2000,
                    end: 0x3000,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.errno(), None);
        assert!(err.is_predicted());
        // A range spanning the whole BAR touches it too.
        assert!(matches!(
            check(&with_msix(), &[r(0, 0x100_0000)]),
            Err(Error::MsixOverlap { .. })
        ));
    }

    #[test]
    fn msix_pba_page_is_refused() {
        let err = check(&with_msix(), &[r(0, 2 * PAGE), r(0x3000, PAGE)]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::MsixOverlap {
                    range: 1,
                    structure: MsixStructure::Pba,
                    start: 0x3000,
                    end: 0x4000,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn msix_neighbours_are_fine() {
        assert_eq!(
            check(&with_msix(), &[r(0, 0x2000), r(0x4000, PAGE)]).unwrap(),
            3 * PAGE
        );
    }

    #[test]
    fn msix_in_another_bar_does_not_matter() {
        let t = BarFacts {
            region: RegionIndex(0),
            ..with_msix()
        };
        assert_eq!(check(&t, &[r(0x2000, PAGE)]).unwrap(), PAGE);
    }

    #[test]
    fn msix_mappable_or_override_allows_it() {
        let t = BarFacts {
            msix_mappable: true,
            ..with_msix()
        };
        assert_eq!(check(&t, &[r(0x2000, PAGE)]).unwrap(), PAGE);
        assert_eq!(
            validate(&with_msix(), &[r(0x2000, PAGE)], true).unwrap(),
            PAGE
        );
    }

    #[test]
    fn kernel_errors_win_over_msix() {
        let err = check(&with_msix(), &[r(0x2000, PAGE), r(0x200_0000, PAGE)]).unwrap_err();
        assert!(
            matches!(err, Error::RangePastEnd { range: 1, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn messages_name_the_device_bar_range_rule_errno_and_fix() {
        let err = check(&bar2(), &[r(0x800, PAGE)]).unwrap_err();
        let msg = err.to_string();
        for needle in ["0000:00:03.0", "BAR2", "range 0", "0x800", "EINVAL", "fix:"] {
            assert!(msg.contains(needle), "{needle:?} missing in {msg}");
        }
        let err = check(
            &BarFacts {
                region: RegionIndex(7),
                ..bar2()
            },
            &[r(0, PAGE)],
        )
        .unwrap_err();
        assert!(err.to_string().contains("config space (region 7)"));
        assert!(err.to_string().contains("ENODEV"));
    }

    /// `fill_checked` against `validate`: the same size or the same error, and on
    /// success a copy of the ranges.
    fn fill_agrees(t: &BarFacts, ranges: &[DmaRange], allow: bool) {
        let mut dst = vec![DmaRange::default(); ranges.len()];
        let filled = fill_checked(t, ranges, &mut dst, allow);
        let validated = validate(t, ranges, allow);
        assert_eq!(
            format!("{filled:?}"),
            format!("{validated:?}"),
            "{t:?} {ranges:x?} allow={allow}"
        );
        if filled.is_ok() {
            assert_eq!(dst, ranges);
        }
    }

    #[test]
    fn one_pass_fill_reports_what_validate_reports() {
        let targets = [
            bar2(),
            with_msix(),
            BarFacts {
                msix_mappable: true,
                ..with_msix()
            },
            BarFacts {
                region: RegionIndex(0),
                ..with_msix()
            },
            BarFacts {
                is_memory: false,
                ..bar2()
            },
            BarFacts { size: 0, ..bar2() },
            BarFacts {
                region: RegionIndex(7),
                ..bar2()
            },
            BarFacts { base: 0, ..bar2() },
            BarFacts {
                base: LAST_PAGE - 0x100_0000,
                ..bar2()
            },
            BarFacts {
                size: 0x100,
                ..bar2()
            },
            BarFacts {
                page_size: 0x10000,
                ..bar2()
            },
        ];
        let offsets = [
            0,
            PAGE,
            0x800,
            0x2000,
            0x3000,
            0xff_f000,
            0x100_0000,
            1 << 62,
            LAST_PAGE,
        ];
        let lengths = [0, PAGE, 2 * PAGE, 0x800, 0x10000, 1 << 62, LAST_PAGE];
        // Every one-range request, and pseudo-random two- to four-range ones.
        let all: Vec<DmaRange> = offsets
            .iter()
            .flat_map(|&o| lengths.iter().map(move |&l| r(o, l)))
            .collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for t in &targets {
            for allow in [false, true] {
                fill_agrees(t, &[], allow);
                for &one in &all {
                    fill_agrees(t, &[one], allow);
                }
                for _ in 0..2000 {
                    let n = 2 + next(3);
                    let ranges: Vec<DmaRange> = (0..n).map(|_| all[next(all.len())]).collect();
                    fill_agrees(t, &ranges, allow);
                }
            }
        }
    }

    #[test]
    fn one_pass_fill_copies_many_ranges() {
        let ranges: Vec<DmaRange> = (0..1024).map(|i| r(2 * i * PAGE, PAGE)).collect();
        let t = BarFacts {
            size: 0x100_0000 * 2,
            ..bar2()
        };
        let mut dst = vec![DmaRange::default(); ranges.len()];
        assert_eq!(
            fill_checked(&t, &ranges, &mut dst, false).unwrap(),
            1024 * PAGE
        );
        assert_eq!(dst, ranges);
        // The last range alone out of bounds: found by the slow path, by index.
        let mut bad = ranges.clone();
        bad[1023] = r(t.size, PAGE);
        let err = fill_checked(&t, &bad, &mut dst, false).unwrap_err();
        assert!(
            matches!(err, Error::RangePastEnd { range: 1023, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn unchecked_fill_copies_and_wraps() {
        let ranges = [r(1, 0), r(0, u64::MAX), r(PAGE, 2)];
        let mut dst = [DmaRange::default(); 3];
        assert_eq!(fill_unchecked(&ranges, &mut dst), 1);
        assert_eq!(dst, ranges);
    }

    #[test]
    fn default_options() {
        let o = ExportOptions::default();
        assert_eq!(o.open_flags, OFlags::CLOEXEC | OFlags::RDWR);
        assert!(!o.allow_msix_overlap);
        #[cfg(feature = "testing")]
        assert!(!o.skip_validation);
    }
}
