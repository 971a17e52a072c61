//! What goes wrong driving a raw NVMe block device through io_uring into a dma-buf,
//! each error naming the device, the operation and the fix; and the mapping from the
//! kernel's errnos to them. Variants are sorted by name.

use std::io;
use std::path::PathBuf;

use rustix::io::Errno;

use super::plan::{Direction, FixedIo};
use super::SERIES;

use peerdma_host::errno_name;

/// Everything that can go wrong in [`KernelNvme`](super::KernelNvme).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelNvmeError {
    /// A request the device or the dma-buf cannot take as it is.
    #[error(
        "{device}: {len} bytes at namespace byte {device_offset} / dma-buf byte {buf_offset} \
         are not aligned: namespace offsets and lengths must be multiples of the \
         {logical_block}-byte logical block (O_DIRECT), dma-buf offsets multiples of 4 bytes \
         (the kernel refuses others with EINVAL), and the length not 0; fix: round the \
         request to the block"
    )]
    Alignment {
        /// The block device.
        device: String,
        /// Byte offset on the namespace.
        device_offset: u64,
        /// Byte offset into the dma-buf.
        buf_offset: u64,
        /// Bytes.
        len: u64,
        /// Logical block size in bytes.
        logical_block: u64,
    },

    /// One I/O failed with an errno that has no more precise meaning here.
    #[error(
        "{device}: {} of {} bytes at namespace byte {} / dma-buf byte {} failed: {}; fix: see \
         the kernel log (dmesg)",
        dir.op_name(), io.len, io.device_offset, io.buf_offset, errno_name(*errno)
    )]
    DeviceIo {
        /// The block device.
        device: String,
        /// Which way.
        dir: Direction,
        /// The I/O.
        io: FixedIo,
        /// What the completion carried.
        errno: Errno,
    },

    /// The running kernel cannot register a dma-buf with io_uring.
    #[error(
        "{device}: this kernel cannot register a dma-buf as an io_uring buffer \
         (IORING_REGISTER_BUFFERS_UPDATE with IORING_RSRC_UPDATE_EXTENDED: {}): it needs the \
         kernel series {SERIES}; fix: run a kernel that carries the series, or use the \
         user-space NVMe engine (vfio-pci)",
        errno_name(*errno)
    )]
    FeatureMissing {
        /// The block device.
        device: String,
        /// How the kernel said so (7.2: `EINVAL`, the field the series renames to `flags`
        /// must be 0 there).
        errno: Errno,
    },

    /// The path is not a raw NVMe namespace block device on nvme-pci.
    #[error(
        "{path}: not a raw NVMe block device ({why}); fix: name a whole namespace such as \
         /dev/nvme0n1 (not a partition, not another driver's disk) whose controller is on \
         the kernel's nvme driver",
        path = path.display()
    )]
    NotNvmeBlockDevice {
        /// What was given.
        path: PathBuf,
        /// What it is instead.
        why: String,
    },

    /// The block device could not be opened.
    #[error(
        "{path}: open(O_RDWR | O_DIRECT) failed: {}; fix: run as a user that may write the \
         device (root, or the disk group)",
        errno_name(*errno), path = path.display()
    )]
    Open {
        /// The block device.
        path: PathBuf,
        /// What open(2) returned.
        errno: Errno,
    },

    /// A request past the end of the namespace or the dma-buf.
    #[error(
        "{device}: {len} bytes at byte {offset} reach past the end of the {size}-byte {what}; \
         fix: a shorter request or a lower offset"
    )]
    OutOfRange {
        /// The block device.
        device: String,
        /// "namespace" or "dma-buf".
        what: &'static str,
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u64,
        /// Its size in bytes.
        size: u64,
    },

    /// The registration worked, but the kernel refused to map the dma-buf for the NVMe
    /// controller: every I/O failed with `EINVAL` (the PCI P2P distance check).
    #[error(
        "{device}: the kernel's PCI P2P distance check refused the route between the NVMe \
         controller {controller} and the dma-buf's exporter (the registration worked, then \
         {} of the first I/O failed with {} and nothing falls back to system memory; dmesg \
         names the pair); fix: `peerdma path` shows the route; put both devices behind one \
         PCIe switch, or use a host whose root complex the kernel allows for P2P (an AMD \
         Zen host; on the testbed `--cpu-model max,family=23` or `--topology switch`)",
        dir.op_name(), errno_name(*errno)
    )]
    P2pRefused {
        /// The block device.
        device: String,
        /// The NVMe controller's PCI address, or "?" when sysfs did not say.
        controller: String,
        /// Which way the first I/O went.
        dir: Direction,
        /// What every I/O returned.
        errno: Errno,
    },

    /// A plain `O_DIRECT` access to the namespace outside the engine (a copy's poison or
    /// check, through the kernel's ordinary block path) failed.
    #[error(
        "{path}: the plain O_DIRECT {what} of the namespace (the copy's check, not the \
         dma-buf path) failed: {source}; fix: see the kernel log (dmesg)",
        path = path.display()
    )]
    PlainIo {
        /// The block device.
        path: PathBuf,
        /// `open`, `pread` or `pwrite`.
        what: &'static str,
        /// What failed.
        #[source]
        source: io::Error,
    },

    /// The kernel has the series but refused this dma-buf registration.
    #[error(
        "{device}: registering the dma-buf with io_uring for this device failed: {} ({hint})",
        errno_name(*errno)
    )]
    Registration {
        /// The block device.
        device: String,
        /// What io_uring_register returned.
        errno: Errno,
        /// What it means here and the fix.
        hint: &'static str,
    },

    /// The registered dma-buf was revoked (REVOKE, or its device's memory went off):
    /// the I/O failed with `ENODEV`.
    #[error(
        "{device}: {} failed with {}: the registered dma-buf was revoked (REVOKE, or its \
         device's memory decode went off) and the kernel cannot map it for the NVMe \
         controller any more; fix: export a new dma-buf and open the engine again",
        dir.op_name(), errno_name(*errno)
    )]
    Revoked {
        /// The block device.
        device: String,
        /// Which way.
        dir: Direction,
        /// What the completion carried (`ENODEV`).
        errno: Errno,
    },

    /// Setting up or driving the io_uring failed.
    #[error(
        "{what} failed: {source}; fix: io_uring may be disabled (sysctl \
         kernel.io_uring_disabled) or the memlock limit too low (ulimit -l)"
    )]
    Ring {
        /// The call.
        what: &'static str,
        /// What the kernel returned.
        #[source]
        source: io::Error,
    },

    /// An I/O moved fewer bytes than asked (the end of the device, or a driver limit).
    #[error(
        "{device}: {} of {} bytes at namespace byte {} moved only {done} bytes; fix: see the \
         kernel log (dmesg); the rest of the request was not done",
        dir.op_name(), io.len, io.device_offset
    )]
    ShortIo {
        /// The block device.
        device: String,
        /// Which way.
        dir: Direction,
        /// The I/O.
        io: FixedIo,
        /// Bytes it moved.
        done: u32,
    },

    /// Driving the io_uring failed with I/Os in flight, and some of them did not complete
    /// within the wait that followed: they may still move bytes after this returned.
    #[error(
        "{device}: {what} failed ({source}) with I/Os in flight, and {left} of them had not \
         completed {waited_s} s later: they may still write their dma-buf or namespace range; \
         fix: close the VFIO device and the block device before trusting either range, and \
         see the kernel log (dmesg)"
    )]
    Stranded {
        /// The block device.
        device: String,
        /// The call.
        what: &'static str,
        /// What the kernel returned.
        #[source]
        source: io::Error,
        /// I/Os still in flight.
        left: u32,
        /// Seconds waited for them.
        waited_s: u64,
    },

    /// A sysfs attribute of the block device could not be read.
    #[error("{path}: cannot read it: {source}; fix: is sysfs mounted?", path = path.display())]
    Sysfs {
        /// The attribute.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

impl KernelNvmeError {
    /// A stable, machine-readable name for this error; a kernel without the series is
    /// `needs_kernel_feature`, as for the other posted-series features.
    pub fn kind(&self) -> &'static str {
        match self {
            KernelNvmeError::Alignment { .. } => "alignment",
            KernelNvmeError::DeviceIo { .. } => "device_io",
            KernelNvmeError::FeatureMissing { .. } => "needs_kernel_feature",
            KernelNvmeError::NotNvmeBlockDevice { .. } => "not_nvme_block_device",
            KernelNvmeError::Open { .. } => "open",
            KernelNvmeError::OutOfRange { .. } => "out_of_range",
            KernelNvmeError::P2pRefused { .. } => "p2p_refused",
            KernelNvmeError::PlainIo { .. } => "plain_io",
            KernelNvmeError::Registration { .. } => "registration",
            KernelNvmeError::Revoked { .. } => "revoked",
            KernelNvmeError::Ring { .. } => "ring",
            KernelNvmeError::ShortIo { .. } => "short_io",
            KernelNvmeError::Stranded { .. } => "stranded",
            KernelNvmeError::Sysfs { .. } => "sysfs",
        }
    }
}

