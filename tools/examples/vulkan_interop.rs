//! Imports a dma-buf into Vulkan, copies it on the GPU into device-local memory, reads
//! it back through a host-visible staging buffer and checks every byte.
//!
//! ```text
//! vulkan_interop --udmabuf 16M [--device NAME-OR-BDF] [--json] [--bench]
//! vulkan_interop --bdf 0000:00:03.0 --bar 2 --range 0:2M [--device ...] [--json]
//! vulkan_interop --list
//! ```
//!
//! The dma-buf is either a udmabuf this program creates and fills with a seeded
//! pattern through its memfd, or a range of a vfio-pci BAR exported through
//! `VFIO_DEVICE_FEATURE_DMA_BUF` (filled with the pattern through the VFIO region
//! mmap first). Exit status as every peerdma tool (`peerdma_tools::exit`): 0 verified,
//! 1 bytes differ, 2 usage, 3 could not run (explained). `--json` prints one JSON object
//! on stdout for every outcome (on failure with `error: {kind, message, fix}` beside
//! what was found), including the process's fd count before and after (everything is
//! dropped before the second count).

use std::fs;
use std::os::fd::{AsFd, BorrowedFd};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser};
use peerdma_exporter::Udmabuf;
use peerdma_exporter::{Device, DmaRange};
use peerdma_host::Bdf;
use peerdma_importer::vulkan::{
    dma_buf_fdinfo, version_string, vk, BufferResource, CopyRegion, CopyTiming, DeviceSelector,
    LinearImageLayout, LogicalDevice, OwnBuffer, PhysicalDeviceInfo, Vulkan, VulkanError,
};
use peerdma_tools::exit::Exit;
use peerdma_tools::failure::Failure;
use peerdma_tools::size::{human, parse_range, parse_size};
use serde_json::{json, Value};

/// Import a dma-buf into Vulkan, copy it on the GPU and verify it.
#[derive(Parser, Debug)]
#[command(name = "vulkan_interop")]
struct Args {
    /// PCI address of a vfio-pci device whose BAR range is exported.
    #[arg(long, requires_all = ["bar", "range"], conflicts_with = "udmabuf")]
    bdf: Option<Bdf>,
    /// BAR index (with --bdf).
    #[arg(long)]
    bar: Option<u32>,
    /// OFFSET:LENGTH inside the BAR (with --bdf), e.g. 0:2M.
    #[arg(long, value_parser = parse_range_arg)]
    range: Option<(u64, u64)>,
    /// Size of a udmabuf to create instead (needs /dev/udmabuf), e.g. 16M.
    #[arg(long, value_parser = parse_size_arg)]
    udmabuf: Option<u64>,
    /// Vulkan device: a PCI address, or a substring of its name or driver name.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Seed of the byte pattern.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Do not write the pattern into the BAR first (verify what is there against
    /// a read through the VFIO region instead).
    #[arg(long)]
    no_fill: bool,
    /// Also time the copy from the imported buffer against a copy between two
    /// device-local buffers of the same size.
    #[arg(long)]
    bench: bool,
    /// Also import the dma-buf as a linear R8G8B8A8 image this many texels wide
    /// (`VK_EXT_image_drm_format_modifier`, `DRM_FORMAT_MOD_LINEAR`), copy it into a
    /// buffer with vkCmdCopyImageToBuffer and verify those bytes too.
    #[arg(long, value_name = "WIDTH")]
    image: Option<u32>,
    /// Copies per measurement with --bench.
    #[arg(long, default_value_t = 5)]
    iterations: u32,
    /// List the Vulkan devices and their dma-buf support, then exit.
    #[arg(long)]
    list: bool,
    /// One JSON object on stdout instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

fn parse_range_arg(s: &str) -> Result<(u64, u64), String> {
    parse_range(s).map_err(|e| e.to_string())
}

/// The pattern byte at `index` for `seed` (splitmix64 of the 8-byte word index).
fn pattern_byte(seed: u64, index: u64) -> u8 {
    let mut x = seed ^ (index / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x >> ((index % 8) * 8)) as u8
}

fn fill_pattern(seed: u64, start: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(seed, start + i as u64);
    }
}

