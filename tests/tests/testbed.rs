//! The testbed itself, against the real reference and stock kernels: devices in IOMMU
//! groups and bound to vfio-pci, exit status, panic detection, timeouts, hygiene.

mod common;

use common::*;
use peerdma_testbed::devices::Topology;
use peerdma_testbed::kernel::KernelChoice;

fn qemu_running_with(path: &std::path::Path) -> bool {
    let needle = path.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|c| {
            let c = String::from_utf8_lossy(&c);
            c.contains("qemu-system") && c.contains(&needle)
        })
}

/// One boot of the default devices on the reference kernel serves the two tests that
/// need nothing else: the binding check reads only; the mmap check writes ivshmem1 at
/// 3 MiB and ivshmem0's first page, which only its own host-side assertions look at.
struct DefaultBoot {
    boot: SharedBoot,
    manifest: peerdma_testbed::manifest::Manifest,
    boot_to_test_s: f64,
    wall_s: f64,
}

fn default_boot() -> &'static DefaultBoot {
    static BOOT: SharedCell<DefaultBoot> = SharedCell::new();
    shared_boot(&BOOT, || {
        let tb = testbed(KernelChoice::Reference);
        let g = workspace_bin("peerdma-guest-mmap").display().to_string();
        let (offset, len, seed) = MMAP;
        let checks = [
            (
                "binding",
                "test -c /dev/iommu && ls /dev/vfio/devices && readlink /sys/bus/pci/devices/*/driver | sort | uniq -c"
                    .to_string(),
            ),
            (
                "mmap",
                format!("{g} ivshmem1 {offset} {len} {seed} cdev && {g} ivshmem0 0 4096 1 group"),
            ),
        ];
        let out = run_sh(&tb, &checks_script("", &checks));
        DefaultBoot {
            manifest: out.manifest.clone(),
            boot_to_test_s: out.boot_to_test_s,
            wall_s: out.wall_s,
            boot: SharedBoot::keep(out, &["ivshmem0", "ivshmem1"]),
        }
    })
}

impl DefaultBoot {
    /// The output of check `name`, which must have exited 0.
    fn check(&self, name: &str) -> &str {
        let body = self.boot.check(name);
        assert_eq!(
            self.boot.check_rc(name),
            0,
            "check {name:?} failed in the guest:\n{body}"
        );
        body
    }
}

/// The mmap check's offset, length and seed in ivshmem1.
const MMAP: (usize, usize, u64) = (3 << 20, 1 << 20, 0x5eed);

#[test]
fn reference_kernel_binds_each_device_in_its_own_group_with_cdev_and_iommufd() {
    let out = default_boot();
    let o = out.check("binding");
    let m = &out.manifest;
    assert!(
        m.iommufd && m.vfio_cdev,
        "reference kernel lacks iommufd/cdev: {m:?}"
    );
    assert_eq!(m.devices.len(), 3);
    let mut groups = Vec::new();
    for d in &m.devices {
        assert_eq!(d.driver.as_deref(), Some("vfio-pci"), "{d:?}");
        let g = d.iommu_group.expect("every device has an IOMMU group");
        assert!(
            d.group_peers.is_empty(),
            "root-bus device shares its group: {d:?}"
        );
        assert_eq!(
            d.vfio_group.as_deref(),
            Some(std::path::Path::new(&format!("/dev/vfio/{g}")))
        );
        assert!(d.vfio_cdev.is_some(), "{d:?}");
        groups.push(g);
    }
    groups.dedup();
    assert_eq!(groups.len(), 3);
    assert!(o.contains("vfio0") && o.contains("vfio2"), "{o}");
    eprintln!(
        "boot to test start: {:.2} s, whole run {:.2} s",
        out.boot_to_test_s, out.wall_s
    );
}

#[test]
fn stock_kernel_has_vfio_groups_but_no_iommufd() {
    let tb = testbed(KernelChoice::Stock);
    let out = run_ok(
        &tb,
        &[
            "/bin/sh",
            "-c",
            "! test -e /dev/iommu && ! test -e /dev/vfio/devices && ls /dev/vfio && \
             ! test -e /sys/module/vgem && \
             /usr/sbin/modprobe -d \"$PEERDMA_MODULES_ROOT\" vgem && test -e /sys/module/vgem",
        ],
    );
    eprintln!("stock boot to test start: {:.2} s", out.boot_to_test_s);
    let m = &out.manifest;
    assert!(!m.iommufd, "stock kernel unexpectedly has /dev/iommu");
    assert!(!m.vfio_cdev);
    for d in &m.devices {
        assert_eq!(d.driver.as_deref(), Some("vfio-pci"), "{d:?}");
        assert!(d.vfio_group.is_some() && d.vfio_cdev.is_none(), "{d:?}");
    }
}

