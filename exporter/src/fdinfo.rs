//! `/proc/self/fdinfo/N` of a dma-buf (or a VFIO device fd).
//!
//! The generic part is `pos`, `flags` (octal), `mnt_id` and `ino`; a dma-buf
//! adds `size`, `count`, `exp_name` and, when set, `name`; a VFIO device fd adds
//! `vfio-device-syspath`. Unknown keys are kept, so new kernels do not break
//! parsing.

use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

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
    pub fn of(fd: impl AsFd) -> Result<Self> {
        let raw = fd.as_fd().as_raw_fd();
        Self::read(Path::new("/proc/self/fdinfo").join(raw.to_string()), raw)
    }

    /// Reads and parses an fdinfo file at `path`, naming `fd` in errors.
    pub fn read(path: PathBuf, fd: i32) -> Result<Self> {
        let text =
            std::fs::read_to_string(&path).map_err(|source| Error::FdInfoRead { path, source })?;
        Self::parse(&text, fd)
    }

    /// Parses fdinfo text; `fd` only names the source in errors (-1 for fixtures).
    pub fn parse(text: &str, fd: i32) -> Result<Self> {
        let mut info = FdInfo::default();
        let mut seen_flags = false;
        for line in text.lines() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |reason| Error::FdInfoParse {
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
            return Err(Error::FdInfoParse {
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
                matches!(err, Error::FdInfoParse { fd: 7, .. }),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn reads_own_fd() {
        let file = std::fs::File::open(env!("CARGO_MANIFEST_DIR")).unwrap();
        let info = FdInfo::of(&file).unwrap();
        assert!(info.cloexec());
        assert!(info.ino.is_some());
    }
}
