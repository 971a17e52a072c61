//! The host side of the testbed: builds QEMU's command line, boots the kernel, streams the
//! command's output, enforces the timeout, and checks the console for panics and oopses.
//! QEMU is killed on every path (drop, panic, timeout, Ctrl-C).

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::accel::{self, Accel};
use crate::devices::{DeviceKind, DeviceList, QemuSite, Topology};
use crate::kernel::{self, Kernel, KernelChoice, KernelKind};
use crate::manifest::{
    GuestConfig, GuestDevice, Manifest, EXIT_STATUS_FILE, GUEST_CONFIG_FILE, MANIFEST_FILE,
    ROOT_TAG, SCRATCH_TAG,
};
use crate::scratch::Scratch;

/// Set by the binary's SIGINT/SIGTERM handler: the runner kills QEMU and returns.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How to boot the testbed.
#[derive(Clone, Debug)]
pub struct VmOptions {
    /// Which kernel.
    pub kernel: KernelChoice,
    /// Which devices.
    pub devices: DeviceList,
    /// Where they sit.
    pub topology: Topology,
    /// A vIOMMU (on) or vfio noiommu mode (off).
    pub iommu: bool,
    /// The vIOMMU's address width (`aw-bits`: 39 or 48); 48 lets it reach the high
    /// 64-bit BARs, 39 reproduces an IOMMU that cannot.
    pub iommu_address_bits: u32,
    /// A scratch directory to use and keep; a temporary one otherwise.
    pub scratch: Option<PathBuf>,
    /// Limit for the whole run, boot included.
    pub timeout: Duration,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Guest CPUs.
    pub cpus: u32,
    /// QEMU's `-cpu` model (`EPYC`, `max,vendor=AuthenticAMD,family=23` …); `None`:
    /// `max` under TCG (an Intel-like family 6), `host` under KVM.
    pub cpu_model: Option<String>,
    /// Where the host has no /dev/udmabuf (no udmabuf module), let QEMU run virtio-gpu
    /// with blob resources on the testbed's emulation of it: a small library
    /// (`tests/c/udmabuf_preload.c`, built with `cc` at run time) preloaded into QEMU.
    /// Ignored where /dev/udmabuf exists; the run says on stderr when it is in use.
    pub emulate_udmabuf: bool,
    /// Copy the command's output to this process's stdout as it arrives.
    pub stream: bool,
    /// Extra environment for the command in the guest.
    pub env: Vec<(String, String)>,
    /// The guest's working directory (default: this process's).
    pub cwd: Option<PathBuf>,
    /// NVMe images to create and seed in the scratch before boot (others are made
    /// empty, or kept when a kept scratch has them).
    pub nvme_images: Vec<crate::image::ImageSeed>,
    /// Extra kernel command-line arguments.
    pub kernel_args: Vec<String>,
    /// The NVMe devices' CAP.MQES (QEMU's `mqes=`, 0-based: queues of MQES + 1
    /// entries); `None`: QEMU's 2047.
    pub nvme_mqes: Option<u16>,
    /// Raw QEMU arguments appended after the devices (`-device pci-testdev,addr=0x1f`):
    /// the escape hatch for a one-off device the registry (`devices::REGISTRY`) lacks.
    /// The guest does not bind or describe such a device.
    pub extra_qemu_args: Vec<String>,
    /// Which VM of a run this is (0 alone; 0 and 1 for the two VMs of a pair): the
    /// NICs' MAC and IPv4 addresses carry it (`devices::nic`).
    pub vm_index: u8,
    /// The host-local link the run's first NIC joins (`None`: its NIC has link but no
    /// peer; see `devices::nic`).
    pub wire: Option<Wire>,
    /// Stops the run from outside when due (a [`crate::pair::Pair`] stops a VM whose
    /// peer failed): QEMU is killed and the run fails with the signal's reason.
    pub stop: Option<StopSignal>,
}

/// A request to stop a running VM at an instant, with the reason; the earliest
/// request wins. Cloned handles share the request.
#[derive(Clone, Debug, Default)]
pub struct StopSignal(Arc<Mutex<Option<(Instant, String)>>>);

impl StopSignal {
    /// A signal nobody raised yet.
    pub fn new() -> StopSignal {
        StopSignal::default()
    }

