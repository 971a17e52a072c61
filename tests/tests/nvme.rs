//! The NVMe engine in the testbed (reference kernel): the host seeds the NVMe image, the
//! guest moves 64 MiB NVMe → ivshmem BAR and BAR → NVMe with p2pcopy (the controller
//! DMAs straight into and out of the BAR), and the host compares the backing files after
//! the VM is gone; the same behind a PCIe switch; a revoke mid-stream and bad input are
//! clear errors that leave nothing behind.
//!
//! Every wait is bounded: each NVMe command by the driver's command timeout (10 s), the
//! controller's enable/disable by CAP.TO, the whole run by the testbed's timeout.

mod common;

use common::*;
use peerdma_testbed::devices::Topology;
use peerdma_testbed::image::{ImageSeed, ImageSource};
use peerdma_testbed::kernel::KernelChoice;
use peerdma_testbed::pattern;
use peerdma_testbed::vm::{RunOutcome, Testbed, VmOptions};

const MIB: usize = 1 << 20;
/// The seed the host fills the NVMe image with.
const IMAGE_SEED: u64 = 5;

fn nvme_testbed(topology: Topology) -> Testbed {
    nvme_testbed_with(topology, "ivshmem,ivshmem,nvme")
}

fn nvme_testbed_with(topology: Topology, devices: &str) -> Testbed {
    Testbed::new(nvme_options(topology, devices)).expect("the testbed resolves its kernel and QEMU")
}

/// `devices` on `topology`, the reference kernel, nvme0's image seeded by the host.
fn nvme_options(topology: Topology, devices: &str) -> VmOptions {
    VmOptions {
        devices: devices.parse().unwrap(),
        topology,
        nvme_images: vec![ImageSeed {
            role: "nvme0".into(),
            source: ImageSource::Pattern(IMAGE_SEED),
        }],
        ..options(KernelChoice::Reference)
    }
}

/// A shell prelude that finds each role's BDF in the guest's testbed.json (the switch
/// topology puts the devices on other buses), as `$N` (nvme0), `$A`, `$B` (ivshmem0/1).
fn prelude() -> String {
    let p2p = workspace_bin("p2pcopy").display().to_string();
    format!(
        "P={p2p}; bdf() {{ grep -A2 \"\\\"role\\\": \\\"$1\\\"\" /run/peerdma/testbed.json | \
         sed -n 's/.*\"bdf\": \"\\(.*\\)\".*/\\1/p'; }}; N=$(bdf nvme0); A=$(bdf ivshmem0); \
         B=$(bdf ivshmem1); echo \"## bdfs $N $A $B\"; "
    )
}

/// Reads 64 MiB NVMe → B's BAR (SGL data pointers) and writes A's BAR → NVMe at 64 MiB
/// (PRP lists), then checks on the host: B's backing file holds the image's first 64 MiB, the image's second 64 MiB holds
/// what A's BAR held (p2pcopy's pattern for seed 77).
fn read_and_write_64m(topology: Topology) {
    let tb = nvme_testbed(topology);
    let out = run_sh(
        &tb,
        &format!(
            "{}$P nvme:$N $B --size 64M --json; echo \"## read rc=$?\"; \
             $P $A nvme:$N@131072 --size 64M --seed 77 --data-pointer prp --json; \
             echo \"## write rc=$?\"",
            prelude()
        ),
    );
    assert_eq!(marked_rc(&out.output, "read"), 0, "{}", out.output);
    assert_eq!(marked_rc(&out.output, "write"), 0, "{}", out.output);
    let r = json_lines(&out.output);
    assert_eq!(r.len(), 2, "{}", out.output);
    // QEMU's controller offers SGLs: the read uses them (auto), the write asks for PRPs.
    for ((rep, path), dptr) in r
        .iter()
        .zip(["nvme-read", "nvme-write"])
        .zip(["sgl", "prp"])
    {
        assert_eq!(rep["path"], path, "{rep}");
        assert_eq!(rep["data_pointer"], dptr, "{rep}");
        assert_eq!(rep["verified"], true, "{rep}");
        assert_eq!(rep["bytes"], 64 * MIB, "{rep}");
        assert!(rep["iops"].as_f64().unwrap() > 0.0, "{rep}");
        assert!(rep["latency"]["p99_us"].as_f64().unwrap() > 0.0, "{rep}");
        eprintln!(
            "{topology:?} {path} 64 MiB: {:.3} GB/s, {:.0} IOPS, QD {}, {} B/command, p50 {:.0} µs",
            rep["gbps"].as_f64().unwrap(),
            rep["iops"].as_f64().unwrap(),
            rep["queue_depth"],
            rep["transfer_size"],
            rep["latency"]["p50_us"].as_f64().unwrap()
        );
    }
    assert_eq!(r[0]["dst"]["kind"], "bar");
    assert_eq!(r[1]["src"]["kind"], "bar");
    // The BAR side names the offset into its BAR (the human summary prints it too).
    assert_eq!(r[0]["dst"]["offset"], 0, "{}", r[0]);
    assert_eq!(r[1]["src"]["offset"], 0, "{}", r[1]);
    for rep in &r {
        assert_eq!(rep["route"]["peer_to_peer"], true, "{rep}");
        assert_eq!(
            rep["route"]["ioas_mappings"][0]["length"],
            64 * MIB,
            "{rep}"
        );
    }
    check_host_files(&out);
}

