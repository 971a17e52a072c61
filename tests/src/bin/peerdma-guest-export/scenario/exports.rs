//! `exports`: 1, 3 and 1024 ranges and the whole BAR, with what fdinfo says; each
//! validation rule predicted by the library and asked of the kernel.

use anyhow::Result;
use peerdma_exporter::{Device, DmaRange};
use peerdma_testbed::manifest::ManifestDevice;
use peerdma_testbed::process::fd_count as fds;
use serde_json::json;

use crate::device::{export_bar, skip};
use crate::json::{emit, err_json, errno_name, export_json, ranges_json};
use crate::Args;

/// `exports`: 1, 3 and 1024 ranges and the whole BAR, with what fdinfo says.
pub(crate) fn scenario_exports(a: &Args, d: &ManifestDevice, dev: &Device) -> Result<()> {
    let page = dev.page_size();
    let (bar, size) = export_bar(dev)?;
    let pages = size / page;
    let many: Vec<DmaRange> = (0..1024u64)
        .map(|i| {
            let at = if pages >= 2048 { 2 * i } else { i % pages };
            DmaRange::new(at * page, page)
        })
        .collect();
    let cases: Vec<(&str, Vec<DmaRange>)> = vec![
        ("1 range", vec![DmaRange::new(0, page)]),
        (
            "3 ranges",
            vec![
                DmaRange::new(0, page),
                DmaRange::new(4 * page, 2 * page),
                DmaRange::new(size - page, page),
            ],
        ),
        ("1024 ranges", many),
        ("whole BAR", vec![DmaRange::new(0, size)]),
    ];
    for (what, ranges) in cases {
        let before = fds();
        let sum: u64 = ranges.iter().map(|r| r.length).sum();
        let r = dev.export_dma_buf(bar, &ranges);
        let mut f = json!({
            "what": what, "bar": bar, "bar_size": size, "nr_ranges": ranges.len(),
            "ranges_sum": sum, "page_size": page,
        });
        match &r {
            Ok(buf) => {
                f["ok"] = true.into();
                f["size"] = buf.size().into();
                // The buffer's record of its ranges is the argument it was exported with.
                f["ranges_recorded"] = (buf.ranges() == ranges.as_slice()).into();
                f["fds_during"] = fds().into();
                match buf.fdinfo() {
                    Ok(info) => {
                        f["fdinfo_size"] = info.size.into();
                        f["exp_name"] = info.exp_name.clone().into();
                        f["flags_octal"] = format!("{:o}", info.flags).into();
                        f["cloexec"] = info.cloexec().into();
                        f["access_mode"] = info.access_mode().into();
                    }
                    Err(e) => f["fdinfo_error"] = e.to_string().into(),
                }
                // The 7.2 exporter has no mmap: CPU access to the buffer is refused.
                // SAFETY: a fresh shared mapping request on the buffer's fd; if the
                // kernel ever grants it, it is unmapped at once and never touched.
                let m = unsafe {
                    rustix::mm::mmap(
                        std::ptr::null_mut(),
                        page as usize,
                        rustix::mm::ProtFlags::READ,
                        rustix::mm::MapFlags::SHARED,
                        buf,
                        0,
                    )
                };
                f["mmap"] = match m {
                    Ok(p) => {
                        // SAFETY: `p` is the mapping just made, `page` bytes long.
                        let _ = unsafe { rustix::mm::munmap(p, page as usize) };
                        "mapped".into()
                    }
                    Err(e) => errno_name(e).into(),
                };
            }
            Err(e) => f["error"] = err_json(e),
        }
        drop(r);
        f["fds_before"] = before.into();
        f["fds_after"] = fds().into();
        emit("exports", "export", &a.access_name, Some(d), f);
    }
    Ok(())
}

/// One rule: the library's refusal, then the kernel's answer to the same request.
pub(crate) fn rule(
    a: &Args,
    d: &ManifestDevice,
    dev: &Device,
    name: &str,
    region: u32,
    ranges: &[DmaRange],
) {
    let before = fds();
    let lib = dev.export_dma_buf(region, ranges);
    let lib_json = export_json(&lib);
    drop(lib);
    let mid = fds();
    let kernel = dev.export_dma_buf_with(region, ranges, &skip());
    let kernel_json = export_json(&kernel);
    drop(kernel);
    emit(
        "errors",
        "rule",
        &a.access_name,
        Some(d),
        json!({
            "rule": name, "region": region, "ranges": ranges_json(ranges),
            "library": lib_json, "kernel": kernel_json,
            "fds_before": before, "fds_between": mid, "fds_after": fds(),
        }),
    );
}