    /// Asks the run to stop at `at` (now or later) because of `reason`, unless an
    /// earlier request stands.
    pub fn stop_at(&self, at: Instant, reason: impl Into<String>) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if g.as_ref().is_none_or(|(t, _)| at < *t) {
            *g = Some((at, reason.into()));
        }
    }

    /// The reason, once the request is due.
    pub fn due(&self) -> Option<String> {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.as_ref()
            .filter(|(t, _)| Instant::now() >= *t)
            .map(|(_, r)| r.clone())
    }
}

/// One end of a QEMU `dgram` netdev between two unix sockets: the NIC's frames go to
/// `remote` (the other VM's `local`) and arrive on `local`. Neither end needs the
/// other to exist first; frames sent before the peer binds are dropped.
#[derive(Clone, Debug)]
pub struct Wire {
    /// The unix socket this VM's QEMU binds (removed first if it exists).
    pub local: PathBuf,
    /// The unix socket the peer's QEMU binds.
    pub remote: PathBuf,
    /// Where QEMU's filter-dump writes every frame this end sends and receives (a
    /// classic pcap file, read by [`crate::pcap`]); `None`: no capture.
    pub pcap: Option<PathBuf>,
}

impl Default for VmOptions {
    fn default() -> Self {
        VmOptions {
            kernel: KernelChoice::Reference,
            devices: DeviceList::default(),
            topology: Topology::Root,
            iommu: true,
            iommu_address_bits: 48,
            scratch: None,
            timeout: Duration::from_secs(300),
            memory_mib: 2048,
            // One vCPU: with two, QEMU 10.0.2's TCG was seen to abort in iotlb_to_section
            // while a BAR's decode was toggled (export suite); one is also no slower here.
            cpus: 1,
            cpu_model: None,
            emulate_udmabuf: false,
            stream: false,
            env: Vec::new(),
            cwd: None,
            nvme_images: Vec::new(),
            kernel_args: Vec::new(),
            nvme_mqes: None,
            extra_qemu_args: Vec::new(),
            vm_index: 0,
            wire: None,
            stop: None,
        }
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct RunOutcome {
    /// The command's exit status in the guest (125: the guest init failed).
    pub status: i32,
    /// Everything the command wrote to stdout and stderr.
    pub output: String,
    /// The guest's report of its devices.
    pub manifest: Manifest,
    /// The scratch directory (backing files live here until this is dropped).
    pub scratch: Scratch,
    /// The kernel's console log.
    pub console_log: PathBuf,
    /// `WARNING:` lines from the kernel log.
    pub kernel_warnings: Vec<String>,
    /// Seconds from QEMU start to the command's start.
    pub boot_to_test_s: f64,
    /// Seconds for the whole run.
    pub wall_s: f64,
    /// The accelerator used.
    pub accel: Accel,
    /// Whether QEMU ran with the testbed's udmabuf emulation (see
    /// [`VmOptions::emulate_udmabuf`]).
    pub udmabuf_emulated: bool,
}

impl RunOutcome {
    /// The host path of a device's backing file (ivshmem memory, NVMe image).
    pub fn backing_file(&self, role: &str) -> Result<PathBuf> {
        self.manifest
            .device(role)
            .and_then(|d| d.backing_file.clone())
            .with_context(|| format!("no ivshmem or NVMe device with role {role} in this run"))
    }
}

/// A resolved testbed: kernel and QEMU found, ready to boot any number of times.
pub struct Testbed {
    options: VmOptions,
    kernel: Kernel,
    qemu: PathBuf,
    accel: Accel,
}

/// QEMU, killed and reaped on drop.
struct QemuProcess(Child);

impl Drop for QemuProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

impl Testbed {
    /// Resolves the kernel (fetching or building it when needed) and QEMU.
    pub fn new(options: VmOptions) -> Result<Testbed> {
        let qemu = crate::host::qemu_binary()?;
        let kernel = kernel::resolve(&options.kernel)?;
        let (accel, why) = accel::choose();
        eprintln!("testbed: accelerator {accel} ({why})");
        Ok(Testbed {
            options,
            kernel,
            qemu,
            accel,
        })
    }

    /// The same kernel, QEMU and accelerator with options changed by `f` (no new
    /// resolution).
    pub fn with_options(&self, f: impl FnOnce(&mut VmOptions)) -> Testbed {
        let mut options = self.options.clone();
        f(&mut options);
        Testbed {
            options,
            kernel: self.kernel.clone(),
            qemu: self.qemu.clone(),
            accel: self.accel,
        }
    }

    /// The run's options.
    pub fn options(&self) -> &VmOptions {
        &self.options
    }

    /// The resolved kernel.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// Boots the VM, runs `argv` as root in the guest and returns what happened.
    /// A guest panic, oops, timeout or init failure is an error; the command's own
    /// non-zero exit status is not (see [`RunOutcome::status`]).
    pub fn run<S: AsRef<str>>(&self, argv: &[S]) -> Result<RunOutcome> {
        let argv: Vec<String> = argv.iter().map(|s| s.as_ref().to_string()).collect();
        if argv.is_empty() {
            bail!("no command given: peerdma-testbed run -- CMD [ARGS]");
        }
        self.boot(argv, false)
    }

    /// Boots the VM with an interactive shell on this terminal.
    pub fn shell(&self) -> Result<RunOutcome> {
        self.boot(Vec::new(), true)
    }

    fn guest_config(
        &self,
        argv: Vec<String>,
        interactive: bool,
        scratch: &Path,
    ) -> Result<GuestConfig> {
        let cwd = match &self.options.cwd {
            Some(c) => c.clone(),
            None => std::env::current_dir()?,
        };
        let devices = self
            .options
            .devices
            .0
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let site = self.site(i, scratch, "");
                GuestDevice {
                    role: d.role.clone(),
                    kind: d.kind,
                    backing_file: d.kind.model().backing_file(&site),
                    size: d.size_mib << 20,
                    extras: d.kind.model().manifest_extras(&site),
                }
            })
            .collect();
        let stock = matches!(self.kernel.kind, KernelKind::Stock);
        Ok(GuestConfig {
            argv,
            cwd,
            env: self.options.env.clone(),
            interactive,
            devices,
            modules: if stock {
                kernel::modules_for_guest()
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            } else {
                Vec::new()
            },
            modules_root: self.kernel.modules_root.clone(),
            iommu: self.options.iommu,
            topology: self.options.topology,
            kernel: match self.kernel.kind {
                KernelKind::Reference => "reference",
                KernelKind::Stock => "stock",
                KernelKind::Ahead => "ahead",
                KernelKind::Custom => "custom",
            }
            .to_string(),
        })
    }