fn check_host_files(out: &RunOutcome) {
    let image = std::fs::read(out.backing_file("nvme0").unwrap()).unwrap();
    let b = std::fs::read(out.backing_file("ivshmem1").unwrap()).unwrap();
    let a = std::fs::read(out.backing_file("ivshmem0").unwrap()).unwrap();
    assert_eq!(image.len(), 128 * MIB);
    assert!(
        b[..64 * MIB] == image[..64 * MIB],
        "ivshmem1's BAR does not hold the image's first 64 MiB"
    );
    assert_eq!(
        pattern::first_mismatch(IMAGE_SEED, 0, &b[..64 * MIB]),
        None,
        "ivshmem1 holds the host's seeded pattern"
    );
    assert!(
        image[64 * MIB..] == a[..64 * MIB],
        "the image's second 64 MiB is not what ivshmem0's BAR held"
    );
    assert_eq!(pattern::first_mismatch(77, 0, &image[64 * MIB..]), None);
}

#[test]
fn nvme_reads_64m_into_a_bar_and_writes_64m_from_one_and_the_host_finds_the_bytes() {
    read_and_write_64m(Topology::Root);
}

#[test]
fn the_same_behind_a_pcie_switch() {
    read_and_write_64m(Topology::Switch);
}

/// One boot serves the revoke and bad-input test and the small-queue test: a controller
/// whose namespace is formatted with metadata (nvme-md0) beside nvme0, both with small
/// queues (CAP.MQES 15). The small-queue check reads into host memory only (no backing
/// file the other test looks at changes) and runs first; every copy of the revoke test
/// names its queue depth or fails before its first I/O command.
fn small_queue_boot() -> &'static SharedBoot {
    static BOOT: SharedCell = SharedCell::new();
    shared_boot(&BOOT, || {
        let opts = nvme_options(Topology::Root, "ivshmem,ivshmem,nvme,nvme-md");
        // The two tests' bounds of one boot each, together.
        let tb = Testbed::new(VmOptions {
            nvme_mqes: Some(15),
            timeout: opts.timeout * 2,
            ..opts
        })
        .expect("the testbed resolves its kernel and QEMU");
        let guest = workspace_bin("peerdma-guest-nvme").display().to_string();
        let checks = [
            (
                "small-queues",
                "$P nvme:$N host --size 1M --json; echo \"## default rc=$?\"; \
                 $P nvme:$N host --size 1M --queue-depth 32; echo \"## deep rc=$?\"; \
                 $P nvme:$N host --size 1M --transfer-size 700 --json; echo \"## odd rc=$?\"; \
                 $P nvme:$N host --size 1M --transfer-size 100 --json; echo \"## tiny rc=$?\""
                    .to_string(),
            ),
            (
                "revoke-and-bad-input",
                format!(
                    "M=$(bdf nvme-md0); \
             $P nvme:$M $A --size 64K --data-pointer prp --json; echo \"## metadata rc=$?\"; \
             $P $A nvme:$M --size 64K; echo \"## metadata-write rc=$?\"; \
             $P nvme:$N $B --size 64M --queue-depth 4 --test-revoke-after-bytes 8M --json; \
             echo \"## revoke rc=$?\"; \
             $P nvme:$A $B --size 1M; echo \"## notnvme rc=$?\"; \
             $P nvme:$N@262000 $B --size 1M; echo \"## range rc=$?\"; \
             $P nvme:$N $B --size 1000; echo \"## block rc=$?\"; \
             $P nvme:$N@262144 $B; echo \"## atend rc=$?\"; \
             $P nvme:$N $B --dst-offset 64M; echo \"## baratend rc=$?\"; \
             {guest} nvme0 ivshmem1 {IMAGE_SEED}"
                ),
            ),
        ];
        SharedBoot::run(
            &tb,
            &checks_script(&prelude(), &checks),
            &["ivshmem0", "ivshmem1", "nvme0", "nvme-md0"],
        )
    })
}

