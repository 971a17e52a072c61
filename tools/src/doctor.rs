//! `peerdma doctor`: read-only checks of everything peer-to-peer DMA over
//! dma-buf needs on this machine — kernel release and build options, the
//! IOMMU, vfio-pci, each named device (driver, IOMMU group, BARs, MSI-X), the
//! paths between them, and the importers that could take their buffers.
//!
//! Each device is checked for its role, read from its driver: a device whose
//! kernel driver offers a DRM card, an RDMA device or an NVMe controller is an
//! importer and stays on that driver; any other device is an exporter (or a DMA
//! engine), which must be bound to vfio-pci.
//!
//! The facts come from the libraries (`peerdma_host::kernel`,
//! `peerdma_host::atlas`, `Sysfs::p2p_route`); this module turns them into
//! checks, each with a pass/fail status and the fix. Nothing here writes, except
//! [`posted_features`], which the binary runs after [`run`]: it opens one named
//! vfio-pci device and tries the posted kernel series' features on a throwaway one-page
//! dma-buf of it (the device and its other dma-bufs are untouched).

use std::path::Path;

use peerdma_exporter::MsixLayout;
use peerdma_host::atlas::Atlas;
use peerdma_host::kernel::{
    config_search_paths, driver_exports_dma_buf, group_blockers, HostPaths, IommuFacts,
    KernelFacts, OptionState, KERNEL_OPTIONS, MIN_RELEASE,
};
use peerdma_host::p2pdma::HostCpu;
use peerdma_host::pci_caps::capabilities;
use peerdma_host::sysfs::PciDevice;
use peerdma_host::Bdf;
use serde_json::{json, Value};

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// As needed.
    Pass,
    /// Missing or wrong: the fix says what to do.
    Fail,
    /// Works for some importers, not others: the fix says what widens it.
    Warn,
    /// A fact worth knowing; neither.
    Info,
}

impl Status {
    /// `pass`, `FAIL`, `warn`, `info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Warn => "warn",
            Status::Info => "info",
        }
    }
}

/// One check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// The group it belongs to: `kernel`, `iommu`, `device BDF`, `importers` …
    pub section: String,
    /// What was checked.
    pub name: String,
    /// The outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about a failure.
    pub fix: Option<String>,
}

/// All checks, in order.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The checks.
    pub checks: Vec<Check>,
}

impl Report {
    fn push(&mut self, section: &str, name: &str, status: Status, detail: String) {
        self.checks.push(Check {
            section: section.to_string(),
            name: name.to_string(),
            status,
            detail,
            fix: None,
        });
    }

    fn fail(&mut self, section: &str, name: &str, detail: String, fix: String) {
        self.push_with_fix(section, name, Status::Fail, detail, fix);
    }

    fn push_with_fix(
        &mut self,
        section: &str,
        name: &str,
        status: Status,
        detail: String,
        fix: String,
    ) {
        self.checks.push(Check {
            section: section.to_string(),
            name: name.to_string(),
            status,
            detail,
            fix: Some(fix),
        });
    }

    /// The first check named `name` in `section`.
    pub fn find(&self, section: &str, name: &str) -> Option<&Check> {
        self.checks
            .iter()
            .find(|c| c.section == section && c.name == name)
    }

    /// Whether any check failed.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    /// As JSON: `{"checks": [...], "failed": N}`.
    pub fn to_json(&self) -> Value {
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(|c| {
                json!({
                    "section": c.section,
                    "name": c.name,
                    "status": c.status.as_str().to_lowercase(),
                    "detail": c.detail,
                    "fix": c.fix,
                })
            })
            .collect();
        let failed = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count();
        json!({ "checks": checks, "failed": failed })
    }

    /// As text: one line per check under its section, the fix below a failure.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let mut section = "";
        for c in &self.checks {
            if c.section != section {
                section = &c.section;
                s.push_str(&format!("{section}\n"));
            }
            s.push_str(&format!(
                "  [{:<4}] {}: {}\n",
                c.status.as_str(),
                c.name,
                c.detail
            ));
            if let Some(fix) = &c.fix {
                s.push_str(&format!("         fix: {fix}\n"));
            }
        }
        let failed = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count();
        let warned = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Warn)
            .count();
        s.push_str(&format!(
            "{} checks, {failed} failed, {warned} with a warning\n",
            self.checks.len()
        ));
        s
    }
}