#[test]
fn switch_topology_puts_the_devices_behind_downstream_ports() {
    let tb = testbed_with(
        KernelChoice::Reference,
        "ivshmem,ivshmem",
        Topology::Switch,
        true,
    );
    let out = run_ok(&tb, &["/bin/true"]);
    let a = out.manifest.device("ivshmem0").unwrap();
    let b = out.manifest.device("ivshmem1").unwrap();
    for d in [a, b] {
        assert_ne!(
            &d.bdf[..7],
            "0000:00",
            "a device behind the switch sits on the root bus: {d:?}"
        );
        assert_eq!(d.driver.as_deref(), Some("vfio-pci"), "{d:?}");
        // QEMU 10's xio3130 downstream ports advertise ACS, so each device shares its
        // group only with its own downstream port (a bridge, which VFIO tolerates).
        assert_eq!(d.group_peers.len(), 1, "{d:?}");
        assert!(
            d.group_peers[0].ends_with(".0") && d.group_peers[0] < d.bdf,
            "{d:?}"
        );
    }
    assert_ne!(a.iommu_group, b.iommu_group);
}

#[test]
fn noiommu_mode_gives_noiommu_groups() {
    let tb = testbed_with(
        KernelChoice::Reference,
        "ivshmem,ivshmem",
        Topology::Root,
        false,
    );
    let p = workspace_bin("peerdma").display().to_string();
    let out = run_sh(
        &tb,
        &format!(
            "{p} regions 00:10.0 --access cdev; echo \"## rc=$?\"; \
             {p} path 00:10.0 00:11.0 --json; {p} path 00:10.0 00:11.0"
        ),
    );
    // peerdma path: no IOMMU translates them, so no iommufd import (was "works").
    let path = json_lines(&out.output)
        .into_iter()
        .find(|j| j.get("iommufd_import").is_some())
        .expect("path's JSON");
    assert!(
        path["iommufd_import"]
            .as_str()
            .unwrap()
            .starts_with("impossible"),
        "{path}"
    );
    assert!(
        out.output
            .lines()
            .any(|l| l.contains("iommufd (IOMMU_IOAS_MAP_FILE): fails")
                || (l.contains("iommufd (IOMMU_IOAS_MAP_FILE)") && l.contains("no-IOMMU mode"))),
        "{}",
        out.output
    );
    assert!(
        !out.output.contains("iommufd (IOMMU_IOAS_MAP_FILE): works"),
        "{}",
        out.output
    );
    // The kernel has iommufd and the cdev option; what is missing is an IOMMU, and the
    // error says so (not "use a kernel with CONFIG_IOMMUFD", not a Rust path).
    assert!(
        out.output.contains("## rc=3"),
        "could not run: {}",
        out.output
    );
    assert!(out.output.contains("no-IOMMU mode"), "{}", out.output);
    assert!(!out.output.contains("CONFIG_IOMMUFD"), "{}", out.output);
    assert!(!out.output.contains("AccessPath"), "{}", out.output);
    let d = out.manifest.device("ivshmem0").unwrap();
    let g = d
        .vfio_group
        .as_ref()
        .expect("noiommu group node")
        .display()
        .to_string();
    assert!(g.starts_with("/dev/vfio/noiommu-"), "{g}");
}