/// The revoke reads 64 MiB and is revoked after 8 MiB: the blocks past the acknowledged
/// bytes and the commands in flight (up to 55.5 MiB when it lands at 8 MiB) are checked.
#[test]
fn a_revoke_mid_stream_and_bad_input_are_clear_errors_that_leave_nothing_behind() {
    let boot = small_queue_boot();
    let o = boot.check("revoke-and-bad-input");
    // A namespace formatted with metadata (512 + 8 bytes inline): refused in both
    // directions before any I/O command (exit 3, could not run), naming the format and
    // the fix; the BAR was never written (A's backing file is still all zero: nothing
    // else writes A) and the drive's image neither.
    for name in ["metadata", "metadata-write"] {
        assert_eq!(marked_rc(o, name), 3, "{name}: {o}");
    }
    let lines = json_lines(o);
    let md = lines[0]["error"]["message"].to_string();
    for expect in [
        "namespace 1 is formatted with metadata: LBA format 1 has 512-byte blocks plus 8 \
         bytes of metadata each, inline at the end of each block",
        "format the namespace with LBA format 0 (512-byte blocks, no metadata",
    ] {
        assert!(
            md.contains(expect) || lines[0]["error"]["fix"].to_string().contains(expect),
            "{expect:?} not in {}",
            lines[0]
        );
    }
    assert_eq!(lines[0]["error"]["kind"], "nvme_metadata", "{}", lines[0]);
    let a = boot.file("ivshmem0");
    assert!(
        a.iter().all(|&b| b == 0),
        "the refused copy wrote into the BAR"
    );
    let md_image = boot.file("nvme-md0");
    assert!(
        md_image.iter().all(|&b| b == 0),
        "the refused copy wrote to the namespace"
    );
    // The revoke: exit 3 with the error, the controller reset and answering again.
    assert_eq!(marked_rc(o, "revoke"), 3, "{o}");
    assert_eq!(lines[1]["error"]["kind"], "revoked", "{}", lines[1]);
    let err = lines[1]["error"]["message"]
        .as_str()
        .expect("the JSON error line");
    assert!(err.contains("revoked during the copy"), "{err}");
    assert!(
        err.contains("the controller was reset and a read after the reset succeeded"),
        "{err}"
    );
    // "after 0x... of 0x4000000 bytes": nothing past the acknowledged bytes and the
    // commands that could be in flight (queue depth 4 × 128 KiB) may hold the image's
    // bytes: those blocks still hold this run's poison.
    let done = err
        .split("after 0x")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|h| usize::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| panic!("no byte count in {err}"));
    let window = 4 * 128 * 1024;
    assert!(
        err.contains("of 0x4000000 bytes"),
        "the revoke is of the 64 MiB read: {err}"
    );
    let from = (done + window).div_ceil(4096) * 4096;
    assert!(
        from < 64 * MIB,
        "the revoke came too late to check anything (done {done:#x})"
    );
    let image = boot.file("nvme0");
    let b = boot.file("ivshmem1");
    let landed: Vec<usize> = (from..64 * MIB)
        .step_by(4096)
        .filter(|&o| b[o..o + 4096] == image[o..o + 4096])
        .collect();
    assert!(
        landed.is_empty(),
        "{} block(s) landed in the BAR after the revoke, the first at {:#x}",
        landed.len(),
        landed[0]
    );
    // Bad input from the command line: non-zero exit, the reason, no signal.
    for (name, expect) in [
        ("notnvme", "is not an NVMe controller"),
        ("range", "reaches past its 262144 blocks"),
        ("block", "is not a multiple of the 512-byte block size"),
        // No --size and nothing past the start: the start is named, not "--size is 0".
        (
            "atend",
            "nothing to copy: LBA 0x40000 is at or past the end of",
        ),
        (
            "baratend",
            "nothing to copy: the destination offset 0x4000000 is at or past the end of",
        ),
    ] {
        let rc = marked_rc(o, name);
        assert!(rc == 3, "{name}: rc {rc}\n{o}");
        assert!(o.contains(expect), "{name}: {expect:?} not in\n{o}");
    }
    // In one process: each case fails with its reason, twice, and the fd and mapping
    // counts after the second round equal the first's; the controller still works.
    let leak = lines.last().unwrap();
    assert_eq!(leak["fds_before"], leak["fds_after"], "fds leaked: {leak}");
    assert_eq!(
        leak["maps_before"], leak["maps_after"],
        "mappings leaked: {leak}"
    );
    let cases = leak["cases"].as_array().unwrap();
    let expect = [
        "reaches past its 262144 blocks",
        "is not a multiple of the 512-byte block size",
        "is not an NVMe controller",
        "namespace 2 is not active",
        "a read after the reset succeeded",
    ];
    assert_eq!(cases.len(), expect.len());
    for (c, e) in cases.iter().zip(expect) {
        let msg = c["error"]
            .as_str()
            .unwrap_or_else(|| panic!("case did not fail: {c}"));
        assert!(msg.contains(e), "case {}: {e:?} not in {msg}", c["case"]);
        assert!(!msg.contains("--"), "a library error names a flag: {msg}");
    }
    assert_eq!(leak["after"]["verified"], true, "{leak}");
    assert!(
        leak["after"]["route"].is_null(),
        "host memory is no P2P route: {leak}"
    );
    // A command that never reaches the controller: the timeout names it, the queue and
    // the bound, comes within it, and the same engine then reads the image.
    let t = &leak["timeout"];
    let msg = t["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no timeout: {t}"));
    assert!(
        msg.contains(
            "Read (cid 0, LBA 0x0 + 256 blocks) on I/O queue 1 did not complete within 1s"
        ),
        "{msg}"
    );
    let waited = t["waited_s"].as_f64().unwrap();
    assert!((1.0..10.0).contains(&waited), "waited {waited} s");
    assert_eq!(t["after_matches_image"], true, "{t}");
}