/// Runs every check on `host` for the devices `bdfs` (the paths between the
/// first and each other one too), judging P2P for `cpu`.
pub fn run(host: &HostPaths, bdfs: &[Bdf], cpu: HostCpu) -> Report {
    let mut r = Report::default();
    kernel(&mut r, host);
    let iommu = IommuFacts::read(host);
    iommu_checks(&mut r, host, &iommu);
    let sys = host.sysfs();
    let roles: Vec<Option<Importer>> = bdfs
        .iter()
        .map(|bdf| Importer::of(&sys.device_path(*bdf), sys.device(*bdf).ok()?.driver?))
        .collect();
    for (bdf, role) in bdfs.iter().zip(&roles) {
        match role {
            Some(importer) => importer_device(&mut r, *bdf, importer),
            None => device(&mut r, host, *bdf, &iommu),
        }
    }
    if let Some((first, rest)) = bdfs.split_first() {
        let sys = host.sysfs();
        for (other, role) in rest.iter().zip(&roles[1..]) {
            let name = format!("{first} → {other}");
            // A DRM, RDMA or NVMe importer (the kernel's nvme driver through io_uring
            // dma-buf I/O) maps the BAR through the DMA API, only where the kernel's
            // P2P distance check allows it.
            let distance_checked = role.is_some();
            match sys.p2p_route_on(*first, *other, cpu) {
                Ok(route) => {
                    if route.same_iommu_group {
                        let group = route.a.iommu_group.unwrap_or_default();
                        r.push(
                            "paths",
                            &format!("{name} IOMMU group"),
                            Status::Info,
                            format!(
                                "{first} and {other} share IOMMU group {group}: one process \
                                 opens both (through one iommufd, or one group fd, as peerdma's \
                                 tools do); two processes cannot hold them at once"
                            ),
                        );
                    }
                    let detail = crate::route::summary(&route);
                    let blockers = route.blockers();
                    if route.verdict.allowed() {
                        r.push("paths", &name, Status::Pass, detail);
                    } else {
                        let fix = blockers
                            .iter()
                            .map(|b| b.fix(route.cpu.hypervisor))
                            .collect::<Vec<_>>()
                            .join("; ");
                        if distance_checked {
                            let kind = role.as_ref().map_or("", |i| i.kind.as_str());
                            r.fail(
                                "paths",
                                &name,
                                format!(
                                    "{detail}: the {kind} importer {other} cannot map {first}'s \
                                     BAR (EINVAL)"
                                ),
                                fix,
                            );
                            continue;
                        }
                        // iommufd imports (the DMA engines' path) skip the distance
                        // check and work on this path; only DRM and RDMA refuse it.
                        r.push_with_fix(
                            "paths",
                            &name,
                            Status::Warn,
                            if Atlas::read(host).iommufd {
                                format!(
                                    "{detail}: DRM and RDMA importers refuse it; iommufd imports \
                                     (DMA engines) do not check it and work"
                                )
                            } else {
                                format!(
                                    "{detail}: DRM and RDMA importers refuse it; iommufd imports \
                                     (DMA engines) would not check it, but this kernel has no \
                                     iommufd (see CONFIG_IOMMUFD under kernel)"
                                )
                            },
                            fix,
                        );
                    }
                }
                Err(e) => {
                    let (detail, fix) = detail_and_fix(&e);
                    r.fail("paths", &name, detail, fix)
                }
            }
        }
    }
    importers(&mut r, host);
    r
}

/// The section of the posted-series rows.
pub const POSTED_SECTION: &str = "kernel features not upstream";

/// Probes the features of the posted series (`peerdma_exporter::posted`) on the first of
/// `bdfs` that is bound to vfio-pci and has a memory BAR whose first page exports, and
/// adds one row per feature (Info: present or absent, never a failure: nothing in
/// peerdma needs them; Warn when the kernel answers neither way). Without such a device
/// one row says how to have them probed.
pub fn posted_features(r: &mut Report, host: &HostPaths, bdfs: &[Bdf]) {
    use peerdma_exporter::posted::{PostedFeature, Probe, SERIES};
    let sys = host.sysfs();
    let page = rustix::param::page_size() as u64;
    let mut why_not = Vec::new();
    for &bdf in bdfs {
        let Ok(d) = sys.device(bdf) else { continue };
        if d.driver.as_deref() != Some("vfio-pci") {
            continue;
        }
        let bars: Vec<u32> = (0..6u32)
            .filter(|&i| {
                d.resources
                    .get(i as usize)
                    .is_some_and(|res| res.is_mem() && res.size() >= page)
            })
            .collect();
        let device = match peerdma_exporter::Device::open(bdf) {
            Ok(device) => device,
            Err(e) => {
                why_not.push(format!("{bdf} does not open: {}", detail_and_fix(&e).0));
                continue;
            }
        };
        for bar in bars {
            match device.probe_posted_features(bar) {
                Ok(found) => {
                    for f in PostedFeature::ALL {
                        let probe = found.get(f);
                        let status = match probe {
                            Probe::Unclear { .. } => Status::Warn,
                            _ => Status::Info,
                        };
                        let detail = format!("{probe} (probed on {bdf} BAR{bar}); series {SERIES}");
                        match probe {
                            Probe::Unclear { .. } => r.push_with_fix(
                                POSTED_SECTION,
                                f.name(),
                                status,
                                detail,
                                "the kernel gives this feature number another meaning or                                  carries another version of the series: peerdma will not use it"
                                    .to_string(),
                            ),
                            _ => r.push(POSTED_SECTION, f.name(), status, detail),
                        }
                    }
                    // What it means for the importers that map a buffer themselves.
                    let vulkan = if found.mmap.is_present() {
                        "a CPU implementation (lavapipe) can import a BAR dma-buf: it mmaps the \
                         buffer, which this kernel allows"
                    } else {
                        "a CPU implementation (lavapipe) cannot import a BAR dma-buf: it mmaps \
                         the buffer, which this kernel refuses (GPU drivers import by DMA)"
                    };
                    r.push(
                        "importers",
                        "Vulkan (CPU implementations)",
                        Status::Info,
                        vulkan.to_string(),
                    );
                    return;
                }
                Err(e) => why_not.push(format!("{bdf} BAR{bar}: {}", detail_and_fix(&e).0)),
            }
        }
    }
    let detail = if why_not.is_empty() {
        "not probed: name a device bound to vfio-pci with a memory BAR (peerdma doctor BDF)          and doctor tries each feature on a throwaway dma-buf of it"
            .to_string()
    } else {
        format!("not probed: {}", why_not.join("; "))
    };
    r.push(POSTED_SECTION, "probe", Status::Info, detail);
}

