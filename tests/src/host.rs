//! Host tools the testbed needs (QEMU, busybox, kmod, a kernel tool chain), checked by a
//! command or file each package provides, and installed with apt-get when missing.
//!
//! Installing needs root. As root, missing packages are installed (`apt-get update` runs
//! at most once per process; packages that must come from the distribution's backports
//! suite get a sources entry under `/etc/apt/sources.list.d` first if none exists).
//! Otherwise the error names the exact command to run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

/// How the presence of a host package is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// A command found in `PATH` (or in `/usr/sbin`, `/sbin`, which a user's `PATH` may lack).
    Command(&'static str),
    /// A command whose `--version` output carries a version of at least `min_major`.
    CommandVersion {
        /// The command, looked up like [`Probe::Command`].
        command: &'static str,
        /// The lowest acceptable major version.
        min_major: u32,
    },
    /// An absolute file path that must exist.
    File(&'static str),
}

/// A Debian package the testbed needs on the host, with the way to tell it is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPackage {
    /// The Debian package name, as given to `apt-get install`.
    pub package: &'static str,
    /// What the package provides that the testbed checks for.
    pub probe: Probe,
    /// Whether it must come from `<codename>-backports` (e.g. QEMU 10 on bookworm).
    pub backports: bool,
}

impl HostPackage {
    /// A package from the distribution's main suite, checked by a command.
    pub const fn command(package: &'static str, command: &'static str) -> Self {
        HostPackage {
            package,
            probe: Probe::Command(command),
            backports: false,
        }
    }

    /// A package from the distribution's main suite, checked by a file.
    pub const fn file(package: &'static str, path: &'static str) -> Self {
        HostPackage {
            package,
            probe: Probe::File(path),
            backports: false,
        }
    }

    /// Whether the package's probe succeeds on this host.
    pub fn present(&self) -> bool {
        match self.probe {
            Probe::Command(c) => find_command(c).is_some(),
            Probe::File(f) => Path::new(f).exists(),
            Probe::CommandVersion { command, min_major } => find_command(command)
                .and_then(|p| command_major_version(&p))
                .is_some_and(|v| v >= min_major),
        }
    }

    fn describe(&self) -> String {
        match self.probe {
            Probe::Command(c) => format!("{} (command {c})", self.package),
            Probe::File(f) => format!("{} ({f})", self.package),
            Probe::CommandVersion { command, min_major } => {
                format!("{} ({command} >= {min_major})", self.package)
            }
        }
    }
}

/// The lowest QEMU major version the testbed supports.
pub const QEMU_MIN_MAJOR: u32 = 10;

/// QEMU for x86_64 guests, at least [`QEMU_MIN_MAJOR`] (bookworm has it in backports only).
pub const QEMU: HostPackage = HostPackage {
    package: "qemu-system-x86",
    probe: Probe::CommandVersion {
        command: "qemu-system-x86_64",
        min_major: QEMU_MIN_MAJOR,
    },
    backports: true,
};

/// The firmware and data files QEMU needs to boot a q35 machine (same suite as QEMU).
pub const QEMU_DATA: &[HostPackage] = &[
    HostPackage {
        package: "qemu-system-data",
        probe: Probe::File("/usr/share/qemu/kvmvapic.bin"),
        backports: true,
    },
    HostPackage {
        package: "ipxe-qemu",
        probe: Probe::File("/usr/lib/ipxe/qemu/efi-virtio.rom"),
        backports: false,
    },
    HostPackage {
        package: "seabios",
        probe: Probe::File("/usr/share/seabios/bios-256k.bin"),
        backports: false,
    },
];

/// A statically linked busybox, for the stock kernel's initramfs.
pub const BUSYBOX_STATIC: HostPackage = HostPackage::file("busybox-static", "/bin/busybox");

/// kmod: `depmod` on the host (module indexes for the stock kernel) and `modprobe` in the
/// guest, whose root file system is the host's.
pub const KMOD: HostPackage = HostPackage::command("kmod", "depmod");

/// xz, to decompress Debian's `.ko.xz` modules and the kernel source tarball.
pub const XZ: HostPackage = HostPackage::command("xz-utils", "xz");

/// gzip, to compress the initramfs.
pub const GZIP: HostPackage = HostPackage::command("gzip", "gzip");

/// The Vulkan loader and Mesa's Vulkan drivers, lavapipe among them: for the Vulkan unit
/// tests (`cargo test -p peerdma-importer --features vulkan`) and the `vulkan` suite, whose
/// guest loads the host's Mesa. bookworm-backports has Mesa 25, whose lavapipe has
/// `VK_EXT_external_memory_dma_buf`; bookworm's 22.3 does not.
pub const VULKAN: &[HostPackage] = &[
    HostPackage::file("libvulkan1", "/usr/lib/x86_64-linux-gnu/libvulkan.so.1"),
    HostPackage {
        package: "mesa-vulkan-drivers",
        probe: Probe::File("/usr/share/vulkan/icd.d/lvp_icd.json"),
        backports: true,
    },
];