    /// QEMU's arguments for one boot.
    pub fn qemu_args(&self, accel: Accel, scratch: &Path, console: &Path) -> Result<Vec<String>> {
        let o = &self.options;
        let init = init_binary()?;
        let mut a: Vec<String> = Vec::new();
        let mut push = |s: String| a.push(s);
        let machine = match accel {
            Accel::Kvm => "q35,accel=kvm,kernel-irqchip=split",
            Accel::Tcg => "q35,accel=tcg",
        };
        push("-nodefaults".into());
        push("-no-user-config".into());
        push("-no-reboot".into());
        push("-display".into());
        push("none".into());
        let shared_ram = o
            .devices
            .0
            .iter()
            .any(|d| d.kind.model().needs_shared_guest_ram());
        if shared_ram {
            push("-object".into());
            push(format!(
                "memory-backend-memfd,id=ram,size={}M",
                o.memory_mib
            ));
            push("-machine".into());
            push(format!("{machine},memory-backend=ram"));
        } else {
            push("-machine".into());
            push(machine.into());
        }
        push("-cpu".into());
        push(match &o.cpu_model {
            Some(model) => model.clone(),
            None if accel == Accel::Kvm => "host".into(),
            None => "max".into(),
        });
        push("-smp".into());
        push(o.cpus.to_string());
        push("-m".into());
        push(format!("{}M", o.memory_mib));
        push("-serial".into());
        push(format!("file:{}", console.display()));
        push("-chardev".into());
        push("stdio,id=cmd,signal=off".into());
        push("-serial".into());
        push("chardev:cmd".into());
        push("-monitor".into());
        push(format!(
            "unix:{}/monitor.sock,server=on,wait=off",
            scratch.display()
        ));
        if o.iommu {
            push("-device".into());
            push(format!(
                "intel-iommu,intremap=on,caching-mode=on,aw-bits={}",
                o.iommu_address_bits
            ));
        }
        push("-kernel".into());
        push(self.kernel.image.display().to_string());
        if let Some(initrd) = &self.kernel.initrd {
            push("-initrd".into());
            push(initrd.display().to_string());
        }
        let mut cmdline = format!(
            "console=ttyS0 root={ROOT_TAG} rootfstype=9p \
             rootflags=trans=virtio,version=9p2000.L,msize=512000,cache=loose ro \
             init={} panic=-1 oops=panic loglevel=6 no_timer_check",
            init.display()
        );
        if o.iommu {
            cmdline.push_str(" intel_iommu=on iommu=pt");
        } else {
            cmdline.push_str(" vfio.enable_unsafe_noiommu_mode=1");
        }
        for arg in &o.kernel_args {
            cmdline.push(' ');
            cmdline.push_str(arg);
        }
        push("-append".into());
        push(cmdline);
        push("-fsdev".into());
        push("local,id=hostroot,path=/,security_model=none,readonly=on".into());
        push("-device".into());
        push(format!(
            "virtio-9p-pci,fsdev=hostroot,mount_tag={ROOT_TAG},addr=0x2"
        ));
        push("-fsdev".into());
        push(format!(
            "local,id=scratch,path={},security_model=none",
            scratch.display()
        ));
        push("-device".into());
        push(format!(
            "virtio-9p-pci,fsdev=scratch,mount_tag={SCRATCH_TAG},addr=0x3"
        ));
        if matches!(o.topology, Topology::Switch | Topology::Mixed) {
            push("-device".into());
            push("pcie-root-port,id=rp0,bus=pcie.0,addr=0x1c,chassis=1,slot=0".into());
            push("-device".into());
            push("x3130-upstream,id=up0,bus=rp0".into());
        }
        for (i, d) in o.devices.0.iter().enumerate() {
            let place = match o.topology {
                Topology::Root => format!("bus=pcie.0,addr={:#x}", 0x10 + i),
                Topology::Mixed if i > 0 => format!("bus=pcie.0,addr={:#x}", 0x10 + i),
                Topology::Multifunction => match i {
                    0 => "bus=pcie.0,addr=0x10.0,multifunction=on".to_string(),
                    1 => "bus=pcie.0,addr=0x10.1".to_string(),
                    _ => format!("bus=pcie.0,addr={:#x}", 0x10 + i),
                },
                Topology::Switch | Topology::Mixed => {
                    push("-device".into());
                    push(format!(
                        "xio3130-downstream,id=dn{i},bus=up0,chassis={},slot={i}",
                        10 + i
                    ));
                    format!("bus=dn{i}")
                }
            };
            let on_root_bus = place.starts_with("bus=pcie.0,");
            let place = if on_root_bus && d.kind.model().needs_own_bus() {
                // Behind a root port of its own (slot 0 of a bus whose other function
                // numbers its SR-IOV VFs take); the port has ACS, so the device keeps an
                // IOMMU group of its own.
                push("-device".into());
                push(format!(
                    "pcie-root-port,id=rp-{role},{port},chassis={chassis},slot=0",
                    role = d.role,
                    port = place.trim_end_matches(",multifunction=on"),
                    chassis = 0x30 + i
                ));
                format!("bus=rp-{}", d.role)
            } else {
                place
            };
            let site = self.site(i, scratch, &place);
            for arg in d.kind.model().qemu_args(&site)? {
                push(arg);
            }
        }
        for arg in &o.extra_qemu_args {
            push(arg.clone());
        }
        Ok(a)
    }

