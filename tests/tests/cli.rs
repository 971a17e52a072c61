//! The `peerdma` command in the testbed: list, regions, export (--hold) + inspect from a
//! second process, path, and its errors; and on the host (no VM): help, man pages, the
//! list table, and p2pcopy's refusals of flags that do not apply.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::*;
use peerdma_testbed::devices::Topology;
use peerdma_testbed::kernel::KernelChoice;

/// Runs a workspace binary on the host in `cwd`.
fn host_run(bin: &str, args: &[&str], cwd: &std::path::Path) -> Output {
    Command::new(workspace_bin(bin))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("spawn")
}

/// An empty scratch directory, removed on drop.
struct Scratch(PathBuf);
impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("peerdma-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    fn is_empty(&self) -> bool {
        std::fs::read_dir(&self.0).unwrap().next().is_none()
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn help_shows_completions_and_man_and_man_alone_prints_the_page() {
    let dir = Scratch::new("man");
    let help = host_run("peerdma", &["--help"], &dir.0);
    let help = String::from_utf8_lossy(&help.stdout);
    for cmd in ["completions", "man"] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{cmd} "))),
            "peerdma --help does not list {cmd}:\n{help}"
        );
    }
    let p2p_help = host_run("p2pcopy", &["--help"], &dir.0);
    let p2p_help = String::from_utf8_lossy(&p2p_help.stdout);
    assert!(
        p2p_help.contains("--completions SHELL") && p2p_help.contains("--man"),
        "{p2p_help}"
    );
    // Without a directory the page goes to stdout and nothing is written to the cwd.
    for (bin, args, name) in [
        ("peerdma", &["man"][..], "peerdma"),
        ("p2pcopy", &["--man"][..], "p2pcopy"),
    ] {
        let out = host_run(bin, args, &dir.0);
        assert!(out.status.success(), "{bin} {args:?}: {out:?}");
        let page = String::from_utf8_lossy(&out.stdout);
        assert!(
            page.contains(&format!(".TH {name} 1")),
            "{bin} {args:?}:\n{page}"
        );
        assert!(
            dir.is_empty(),
            "{bin} {args:?} wrote into the current directory"
        );
    }
    // With one, the pages go there and their paths to stdout.
    let out = host_run("peerdma", &["man", "pages"], &dir.0);
    assert!(out.status.success(), "{out:?}");
    assert!(dir.0.join("pages/peerdma.1").exists() && dir.0.join("pages/peerdma-list.1").exists());
    assert!(String::from_utf8_lossy(&out.stdout).contains("peerdma-list.1"));
}

#[test]
fn p2pcopy_refuses_a_zero_chunk_and_flags_that_would_be_ignored_before_opening_anything() {
    let dir = Scratch::new("flags");
    // On the host these devices do not exist: an error that names the flag shows the
    // check came first.
    let out = host_run("p2pcopy", &["00:10.0", "00:11.0", "--chunk", "0"], &dir.0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("'0'") && err.contains("--chunk") && err.contains("1M"),
        "{err}"
    );
    for flag in [
        ["--queue-depth", "8"],
        ["--transfer-size", "64K"],
        ["--data-pointer", "sgl"],
    ] {
        let out = host_run("p2pcopy", &["00:10.0", "00:11.0", flag[0], flag[1]], &dir.0);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag:?}");
        assert!(
            err.contains(&format!("{} only applies to NVMe endpoints", flag[0])),
            "{flag:?}: {err}"
        );
    }
    // --via on a copy with an nvme: side: that controller is the engine, --via was ignored.
    let out = host_run(
        "p2pcopy",
        &["nvme:00:13.0", "00:11.0", "--via", "00:12.0"],
        &dir.0,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--via only applies to a copy between two BARs"),
        "{err}"
    );
    let out = host_run("p2pcopy", &["00:10.0", "00:11.0", "--qps", "2"], &dir.0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--qps only applies to") && err.contains("RDMA"),
        "{err}"
    );
    assert!(dir.is_empty());
}

