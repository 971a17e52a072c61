//! `peerdma-testbed`: boot a real kernel under QEMU with emulated PCI devices behind a
//! vIOMMU, bind them to vfio-pci and run a command inside.
//!
//! The same binary is the guest's init: run as PID 1 it sets the guest up instead.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use peerdma_testbed::devices::{DeviceList, Topology};
use peerdma_testbed::kernel::KernelChoice;
use peerdma_testbed::pair::{Pair, WireOptions};
use peerdma_testbed::vm::{Testbed, VmOptions, INTERRUPTED};

#[derive(Parser)]
#[command(
    name = "peerdma-testbed",
    version,
    about = "Boot a real kernel under QEMU with emulated PCI devices bound to vfio-pci, and run a command inside"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot the VM, run CMD as root in the guest (in this directory), exit with its status.
    Run {
        #[command(flatten)]
        vm: VmArgs,
        /// Print the run's summary (BDFs, timings) as JSON on stderr at the end.
        #[arg(long)]
        json: bool,
        /// Extra kernel command-line argument (repeatable).
        #[arg(long = "append", value_name = "ARG")]
        kernel_args: Vec<String>,
        /// Environment variable for CMD, KEY=VALUE (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
        env: Vec<(String, String)>,
        /// Boot a second VM (VM 1) with these devices beside the first (VM 0), the
        /// first NIC of each joined by a wire (both lists need igb, e1000e or
        /// virtio-net); the guests see PEERDMA_VM_INDEX. Each VM's output is printed
        /// when both have finished; the exit status is VM 0's, else VM 1's.
        #[arg(long, value_name = "LIST")]
        peer_devices: Option<DeviceList>,
        /// VM 1's command, one word each (repeatable: `--peer-arg=sh --peer-arg=-c
        /// --peer-arg='...'`); default: the same command as VM 0.
        #[arg(
            long = "peer-arg",
            value_name = "ARG",
            allow_hyphen_values = true,
            requires = "peer_devices"
        )]
        peer_cmd: Vec<String>,
        /// Write the wire's capture (every frame either VM sent, classic pcap) to PATH.
        #[arg(long, value_name = "PATH", requires = "peer_devices")]
        wire_pcap: Option<PathBuf>,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Boot the VM with an interactive shell on this terminal (exit the shell to power off).
    Shell {
        #[command(flatten)]
        vm: VmArgs,
    },
    /// Resolve (fetch or build) a kernel and say where it came from.
    Kernel {
        /// reference, stock, ahead or a path to a bzImage.
        #[arg(long, default_value = "reference")]
        kernel: KernelChoice,
    },
    /// Install the host packages a suite needs when missing (as root; else print the
    /// commands): `vulkan` (libvulkan1, Mesa's lavapipe from backports), `rdma` (rdma-core's
    /// libraries, headers and providers, iproute2's `rdma`, perftest).
    HostPackages {
        /// Which set.
        #[arg(value_parser = ["vulkan", "rdma"])]
        set: String,
    },
    /// Internal: the guest's init (run automatically as PID 1 in the VM).
    #[command(hide = true)]
    GuestInit,
}

