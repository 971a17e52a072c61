//! `peerdma`: check a machine (doctor), list PCI devices, their VFIO regions and P2P
//! paths (with ACS and the kernel's verdict); export BAR ranges as
//! dma-bufs, inspect any dma-buf and revoke held ones.

mod doctor;
mod export;
mod inspect;
mod list;
mod path;
mod regions;
mod revoke;
mod show;

use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use clap_complete::Shell;
use peerdma_host::Bdf;
use peerdma_tools::args::AccessPathArg;
use peerdma_tools::failure::Failure;

#[derive(Parser)]
#[command(
    name = "peerdma",
    version,
    about = "Peer-to-peer DMA between PCI devices over dma-buf: doctor, list, path, export, inspect",
    after_help = "Exit status: 0 ok, 2 usage, 3 could not run, 4 doctor: a check failed. Under \
                  --json every outcome is one JSON object on stdout; a failure is \
                  {\"error\":{\"kind\",\"message\",\"fix\"}, ...}."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
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
        access: AccessPathArg,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Export ranges of a BAR as one dma-buf and describe it.
    Export(export::ExportArgs),
    /// Revoke for good the dma-bufs of a device that processes hold (needs the kernel
    /// series "vfio/pci: Add mmap() for DMABUFs", not upstream yet; run as root).
    Revoke(revoke::RevokeArgs),
    /// Describe any dma-buf: a /proc/PID/fd/N path (or PID:FD).
    Inspect {
        /// /proc/PID/fd/N, PID:FD, or a path to open.
        target: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Read-only checks of kernel, IOMMU, devices and importers, each with the fix.
    Doctor {
        /// Devices to check (and the paths between the first and the others).
        bdfs: Vec<Bdf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Prints a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: Shell,
    },
    /// Prints peerdma's man page; with DIR, writes it and one page per subcommand there.
    Man {
        /// Where to write the pages (created if missing); without it the page goes to stdout.
        dir: Option<std::path::PathBuf>,
    },
    /// The PCI path between two devices, its ACS bits, the kernel's P2P verdict and
    /// which importers it matters for.
    Path {
        /// The exporting device.
        a: Bdf,
        /// The importing device.
        b: Bdf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Export a BAR range and scan it out through a DRM driver (PRIME import + KMS).
    #[cfg_attr(
        not(feature = "drm"),
        command(
            about = "Export a BAR range and scan it out through a DRM driver [not built in: \
                     cargo install --path tools --features drm]"
        )
    )]
    Show(show::ShowArgs),
}

/// The command line, with the `--version` that names the kernel features.
fn command() -> clap::Command {
    Cli::command().long_version(peerdma_tools::install::long_version())
}

fn main() -> ExitCode {
    peerdma_tools::cli::default_sigpipe();
    // Under --json every outcome is one JSON object on stdout, usage errors included.
    let json = std::env::args_os().any(|a| a == "--json");
    let cli = match command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => return peerdma_tools::failure::clap_exit(e, json),
    };
    let name = cli.command.name();
    let result: Result<()> = match cli.command {
        Cmd::Completions { shell } => {
            peerdma_tools::install::write_completions(command(), shell, &mut std::io::stdout());
            Ok(())
        }
        Cmd::Man { dir: None } => {
            peerdma_tools::install::write_man_page(command(), &mut std::io::stdout())
                .map_err(Into::into)
        }
        Cmd::Man { dir: Some(dir) } => peerdma_tools::install::write_man_pages(command(), &dir)
            .map(|pages| {
                for p in pages {
                    println!("{}", p.display());
                }
            })
            .map_err(Into::into),
        Cmd::Doctor { bdfs, json } => return doctor::run(&bdfs, json).into(),
        Cmd::List { json, vfio } => list::run(json, vfio),
        Cmd::Regions { bdf, access, json } => regions::run(bdf, access.into(), json),
        Cmd::Export(args) => export::run(args),
        Cmd::Revoke(args) => revoke::run(args),
        Cmd::Inspect { target, json } => inspect::run(&target, json),
        Cmd::Path { a, b, json } => path::run(a, b, json),
        Cmd::Show(args) => show::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => Failure::from_error(&e)
            .with("command", name)
            .report("peerdma", json)
            .into(),
    }
}

impl Cmd {
    /// The subcommand's name, as the failure report gives it.
    fn name(&self) -> &'static str {
        match self {
            Cmd::List { .. } => "list",
            Cmd::Regions { .. } => "regions",
            Cmd::Export(_) => "export",
            Cmd::Revoke(_) => "revoke",
            Cmd::Inspect { .. } => "inspect",
            Cmd::Doctor { .. } => "doctor",
            Cmd::Completions { .. } => "completions",
            Cmd::Man { .. } => "man",
            Cmd::Path { .. } => "path",
            Cmd::Show(_) => "show",
        }
    }
}

/// Prints a serde value as one line of JSON.
pub fn print_json(v: &serde_json::Value) {
    println!("{v}");
}

/// Lines of cells as a table: every column but the last padded to its widest cell,
/// columns one space apart, each line ending in a newline.
pub fn table<const N: usize>(lines: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for line in lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in lines {
        let mut text = String::new();
        for (i, cell) in line.iter().enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$} ", w = widths[i]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}
