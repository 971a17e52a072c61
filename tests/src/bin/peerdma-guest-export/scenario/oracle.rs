//! `oracle`: the errno oracle at scale. Random export arguments (region, range count,
//! offsets, lengths, the `flags` field, open flags), each predicted by the library
//! (`Device::check_export`, the kernel's rules only) and then asked of the kernel with
//! validation bypassed (`ExportOptions::skip_validation`; `flags != 0` through the C
//! helper, which the library never sends). The prediction must equal the kernel's
//! answer (an fd, or the same errno) for every case; a disagreement is shrunk to the
//! smallest argument set that still disagrees and printed with the seed.

use std::time::Instant;

use anyhow::Result;
use peerdma_exporter::{Device, DmaRange, Errno, Error, ExportOptions};
use peerdma_testbed::manifest::ManifestDevice;
use peerdma_testbed::process::fd_count as fds;
use peerdma_testbed::rng::Rng;
use rustix::fs::OFlags;
use serde_json::{json, Map, Value};

use crate::clib::CLib;
use crate::json::{emit, errno_name};
use crate::Args;

/// One export request.
#[derive(Clone, Debug)]
struct Case {
    region: u32,
    flags: u32,
    open_flags: OFlags,
    ranges: Vec<DmaRange>,
}

/// An fd (`Ok`) or an errno; `Err(None)`: the library gave no errno.
type Answer = Result<(), Option<Errno>>;

fn answer_name(a: &Answer) -> String {
    match a {
        Ok(()) => "fd".into(),
        Err(Some(e)) => errno_name(*e),
        Err(None) => "no errno".into(),
    }
}

/// The BARs as `(index, size)`, and the page size.
struct Target {
    bars: Vec<(u32, u64)>,
    page: u64,
}

fn offset(rng: &mut Rng, size: u64, page: u64) -> u64 {
    let pages = (size / page).max(1);
    match rng.below(12) {
        0 => 0,
        1 => size,
        2 => size.saturating_sub(page),
        3 => rng.below(pages) * page + 1 + rng.below(page - 1),
        4 => 1 << 63,
        5 => !(page - 1),
        6 => !(page - 1) - rng.below(16) * page,
        7 => rng.next_u64() & !(page - 1),
        _ => rng.below(pages) * page,
    }
}

fn length(rng: &mut Rng, size: u64, offset: u64, page: u64) -> u64 {
    let room = size.saturating_sub(offset) / page;
    match rng.below(14) {
        0 => 0,
        1 => size,
        2 => page + 1 + rng.below(page - 1),
        3 => 1 << 62,
        4 => !(page - 1),
        5 => (1 << 63) - page,
        6 => rng.next_u64() & !(page - 1),
        7 => (room + 1) * page,
        _ => (1 + rng.below(room.clamp(1, 64))) * page,
    }
}

fn case(rng: &mut Rng, t: &Target, c_lib: bool) -> Case {
    let region = match rng.below(16) {
        0 => 6 + rng.below(3) as u32,
        1 => rng.next_u64() as u32,
        2..=5 => rng.below(6) as u32,
        _ => {
            // Mostly the BARs that exist, so that the range rules are reached.
            let present: Vec<u32> = t.bars.iter().filter(|b| b.1 > 0).map(|b| b.0).collect();
            if present.is_empty() {
                rng.below(6) as u32
            } else {
                rng.pick(&present)
            }
        }
    };
    let size = t.bars.iter().find(|b| b.0 == region).map_or(0, |b| b.1);
    let count = match rng.below(20) {
        0 => 0,
        1 => 17 + rng.below(240) as usize,
        2..=4 => 5 + rng.below(12) as usize,
        _ => 1 + rng.below(4) as usize,
    };
    // A third of the cases keep every range whole pages inside the BAR, so that the
    // kernel's accepting path (and the last range rules) is reached often.
    let clean = rng.one_in(3);
    let pages = (size / t.page).max(1);
    let ranges = (0..count)
        .map(|_| {
            if clean {
                let o = rng.below(pages);
                let l = 1 + rng.below((pages - o).min(64));
                return DmaRange::new(o * t.page, l * t.page);
            }
            let o = offset(rng, size, t.page);
            DmaRange::new(o, length(rng, size, o, t.page))
        })
        .collect();
    let flags = if c_lib && rng.one_in(16) {
        1 << rng.below(32)
    } else {
        0
    };
    let open_flags = rng.pick(&[
        OFlags::CLOEXEC | OFlags::RDWR,
        OFlags::RDWR,
        OFlags::CLOEXEC | OFlags::RDONLY,
        OFlags::WRONLY,
    ]);
    Case {
        region,
        flags,
        open_flags,
        ranges,
    }
}