/// Chunk size for filling and checking.
const CHUNK: u64 = 1 << 20;

fn fd_count() -> usize {
    fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Where the dma-buf came from; keeps it (and the vfio device) open.
enum Source {
    Udmabuf(Udmabuf),
    Vfio {
        dmabuf: peerdma_exporter::DmaBuf,
        device: Device,
    },
}

impl Source {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Source::Udmabuf(u) => u.dmabuf(),
            Source::Vfio { dmabuf, .. } => dmabuf.as_fd(),
        }
    }
}

fn device_json(d: &PhysicalDeviceInfo) -> Value {
    json!({
        "index": d.index,
        "name": d.name,
        "type": format!("{:?}", d.device_type),
        "vendor_id": d.vendor_id,
        "device_id": d.device_id,
        "api_version": version_string(d.api_version),
        "driver_id": format!("{:?}", d.driver_id),
        "driver_name": d.driver_name,
        "driver_info": d.driver_info,
        "pci": d.pci.map(|p| p.to_string()),
        "external_memory_fd": d.external_memory_fd,
        "external_memory_dma_buf": d.external_memory_dma_buf,
        "image_drm_format_modifier": d.image_drm_format_modifier,
        "external_memory_host": d.external_memory_host,
        "dma_buf_buffer_features": format!("{:?}", d.dma_buf_buffer_features),
    })
}

fn timing_json(t: &CopyTiming) -> Value {
    json!({
        "bytes": t.bytes,
        "gpu_ns": t.gpu.map(|d| d.as_nanos() as u64),
        "wall_ns": t.wall.as_nanos() as u64,
        "mib_per_s": t.bytes_per_second() / (1024.0 * 1024.0),
    })
}

/// Compares the first `len` bytes of `staging` with what `expected` writes for each
/// chunk; returns the number of differing bytes and the first differing offset.
fn compare(
    staging: &OwnBuffer,
    len: u64,
    mut expected: impl FnMut(u64, &mut [u8]) -> Result<()>,
) -> Result<(u64, Option<u64>)> {
    let mut want = vec![0u8; CHUNK as usize];
    let mut got = vec![0u8; CHUNK as usize];
    let mut bad = 0u64;
    let mut first = None;
    let mut off = 0;
    while off < len {
        let n = CHUNK.min(len - off) as usize;
        expected(off, &mut want[..n])?;
        staging.read(off, &mut got[..n])?;
        for (i, (g, w)) in got[..n].iter().zip(&want[..n]).enumerate() {
            if g != w {
                first.get_or_insert(off + i as u64);
                bad += 1;
            }
        }
        off += n as u64;
    }
    Ok((bad, first))
}

/// The median of several copies (by the best available clock).
fn median(mut v: Vec<CopyTiming>) -> CopyTiming {
    v.sort_by_key(|t| t.best());
    v[v.len() / 2]
}

fn repeat(
    gpu: &LogicalDevice,
    src: &dyn BufferResource,
    dst: &dyn BufferResource,
    size: u64,
    n: u32,
) -> Result<CopyTiming> {
    let mut v = Vec::new();
    for _ in 0..n.max(1) {
        v.push(gpu.copy(src, dst, CopyRegion::whole(size))?);
    }
    Ok(median(v))
}

/// What a run found, also on failure (the error is carried next to it).
struct Outcome {
    report: serde_json::Map<String, Value>,
    verified: Option<bool>,
}

