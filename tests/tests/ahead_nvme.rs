//! The kernel's own NVMe driver as an engine (`peerdma_engine::kernel_nvme`), end to end:
//! a QEMU NVMe controller left on nvme-pci (`nvme-kernel`), an ivshmem BAR2 exported as
//! a dma-buf and registered with io_uring for `/dev/nvme0n1` (kernel series "Add dmabuf
//! read/write via io_uring", on the ahead kernel only). Namespace → BAR and BAR →
//! namespace, with the bytes checked on the host in the ivshmem backing file and the
//! NVMe image; a misaligned dma-buf offset is refused by name. On the reference kernel
//! the same request is the explained needs-kernel-feature refusal; on the ahead kernel
//! without a P2P-capable route (root bus, Intel-like CPU model) the P2P distance check's
//! refusal is named.
//!
//! Every boot is bounded (the VM timeout): the engine keeps each I/O within
//! `max_hw_sectors_kb` and never revokes with I/O in flight, the two hangs of the v3
//! series; were one hit anyway, the test fails on the timeout instead of hanging.

mod common;

use std::time::Duration;

use common::*;
use peerdma_testbed::devices::Topology;
use peerdma_testbed::image::{ImageSeed, ImageSource};
use peerdma_testbed::kernel::KernelChoice;
use peerdma_testbed::pattern;
use peerdma_testbed::vm::{Testbed, VmOptions};
use serde_json::Value;

/// The seed the host fills the NVMe image with.
const IMAGE_SEED: u64 = 23;
/// Bytes moved each way: four I/Os of QEMU NVMe's 512 KiB `max_hw_sectors_kb`.
const LEN: u64 = 2 << 20;
/// Where on the namespace the BAR → namespace write lands.
const WRITE_AT: u64 = 16 << 20;
const SERIES: &str = "Add dmabuf read/write via io_uring";

/// One boot: devices "ivshmem,nvme-kernel", the image seeded, `cpu_model` as given; the
/// guest program's JSON line and the run.
fn kernel_nvme_run(
    kernel: KernelChoice,
    cpu_model: Option<&str>,
    revoke: bool,
) -> (Value, peerdma_testbed::vm::RunOutcome) {
    let tb = Testbed::new(VmOptions {
        devices: "ivshmem,nvme-kernel".parse().unwrap(),
        topology: Topology::Root,
        cpu_model: cpu_model.map(str::to_owned),
        nvme_images: vec![ImageSeed {
            role: "nvme-kernel0".into(),
            source: ImageSource::Pattern(IMAGE_SEED),
        }],
        timeout: Duration::from_secs(150),
        ..options(kernel)
    })
    .expect("the testbed resolves its kernel and QEMU");
    let guest = workspace_bin("peerdma-guest-kernel-nvme");
    let (len, at) = (LEN.to_string(), WRITE_AT.to_string());
    let mut argv = vec![
        guest.to_str().unwrap(),
        "ivshmem0",
        "nvme-kernel0",
        &len,
        &at,
    ];
    if revoke {
        argv.push("revoke");
    }
    let out = run_ok(&tb, &argv);
    let lines = json_lines(&out.output);
    assert_eq!(lines.len(), 1, "one report line: {}", out.output);
    (lines[0].clone(), out)
}

