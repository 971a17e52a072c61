//! Shared helpers of the end-to-end suites: booting the testbed and finding the binaries
//! that run inside it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use peerdma_testbed::devices::{DeviceList, Topology};
use peerdma_testbed::kernel::KernelChoice;
use peerdma_testbed::vm::{RunOutcome, Testbed, VmOptions};

/// Options for a test boot: the default devices, a 240 s limit.
pub fn options(kernel: KernelChoice) -> VmOptions {
    VmOptions {
        kernel,
        timeout: Duration::from_secs(240),
        ..VmOptions::default()
    }
}

/// A testbed with `devices` and `topology` on `kernel`.
pub fn testbed_with(
    kernel: KernelChoice,
    devices: &str,
    topology: Topology,
    iommu: bool,
) -> Testbed {
    let devices: DeviceList = devices.parse().expect("device list");
    Testbed::new(VmOptions {
        devices,
        topology,
        iommu,
        ..options(kernel)
    })
    .expect("the testbed resolves its kernel and QEMU")
}

/// Two VMs on the reference kernel with `devices_a` and `devices_b` (each with a NIC),
/// their first NICs joined by a wire, captured when `pcap` (`peerdma_testbed::pair`).
pub fn pair(devices_a: &str, devices_b: &str, pcap: bool) -> peerdma_testbed::pair::Pair {
    let vm = |devices: &str| VmOptions {
        devices: devices.parse().expect("device list"),
        ..options(KernelChoice::Reference)
    };
    peerdma_testbed::pair::Pair::new(
        vm(devices_a),
        vm(devices_b),
        peerdma_testbed::pair::WireOptions { pcap, dir: None },
    )
    .expect("the pair resolves its kernel and QEMU")
}

/// The default testbed on `kernel`.
pub fn testbed(kernel: KernelChoice) -> Testbed {
    Testbed::new(options(kernel)).expect("the testbed resolves its kernel and QEMU")
}

/// Runs `argv` in the guest and panics (with the output) unless it exits 0.
pub fn run_ok(tb: &Testbed, argv: &[&str]) -> RunOutcome {
    let out = tb.run(argv).expect("the VM runs the command");
    assert_eq!(
        out.status,
        0,
        "{argv:?} failed in the guest with {}:\n{}\n(console: {})",
        out.status,
        out.output,
        out.console_log.display()
    );
    out
}

/// A binary of this workspace (built by `cargo build --workspace --bins`, which the
/// README's test command runs first), found beside the test executable's directory.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(|p| p.parent()).expect("target dir");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --workspace --bins` (tests/run-suite.sh does)",
        bin.display()
    );
    bin
}

