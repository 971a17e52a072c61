//! `peerdma show BDF --bar N --width W --height H`: export a BAR range and scan it out
//! through a DRM driver (PRIME import, a KMS framebuffer on the first connected
//! connector) until interrupted or `--seconds` pass. Built with the `drm` feature.

use anyhow::Result;
use clap::Args;
use peerdma_host::Bdf;
use peerdma_tools::size::parse_size;

/// Arguments of `peerdma show`.
#[derive(Args)]
pub struct ShowArgs {
    /// The exporting device (0000:01:00.0 or 01:00.0).
    bdf: Bdf,
    /// The BAR: 0 to 5 (or BAR0 to BAR5).
    #[arg(long, value_parser = peerdma_tools::args::parse_bar)]
    bar: u32,
    /// Where the image starts inside the BAR (page-aligned; 4K/2M suffixes or hex).
    #[arg(long, default_value = "0", value_parser = parse_size)]
    offset: u64,
    /// Image width in pixels.
    #[arg(long)]
    width: u32,
    /// Image height in pixels.
    #[arg(long)]
    height: u32,
    /// Pixel format: a DRM fourcc (XR24, AR24, XB24, RG16...) or its name (XRGB8888).
    #[arg(long, default_value = "XR24")]
    format: String,
    /// Bytes per row (default: width x bytes per pixel).
    #[arg(long)]
    pitch: Option<u32>,
    /// The DRM card: a device node, the GPU's BDF, or a driver name (default: the first
    /// card that is a PCI device).
    #[arg(long)]
    card: Option<String>,
    /// Stop after this many seconds (default: until Ctrl-C or SIGTERM).
    #[arg(long)]
    seconds: Option<f64>,
    /// Access path.
    #[arg(long, value_enum, default_value = "auto")]
    access: peerdma_tools::args::AccessPathArg,
    /// Machine-readable output (one JSON line when shown, one per event).
    #[arg(long)]
    json: bool,
}

/// Without the `drm` feature: says how to build it.
#[cfg(not(feature = "drm"))]
pub fn run(args: ShowArgs) -> Result<()> {
    let _ = (
        args.bdf,
        args.bar,
        args.offset,
        args.width,
        args.height,
        args.format,
        args.pitch,
        args.card,
        args.seconds,
        args.access,
        args.json,
    );
    Err(peerdma_tools::failure::refusal(
        "not_built",
        "this peerdma was built without DRM support (peerdma show)",
        Some("reinstall with `cargo install --path tools --features drm`"),
        peerdma_tools::exit::Exit::CouldNotRun,
    ))
}

/// Exports, imports, shows, and watches for revokes until told to stop; with `--json` a
/// failure is the one error object every peerdma command ends with (docs/cli.md).
#[cfg(feature = "drm")]
pub fn run(args: ShowArgs) -> Result<()> {
    show(args)
}

