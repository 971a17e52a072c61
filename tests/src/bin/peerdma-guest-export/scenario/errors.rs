//! `errors`: every pre-validation rule, predicted and then asked of the kernel; the
//! MSI-X rule; raw arguments the library never builds; an unknown BDF.

use anyhow::Result;
use peerdma_exporter::{Device, DmaRange, ExportOptions, OpenOptions};
use peerdma_host::Bdf;
use peerdma_testbed::manifest::ManifestDevice;
use peerdma_testbed::process::fd_count as fds;
use serde_json::json;

use crate::clib::CLib;
use crate::device::export_bar;
use crate::json::{emit, err_json, errno_name, export_json};
use crate::scenario::exports::rule;
use crate::Args;

/// Ranges the kernel accepts at most: the range list is copied with one kmalloc, which
/// cannot exceed 4 MiB (KMALLOC_MAX_SIZE on x86-64), 16 bytes per range.
pub(crate) const KMALLOC_RANGES_LIMIT: usize = (4 << 20) / 16;

/// `errors`: every pre-validation rule, predicted and then asked of the kernel; the
/// MSI-X rule; raw arguments the library never builds; an unknown BDF.
pub(crate) fn scenario_errors(
    a: &Args,
    d: &ManifestDevice,
    dev: &Device,
    c: Option<&CLib>,
) -> Result<()> {
    let page = dev.page_size();
    let (big, size) = export_bar(dev)?;
    let bars = dev.bars()?;
    let p = |o, l| DmaRange::new(o, l);
    rule(a, d, dev, "no ranges", big, &[]);
    rule(a, d, dev, "zero length", big, &[p(0, page), p(page, 0)]);
    rule(a, d, dev, "unaligned offset", big, &[p(page / 2, page)]);
    rule(a, d, dev, "unaligned length", big, &[p(0, page + page / 2)]);
    rule(
        a,
        d,
        dev,
        "total overflow",
        big,
        &[p(0, !(page - 1)), p(0, page)],
    );
    rule(
        a,
        d,
        dev,
        "total bit 63",
        big,
        &[p(0, 1 << 62), p(0, 1 << 62)],
    );
    rule(a, d, dev, "offset overflow", big, &[p(!(page - 1), page)]);
    rule(
        a,
        d,
        dev,
        "offset+length overflow",
        big,
        &[p(1 << 63, (1 << 63) - page)],
    );
    rule(a, d, dev, "past the end", big, &[p(size, page)]);
    rule(
        a,
        d,
        dev,
        "second range past the end",
        big,
        &[p(0, page), p(size - page, 2 * page)],
    );
    rule(a, d, dev, "ROM", 6, &[p(0, page)]);
    rule(a, d, dev, "config", 7, &[p(0, page)]);
    rule(a, d, dev, "VGA", 8, &[p(0, page)]);
    if let Some(absent) = bars.iter().find(|b| b.size() == 0) {
        rule(a, d, dev, "absent BAR", absent.index, &[p(0, page)]);
    }
    if let Some(small) = bars
        .iter()
        .find(|b| b.is_memory() && b.size() > 0 && b.size() < page)
    {
        rule(a, d, dev, "sub-page BAR", small.index, &[p(0, page)]);
    }
    // More ranges than one kmalloc can copy: the library does not predict it.
    let too_many: Vec<DmaRange> = (0..=KMALLOC_RANGES_LIMIT).map(|_| p(0, page)).collect();
    rule(a, d, dev, "more ranges than kmalloc allows", big, &too_many);

    if let Some(msix) = dev.msix() {
        let region = u32::from(msix.table_bir);
        let bar = dev.bar(region)?;
        let table_page = u64::from(msix.table_offset) / page * page;
        let ranges = [p(table_page, page)];
        let before = fds();
        let strict = dev.export_dma_buf(region, &ranges);
        let strict_json = export_json(&strict);
        drop(strict);
        let allowed = dev.export_dma_buf_with(
            region,
            &ranges,
            &ExportOptions {
                allow_msix_overlap: true,
                ..ExportOptions::default()
            },
        );
        let allowed_json = export_json(&allowed);
        drop(allowed);
        emit(
            "errors",
            "msix",
            &a.access_name,
            Some(d),
            json!({
                "region": region, "table_offset": msix.table_offset,
                "msix_mappable": bar.msix_mappable(),
                "strict": strict_json, "allowed": allowed_json,
                "fds_before": before, "fds_after": fds(),
            }),
        );
    }

    if let Some(c) = c {
        let one = [p(0, page)];
        let cases: [(&str, &[DmaRange], u32, u32, i32); 5] = [
            ("well-formed", &one, 1, 0, 0),
            ("flags not 0", &one, 1, 1, 0),
            ("argsz shorter than the header", &one, 1, 0, -17),
            ("argsz without room for the ranges", &one, 1, 0, -16),
            ("nr_ranges beyond the array", &one, 2, 0, 0),
        ];
        for (what, ranges, claimed, flags, delta) in cases {
            let before = fds();
            let r = c.raw(dev, big, ranges, claimed, flags, delta);
            emit(
                "errors",
                "raw",
                &a.access_name,
                Some(d),
                json!({
                    "what": what,
                    "kernel": match r { Ok(()) => "fd".to_string(), Err(e) => errno_name(e) },
                    "fds_before": before, "fds_after": fds(),
                }),
            );
        }
    }
    Ok(())
}

/// Device-independent refusals: an unknown BDF.
pub(crate) fn scenario_unknown_bdf(a: &Args) {
    let before = fds();
    let bdf: Bdf = "0000:0e:00.0".parse().expect("a valid BDF");
    let r = Device::open_with(
        bdf,
        OpenOptions {
            access: a.access,
            ..OpenOptions::default()
        },
    );
    let f = match &r {
        Ok(_) => json!({"ok": true}),
        Err(e) => err_json(e),
    };
    drop(r);
    let mut f = f;
    f["fds_before"] = before.into();
    f["fds_after"] = fds().into();
    emit("errors", "unknown bdf", &a.access_name, None, f);
}
