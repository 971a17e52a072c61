//! `checked`: the library's checked copy ([`AttachedEngine::copy`]) on edu. A copy
//! host → BAR lands and reports the bytes moved once; a destination mapped read-only
//! and a revoked destination are refused before any DMA; a destination whose
//! exporter revoked it behind the mapping's back (a mapping that does not follow its
//! exporter) makes the IOMMU refuse edu's writes, and the copy fails naming the fault
//! instead of returning `Ok` with nothing landed.

use anyhow::{bail, Result};
use peerdma_engine::{AttachedEngine, EngineError, Span};
use peerdma_exporter::DmaRange;
use peerdma_importer::iommufd::{Iommufd, Iova, Prot, UserBuffer};
use peerdma_testbed::manifest::Manifest;
use peerdma_testbed::pattern;
use serde_json::{json, Value};

use crate::rig::{at, bdf_of, open_cdev, EDU_BUF};

/// Where in ivshmem0's BAR2 this scenario works.
pub(crate) const CHECKED: u64 = 28 << 20;

fn refused(r: Result<impl std::fmt::Debug, EngineError>) -> Result<EngineError> {
    match r {
        Ok(report) => bail!("the copy returned Ok ({report:?})"),
        Err(e) => Ok(e),
    }
}

pub(crate) fn checked(m: &Manifest) -> Result<Value> {
    let iommufd = Iommufd::open()?;
    let mut edu = AttachedEngine::open(bdf_of(m, "edu0")?, &iommufd)?;
    let ivshmem = open_cdev(m, "ivshmem0")?;
    let bar2 = ivshmem.map_region(2)?;
    let len = 2 * EDU_BUF;
    let seed = 0x5005;
    let mut data = vec![0u8; len as usize];
    pattern::fill(seed, 0, &mut data);
    let mut src = edu
        .ioas()
        .map_host(UserBuffer::new(len as usize)?, Iova::Guarded, Prot::Read)?;
    src.buffer().write(0, &data)?;
    let export = |offset| {
        ivshmem.export_dma_buf(
            2,
            &[DmaRange {
                offset,
                length: at::SMALL,
            }],
        )
    };

    // 1. host → BAR, checked: lands, bytes counted once.
    let buf = export(CHECKED)?;
    let mut bar =
        edu.ioas()
            .map_vfio_dmabuf(&ivshmem, &buf, 0, at::SMALL, Iova::Guarded, Prot::Write)?;
    // A range MAP_FILE would refuse with a bare EINVAL names the rule it breaks.
    let map_err = |offset, length| {
        edu.ioas()
            .map_vfio_dmabuf(&ivshmem, &buf, offset, length, Iova::Guarded, Prot::Write)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let (unaligned, past_end) = (map_err(0x800, 0x1000), map_err(0, at::SMALL + 0x1000));
    let report = edu.copy(Span::start_of(&mut src), Span::start_of(&mut bar), len)?;
    let mut got = vec![0u8; len as usize];
    bar2.read_bytes(CHECKED as usize, &mut got)?;
    let landed = got == data;

    // 2. A destination mapped read-only: refused before any DMA.
    let mut ro = edu
        .ioas()
        .map_host(UserBuffer::new(len as usize)?, Iova::Guarded, Prot::Read)?;
    let readonly = refused(edu.copy(Span::start_of(&mut src), Span::start_of(&mut ro), len))?;
    let readonly_untouched = ro.buffer().to_vec().iter().all(|&b| b == 0);

    // 3. The BAR revoked through this process (the mapping follows it): refused first.
    ivshmem.set_memory_decode(false)?;
    let revoked = refused(edu.copy(Span::start_of(&mut src), Span::start_of(&mut bar), len))?;

    // 4. A mapping that does not follow its exporter, revoked: edu writes, the IOMMU
    //    refuses, the kernel logs it, the copy fails.
    ivshmem.set_memory_decode(true)?;
    let blind_buf = export(CHECKED + at::SMALL)?;
    let mut blind = edu
        .ioas()
        .map_dmabuf(&blind_buf, 0, at::SMALL, Iova::Guarded, Prot::Write)?;
    ivshmem.set_memory_decode(false)?;
    let faulted = refused(edu.copy(Span::start_of(&mut src), Span::start_of(&mut blind), len))?;
    ivshmem.set_memory_decode(true)?;
    let fault_count = match &faulted {
        EngineError::NotLanded { faults, .. } => faults.len(),
        _ => 0,
    };
    let mut after = vec![0u8; len as usize];
    bar2.read_bytes((CHECKED + at::SMALL) as usize, &mut after)?;
    let blind_untouched = after.iter().all(|&b| b == 0);
    drop((blind, bar, ro, src));

    let named = |r: &Result<(), String>, rule: &str| r.as_ref().is_err_and(|e| e.contains(rule));
    let ok = landed
        && named(&unaligned, "the offset is not a multiple of")
        && named(&past_end, "runs past the end of the buffer")
        && report.bytes == len
        && report.iommu_faults == Some(0)
        && matches!(readonly, EngineError::MappingUnusable { .. })
        && readonly_untouched
        && matches!(revoked, EngineError::MappingUnusable { .. })
        && fault_count > 0
        && blind_untouched;
    Ok(json!({
        "ok": ok,
        "seed": seed,
        "bar_offset": CHECKED,
        "len": len,
        "landed": landed,
        "bytes": report.bytes,
        "transfers": report.transfers,
        "iommu_faults": report.iommu_faults,
        "unaligned_error": unaligned.err(),
        "past_end_error": past_end.err(),
        "readonly_error": readonly.to_string(),
        "readonly_untouched": readonly_untouched,
        "revoked_error": revoked.to_string(),
        "faulted_error": faulted.to_string(),
        "faulted_count": fault_count,
        "blind_offset": CHECKED + at::SMALL,
        "blind_untouched": blind_untouched,
    }))
}
