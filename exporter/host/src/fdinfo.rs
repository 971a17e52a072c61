//! What the kernel says about a dma-buf from any exporter (vfio-pci, udmabuf, a
//! GPU driver...): `/proc/self/fdinfo/N`, and the attachments debugfs lists.
//!
//! The generic part of fdinfo is `pos`, `flags` (octal), `mnt_id` and `ino`; a
//! dma-buf adds `size`, `count`, `exp_name` and, when set, `name`; a VFIO device
//! fd adds `vfio-device-syspath`. Unknown keys are kept, so new kernels do not
//! break parsing.
//!
//! This module depends on nothing else in the crate (its errors are its own
//! [`FdInfoError`]), so the exporter and the importers use it for any dma-buf.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

/// Where debugfs lists every dma-buf with the devices attached to it.
pub const DEBUGFS_BUFINFO: &str = "/sys/kernel/debug/dma_buf/bufinfo";

/// Why an fdinfo entry could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FdInfoError {
    /// A line did not parse.
    #[error(
        "fdinfo of fd {fd}: line {line:?}: {reason}; fix: this is a kernel format change, report it"
    )]
    Parse {
        /// The fd whose fdinfo was read (-1 when parsing a fixture).
        fd: i32,
        /// The offending line.
        line: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The file could not be read.
    #[error("reading {path}: {source}; fix: /proc must be mounted and the fd open", path = .path.display())]
    Read {
        /// The file that was read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, FdInfoError>;

/// The parsed fdinfo of one file descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FdInfo {
    /// File position.
    pub pos: u64,
    /// Open flags (`O_*`), printed in octal by the kernel.
    pub flags: u32,
    /// Mount id.
    pub mnt_id: Option<u64>,
    /// Inode number (`ino:`; the same number `fstat` gives for a dma-buf).
    pub ino: Option<u64>,
    /// dma-buf size in bytes.
    pub size: Option<u64>,
    /// dma-buf file references, not counting the one procfs holds.
    pub count: Option<u64>,
    /// dma-buf exporter name (`vfio_pci_core` for vfio-pci).
    pub exp_name: Option<String>,
    /// dma-buf name set with DMA_BUF_SET_NAME.
    pub name: Option<String>,
    /// VFIO device fd: sysfs path of the device.
    pub vfio_device_syspath: Option<PathBuf>,
    /// Keys this parser does not interpret, in order.
    pub extra: Vec<(String, String)>,
}

impl FdInfo {
    /// Reads and parses `/proc/self/fdinfo/<fd>`.
    ///
    /// # Errors
    ///
    /// [`FdInfoError::Read`] without `/proc` or for a closed fd;
    /// [`FdInfoError::Parse`] when the text is not fdinfo.
    pub fn of(fd: impl AsFd) -> Result<Self> {
        let raw = fd.as_fd().as_raw_fd();
        Self::read(Path::new("/proc/self/fdinfo").join(raw.to_string()), raw)
    }

    /// Reads and parses an fdinfo file at `path`, naming `fd` in errors.
    ///
    /// # Errors
    ///
    /// As [`FdInfo::of`].
    pub fn read(path: PathBuf, fd: i32) -> Result<Self> {
        let text =
            std::fs::read_to_string(&path).map_err(|source| FdInfoError::Read { path, source })?;
        Self::parse(&text, fd)
    }

    /// Parses fdinfo text; `fd` only names the source in errors (-1 for fixtures).
    ///
    /// # Errors
    ///
    /// [`FdInfoError::Parse`] for a line without `key:`, a malformed number, or
    /// text without a `flags:` line.
    pub fn parse(text: &str, fd: i32) -> Result<Self> {
        let mut info = FdInfo::default();
        let mut seen_flags = false;
        for line in text.lines() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |reason| FdInfoError::Parse {
                fd,
                line: line.to_owned(),
                reason,
            };
            let (key, value) = line
                .split_once(':')
                .ok_or_else(|| bad("expected \"key:<tab>value\""))?;
            let value = value.trim();
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| bad("expected a decimal number"))
            };
            match key {
                "pos" => info.pos = number()?,
                "flags" => {
                    info.flags =
                        u32::from_str_radix(value, 8).map_err(|_| bad("expected octal flags"))?;
                    seen_flags = true;
                }
                "mnt_id" => info.mnt_id = Some(number()?),
                "ino" | "inode" => info.ino = Some(number()?),
                "size" => info.size = Some(number()?),
                "count" => info.count = Some(number()?),
                "exp_name" => info.exp_name = Some(value.to_owned()),
                "name" => info.name = Some(value.to_owned()),
                "vfio-device-syspath" => info.vfio_device_syspath = Some(PathBuf::from(value)),
                _ => info.extra.push((key.to_owned(), value.to_owned())),
            }
        }
        if !seen_flags {
            return Err(FdInfoError::Parse {
                fd,
                line: String::new(),
                reason: "no flags: line; this is not an fdinfo file",
            });
        }
        Ok(info)
    }

    /// Whether the fd was opened with `O_CLOEXEC`.
    pub fn cloexec(&self) -> bool {
        self.flags & rustix::fs::OFlags::CLOEXEC.bits() != 0
    }

    /// The access mode bits (`O_RDONLY`, `O_WRONLY` or `O_RDWR`).
    pub fn access_mode(&self) -> u32 {
        self.flags & rustix::fs::OFlags::ACCMODE.bits()
    }

    /// The devices attached to this dma-buf, from debugfs ([`DEBUGFS_BUFINFO`]);
    /// `None` when debugfs is not mounted or does not list the buffer (or the
    /// fdinfo has no inode).
    pub fn attachments(&self) -> Option<Vec<String>> {
        let ino = self.ino?;
        let text = std::fs::read_to_string(DEBUGFS_BUFINFO).ok()?;
        bufinfo_attachments(&text, ino)
    }
}