fn run(args: &Args, out: &mut Outcome) -> Result<()> {
    let Outcome {
        report: r,
        verified,
    } = out;
    // 1. The Vulkan device first: a driver without dma-buf import fails here, before
    // any dma-buf exists.
    let vk = Vulkan::load()?;
    let selector: DeviceSelector = args.device.parse().expect("infallible");
    let pd = vk.select(&selector)?;
    r.insert("device".into(), device_json(&pd));
    let gpu = vk.open(&pd)?;
    let (family, flags) = gpu.queue_family();
    r.insert(
        "queue".into(),
        json!({"family": family, "flags": format!("{flags:?}"), "timestamps": gpu.has_timestamps()}),
    );

    // 2. The dma-buf.
    let source = if let Some(size) = args.udmabuf {
        let u = Udmabuf::create(size).context("creating the udmabuf")?;
        let mut chunk = vec![0u8; CHUNK as usize];
        let mut off = 0;
        while off < size {
            let n = CHUNK.min(size - off) as usize;
            fill_pattern(args.seed, off, &mut chunk[..n]);
            u.write_at(off, &chunk[..n])
                .context("filling the udmabuf through its memfd")?;
            off += n as u64;
        }
        r.insert("source".into(), json!({"kind": "udmabuf", "size": size}));
        Source::Udmabuf(u)
    } else if let (Some(bdf), Some(bar), Some((offset, length))) = (args.bdf, args.bar, args.range)
    {
        let device = Device::open(bdf).with_context(|| format!("opening {bdf} through VFIO"))?;
        if !args.no_fill {
            let map = device
                .map_region_range(bar, offset, length)
                .with_context(|| {
                    format!(
                        "mapping BAR{bar} {offset:#x}+{length:#x} of {bdf} to write the pattern"
                    )
                })?;
            let mut chunk = vec![0u8; CHUNK as usize];
            let mut off = 0;
            while off < length {
                let n = CHUNK.min(length - off) as usize;
                fill_pattern(args.seed, off, &mut chunk[..n]);
                map.write_bytes(off as usize, &chunk[..n])
                    .context("writing the pattern into the BAR")?;
                off += n as u64;
            }
        }
        let dmabuf = device
            .export_dma_buf(bar, &[DmaRange::new(offset, length)])
            .with_context(|| format!("exporting BAR{bar} {offset:#x}+{length:#x} of {bdf}"))?;
        r.insert(
            "source".into(),
            json!({"kind": "vfio", "bdf": bdf.to_string(), "bar": bar, "offset": offset, "length": length, "size": dmabuf.size()}),
        );
        Source::Vfio { dmabuf, device }
    } else {
        bail!("give --udmabuf SIZE, or --bdf BDF --bar N --range OFFSET:LENGTH (or --list)");
    };
    let fd = source.fd();
    let info = dma_buf_fdinfo(fd)?;
    let size = info.size.unwrap_or(0);
    if let Some(Value::Object(s)) = r.get_mut("source") {
        s.insert("exporter".into(), json!(info.exp_name));
    }

    // 3. Import.
    let fd_bits = gpu.dma_buf_memory_types(fd)?;
    r.insert("fd_memory_type_bits".into(), json!(fd_bits));
    let imported = gpu.import_buffer(fd, None)?;
    let d = imported.details();
    r.insert(
        "import".into(),
        json!({
            "memory_type": d.memory_type,
            "memory_flags": format!("{:?}", d.memory_flags),
            "resource_memory_type_bits": d.resource_memory_type_bits,
            "allocation_size": d.allocation_size,
            "dedicated": d.dedicated,
        }),
    );

    // 4. Copy imported → device-local → staging, then check.
    let local = gpu.device_local_buffer(size)?;
    let staging = gpu.staging_buffer(size)?;
    let t_import = gpu.copy(&imported, &local, CopyRegion::whole(size))?;
    let t_readback = gpu.copy(&local, &staging, CopyRegion::whole(size))?;
    r.insert("copy".into(), timing_json(&t_import));
    r.insert("readback".into(), timing_json(&t_readback));

    let bar_map = match (&source, args.no_fill) {
        (Source::Vfio { device, .. }, true) => {
            let (o, l) = args.range.expect("vfio source has a range");
            Some(device.map_region_range(args.bar.expect("bar"), o, l)?)
        }
        _ => None,
    };
    let (mismatches, first) = compare(&staging, size, |off, buf| {
        match &bar_map {
            Some(m) => m.read_bytes(off as usize, buf)?,
            None => fill_pattern(args.seed, off, buf),
        }
        Ok(())
    })?;
    drop(bar_map);
    r.insert(
        "verify".into(),
        json!({"bytes_verified": size - mismatches, "bytes": size, "mismatches": mismatches, "first_mismatch": first}),
    );
    *verified = Some(mismatches == 0);

    // 5. The same dma-buf as a linear image.
    if let Some(width) = args.image {
        let row_pitch = width as u64 * 4;
        let height = size.checked_div(row_pitch).unwrap_or(0).min(16384) as u32;
        let layout = LinearImageLayout {
            width,
            height,
            format: vk::Format::R8G8B8A8_UNORM,
            offset: 0,
            row_pitch,
        };
        let image = gpu.import_image(fd, layout)?;
        let bytes = row_pitch * height as u64;
        let image_local = gpu.device_local_buffer(bytes)?;
        let t_image = gpu.copy_image_to_buffer(&image, &image_local)?;
        gpu.copy(&image_local, &staging, CopyRegion::whole(bytes))?;
        let (bad, first) = compare(&staging, bytes, |off, buf| {
            fill_pattern(args.seed, off, buf);
            Ok(())
        })?;
        r.insert(
            "image".into(),
            json!({
                "width": width,
                "height": height,
                "format": "R8G8B8A8_UNORM",
                "modifier": "DRM_FORMAT_MOD_LINEAR",
                "memory_type": image.details().memory_type,
                "copy": timing_json(&t_image),
                "bytes": bytes,
                "bytes_verified": bytes - bad,
                "mismatches": bad,
                "first_mismatch": first,
            }),
        );
        *verified = Some(mismatches == 0 && bad == 0);
    }

    // 6. Benchmark: imported → local vs local → local of the same size.
    if args.bench {
        let local2 = gpu.device_local_buffer(size)?;
        let _ = gpu.copy(&imported, &local, CopyRegion::whole(size))?; // warm-up
        let imp = repeat(&gpu, &imported, &local, size, args.iterations)?;
        let _ = gpu.copy(&local, &local2, CopyRegion::whole(size))?;
        let loc = repeat(&gpu, &local, &local2, size, args.iterations)?;
        let ratio = imp.bytes_per_second() / loc.bytes_per_second();
        r.insert(
            "bench".into(),
            json!({
                "iterations": args.iterations,
                "imported_to_local": timing_json(&imp),
                "local_to_local": timing_json(&loc),
                "ratio_imported_over_local": ratio,
                "clock": if imp.gpu.is_some() { "gpu timestamps" } else { "host wall clock" },
            }),
        );
    }
    Ok(())
}