/// The library's prediction: the kernel checks `nr_ranges == 0 || flags` first
/// (EINVAL), then what `check_export` predicts without the library's own MSI-X rule.
fn predict(dev: &Device, c: &Case) -> Answer {
    if c.flags != 0 {
        return Err(Some(Errno::INVAL));
    }
    dev.check_export(c.region, &c.ranges, true)
        .map(|_| ())
        .map_err(|e| e.errno())
}

/// The kernel's answer, validation bypassed.
fn ask_kernel(dev: &Device, c: &Case, clib: Option<&CLib>) -> Answer {
    if c.flags != 0 {
        let clib = clib.expect("flags are only generated with the C helper");
        let n = c.ranges.len() as u32;
        return clib
            .raw(dev, c.region, &c.ranges, n, c.flags, 0)
            .map_err(Some);
    }
    let opts = ExportOptions {
        skip_validation: true,
        open_flags: c.open_flags,
        ..ExportOptions::default()
    };
    match dev.export_dma_buf_with(c.region, &c.ranges, &opts) {
        Ok(buf) => {
            drop(buf);
            Ok(())
        }
        Err(Error::Export { errno, .. }) => Err(Some(errno)),
        Err(e) => Err(e.errno()),
    }
}

fn disagrees(dev: &Device, c: &Case, clib: Option<&CLib>) -> bool {
    predict(dev, c) != ask_kernel(dev, c, clib)
}

/// Smaller versions of `c`: a range dropped, a value made simpler, the flags cleared.
fn simpler(c: &Case, page: u64) -> Vec<Case> {
    let mut out = Vec::new();
    for i in 0..c.ranges.len() {
        let mut d = c.clone();
        d.ranges.remove(i);
        out.push(d);
    }
    for i in 0..c.ranges.len() {
        let r = c.ranges[i];
        for (o, l) in [
            (0, r.length),
            (r.offset / 2 / page * page, r.length),
            (r.offset, page),
            (r.offset, (r.length / 2 / page).max(1) * page),
        ] {
            if (o, l) != (r.offset, r.length) {
                let mut d = c.clone();
                d.ranges[i] = DmaRange::new(o, l);
                out.push(d);
            }
        }
    }
    if c.flags != 0 && c.flags != 1 {
        out.push(Case {
            flags: 1,
            ..c.clone()
        });
    }
    out
}

/// Shrinks a disagreeing case while it keeps disagreeing (at most 500 steps).
fn shrink(dev: &Device, mut c: Case, page: u64, clib: Option<&CLib>) -> Case {
    for _ in 0..500 {
        match simpler(&c, page)
            .into_iter()
            .find(|d| disagrees(dev, d, clib))
        {
            Some(d) => c = d,
            None => break,
        }
    }
    c
}

fn case_json(c: &Case) -> Value {
    json!({
        "region": c.region, "flags": c.flags, "open_flags": c.open_flags.bits(),
        "ranges": c.ranges.iter().map(|r| json!([r.offset, r.length])).collect::<Vec<_>>(),
    })
}

/// `oracle`: `cases` random export requests on this device; one line with the counts.
pub(crate) fn scenario_oracle(
    a: &Args,
    d: &ManifestDevice,
    dev: &Device,
    clib: Option<&CLib>,
    cases: u32,
    seed: u64,
) -> Result<()> {
    let page = dev.page_size();
    let t = Target {
        bars: dev.bars()?.iter().map(|b| (b.index, b.size())).collect(),
        page,
    };
    let mut rng = Rng::new(seed);
    let before = fds();
    let start = Instant::now();
    let mut answers: Map<String, Value> = Map::new();
    let (mut agreed, mut disagreed, mut with_flags) = (0u64, 0u64, 0u64);
    let mut first = Value::Null;
    for _ in 0..cases {
        let c = case(&mut rng, &t, clib.is_some());
        with_flags += u64::from(c.flags != 0);
        let predicted = predict(dev, &c);
        let kernel = ask_kernel(dev, &c, clib);
        let name = answer_name(&kernel);
        let n = answers.get(&name).and_then(Value::as_u64).unwrap_or(0);
        answers.insert(name, (n + 1).into());
        if predicted == kernel {
            agreed += 1;
            continue;
        }
        disagreed += 1;
        if first.is_null() {
            let small = shrink(dev, c.clone(), page, clib);
            first = json!({
                "case": case_json(&c),
                "predicted": answer_name(&predicted), "kernel": answer_name(&kernel),
                "smallest": case_json(&small),
                "smallest_predicted": answer_name(&predict(dev, &small)),
                "smallest_kernel": answer_name(&ask_kernel(dev, &small, clib)),
            });
        }
    }
    emit(
        "oracle",
        "errno",
        &a.access_name,
        Some(d),
        json!({
            "seed": seed, "cases": cases, "agreed": agreed, "disagreed": disagreed,
            "with_flags": with_flags, "kernel_answers": answers, "first_disagreement": first,
            "seconds": start.elapsed().as_secs_f64(),
            "fds_before": before, "fds_after": fds(),
        }),
    );
    Ok(())
}
