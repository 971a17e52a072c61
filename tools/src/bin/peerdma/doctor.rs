//! `peerdma doctor [BDF...]`: read-only checks of what peer-to-peer DMA over dma-buf
//! needs here, each with pass/fail and the fix (`peerdma_tools::doctor`).

use peerdma_host::kernel::HostPaths;
use peerdma_host::p2pdma::HostCpu;
use peerdma_host::Bdf;
use peerdma_tools::doctor;
use peerdma_tools::exit::Exit;

/// Runs the checks; [`Exit::ChecksFailed`] (4) when any failed.
pub fn run(bdfs: &[Bdf], json: bool) -> Exit {
    let host = HostPaths::system();
    let mut report = doctor::run(&host, bdfs, HostCpu::system());
    doctor::posted_features(&mut report, &host, bdfs);
    doctor::io_uring_dmabuf(&mut report);
    if json {
        crate::print_json(&report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if report.failed() {
        Exit::ChecksFailed
    } else {
        Exit::Ok
    }
}
