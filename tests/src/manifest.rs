//! What the host tells the guest (`guest.json`) and what the guest reports back
//! (`testbed.json`, at `/run/peerdma/testbed.json` in the guest and in the scratch
//! directory on the host).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::devices::{DeviceKind, ManifestExtras, Topology};

/// Where the scratch directory is mounted in the guest.
pub const GUEST_SCRATCH: &str = "/run/peerdma";

/// The 9p mount tag of the scratch share.
pub const SCRATCH_TAG: &str = "peerdma-scratch";

/// The 9p mount tag of the host root share.
pub const ROOT_TAG: &str = "hostroot";

/// The file name of the guest's report in the scratch directory.
pub const MANIFEST_FILE: &str = "testbed.json";

/// The file name of the host's instructions in the scratch directory.
pub const GUEST_CONFIG_FILE: &str = "guest.json";

/// The file the guest writes the command's exit status to.
pub const EXIT_STATUS_FILE: &str = "exit-status";

/// What the guest init must do: written by the host before boot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GuestConfig {
    /// The command and its arguments; empty for an interactive shell.
    pub argv: Vec<String>,
    /// The working directory (the host's current directory).
    pub cwd: PathBuf,
    /// Extra environment for the command.
    pub env: Vec<(String, String)>,
    /// Interactive shell on the command port instead of a command.
    pub interactive: bool,
    /// The devices to find and bind, in the order QEMU was given them.
    pub devices: Vec<GuestDevice>,
    /// Kernel modules to load first (stock kernel), with `modprobe -d` root.
    pub modules: Vec<String>,
    /// `modprobe -d` root for `modules`.
    pub modules_root: Option<PathBuf>,
    /// Whether a vIOMMU is present (off: vfio noiommu mode).
    pub iommu: bool,
    /// Device placement.
    pub topology: Topology,
    /// Which kernel this is (reference, stock, custom), for the report.
    pub kernel: String,
}

/// A device the guest must find (by PCI ID and order) and bind.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GuestDevice {
    /// Unique role name.
    pub role: String,
    /// What it is.
    pub kind: DeviceKind,
    /// Host path of the backing file: ivshmem memory or the NVMe image.
    pub backing_file: Option<PathBuf>,
    /// ivshmem memory or NVMe CMB size in bytes.
    pub size: u64,
    /// The kind's own fields (NVMe: serial, nsid, cmb_size), filled by its
    /// [`crate::devices::DeviceModel::manifest_extras`]; in JSON beside the others.
    #[serde(flatten)]
    pub extras: ManifestExtras,
}

/// The guest's report: each device with its place in the guest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// `uname -r` of the guest kernel.
    pub kernel_release: String,
    /// reference, stock or custom.
    pub kernel: String,
    /// Whether /dev/iommu exists (the iommufd path is available).
    pub iommufd: bool,
    /// Whether /dev/vfio/devices exists (VFIO cdev).
    pub vfio_cdev: bool,
    /// Whether a vIOMMU is present (else vfio noiommu mode).
    pub iommu: bool,
    /// Device placement.
    pub topology: Topology,
    /// Seconds since guest boot when the test command started.
    pub test_start_uptime_s: f64,
    /// The devices.
    pub devices: Vec<ManifestDevice>,
}

/// One device as the guest found it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ManifestDevice {
    /// Unique role name (`ivshmem0`, `edu0`, ...).
    pub role: String,
    /// What it is.
    pub kind: DeviceKind,
    /// PCI address, `0000:00:10.0`.
    pub bdf: String,
    /// IOMMU group number (None without an IOMMU group link).
    pub iommu_group: Option<u32>,
    /// Other devices of the same IOMMU group (BDFs), the device itself excluded.
    pub group_peers: Vec<String>,
    /// `/dev/vfio/N` or `/dev/vfio/noiommu-N`.
    pub vfio_group: Option<PathBuf>,
    /// `/dev/vfio/devices/vfioN` where the kernel has VFIO cdev.
    pub vfio_cdev: Option<PathBuf>,
    /// The driver bound after setup (`vfio-pci` for every kind but the GPU).
    pub driver: Option<String>,
    /// Host path of the backing file: ivshmem memory or the NVMe image.
    pub backing_file: Option<PathBuf>,
    /// ivshmem memory or NVMe CMB size in bytes.
    pub size: u64,
    /// The kind's own fields (NVMe: serial, nsid, cmb_size), filled by its
    /// [`crate::devices::DeviceModel::manifest_extras`]; in JSON beside the others.
    #[serde(flatten)]
    pub extras: ManifestExtras,
}

impl Manifest {
    /// The device with this role.
    pub fn device(&self, role: &str) -> Option<&ManifestDevice> {
        self.devices.iter().find(|d| d.role == role)
    }

    /// Reads the manifest from its default place in the guest.
    pub fn load_in_guest() -> anyhow::Result<Manifest> {
        let path = PathBuf::from(GUEST_SCRATCH).join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            anyhow::anyhow!(
                "reading {}: {e} (run this inside the testbed: peerdma-testbed run -- CMD)",
                path.display()
            )
        })?;
        Ok(serde_json::from_str(&text)?)
    }
}
