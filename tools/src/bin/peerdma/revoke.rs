//! `peerdma revoke BDF [--pid PID] [--fd FD]`: revoke for good, on request, the vfio-pci
//! dma-bufs of a device that processes hold (`peerdma_exporter::posted::revoke_held`;
//! the posted kernel series "vfio/pci: Add mmap() for DMABUFs", not upstream yet).

use std::path::Path;

use anyhow::Result;
use peerdma_exporter::posted::{revoke_held, RevokeOutcome};
use peerdma_host::Bdf;
use peerdma_tools::size::human;
use serde_json::json;

/// The command line of `peerdma revoke`.
#[derive(clap::Args)]
pub struct RevokeArgs {
    /// The exporting device (0000:01:00.0 or 01:00.0).
    pub bdf: Bdf,
    /// Only the dma-bufs this process holds.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Only the dma-buf at this fd number (with --pid: of that process).
    #[arg(long)]
    pub fd: Option<i32>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// Revokes and says what it revoked.
pub fn run(args: RevokeArgs) -> Result<()> {
    let done = revoke_held(Path::new("/proc"), args.bdf, args.pid, args.fd)?;
    let outcome = |o: RevokeOutcome| match o {
        RevokeOutcome::Revoked => "revoked",
        RevokeOutcome::AlreadyRevoked => "already revoked",
    };
    if args.json {
        let bufs: Vec<_> = done
            .iter()
            .map(|(b, o)| {
                json!({"pid": b.pid, "fd": b.fd, "inode": b.ino, "size": b.size, "outcome": outcome(*o)})
            })
            .collect();
        crate::print_json(&json!({"bdf": args.bdf.to_string(), "dma_bufs": bufs}));
    } else {
        for (b, o) in &done {
            println!(
                "{}: dma-buf inode {} ({}) at pid {} fd {}: {}",
                args.bdf,
                b.ino,
                human(b.size),
                b.pid,
                b.fd,
                outcome(*o)
            );
        }
        println!(
            "importers lost their mappings; the buffers stay revoked until closed (export new ones)"
        );
    }
    Ok(())
}