fn list(json_out: bool) -> Result<()> {
    let vk = Vulkan::load()?;
    let devices = vk.physical_devices()?;
    if json_out {
        println!(
            "{}",
            json!({"devices": devices.iter().map(device_json).collect::<Vec<_>>()})
        );
        return Ok(());
    }
    for d in &devices {
        println!(
            "#{} {} [{} {}] {:?}{} dma-buf import: {}",
            d.index,
            d.name,
            d.driver_name,
            d.driver_info,
            d.device_type,
            d.pci.map(|p| format!(" at {p}")).unwrap_or_default(),
            if d.can_import_dma_buf() {
                "yes".to_string()
            } else {
                format!("no (lacks {})", d.missing_for_import().join(", "))
            }
        );
    }
    Ok(())
}

fn mib_s(v: &Value) -> String {
    v.get("mib_per_s")
        .and_then(Value::as_f64)
        .map(|x| format!("{x:.1} MiB/s"))
        .unwrap_or_default()
}

/// A duration in milliseconds, as a person reads it: `117.8 ms`.
fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn ns(v: &Value, key: &str) -> Option<Duration> {
    v.get(key).and_then(Value::as_u64).map(Duration::from_nanos)
}

fn print_text(r: &serde_json::Map<String, Value>) {
    if let Some(s) = r.get("source") {
        println!(
            "dma-buf: {} of {} (exporter {})",
            s["kind"].as_str().unwrap_or("?"),
            human(s["size"].as_u64().unwrap_or(0)),
            s.get("exporter")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
        );
    }
    if let Some(d) = r.get("device") {
        println!(
            "device:  {} ({}), driver {} {}",
            d["name"].as_str().unwrap_or("?"),
            d["type"].as_str().unwrap_or("?"),
            d["driver_name"].as_str().unwrap_or("?"),
            d["driver_info"].as_str().unwrap_or("")
        );
    }
    if let Some(i) = r.get("import") {
        println!(
            "import:  memory type {} {} (dma-buf allows {:#b})",
            i["memory_type"],
            i["memory_flags"].as_str().unwrap_or(""),
            r.get("fd_memory_type_bits")
                .and_then(Value::as_u64)
                .unwrap_or(0)
        );
    }
    if let Some(c) = r.get("copy") {
        println!(
            "copy:    imported -> device-local {} in {} ({}): {}",
            human(c["bytes"].as_u64().unwrap_or(0)),
            ms(ns(c, "wall_ns").unwrap_or_default()),
            match ns(c, "gpu_ns") {
                Some(gpu) => format!("{} on the GPU", ms(gpu)),
                None => "the GPU has no timestamps".to_string(),
            },
            mib_s(c)
        );
    }
    if let Some(v) = r.get("verify") {
        println!(
            "verify:  {} of {} bytes match{}",
            v["bytes_verified"],
            v["bytes"],
            match v["first_mismatch"].as_u64() {
                Some(f) => format!(", first difference at {f:#x}"),
                None => String::new(),
            }
        );
    }
    if let Some(i) = r.get("image") {
        println!(
            "image:   {}x{} {} {}: {} of {} bytes match, copy {}",
            i["width"],
            i["height"],
            i["format"].as_str().unwrap_or(""),
            i["modifier"].as_str().unwrap_or(""),
            i["bytes_verified"],
            i["bytes"],
            mib_s(&i["copy"])
        );
    }
    if let Some(b) = r.get("bench") {
        println!(
            "bench:   imported -> local {}, local -> local {}, ratio {:.3} ({})",
            mib_s(&b["imported_to_local"]),
            mib_s(&b["local_to_local"]),
            b["ratio_imported_over_local"].as_f64().unwrap_or(f64::NAN),
            b["clock"].as_str().unwrap_or("")
        );
    }
}