/// The io_uring dma-buf registration of the series "Add dmabuf read/write via io_uring"
/// (`peerdma_engine::kernel_nvme`, the `blk:` side of p2pcopy), probed by behaviour on a
/// throwaway io_uring (no device needed): one row in [`POSTED_SECTION`]: Info when
/// absent; Warn when present, because the posted v3 of the series can hang the exporter
/// (docs/kernel-features.md), and when io_uring itself is unusable.
pub fn io_uring_dmabuf(r: &mut Report) {
    use peerdma_engine::kernel_nvme::{probe_series, SeriesProbe, SERIES};
    const NAME: &str = "io_uring dma-buf registration";
    match probe_series() {
        Ok(SeriesProbe::Present) => r.push_with_fix(
            POSTED_SECTION,
            NAME,
            Status::Warn,
            format!(
                "present (probed on a throwaway io_uring: an IORING_RSRC_UPDATE_EXTENDED \
                 buffer update was taken); the kernel's nvme driver can move a raw namespace \
                 into a BAR's dma-buf (p2pcopy blk:); series {SERIES}; its posted v3 hangs \
                 the exporter's close and REVOKE for good after an I/O larger than the \
                 device's max_hw_sectors_kb without IOSQE_ASYNC, and a task that REVOKEs with \
                 its own dma-buf reads in flight deadlocks"
            ),
            "keep each I/O within /sys/block/DEV/queue/max_hw_sectors_kb (or set \
             IOSQE_ASYNC) and never REVOKE from the task that submits (peerdma's engine \
             does both); see docs/kernel-features.md"
                .to_string(),
        ),
        Ok(SeriesProbe::Absent { errno }) => r.push(
            POSTED_SECTION,
            NAME,
            Status::Info,
            format!(
                "absent (the kernel answered {} to an IORING_RSRC_UPDATE_EXTENDED buffer \
                 update); series {SERIES}",
                peerdma_host::errno_name(errno)
            ),
        ),
        Err(e) => {
            let (detail, fix) = detail_and_fix(&e);
            r.push_with_fix(
                POSTED_SECTION,
                NAME,
                Status::Warn,
                format!("not probed: {detail}"),
                fix,
            )
        }
    }
}

/// A library error's message as a check's detail and fix, so that the fix is printed
/// once (on the check's `fix:` line), not also at the end of the detail.
fn detail_and_fix(e: &impl std::fmt::Display) -> (String, String) {
    let msg = e.to_string();
    let (detail, fix) = crate::failure::split_fix(&msg);
    (
        detail.to_string(),
        fix.unwrap_or("see the message").to_string(),
    )
}

fn kernel(r: &mut Report, host: &HostPaths) {
    const S: &str = "kernel";
    let facts = match KernelFacts::read(host) {
        Ok(f) => f,
        Err(e) => {
            let (detail, fix) = detail_and_fix(&e);
            r.fail(S, "config", detail, fix);
            return;
        }
    };
    match &facts.release {
        Some(rel) if rel.at_least(MIN_RELEASE) => r.push(
            S,
            "release",
            Status::Pass,
            format!(
                "{} (>= {}.{}: vfio-pci exports dma-bufs)",
                rel.release, MIN_RELEASE.0, MIN_RELEASE.1
            ),
        ),
        Some(rel) => r.fail(
            S,
            "release",
            format!(
                "{} is older than {}.{}: vfio-pci cannot export dma-bufs",
                rel.release, MIN_RELEASE.0, MIN_RELEASE.1
            ),
            "boot Linux 6.19 or later (this tool is built against 7.2)".to_string(),
        ),
        None => r.fail(
            S,
            "release",
            "/proc/sys/kernel/osrelease is unreadable".to_string(),
            "mount /proc".to_string(),
        ),
    }
    let release = facts
        .release
        .as_ref()
        .map_or("RELEASE".to_string(), |r| r.release.clone());
    match &facts.config {
        Some(c) => r.push(
            S,
            "config",
            Status::Info,
            format!("read {}", c.source.display()),
        ),
        None => r.push(
            S,
            "config",
            Status::Info,
            format!(
                "none of {} is there: options are judged by what the running kernel shows",
                config_search_paths(&release)
            ),
        ),
    }
    for opt in KERNEL_OPTIONS {
        let state = facts.option(host, opt);
        if state.present() {
            r.push(
                S,
                opt.name,
                Status::Pass,
                format!("{} ({})", opt.gives, state.source()),
            );
        } else {
            let fix = match state {
                OptionState::NotSeen { .. } => format!(
                    "load its module if it is one (modprobe), else build the kernel with {}=y",
                    opt.name
                ),
                _ => format!("build the kernel with {}=y", opt.name),
            };
            r.fail(
                S,
                opt.name,
                format!("{} missing ({})", opt.gives, state.source()),
                fix,
            );
        }
    }
}

