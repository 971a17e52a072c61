//! The guest side of the testbed: `peerdma-testbed` running as PID 1 inside the VM.
//!
//! It mounts the pseudo file systems and the scratch share, loads modules (stock kernel),
//! finds the requested devices, binds them to vfio-pci, writes `testbed.json`, runs the
//! command on the second serial port, records its exit status and powers the VM off.
//! Nothing here forks a shell: under TCG every exec over 9p costs tens of milliseconds.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::devices::Topology;
use crate::manifest::{
    GuestConfig, GuestDevice, Manifest, ManifestDevice, EXIT_STATUS_FILE, GUEST_CONFIG_FILE,
    GUEST_SCRATCH, MANIFEST_FILE, SCRATCH_TAG,
};

/// The serial port the command's output goes to (the host streams it).
const COMMAND_PORT: &str = "/dev/ttyS1";

/// Runs the guest init and never returns: the VM powers off at the end.
pub fn run_as_init() -> ! {
    let code = match setup_and_run() {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("peerdma-testbed guest-init: {e:#}\n");
            let _ = std::io::stderr().write_all(msg.as_bytes());
            if let Ok(mut port) = fs::OpenOptions::new().write(true).open(COMMAND_PORT) {
                let _ = port.write_all(msg.as_bytes());
            }
            // 125: the testbed itself failed, not the command.
            125
        }
    };
    let _ = fs::write(
        Path::new(GUEST_SCRATCH).join(EXIT_STATUS_FILE),
        format!("{code}\n"),
    );
    rustix::fs::sync();
    let _ = rustix::system::reboot(rustix::system::RebootCommand::PowerOff);
    // reboot() only returns on failure; PID 1 must not exit (that panics the kernel).
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn setup_and_run() -> Result<i32> {
    mount_basics()?;
    let config_path = Path::new(GUEST_SCRATCH).join(GUEST_CONFIG_FILE);
    let config: GuestConfig = serde_json::from_str(
        &fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?,
    )
    .context("parsing guest.json")?;
    load_modules(&config)?;
    let devices = find_and_bind(&config.devices, config.iommu, config.topology)?;
    let manifest = Manifest {
        kernel_release: rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned(),
        kernel: config.kernel.clone(),
        iommufd: Path::new("/dev/iommu").exists(),
        vfio_cdev: Path::new("/dev/vfio/devices").exists(),
        iommu: config.iommu,
        topology: config.topology,
        test_start_uptime_s: uptime(),
        devices,
    };
    fs::write(
        Path::new(GUEST_SCRATCH).join(MANIFEST_FILE),
        serde_json::to_string_pretty(&manifest)?,
    )
    .context("writing testbed.json")?;
    run_command(&config)
}

fn mount(src: &str, target: &str, fstype: &str, data: &str) -> Result<()> {
    fs::create_dir_all(target).ok();
    let data = std::ffi::CString::new(data)?;
    let flags = rustix::mount::MountFlags::empty();
    match rustix::mount::mount(src, target, fstype, flags, data.as_c_str()) {
        Ok(()) | Err(rustix::io::Errno::BUSY) => Ok(()),
        Err(e) => bail!("mount -t {fstype} {src} {target}: {e}"),
    }
}

fn mount_basics() -> Result<()> {
    mount("proc", "/proc", "proc", "")?;
    mount("sysfs", "/sys", "sysfs", "")?;
    mount("devtmpfs", "/dev", "devtmpfs", "")?;
    mount("tmpfs", "/run", "tmpfs", "mode=755")?;
    // /tmp stays the host's (read-only): the host's current directory may be under it.
    // Writable temporary space is /run/tmp (TMPDIR), home is /run/home.
    fs::create_dir_all("/run/tmp")?;
    fs::create_dir_all("/run/home")?;
    mount("devpts", "/dev/pts", "devpts", "")?;
    // What shells and scripts expect from a udev-less /dev (bash's <(...), `cat
    // /dev/stdin`): links to the process's own descriptors.
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        if fs::symlink_metadata(link).is_err() {
            std::os::unix::fs::symlink(target, link)
                .with_context(|| format!("linking {link} to {target}"))?;
        }
    }
    // debugfs shows dma-buf attachments (peerdma inspect); absent on some kernels.
    let _ = mount("debugfs", "/sys/kernel/debug", "debugfs", "");
    mount("tmpfs", "/dev/shm", "tmpfs", "mode=1777")?;
    mount(
        SCRATCH_TAG,
        GUEST_SCRATCH,
        "9p",
        "trans=virtio,version=9p2000.L,msize=512000",
    )?;
    let _ = rustix::system::sethostname(b"peerdma-guest");
    Ok(())
}

