//! `peerdma doctor [BDF...]`: read-only checks of what peer-to-peer DMA over dma-buf
//! needs here, each with pass/fail and the fix (`peerdma_tools::doctor`).

use std::process::ExitCode;

use anyhow::Result;
use peerdma_exporter::kernel::HostPaths;
use peerdma_exporter::{Bdf, HostCpu};
use peerdma_tools::doctor;

/// Runs the checks; exit status 2 when any failed.
pub fn run(bdfs: &[Bdf], json: bool) -> Result<ExitCode> {
    let report = doctor::run(&HostPaths::system(), bdfs, HostCpu::system());
    if json {
        crate::print_json(&report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.failed() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
