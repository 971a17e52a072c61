//! IOVA placement: where a mapping goes in an IOAS.
//!
//! The kernel can pick an IOVA itself, but it packs mappings back to back, so a
//! DMA that runs past the end of one buffer lands in the next. This allocator
//! places every automatic mapping with an unmapped *guard gap* on both sides
//! (a DMA that overruns a buffer hits the gap and faults in the IOMMU), keeps
//! IOVA 0 and the guard above it unmapped (a null bus address faults), stays
//! inside the IOAS's usable ranges and under a DMA-mask limit, and then maps
//! with `IOMMU_IOAS_MAP_FIXED_IOVA`.
//!
//! The `Allocator` is pure bookkeeping, no ioctls: it only knows the
//! mappings made through it. `reserve` and `release` apply it to an IOAS
//! (its usable ranges, its [`Placement`]) for the mapping types.

use std::fmt;

use super::error::{Error, Result};
use super::IoasInner;

/// One usable IOVA interval `start..=last`, as `IOMMU_IOAS_IOVA_RANGES` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct IovaRange {
    /// First usable address.
    pub start: u64,
    /// Last usable address (inclusive).
    pub last: u64,
}

impl IovaRange {
    /// Whether `iova..iova+len` lies inside this range.
    pub fn contains(&self, iova: u64, len: u64) -> bool {
        len != 0
            && iova >= self.start
            && iova
                .checked_add(len - 1)
                .is_some_and(|end| end <= self.last)
    }
}

impl fmt::Display for IovaRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x} to {:#x}", self.start, self.last)
    }
}

/// How automatic IOVAs are chosen in an IOAS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Placement {
    /// Unmapped bytes kept between an automatic mapping and any other mapping
    /// (and above IOVA 0). At least the longest single transfer of the engines
    /// that use the IOAS, so one overrun cannot reach a neighbour.
    pub guard: u64,
    /// The highest IOVA any mapping may reach (inclusive): the DMA mask of the
    /// least capable device attached, e.g. `(1 << 28) - 1` for QEMU's edu.
    pub limit: u64,
}

/// Default guard gap: 64 KiB.
pub const DEFAULT_GUARD: u64 = 64 << 10;

/// Mappings of at least this size are aligned to it, so the IOMMU can use
/// 2 MiB pages when the backing memory allows.
const HUGE: u64 = 2 << 20;

impl Default for Placement {
    /// A 64 KiB guard, no limit below the IOAS's own ranges.
    fn default() -> Self {
        Placement {
            guard: DEFAULT_GUARD,
            limit: u64::MAX,
        }
    }
}

impl Placement {
    /// The limit a DMA mask of `bits` bits gives (64 or more: no limit).
    pub fn mask_limit(bits: u32) -> u64 {
        if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        }
    }

    /// Placement for an engine with DMA mask `mask` (highest address it can
    /// reach) whose transfers are at most `max_transfer` bytes: the guard is
    /// the larger of the default and `max_transfer`.
    pub fn for_engine(mask: u64, max_transfer: u64) -> Self {
        Placement {
            guard: DEFAULT_GUARD.max(max_transfer),
            limit: mask,
        }
    }
}

/// Why a fixed IOVA cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FixedProblem {
    /// Not aligned to what the IOAS needs.
    Unaligned,
    /// Past the DMA-mask limit.
    OverLimit,
    /// Not inside one usable range.
    OutsideRanges,
    /// Overlaps a mapping made through this allocator (start, len).
    Overlaps(u64, u64),
}

/// Rounds `v` up to a multiple of the power of two `align`; `None` on overflow.
fn align_up(v: u64, align: u64) -> Option<u64> {
    v.checked_add(align - 1).map(|x| x & !(align - 1))
}