/// The devices attached to the dma-buf with inode `ino`, from the text of
/// debugfs `dma_buf/bufinfo`; `None` when the buffer is not listed.
pub fn bufinfo_attachments(bufinfo: &str, ino: u64) -> Option<Vec<String>> {
    let mut lines = bufinfo.lines();
    while let Some(line) = lines.next() {
        let fields: Vec<&str> = line.split('\t').collect();
        // size flags mode count exp_name ino name
        if fields.len() >= 6 && fields[5].trim().parse::<u64>().ok() == Some(ino) {
            let mut devs = Vec::new();
            let mut in_list = false;
            for l in lines.by_ref() {
                if l.starts_with("Total") {
                    break;
                }
                if l.trim() == "Attached Devices:" {
                    in_list = true;
                } else if in_list {
                    devs.push(l.trim().to_string());
                }
            }
            return Some(devs);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::OFlags;

    const VFIO_DMABUF: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t2087\n\
                               size:\t16777216\ncount:\t1\nexp_name:\tvfio_pci_core\n";

    #[test]
    fn vfio_dmabuf() {
        let info = FdInfo::parse(VFIO_DMABUF, -1).unwrap();
        assert_eq!(info.size, Some(16 << 20));
        assert_eq!(info.exp_name.as_deref(), Some("vfio_pci_core"));
        assert_eq!(info.ino, Some(2087));
        assert_eq!(info.mnt_id, Some(16));
        assert_eq!(info.count, Some(1));
        assert_eq!(info.name, None);
        assert!(info.cloexec());
        assert_eq!(info.access_mode(), OFlags::RDWR.bits());
        assert!(info.extra.is_empty());
    }

    #[test]
    fn named_buffer_and_unknown_keys() {
        let text = format!("{VFIO_DMABUF}name:\tpeer bar2\nfuture_key:\tsomething: with colon\n");
        let info = FdInfo::parse(&text, 5).unwrap();
        assert_eq!(info.name.as_deref(), Some("peer bar2"));
        assert_eq!(
            info.extra,
            vec![("future_key".into(), "something: with colon".into())]
        );
    }

    #[test]
    fn inode_alias_and_readonly() {
        let info = FdInfo::parse("pos:\t0\nflags:\t00\ninode:\t9\n", -1).unwrap();
        assert_eq!(info.ino, Some(9));
        assert!(!info.cloexec());
        assert_eq!(info.access_mode(), 0);
    }

    #[test]
    fn vfio_device_fd() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1050\n\
                    vfio-device-syspath: /sys/devices/pci0000:00/0000:00:03.0\n";
        let info = FdInfo::parse(text, 3).unwrap();
        assert_eq!(
            info.vfio_device_syspath.as_deref(),
            Some(Path::new("/sys/devices/pci0000:00/0000:00:03.0"))
        );
        assert_eq!(info.size, None);
    }

    #[test]
    fn malformed() {
        for bad in [
            "pos:\t0\nflags:\t0200000x\n",
            "pos:\tzero\nflags:\t02\n",
            "pos:\t0\nflags:\t02\nsize:\t-1\n",
            "pos:\t0\nflags:\t02\nno colon here\n",
            "pos:\t0\n",
            "",
        ] {
            let err = FdInfo::parse(bad, 7).unwrap_err();
            assert!(
                matches!(err, FdInfoError::Parse { fd: 7, .. }),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn bufinfo_attachments_are_found_by_inode() {
        let text = "\nDma-buf Objects:\nsize    \tflags   \tmode    \tcount   \texp_name\tino     \tname\n\
            00004096\t00000002\t00080005\t00000001\tvfio_pci_core\t00000031\t<none>\n\
            \tAttached Devices:\n\t0000:00:12.0\nTotal 1 devices attached\n\n\
            00008192\t00000002\t00080005\t00000001\tudmabuf\t00000032\t<none>\n\
            \tAttached Devices:\nTotal 0 devices attached\n\n";
        assert_eq!(
            bufinfo_attachments(text, 31),
            Some(vec!["0000:00:12.0".to_string()])
        );
        assert_eq!(bufinfo_attachments(text, 32), Some(vec![]));
        assert_eq!(bufinfo_attachments(text, 99), None);
    }

    #[test]
    fn reads_own_fd() {
        let file = std::fs::File::open(env!("CARGO_MANIFEST_DIR")).unwrap();
        let info = FdInfo::of(&file).unwrap();
        assert!(info.cloexec());
        assert!(info.ino.is_some());
    }
}