#[test]
fn exit_status_and_output_come_back() {
    // A one-off device through the raw escape hatch (no registry kind): QEMU's
    // pci-testdev (1b36:0005) at 00:1e.0, left unbound; the command finds it in sysfs.
    let tb = peerdma_testbed::vm::Testbed::new(peerdma_testbed::vm::VmOptions {
        devices: "edu".parse().unwrap(),
        extra_qemu_args: vec!["-device".into(), "pci-testdev,addr=0x1e".into()],
        ..options(KernelChoice::Reference)
    })
    .unwrap();
    let out = tb
        .run(&[
            "/bin/sh",
            "-c",
            "echo out-line; echo err-line >&2; \
             echo testdev $(cat /sys/bus/pci/devices/0000:00:1e.0/vendor \
             /sys/bus/pci/devices/0000:00:1e.0/device); exit 7",
        ])
        .unwrap();
    assert_eq!(out.status, 7, "{}", out.output);
    assert!(
        out.output.contains("out-line\n") && out.output.contains("err-line\n"),
        "{:?}",
        out.output
    );
    assert!(
        out.output.contains("testdev 0x1b36 0x0005\n"),
        "the extra_qemu_args device is missing: {:?}",
        out.output
    );
    // A temporary scratch disappears with the outcome.
    let scratch = out.scratch.path().to_path_buf();
    let console = out.console_log.clone();
    assert!(scratch.join("testbed.json").exists());
    // On a tmpfs where the host has one: ivshmem BARs are files in it (docs/testbed.md).
    assert!(scratch.starts_with(peerdma_testbed::scratch::temp_base()));
    if peerdma_testbed::scratch::is_tmpfs(std::path::Path::new("/dev/shm")) {
        assert!(
            peerdma_testbed::scratch::is_tmpfs(&scratch),
            "{}",
            scratch.display()
        );
    }
    assert!(std::fs::read_to_string(&console)
        .unwrap()
        .contains("Linux version"));
    drop(out);
    assert!(
        !console.exists(),
        "console log of a good run {} left behind",
        console.display()
    );
    assert!(
        !scratch.exists(),
        "temporary scratch {} left behind",
        scratch.display()
    );
}

#[test]
fn a_guest_panic_fails_the_run_and_keeps_the_console_log() {
    let tb = testbed_with(KernelChoice::Reference, "edu", Topology::Root, true);
    let err = tb
        .run(&["/bin/sh", "-c", "echo c > /proc/sysrq-trigger"])
        .expect_err("a panicking guest must fail the run")
        .to_string();
    assert!(
        err.contains("Kernel panic") || err.contains("Oops"),
        "{err}"
    );
    assert!(err.contains("console.log"), "{err}");
    let log = err
        .rsplit("console log kept: ")
        .next()
        .unwrap()
        .trim_end_matches(')');
    assert!(
        std::path::Path::new(log).exists(),
        "console log {log} not kept"
    );
    // The scratch (backing files and all) is gone; only the console log stays.
    let name = std::path::Path::new(log)
        .file_name()
        .unwrap()
        .to_string_lossy();
    let scratch = peerdma_testbed::scratch::temp_base().join(name.trim_end_matches(".console.log"));
    assert!(
        !scratch.exists(),
        "scratch {} left behind",
        scratch.display()
    );
    let _ = std::fs::remove_file(log);
}

#[test]
fn a_timeout_kills_qemu_and_removes_the_scratch() {
    let dir = std::env::temp_dir().join(format!("peerdma-timeout-{}", std::process::id()));
    let mut opts = options(KernelChoice::Reference);
    opts.devices = "edu".parse().unwrap();
    opts.timeout = std::time::Duration::from_secs(15);
    opts.scratch = Some(dir.clone());
    let tb = peerdma_testbed::vm::Testbed::new(opts).unwrap();
    let start = std::time::Instant::now();
    let err = tb
        .run(&["/bin/sleep", "600"])
        .expect_err("must time out")
        .to_string();
    assert!(err.contains("did not finish within 15 s"), "{err}");
    assert!(start.elapsed().as_secs() < 40);
    assert!(
        !qemu_running_with(&dir),
        "QEMU still running after the timeout"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_pattern_written_through_the_vfio_mmap_lands_in_the_host_backing_file() {
    use peerdma_testbed::pattern;
    let boot = default_boot();
    let o = boot.check("mmap");
    let (offset, len, seed) = MMAP;
    let lines = json_lines(o);
    assert_eq!(lines.len(), 2, "{o}");
    assert_eq!(lines[0]["access_path"], "Cdev");
    assert_eq!(lines[1]["access_path"], "Group");
    assert!(lines[0]["readback_mismatch"].is_null(), "{}", lines[0]);
    // The host reads ivshmem1's backing file: exactly the pattern at the offset, and the
    // bytes around it untouched (zero), in the file of the right device only.
    let file = boot.boot.file("ivshmem1");
    assert_eq!(file.len(), 64 << 20);
    assert_eq!(
        pattern::first_mismatch(seed, 0, &file[offset..offset + len]),
        None
    );
    assert!(file[offset - 4096..offset].iter().all(|&b| b == 0));
    assert!(file[offset + len..offset + len + 4096]
        .iter()
        .all(|&b| b == 0));
    let other = boot.boot.file("ivshmem0");
    assert_eq!(pattern::first_mismatch(1, 0, &other[..4096]), None);
    assert!(other[offset..offset + len].iter().all(|&b| b == 0));
}
