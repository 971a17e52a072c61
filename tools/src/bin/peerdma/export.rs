//! `peerdma export BDF --bar N --range OFFSET:LENGTH ...`: one dma-buf from BAR ranges.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use peerdma_copy::buffer_state::{kernel_view, read_registers, KernelView};
use peerdma_exporter::{Device, DmaBuf, DmaRange, ExportOptions, OpenOptions, RevokeState};
use peerdma_host::Bdf;
use peerdma_tools::size::{human, parse_range};
use serde_json::json;

/// How often a held buffer's device registers are read: often enough that a reset
/// started outside VFIO (config access locked for ≥ 20 ms) meets a read.
const REGISTER_POLL: Duration = Duration::from_millis(5);
/// How often the kernel is asked (a private IOAS map) when the registers did not move.
const KERNEL_POLL: Duration = Duration::from_millis(200);

/// Arguments of `peerdma export`.
#[derive(Args)]
pub struct ExportArgs {
    /// The device (0000:01:00.0 or 01:00.0).
    bdf: Bdf,
    /// The BAR: 0 to 5 (or BAR0 to BAR5).
    #[arg(long, value_parser = peerdma_tools::args::parse_bar)]
    bar: u32,
    /// OFFSET:LENGTH inside the BAR (sizes take 4K/2M/1G suffixes or hex); repeat for more ranges.
    #[arg(long = "range", value_parser = parse_range, required = true)]
    ranges: Vec<(u64, u64)>,
    /// Access path.
    #[arg(long, value_enum, default_value = "auto")]
    access: peerdma_tools::args::AccessPathArg,
    /// Let ranges touch the MSI-X table or PBA pages (a peer could then write MSI-X
    /// vectors). Not needed where VFIO marks the region MSI-X mappable (`peerdma regions`
    /// says so): such pages are exported like the rest, as VFIO lets them be mmapped.
    #[arg(long)]
    allow_msix_overlap: bool,
    /// Keep the buffer alive and say how to reach it, until interrupted.
    #[arg(long)]
    hold: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Exports and describes the buffer.
pub fn run(args: ExportArgs) -> Result<()> {
    let device = Device::open_with(
        args.bdf,
        OpenOptions {
            access: args.access.into(),
            ..OpenOptions::default()
        },
    )
    // The exporter's errors name the BDF: no "opening BDF" before them (said once).
    ?;
    let ranges: Vec<DmaRange> = args
        .ranges
        .iter()
        .map(|&(o, l)| DmaRange::new(o, l))
        .collect();
    let opts = ExportOptions {
        allow_msix_overlap: args.allow_msix_overlap,
        ..ExportOptions::default()
    };
    // Block the signals that end --hold before anything else, so none is lost.
    let signals = hold_signals();
    if args.hold {
        signals.thread_block().context("blocking SIGINT/SIGTERM")?;
    }
    let buf = device.export_dma_buf_with(args.bar, &ranges, &opts)?;
    let info = buf.fdinfo()?;
    let state = buf.state()?;
    let page = device.page_size();
    let kernel = kernel_view(buf.as_fd(), page);
    let fd = buf.as_fd().as_raw_fd();
    let path = format!("/proc/{}/fd/{fd}", std::process::id());
    let out = json!({
        "bdf": args.bdf.to_string(),
        "bar": args.bar,
        "access_path": crate::regions::access_path(device.access_path()).0,
        "size": buf.size(),
        "ranges": ranges.iter().map(|r| json!({"offset": r.offset, "length": r.length})).collect::<Vec<_>>(),
        "exporter": info.exp_name,
        "inode": info.ino,
        "name": info.name,
        "cloexec": info.cloexec(),
        "state": state_text(&state),
        "kernel_state": kernel.to_string(),
        "fd": fd,
        "path": path,
    });
    if args.json {
        crate::print_json(&out);
    } else {
        println!(
            "exported {} of {} BAR{} in {} range(s) as a dma-buf: exporter {}, inode {}, {} \
             (kernel: {})",
            human(buf.size()),
            args.bdf,
            args.bar,
            ranges.len(),
            info.exp_name.as_deref().unwrap_or("?"),
            info.ino.map(|i| i.to_string()).unwrap_or("?".into()),
            out["state"].as_str().unwrap_or(""),
            kernel
        );
        for (i, r) in ranges.iter().enumerate() {
            println!(
                "  range {i}: offset {:#x} length {:#x} ({})",
                r.offset,
                r.length,
                human(r.length)
            );
        }
    }
    if args.hold {
        eprintln!(
            "holding the buffer at {path} (pid {}); Ctrl-C or SIGTERM releases it; \
             changes of its state are reported here",
            std::process::id()
        );
        let holding = AtomicBool::new(true);
        let sig = std::thread::scope(|s| {
            // The signals stay blocked in this thread too (the mask is inherited).
            s.spawn(|| watch(&buf, page, (state, kernel), &holding, args.json));
            let sig = signals.wait();
            holding.store(false, Ordering::Release);
            sig
        })
        .context("waiting for a signal")?;
        eprintln!("{sig}: releasing the buffer");
    }
    drop(buf);
    Ok(())
}

fn state_text(state: &RevokeState) -> String {
    match state {
        RevokeState::Live => "live".to_string(),
        RevokeState::Revoked(w) => format!("revoked: {w}"),
    }
}

/// Reports every change of the held buffer's state, as the device's registers show it
/// and as the kernel answers an importer, until `holding` turns false. Revokes that
/// other processes cause are seen here: a VFIO user's decode-off, reset or D3 revokes
/// the buffer (both views change); decode turned off through sysfs changes the
/// registers only, which this names; a reset started through sysfs leaves both as they
/// were and shows as a register read that the kernel held up for the reset's length.
fn watch(
    buf: &DmaBuf,
    page: u64,
    mut last: (RevokeState, KernelView),
    holding: &AtomicBool,
    json: bool,
) {
    let mut asked = Instant::now();
    while holding.load(Ordering::Acquire) {
        std::thread::sleep(REGISTER_POLL);
        let read = read_registers(buf);
        if let Some(took) = read.blocked {
            report_blocked(took, json);
        }
        let Ok(state) = read.state else { continue };
        if state == last.0 && read.blocked.is_none() && asked.elapsed() < KERNEL_POLL {
            continue;
        }
        let kernel = kernel_view(buf.as_fd(), page);
        asked = Instant::now();
        if (state, &kernel) == (last.0, &last.1) {
            continue;
        }
        let note = match (&state, &kernel) {
            (RevokeState::Revoked(_), KernelView::Live) => {
                "the device stopped decoding but the kernel did not revoke the buffer: \
                 the change was made outside VFIO (sysfs config write or reset); \
                 importers' DMA now reaches a BAR that does not answer"
            }
            (RevokeState::Live, KernelView::Revoked) => {
                "the device decodes but the kernel holds the buffer revoked: either it was \
                 revoked for good (VFIO_DEVICE_FEATURE_DMA_BUF_REVOKE, e.g. peerdma revoke; \
                 export a new one), or decode was turned back on outside VFIO (turn it off \
                 and on through VFIO to restore the buffer)"
            }
            _ => "",
        };
        if json {
            crate::print_json(&json!({
                "event": "state", "state": state_text(&state),
                "kernel_state": kernel.to_string(), "note": note,
            }));
        } else {
            eprintln!(
                "buffer state: device {}, kernel {kernel}{}{note}",
                state_text(&state),
                if note.is_empty() { "" } else { "; " }
            );
        }
        last = (state, kernel);
    }
}

/// Says that a register read waited `took` for the device's config-space lock.
fn report_blocked(took: Duration, json: bool) {
    let note = "the kernel locked the device's config space meanwhile, as it does for a \
                reset: the device was reset outside VFIO (/sys/bus/pci/devices/BDF/reset or \
                a bus reset); the buffer was not revoked and importers' mappings stayed in \
                place, so DMA in that window reached a device in reset and what the BAR \
                held may be gone";
    let ms = took.as_secs_f64() * 1e3;
    if json {
        crate::print_json(&json!({
            "event": "config_blocked", "milliseconds": (ms * 10.0).round() / 10.0,
            "note": note,
        }));
    } else {
        eprintln!("buffer state: a read of the device's registers waited {ms:.1} ms: {note}");
    }
}

fn hold_signals() -> nix::sys::signal::SigSet {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::SIGINT);
    set.add(nix::sys::signal::SIGTERM);
    set
}