#[test]
fn on_the_ahead_kernel_nvme_moves_namespace_to_bar_and_back_through_io_uring() {
    let (r, out) = kernel_nvme_run(KernelChoice::Ahead, Some("max,family=23"), true);
    assert_eq!(r["open"], "ok", "{r:#}");
    let max_io = r["limits"]["max_io"].as_u64().unwrap();
    assert!(max_io > 0 && max_io < LEN, "several I/Os each way: {r:#}");
    for step in ["read", "write"] {
        assert_eq!(r[step]["bytes"], LEN, "{step}: {r:#}");
        assert_eq!(r[step]["ios"], LEN.div_ceil(max_io), "{step}: {r:#}");
    }
    // Namespace → BAR: the image's first LEN bytes are in the BAR's backing file.
    let bar = std::fs::read(out.backing_file("ivshmem0").unwrap()).unwrap();
    assert_eq!(
        pattern::first_mismatch(IMAGE_SEED, 0, &bar[..LEN as usize]),
        None,
        "the BAR does not hold the namespace's bytes"
    );
    assert!(
        bar[LEN as usize..(LEN as usize + 4096)]
            .iter()
            .all(|&b| b == 0),
        "bytes past the read changed in the BAR"
    );
    // BAR → namespace: the same bytes at WRITE_AT in the image; the rest untouched.
    let image = std::fs::read(out.backing_file("nvme-kernel0").unwrap()).unwrap();
    let (w, l) = (WRITE_AT as usize, LEN as usize);
    assert_eq!(
        pattern::first_mismatch(IMAGE_SEED, 0, &image[w..w + l]),
        None,
        "the image does not hold the BAR's bytes at {WRITE_AT}"
    );
    assert_eq!(
        pattern::first_mismatch(IMAGE_SEED, (w + l) as u64, &image[w + l..w + l + 4096]),
        None,
        "bytes past the write changed in the image"
    );
    assert_eq!(
        pattern::first_mismatch(IMAGE_SEED, (w - 4096) as u64, &image[w - 4096..w]),
        None,
        "bytes before the write changed in the image"
    );
    // A dma-buf offset the kernel would refuse with EINVAL is refused before any I/O.
    assert_eq!(r["misaligned"]["kind"], "alignment", "{r:#}");
    assert!(
        r["misaligned"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("4 bytes"),
        "{r:#}"
    );
    // REVOKE from the submitting task with nothing in flight (every transfer drained)
    // returns, and the next I/O is the named revoke (the kernel's ENODEV), not a hang.
    assert_eq!(r["revoke"], "ok", "{r:#}");
    assert_eq!(r["after_revoke"]["kind"], "revoked", "{r:#}");
    assert!(
        r["after_revoke"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("ENODEV"),
        "{r:#}"
    );
}

#[test]
fn on_the_ahead_kernel_a_route_the_p2p_check_refuses_is_named() {
    // Root bus, the default (Intel-like) CPU model: the registration works, every I/O
    // fails with EINVAL.
    let (r, out) = kernel_nvme_run(KernelChoice::Ahead, None, false);
    assert_eq!(r["open"], "ok", "{r:#}");
    let e = &r["read"];
    assert_eq!(e["kind"], "p2p_refused", "{r:#}");
    let msg = e["message"].as_str().unwrap_or_default();
    for want in [
        "P2P distance check",
        "EINVAL",
        "peerdma path",
        "switch",
        "Zen",
    ] {
        assert!(msg.contains(want), "{want} missing: {msg}");
    }
    // Nothing fell back to system memory: the BAR stayed zero.
    let bar = std::fs::read(out.backing_file("ivshmem0").unwrap()).unwrap();
    assert!(
        bar[..LEN as usize].iter().all(|&b| b == 0),
        "the BAR changed"
    );
}

#[test]
fn on_the_reference_kernel_the_engine_is_an_explained_refusal() {
    let (r, _out) = kernel_nvme_run(KernelChoice::Reference, Some("max,family=23"), false);
    let e = &r["open"];
    assert_eq!(e["kind"], "needs_kernel_feature", "{r:#}");
    let msg = e["message"].as_str().unwrap_or_default();
    for want in [
        SERIES,
        "not upstream",
        "EINVAL",
        "nvme",
        "user-space NVMe engine",
    ] {
        assert!(msg.contains(want), "{want} missing: {msg}");
    }
}

#[test]
fn p2pcopy_takes_a_blk_side_both_ways_with_the_storage_report() {
    let tb = Testbed::new(VmOptions {
        devices: "ivshmem,nvme-kernel".parse().unwrap(),
        topology: Topology::Root,
        cpu_model: Some("max,family=23".into()),
        nvme_images: vec![ImageSeed {
            role: "nvme-kernel0".into(),
            source: ImageSource::Pattern(IMAGE_SEED),
        }],
        timeout: Duration::from_secs(150),
        ..options(KernelChoice::Ahead)
    })
    .expect("the testbed resolves its kernel and QEMU");
    let p2pcopy = workspace_bin("p2pcopy");
    let p = p2pcopy.display();
    // The namespace appears once the driver's asynchronous probe is done: bounded wait.
    let script = format!(
        "set -u
         bdf=$(awk -F'\"' '/\"bdf\"/{{print $4; exit}}' /run/peerdma/testbed.json)
         i=0; until [ -e /dev/nvme0n1 ]; do i=$((i+1)); [ $i -lt 300 ] || exit 91; sleep 0.1; done
         {p} blk:/dev/nvme0n1 \"$bdf\" --size {LEN} --json; echo \"## read rc=$?\"
         {p} \"$bdf\" blk:/dev/nvme0n1@{lba} --size {LEN} --seed {IMAGE_SEED} --json
         echo \"## write rc=$?\"
         {p} blk:/dev/nvme0n1 \"$bdf\" --size {LEN} --transfer-size 4096 --json
         echo \"## flag rc=$?\"
         {p} blk:/dev/null \"$bdf\" --size {LEN} --json; echo \"## notblk rc=$?\"",
        lba = WRITE_AT / 512,
    );
    let out = run_sh(&tb, &script);
    let lines = json_lines(&out.output);
    assert_eq!(lines.len(), 4, "{}", out.output);
    assert_eq!(marked_rc(&out.output, "read"), 0, "{}", out.output);
    assert_eq!(marked_rc(&out.output, "write"), 0, "{}", out.output);
    assert_eq!(marked_rc(&out.output, "flag"), 2, "{}", out.output);
    let (read, write) = (&lines[0], &lines[1]);
    assert_eq!(read["path"], "blk-read", "{read:#}");
    assert_eq!(read["src"]["kind"], "blk", "{read:#}");
    assert_eq!(read["dst"]["kind"], "bar", "{read:#}");
    assert_eq!(read["verified"], true, "{read:#}");
    assert_eq!(read["route"]["peer_to_peer"], true, "{read:#}");
    assert_eq!(write["path"], "blk-write", "{write:#}");
    assert_eq!(write["dst"]["lba"], WRITE_AT / 512, "{write:#}");
    assert_eq!(write["verified"], true, "{write:#}");
    for r in [read, write] {
        assert_eq!(r["bytes"], LEN, "{r:#}");
        assert!(
            r["latency"]["p99_us"].as_f64().unwrap_or_default() > 0.0,
            "{r:#}"
        );
        assert!(r["commands"].as_u64().unwrap_or_default() >= 1, "{r:#}");
    }
    assert_eq!(
        lines[2]["error"]["kind"], "flag_not_applicable",
        "{:#}",
        lines[2]
    );
    // Not a raw NVMe namespace: named, with the path.
    assert_eq!(marked_rc(&out.output, "notblk"), 3, "{}", out.output);
    assert_eq!(
        lines[3]["error"]["kind"], "not_nvme_block_device",
        "{:#}",
        lines[3]
    );
    assert!(
        lines[3]["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("/dev/null"),
        "{:#}",
        lines[3]
    );
    // On the host: the BAR holds the pattern of IMAGE_SEED (the read brought the
    // namespace's, the write's fill the same), and the image holds it at WRITE_AT.
    let bar = std::fs::read(out.backing_file("ivshmem0").unwrap()).unwrap();
    assert_eq!(
        pattern::first_mismatch(IMAGE_SEED, 0, &bar[..LEN as usize]),
        None
    );
    let image = std::fs::read(out.backing_file("nvme-kernel0").unwrap()).unwrap();
    let (w, l) = (WRITE_AT as usize, LEN as usize);
    assert_eq!(
        pattern::first_mismatch(IMAGE_SEED, 0, &image[w..w + l]),
        None
    );
    assert_eq!(
        pattern::first_mismatch(IMAGE_SEED, (w + l) as u64, &image[w + l..w + l + 4096]),
        None,
        "bytes past the write changed in the image"
    );
}