#[derive(Args)]
struct VmArgs {
    /// reference (Debian linux-source 7.2 + the project's fragment), stock (Debian's
    /// linux-image 7.2), ahead (reference + two posted, not-upstream series: dma-buf
    /// mmap/REVOKE/MEMATTR, io_uring dma-buf I/O; tests/kernel/ahead.md) or a path to a
    /// bzImage.
    #[arg(long, default_value = "reference")]
    kernel: KernelChoice,
    /// Devices: KIND[:SIZE][=ROLE],... with KIND one of ivshmem, edu, nvme, nvme-md,
    /// nvme-kernel, gpu, gpu-noblob, igb, e1000e, virtio-net.
    #[arg(long, default_value = peerdma_testbed::devices::DEFAULT_DEVICES)]
    devices: DeviceList,
    /// root (each device on the root bus, own IOMMU group), switch (behind one PCIe
    /// switch), mixed (the first device behind the switch, the others on the root bus) or
    /// multifunction (the first two devices are functions 0 and 1 of slot 10, one IOMMU
    /// group).
    #[arg(long, default_value = "root")]
    topology: Topology,
    /// on: intel-iommu vIOMMU; off: vfio noiommu mode.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    iommu: String,
    /// Keep the run's scratch (backing files, console log, testbed.json) in DIR.
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Seconds before the run is killed (boot included).
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    memory: u64,
    /// Guest CPUs (QEMU 10.0.2's TCG was seen to abort with two during revoke tests).
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// QEMU -cpu model (default: max under TCG, host under KVM). EPYC (or
    /// max,vendor=AuthenticAMD,family=23) is an AMD Zen, which Linux trusts to route
    /// P2P through any host bridge; max reports family 6.
    #[arg(long, value_name = "MODEL")]
    cpu_model: Option<String>,
    /// Where the host has no /dev/udmabuf, run a `gpu` device (virtio-gpu with blob
    /// resources) on the testbed's udmabuf emulation, preloaded into QEMU (said on stderr
    /// when used).
    #[arg(long)]
    emulate_udmabuf: bool,
    /// Create an NVMe device's image in the scratch before boot: ROLE=pattern:SEED (the
    /// p2pcopy pattern), ROLE=file:PATH or ROLE=zero (repeatable).
    #[arg(long = "nvme-image", value_name = "ROLE=SOURCE")]
    nvme_images: Vec<peerdma_testbed::image::ImageSeed>,
    /// The NVMe devices' CAP.MQES (0-based: queues of N + 1 entries; QEMU's default 2047).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    nvme_mqes: Option<u16>,
    /// A raw QEMU argument appended after the devices (repeatable; one word each:
    /// `--qemu-arg=-device --qemu-arg=pci-testdev`): a one-off device the registry
    /// lacks; the guest neither binds nor describes it.
    #[arg(long = "qemu-arg", value_name = "ARG", allow_hyphen_values = true)]
    qemu_args: Vec<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

impl VmArgs {
    fn options(self, stream: bool) -> VmOptions {
        VmOptions {
            kernel: self.kernel,
            devices: self.devices,
            topology: self.topology,
            iommu: self.iommu == "on",
            scratch: self.scratch,
            timeout: Duration::from_secs(self.timeout),
            memory_mib: self.memory,
            cpus: self.cpus,
            cpu_model: self.cpu_model,
            emulate_udmabuf: self.emulate_udmabuf,
            stream,
            nvme_images: self.nvme_images,
            nvme_mqes: self.nvme_mqes,
            extra_qemu_args: self.qemu_args,
            ..VmOptions::default()
        }
    }
}

fn install_signal_handlers() {
    extern "C" fn on_signal(_: nix::libc::c_int) {
        INTERRUPTED.store(true, Ordering::Relaxed);
    }
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_signal),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    for sig in [nix::sys::signal::SIGINT, nix::sys::signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let _ = unsafe { nix::sys::signal::sigaction(sig, &action) };
    }
}

/// `run --peer-devices`: two VMs joined by a wire. With `--scratch DIR`, VM 0's scratch
/// is DIR/vm0, VM 1's DIR/vm1 and the wire's DIR/wire.
/// What a run ended with, on stderr: its kernel's warnings, the exit status and times,
/// a kept scratch (`who`: "" for one VM, "VM 1: " in a pair).
fn say_outcome(who: &str, cmd: &str, o: &peerdma_testbed::vm::RunOutcome) {
    for w in &o.kernel_warnings {
        eprintln!("testbed: {who}kernel warning: {w}");
    }
    eprintln!(
        "testbed: {who}{cmd} exited with {} (boot to test start {:.1} s, whole run {:.1} s, {})",
        o.status, o.boot_to_test_s, o.wall_s, o.accel
    );
    if o.scratch.is_kept() {
        eprintln!(
            "testbed: {who}scratch kept in {}",
            o.scratch.path().display()
        );
    }
}