/// The error of a refused dma-buf registration, once the series is known present
/// (the behavioural probe passed).
pub(crate) fn registration_error(device: &str, errno: Errno) -> KernelNvmeError {
    let hint = match errno {
        Errno::OPNOTSUPP => {
            "the kernel was built without CONFIG_DMABUF_TOKEN, or the file has no dma-buf \
             I/O; fix: a kernel with the series enabled, and a raw NVMe block device"
        }
        Errno::INVAL => {
            "the device's driver takes no dma-buf I/O, the device is not open O_DIRECT, or the \
             dma-buf is larger than 1 GiB (the v3 series' limit); fix: a namespace on \
             nvme-pci and a dma-buf of at most 1 GiB"
        }
        Errno::BADF => "the dma-buf fd is not a dma-buf; fix: pass a dma-buf fd",
        Errno::NODEV => {
            "the dma-buf is revoked (its device's memory is off, or REVOKE); fix: export a \
             new dma-buf"
        }
        _ => "fix: see the kernel log (dmesg)",
    };
    KernelNvmeError::Registration {
        device: device.to_owned(),
        errno,
        hint,
    }
}

/// The error of a failed I/O. `first_batch` says that no I/O of this engine has
/// succeeded yet: `EINVAL` then (offsets and lengths were checked before) is the P2P
/// distance check refusing the mapping.
pub(crate) fn io_error(
    device: &str,
    controller: &str,
    dir: Direction,
    io: FixedIo,
    errno: Errno,
    first_batch: bool,
) -> KernelNvmeError {
    if errno == Errno::NODEV {
        return KernelNvmeError::Revoked {
            device: device.to_owned(),
            dir,
            errno,
        };
    }
    if errno == Errno::INVAL && first_batch {
        return KernelNvmeError::P2pRefused {
            device: device.to_owned(),
            controller: controller.to_owned(),
            dir,
            errno,
        };
    }
    KernelNvmeError::DeviceIo {
        device: device.to_owned(),
        dir,
        io,
        errno,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IO: FixedIo = FixedIo {
        device_offset: 0,
        buf_offset: 0,
        len: 4096,
    };

    #[test]
    fn einval_before_any_good_io_is_the_p2p_refusal() {
        let e = io_error(
            "nvme0n1",
            "0000:00:04.0",
            Direction::Read,
            IO,
            Errno::INVAL,
            true,
        );
        assert!(matches!(e, KernelNvmeError::P2pRefused { .. }));
        let msg = e.to_string();
        for want in [
            "P2P distance",
            "0000:00:04.0",
            "EINVAL",
            "peerdma path",
            "switch",
            "Zen",
        ] {
            assert!(msg.contains(want), "{want} missing from: {msg}");
        }
        let later = io_error("nvme0n1", "?", Direction::Read, IO, Errno::INVAL, false);
        assert!(matches!(later, KernelNvmeError::DeviceIo { .. }));
        let gone = io_error("nvme0n1", "?", Direction::Read, IO, Errno::NODEV, false);
        assert!(matches!(gone, KernelNvmeError::Revoked { .. }), "{gone}");
        assert!(gone.to_string().contains("export a new dma-buf"), "{gone}");
        let eio = io_error("nvme0n1", "?", Direction::Write, IO, Errno::IO, true);
        assert!(eio.to_string().contains("EIO"), "{eio}");
        assert!(eio.to_string().contains("IORING_OP_WRITE_FIXED"), "{eio}");
    }

    #[test]
    fn registration_errnos_are_named_with_their_fix() {
        for (errno, want) in [
            (Errno::OPNOTSUPP, "CONFIG_DMABUF_TOKEN"),
            (Errno::INVAL, "1 GiB"),
            (Errno::BADF, "not a dma-buf"),
            (Errno::NODEV, "revoked"),
        ] {
            let msg = registration_error("nvme0n1", errno).to_string();
            assert!(msg.contains(want) && msg.contains("nvme0n1"), "{msg}");
            assert!(msg.contains(&errno_name(errno)), "{msg}");
        }
    }

    #[test]
    fn missing_feature_names_the_series_not_upstream() {
        let e = KernelNvmeError::FeatureMissing {
            device: "nvme0n1".into(),
            errno: Errno::INVAL,
        };
        let msg = e.to_string();
        assert!(msg.contains("Add dmabuf read/write via io_uring"), "{msg}");
        assert!(msg.contains("not upstream"), "{msg}");
        assert!(msg.contains("EINVAL"), "{msg}");
    }
}
