//! What a side of a copy names: a device's BAR (`BDF`), an NVMe namespace
//! (`nvme:BDF[/NSID][@LBA]`) or plain host memory (`host`).
//!
//! - `0000:00:11.0` or `00:11.0`: a BAR of that device (which BAR and the offset into
//!   it come with the [`EndpointSpec`]);
//! - `nvme:0000:00:13.0`: namespace 1 of that NVMe controller from LBA 0;
//!   `nvme:00:13.0/2` namespace 2; `nvme:00:13.0@2048` from LBA 2048 (decimal, or hex
//!   with `0x`); `nvme:00:13.0/1@0x800` both;
//! - `blk:/dev/nvme0n1`: a raw NVMe namespace left on the kernel's nvme driver, from
//!   LBA 0; `blk:/dev/nvme0n1@2048` from LBA 2048: the kernel's driver moves the bytes
//!   into or out of the BAR's dma-buf through io_uring (needs the kernel series "Add
//!   dmabuf read/write via io_uring", not upstream yet);
//! - `host`: anonymous memory of this process, pinned and mapped for the DMA (the
//!   baseline a BAR is compared with).

use std::fmt;
use std::str::FromStr;

use peerdma_host::Bdf;
use serde::Serialize;

use super::EndpointSpec;

/// An NVMe namespace and the first LBA used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NvmeTarget {
    /// The controller.
    #[serde(serialize_with = "super::storage::ser_bdf")]
    pub bdf: Bdf,
    /// Namespace id (default 1).
    pub nsid: u32,
    /// First logical block (default 0).
    pub lba: u64,
}

impl NvmeTarget {
    /// Namespace 1 of controller `bdf`, from LBA 0.
    pub fn first_namespace(bdf: Bdf) -> NvmeTarget {
        NvmeTarget {
            bdf,
            nsid: 1,
            lba: 0,
        }
    }
}

impl fmt::Display for NvmeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nvme:{}/{}@{}", self.bdf, self.nsid, self.lba)
    }
}

/// A raw NVMe namespace on the kernel's nvme driver (`blk:PATH[@LBA]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlkTarget {
    /// The block device (`/dev/nvme0n1`).
    pub path: std::path::PathBuf,
    /// First logical block (default 0).
    pub lba: u64,
}

impl fmt::Display for BlkTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blk:{}@{}", self.path.display(), self.lba)
    }
}

/// One side of a copy, as named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A BAR.
    Bar(EndpointSpec),
    /// An NVMe namespace.
    Nvme(NvmeTarget),
    /// A raw NVMe namespace on the kernel's nvme driver.
    Blk(BlkTarget),
    /// Host memory.
    Host,
}

impl Target {
    /// The BAR spec, when this is a BAR.
    pub fn bar(&self) -> Option<&EndpointSpec> {
        match self {
            Target::Bar(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Bar(s) => write!(f, "{}", s.bdf),
            Target::Nvme(n) => n.fmt(f),
            Target::Blk(b) => b.fmt(f),
            Target::Host => f.write_str("host"),
        }
    }
}

/// Why a target did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a copy endpoint ({why}); fix: {}", self.fix())]
pub struct TargetParseError {
    /// What was given.
    pub input: String,
    /// What is wrong.
    pub why: String,
}

impl TargetParseError {
    /// A stable, machine-readable name: `bad_target`.
    pub fn kind(&self) -> &'static str {
        "bad_target"
    }

    /// What to do about it.
    pub fn fix(&self) -> &'static str {
        "name a device (0000:00:11.0), an NVMe namespace (nvme:0000:00:13.0[/NSID][@LBA]) or \
         host"
    }
}

fn number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

impl FromStr for Target {
    type Err = TargetParseError;