    fn boot(&self, argv: Vec<String>, interactive: bool) -> Result<RunOutcome> {
        let scratch = Scratch::new(self.options.scratch.as_deref())?;
        let ivshmem_files = !self.ivshmem_memfd()
            && self
                .options
                .devices
                .0
                .iter()
                .any(|d| d.kind == DeviceKind::IVSHMEM);
        if ivshmem_files && !crate::scratch::is_tmpfs(scratch.path()) {
            eprintln!(
                "testbed: scratch {} is not a tmpfs: the ivshmem BARs' backing files there go \
                 through the host's page-cache writeback, which slows DMA into them; \
                 benchmark with a scratch on a tmpfs (the default, or --scratch under /dev/shm)",
                scratch.path().display()
            );
        }
        for seed in &self.options.nvme_images {
            if !self
                .options
                .devices
                .0
                .iter()
                .any(|d| d.kind.is_nvme() && d.role == seed.role)
            {
                bail!(
                    "--nvme-image names {:?}, which is not an nvme device of this run",
                    seed.role
                );
            }
            crate::image::seed(scratch.path(), &seed.role, &seed.source)?;
        }
        let config = self.guest_config(argv, interactive, scratch.path())?;
        std::fs::write(
            scratch.path().join(GUEST_CONFIG_FILE),
            serde_json::to_string_pretty(&config)?,
        )?;
        let console = scratch.console_log().to_path_buf();
        let mut accel = self.accel;
        let mut stalls = 0;
        loop {
            let result = self.boot_once(accel, &scratch, &console, interactive);
            let result = match result {
                Ok(r) => r,
                Err(e) => {
                    // Keep the console log for whoever debugs this.
                    let mut scratch = scratch;
                    scratch.keep_console();
                    return Err(e);
                }
            };
            match result {
                BootResult::Done { output, wall, exit } => {
                    return self.finish(scratch, console, output, wall, exit, accel)
                }
                BootResult::Stalled(why) => {
                    stalls += 1;
                    let kept = console.with_extension(format!("stalled-{stalls}.log"));
                    let _ = std::fs::rename(&console, &kept);
                    if stalls > BOOT_RETRIES {
                        bail!(
                            "the guest failed to boot {stalls} times ({why}); console logs kept: {}",
                            kept.with_extension("*.log").display()
                        );
                    }
                    eprintln!(
                        "testbed: boot stalled ({why}; console log {}); retrying once",
                        kept.display()
                    );
                }
                BootResult::KvmHung => {
                    eprintln!(
                        "testbed: the KVM guest printed nothing in 20 s (see {}); retrying under TCG",
                        console.display()
                    );
                    accel = Accel::Tcg;
                }
            }
        }
    }

