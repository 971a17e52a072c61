//! `VFIO_DEVICE_GET_INFO` and `VFIO_DEVICE_GET_REGION_INFO`, capability chains
//! included.
//!
//! Both infos are fetched the same way (`fetch`), twice when the kernel has a
//! capability chain that did not fit: the first answer carries the `argsz` it
//! needs (and `cap_offset` 0), the second, into a buffer of that size, carries
//! the chain.

use std::os::fd::BorrowedFd;

use peerdma_uapi::flex::{FlexBuf, FlexHeader};
use peerdma_uapi::vfio::{
    vfio_device_info, vfio_region_info, VFIO_DEVICE_FLAGS_CAPS, VFIO_DEVICE_FLAGS_PCI,
    VFIO_DEVICE_FLAGS_RESET, VFIO_REGION_INFO_FLAG_CAPS,
};

use crate::error::{Error, Result};
use crate::explain;
use crate::info_caps::{self, DeviceCap};
use crate::ioctl::{self, VfioIoctl};
use crate::region::{RegionFlags, RegionInfo};
use peerdma_host::pci_caps::ChainError;
use peerdma_host::{Bdf, RegionIndex};

/// Largest info buffer this library accepts from the kernel (a sanity bound;
/// real chains are a few hundred bytes).
const MAX_INFO_BYTES: usize = 64 * 1024;

/// What `VFIO_DEVICE_GET_INFO` says about a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// `VFIO_DEVICE_FLAGS_*`.
    pub flags: u32,
    /// Number of regions (9 fixed vfio-pci regions plus device-specific ones).
    pub num_regions: u32,
    /// Number of irq indexes.
    pub num_irqs: u32,
    /// Parsed capabilities.
    pub caps: Vec<DeviceCap>,
}

impl DeviceInfo {
    /// A vfio-pci device.
    pub fn is_pci(&self) -> bool {
        self.flags & VFIO_DEVICE_FLAGS_PCI != 0
    }

    /// `VFIO_DEVICE_RESET` is available.
    pub fn supports_reset(&self) -> bool {
        self.flags & VFIO_DEVICE_FLAGS_RESET != 0
    }
}

/// The argsz the kernel asked for, if it is larger than what we gave.
fn grown(what: &str, asked: u32, have: usize) -> Result<Option<usize>> {
    let asked = asked as usize;
    if asked <= have {
        return Ok(None);
    }
    if asked > MAX_INFO_BYTES {
        return Err(Error::CapChain {
            what: what.to_owned(),
            offset: 0,
            reason: "the kernel asks for an info buffer larger than 64 KiB",
        });
    }
    Ok(Some(asked))
}

/// Names a malformed chain of the info buffer `what`.
fn cap_chain(what: &str, e: ChainError) -> Error {
    Error::CapChain {
        what: what.to_owned(),
        offset: u64::from(e.offset),
        reason: e.reason,
    }
}

/// The `*_info` headers the kernel extends with a capability chain.
trait InfoWithCaps: FlexHeader<Elem = u8> + Copy {
    /// The flags say a chain follows.
    fn has_caps(&self) -> bool;
    /// The size the kernel asked for (or filled).
    fn argsz(&self) -> u32;
    /// Where the chain starts (0: none).
    fn cap_offset(&self) -> u32;
}

impl InfoWithCaps for vfio_device_info {
    fn has_caps(&self) -> bool {
        self.flags & VFIO_DEVICE_FLAGS_CAPS != 0
    }
    fn argsz(&self) -> u32 {
        self.argsz
    }
    fn cap_offset(&self) -> u32 {
        self.cap_offset
    }
}

impl InfoWithCaps for vfio_region_info {
    fn has_caps(&self) -> bool {
        self.flags & VFIO_REGION_INFO_FLAG_CAPS != 0
    }
    fn argsz(&self) -> u32 {
        self.argsz
    }
    fn cap_offset(&self) -> u32 {
        self.cap_offset
    }
}

