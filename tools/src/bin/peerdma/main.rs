//! `peerdma`: list PCI devices, their VFIO regions and P2P paths; export BAR ranges as
//! dma-bufs and inspect any dma-buf.

mod export;
mod inspect;
mod list;
mod path;
mod regions;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use peerdma_exporter::{AccessPath, Bdf};

#[derive(Parser)]
#[command(
    name = "peerdma",
    version,
    about = "Peer-to-peer DMA between PCI devices over dma-buf: list, export, inspect"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// Which VFIO access path to open a device through.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Access {
    /// cdev + iommufd where the kernel has them, else group/container.
    Auto,
    /// /dev/vfio/devices/vfioN bound to /dev/iommu.
    Cdev,
    /// /dev/vfio/vfio container + /dev/vfio/GROUP.
    Group,
}

impl From<Access> for AccessPath {
    fn from(a: Access) -> AccessPath {
        match a {
            Access::Auto => AccessPath::Auto,
            Access::Cdev => AccessPath::Cdev,
            Access::Group => AccessPath::Group,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// PCI devices: BDF, IDs, class, driver, IOMMU group, VFIO status and BARs.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Only devices bound to vfio-pci.
        #[arg(long)]
        vfio: bool,
    },
    /// The VFIO view of one device: regions, capabilities, MSI-X table location, dma-buf support.
    Regions {
        /// The device (0000:01:00.0 or 01:00.0).
        bdf: Bdf,
        /// Access path.
        #[arg(long, value_enum, default_value = "auto")]
        access: Access,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Export ranges of a BAR as one dma-buf and describe it.
    Export(export::ExportArgs),
    /// Describe any dma-buf: a /proc/PID/fd/N path (or PID:FD).
    Inspect {
        /// /proc/PID/fd/N, PID:FD, or a path to open.
        target: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The PCI path between two devices and which importers can use it.
    Path {
        /// The exporting device.
        a: Bdf,
        /// The importing device.
        b: Bdf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    peerdma_tools::cli::default_sigpipe();
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        Cmd::List { json, vfio } => list::run(json, vfio),
        Cmd::Regions { bdf, access, json } => regions::run(bdf, access.into(), json),
        Cmd::Export(args) => export::run(args),
        Cmd::Inspect { target, json } => inspect::run(&target, json),
        Cmd::Path { a, b, json } => path::run(a, b, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peerdma: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a serde value as one line of JSON.
pub fn print_json(v: &serde_json::Value) {
    println!("{v}");
}