    fn boot_once(
        &self,
        accel: Accel,
        scratch: &Scratch,
        console: &Path,
        interactive: bool,
    ) -> Result<BootResult> {
        let _ = std::fs::remove_file(console);
        let args = self.qemu_args(accel, scratch.path(), console)?;
        let mut cmd = Command::new(&self.qemu);
        if let Some(lib) = self.udmabuf_emulation(scratch.path())? {
            cmd.env("LD_PRELOAD", lib);
        }
        cmd.args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if interactive {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        if !interactive {
            // Our own process group: a Ctrl-C reaches us, and we decide when QEMU dies.
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        }
        let start = Instant::now();
        let mut qemu =
            QemuProcess(cmd.spawn().with_context(|| {
                format!("starting {} (is QEMU installed?)", self.qemu.display())
            })?);
        // For the host side of a test that reaches into QEMU while it runs
        // (`live_ivshmem_backing`).
        let _ = std::fs::write(scratch.path().join(QEMU_PID_FILE), qemu.0.id().to_string());
        let output = Arc::new(Mutex::new(Vec::<u8>::new()));
        let mut stdout = qemu.0.stdout.take().expect("piped stdout");
        let stream = self.options.stream || interactive;
        let sink = output.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stream {
                            let mut o = std::io::stdout().lock();
                            let _ = o.write_all(&buf[..n]);
                            let _ = o.flush();
                        }
                        sink.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                }
            }
        });
        let stderr = qemu.0.stderr.take().expect("piped stderr");
        let qemu_err = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                lines.push(line);
            }
            lines
        });
        let exit = loop {
            if let Some(status) = qemu.0.try_wait()? {
                break status;
            }
            let elapsed = start.elapsed();
            if INTERRUPTED.load(Ordering::Relaxed) {
                drop(qemu);
                bail!(
                    "interrupted: QEMU killed (console log: {})",
                    console.display()
                );
            }
            if let Some(reason) = self.options.stop.as_ref().and_then(StopSignal::due) {
                drop(qemu);
                bail!(
                    "stopped: {reason}: QEMU killed (console log: {})",
                    console.display()
                );
            }
            if !interactive && elapsed > self.options.timeout {
                drop(qemu);
                bail!(
                    "the guest did not finish within {} s: QEMU killed (console log: {})",
                    self.options.timeout.as_secs(),
                    console.display()
                );
            }
            if elapsed > BOOT_DEADLINE && !scratch.path().join(MANIFEST_FILE).exists() {
                return Ok(BootResult::Stalled(format!(
                    "no guest init within {} s",
                    BOOT_DEADLINE.as_secs()
                )));
            }
            if accel == Accel::Kvm
                && elapsed > Duration::from_secs(20)
                && std::fs::metadata(console).map(|m| m.len()).unwrap_or(0) == 0
            {
                return Ok(BootResult::KvmHung);
            }
            std::thread::sleep(Duration::from_millis(25));
        };
        let wall = start.elapsed();
        let _ = reader.join();
        // Under a loaded TCG host the kernel's early IO-APIC timer check can fail before
        // anything of ours ran: a boot failure worth one retry, not a test failure.
        if !scratch.path().join(MANIFEST_FILE).exists() {
            let log = std::fs::read_to_string(console).unwrap_or_default();
            if let Some(line) = log.lines().find(|l| l.contains("timer doesn't work")) {
                return Ok(BootResult::Stalled(line.trim().to_string()));
            }
        }
        let errs = qemu_err.join().unwrap_or_default();
        if !exit.success() {
            let log = std::fs::read_to_string(console).unwrap_or_default();
            bail!("{}", qemu_died(&exit.to_string(), &errs, &log, console));
        }
        let output = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
        Ok(BootResult::Done {
            output,
            wall,
            exit: errs,
        })
    }

    /// Whether ivshmem BARs are memfds instead of host files: where a blob virtio-gpu
    /// runs on the host's real /dev/udmabuf, which turns only sealed memfds into
    /// dma-bufs, so that QEMU's display can reach a BAR's pages. The host then reaches
    /// them through QEMU's fd ([`live_ivshmem_backing`]) while it runs, and no backing
    /// file outlives the run.
    pub fn ivshmem_memfd(&self) -> bool {
        let gpu = self
            .options
            .devices
            .0
            .iter()
            .any(|d| d.kind.model().needs_shared_guest_ram());
        gpu && host_has_udmabuf()
    }

    /// The `i`-th device's place in this run, for its [`crate::devices::DeviceModel`].
    fn site<'a>(&'a self, i: usize, scratch: &'a Path, place: &'a str) -> QemuSite<'a> {
        let d = &self.options.devices.0[i];
        QemuSite {
            role: &d.role,
            index: i,
            size_mib: d.size_mib,
            place,
            scratch,
            ivshmem_memfd: self.ivshmem_memfd(),
            options: &self.options,
        }
    }

    /// Whether this run needs the udmabuf emulation: a blob virtio-gpu on a host
    /// without /dev/udmabuf, with [`VmOptions::emulate_udmabuf`] on.
    pub fn uses_udmabuf_emulation(&self) -> bool {
        self.options.emulate_udmabuf
            && !host_has_udmabuf()
            && self
                .options
                .devices
                .0
                .iter()
                .any(|d| d.kind == DeviceKind::GPU)
    }

    /// Builds the emulation library into the scratch directory when this run uses it,
    /// and says so.
    fn udmabuf_emulation(&self, scratch: &Path) -> Result<Option<PathBuf>> {
        if !self.uses_udmabuf_emulation() {
            return Ok(None);
        }
        let lib = crate::udmabuf_emulation::build(scratch)?;
        eprintln!(
            "testbed: /dev/udmabuf is missing on this host: QEMU runs virtio-gpu blob resources \
             on the testbed's udmabuf emulation (LD_PRELOAD={})",
            lib.display()
        );
        Ok(Some(lib))
    }

    fn finish(
        &self,
        mut scratch: Scratch,
        console: PathBuf,
        output: String,
        wall: Duration,
        _qemu_stderr: Vec<String>,
        accel: Accel,
    ) -> Result<RunOutcome> {
        let log = std::fs::read_to_string(&console).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| {
            l.contains("Kernel panic")
                || l.contains("Oops:")
                || l.contains("BUG:")
                || l.contains("general protection fault")
        }) {
            scratch.keep_console();
            bail!(
                "the guest kernel failed: {}\n(console log kept: {})",
                line.trim(),
                console.display()
            );
        }
        let kernel_warnings: Vec<String> = log
            .lines()
            .filter(|l| l.contains("WARNING:"))
            .map(|l| l.trim().to_string())
            .collect();
        let status_text =
            std::fs::read_to_string(scratch.path().join(EXIT_STATUS_FILE)).map_err(|_| {
                scratch.keep_console();
                anyhow::anyhow!(
                    "the guest powered off without running the command (no exit status); \
                     output so far:\n{output}\n(console log kept: {})",
                    console.display()
                )
            })?;
        let status: i32 = status_text.trim().parse().unwrap_or(125);
        let manifest_path = scratch.path().join(MANIFEST_FILE);
        let manifest: Manifest = match std::fs::read_to_string(&manifest_path) {
            Ok(t) => serde_json::from_str(&t)?,
            Err(_) => {
                scratch.keep_console();
                bail!(
                    "the guest init failed before the command started:\n{output}\n(console log kept: {})",
                    console.display()
                );
            }
        };
        let boot_to_test_s = manifest.test_start_uptime_s;
        Ok(RunOutcome {
            status,
            output,
            manifest,
            scratch,
            console_log: console,
            kernel_warnings,
            boot_to_test_s,
            wall_s: wall.as_secs_f64(),
            accel,
            udmabuf_emulated: self.uses_udmabuf_emulation(),
        })
    }
}