/// One JSON object on stdout, parsed.
fn only_json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "not one JSON line on stdout: {text:?}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn every_failure_under_json_is_one_error_object_with_its_kind_fix_and_exit_status() {
    let dir = Scratch::new("contract");
    // (binary, arguments, exit status, error kind). On the host these devices do not
    // exist (could not run: 3); a command line that is wrong is usage (2), before
    // anything is opened.
    let cases: &[(&str, &[&str], i32, &str)] = &[
        (
            "peerdma",
            &["regions", "0e:00.0", "--json"],
            3,
            "no_such_device",
        ),
        (
            "peerdma",
            &["regions", "00:1f.8", "--json"],
            2,
            "invalid_value",
        ),
        (
            "peerdma",
            &["list", "--bogus", "--json"],
            2,
            "unknown_argument",
        ),
        (
            "peerdma",
            &[
                "export", "0e:00.0", "--bar", "BAR2", "--range", "0:4K", "--json",
            ],
            3,
            "no_such_device",
        ),
        (
            "peerdma",
            &[
                "export", "0e:00.0", "--bar", "BAR9", "--range", "0:4K", "--json",
            ],
            2,
            "invalid_value",
        ),
        (
            "peerdma",
            &["inspect", "/proc/self/fd/99999", "--json"],
            3,
            "io",
        ),
        (
            "peerdma",
            &["path", "0e:00.0", "0e:00.0", "--json"],
            3,
            "route_to_itself",
        ),
        (
            "p2pcopy",
            &["0e:00.0", "0f:00.0", "--json"],
            3,
            "no_such_device",
        ),
        (
            "p2pcopy",
            &["0e:00.0", "0f:00.0", "--verify", "--no-verify", "--json"],
            2,
            "conflicting_flags",
        ),
        (
            "p2pcopy",
            &["0e:00.0", "0f:00.0", "--no-verify", "--seed", "7", "--json"],
            2,
            "conflicting_flags",
        ),
        (
            "p2pcopy",
            &["--serve", "host", "--size", "1M", "--json"],
            2,
            "flag_not_applicable",
        ),
        (
            "p2pcopy",
            &["0e:00.0", "0f:00.0", "--queue-depth", "8", "--json"],
            2,
            "flag_not_applicable",
        ),
        (
            "p2pcopy",
            &["host", "0f:00.0", "--src-bar", "2", "--json"],
            2,
            "flag_not_applicable",
        ),
        (
            "p2pcopy",
            &["host", "host", "--json"],
            2,
            "unsupported_pair",
        ),
    ];
    for (bin, args, status, kind) in cases {
        let out = host_run(bin, args, &dir.0);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*status), "{bin} {args:?}: {stderr}");
        let j = only_json(&out);
        assert_eq!(j["error"]["kind"], *kind, "{bin} {args:?}: {j}");
        let message = j["error"]["message"].as_str().expect("a message");
        assert!(!message.is_empty() && !message.contains("fix:"), "{j}");
        assert!(
            j["error"].get("fix").is_some(),
            "fix is a key, null or not: {j}"
        );
        // In the user's words, each thing once.
        for rust in ["os error", "invalid digit", "Some(", "(p2pcopy:"] {
            assert!(
                !stderr.contains(rust),
                "{bin} {args:?}: {rust:?} in {stderr}"
            );
        }
        assert!(stderr.matches("fix:").count() <= 1, "{stderr}");
    }
    // What was asked stays in the error object: the sides of the copy.
    let out = host_run("p2pcopy", &["0e:00.0", "0f:00.0", "--json"], &dir.0);
    let j = only_json(&out);
    assert_eq!(j["src"], "0000:0e:00.0", "{j}");
    assert_eq!(j["dst"], "0000:0f:00.0", "{j}");
    // The text says the fix once, on its own line, and the BDF once.
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("0000:0e:00.0").count(), 1, "{err}");
    assert!(err.contains("\n  fix: "), "{err}");
    // The fix of a library error in the tool's flags, said once.
    let out = host_run(
        "p2pcopy",
        &["0e:00.0", "0f:00.0", "--iterations", "0", "--json"],
        &dir.0,
    );
    let j = only_json(&out);
    assert_eq!(j["error"]["kind"], "zero_iterations", "{j}");
    assert_eq!(j["error"]["fix"], "give --iterations 1 or more", "{j}");
    assert_eq!(out.status.code(), Some(2), "a zero count is usage: {j}");
    // Contradicting flags are named in the message.
    let out = host_run(
        "p2pcopy",
        &["0e:00.0", "0f:00.0", "--no-verify", "--seed", "7"],
        &dir.0,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--no-verify") && err.contains("--seed"),
        "{err}"
    );
    // A BAR is a number or BARn; anything else is said in words.
    let out = host_run(
        "peerdma",
        &["export", "0e:00.0", "--bar", "x", "--range", "0:4K"],
        &dir.0,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0 to 5 (or BAR0 to BAR5)"), "{err}");
    assert!(dir.is_empty());
}