/// The mappings of one IOAS, by start address.
#[derive(Debug, Default)]
pub(crate) struct Allocator {
    /// `(start, length)` of every reserved mapping, sorted by start. A vector
    /// rather than a tree: an IOAS holds tens of mappings, and a map/unmap
    /// cycle then allocates nothing.
    used: Vec<(u64, u64)>,
}

impl Allocator {
    /// The lowest IOVA where `len` bytes fit with `placement.guard` free bytes
    /// on each side, aligned to `align` (a power of two), inside one of
    /// `ranges` (sorted by start) and under the limit. Does not reserve it.
    pub(crate) fn find(
        &self,
        ranges: &[IovaRange],
        align: u64,
        len: u64,
        placement: Placement,
    ) -> Option<u64> {
        if len == 0 || !align.is_power_of_two() {
            return None;
        }
        let align = if len >= HUGE { align.max(HUGE) } else { align };
        let guard = placement.guard;
        // Keep IOVA 0 (and the guard above it) unmapped: a zero bus address faults.
        let floor = guard.max(1);
        // `ranges` is sorted by start (the kernel reports it so; the IOAS sorts
        // its cache anyway), so the first fit is the lowest.
        for r in ranges {
            let last = r.last.min(placement.limit);
            let Some(mut cand) = align_up(r.start.max(floor), align) else {
                continue;
            };
            for &(s, l) in &self.used {
                let e = s.saturating_add(l);
                if e.saturating_add(guard) <= cand {
                    continue;
                }
                if cand
                    .checked_add(len)
                    .and_then(|x| x.checked_add(guard))
                    .is_some_and(|x| x <= s)
                {
                    break;
                }
                match align_up(e.saturating_add(guard), align) {
                    Some(next) => cand = next,
                    None => {
                        cand = u64::MAX;
                        break;
                    }
                }
            }
            if cand
                .checked_add(len - 1)
                .is_some_and(|end| end <= last && cand >= r.start)
            {
                return Some(cand);
            }
        }
        None
    }

    /// Checks a caller-chosen IOVA. No guard is required around it: a fixed
    /// placement is the caller's decision.
    pub(crate) fn check_fixed(
        &self,
        ranges: &[IovaRange],
        align: u64,
        iova: u64,
        len: u64,
        limit: u64,
    ) -> Result<(), FixedProblem> {
        if iova & (align - 1) != 0 {
            return Err(FixedProblem::Unaligned);
        }
        let Some(end) = iova.checked_add(len - 1) else {
            return Err(FixedProblem::OverLimit);
        };
        if end > limit {
            return Err(FixedProblem::OverLimit);
        }
        if !ranges.iter().any(|r| r.contains(iova, len)) {
            return Err(FixedProblem::OutsideRanges);
        }
        if let Some((s, l)) = self.overlap(iova, len) {
            return Err(FixedProblem::Overlaps(s, l));
        }
        Ok(())
    }

    /// The first reserved mapping overlapping `iova..iova+len`.
    fn overlap(&self, iova: u64, len: u64) -> Option<(u64, u64)> {
        let end = iova.saturating_add(len);
        // The last mapping starting below `end` is the only candidate: mappings
        // do not overlap each other.
        let below = self.used.partition_point(|&(s, _)| s < end);
        below
            .checked_sub(1)
            .map(|i| self.used[i])
            .filter(|&(s, l)| s.saturating_add(l) > iova)
    }

    /// Reserves `iova..iova+len`.
    pub(crate) fn insert(&mut self, iova: u64, len: u64) {
        let at = self.used.partition_point(|&(s, _)| s < iova);
        self.used.insert(at, (iova, len));
    }

    /// Releases the mapping starting at `iova`.
    pub(crate) fn remove(&mut self, iova: u64) {
        if let Ok(at) = self.used.binary_search_by_key(&iova, |&(s, _)| s) {
            self.used.remove(at);
        }
    }

    /// Every reservation, `(start, len)`, by address.
    pub(crate) fn reserved(&self) -> Vec<(u64, u64)> {
        self.used.clone()
    }
}

