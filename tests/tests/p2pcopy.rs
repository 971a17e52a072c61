//! p2pcopy in the testbed: cpu-engine copies verified in the guest and on the host,
//! bad input, revoke mid-copy, and nothing leaked.

mod common;

use common::*;
use peerdma_testbed::kernel::KernelChoice;
use peerdma_testbed::pattern;

/// Two boots of the default devices on the reference kernel serve the five tests below
/// that need nothing else. Each boot runs its tests' checks one after the other, in an
/// order where no check writes where a later test's host-side assertion looks: the
/// first boot's copies write disjoint ranges and the refused copies run last (their
/// test finds every byte of both BARs as the copies before them left it); in the
/// second the revoked copy runs before the 64 MiB copy that overwrites both BARs.
fn first_boot() -> &'static SharedBoot {
    static BOOT: SharedCell = SharedCell::new();
    shared_boot(&BOOT, || {
        let tb = shared_testbed(3);
        let checks = [
            ("iommufd", iommufd_engine()),
            ("seeds", seeds()),
            ("bad-input", bad_input()),
        ];
        SharedBoot::run(&tb, &checks_script("", &checks), &["ivshmem0", "ivshmem1"])
    })
}

/// The second boot: see [`first_boot`].
fn second_boot() -> &'static SharedBoot {
    static BOOT: SharedCell = SharedCell::new();
    shared_boot(&BOOT, || {
        let tb = shared_testbed(2);
        let checks = [("revoke", revoke()), ("cpu", cpu_engine())];
        SharedBoot::run(&tb, &checks_script("", &checks), &["ivshmem0", "ivshmem1"])
    })
}

/// The default testbed on the reference kernel for a boot that serves `tests` tests:
/// their bounds of one boot each, together.
fn shared_testbed(tests: u32) -> peerdma_testbed::vm::Testbed {
    let opts = options(KernelChoice::Reference);
    peerdma_testbed::vm::Testbed::new(peerdma_testbed::vm::VmOptions {
        timeout: opts.timeout * tests,
        ..opts
    })
    .expect("the testbed resolves its kernel and QEMU")
}

fn p2pcopy() -> String {
    workspace_bin("p2pcopy").display().to_string()
}

fn cpu_engine() -> String {
    let p2p = p2pcopy();
    format!(
        "set -e; {p2p} 00:10.0 00:11.0 --engine cpu --size 1M --dst-offset 8M --seed 11 --json; \
         {p2p} 00:10.0 00:11.0 --engine cpu --size 64M --seed 22 --json"
    )
}

#[test]
fn cpu_engine_copies_1m_and_64m_and_the_host_finds_the_pattern() {
    let o = second_boot().check("cpu");
    let r = json_lines(o);
    assert_eq!(r.len(), 2, "{o}");
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
    let b = second_boot().file("ivshmem1");
    assert_eq!(pattern::first_mismatch(22, 0, b), None);
    let a = second_boot().file("ivshmem0");
    assert_eq!(
        pattern::first_mismatch(22, 0, a),
        None,
        "the source holds the pattern too"
    );
}