#[cfg(feature = "drm")]
fn show(args: ShowArgs) -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::Context;
    use peerdma_exporter::{Device, DmaRange, ExportOptions, OpenOptions};
    use peerdma_importer::drm::{
        parse_fourcc, Card, CardSpec, FbLayout, Framebuffer, Scanout, ScanoutEvent,
    };
    use serde_json::json;

    let format = parse_fourcc(&args.format)?;
    let mut layout = FbLayout::packed(args.width, args.height, format)?;
    if let Some(p) = args.pitch {
        layout.pitch = p;
    }
    // An impossible layout (zero size, a pitch shorter than a row) is refused before
    // any device is opened, with its numbers.
    layout
        .validate()
        .map_err(|e| anyhow::anyhow!("{e} (--width, --height, --pitch)"))?;
    let device = Device::open_with(
        args.bdf,
        OpenOptions {
            access: args.access.into(),
            ..OpenOptions::default()
        },
    )
    // The exporter's errors name the BDF: no "opening BDF" before them (said once).
    ?;
    // The image must fit the BAR from --offset on: checked with the BAR's size, so the
    // message says how many rows would fit.
    let bar_size = device.bar(args.bar)?.region.size;
    layout
        .check(bar_size.saturating_sub(args.offset))
        .map_err(|e| {
            anyhow::anyhow!(
                "{e} (BAR{} of {} is {bar_size} bytes, --offset {:#x})",
                args.bar,
                args.bdf,
                args.offset
            )
        })?;
    let page = device.page_size();
    let needed = layout.bytes_needed().unwrap_or(u64::MAX);
    let length = needed.div_ceil(page) * page;
    // Block the stopping signals before anything is shown, so none is lost; a thread
    // waits for them.
    let mut signals = nix::sys::signal::SigSet::empty();
    signals.add(nix::sys::signal::SIGINT);
    signals.add(nix::sys::signal::SIGTERM);
    signals.thread_block().context("blocking SIGINT/SIGTERM")?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            if signals.wait().is_ok() {
                stop.store(true, Ordering::Relaxed);
            }
        });
    }
    let buf = device.export_dma_buf_with(
        args.bar,
        &[DmaRange::new(args.offset, length)],
        &ExportOptions::default(),
    )?;
    let spec = match &args.card {
        Some(c) => c.parse::<CardSpec>().unwrap_or(CardSpec::AnyPci),
        None => CardSpec::AnyPci,
    };
    let card = Card::open(&spec)?;
    let gem = card.import(&buf)?;
    let fb = Framebuffer::new(gem, layout)?;
    let mut scanout = Scanout::show(fb)?;
    let info = scanout.info();
    let shown = json!({
        "event": "shown",
        "bdf": args.bdf.to_string(),
        "bar": args.bar,
        "offset": args.offset,
        "length": length,
        "width": layout.width,
        "height": layout.height,
        "format": format.to_string(),
        "pitch": layout.pitch,
        "card": card.path(),
        "driver": card.driver(),
        "gpu": card.bdf().map(|b| b.to_string()),
        "connector": info.connector,
        "crtc": info.crtc,
        "mode": format!("{}x{}", info.mode.0, info.mode.1),
        "refresh_hz": info.refresh_hz,
        "mode_setting": format!("{:?}", info.setting).to_lowercase(),
    });
    if args.json {
        crate::print_json(&shown);
    } else {
        println!(
            "showing {} BAR{} [{:#x}, +{:#x}) as {}x{} {} (pitch {}) on {} connector {} \
             ({}x{}@{} Hz, {:?} mode setting)",
            args.bdf,
            args.bar,
            args.offset,
            length,
            layout.width,
            layout.height,
            format,
            layout.pitch,
            card.describe(),
            info.connector,
            info.mode.0,
            info.mode.1,
            info.refresh_hz,
            info.setting
        );
    }
    // A --seconds past what a clock can reach (1e30, inf) waits without end, like none.
    let deadline = args.seconds.and_then(|s| {
        Duration::try_from_secs_f64(s.max(0.0))
            .ok()
            .and_then(|d| Instant::now().checked_add(d))
    });
    let mut last_failure: Option<String> = None;
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(50));
        let event = match scanout.watch(buf.state()?) {
            Ok(ScanoutEvent::Unchanged) => continue,
            Ok(ScanoutEvent::Revoked(why)) => {
                json!({"event": "revoked", "reason": why.to_string()})
            }
            Ok(ScanoutEvent::Restored) => json!({"event": "restored"}),
            // Live again by the exporter's registers, but the driver still refused:
            // report it (once per distinct error) and try again on the next tick.
            Err(e) => {
                let text = e.to_string();
                if last_failure.as_deref() == Some(text.as_str()) {
                    continue;
                }
                last_failure = Some(text.clone());
                json!({"event": "restore_failed", "error": text})
            }
        };
        if event["event"] != "restore_failed" {
            last_failure = None;
        }
        if args.json {
            crate::print_json(&event);
        } else {
            match event["event"].as_str() {
                Some("revoked") => println!(
                    "revoked ({}): the display no longer reads the BAR",
                    event["reason"].as_str().unwrap_or("")
                ),
                Some("restored") => println!("restored: the buffer is mapped and shown again"),
                _ => println!("restore failed: {}", event["error"].as_str().unwrap_or("")),
            }
        }
    }
    scanout.restore()?;
    Ok(())
}