#[test]
fn help_marks_what_is_not_built_and_pages_have_exit_status_examples_and_see_also() {
    let dir = Scratch::new("pages");
    // A command this build lacks says so in --help, with the install that has it.
    let help = host_run("peerdma", &["--help"], &dir.0);
    let help = String::from_utf8_lossy(&help.stdout);
    let show = help
        .lines()
        .find(|l| l.trim_start().starts_with("show "))
        .unwrap();
    assert!(
        !show.contains("not built")
            || show.contains("not built in: cargo install --path tools --features drm"),
        "{show}"
    );
    for (bin, args) in [("peerdma", &["man"][..]), ("p2pcopy", &["--man"])] {
        let out = host_run(bin, args, &dir.0);
        let page = String::from_utf8_lossy(&out.stdout);
        for section in [
            ".SH EXAMPLES",
            ".SH \"EXIT STATUS\"",
            ".SH \"SEE ALSO\"",
            ".SH VERSION\n.nf",
        ] {
            assert!(page.contains(section), "{bin}: {section} missing:\n{page}");
        }
        assert!(
            !page.contains("help(1)"),
            "{bin} names a page never written"
        );
    }
    let out = host_run("p2pcopy", &["--completions", "bash"], &dir.0);
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        !script.contains("test-revoke"),
        "test hooks offered: {script}"
    );
    assert!(dir.is_empty());
}

