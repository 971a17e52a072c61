//! Soak (issue 14): export → map → DMA → unmap → close cycles through the exporter and
//! the iommufd importer with edu moving the bytes, then verified copies through
//! p2pcopy's library API (CPU and DMA path in turn); fds, mappings and RSS are flat.
//! The guest program is `peerdma-guest-soak`.
//!
//! The suite runs `PEERDMA_SOAK_CYCLES` of each (20 when unset); the full run is
//! `PEERDMA_SOAK_CYCLES=10000 cargo test -p peerdma-testbed --test soak -- --nocapture`
//! (edu's DMA takes 100 ms of virtual time per transfer: hours under TCG).

mod common;

use std::time::Duration;

use common::*;
use peerdma_testbed::kernel::KernelChoice;
use peerdma_testbed::vm::Testbed;
use serde_json::Value;

/// RSS may move by what the allocator keeps (a few pages), not by a leak per cycle.
const RSS_SLACK_KIB: u64 = 256;

#[test]
fn export_map_dma_unmap_close_cycles_and_p2pcopy_runs_leave_fds_mappings_and_rss_flat() {
    let n: u64 = std::env::var("PEERDMA_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let tb = Testbed::new(peerdma_testbed::vm::VmOptions {
        // Two edu transfers per cycle and one per DMA copy, 100 ms each, and slack.
        timeout: Duration::from_secs(240 + n / 2),
        ..options(KernelChoice::Reference)
    })
    .expect("the testbed resolves its kernel and QEMU");
    let guest = workspace_bin("peerdma-guest-soak").display().to_string();
    let out = run_ok(
        &tb,
        &[
            guest.as_str(),
            "--cycles",
            &n.to_string(),
            "--copies",
            &n.to_string(),
        ],
    );
    let r: &Value = &json_lines(&out.output)[0];
    for phase in ["importer", "p2pcopy"] {
        let p = &r[phase];
        let (b, a) = (&p["before"], &p["after"]);
        let u = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {p:#}"));
        eprintln!(
            "soak {phase}: {n} cycles in {:.1} s; fds {} -> {}, mappings {} -> {}, RSS {} -> {} KiB",
            p["seconds"].as_f64().unwrap_or(0.0),
            u(b, "fds"),
            u(a, "fds"),
            u(b, "maps"),
            u(a, "maps"),
            u(b, "rss_kib"),
            u(a, "rss_kib"),
        );
        assert_eq!(u(a, "fds"), u(b, "fds"), "{phase}: fds leaked: {p:#}");
        assert_eq!(
            u(a, "maps"),
            u(b, "maps"),
            "{phase}: mappings leaked: {p:#}"
        );
        assert!(
            u(a, "rss_kib") <= u(b, "rss_kib") + RSS_SLACK_KIB,
            "{phase}: RSS grew: {p:#}"
        );
    }
    assert_eq!(r["importer"]["cycles"], n);
    assert_eq!(r["p2pcopy"]["copies"], n);
}
