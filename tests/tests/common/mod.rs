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
/// `echo "## rc=$?"`).
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
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {marker:?} in the guest output:\n{output}"))
}