/// rdma-core for the `rdma` feature of peerdma-importer (it links libibverbs and librdmacm;
/// its layout test compiles against their headers) and for the `rdma` suite, whose guest
/// (the host's root file system) loads the rxe provider and runs perftest and iproute2's
/// `rdma`.
pub const RDMA: &[HostPackage] = &[
    HostPackage::file("libibverbs-dev", "/usr/include/infiniband/verbs.h"),
    HostPackage::file("librdmacm-dev", "/usr/include/rdma/rdma_cma.h"),
    HostPackage::file(
        "ibverbs-providers",
        "/usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav34.so",
    ),
    HostPackage::file("rdma-core", "/etc/rdma/modules/rdma.conf"),
    HostPackage::command("perftest", "ib_write_bw"),
    HostPackage::command("iproute2", "rdma"),
    HostPackage::command("build-essential", "cc"),
];

/// What building the reference kernel from source needs.
pub const KERNEL_BUILD_DEPS: &[HostPackage] = &[
    HostPackage::command("build-essential", "cc"),
    HostPackage::command("build-essential", "make"),
    HostPackage::command("bc", "bc"),
    HostPackage::command("flex", "flex"),
    HostPackage::command("bison", "bison"),
    HostPackage::file("libssl-dev", "/usr/include/openssl/ssl.h"),
    HostPackage::file("libelf-dev", "/usr/include/libelf.h"),
    HostPackage::command("cpio", "cpio"),
    HostPackage::command("zstd", "zstd"),
    HostPackage::command("xz-utils", "xz"),
    HostPackage::command("dwarves", "pahole"),
    HostPackage::command("tar", "tar"),
];

/// Looks `name` up in `PATH`, then in the sbin directories a non-root `PATH` may lack.
pub fn find_command(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The major version in a `--version` output such as `QEMU emulator version 10.0.2 (...)`.
pub fn parse_major_version(text: &str) -> Option<u32> {
    let line = text.lines().next()?;
    let after = match line.find("version ") {
        Some(i) => &line[i + "version ".len()..],
        None => line,
    };
    let word = after.split_whitespace().next()?;
    word.split('.').next()?.parse().ok()
}

fn command_major_version(cmd: &Path) -> Option<u32> {
    let out = Command::new(cmd).arg("--version").output().ok()?;
    parse_major_version(&String::from_utf8_lossy(&out.stdout))
}

/// The `VERSION_CODENAME` of the host distribution (e.g. `bookworm`).
pub fn codename() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Serializes installs between threads of this process; apt has its own lock between
/// processes (`DPkg::Lock::Timeout` waits on it).
static INSTALL: Mutex<bool> = Mutex::new(false); // true once `apt-get update` ran

/// Makes sure every package in `pkgs` is present; installs what is missing with apt-get
/// when running as root, else fails naming the exact command to run.
pub fn ensure_packages(pkgs: &[HostPackage]) -> Result<()> {
    let missing: Vec<HostPackage> = pkgs.iter().copied().filter(|p| !p.present()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let codename = codename().unwrap_or_else(|| "bookworm".into());
    let backports = format!("{codename}-backports");
    let what = missing
        .iter()
        .map(|p| p.describe())
        .collect::<Vec<_>>()
        .join(", ");
    if !is_root() {
        let cmds = install_commands(&missing, &backports, backports_configured(&backports));
        bail!(
            "the testbed needs host packages that are missing: {what}. Install them with:\n    {}",
            cmds.join("\n    ")
        );
    }
    let mut updated = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    // Another thread may have installed them meanwhile.
    let missing: Vec<HostPackage> = missing.into_iter().filter(|p| !p.present()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let (bp, main): (Vec<&HostPackage>, Vec<&HostPackage>) =
        missing.iter().partition(|p| p.backports);
    eprintln!("testbed: installing missing host packages: {what}");
    if !bp.is_empty() && !backports_configured(&backports) {
        let file = format!("/etc/apt/sources.list.d/{backports}.sources");
        eprintln!("testbed: adding {backports} to apt ({file})");
        std::fs::write(
            &file,
            format!(
                "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: {backports}\n\
                 Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
            ),
        )
        .with_context(|| format!("writing {file}"))?;
        *updated = false;
    }
    if !*updated {
        apt(&["update"])?;
        *updated = true;
    }
    if !main.is_empty() {
        let mut args = vec!["install", "-y", "--no-install-recommends"];
        args.extend(main.iter().map(|p| p.package));
        apt(&args)?;
    }
    if !bp.is_empty() {
        let mut args = vec![
            "install",
            "-y",
            "--no-install-recommends",
            "-t",
            backports.as_str(),
        ];
        args.extend(bp.iter().map(|p| p.package));
        apt(&args)?;
    }
    let still: Vec<String> = missing
        .iter()
        .filter(|p| !p.present())
        .map(|p| p.describe())
        .collect();
    if !still.is_empty() {
        bail!(
            "apt-get installed the packages but these are still missing: {}",
            still.join(", ")
        );
    }
    Ok(())
}

/// The shell commands that install `missing` (for a user who is not root).
pub fn install_commands(
    missing: &[HostPackage],
    backports: &str,
    backports_configured: bool,
) -> Vec<String> {
    let names = |bp: bool| {
        let mut n: Vec<&str> = missing
            .iter()
            .filter(|p| p.backports == bp)
            .map(|p| p.package)
            .collect();
        n.sort_unstable();
        n.dedup();
        n.join(" ")
    };
    let (main, bp) = (names(false), names(true));
    let mut cmds = Vec::new();
    if !bp.is_empty() && !backports_configured {
        cmds.push(format!(
            "echo 'deb http://deb.debian.org/debian {backports} main' | sudo tee \
             /etc/apt/sources.list.d/{backports}.list"
        ));
    }
    cmds.push("sudo apt-get update".into());
    if !main.is_empty() {
        cmds.push(format!("sudo apt-get install -y {main}"));
    }
    if !bp.is_empty() {
        cmds.push(format!("sudo apt-get install -y -t {backports} {bp}"));
    }
    cmds
}

fn backports_configured(suite: &str) -> bool {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources")),
        );
    }
    files.iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .any(|l| l.split_whitespace().any(|w| w == suite))
        })
    })
}