fn iommu_checks(r: &mut Report, host: &HostPaths, iommu: &IommuFacts) {
    const S: &str = "iommu";
    let cmdline = if iommu.cmdline.is_empty() {
        "no IOMMU words on the command line".to_string()
    } else {
        format!("command line: {}", iommu.cmdline.join(" "))
    };
    if iommu.present() {
        r.push(
            S,
            "present",
            Status::Pass,
            format!(
                "{} ({} groups; {cmdline})",
                iommu.units.join(", "),
                iommu.groups
            ),
        );
    } else {
        let mode = if iommu.noiommu {
            "vfio runs in unsafe no-IOMMU mode: device DMA is untranslated and iommufd cannot \
             attach devices"
        } else {
            "no IOMMU unit in /sys/class/iommu"
        };
        r.fail(
            S,
            "present",
            format!("{mode} ({cmdline})"),
            "enable VT-d/AMD-Vi in the firmware and boot with intel_iommu=on or amd_iommu=on \
             (in QEMU: -device intel-iommu,intremap=on with -machine q35,kernel-irqchip=split)"
                .to_string(),
        );
    }
    if let Some(d) = &iommu.default_domain {
        let meaning = match d.as_str() {
            "identity" => {
                "passthrough (iommu=pt): host drivers bypass translation; VFIO devices \
                           still get their own translated domain"
            }
            "DMA" | "DMA-FQ" => "translated",
            _ => "as the kernel reports it",
        };
        r.push(
            S,
            "mode",
            Status::Info,
            format!("default domain {d}: {meaning}"),
        );
    }
    if host.exists("sys/bus/pci/drivers/vfio-pci") {
        r.push(
            S,
            "vfio-pci",
            Status::Pass,
            "the vfio-pci driver is registered".to_string(),
        );
    } else {
        r.fail(
            S,
            "vfio-pci",
            "no /sys/bus/pci/drivers/vfio-pci".to_string(),
            "modprobe vfio-pci (a kernel built without CONFIG_VFIO_PCI has no such module: see \
             the kernel checks above)"
                .to_string(),
        );
    }
}

/// The kind of kernel importer a device's driver offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ImporterKind {
    Drm,
    Rdma,
    Nvme,
}

impl ImporterKind {
    fn as_str(self) -> &'static str {
        match self {
            ImporterKind::Drm => "DRM",
            ImporterKind::Rdma => "RDMA",
            ImporterKind::Nvme => "NVMe",
        }
    }
}

/// A device in the importer role: its kernel driver and the interface it offers.
#[derive(Clone, Debug)]
struct Importer {
    driver: String,
    kind: ImporterKind,
    /// The interface's name: card1, mlx5_0, nvme0.
    node: String,
}