/// The `peerdma-testbed` binary that becomes the guest's PID 1: this process when it is
/// that binary, else `PEERDMA_TESTBED_BIN`, else the one Cargo builds beside the test
/// executables (`target/<profile>/peerdma-testbed`).
pub fn init_binary() -> Result<PathBuf> {
    const NAME: &str = "peerdma-testbed";
    let exe = std::env::current_exe()?;
    if exe.file_name().is_some_and(|n| n == NAME) {
        return Ok(exe);
    }
    if let Some(p) = std::env::var_os("PEERDMA_TESTBED_BIN") {
        return Ok(PathBuf::from(p));
    }
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join(NAME))
        .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "the guest init {NAME} was not found (looked at {candidates:?}): \
             build it with `cargo build -p peerdma-testbed` or set PEERDMA_TESTBED_BIN"
            )
        })
}

enum BootResult {
    Done {
        output: String,
        wall: Duration,
        exit: Vec<String>,
    },
    KvmHung,
    /// The guest never reached our init (a TCG boot stall); worth a retry.
    Stalled(String),
}

/// The virtio-gpu's display size (QEMU `xres`/`yres`): its connector's preferred mode.
pub const GPU_XRES: u32 = 1024;
/// See [`GPU_XRES`].
pub const GPU_YRES: u32 = 768;