fn load_modules(config: &GuestConfig) -> Result<()> {
    for module in &config.modules {
        // The kernel gives init no PATH, and Debian's modprobe lives in /usr/sbin.
        let mut cmd = Command::new("/usr/sbin/modprobe");
        if let Some(root) = &config.modules_root {
            cmd.arg("-d").arg(root);
        }
        let out = cmd.arg(module).output().context("running modprobe")?;
        if !out.status.success() {
            bail!(
                "modprobe {module} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

fn read_hex(path: &Path) -> Option<u16> {
    let text = fs::read_to_string(path).ok()?;
    u16::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

fn link_name(path: &Path) -> Option<String> {
    fs::read_link(path)
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
}

fn find_and_bind(
    wanted: &[GuestDevice],
    iommu: bool,
    topology: Topology,
) -> Result<Vec<ManifestDevice>> {
    let sys = Path::new("/sys/bus/pci/devices");
    let mut all: Vec<String> = fs::read_dir(sys)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    all.sort();
    if topology == Topology::Mixed {
        // The first device sits behind the switch: match devices off the root bus first.
        all.sort_by_key(|b| b.get(5..7) == Some("00"));
    }
    let mut taken: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for dev in wanted {
        let (vendor, device) = dev.kind.pci_id();
        let bdf = all
            .iter()
            .find(|b| {
                !taken.contains(b)
                    && read_hex(&sys.join(b).join("vendor")) == Some(vendor)
                    && read_hex(&sys.join(b).join("device")) == Some(device)
            })
            .cloned()
            .with_context(|| {
                format!(
                    "the guest has no PCI device {vendor:04x}:{device:04x} for role {} ({})",
                    dev.role, dev.kind
                )
            })?;
        taken.push(bdf.clone());
        let dir = sys.join(&bdf);
        if dev.kind.binds_vfio() {
            bind_vfio(&bdf, &dir)?;
        }
        let mut described = describe(dev, &bdf, &dir, iommu)?;
        if let Some(addr) = &dev.extras.ipv4 {
            described.extras.interface = Some(bring_up(&bdf, &dir, addr)?);
        }
        out.push(described);
    }
    Ok(out)
}

fn bind_vfio(bdf: &str, dir: &Path) -> Result<()> {
    if link_name(&dir.join("driver")).as_deref() == Some("vfio-pci") {
        return Ok(());
    }
    fs::write(dir.join("driver_override"), "vfio-pci")
        .with_context(|| format!("setting driver_override of {bdf}"))?;
    if dir.join("driver").exists() {
        fs::write(dir.join("driver/unbind"), bdf)
            .with_context(|| format!("unbinding {bdf} from its driver"))?;
    }
    fs::write("/sys/bus/pci/drivers_probe", bdf)
        .with_context(|| format!("probing {bdf} with vfio-pci (is vfio-pci in this kernel?)"))?;
    let start = Instant::now();
    while link_name(&dir.join("driver")).as_deref() != Some("vfio-pci") {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("{bdf} did not bind to vfio-pci within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn describe(dev: &GuestDevice, bdf: &str, dir: &Path, iommu: bool) -> Result<ManifestDevice> {
    let iommu_group = link_name(&dir.join("iommu_group")).and_then(|n| n.parse::<u32>().ok());
    let group_peers = iommu_group
        .map(|g| {
            let mut peers: Vec<String> =
                fs::read_dir(format!("/sys/kernel/iommu_groups/{g}/devices"))
                    .map(|rd| {
                        rd.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .filter(|b| b != bdf)
                            .collect()
                    })
                    .unwrap_or_default();
            peers.sort();
            peers
        })
        .unwrap_or_default();
    let driver = link_name(&dir.join("driver"));
    let mut vfio_group = None;
    let mut vfio_cdev = None;
    if driver.as_deref() == Some("vfio-pci") {
        // The group node: /dev/vfio/N, or /dev/vfio/noiommu-N in noiommu mode.
        if let Some(g) = iommu_group {
            let names = if iommu {
                [format!("{g}"), format!("noiommu-{g}")]
            } else {
                [format!("noiommu-{g}"), format!("{g}")]
            };
            for name in names {
                let p = PathBuf::from("/dev/vfio").join(name);
                if wait_for(&p) {
                    vfio_group = Some(p);
                    break;
                }
            }
        }
        if let Ok(rd) = fs::read_dir(dir.join("vfio-dev")) {
            if let Some(e) = rd.flatten().next() {
                let p = PathBuf::from("/dev/vfio/devices").join(e.file_name());
                if wait_for(&p) {
                    vfio_cdev = Some(p);
                }
            }
        }
    }
    Ok(ManifestDevice {
        role: dev.role.clone(),
        kind: dev.kind,
        bdf: bdf.to_string(),
        iommu_group,
        group_peers,
        vfio_group,
        vfio_cdev,
        driver,
        backing_file: dev.backing_file.clone(),
        size: dev.size,
        extras: dev.extras.clone(),
    })
}

/// The network interface of the kernel NIC at `dir` (virtio-net's sits one level down,
/// under its virtio device), waiting up to 10 s for the driver to register it.
fn interface_of(bdf: &str, dir: &Path) -> Result<String> {
    let start = Instant::now();
    loop {
        let mut places = vec![dir.join("net")];
        if let Ok(rd) = fs::read_dir(dir) {
            places.extend(
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("virtio"))
                    .map(|e| e.path().join("net")),
            );
        }
        for place in places {
            if let Some(e) = fs::read_dir(&place).ok().and_then(|mut rd| rd.next()) {
                return Ok(e?.file_name().to_string_lossy().into_owned());
            }
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!(
                "{bdf} has no network interface after 10 s (driver: {:?}; is its driver \
                 built into this kernel?)",
                link_name(&dir.join("driver"))
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `ip` in the guest's root (the host's): iproute2's, else busybox's applet.
fn ip_command() -> Command {
    for p in ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"] {
        if Path::new(p).exists() {
            return Command::new(p);
        }
    }
    let mut c = Command::new("busybox");
    c.arg("ip");
    c
}

fn ip(args: &[&str]) -> Result<()> {
    let out = ip_command()
        .args(args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .with_context(|| format!("running ip {} (iproute2 or busybox)", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Brings the kernel NIC at `dir` up with `addr` (`10.77.0.1/24`) and IPv6 off, and
/// `lo` with it, waiting up to 10 s for carrier; returns its interface name.
fn bring_up(bdf: &str, dir: &Path, addr: &str) -> Result<String> {
    let ifname = interface_of(bdf, dir)?;
    // No IPv6 (router solicitations, MLD reports, DAD probes): the wire carries only
    // what the test sends, and ARP.
    let v6 = Path::new("/proc/sys/net/ipv6/conf").join(&ifname);
    if v6.exists() {
        fs::write(v6.join("disable_ipv6"), "1")
            .with_context(|| format!("turning IPv6 off on {ifname}"))?;
    }
    ip(&["link", "set", "lo", "up"])?;
    ip(&["addr", "add", addr, "dev", &ifname])?;
    ip(&["link", "set", &ifname, "up"])?;
    let carrier = Path::new("/sys/class/net").join(&ifname).join("carrier");
    let start = Instant::now();
    while !fs::read_to_string(&carrier).is_ok_and(|s| s.trim() == "1") {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("{ifname} ({bdf}) has no carrier 10 s after it was brought up");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(ifname)
}

/// devtmpfs creates nodes asynchronously; give it a moment.
fn wait_for(path: &Path) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn uptime() -> f64 {
    fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn open_port(raw: bool) -> Result<fs::File> {
    let port = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(COMMAND_PORT)
        .with_context(|| format!("opening the command port {COMMAND_PORT}"))?;
    if raw {
        // No "\n" → "\r\n" translation, no echo: the host receives the bytes as written.
        let mut t = rustix::termios::tcgetattr(&port)?;
        t.make_raw();
        rustix::termios::tcsetattr(&port, rustix::termios::OptionalActions::Now, &t)?;
    }
    Ok(port)
}

fn run_command(config: &GuestConfig) -> Result<i32> {
    let port = open_port(!config.interactive)?;
    let mut cmd = if config.interactive {
        let mut c = Command::new("setsid");
        c.args(["-c", "bash", "-i"]);
        c.stdin(port.try_clone()?);
        c.env("PS1", "peerdma-guest# ");
        c.env("TERM", "vt100");
        c
    } else {
        if config.argv.is_empty() {
            bail!("no command to run");
        }
        let mut c = Command::new(&config.argv[0]);
        c.args(&config.argv[1..]);
        c.stdin(Stdio::null());
        // The port is a tty, but nobody watches it live: no progress bars or colours.
        c.env("TERM", "dumb");
        c
    };
    cmd.stdout(port.try_clone()?)
        .stderr(port.try_clone()?)
        .current_dir(&config.cwd)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/run/home")
        .env("TMPDIR", "/run/tmp")
        .env("PEERDMA_TESTBED", "1")
        .envs(
            config
                .modules_root
                .iter()
                .map(|root| ("PEERDMA_MODULES_ROOT", root.as_os_str())),
        )
        .env(
            "PEERDMA_MANIFEST",
            Path::new(GUEST_SCRATCH).join(MANIFEST_FILE),
        )
        .envs(config.env.iter().map(|(k, v)| (k, v)));
    let status = cmd
        .status()
        .with_context(|| format!("starting {:?} in {}", config.argv, config.cwd.display()))?;
    let mut port = port;
    let _ = port.flush();
    let _ = rustix::termios::tcdrain(&port);
    Ok(status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    }))
}