/// Where a mapping goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Iova {
    /// peerdma's guarded placement (not the kernel's own IOVA allocation):
    /// the lowest window with a guard gap on both sides, inside the usable
    /// ranges and under the DMA-mask limit, then mapped with
    /// `IOMMU_IOAS_MAP_FIXED_IOVA`.
    Guarded,
    /// Exactly here (aligned, inside the usable ranges and the limit, not
    /// overlapping another mapping). No guard is enforced around it.
    Fixed(u64),
}

/// Reserves an IOVA window for `len` bytes in `ioas`.
pub(crate) fn reserve(ioas: &IoasInner, iova: Iova, len: u64) -> Result<u64> {
    if len == 0 {
        return Err(Error::ZeroLength);
    }
    let mut guard = ioas.state();
    let state = &mut *guard;
    let align = ioas.load_ranges(state)?;
    let ranges: &[IovaRange] = state.ranges.as_ref().map_or(&[], |(r, _)| r);
    let placement = ioas.placement;
    if len & (align - 1) != 0 {
        return Err(Error::IovaUnaligned {
            ioas: ioas.id,
            iova: match iova {
                Iova::Fixed(v) => v,
                Iova::Guarded => 0,
            },
            len,
            align,
        });
    }
    let at = match iova {
        Iova::Guarded => state
            .alloc
            .find(ranges, align, len, placement)
            .ok_or_else(|| Error::IovaExhausted {
                ioas: ioas.id,
                len,
                guard: placement.guard,
                limit: placement.limit,
                ranges: ranges.to_vec(),
            })?,
        Iova::Fixed(at) => {
            state
                .alloc
                .check_fixed(ranges, align, at, len, placement.limit)
                .map_err(|problem| match problem {
                    FixedProblem::Unaligned => Error::IovaUnaligned {
                        ioas: ioas.id,
                        iova: at,
                        len,
                        align,
                    },
                    FixedProblem::OverLimit => Error::IovaOverLimit {
                        ioas: ioas.id,
                        iova: at,
                        len,
                        limit: placement.limit,
                    },
                    FixedProblem::OutsideRanges => Error::IovaOutsideRanges {
                        ioas: ioas.id,
                        iova: at,
                        len,
                        ranges: ranges.to_vec(),
                    },
                    FixedProblem::Overlaps(existing, existing_len) => Error::IovaOverlap {
                        ioas: ioas.id,
                        iova: at,
                        len,
                        existing,
                        existing_len,
                    },
                })?;
            at
        }
    };
    state.alloc.insert(at, len);
    Ok(at)
}