fn run_pair(
    a: VmOptions,
    peer_devices: DeviceList,
    cmd: &[String],
    peer_cmd: &[String],
    wire_pcap: Option<PathBuf>,
    json: bool,
) -> Result<u8> {
    let sub = |name: &str| a.scratch.as_ref().map(|d| d.join(name));
    let b = VmOptions {
        devices: peer_devices,
        scratch: sub("vm1"),
        ..a.clone()
    };
    let wire = WireOptions {
        pcap: wire_pcap.is_some(),
        dir: sub("wire"),
    };
    let a = VmOptions {
        scratch: sub("vm0"),
        ..a
    };
    let pair = Pair::new(a, b, wire)?;
    let k = pair.vm(0).kernel();
    eprintln!("testbed: kernel {} ({})", k.version, k.source);
    let out = pair.run(cmd, peer_cmd)?;
    for (i, (o, c)) in [(&out.a, cmd), (&out.b, peer_cmd)].into_iter().enumerate() {
        println!("--- VM {i}: {} ---", c.join(" "));
        print!("{}", o.output);
        say_outcome(&format!("VM {i}: "), &c[0], o);
    }
    if let (Some(to), Some(from)) = (&wire_pcap, &out.pcap) {
        std::fs::copy(from, to)
            .map_err(|e| anyhow::anyhow!("copying the wire capture to {}: {e}", to.display()))?;
        eprintln!("testbed: wire capture in {}", to.display());
    }
    if json {
        eprintln!(
            "{}",
            serde_json::json!({
                "status": [out.a.status, out.b.status],
                "wall_s": [out.a.wall_s, out.b.wall_s],
                "manifest": [&out.a.manifest, &out.b.manifest],
            })
        );
    }
    let status = if out.a.status != 0 {
        out.a.status
    } else {
        out.b.status
    };
    Ok(status.clamp(0, 255) as u8)
}

fn main() -> ExitCode {
    if std::process::id() == 1 {
        peerdma_testbed::guest::run_as_init();
    }
    match real_main() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("peerdma-testbed: error: {e:#}");
            ExitCode::from(125)
        }
    }
}

fn real_main() -> Result<u8> {
    let cli = Cli::parse();
    install_signal_handlers();
    match cli.command {
        Cmd::Run {
            vm,
            json,
            kernel_args,
            env,
            cmd,
            peer_devices,
            peer_cmd,
            wire_pcap,
        } => {
            let mut options = vm.options(peer_devices.is_none());
            options.kernel_args = kernel_args;
            options.env = env;
            if let Some(devices) = peer_devices {
                let peer_cmd = if peer_cmd.is_empty() {
                    cmd.clone()
                } else {
                    peer_cmd
                };
                return run_pair(options, devices, &cmd, &peer_cmd, wire_pcap, json);
            }
            let testbed = Testbed::new(options)?;
            let k = testbed.kernel();
            eprintln!("testbed: kernel {} ({})", k.version, k.source);
            let out = testbed.run(&cmd)?;
            say_outcome("", &cmd[0], &out);
            if json {
                eprintln!(
                    "{}",
                    serde_json::json!({
                        "status": out.status,
                        "boot_to_test_s": out.boot_to_test_s,
                        "wall_s": out.wall_s,
                        "accel": out.accel.to_string(),
                        "console_log": out.console_log,
                        "manifest": out.manifest,
                    })
                );
            }
            Ok(out.status.clamp(0, 255) as u8)
        }
        Cmd::Shell { vm } => {
            let testbed = Testbed::new(vm.options(true))?;
            let out = testbed.shell()?;
            Ok(out.status.clamp(0, 255) as u8)
        }
        Cmd::Kernel { kernel } => {
            let k = peerdma_testbed::kernel::resolve(&kernel)?;
            let line = format!(
                "{}\n",
                serde_json::json!({
                    "version": k.version,
                    "image": k.image,
                    "initrd": k.initrd,
                    "modules_root": k.modules_root,
                    "has_iommufd": k.has_iommufd,
                    "source": k.source,
                    "cache": peerdma_testbed::cache::dir()?,
                    "cache_bytes": peerdma_testbed::cache::du(&peerdma_testbed::cache::dir()?),
                })
            );
            // A closed stdout (`| head -c0`) is the reader's choice, not an error: this
            // process may own QEMU, so it never dies of SIGPIPE and checks the write.
            match std::io::Write::write_all(&mut std::io::stdout(), line.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
                _ => {}
            }

            Ok(0)
        }
        Cmd::HostPackages { set } => {
            let pkgs = match set.as_str() {
                "rdma" => peerdma_testbed::host::RDMA,
                _ => peerdma_testbed::host::VULKAN,
            };
            peerdma_testbed::host::ensure_packages(pkgs)?;
            Ok(0)
        }
        Cmd::GuestInit => peerdma_testbed::guest::run_as_init(),
    }
}
