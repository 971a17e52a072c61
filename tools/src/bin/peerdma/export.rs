//! `peerdma export BDF --bar N --range OFFSET:LENGTH ...`: one dma-buf from BAR ranges.

use std::os::fd::{AsFd, AsRawFd};

use anyhow::{Context, Result};
use clap::Args;
use peerdma_exporter::{Bdf, Device, DmaRange, ExportOptions, OpenOptions, RevokeState};
use peerdma_tools::size::{human, parse_range};
use serde_json::json;

/// Arguments of `peerdma export`.
#[derive(Args)]
pub struct ExportArgs {
    /// The device (0000:01:00.0 or 01:00.0).
    bdf: Bdf,
    /// The BAR (region index 0..5).
    #[arg(long)]
    bar: u32,
    /// OFFSET:LENGTH inside the BAR (sizes take 4K/2M/1G suffixes or hex); repeat for more ranges.
    #[arg(long = "range", value_parser = parse_range, required = true)]
    ranges: Vec<(u64, u64)>,
    /// Access path.
    #[arg(long, value_enum, default_value = "auto")]
    access: crate::Access,
    /// Let ranges touch the MSI-X table or PBA pages (a peer could then write MSI-X vectors).
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
    .with_context(|| format!("opening {}", args.bdf))?;
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
    let fd = buf.as_fd().as_raw_fd();
    let path = format!("/proc/{}/fd/{fd}", std::process::id());
    let out = json!({
        "bdf": args.bdf.to_string(),
        "bar": args.bar,
        "opened_via": format!("{:?}", device.opened_via()),
        "size": buf.size(),
        "ranges": ranges.iter().map(|r| json!({"offset": r.offset, "length": r.length})).collect::<Vec<_>>(),
        "exporter": info.exp_name,
        "inode": info.ino,
        "name": info.name,
        "cloexec": info.cloexec(),
        "state": match state { RevokeState::Live => "live".to_string(), RevokeState::Revoked(w) => format!("revoked: {w}") },
        "fd": fd,
        "path": path,
    });
    if args.json {
        crate::print_json(&out);
    } else {
        println!(
            "exported {} of {} BAR{} in {} range(s) as a dma-buf: exporter {}, inode {}, {}",
            human(buf.size()),
            args.bdf,
            args.bar,
            ranges.len(),
            info.exp_name.as_deref().unwrap_or("?"),
            info.ino.map(|i| i.to_string()).unwrap_or("?".into()),
            out["state"].as_str().unwrap_or("")
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
            "holding the buffer at {path} (pid {}); Ctrl-C or SIGTERM releases it",
            std::process::id()
        );
        let sig = signals.wait().context("waiting for a signal")?;
        eprintln!("{sig}: releasing the buffer");
    }
    drop(buf);
    Ok(())
}

fn hold_signals() -> nix::sys::signal::SigSet {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::SIGINT);
    set.add(nix::sys::signal::SIGTERM);
    set
}