fn apt(args: &[&str]) -> Result<()> {
    eprintln!("testbed: apt-get {}", args.join(" "));
    let status = Command::new("apt-get")
        .args(["-q", "-o", "DPkg::Lock::Timeout=600"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        // Progress belongs on stderr: stdout may carry a command's machine-readable output.
        .stdout(std::io::stderr())
        .status()
        .context("running apt-get (is this a Debian host?)")?;
    if !status.success() {
        bail!("apt-get {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The QEMU x86_64 system emulator, at least version [`QEMU_MIN_MAJOR`], installed with its
/// firmware if missing. `PEERDMA_QEMU` names another binary (used as is, version checked).
pub fn qemu_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PEERDMA_QEMU") {
        let p = PathBuf::from(p);
        let v = command_major_version(&p).with_context(|| {
            format!(
                "PEERDMA_QEMU={} does not run or print a version",
                p.display()
            )
        })?;
        if v < QEMU_MIN_MAJOR {
            bail!(
                "PEERDMA_QEMU={} is QEMU {v}; the testbed needs {QEMU_MIN_MAJOR} or newer",
                p.display()
            );
        }
        return Ok(p);
    }
    let mut pkgs = vec![QEMU];
    pkgs.extend_from_slice(QEMU_DATA);
    ensure_packages(&pkgs)?;
    find_command("qemu-system-x86_64").context("qemu-system-x86_64 vanished after installing it")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_version_parses() {
        let t = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n\
                 Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers\n";
        assert_eq!(parse_major_version(t), Some(10));
        assert_eq!(
            parse_major_version("QEMU emulator version 7.2.15 (Debian)"),
            Some(7)
        );
        assert_eq!(parse_major_version(""), None);
        assert_eq!(parse_major_version("no digits here"), None);
    }

    #[test]
    fn install_commands_for_a_user() {
        let cmds = install_commands(
            &[QEMU, BUSYBOX_STATIC, KMOD, BUSYBOX_STATIC],
            "bookworm-backports",
            false,
        );
        assert_eq!(
            cmds,
            [
                "echo 'deb http://deb.debian.org/debian bookworm-backports main' | sudo tee \
                 /etc/apt/sources.list.d/bookworm-backports.list",
                "sudo apt-get update",
                "sudo apt-get install -y busybox-static kmod",
                "sudo apt-get install -y -t bookworm-backports qemu-system-x86",
            ]
        );
        let cmds = install_commands(&[KMOD], "bookworm-backports", true);
        assert_eq!(
            cmds,
            ["sudo apt-get update", "sudo apt-get install -y kmod"]
        );
    }

    #[test]
    fn sh_is_found() {
        assert!(find_command("sh").is_some());
        assert!(HostPackage::file("x", "/").present());
        assert!(!HostPackage::command("x", "peerdma-no-such-command").present());
    }
}