#[test]
fn the_stock_kernel_has_no_iommufd_and_the_nvme_engine_says_so() {
    let tb = Testbed::new(VmOptions {
        devices: "ivshmem,ivshmem,nvme".parse().unwrap(),
        ..options(KernelChoice::Stock)
    })
    .expect("the testbed resolves its kernel and QEMU");
    let out = run_sh(
        &tb,
        &format!(
            "{}$P nvme:$N $B --size 1M; echo \"## stock rc=$?\"",
            prelude()
        ),
    );
    assert_eq!(marked_rc(&out.output, "stock"), 3, "{}", out.output);
    assert!(
        out.output
            .contains("the nvme path is unavailable: /dev/iommu does not exist")
            && out.output.contains("CONFIG_IOMMUFD"),
        "{}",
        out.output
    );
}

/// A controller with small queues (CAP.MQES 15: 16 entries) runs the default depth
/// lowered to 15, refuses a depth asked for past it by name, and a transfer size that is
/// no whole number of blocks is said to be rounded, with the block size.
#[test]
fn a_small_cap_mqes_lowers_the_default_depth_and_odd_transfer_sizes_are_explained() {
    let o = small_queue_boot().check("small-queues");
    for name in ["default", "odd", "tiny"] {
        assert_eq!(marked_rc(o, name), 0, "{name}:\n{o}");
    }
    let r = json_lines(o);
    let reports: Vec<_> = r
        .iter()
        .filter(|j| j.get("queue_depth").is_some())
        .collect();
    assert_eq!(reports.len(), 3, "{o}");
    assert_eq!(reports[0]["queue_depth"], 15, "{}", reports[0]);
    assert_eq!(reports[0]["verified"], true, "{}", reports[0]);
    assert_eq!(marked_rc(o, "deep"), 3, "could not run: {o}");
    let deep = o.split("## default rc=").nth(1).unwrap();
    let deep = deep.split("## deep rc=").next().unwrap();
    assert!(
        deep.contains("CAP.MQES 15") && deep.contains("16 entries") && deep.contains("1 to 15"),
        "{deep}"
    );
    for (rep, size, why) in [
        (reports[1], 512, "rounded down to whole 512-byte blocks"),
        (reports[2], 512, "raised to one 512-byte block"),
    ] {
        assert_eq!(rep["transfer_size"], size, "{rep}");
        assert!(rep.to_string().contains(why), "{why}: {rep}");
        assert!(!rep.to_string().contains("MDTS"), "{rep}");
    }
}