/// The bad-input cases: the arguments and what the error must say.
const BAD_INPUT: [(&str, &str); 10] = [
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

fn bad_input() -> String {
    let p2p = p2pcopy();
    BAD_INPUT
        .iter()
        .map(|(args, _)| {
            format!("echo '## {args}'; {p2p} {args} --engine cpu; echo \"## rc=$?\"; ")
        })
        .collect()
}

#[test]
fn bad_input_is_refused_with_a_clear_error_and_nonzero_exit() {
    let o = first_boot().check("bad-input");
    for (args, expect) in BAD_INPUT {
        let body = o
            .split(&format!("## {args}\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("no output for {args}:\n{o}"));
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
    // Every case failed its checks before the first write: both BARs hold what the
    // copies before them in this boot left (a pattern fill or poison would have
    // changed some byte): zero outside those copies' ranges, and in them the bytes
    // that the copies' own tests check.
    let (a, b) = (first_boot().file("ivshmem0"), first_boot().file("ivshmem1"));
    let copied = |file: &[u8], ranges: &[std::ops::Range<usize>]| {
        file.iter()
            .enumerate()
            .filter(|(i, &x)| x != 0 && !ranges.iter().any(|r| r.contains(i)))
            .map(|(i, _)| i)
            .next()
    };
    // ivshmem0: the sources of the seeds check (0, 64 KiB) and of the iommufd check
    // (1 MiB, 64 KiB); ivshmem1: their destinations (0 and 2 MiB).
    const K64: usize = 64 << 10;
    assert_eq!(
        copied(a, &[0..K64, 1 << 20..(1 << 20) + K64]),
        None,
        "a refused copy wrote into ivshmem0's BAR (first nonzero byte)"
    );
    assert_eq!(
        copied(b, &[0..K64, 2 << 20..(2 << 20) + K64]),
        None,
        "a refused copy wrote into ivshmem1's BAR (first nonzero byte)"
    );
    assert!(
        a[..K64] == b[..K64] && a[1 << 20..(1 << 20) + K64] == b[2 << 20..(2 << 20) + K64],
        "a refused copy overwrote what an earlier copy of this boot left"
    );
    let seeds: Vec<u64> = json_lines(first_boot().check("seeds"))
        .iter()
        .map(|j| j["seed"].as_u64().unwrap())
        .collect();
    assert_eq!(pattern::first_mismatch(seeds[1], 0, &b[..K64]), None);
    assert_eq!(
        pattern::first_mismatch(33, 0, &b[2 << 20..(2 << 20) + K64]),
        None
    );
}

fn seeds() -> String {
    let p2p = p2pcopy();
    format!(
        "set -e; {p2p} 00:10.0 00:11.0 --engine cpu --size 64K --json; \
         {p2p} 00:10.0 00:11.0 --engine cpu --size 64K --json"
    )
}

#[test]
fn each_run_has_its_own_seed_and_poisons_the_destination_first() {
    let o = first_boot().check("seeds");
    let r = json_lines(o);
    assert_eq!(r.len(), 2, "{o}");
    let seeds: Vec<u64> = r.iter().map(|j| j["seed"].as_u64().unwrap()).collect();
    assert_ne!(
        seeds[0], seeds[1],
        "two runs used one seed: the second could pass on the first's bytes"
    );
    let b = first_boot().file("ivshmem1");
    assert_eq!(pattern::first_mismatch(seeds[1], 0, &b[..65536]), None);
}

fn revoke() -> String {
    let p2p = p2pcopy();
    let guest = workspace_bin("peerdma-guest-p2pcopy").display().to_string();
    format!(
        "{p2p} 00:10.0 00:11.0 --engine cpu --size 64M --chunk 256K --test-revoke-after-bytes 16M --json; \
         echo \"## rc=$?\"; {guest} ivshmem0 ivshmem1"
    )
}

#[test]
fn a_revoke_mid_copy_stops_cleanly_and_nothing_leaks() {
    let o = second_boot().check("revoke");
    let rc = marked_rc(o, "");
    assert_eq!(
        rc, 3,
        "a revoked copy must exit 3 (could not run), not die of SIGBUS:\n{o}"
    );
    let lines = json_lines(o);
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

fn iommufd_engine() -> String {
    let p2p = p2pcopy();
    format!(
        "{p2p} 00:10.0 00:11.0 --engine iommufd --size 64K --src-offset 1M --dst-offset 2M --seed 33 --json; \
         {p2p} 00:10.0 00:11.0 --engine dma --via 00:11.0 --size 4K; echo \"## via rc=$?\"; \
         {p2p} 00:10.0 00:11.0 --engine rdma; echo \"## rdma rc=$?\""
    )
}

#[test]
fn iommufd_engine_moves_64k_between_the_bars_through_their_dmabufs() {
    let o = first_boot().check("iommufd");
    let r = &json_lines(o)[0];
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
    let b = first_boot().file("ivshmem1");
    let at = 2 << 20;
    assert_eq!(pattern::first_mismatch(33, 0, &b[at..at + 65536]), None);
    assert!(b[at - 4096..at].iter().all(|&x| x == 0));
    assert!(b[at + 65536..at + 65536 + 4096].iter().all(|&x| x == 0));
    assert!(
        o.contains("also SRC or DST") && o.contains("## via rc=2"),
        "{o}"
    );
    // Between two local devices the RDMA path is an explained error: it writes into a
    // peer's memory (rdma://), or this p2pcopy was built without it.
    assert!(
        (o.contains("writes into another host's") || o.contains("built without RDMA support"))
            && o.contains("## rdma rc=2"),
        "{o}"
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
                 {p2p} --serve --engine nic --via 00:12.0 --listen 10.77.0.1:18521 00:10.0; \
                 echo \"## nic rc=$?\"; \
                 {p2p} 00:10.0 00:11.0 --size 1M --json"
        ),
    );
    assert!(out.output.contains("## rc=3"), "{}", out.output);
    // A NIC end needs iommufd too: said so, with the socket end as the way out (not
    // the DMA path's "use --engine cpu", which cannot serve UDP).
    assert_eq!(marked_rc(&out.output, "nic"), 3, "{}", out.output);
    let nic = out.output.split("## nic rc=").next().unwrap();
    let nic = nic.rsplit("## rc=").next().unwrap();
    assert!(
        nic.contains("has no /dev/iommu") && nic.contains("kernel socket"),
        "{nic}"
    );
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

/// `--engine dma --via` an Intel 82576 (QEMU `igb`): the NIC copies BAR → BAR in MAC
/// loopback, each UDP datagram's payload read from ivshmem0's BAR by its TX DMA and
/// written into ivshmem1's by its RX DMA (header split), with no IOMMU fault; the host
/// finds the 8 MiB in ivshmem1's backing file. Beside it edu moves 64 KiB, for the
/// throughput the NIC engine is compared with.
#[test]
fn dma_engine_via_an_igb_nic_copies_8m_bar_to_bar_in_loopback() {
    let tb = testbed_with(
        KernelChoice::Reference,
        "ivshmem:16M,ivshmem:16M,edu,igb",
        peerdma_testbed::devices::Topology::Root,
        true,
    );
    let p2p = p2pcopy();
    let out = run_sh(
        &tb,
        &format!(
            "set -e; {p2p} 00:10.0 00:11.0 --engine dma --via 01:00.0 --size 8M --seed 41 --json; \
             {p2p} 00:10.0 00:11.0 --engine dma --via 00:12.0 --size 64K --dst-offset 12M --seed 42 --json"
        ),
    );
    let lines = json_lines(&out.output);
    let (nic, edu) = (&lines[0], &lines[1]);
    for r in [nic, edu] {
        assert_eq!(r["verified"], true, "{r}");
        assert_eq!(r["iommu_faults"], 0, "{r}");
        assert_eq!(r["route"]["peer_to_peer"], true, "{r}");
    }
    assert_eq!(nic["bytes"], 8u64 << 20, "{nic}");
    assert!(
        nic["via"]
            .as_str()
            .unwrap()
            .starts_with("0000:01:00.0 (igb 0000:01:00.0)"),
        "{nic}"
    );
    let file = out.backing_file("ivshmem1").expect("ivshmem1 backing file");
    let b = std::fs::read(file).expect("reading the backing file");
    assert_eq!(pattern::first_mismatch(41, 0, &b[..8 << 20]), None);
    let rate =
        |r: &serde_json::Value| r["bytes"].as_f64().unwrap() / r["seconds"].as_f64().unwrap();
    eprintln!(
        "BAR → BAR: igb {:.2} MB/s, edu {:.3} MB/s ({:.0}×)",
        rate(nic) / 1e6,
        rate(edu) / 1e6,
        rate(nic) / rate(edu)
    );
}
