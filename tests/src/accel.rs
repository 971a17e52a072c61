//! Choosing between KVM and TCG. /dev/kvm exists on these machines but the CPU offers no
//! vmx/svm, and a KVM guest then hangs at "Decompressing Linux": trust KVM only when the
//! CPU flags say so, and let the runner fall back to TCG when a KVM boot shows no sign of
//! life.

use std::fmt;

/// The QEMU accelerator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation (always works, slower).
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// The accelerator to use and why. `PEERDMA_ACCEL=tcg|kvm` overrides the detection.
pub fn choose() -> (Accel, String) {
    match std::env::var("PEERDMA_ACCEL").as_deref() {
        Ok("tcg") => return (Accel::Tcg, "PEERDMA_ACCEL=tcg".into()),
        Ok("kvm") => return (Accel::Kvm, "PEERDMA_ACCEL=kvm".into()),
        _ => {}
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    choose_from(&cpuinfo, kvm_openable())
}

fn kvm_openable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// The decision from /proc/cpuinfo's text and whether /dev/kvm opens.
pub fn choose_from(cpuinfo: &str, kvm_dev: bool) -> (Accel, String) {
    let virt = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    match (kvm_dev, virt) {
        (true, true) => (Accel::Kvm, "/dev/kvm opens and the CPU has vmx/svm".into()),
        (true, false) => (
            Accel::Tcg,
            "/dev/kvm exists but the CPU offers no vmx/svm (a KVM guest would hang)".into(),
        ),
        (false, _) => (Accel::Tcg, "/dev/kvm is absent or not accessible".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_needs_both_the_device_and_the_cpu_flag() {
        let with = "processor: 0\nflags\t\t: fpu vme vmx sse\n";
        let without = "processor: 0\nflags\t\t: fpu vme sse hypervisor\n";
        assert_eq!(choose_from(with, true).0, Accel::Kvm);
        assert_eq!(choose_from(without, true).0, Accel::Tcg);
        assert!(choose_from(without, true).1.contains("no vmx/svm"));
        assert_eq!(choose_from(with, false).0, Accel::Tcg);
    }
}
