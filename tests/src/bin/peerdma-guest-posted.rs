//! Guest side of the posted-series suite (`tests/tests/ahead.rs`): drives the features of
//! "vfio/pci: Add mmap() for DMABUFs" through the exporter's library on an ivshmem BAR2
//! and prints one JSON line of what each step did (its error kind where it failed):
//!
//! 1. probe: [`Device::probe_posted_features`] on a throwaway page;
//! 2. map: export `LENGTH` bytes at `OFFSET`, set WC (MEMATTR), map the dma-buf itself,
//!    write a seeded pattern through that mapping (the host then finds it in the
//!    backing file: a path independent of the dma-buf mmap);
//! 3. MEMATTR back to NC (the probe checked that an unknown value is refused);
//! 4. revoke: REVOKE the dma-buf, then touch the guarded mapping (it faults), map again
//!    (revoked), revoke again (already revoked), and read the buffer's state.
//!
//! Usage (in the testbed): `peerdma-guest-posted ROLE OFFSET LENGTH SEED`, or
//! `peerdma-guest-posted bench ROLE LENGTH ROUNDS`: CPU writes and reads of LENGTH bytes
//! through the VFIO region mmap, the dma-buf's own mmap (NC, the default) and the
//! dma-buf's mmap with MEMATTR WC, in interleaved rounds (the order rotates each round);
//! one JSON line with each's median MiB/s and the ratios to the region mmap.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use peerdma_exporter::posted::{FeatureError, MemAttr, PostedFeatures};
use peerdma_exporter::{Device, DmaRange};
use peerdma_testbed::manifest::Manifest;
use peerdma_testbed::pattern;
use serde_json::{json, Value};

fn outcome(r: Result<(), FeatureError>) -> Value {
    match r {
        Ok(()) => json!("ok"),
        Err(e) => {
            json!({"kind": e.kind(), "errno": peerdma_host::errno_name(e.errno()), "message": e.to_string()})
        }
    }
}

fn probes(p: &PostedFeatures) -> Value {
    json!({"mmap": p.mmap.key(), "revoke": p.revoke.key(), "memattr": p.memattr.key(),
           "detail": [p.mmap.to_string(), p.revoke.to_string(), p.memattr.to_string()]})
}

/// Median MiB/s of `len` bytes written then read, over the rounds.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench(args: &[String]) -> Result<Value> {
    let manifest = Manifest::load_in_guest()?;
    let dev = manifest
        .device(&args[0])
        .with_context(|| format!("no device with role {} in testbed.json", args[0]))?;
    let length: u64 = args[1].parse()?;
    let rounds: usize = args[2].parse()?;
    let device = Device::open(dev.bdf.parse()?)?;
    let region = device.map_region_range(2, 0, length)?;
    let nc_buf = device.export_dma_buf(2, &[DmaRange { offset: 0, length }])?;
    let nc = nc_buf.map()?;
    let wc_buf = device.export_dma_buf(2, &[DmaRange { offset: 0, length }])?;
    device.set_dma_buf_memattr(&wc_buf, MemAttr::WriteCombining)?;
    let wc = wc_buf.map()?;
    let maps = [
        ("region_mmap", &region),
        ("dma_buf_nc", &nc),
        ("dma_buf_wc", &wc),
    ];
    let mut data = vec![0u8; length as usize];
    pattern::fill(1, 0, &mut data);
    let mut back = vec![0u8; length as usize];
    let mut write: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut read: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mib = length as f64 / (1u64 << 20) as f64;
    for round in 0..rounds {
        for k in 0..3 {
            let i = (round + k) % 3;
            let t = std::time::Instant::now();
            maps[i].1.write_bytes(0, &data)?;
            write[i].push(mib / t.elapsed().as_secs_f64());
            let t = std::time::Instant::now();
            maps[i].1.read_bytes(0, &mut back)?;
            read[i].push(mib / t.elapsed().as_secs_f64());
            anyhow::ensure!(back == data, "{}: read back differs", maps[i].0);
        }
    }
    let w: Vec<f64> = write.into_iter().map(median).collect();
    let r: Vec<f64> = read.into_iter().map(median).collect();
    Ok(json!({
        "bytes": length, "rounds": rounds,
        "write_mib_s": {"region_mmap": w[0], "dma_buf_nc": w[1], "dma_buf_wc": w[2]},
        "read_mib_s": {"region_mmap": r[0], "dma_buf_nc": r[1], "dma_buf_wc": r[2]},
        "write_ratio_to_region": {"dma_buf_nc": w[1] / w[0], "dma_buf_wc": w[2] / w[0]},
        "read_ratio_to_region": {"dma_buf_nc": r[1] / r[0], "dma_buf_wc": r[2] / r[0]},
    }))
}

fn run() -> Result<Value> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("bench") && args.len() == 4 {
        return bench(&args[1..]);
    }
    if args.len() != 4 {
        bail!("usage: peerdma-guest-posted ROLE OFFSET LENGTH SEED");
    }
    let manifest = Manifest::load_in_guest()?;
    let dev = manifest
        .device(&args[0])
        .with_context(|| format!("no device with role {} in testbed.json", args[0]))?;
    let offset: u64 = args[1].parse()?;
    let length: u64 = args[2].parse()?;
    let seed: u64 = args[3].parse()?;
    let device = Device::open(dev.bdf.parse()?)?;
    let probed = probes(&device.probe_posted_features(2)?);

    let buf = device.export_dma_buf(2, &[DmaRange { offset, length }])?;
    let memattr_wc = outcome(device.set_dma_buf_memattr(&buf, MemAttr::WriteCombining));
    let mut written = 0u64;
    let mut readback_mismatch = Value::Null;
    let (mapping, map_result) = match buf.map() {
        Ok(mut map) => {
            map.guard_against_revoke()?;
            let mut data = vec![0u8; length as usize];
            pattern::fill(seed, 0, &mut data);
            map.write_bytes(0, &data)?;
            written = length;
            let mut back = vec![0u8; length as usize];
            map.read_bytes(0, &mut back)?;
            readback_mismatch = json!(pattern::first_mismatch(seed, 0, &back));
            let result = json!({"offset": map.offset(), "len": map.len()});
            (Some(map), result)
        }
        Err(e) => (None, outcome(Err(e))),
    };
    let memattr_nc = outcome(device.set_dma_buf_memattr(&buf, MemAttr::Uncached));
    let revoke = outcome(device.revoke_dma_buf(&buf));
    let faulted_after_revoke = mapping.as_ref().map(|m| {
        let mut one = [0u8; 64];
        let _ = m.read_bytes(0, &mut one);
        m.revoked_under_access()
    });
    drop(mapping);
    let map_after_revoke = outcome(buf.map().map(drop));
    let second_revoke = outcome(device.revoke_dma_buf(&buf));
    let state = format!("{:?}", buf.state()?);
    Ok(json!({
        "bdf": dev.bdf,
        "probe": probed,
        "memattr_wc": memattr_wc,
        "map": map_result,
        "written": written,
        "readback_mismatch": readback_mismatch,
        "memattr_nc": memattr_nc,
        "revoke": revoke,
        "faulted_after_revoke": faulted_after_revoke,
        "map_after_revoke": map_after_revoke,
        "second_revoke": second_revoke,
        "state": state,
    }))
}

fn main() -> ExitCode {
    peerdma_testbed::process::report("peerdma-guest-posted", run())
}
