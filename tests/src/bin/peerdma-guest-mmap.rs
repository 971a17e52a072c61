//! Guest side of the testbed's host-check test: writes a seeded pattern into an ivshmem
//! device's BAR2 through the VFIO region mmap, reads it back, and prints one JSON line.
//! The host then finds the same bytes in the device's backing file.
//!
//! Usage (in the testbed): `peerdma-guest-mmap ROLE OFFSET LENGTH SEED [cdev|group]`

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use peerdma_exporter::{AccessPath, Device, OpenOptions};
use peerdma_testbed::manifest::Manifest;
use peerdma_testbed::pattern;

fn run() -> Result<serde_json::Value> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        bail!("usage: peerdma-guest-mmap ROLE OFFSET LENGTH SEED [cdev|group]");
    }
    let manifest = Manifest::load_in_guest()?;
    let dev = manifest
        .device(&args[0])
        .with_context(|| format!("no device with role {} in testbed.json", args[0]))?;
    let offset: usize = args[1].parse()?;
    let length: usize = args[2].parse()?;
    let seed: u64 = args[3].parse()?;
    let access = match args.get(4).map(String::as_str) {
        Some("cdev") => AccessPath::Cdev,
        Some("group") => AccessPath::Group,
        _ => AccessPath::Auto,
    };
    let device = Device::open_with(
        dev.bdf.parse()?,
        OpenOptions {
            access,
            ..OpenOptions::default()
        },
    )?;
    let map = device.map_region(2)?;
    let mut data = vec![0u8; length];
    pattern::fill(seed, 0, &mut data);
    map.write_bytes(offset, &data)?;
    let mut back = vec![0u8; length];
    map.read_bytes(offset, &mut back)?;
    let mismatch = pattern::first_mismatch(seed, 0, &back);
    Ok(serde_json::json!({
        "bdf": dev.bdf,
        "access_path": format!("{:?}", device.access_path()),
        "region_len": map.len(),
        "written": length,
        "readback_mismatch": mismatch,
    }))
}

fn main() -> ExitCode {
    peerdma_testbed::process::report("peerdma-guest-mmap", run())
}
