//! p2pcopy in the testbed: cpu-engine copies verified in the guest and on the host,
//! bad input, revoke mid-copy, and nothing leaked.

mod common;

use common::*;
use peerdma_testbed::kernel::KernelChoice;
use peerdma_testbed::pattern;

#[test]
fn cpu_engine_copies_1m_and_64m_and_the_host_finds_the_pattern() {
    let tb = testbed(KernelChoice::Reference);
    let p2p = workspace_bin("p2pcopy").display().to_string();
    let out = run_sh(&tb, &format!(
                "set -e; {p2p} 00:10.0 00:11.0 --engine cpu --size 1M --dst-offset 8M --seed 11 --json; \
                 {p2p} 00:10.0 00:11.0 --engine cpu --size 64M --seed 22 --json"
            ));
    let r = json_lines(&out.output);
    assert_eq!(r.len(), 2, "{}", out.output);
    for (rep, size) in r.iter().zip([1u64 << 20, 64 << 20]) {
        assert_eq!(rep["engine"], "cpu", "{rep}");
        assert_eq!(rep["verified"], true, "{rep}");
        assert_eq!(rep["bytes"], size, "{rep}");
        assert_eq!(
            rep["iommu_faults"],
            serde_json::Value::Null,
            "no engine: {rep}"
        );
        assert_eq!(
            rep["src"]["bar"], 2,
            "the default BAR is ivshmem's 64 MiB BAR2: {rep}"
        );
        assert!(rep["gbps"].as_f64().unwrap() > 0.0);
        // The proof says plainly that the CPU moved the bytes.
        assert_eq!(rep["route"]["peer_to_peer"], false, "{rep}");
        assert_eq!(rep["route"]["devices"]["verdict"], "blocked", "{rep}");
        eprintln!("cpu engine {} bytes: {:.4} GB/s", size, rep["gbps"]);
    }
    // The last copy overwrote the whole of ivshmem1's BAR2 with seed 22's pattern; the
    // host reads the backing file after the VM is gone.
    let b = std::fs::read(out.backing_file("ivshmem1").unwrap()).unwrap();
    assert_eq!(pattern::first_mismatch(22, 0, &b), None);
    let a = std::fs::read(out.backing_file("ivshmem0").unwrap()).unwrap();
    assert_eq!(
        pattern::first_mismatch(22, 0, &a),
        None,
        "the source holds the pattern too"
    );
}