#[test]
fn the_list_table_fits_its_contents_and_no_bridge_is_bindable() {
    let dir = Scratch::new("list");
    let out = host_run("peerdma", &["list", "--json"], &dir.0);
    assert!(out.status.success(), "{out:?}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let devices = j["devices"].as_array().unwrap();
    for d in devices {
        if d["class"].as_str().unwrap().starts_with("06") && d["vfio"] != "bound" {
            assert_eq!(d["vfio"], "bridge", "{d}");
        }
    }
    let out = host_run("peerdma", &["list"], &dir.0);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let vfio_at = header.find("VFIO").unwrap();
    let bars_at = header.find("BARs").unwrap();
    for (line, d) in lines.take_while(|l| !l.is_empty()).zip(devices) {
        // Each row's VFIO cell starts under the header's, whatever its length
        // (no-iommu-group is the longest), and is followed by a space before the BARs.
        let vfio = d["vfio"].as_str().unwrap();
        assert_eq!(
            line.get(vfio_at..vfio_at + vfio.len()),
            Some(vfio),
            "{text}"
        );
        assert!(
            line.len() <= bars_at || line.as_bytes()[bars_at - 1] == b' ',
            "{text}"
        );
    }
}

#[test]
fn peerdma_lists_exports_and_inspects_on_the_reference_kernel() {
    // nvme0 (00:13.0) for the sysfs reset: the others have no reset method on the root bus.
    let tb = testbed_with(
        KernelChoice::Reference,
        "ivshmem,ivshmem,edu,nvme",
        Topology::Root,
        true,
    );
    let p = workspace_bin("peerdma").display().to_string();
    // `waitfor SECONDS CMD...`: polls CMD until it succeeds, or says what it waited for
    // and fails the script (exit 97) once SECONDS pass: each wait stands for the line
    // it waits for (the holder's report, its JSON event lines), never for time.
    let script = format!(
        "set -e
         waitfor() {{ n=$(($1 * 10)); shift; for i in $(seq $n); do \"$@\" 2>/dev/null && return 0; sleep 0.1; done; echo \"## timed out waiting for: $*\"; exit 97; }}
         has() {{ grep -q -- \"$2\" \"$1\"; }}
         after() {{ sed -n \"/$2/,\\$p\" \"$1\" | grep -q -- \"$3\"; }}
         {p} list --json
         {p} list
         {p} regions 00:10.0
         {p} regions 00:10.0 --json
         {p} regions 00:12.0 --access group --json
         {p} export 00:10.0 --bar 2 --range 0:2M --range 0x400000:64K --range 8M:4K --json
         {p} path 00:10.0 00:11.0 --json
         {p} export 00:11.0 --bar 2 --range 0:1M --hold --json > /run/tmp/hold.json 2>/run/tmp/hold.err &
         holder=$!
         waitfor 30 has /run/tmp/hold.json path
         cat /run/tmp/hold.json
         held=\"$(sed 's/.*\"path\":\"\\([^\"]*\\)\".*/\\1/' /run/tmp/hold.json)\"
         {p} inspect \"$held\" --json
         if {p} export 00:11.0 --bar 2 --range 0:4K 2>/run/tmp/busy.err; then exit 9; fi
         if {p} export 00:11.0 --bar 2 --range 0:4K --access group 2>>/run/tmp/busy.err; then exit 9; fi
         echo \"## busy\"; cat /run/tmp/busy.err; echo \"## end busy\"
         cfg=/sys/bus/pci/devices/0000:00:11.0/config
         dd if=$cfg of=/run/tmp/cmd bs=1 skip=4 count=2 2>/dev/null
         printf '\\000\\000' | dd of=$cfg bs=1 seek=4 count=2 conv=notrunc 2>/dev/null
         waitfor 30 has /run/tmp/hold.json '\"state\":\"revoked'
         {p} inspect \"$held\" --json
         dd if=/run/tmp/cmd of=$cfg bs=1 seek=4 count=2 conv=notrunc 2>/dev/null
         waitfor 30 after /run/tmp/hold.json '\"state\":\"revoked' '\"state\":\"live\"'
         kill -TERM $holder; wait $holder; echo \"## holder rc=$?\"
         tail -n +2 /run/tmp/hold.json
         cat /run/tmp/hold.err
         if {p} export 00:10.0 --bar 2 --range 0:5K; then exit 9; fi
         if {p} regions 00:1f.2; then exit 9; fi
         {p} export 00:13.0 --bar 0 --range 0:4K --hold --json > /run/tmp/hold2.json 2>/run/tmp/hold2.err &
         holder=$!
         waitfor 30 has /run/tmp/hold2.json path
         echo \"## reset method $(cat /sys/bus/pci/devices/0000:00:13.0/reset_method)\"
         echo 1 > /sys/bus/pci/devices/0000:00:13.0/reset
         waitfor 30 has /run/tmp/hold2.json '\"event\":\"config_blocked\"'
         kill -TERM $holder; wait $holder; echo \"## reset holder rc=$?\"
         tail -n +2 /run/tmp/hold2.json
         cat /run/tmp/hold2.err
         {p} export 00:10.0 --bar BAR2 --range 0:5K --json > /run/tmp/unaligned.json 2>/dev/null \
           && exit 9 || echo \"## unaligned rc=$?\"
         cat /run/tmp/unaligned.json"
    );
    let out = run_sh(&tb, &script);
    let j = json_lines(&out.output);
    assert!(j.len() >= 10, "{}", out.output);

    let devices = j[0]["devices"].as_array().unwrap();
    let ivshmem = devices.iter().find(|d| d["bdf"] == "0000:00:10.0").unwrap();
    assert_eq!(ivshmem["vendor"], "1af4");
    assert_eq!(ivshmem["driver"], "vfio-pci");
    assert_eq!(ivshmem["vfio"], "bound");
    let bar2 = ivshmem["bars"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["index"] == 2)
        .unwrap();
    assert_eq!(bar2["size"], 64u64 << 20);
    assert_eq!(bar2["prefetchable"], true);
    assert_eq!(bar2["64bit"], true);
    let ahci = devices.iter().find(|d| d["bdf"] == "0000:00:1f.2").unwrap();
    assert_eq!(ahci["vfio"], "bindable");
    // q35's host bridge (class 0600) and ISA bridge (0601) are bridges, never bindable.
    for bridge in ["0000:00:00.0", "0000:00:1f.0"] {
        let d = devices.iter().find(|d| d["bdf"] == bridge).unwrap();
        assert_eq!(d["vfio"], "bridge", "{d}");
    }
    // The human outputs: the list's VFIO column, regions in words (the JSON keeps its
    // values, below).
    assert!(
        out.output
            .lines()
            .any(|l| l.starts_with("0000:00:00.0 ") && l.contains(" bridge")),
        "{}",
        out.output
    );
    assert!(
        out.output.contains("(opened via cdev + iommufd)")
            && out.output.contains("dma-buf export: supported,"),
        "{}",
        out.output
    );

    assert_eq!(j[1]["access_path"], "cdev");
    assert_eq!(j[1]["dma_buf_export"], "supported");
    let regions = j[1]["regions"].as_array().unwrap();
    let r2 = regions.iter().find(|r| r["index"] == 2).unwrap();
    assert_eq!(r2["size"], 64u64 << 20);
    assert_eq!(r2["mmap"], true);
    assert_eq!(
        r2["offset"],
        2u64 << 40,
        "vfio-pci region offsets are index << 40"
    );
    assert_eq!(j[2]["access_path"], "group");

    assert_eq!(
        j[3]["size"],
        (2u64 << 20) + (64 << 10) + 4096,
        "size is the sum of the ranges"
    );
    assert_eq!(j[3]["exporter"], "vfio_pci_core");
    assert_eq!(j[3]["cloexec"], true);
    assert_eq!(j[3]["state"], "live");

    assert_eq!(
        j[4]["drm_rdma_import"], "refused",
        "QEMU's host bridge is on no allow-list"
    );

    // The held buffer, seen from another process through /proc/PID/fd/N.
    assert_eq!(j[5]["size"], 1u64 << 20);
    assert_eq!(j[6]["exporter"], "vfio_pci_core");
    assert_eq!(j[6]["size"], 1u64 << 20);
    assert_eq!(j[6]["inode"], j[5]["inode"]);
    // The kernel's own view of the buffers: live (the multi-range one too: iommufd's
    // refusal of more than one range comes after the kernel's revoke check).
    assert_eq!(j[3]["kernel_state"], "live", "{}", j[3]);
    assert_eq!(j[5]["kernel_state"], "live", "{}", j[5]);
    assert_eq!(j[6]["kernel_state"], "live", "{}", j[6]);
    // Another process turned decode off through sysfs: the device stops decoding, but
    // the kernel does not revoke the buffer (only VFIO's own paths do). inspect still
    // says live, and the holder names the difference.
    assert_eq!(j[7]["kernel_state"], "live", "{}", j[7]);
    let events = &j[8..];
    let off = events
        .iter()
        .position(|e| {
            e["state"]
                .as_str()
                .is_some_and(|s| s.starts_with("revoked"))
                && e["kernel_state"] == "live"
                && e["note"]
                    .as_str()
                    .is_some_and(|n| n.contains("outside VFIO"))
        })
        .unwrap_or_else(|| panic!("the holder did not report decode off: {events:?}"));
    assert!(
        events[off..]
            .iter()
            .any(|e| e["state"] == "live" && e["kernel_state"] == "live"),
        "the holder did not report decode back on: {events:?}"
    );
    // A second user of the held device (cdev, then group) is told who holds it.
    let busy = out
        .output
        .split("## busy")
        .nth(1)
        .and_then(|b| b.split("## end busy").next())
        .unwrap_or_else(|| panic!("no busy section:\n{}", out.output));
    let lines: Vec<&str> = busy.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(lines.len(), 2, "{busy}");
    for l in &lines {
        assert!(
            l.contains("0000:00:11.0 is in use: pid ")
                && l.contains("(peerdma) holds /dev/vfio/devices/vfio"),
            "{l}"
        );
    }
    assert!(
        lines[0].contains("VFIO_DEVICE_BIND_IOMMUFD of /dev/vfio/devices/vfio"),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("open of /dev/vfio/"), "{}", lines[1]);
    assert!(out.output.contains("## holder rc=0"), "{}", out.output);
    assert!(
        out.output.contains("releasing the buffer"),
        "{}",
        out.output
    );

    assert!(
        out.output.contains("not page aligned") && out.output.contains("EINVAL"),
        "{}",
        out.output
    );
    assert!(out.output.contains("not to vfio-pci"), "{}", out.output);

    // A reset through sysfs (nvme0 resets by FLR) under a held buffer: the kernel neither
    // revokes it nor lets config reads through until the reset is over, so the registers
    // look the same before and after; the holder names the read that the reset held up.
    assert!(out.output.contains("## reset method flr"), "{}", out.output);
    assert!(
        out.output.contains("## reset holder rc=0"),
        "{}",
        out.output
    );
    let blocked = j
        .iter()
        .find(|e| e["event"] == "config_blocked")
        .unwrap_or_else(|| panic!("the holder did not see the sysfs reset:\n{}", out.output));
    let ms = blocked["milliseconds"].as_f64().unwrap();
    // pcie_flr sleeps 100 ms with config access locked.
    assert!(
        ms >= 100.0,
        "an FLR blocks config reads for 100 ms at least: {blocked}"
    );
    assert!(
        blocked["note"].as_str().unwrap().contains("not revoked"),
        "{blocked}"
    );
    assert_eq!(
        j.iter().filter(|e| e["event"] == "config_blocked").count(),
        1,
        "only the reset held a read up (not the sysfs decode-off): {}",
        out.output
    );
    eprintln!("sysfs FLR under a held buffer: a register read waited {ms} ms");

    // A kernel rule broken under --json: one error object with the library's kind, the
    // errno by name and the fix, exit 3 (could not run); --bar takes BAR2.
    assert_eq!(marked_rc(&out.output, "unaligned"), 3, "{}", out.output);
    let e = j.last().unwrap();
    assert_eq!(e["error"]["kind"], "range_unaligned", "{e}");
    assert_eq!(e["errno"], "EINVAL", "{e}");
    assert_eq!(e["command"], "export", "{e}");
    assert!(e["error"]["fix"].is_string(), "{e}");
    assert!(
        !e["error"]["message"].as_str().unwrap().contains("fix:"),
        "{e}"
    );
}