/// The file in the scratch directory holding QEMU's pid while it runs.
pub const QEMU_PID_FILE: &str = "qemu.pid";

/// The host path of an ivshmem device's memory while QEMU runs: its backing file, or
/// where it is a memfd ([`Testbed::ivshmem_memfd`]) QEMU's fd of it under
/// `/proc/PID/fd`. QEMU names every memfd backend `memory-backend-memfd` and creates
/// them in command-line order: guest RAM first, then the ivshmem devices in the order
/// of `guest.json`; the size must match too.
///
/// # Errors
///
/// When neither exists (QEMU not started yet, or not running), or no memfd fits.
pub fn live_ivshmem_backing(scratch: &Path, role: &str) -> Result<PathBuf> {
    let file = scratch.join(format!("{role}.mem"));
    if file.exists() {
        return Ok(file);
    }
    let config: GuestConfig = serde_json::from_str(
        &std::fs::read_to_string(scratch.join(GUEST_CONFIG_FILE))
            .with_context(|| format!("no {GUEST_CONFIG_FILE} in {}", scratch.display()))?,
    )?;
    let ivshmem: Vec<&GuestDevice> = config
        .devices
        .iter()
        .filter(|d| d.kind == DeviceKind::IVSHMEM)
        .collect();
    let index = ivshmem
        .iter()
        .position(|d| d.role == role)
        .with_context(|| format!("no ivshmem device {role} in this run"))?;
    let pid = std::fs::read_to_string(scratch.join(QEMU_PID_FILE))
        .with_context(|| format!("no {role}.mem and no QEMU pid in {}", scratch.display()))?;
    let fds = PathBuf::from(format!("/proc/{}/fd", pid.trim()));
    let mut memfds: Vec<(u32, PathBuf)> = std::fs::read_dir(&fds)
        .with_context(|| format!("reading {}", fds.display()))?
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|l| {
                l.to_string_lossy()
                    .starts_with("/memfd:memory-backend-memfd")
            })
        })
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
        .collect();
    memfds.sort();
    // Guest RAM is the first memfd backend.
    let (_, path) = memfds.get(index + 1).with_context(|| {
        format!(
            "QEMU ({}) holds {} memfd backends, not one for {role}",
            fds.display(),
            memfds.len()
        )
    })?;
    let size = std::fs::metadata(path)?.len();
    if size != ivshmem[index].size {
        bail!(
            "{} is {size} bytes, not {role}'s {} bytes",
            path.display(),
            ivshmem[index].size
        );
    }
    Ok(path.clone())
}