/// Lines of the guest output that parse as JSON objects.
pub fn json_lines(output: &str) -> Vec<serde_json::Value> {
    output
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Runs a shell script in the guest and panics (with the output) unless it exits 0.
pub fn run_sh(tb: &Testbed, script: &str) -> RunOutcome {
    run_ok(tb, &["/bin/sh", "-c", script])
}

/// The exit status a script recorded with `echo "## NAME rc=$?"` (NAME may be empty:
/// `echo "## rc=$?"`); what follows the status on its line (`## NAME rc=3 4s`, the
/// seconds a check took) is not part of it.
pub fn marked_rc(output: &str, name: &str) -> i32 {
    let marker = if name.is_empty() {
        "## rc=".to_string()
    } else {
        format!("## {name} rc=")
    };
    output
        .split(&marker)
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .and_then(|line| line.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {marker:?} in the guest output:\n{output}"))
}

/// One boot that several tests of a suite share (they need the same devices and kernel):
/// the guest runs every test's check in one script, each in its own subshell (an `exit`
/// or `set -e` ends only that check) between `#### check NAME` markers with its exit
/// status; each test then asserts on its own check's output. The backing files the
/// tests read are copied out before the VM's scratch goes.
pub struct SharedBoot {
    /// The whole guest output.
    pub output: String,
    files: std::collections::BTreeMap<String, Vec<u8>>,
}

/// Where a suite keeps a shared boot: what it gave its tests, or why it failed.
pub type SharedCell<T = SharedBoot> = std::sync::OnceLock<Result<T, String>>;

impl SharedBoot {
    /// Runs `script` (from [`checks_script`]) on `tb`, which must exit 0, and keeps the
    /// backing files of `roles`.
    pub fn run(tb: &Testbed, script: &str, roles: &[&str]) -> SharedBoot {
        SharedBoot::keep(run_sh(tb, script), roles)
    }

    /// The output of `out` and the backing files of `roles`.
    pub fn keep(out: RunOutcome, roles: &[&str]) -> SharedBoot {
        let files = roles
            .iter()
            .map(|role| {
                let path = out
                    .backing_file(role)
                    .unwrap_or_else(|e| panic!("no backing file of {role}: {e}"));
                let bytes = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                (role.to_string(), bytes)
            })
            .collect();
        SharedBoot {
            output: out.output,
            files,
        }
    }

    /// The backing file of `role` as the VM left it.
    pub fn file(&self, role: &str) -> &[u8] {
        self.files
            .get(role)
            .unwrap_or_else(|| panic!("the shared boot kept no backing file of {role}"))
    }

    /// The exit status of check `name`.
    pub fn check_rc(&self, name: &str) -> i32 {
        self.check(name);
        marked_rc(&self.output, &format!("check {name}"))
    }

    /// The output of check `name` (panics naming the check when the script never
    /// finished it).
    pub fn check(&self, name: &str) -> &str {
        let start = format!("#### check {name}\n");
        let end = format!("#### check {name} rc=");
        self.output
            .split(&start)
            .nth(1)
            .and_then(|rest| rest.split(&end).next().filter(|_| rest.contains(&end)))
            .unwrap_or_else(|| {
                panic!(
                    "check {name:?} did not run to its end in the shared boot:\n{}",
                    self.output
                )
            })
    }
}

/// The boot in `cell`, made by `boot` on first use. A boot that panics fails every test
/// that shares it, with its reason, without booting again.
pub fn shared_boot<T: Send + Sync>(
    cell: &'static SharedCell<T>,
    boot: impl FnOnce() -> T,
) -> &'static T {
    cell.get_or_init(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(boot)).map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".into())
        })
    })
    .as_ref()
    .unwrap_or_else(|e| panic!("the shared boot failed: {e}"))
}

/// A script that runs `prelude`, then each `(name, body)` in its own subshell, its
/// output between `#### check NAME` and `#### check NAME rc=STATUS`.
pub fn checks_script(prelude: &str, checks: &[(&str, String)]) -> String {
    let mut script = prelude.to_string();
    for (name, body) in checks {
        script += &format!(
            "echo '#### check {name}'; ( {body}\n) 2>&1; echo \"#### check {name} rc=$?\"; "
        );
    }
    script
}

/// Runs one HMP command on a QEMU monitor socket (the testbed's `SCRATCH/monitor.sock`),
/// waiting at most 60 s for QEMU to create it, and returns what QEMU answered before
/// its next prompt.
pub fn monitor(sock: &std::path::Path, command: &str) -> String {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut s = loop {
        match UnixStream::connect(sock) {
            Ok(s) => break s,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("no QEMU monitor at {}: {e}", sock.display())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    let mut read_until_prompt = |s: &mut UnixStream, got: &mut String| loop {
        let n = s.read(&mut buf).expect("reading the monitor");
        assert!(n > 0, "the monitor closed: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
        if got.trim_end().ends_with("(qemu)") {
            break;
        }
    };
    read_until_prompt(&mut s, &mut got);
    got.clear();
    s.write_all(format!("{command}\n").as_bytes())
        .expect("writing the monitor");
    read_until_prompt(&mut s, &mut got);
    got
}