    fn from_str(given: &str) -> Result<Target, TargetParseError> {
        let err = |why: String| TargetParseError {
            input: given.to_string(),
            why,
        };
        // A pasted line's newline or a quoted space is no part of the name.
        let s = given.trim();
        if s == "host" {
            return Ok(Target::Host);
        }
        if let Some(rest) = s.strip_prefix("blk:") {
            let (path, lba) = match rest.rsplit_once('@') {
                Some((p, l)) => (
                    p,
                    number(l).ok_or_else(|| err(format!("LBA {l:?} is not a number")))?,
                ),
                None => (rest, 0),
            };
            if !path.starts_with('/') {
                return Err(err(format!(
                    "{path:?} is not a block device path (blk:/dev/nvme0n1[@LBA])"
                )));
            }
            return Ok(Target::Blk(BlkTarget {
                path: path.into(),
                lba,
            }));
        }
        if let Some(rest) = s.strip_prefix("nvme:") {
            let (rest, lba) = match rest.split_once('@') {
                Some((r, l)) => (
                    r,
                    number(l).ok_or_else(|| err(format!("LBA {l:?} is not a number")))?,
                ),
                None => (rest, 0),
            };
            let (bdf, nsid) = match rest.split_once('/') {
                Some((b, n)) => (
                    b,
                    number(n)
                        .and_then(|n| u32::try_from(n).ok())
                        .filter(|&n| n != 0)
                        .ok_or_else(|| err(format!("namespace {n:?} is not a number from 1")))?,
                ),
                None => (rest, 1),
            };
            let bdf = bdf
                .parse::<Bdf>()
                .map_err(|e| err(format!("bad PCI address {:?}: {}", e.input, e.reason)))?;
            return Ok(Target::Nvme(NvmeTarget { bdf, nsid, lba }));
        }
        let bdf = s
            .parse::<Bdf>()
            .map_err(|e| err(format!("bad PCI address {:?}: {}", e.input, e.reason)))?;
        Ok(Target::Bar(EndpointSpec {
            bdf,
            bar: None,
            offset: 0,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_parse() {
        let bdf: Bdf = "00:13.0".parse().unwrap();
        assert_eq!(
            "nvme:0000:00:13.0".parse::<Target>().unwrap(),
            Target::Nvme(NvmeTarget {
                bdf,
                nsid: 1,
                lba: 0
            })
        );
        assert_eq!(
            "nvme:00:13.0/2@0x800".parse::<Target>().unwrap(),
            Target::Nvme(NvmeTarget {
                bdf,
                nsid: 2,
                lba: 0x800
            })
        );
        assert_eq!(
            "nvme:00:13.0@2048".parse::<Target>().unwrap(),
            Target::Nvme(NvmeTarget {
                bdf,
                nsid: 1,
                lba: 2048
            })
        );
        assert_eq!("host".parse::<Target>().unwrap(), Target::Host);
        assert_eq!(
            "blk:/dev/nvme0n1@0x800".parse::<Target>().unwrap(),
            Target::Blk(BlkTarget {
                path: "/dev/nvme0n1".into(),
                lba: 2048
            })
        );
        assert_eq!(
            "blk:/dev/nvme0n1".parse::<Target>().unwrap().to_string(),
            "blk:/dev/nvme0n1@0"
        );
        assert_eq!(" host\n".parse::<Target>().unwrap(), Target::Host);
        assert_eq!(
            "nvme:00:13.0\n".parse::<Target>().unwrap(),
            "nvme:00:13.0".parse::<Target>().unwrap()
        );
        assert_eq!(
            "/sys/bus/pci/devices/0000:00:11.0\n"
                .parse::<Target>()
                .unwrap(),
            "00:11.0".parse::<Target>().unwrap()
        );
        assert!(matches!(
            "00:11.0".parse::<Target>().unwrap(),
            Target::Bar(EndpointSpec {
                bar: None,
                offset: 0,
                ..
            })
        ));
        for bad in [
            "nvme:",
            "nvme:00:13.0/0",
            "nvme:00:13.0@x",
            "blk:nvme0n1",
            "blk:/dev/nvme0n1@x",
            "disk",
            "nvme:zz/1",
            "zz:10.0",
            "00:20.0",
        ] {
            let e = bad.parse::<Target>().unwrap_err().to_string();
            assert!(e.contains("fix:") && !e.contains("--"), "{bad}: {e}");
            assert_eq!(
                e.matches("fix:").count(),
                1,
                "one fix, not the BDF's too: {e}"
            );
        }
    }
}