/// Whether the host kernel offers /dev/udmabuf.
pub fn host_has_udmabuf() -> bool {
    Path::new("/dev/udmabuf").exists()
}

/// How long a boot may take to reach the guest init before it counts as stalled.
const BOOT_DEADLINE: Duration = Duration::from_secs(90);

/// How many stalled boots are retried.
const BOOT_RETRIES: u32 = 1;

/// Why QEMU died, said with its cause: QEMU's stderr, and where QEMU said nothing (a
/// crash such as SIGSEGV), the last lines of the guest console; then where the whole
/// console log is.
fn qemu_died(exit: &str, stderr: &[String], console: &str, console_path: &Path) -> String {
    const TAIL: usize = 20;
    let said: Vec<&str> = stderr
        .iter()
        .map(|l| l.trim_end())
        .filter(|l| !l.is_empty())
        .collect();
    let cause = if !said.is_empty() {
        format!("QEMU said:\n{}", said.join("\n"))
    } else {
        let lines: Vec<&str> = console.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.is_empty() {
            "QEMU printed nothing on stderr and the guest nothing on the console".to_string()
        } else {
            format!(
                "QEMU printed nothing on stderr; the console's last {} line(s):\n{}",
                lines.len().min(TAIL),
                lines[lines.len().saturating_sub(TAIL)..].join("\n")
            )
        }
    };
    format!(
        "QEMU failed ({exit}): {cause}\n(console log: {})",
        console_path.display()
    )
}

#[cfg(test)]
mod qemu_death_tests {
    use super::*;

    #[test]
    fn a_qemu_death_names_its_cause_even_when_qemu_said_nothing() {
        let path = Path::new("/tmp/console.log");
        let m = qemu_died(
            "signal: 11 (SIGSEGV)",
            &[],
            "boot\n\n[ 1.0] vfio-pci 0000:00:10.0: enabling\n",
            path,
        );
        assert!(
            m.starts_with("QEMU failed (signal: 11 (SIGSEGV)): QEMU printed nothing on stderr")
                && m.contains("[ 1.0] vfio-pci 0000:00:10.0: enabling")
                && m.ends_with("(console log: /tmp/console.log)"),
            "{m}"
        );
        let m = qemu_died(
            "exit status: 1",
            &["qemu-system-x86_64: -device foo: not found".into()],
            "",
            path,
        );
        assert!(
            m.contains("QEMU said:\nqemu-system-x86_64: -device foo"),
            "{m}"
        );
        let m = qemu_died("signal: 6 (SIGABRT)", &[], "", path);
        assert!(m.contains("nothing on the console"), "{m}");
        let long: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let m = qemu_died("signal: 11 (SIGSEGV)", &[], &long, path);
        assert!(m.contains("line 49") && !m.contains("line 29\n"), "{m}");
    }
}