fn main() -> ExitCode {
    peerdma_tools::cli::default_sigpipe();
    let json = std::env::args_os().any(|a| a == "--json");
    let args = match Args::command()
        .try_get_matches()
        .and_then(|m| Args::from_arg_matches(&m))
    {
        Ok(args) => args,
        Err(e) => return peerdma_tools::failure::clap_exit(e, json),
    };
    if args.list {
        return match list(args.json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => failure(&e).report("vulkan_interop", args.json).into(),
        };
    }
    let fds_before = fd_count();
    let mut out = Outcome {
        report: serde_json::Map::new(),
        verified: None,
    };
    let result = run(&args, &mut out);
    // Everything `run` opened is dropped by now.
    let fds_after = fd_count();
    let mut r = out.report;
    r.insert("fds_before".into(), json!(fds_before));
    r.insert("fds_after".into(), json!(fds_after));
    let ok = result.is_ok() && out.verified == Some(true);
    r.insert("ok".into(), json!(ok));
    r.insert("verified".into(), json!(out.verified));
    if let Err(e) = &result {
        // The error object beside what was found, in the shape every tool uses.
        let mut f = failure(e);
        f.details = r;
        if !args.json {
            print_text(&f.details);
            println!("fds:     {fds_before} before, {fds_after} after");
        }
        return f.report("vulkan_interop", args.json).into();
    }
    if args.json {
        println!("{}", Value::Object(r));
    } else {
        print_text(&r);
        println!("fds:     {fds_before} before, {fds_after} after");
    }
    match out.verified {
        Some(true) => ExitCode::SUCCESS,
        _ => Exit::DataDiffers.into(),
    }
}

/// A failure with the Vulkan error's kind where the chain has one.
fn failure(e: &anyhow::Error) -> Failure {
    let mut f = Failure::from_error(e);
    if let Some(kind) = e
        .chain()
        .find_map(|c| c.downcast_ref::<VulkanError>())
        .map(VulkanError::kind)
    {
        f.kind = kind.to_string();
    }
    f
}