/// Issues `get` on a buffer holding `header`; when a chain did not fit, grows
/// the buffer to the `argsz` the kernel asked for and issues it again. Returns
/// the header and, when a chain is there, the whole buffer's bytes.
fn fetch<H: InfoWithCaps>(
    what: &str,
    header: H,
    mut get: impl FnMut(&mut FlexBuf<H>) -> Result<()>,
) -> Result<(H, Option<Vec<u8>>)> {
    let mut buf = FlexBuf::new(header, 0);
    get(&mut buf)?;
    if buf.header().has_caps() {
        if let Some(bytes) = grown(what, buf.header().argsz(), buf.byte_len())? {
            buf.resize_to_bytes(bytes);
            get(&mut buf)?;
        }
    }
    let header = *buf.header();
    let chain = (header.has_caps() && header.cap_offset() != 0).then(|| {
        buf.read_array_at::<u8>(0, buf.byte_len())
            .unwrap_or_default()
    });
    Ok((header, chain))
}
/// Reads the device info.
pub(crate) fn device_info(bdf: Bdf, fd: BorrowedFd<'_>) -> Result<DeviceInfo> {
    let what = format!("{bdf} device info");
    let (header, chain) = fetch(&what, vfio_device_info::default(), |buf| {
        ioctl::device_get_info(fd, buf).map_err(explain::ioctl_err(bdf, VfioIoctl::DeviceGetInfo))
    })?;
    let caps = match chain {
        Some(bytes) => {
            info_caps::device_caps(&bytes, header.cap_offset, size_of::<vfio_device_info>())
                .map_err(|e| cap_chain(&what, e))?
        }
        None => Vec::new(),
    };
    Ok(DeviceInfo {
        flags: header.flags,
        num_regions: header.num_regions,
        num_irqs: header.num_irqs,
        caps,
    })
}

/// Reads the info of region `index`.
pub(crate) fn region_info(bdf: Bdf, fd: BorrowedFd<'_>, index: RegionIndex) -> Result<RegionInfo> {
    let what = format!("{bdf} {index} region info");
    let (header, chain) = fetch(&what, vfio_region_info::default(), |buf| {
        // The index is the request; set it for every call.
        buf.header_mut().index = index.get();
        ioctl::device_get_region_info(fd, buf)
            .map_err(explain::ioctl_err(bdf, VfioIoctl::DeviceGetRegionInfo))
    })?;
    let caps = match chain {
        Some(bytes) => {
            info_caps::region_caps(&bytes, header.cap_offset, size_of::<vfio_region_info>())
                .map_err(|e| cap_chain(&what, e))?
        }
        None => Vec::new(),
    };
    Ok(RegionInfo {
        index: index.get(),
        flags: RegionFlags(header.flags),
        size: header.size,
        offset: header.offset,
        caps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::io::Errno;

    #[test]
    fn growth_is_bounded() {
        assert_eq!(grown("x", 32, 32).unwrap(), None);
        assert_eq!(grown("x", 16, 32).unwrap(), None);
        assert_eq!(grown("x", 80, 32).unwrap(), Some(80));
        assert!(matches!(
            grown("x", u32::MAX, 32),
            Err(Error::CapChain { .. })
        ));
    }

    #[test]
    fn fetch_grows_to_the_size_the_kernel_asks() {
        use peerdma_uapi::vfio::{VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, VFIO_REGION_INFO_FLAG_CAPS};
        let mut calls = Vec::new();
        // What the kernel does: argsz 32 is too small for its 8-byte chain, so it
        // answers with argsz 40 and cap_offset 0; with 40 bytes it writes the chain.
        let (header, chain) = fetch("r", vfio_region_info::default(), |buf| {
            calls.push(buf.byte_len());
            buf.header_mut().flags = VFIO_REGION_INFO_FLAG_CAPS;
            if buf.byte_len() < 40 {
                buf.header_mut().argsz = 40;
            } else {
                buf.header_mut().cap_offset = 32;
                buf.elems_mut()[..2]
                    .copy_from_slice(&(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE as u16).to_ne_bytes());
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, [32, 40]);
        assert_eq!(header.cap_offset, 32);
        let caps = info_caps::region_caps(&chain.unwrap(), 32, 32).unwrap();
        assert_eq!(caps, [crate::RegionCap::MsixMappable]);
    }

    #[test]
    fn flags() {
        let info = DeviceInfo {
            flags: VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET,
            num_regions: 9,
            num_irqs: 5,
            caps: vec![],
        };
        assert!(info.is_pci() && info.supports_reset());
        let info = DeviceInfo { flags: 0, ..info };
        assert!(!info.is_pci() && !info.supports_reset());
    }

    #[test]
    fn ioctl_on_a_non_vfio_fd_is_a_named_error() {
        use std::os::fd::AsFd;
        let file = std::fs::File::open(env!("CARGO_MANIFEST_DIR")).unwrap();
        let bdf: Bdf = "00:01.0".parse().unwrap();
        let err = region_info(bdf, file.as_fd(), RegionIndex(2)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Ioctl {
                    ioctl: "VFIO_DEVICE_GET_REGION_INFO",
                    errno: Errno::NOTTY,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.errno(), Some(Errno::NOTTY));
    }
}