#[test]
fn bad_input_is_refused_with_a_clear_error_and_nonzero_exit() {
    let tb = testbed(KernelChoice::Reference);
    let p2p = workspace_bin("p2pcopy").display().to_string();
    let cases: [(&str, &str); 10] = [
        ("0e:00.0 00:11.0", "0000:0e:00.0"),
        // edu as a copy endpoint: its BAR0 is command registers (QEMU died of the
        // pattern written there before this was refused).
        ("00:12.0 00:11.0 --size 4K", "registers of the QEMU edu"),
        ("00:10.0 00:12.0 --size 4K", "registers of the QEMU edu"),
        ("00:10.0 00:11.0 --iterations 0", "iteration count is 0"),
        ("00:10.0 00:1f.2", "not to vfio-pci"),
        ("00:10.0 00:11.0 --size 128M", "does not fit"),
        (
            "00:10.0 00:11.0 --src-offset 0x123 --size 4K",
            "not a multiple of the page size",
        ),
        ("00:10.0 00:10.0", "SRC and DST are both"),
        // No --size and nothing past the offset: the offset is named, not "--size is 0".
        (
            "00:10.0 00:11.0 --src-offset 64M",
            "nothing to copy: the source offset 0x4000000 is at or past the end of 0000:00:10.0 BAR2",
        ),
        ("00:10.0 00:11.0 --size 1X", "4K"),
    ];
    let script: String = cases
        .iter()
        .map(|(args, _)| {
            format!("echo '## {args}'; {p2p} {args} --engine cpu; echo \"## rc=$?\"; ")
        })
        .collect();
    let out = run_sh(&tb, &script);
    for (args, expect) in cases {
        let body = out
            .output
            .split(&format!("## {args}\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("no output for {args}:\n{}", out.output));
        let rc = marked_rc(body, "");
        let text = body.split("## rc=").next().unwrap_or("");
        assert_ne!(rc, 0, "p2pcopy {args} succeeded:\n{}", text);
        assert!(rc < 128, "p2pcopy {args} died from a signal ({rc})");
        assert!(
            text.contains(expect),
            "p2pcopy {args}: {expect:?} not in:\n{}",
            text
        );
        assert!(
            !text.contains("panicked"),
            "p2pcopy {args} panicked:\n{}",
            text
        );
    }
    // Every case failed its checks before the first write: neither BAR's backing file
    // holds a byte (a pattern fill or poison would have left some).
    for role in ["ivshmem0", "ivshmem1"] {
        let file = std::fs::read(out.backing_file(role).unwrap()).unwrap();
        assert!(
            file.iter().all(|&b| b == 0),
            "a refused copy wrote into {role}'s BAR"
        );
    }
}

#[test]
fn each_run_has_its_own_seed_and_poisons_the_destination_first() {
    let tb = testbed(KernelChoice::Reference);
    let p2p = workspace_bin("p2pcopy").display().to_string();
    let out = run_sh(
        &tb,
        &format!(
            "set -e; {p2p} 00:10.0 00:11.0 --engine cpu --size 64K --json; \
             {p2p} 00:10.0 00:11.0 --engine cpu --size 64K --json"
        ),
    );
    let r = json_lines(&out.output);
    assert_eq!(r.len(), 2, "{}", out.output);
    let seeds: Vec<u64> = r.iter().map(|j| j["seed"].as_u64().unwrap()).collect();
    assert_ne!(
        seeds[0], seeds[1],
        "two runs used one seed: the second could pass on the first's bytes"
    );
    let b = std::fs::read(out.backing_file("ivshmem1").unwrap()).unwrap();
    assert_eq!(pattern::first_mismatch(seeds[1], 0, &b[..65536]), None);
}

#[test]
fn a_revoke_mid_copy_stops_cleanly_and_nothing_leaks() {
    let tb = testbed(KernelChoice::Reference);
    let p2p = workspace_bin("p2pcopy").display().to_string();
    let guest = workspace_bin("peerdma-guest-p2pcopy").display().to_string();
    let out = run_sh(&tb, &format!(
                "{p2p} 00:10.0 00:11.0 --engine cpu --size 64M --chunk 256K --test-revoke-after-bytes 16M --json; \
                 echo \"## rc=$?\"; {guest} ivshmem0 ivshmem1"
            ));
    let rc = marked_rc(&out.output, "");
    assert_eq!(
        rc, 3,
        "a revoked copy must exit 3 (could not run), not die of SIGBUS:\n{}",
        out.output
    );
    let lines = json_lines(&out.output);
    // The error object keeps what was done: the bytes before the stop and the seed.
    assert_eq!(lines[0]["error"]["kind"], "revoked", "{}", lines[0]);
    assert_eq!(lines[0]["verified"], false, "{}", lines[0]);
    assert_eq!(lines[0]["bytes_total"], 64u64 << 20, "{}", lines[0]);
    assert!(
        lines[0]["bytes_done"].as_u64().unwrap() >= 16 << 20,
        "{}",
        lines[0]
    );
    assert!(lines[0]["seed"].is_u64(), "{}", lines[0]);
    let err = lines[0]["error"]["message"]
        .as_str()
        .expect("the JSON error line");
    assert!(
        err.contains("revoked during the copy") && err.contains("memory decode is off"),
        "{err}"
    );
    let leak = &lines[1];
    assert_eq!(leak["fds_before"], leak["fds_after"], "fds leaked: {leak}");
    assert_eq!(
        leak["maps_before"], leak["maps_after"],
        "mappings leaked: {leak}"
    );
    let cases = leak["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 7);
    for c in cases {
        assert!(
            c["error"].is_string(),
            "case {} did not fail: {c}",
            c["case"]
        );
    }
    assert!(
        cases[5]["error"].as_str().unwrap().contains("revoked"),
        "{}",
        cases[5]
    );
    // Every write of edu (00:12.0) went past the destination's mapping: the cause named
    // is the IOMMU's refusal as the guest kernel logged it, with the mismatch it caused.
    let fault = cases[6]["error"].as_str().unwrap();
    for want in [
        "the IOMMU refused",
        "by the engine 0000:00:12.0",
        "DMAR write by 0000:00:12.0 at IOVA 0x",
        "so verification failed: 8192 byte(s) differ",
        "[DMA Write NO_PASID] Request device [0000:00:12.0]",
    ] {
        assert!(fault.contains(want), "{want:?} missing from: {fault}");
    }
}

#[test]
fn iommufd_engine_moves_64k_between_the_bars_through_their_dmabufs() {
    let tb = testbed(KernelChoice::Reference);
    let p2p = workspace_bin("p2pcopy").display().to_string();
    let out = run_sh(&tb, &format!(
                "{p2p} 00:10.0 00:11.0 --engine iommufd --size 64K --src-offset 1M --dst-offset 2M --seed 33 --json; \
                 {p2p} 00:10.0 00:11.0 --engine dma --via 00:11.0 --size 4K; echo \"## via rc=$?\"; \
                 {p2p} 00:10.0 00:11.0 --engine rdma; echo \"## rdma rc=$?\""
            ));
    let r = &json_lines(&out.output)[0];
    // --engine iommufd is the old spelling of --engine dma; the JSON keeps its old key.
    assert_eq!(r["engine"], "dma", "{r}");
    assert_eq!(r["path"], "dma", "{r}");
    assert_eq!(r["importer"], "iommufd", "{r}");
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(r["iommu_faults"], 0, "a healthy copy faults nowhere: {r}");
    assert_eq!(r["bytes"], 65536);
    assert!(
        r["via"].as_str().unwrap().starts_with("0000:00:12.0"),
        "{r}"
    );
    // The proof: peer to peer, each engine hop's verdict, and the two IOAS mappings.
    assert_eq!(r["route"]["peer_to_peer"], true, "{r}");
    assert_eq!(
        r["route"]["engine_hops"].as_array().unwrap().len(),
        2,
        "{r}"
    );
    let maps = r["route"]["ioas_mappings"].as_array().unwrap();
    assert_eq!(maps.len(), 2, "{r}");
    assert_eq!(maps[1]["side"], "dst");
    assert_eq!(maps[1]["offset"], 2u64 << 20);
    assert_eq!(maps[1]["length"], 65536);
    eprintln!("iommufd engine (edu): 64 KiB in {:.2} s", r["seconds"]);
    // The host finds the 64 KiB at 2 MiB in ivshmem1's file, and nothing around it: the
    // bytes moved device to device, written by edu's DMA through the vIOMMU.
    let b = std::fs::read(out.backing_file("ivshmem1").unwrap()).unwrap();
    let at = 2 << 20;
    assert_eq!(pattern::first_mismatch(33, 0, &b[at..at + 65536]), None);
    assert!(b[at - 4096..at].iter().all(|&x| x == 0));
    assert!(b[at + 65536..at + 65536 + 4096].iter().all(|&x| x == 0));
    assert!(
        out.output.contains("also SRC or DST") && out.output.contains("## via rc=2"),
        "{}",
        out.output
    );
    // Between two local devices the RDMA path is an explained error: it writes into a
    // peer's memory (rdma://), or this p2pcopy was built without it.
    assert!(
        (out.output.contains("writes into another host's")
            || out.output.contains("built without RDMA support"))
            && out.output.contains("## rdma rc=2"),
        "{}",
        out.output
    );
}

#[test]
fn iommufd_engine_on_the_stock_kernel_is_an_explained_error() {
    let tb = testbed(KernelChoice::Stock);
    let p2p = workspace_bin("p2pcopy").display().to_string();
    let out = run_sh(
        &tb,
        &format!(
            "{p2p} 00:10.0 00:11.0 --engine iommufd --size 4K; echo \"## rc=$?\"; \
                 {p2p} 00:10.0 00:11.0 --size 1M --json"
        ),
    );
    assert!(out.output.contains("## rc=3"), "{}", out.output);
    assert!(out.output.contains("CONFIG_IOMMUFD"), "{}", out.output);
    // The cpu engine still works on the stock kernel (group/container path).
    let r = &json_lines(&out.output)[0];
    assert_eq!(r["verified"], true, "{r}");
    assert!(
        r["engine_reason"]
            .as_str()
            .unwrap()
            .contains("DMA path is unavailable"),
        "{r}"
    );
}

/// Two functions of one multifunction slot share an IOMMU group: p2pcopy opens both
/// (and a DMA engine beside them) through one iommufd on the cdev path and through one
/// group fd on the group path; `peerdma doctor EXPORTER GPU` checks the GPU as the DRM
/// importer it is, on its own driver.
#[test]
fn two_functions_of_one_iommu_group_copy_and_doctor_knows_the_importer() {
    let tb = testbed_with(
        KernelChoice::Reference,
        "ivshmem,ivshmem,edu,gpu-noblob",
        peerdma_testbed::devices::Topology::Multifunction,
        true,
    );
    let p2p = workspace_bin("p2pcopy").display().to_string();
    let peerdma = workspace_bin("peerdma").display().to_string();
    let d = "/sys/bus/pci/devices";
    let out = run_sh(
        &tb,
        &format!(
            "echo \"## groups $(readlink {d}/0000:00:10.0/iommu_group) $(readlink {d}/0000:00:10.1/iommu_group)\"; \
             {p2p} 00:10.0 00:10.1 --engine cpu --access cdev --size 1M --seed 31 --json; echo \"## cdev rc=$?\"; \
             {p2p} 00:10.1 00:10.0 --engine cpu --access group --size 1M --seed 32 --json; echo \"## group rc=$?\"; \
             {p2p} 00:10.0 00:10.1 --engine dma --via 00:12.0 --size 64K --seed 33 --json; echo \"## dma rc=$?\"; \
             {peerdma} doctor 00:10.0 00:13.0 --json; echo \"## doctor rc=$?\"; \
             {peerdma} export 00:12.0 --bar 0 --range 0:4K --hold > /run/hold 2>&1 & H=$!; \
             for i in $(seq 300); do grep -q holding /run/hold && break; sleep 0.1; done; \
             grep -q holding /run/hold || {{ echo '## timed out: the holder never said holding'; exit 97; }}; \
             {p2p} 00:10.0 00:10.1 --engine dma --via 00:12.0 --size 4K; echo \"## held rc=$?\"; \
             kill $H; wait $H; true"
        ),
    );
    let o = &out.output;
    let groups = o
        .split("## groups ")
        .nth(1)
        .and_then(|r| r.lines().next())
        .expect("group links");
    let (a, b) = groups.split_once(' ').expect("two links");
    assert!(
        !a.is_empty() && a.rsplit('/').next() == b.rsplit('/').next(),
        "the two functions share one IOMMU group: {groups}"
    );
    for name in ["cdev", "group", "dma"] {
        assert_eq!(marked_rc(o, name), 0, "{name}:\n{o}");
    }
    let r = json_lines(o);
    let copies: Vec<_> = r.iter().filter(|j| j.get("verified").is_some()).collect();
    assert_eq!(copies.len(), 3, "{o}");
    for (c, engine) in copies.iter().zip(["cpu", "cpu", "dma"]) {
        assert_eq!(c["verified"], true, "{c}");
        assert_eq!(c["engine"], engine, "{c}");
    }
    // The group-path copy wrote seed 32's pattern into ivshmem0 (00:10.0); the DMA copy
    // then filled its first 64 KiB (the source) with seed 33's and wrote them into
    // ivshmem1's.
    let a = std::fs::read(out.backing_file("ivshmem0").unwrap()).unwrap();
    assert_eq!(pattern::first_mismatch(33, 0, &a[..64 << 10]), None);
    assert_eq!(
        pattern::first_mismatch(32, 64 << 10, &a[64 << 10..1 << 20]),
        None
    );
    let b = std::fs::read(out.backing_file("ivshmem1").unwrap()).unwrap();
    assert_eq!(pattern::first_mismatch(33, 0, &b[..64 << 10]), None);
    // doctor: the GPU (virtio-gpu on virtio-pci) is an importer, not a device to rebind.
    let doctor = r
        .iter()
        .find(|j| j.get("checks").is_some())
        .expect("doctor's JSON");
    let check = |section: &str, name: &str| {
        doctor["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["section"] == section && c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {section}/{name} in {doctor}"))
    };
    let gpu = check("device 0000:00:13.0", "driver");
    assert_eq!(gpu["status"], "pass", "{gpu}");
    assert!(gpu["detail"].as_str().unwrap().contains("DRM"), "{gpu}");
    assert!(!gpu.to_string().contains("driver_override"), "{gpu}");
    let exporter = check("device 0000:00:10.0", "driver");
    assert_eq!(exporter["status"], "pass", "{exporter}");
    // A --via engine held by another process: the error is said once, not twice in a line.
    assert_eq!(marked_rc(o, "held"), 3, "{o}");
    let held = o
        .lines()
        .find(|l| l.starts_with("p2pcopy: error:") && l.contains("in use"))
        .unwrap_or_else(|| panic!("the held engine's error:\n{o}"));
    assert_eq!(held.matches("is in use").count(), 1, "{held}");
    assert_eq!(
        held.matches("0000:00:12.0").count(),
        1,
        "the BDF once: {held}"
    );
    // Under -cpu max the root bus is blocked for a DRM importer: doctor says so as a failure.
    let path = check("paths", "0000:00:10.0 → 0000:00:13.0");
    assert_eq!(path["status"], "fail", "{path}");
}
