//! Every binary against a closed stdout and hostile arguments, on the host (no VM):
//! nothing may panic, a closed pipe ends the process quietly with the usual status.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use common::workspace_bin;

const SIGPIPE: i32 = 13;

/// Runs `bin args` with stdout a pipe whose reading end is already closed.
fn run_into_closed_pipe(bin: &str, args: &[&str]) -> (std::process::ExitStatus, String) {
    let (read, write) = std::io::pipe().expect("pipe");
    drop(read);
    let out = Command::new(workspace_bin(bin))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .expect("spawn");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_ends_each_binary_quietly() {
    for (bin, args) in [
        ("peerdma", &["list"][..]),
        ("peerdma", &["list", "--json"]),
        ("peerdma", &["--help"]),
        ("p2pcopy", &["--help"]),
        ("peerdma", &["man"]),
        ("p2pcopy", &["--man"]),
        ("p2pcopy-bench", &["--help"]),
        ("nvme-bench", &["--help"]),
        ("peerdma-testbed", &["--help"]),
    ] {
        let (status, stderr) = run_into_closed_pipe(bin, args);
        assert!(
            !stderr.contains("panicked"),
            "{bin} {args:?} panicked on a closed stdout:\n{stderr}"
        );
        // Killed by SIGPIPE like any Unix filter, or (clap's help, the testbed that
        // owns QEMU) a checked write that gave up cleanly; never Rust's panic status.
        assert!(
            status.signal() == Some(SIGPIPE) || status.code().is_some_and(|c| c != 101),
            "{bin} {args:?} ended with {status:?}:\n{stderr}"
        );
    }
}

#[test]
fn hostile_arguments_are_errors_not_panics() {
    let huge = "0xffffffffffffffff";
    let cases: &[(&str, &[&str])] = &[
        (
            "peerdma",
            &[
                "show",
                "00:10.0",
                "--bar",
                "2",
                "--width",
                "4294967295",
                "--height",
                "4294967295",
            ],
        ),
        (
            "peerdma",
            &[
                "show", "00:10.0", "--bar", "2", "--width", "0", "--height", "1",
            ],
        ),
        ("p2pcopy", &["00:10.0", "00:11.0", "--size", huge]),
        (
            "p2pcopy",
            &["00:10.0", "00:11.0", "--size", "99999999999999T"],
        ),
        ("p2pcopy", &["00:10.0", "00:11.0", "--src-offset", huge]),
        ("p2pcopy", &["00:10.0", "00:11.0", "--iterations", "0"]),
        ("p2pcopy", &["00:10.0", "00:11.0", "--chunk", "0"]),
        ("p2pcopy", &["00:10.0", "00:11.0", "--queue-depth", "8"]),
        ("p2pcopy", &["--serve", "host", "--qps", "2"]),
        ("p2pcopy", &["ffff:ff:1f.7", "0:0.0"]),
        ("p2pcopy", &["", ""]),
        ("p2pcopy", &["00:10.0", "00:10.0"]),
        ("p2pcopy", &["nvme:", "00:11.0"]),
        ("p2pcopy", &["nvme:00:13.0/0", "host"]),
        ("p2pcopy", &["nvme:00:13.0@99999999999999999999999", "host"]),
        (
            "p2pcopy",
            &["nvme:00:13.0@0xffffffffffffffff", "host", "--size", huge],
        ),
        ("p2pcopy", &["host", "host"]),
        (
            "p2pcopy",
            &["nvme:00:13.0", "00:11.0", "--queue-depth", "0"],
        ),
        (
            "p2pcopy",
            &["nvme:00:13.0", "00:11.0", "--transfer-size", "0"],
        ),
        ("p2pcopy", &["host", "rdma://10.0.0.2:7000", "--qps", "0"]),
        ("p2pcopy", &["host", "rdma://10.0.0.2:0", "--size", "4K"]),
        ("nvme-bench", &["00:13.0", "00:11.0", "--reps", "0"]),
        ("nvme-bench", &["00:13.0", "00:11.0", "--queue-depths", "0"]),
        (
            "nvme-bench",
            &["00:13.0", "00:11.0", "--transfer-kib", "1,0"],
        ),
        ("peerdma", &["regions", "10000:00:00.0"]),
        ("peerdma", &["regions", "00:20.0"]),
        ("peerdma", &["regions", "00:1f.8"]),
        (
            "peerdma",
            &[
                "export",
                "00:10.0",
                "--bar",
                "4294967295",
                "--range",
                "0:4K",
            ],
        ),
        (
            "peerdma",
            &[
                "export",
                "00:10.0",
                "--bar",
                "2",
                "--range",
                &format!("{huge}:{huge}"),
            ],
        ),
        ("peerdma", &["inspect", "/proc/self/fd/99999"]),
        ("peerdma", &["inspect", "1:2:3"]),
        ("peerdma", &["path", "00:10.0", "00:10.0"]),
        (
            "peerdma-testbed",
            &["run", "--devices", "ivshmem:0x", "--", "true"],
        ),
        (
            "peerdma-testbed",
            &["run", "--devices", "bogus", "--", "true"],
        ),
    ];
    for (bin, args) in cases {
        let out = Command::new(workspace_bin(bin))
            .args(*args)
            .stdin(Stdio::null())
            .output()
            .expect("spawn");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && out.status.code() != Some(101),
            "{bin} {args:?} panicked:\n{stderr}"
        );
        assert!(
            !out.status.success(),
            "{bin} {args:?} succeeded on bad input:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            stderr.contains("error"),
            "{bin} {args:?} failed without saying why:\n{stderr}"
        );
    }
}
