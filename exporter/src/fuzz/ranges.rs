//! Range validation ([`validate`] and `fill_checked`) against the executable
//! model of the kernel's rules (`kernel_model`), and the library's own MSI-X
//! rule against an independent overlap check.

use rustix::io::Errno;

use super::kernel_model::{export, KernelBar, KernelRequest};
use super::Rng;
use crate::error::Error;
use crate::msix::MsixLayout;
use crate::ranges::{fill_checked, validate, BarFacts, DmaRange};
use peerdma_host::{Bdf, RegionIndex};

const PAGE_SIZES: [u64; 3] = [0x1000, 0x4000, 0x10000];

fn bar_facts(rng: &mut Rng) -> BarFacts {
    let page_size = if rng.chance(4) {
        *rng.pick(&PAGE_SIZES)
    } else {
        0x1000
    };
    let region = match rng.below(10) {
        0 => RegionIndex(6 + rng.below(4) as u32),
        1 => RegionIndex(rng.next() as u32),
        _ => RegionIndex(rng.below(6) as u32),
    };
    let size = match rng.below(10) {
        0 => 0,
        1 => 0x10 << rng.below(8), // sub-page BARs
        2 => rng.edgy_u64(),
        _ => page_size << rng.below(20),
    };
    let base = match rng.below(8) {
        // A BAR at the very top: base + size == 2^64 (resource end u64::MAX).
        0 => 0u64.wrapping_sub(size),
        1 => 0u64
            .wrapping_sub(size)
            .wrapping_sub(size.max(1).wrapping_mul(rng.below(4))),
        2 => 0,
        3 => rng.edgy_u64(),
        _ => rng.below(1 << 28).wrapping_mul(size.max(page_size)) & ((1 << 52) - 1),
    };
    // The kernel's resource cannot end past 2^64 - 1.
    let base = if base.checked_add(size).is_none() && base.wrapping_add(size) != 0 {
        0u64.wrapping_sub(size)
    } else {
        base
    };
    let msix = rng.chance(3).then(|| MsixLayout {
        vectors: 1 + rng.below(2048) as u16,
        table_bir: rng.below(6) as u8,
        table_offset: (rng.next() as u32 & 0x7f) << 12 | (rng.next() as u32 & 0xff8),
        pba_bir: rng.below(6) as u8,
        pba_offset: (rng.next() as u32 & 0x7f) << 12 | (rng.next() as u32 & 0xff8),
    });
    BarFacts {
        bdf: Bdf::new(0, 0, 3, 0).expect("a valid BDF"),
        region,
        size,
        base,
        is_memory: !rng.chance(8),
        msix,
        msix_mappable: rng.chance(4),
        page_size,
    }
}

fn ranges(rng: &mut Rng, facts: &BarFacts) -> Vec<DmaRange> {
    let count = match rng.below(20) {
        0 => 0,
        1 => 9 + rng.below(56) as usize,
        _ => 1 + rng.below(8) as usize,
    };
    let page = facts.page_size;
    let pages_in_bar = (facts.size / page).max(1);
    (0..count)
        .map(|_| {
            let offset = match rng.below(8) {
                0 => rng.edgy_u64(),
                1 => rng.edgy_u64() & !(page - 1),
                2 => rng.below(pages_in_bar) * page + rng.below(page),
                _ => rng.below(pages_in_bar) * page,
            };
            let length = match rng.below(8) {
                0 => rng.edgy_u64(),
                1 => rng.edgy_u64() & !(page - 1),
                2 => 0,
                3 => facts.size.wrapping_sub(offset),
                _ => (1 + rng.below(pages_in_bar.min(64))) * page,
            };
            DmaRange::new(offset, length)
        })
        .collect()
}

fn kernel(facts: &BarFacts, ranges: &[DmaRange]) -> Result<u64, Errno> {
    let ranges: Vec<(u64, u64)> = ranges.iter().map(|r| (r.offset, r.length)).collect();
    export(
        &KernelRequest {
            flags: 0,
            region_index: facts.region.0,
            ranges: &ranges,
            page_size: facts.page_size,
        },
        &KernelBar {
            start: facts.base,
            len: facts.size,
            has_provider: facts.is_memory,
        },
    )
}

/// Whether some range touches a page of an MSI-X structure in this BAR,
/// computed here from the layout (not with `MsixLayout::spans_in`).
fn touches_msix(facts: &BarFacts, ranges: &[DmaRange]) -> bool {
    let Some(m) = facts.msix else { return false };
    let page = facts.page_size;
    let vectors = u64::from(m.vectors);
    let structures = [
        (m.table_bir, u64::from(m.table_offset), vectors * 16),
        (m.pba_bir, u64::from(m.pba_offset), vectors.div_ceil(64) * 8),
    ];
    structures.iter().any(|&(bir, offset, len)| {
        if u32::from(bir) != facts.region.0 {
            return false;
        }
        let first_page = offset / page;
        let last_page = (offset + len - 1) / page;
        ranges.iter().any(|r| {
            let r_first = r.offset / page;
            let r_last = (r.offset + r.length - 1) / page;
            r_first <= last_page && first_page <= r_last
        })
    })
}

/// Compares one library outcome with the kernel's; `msix_rule`: whether the
/// library's own MSI-X rule was on.
fn compare(
    what: &str,
    facts: &BarFacts,
    ranges: &[DmaRange],
    lib: Result<u64, Error>,
    msix_rule: bool,
) -> Result<(), String> {
    let kernel = kernel(facts, ranges);
    // Only where the kernel accepts (so every range is non-empty and in bounds).
    let msix_refusal =
        kernel.is_ok() && msix_rule && !facts.msix_mappable && touches_msix(facts, ranges);
    let agree = match (&lib, &kernel) {
        (Ok(a), Ok(b)) => a == b && !msix_refusal,
        (Err(Error::MsixOverlap { .. }), Ok(_)) => msix_refusal,
        (Err(e), Err(k)) => e.errno() == Some(*k),
        _ => false,
    };
    if agree {
        Ok(())
    } else {
        Err(format!(
            "{what}: library {:?} but kernel {kernel:?} (MSI-X refusal expected: {msix_refusal}) for {facts:?} ranges {ranges:?}",
            lib.map_err(|e| (e.errno(), e.to_string()))
        ))
    }
}

/// [`validate`] agrees with the kernel model, with and without the MSI-X rule.
pub(crate) fn validate_vs_kernel(rng: &mut Rng) -> Result<(), String> {
    let facts = bar_facts(rng);
    let ranges = ranges(rng, &facts);
    compare(
        "validate",
        &facts,
        &ranges,
        validate(&facts, &ranges, true),
        false,
    )?;
    compare(
        "validate",
        &facts,
        &ranges,
        validate(&facts, &ranges, false),
        true,
    )
}

/// `fill_checked` agrees with the kernel model and copies every range as given.
pub(crate) fn fill_checked_vs_kernel(rng: &mut Rng) -> Result<(), String> {
    let facts = bar_facts(rng);
    let ranges = ranges(rng, &facts);
    for allow in [true, false] {
        let mut dst = vec![DmaRange::default(); ranges.len()];
        let lib = fill_checked(&facts, &ranges, &mut dst, allow);
        if lib.is_ok() && dst != ranges {
            return Err(format!("fill_checked copied {dst:?} for {ranges:?}"));
        }
        compare("fill_checked", &facts, &ranges, lib, !allow)?;
    }
    Ok(())
}