impl Importer {
    /// The importer a device bound to `driver` is, from its sysfs directory `dir`:
    /// a DRM card (`drm/cardN`, for virtio-gpu under `virtioN/drm/`), an RDMA
    /// device (`infiniband/NAME`) or an NVMe controller (`nvme/nvmeN`); `None`
    /// for vfio drivers and drivers that offer none of those.
    fn of(dir: &Path, driver: String) -> Option<Importer> {
        if driver.contains("vfio") {
            return None;
        }
        let names = |d: &Path| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .map(|it| {
                    it.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        };
        let first = |d: &Path, prefix: &str| names(d).into_iter().find(|n| n.starts_with(prefix));
        let drm = first(&dir.join("drm"), "card").or_else(|| {
            names(dir)
                .iter()
                .filter(|n| n.starts_with("virtio"))
                .find_map(|v| first(&dir.join(v).join("drm"), "card"))
        });
        let (kind, node) = if let Some(card) = drm {
            (ImporterKind::Drm, card)
        } else if let Some(ib) = names(&dir.join("infiniband")).into_iter().next() {
            (ImporterKind::Rdma, ib)
        } else if let Some(ctrl) = first(&dir.join("nvme"), "nvme") {
            (ImporterKind::Nvme, ctrl)
        } else {
            return None;
        };
        Some(Importer { driver, kind, node })
    }
}

/// The checks of a device in the importer role: it stays on its kernel driver, so
/// none of the exporter's (vfio-pci, IOMMU group members, BARs) apply.
fn importer_device(r: &mut Report, bdf: Bdf, importer: &Importer) {
    let section = format!("device {bdf}");
    let Importer { driver, kind, node } = importer;
    let kind = kind.as_str();
    r.push(
        &section,
        "role",
        Status::Info,
        format!("importer: {driver} offers {kind} device {node}"),
    );
    r.push(
        &section,
        "driver",
        Status::Pass,
        format!(
            "{driver} ({kind} {node}): an importer stays on its own driver (vfio-pci is for \
             the exporter and DMA engines)"
        ),
    );
}

fn device(r: &mut Report, host: &HostPaths, bdf: Bdf, iommu: &IommuFacts) {
    let section = format!("device {bdf}");
    let s = section.as_str();
    let sys = host.sysfs();
    let d: PciDevice = match sys.device(bdf) {
        Ok(d) => d,
        Err(e) => {
            let (detail, fix) = detail_and_fix(&e);
            r.fail(s, "exists", detail, fix);
            return;
        }
    };
    // A device an engine driver of peerdma takes is named, with what p2pcopy does with it.
    let on_vfio = d.driver.as_deref() == Some("vfio-pci");
    let engine = match peerdma_engine::EngineId::of_function(d.vendor, d.device, d.class) {
        Some(id) if on_vfio && id.is_nic() => format!(
            ": {}, a NIC engine p2pcopy drives (--via it: BAR to BAR in loopback, or udp:// \
             streams)",
            id.name
        ),
        Some(id) if on_vfio => format!(": {}, an engine p2pcopy drives (--via it)", id.name),
        _ => String::new(),
    };
    r.push(
        s,
        "identity",
        Status::Info,
        format!(
            "{:04x}:{:04x} class {:06x}{engine}",
            d.vendor, d.device, d.class
        ),
    );
    // Driver.
    match d.driver.as_deref() {
        Some(drv) if driver_exports_dma_buf(drv) => r.push(
            s,
            "driver",
            Status::Pass,
            format!("{drv}: exports dma-bufs"),
        ),
        Some(drv) if drv.contains("vfio") => r.fail(
            s,
            "driver",
            format!("{drv} is a vfio variant driver that cannot export a dma-buf in 7.2 (only vfio-pci and nvgrace-gpu can)"),
            format!(
                "bind it to plain vfio-pci: echo vfio-pci > /sys/bus/pci/devices/{bdf}/driver_override, \
                 unbind it, then echo {bdf} > /sys/bus/pci/drivers_probe"
            ),
        ),
        other => r.fail(
            s,
            "driver",
            format!(
                "bound to {}, not to vfio-pci, and it offers no DRM card, RDMA device or NVMe \
                 controller (an importer's role)",
                other.unwrap_or("no driver")
            ),
            format!(
                "as the exporter or a DMA engine: echo vfio-pci > \
                 /sys/bus/pci/devices/{bdf}/driver_override, unbind it, then echo {bdf} > \
                 /sys/bus/pci/drivers_probe; as an importer: bind it to its DRM, RDMA or NVMe \
                 driver"
            ),
        ),
    }
    // IOMMU group.
    match d.iommu_group {
        None => r.fail(
            s,
            "IOMMU group",
            "none: VFIO cannot open it".to_string(),
            "enable the IOMMU (see iommu above), or for tests only vfio's no-IOMMU mode"
                .to_string(),
        ),
        Some(g) => match group_blockers(&sys, bdf) {
            Ok(blockers) if blockers.is_empty() => {
                let mode = if iommu.noiommu && !iommu.present() {
                    " (a no-IOMMU group)"
                } else {
                    ""
                };
                r.push(
                    s,
                    "IOMMU group",
                    Status::Pass,
                    format!("group {g}{mode}: no member blocks opening it"),
                );
            }
            Ok(blockers) => {
                let list: Vec<String> = blockers
                    .iter()
                    .map(|(b, drv)| format!("{b} ({drv})"))
                    .collect();
                r.fail(
                    s,
                    "IOMMU group",
                    format!(
                        "group {g} also holds {}, bound to kernel drivers",
                        list.join(", ")
                    ),
                    "bind every member to vfio-pci or unbind it (echo BDF > \
                     /sys/bus/pci/devices/BDF/driver/unbind); or give the device its own group \
                     (a slot below an ACS-capable port)"
                        .to_string(),
                );
            }
            Err(e) => {
                let (detail, fix) = detail_and_fix(&e);
                r.fail(s, "IOMMU group", detail, fix)
            }
        },
    }
    // BARs.
    let page = rustix::param::page_size() as u64;
    let mut exportable = Vec::new();
    let mut other = Vec::new();
    for (i, res) in d.resources.iter().take(6).enumerate() {
        if res.size() == 0 {
            continue;
        }
        let size = crate::size::human(res.size());
        if res.is_mem() && res.size() >= page {
            exportable.push(format!("BAR{i} {size}"));
        } else if res.is_mem() {
            other.push(format!("BAR{i} {size} (smaller than a page)"));
        } else {
            other.push(format!("BAR{i} {size} (I/O ports)"));
        }
    }
    let not = if other.is_empty() {
        String::new()
    } else {
        format!("; not exportable: {}", other.join(", "))
    };
    if exportable.is_empty() {
        r.fail(
            s,
            "BARs",
            format!("no memory BAR of a page or more{not}"),
            "export from a device with a memory BAR".to_string(),
        );
    } else {
        r.push(
            s,
            "BARs",
            Status::Pass,
            format!("exportable: {}{not}", exportable.join(", ")),
        );
    }
    // MSI-X.
    let config = sys.config_space(bdf).unwrap_or_default();
    if config.len() < 256 {
        r.push(
            s,
            "MSI-X",
            Status::Info,
            format!(
                "unknown: only {} bytes of config space are readable (run as root)",
                config.len()
            ),
        );
    } else {
        match capabilities(&config)
            .ok()
            .and_then(|caps| MsixLayout::find(&config, &caps))
        {
            None => r.push(s, "MSI-X", Status::Info, "no MSI-X capability".to_string()),
            Some(m) => {
                let spans: Vec<String> = (0..6)
                    .flat_map(|bar| m.spans_in(bar, page).into_iter().map(move |sp| (bar, sp)))
                    .map(|(bar, sp)| {
                        format!(
                            "{} in BAR{bar} [{:#x}, {:#x})",
                            sp.structure, sp.start, sp.end
                        )
                    })
                    .collect();
                r.push(
                    s,
                    "MSI-X",
                    Status::Info,
                    format!(
                        "{} vectors; {}: ranges touching those pages are refused",
                        m.vectors,
                        spans.join(", ")
                    ),
                );
            }
        }
    }
}

fn importers(r: &mut Report, host: &HostPaths) {
    const S: &str = "importers";
    let atlas = Atlas::read(host);
    if atlas.iommufd {
        r.push(
            S,
            "iommufd",
            Status::Pass,
            "/dev/iommu: a DMA engine attached to an IOAS can map BAR dma-bufs (no distance check)"
                .to_string(),
        );
    } else if r
        .find("kernel", "CONFIG_IOMMUFD")
        .is_some_and(|c| c.status == Status::Fail)
    {
        // Said once, where the kernel's options are: its fix is there too.
        r.push(
            S,
            "iommufd",
            Status::Info,
            "no /dev/iommu: the kernel lacks CONFIG_IOMMUFD (under kernel)".to_string(),
        );
    } else {
        r.fail(
            S,
            "iommufd",
            "no /dev/iommu".to_string(),
            "modprobe iommufd where the kernel has it as a module; a kernel without \
             CONFIG_IOMMUFD must be rebuilt with CONFIG_IOMMUFD=y"
                .to_string(),
        );
    }
    if atlas.rdma.is_empty() {
        r.push(S, "RDMA", Status::Info, "no RDMA devices".to_string());
    }
    for d in &atlas.rdma {
        let driver = d.driver.as_deref().unwrap_or("unknown driver");
        let status = match d.imports_bar() {
            Some(true) => Status::Pass,
            Some(false) => Status::Info,
            None => Status::Info,
        };
        let verdict = match d.imports_bar() {
            Some(true) => "takes BAR dma-bufs",
            Some(false) => "cannot take BAR dma-bufs",
            None => "unknown",
        };
        r.push(
            S,
            &format!("RDMA {}", d.name),
            status,
            format!("{driver}: {verdict} ({})", d.why()),
        );
    }
    if atlas.render_nodes.is_empty() {
        r.push(S, "DRM", Status::Info, "no DRM render nodes".to_string());
    }
    for n in &atlas.render_nodes {
        let driver = n.driver.as_deref().unwrap_or("unknown driver");
        let (status, verdict) = match n.imports_bar() {
            Some(true) => (Status::Pass, "can import BAR dma-bufs"),
            Some(false) => (Status::Info, "cannot import BAR dma-bufs"),
            None => (Status::Info, "unknown"),
        };
        r.push(
            S,
            &format!("DRM {}", n.name),
            status,
            format!("{driver}: {verdict} ({})", n.why()),
        );
    }
    r.push(
        S,
        "Vulkan",
        Status::Info,
        "not probed: Vulkan imports go through the render nodes' DRM drivers above".to_string(),
    );
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    use peerdma_host::fixture::TempTree;

    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    /// A machine: 7.2 without a config file, no iommufd, vfio-pci registered,
    /// noiommu; one ivshmem device bound to vfio-pci, one bound to a variant
    /// driver, one to a kernel driver.
    fn machine(tag: &str) -> TempTree {
        let t = TempTree::new(&format!("doctor-{tag}"));
        let r = &t.0;
        write(r, "proc/sys/kernel/osrelease", "7.2.13+deb14-amd64\n");
        write(r, "proc/kallsyms", "ffffffff81000000 T dma_buf_export\n");
        write(
            r,
            "proc/cmdline",
            "console=ttyS0 vfio.enable_unsafe_noiommu_mode=1\n",
        );
        write(
            r,
            "sys/module/vfio/parameters/enable_unsafe_noiommu_mode",
            "Y\n",
        );
        fs::create_dir_all(r.join("sys/bus/pci/drivers/vfio-pci")).unwrap();
        for (bdf, driver) in [
            ("0000:00:10.0", "vfio-pci"),
            ("0000:00:11.0", "mlx5_vfio_pci"),
            ("0000:00:12.0", "virtio-pci"),
        ] {
            let dir = r.join("sys/devices/pci0000:00").join(bdf);
            write(&dir, "vendor", "0x1af4");
            write(&dir, "device", "0x1110");
            write(&dir, "class", "0x050000");
            write(
                &dir,
                "resource",
                "0x00000000fe000000 0x00000000fe0000ff 0x0000000000040200\n\
                 0x0 0x0 0x0\n\
                 0x0000000800000000 0x0000000803ffffff 0x000000000014220c\n",
            );
            symlink(
                format!("../../../bus/pci/drivers/{driver}"),
                dir.join("driver"),
            )
            .unwrap();
            symlink("../../../kernel/iommu_groups/0", dir.join("iommu_group")).unwrap();
            let link = r.join("sys/bus/pci/devices").join(bdf);
            fs::create_dir_all(link.parent().unwrap()).unwrap();
            symlink(format!("../../../devices/pci0000:00/{bdf}"), link).unwrap();
        }
        let host = r.join("sys/devices/pci0000:00/0000:00:00.0");
        write(&host, "vendor", "0x8086");
        write(&host, "device", "0x29c0");
        write(&host, "class", "0x060000");
        write(&host, "resource", "");
        symlink(
            "../../../devices/pci0000:00/0000:00:00.0",
            r.join("sys/bus/pci/devices/0000:00:00.0"),
        )
        .unwrap();
        t
    }

    const INTEL_VM: HostCpu = HostCpu {
        amd: false,
        family: 6,
        hypervisor: true,
    };

    #[test]
    fn a_machine_without_iommufd_fails_that_and_says_how() {
        let t = machine("noiommufd");
        let host = HostPaths::under(&t.0);
        let bdfs: Vec<Bdf> = ["00:10.0", "00:11.0", "00:12.0", "00:1f.0"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let r = run(&host, &bdfs, INTEL_VM);
        assert!(r.failed());
        assert_eq!(r.find("kernel", "release").unwrap().status, Status::Pass);
        let iommufd = r.find("kernel", "CONFIG_IOMMUFD").unwrap();
        assert_eq!(iommufd.status, Status::Fail);
        assert!(iommufd.fix.as_deref().unwrap().contains("modprobe"));
        assert_eq!(
            r.find("kernel", "CONFIG_DMA_SHARED_BUFFER").unwrap().status,
            Status::Pass
        );
        // Said once: under kernel, with its fix; importers points there.
        let imp = r.find("importers", "iommufd").unwrap();
        assert_eq!(imp.status, Status::Info);
        assert!(
            imp.fix.is_none() && imp.detail.contains("under kernel"),
            "{imp:?}"
        );
        let iommu = r.find("iommu", "present").unwrap();
        assert!(iommu.detail.contains("no-IOMMU mode"), "{}", iommu.detail);
        assert_eq!(r.find("iommu", "vfio-pci").unwrap().status, Status::Pass);
        let dev = r.find("device 0000:00:10.0", "driver").unwrap();
        assert_eq!(dev.status, Status::Pass);
        let bars = r.find("device 0000:00:10.0", "BARs").unwrap();
        assert!(bars.detail.contains("BAR2 64 MiB"), "{}", bars.detail);
        assert!(
            bars.detail.contains("BAR0 256 B (smaller than a page)"),
            "{}",
            bars.detail
        );
        let variant = r.find("device 0000:00:11.0", "driver").unwrap();
        assert_eq!(variant.status, Status::Fail);
        assert!(
            variant.detail.contains("variant driver"),
            "{}",
            variant.detail
        );
        let group = r.find("device 0000:00:10.0", "IOMMU group").unwrap();
        assert_eq!(group.status, Status::Pass, "no devices/ list: no blockers");
        assert_eq!(
            r.find("device 0000:00:12.0", "driver").unwrap().status,
            Status::Fail
        );
        let missing = r.find("device 0000:00:1f.0", "exists").unwrap();
        assert!(
            missing.detail.contains("no PCI device"),
            "{}",
            missing.detail
        );
        // A library error's fix goes on the check's fix line, not also into its detail.
        assert!(
            missing
                .fix
                .as_deref()
                .is_some_and(|f| !f.is_empty() && f != "see the message"),
            "{:?}",
            missing.fix
        );
        for c in &r.checks {
            assert!(!c.detail.contains("fix:"), "{}: {}", c.name, c.detail);
        }
        let path = r.find("paths", "0000:00:10.0 → 0000:00:11.0").unwrap();
        assert_eq!(path.status, Status::Warn);
        assert!(path
            .fix
            .as_deref()
            .unwrap()
            .contains("emulated PCIe switch"));
        assert_eq!(r.find("importers", "RDMA").unwrap().status, Status::Info);
        let j = r.to_json();
        assert!(j["failed"].as_u64().unwrap() >= 3);
        let text = r.to_text();
        assert!(text.contains("[FAIL] CONFIG_IOMMUFD"), "{text}");
        assert_eq!(
            text.matches("[FAIL] iommufd").count(),
            0,
            "said once: {text}"
        );
        assert!(
            text.contains("fix: load its module if it is one (modprobe)"),
            "{text}"
        );
    }

    #[test]
    fn an_importer_on_its_own_driver_is_checked_as_an_importer() {
        let t = machine("roles");
        let r0 = &t.0;
        for (bdf, driver, iface) in [
            ("0000:00:13.0", "virtio-pci", "virtio0/drm/card1"),
            ("0000:00:14.0", "mlx5_core", "infiniband/mlx5_0"),
            ("0000:00:15.0", "nvme", "nvme/nvme0"),
        ] {
            let dir = r0.join("sys/devices/pci0000:00").join(bdf);
            write(&dir, "vendor", "0x1af4");
            write(&dir, "device", "0x1050");
            write(&dir, "class", "0x030000");
            write(&dir, "resource", "");
            fs::create_dir_all(dir.join(iface)).unwrap();
            symlink(
                format!("../../../bus/pci/drivers/{driver}"),
                dir.join("driver"),
            )
            .unwrap();
            symlink(
                format!("../../../devices/pci0000:00/{bdf}"),
                r0.join("sys/bus/pci/devices").join(bdf),
            )
            .unwrap();
        }
        let bdfs: Vec<Bdf> = ["00:10.0", "00:13.0", "00:14.0", "00:15.0", "00:12.0"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let r = run(&HostPaths::under(&t.0), &bdfs, INTEL_VM);
        for (bdf, what) in [
            ("0000:00:13.0", "DRM device card1"),
            ("0000:00:14.0", "RDMA device mlx5_0"),
            ("0000:00:15.0", "NVMe device nvme0"),
        ] {
            let section = format!("device {bdf}");
            let driver = r.find(&section, "driver").unwrap();
            assert_eq!(driver.status, Status::Pass, "{bdf}: {}", driver.detail);
            assert!(
                !driver.detail.contains("not to vfio-pci"),
                "{}",
                driver.detail
            );
            let role = r.find(&section, "role").unwrap();
            assert!(role.detail.contains(what), "{}", role.detail);
            // No exporter checks: it keeps its driver and its BARs are not exported.
            assert!(r.find(&section, "BARs").is_none());
            assert!(r.find(&section, "IOMMU group").is_none());
        }
        // The exporter is still checked as one.
        assert_eq!(
            r.find("device 0000:00:10.0", "driver").unwrap().status,
            Status::Pass
        );
        // A DRM or RDMA importer behind a blocked route cannot map the BAR: a failure.
        let drm = r.find("paths", "0000:00:10.0 → 0000:00:13.0").unwrap();
        assert_eq!(drm.status, Status::Fail, "{}", drm.detail);
        assert!(drm.detail.contains("DRM importer"), "{}", drm.detail);
        // So does the kernel's nvme driver: its io_uring dma-buf I/O maps the BAR
        // through the DMA API, which checks the distance (seen on the ahead kernel).
        let nvme = r.find("paths", "0000:00:10.0 → 0000:00:15.0").unwrap();
        assert_eq!(nvme.status, Status::Fail, "{}", nvme.detail);
        assert!(nvme.detail.contains("NVMe importer"), "{}", nvme.detail);
        // All of this machine's devices are in group 0: said once per path, as a fact.
        let shared = r
            .find("paths", "0000:00:10.0 → 0000:00:12.0 IOMMU group")
            .unwrap();
        assert_eq!(shared.status, Status::Info);
        assert!(
            shared.detail.contains("share IOMMU group 0"),
            "{}",
            shared.detail
        );
        // A device on a driver that is no importer keeps the vfio-pci fix, with both roles.
        let other = r.find("device 0000:00:12.0", "driver").unwrap();
        assert_eq!(other.status, Status::Fail);
        assert!(other.fix.as_deref().unwrap().contains("as an importer"));
    }

    #[test]
    fn iommufd_present_passes() {
        let t = machine("iommufd");
        write(&t.0, "dev/iommu", "");
        let r = run(&HostPaths::under(&t.0), &[], INTEL_VM);
        assert_eq!(
            r.find("kernel", "CONFIG_IOMMUFD").unwrap().status,
            Status::Pass
        );
        assert_eq!(r.find("importers", "iommufd").unwrap().status, Status::Pass);
    }
}