/// Releases a reservation.
pub(crate) fn release(ioas: &IoasInner, iova: u64) {
    ioas.state().alloc.remove(iova);
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;
    const ALL: [IovaRange; 1] = [IovaRange {
        start: 0,
        last: u64::MAX,
    }];

    fn p(guard: u64, limit: u64) -> Placement {
        Placement { guard, limit }
    }

    #[test]
    fn a_range_prints_in_words() {
        let r = IovaRange {
            start: 0x1000,
            last: 0xfee0_0000 - 1,
        };
        assert_eq!(r.to_string(), "0x1000 to 0xfedfffff");
    }

    #[test]
    fn first_mapping_stays_off_zero() {
        let a = Allocator::default();
        assert_eq!(
            a.find(&ALL, PAGE, PAGE, p(0x10000, u64::MAX)),
            Some(0x10000)
        );
        // Even with no guard, IOVA 0 is never handed out.
        assert_eq!(a.find(&ALL, PAGE, PAGE, p(0, u64::MAX)), Some(PAGE));
    }

    #[test]
    fn consecutive_mappings_keep_the_guard() {
        let mut a = Allocator::default();
        let pl = p(0x10000, u64::MAX);
        let x = a.find(&ALL, PAGE, 0x3000, pl).unwrap();
        a.insert(x, 0x3000);
        let y = a.find(&ALL, PAGE, 0x1000, pl).unwrap();
        assert_eq!(y, x + 0x3000 + 0x10000);
        a.insert(y, 0x1000);
        // A hole big enough for mapping + guard on both sides is reused.
        a.remove(x);
        let z = a.find(&ALL, PAGE, 0x1000, pl).unwrap();
        assert_eq!(z, 0x10000);
        assert!(z + 0x1000 + 0x10000 <= y);
    }

    #[test]
    fn hole_too_small_for_guards_is_skipped() {
        let mut a = Allocator::default();
        let pl = p(0x1000, u64::MAX);
        a.insert(0x1000, 0x1000);
        a.insert(0x4000, 0x1000); // hole 0x2000..0x4000: 2 pages
                                  // A one-page mapping needs guard + page + guard = 3 pages: does not fit.
        assert_eq!(a.find(&ALL, PAGE, PAGE, pl), Some(0x6000));
    }

    #[test]
    fn respects_ranges_and_limit() {
        let a = Allocator::default();
        let ranges = [
            IovaRange {
                start: 0,
                last: 0xfedf_ffff,
            },
            IovaRange {
                start: 0xfef0_0000,
                last: (1 << 39) - 1,
            },
        ];
        let edu = p(0x10000, Placement::mask_limit(28));
        assert_eq!(a.find(&ranges, PAGE, 64 << 20, edu), Some(2 << 20));
        assert_eq!(a.find(&ranges, PAGE, 256 << 20, edu), None);
        // Above the first range when it does not fit there.
        let big = a.find(&ranges, PAGE, 0x1_0000_0000, p(0x10000, u64::MAX));
        assert_eq!(big, Some(0xff00_0000));
    }

    #[test]
    fn large_mappings_are_2m_aligned() {
        let mut a = Allocator::default();
        let pl = p(0x10000, u64::MAX);
        a.insert(0x10000, 0x1000);
        let x = a.find(&ALL, PAGE, 4 << 20, pl).unwrap();
        assert_eq!(x % (2 << 20), 0);
    }

    #[test]
    fn fixed_checks() {
        let mut a = Allocator::default();
        a.insert(0x10000, 0x2000);
        let limit = Placement::mask_limit(28);
        assert_eq!(a.check_fixed(&ALL, PAGE, 0x12000, 0x1000, limit), Ok(()));
        assert_eq!(
            a.check_fixed(&ALL, PAGE, 0x11000, 0x1000, limit),
            Err(FixedProblem::Overlaps(0x10000, 0x2000))
        );
        assert_eq!(
            a.check_fixed(&ALL, PAGE, 0xf000, 0x2000, limit),
            Err(FixedProblem::Overlaps(0x10000, 0x2000))
        );
        assert_eq!(
            a.check_fixed(&ALL, PAGE, 0x12800, 0x1000, limit),
            Err(FixedProblem::Unaligned)
        );
        assert_eq!(
            a.check_fixed(&ALL, PAGE, limit + 1 - 0x1000, 0x2000, limit),
            Err(FixedProblem::OverLimit)
        );
        let low = [IovaRange {
            start: 0,
            last: 0xffff,
        }];
        assert_eq!(
            a.check_fixed(&low, PAGE, 0xf000, 0x2000, limit),
            Err(FixedProblem::OutsideRanges)
        );
    }

    #[test]
    fn no_room_is_none_not_overflow() {
        let mut a = Allocator::default();
        let pl = p(u64::MAX / 2, u64::MAX);
        a.insert(u64::MAX / 2 + 0x1000, 0x1000);
        assert_eq!(a.find(&ALL, PAGE, PAGE, pl), None);
        assert_eq!(a.find(&ALL, PAGE, 0, pl), None);
        assert_eq!(a.reserved(), vec![(u64::MAX / 2 + 0x1000, 0x1000)]);
    }
}
