//! The one error type of the iommufd importer.
//!
//! Each variant names the ioctl (or the rule checked before it), the objects
//! involved (IOAS id, IOVA, length, device), the errno and what to do about it.
//! Variants are sorted by name.

use std::path::PathBuf;

use peerdma_exporter::RevokeReason;
use peerdma_host::Bdf;
use rustix::io::Errno;

use super::ioctl::IommufdIoctl;
use super::iova::IovaRange;

/// Result type of the iommufd importer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Formats usable IOVA ranges for a message.
fn ranges_text(ranges: &[IovaRange]) -> String {
    if ranges.is_empty() {
        return "none".into();
    }
    ranges
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Formats a revoke reason, if known.
fn reason_text(reason: &Option<RevokeReason>) -> String {
    match reason {
        Some(r) => format!(" ({r})"),
        None => String::new(),
    }
}

/// Everything that can go wrong opening an iommufd, building an IOAS, mapping
/// dma-bufs and host memory into it, and attaching devices to it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `VFIO_DEVICE_ATTACH_IOMMUFD_PT` failed.
    #[error("{bdf}: VFIO_DEVICE_ATTACH_IOMMUFD_PT to IOAS {ioas} failed: {errno}; {fix}")]
    Attach {
        /// Device.
        bdf: Bdf,
        /// IOAS id.
        ioas: u32,
        /// Kernel's errno.
        errno: Errno,
        /// What it usually means here.
        fix: &'static str,
    },

    /// The buffer's physical range lies beyond the IOMMU's address width: the kernel
    /// would map it, and every DMA to it would fault.
    #[error(
        "{bdf} BAR{region}: the buffer is at physical {start:#x} to {end:#x}, beyond the \
         {bits}-bit address width of IOMMU {iommu} ({width_from}: it reaches up to {limit:#x}); \
         the kernel would map it and every DMA to it would fault; fix: have the BAR \
         assigned below {limit:#x} (firmware settings, pci=realloc), or use an IOMMU that \
         addresses more bits (QEMU: intel-iommu aw-bits=48)"
    )]
    BarBeyondIommu {
        /// Exporting device.
        bdf: Bdf,
        /// BAR index.
        region: u32,
        /// First physical address of the mapped range.
        start: u64,
        /// Last physical address of the mapped range.
        end: u64,
        /// The IOMMU unit.
        iommu: String,
        /// Its address width in bits.
        bits: u32,
        /// Where the width was read.
        width_from: &'static str,
        /// The highest reachable physical address.
        limit: u64,
    },

    /// The device is not on the cdev access path, so it has no iommufd. (The API:
    /// `OpenOptions { access: AccessPath::Cdev, .. }`.)
    #[error(
        "{bdf}: the device was opened through the VFIO group/container access path and has \
         no iommufd; fix: open it through the cdev access path (needs /dev/iommu and \
         /dev/vfio/devices/vfioN)"
    )]
    DeviceNotCdev {
        /// Device.
        bdf: Bdf,
    },

    /// The device is bound to another iommufd than the IOAS belongs to. (The API:
    /// [`Iommufd::of_device`](super::Iommufd::of_device), or
    /// `PassedFds::Iommufd(iommufd.try_clone_fd()?)` when opening.)
    #[error(
        "{bdf}: the device is bound to a different iommufd than IOAS {ioas}'s; a device can \
         attach only to an IOAS of the iommufd it was bound to; fix: allocate the IOAS in \
         the device's own iommufd, or bind the device to this IOAS's iommufd when opening it"
    )]
    DifferentIommufd {
        /// Device.
        bdf: Bdf,
        /// IOAS id.
        ioas: u32,
    },

    /// The dma-buf was not exported by vfio-pci. In 7.2 iommufd maps a
    /// dma-buf only through vfio-pci's private physical-address interface
    /// (peer2peer + revocable attach, single range); any other exporter
    /// (udmabuf, a GPU driver...) is refused with EOPNOTSUPP.
    #[error(
        "IOMMU_IOAS_MAP_FILE: the dma-buf comes from exporter {}, not vfio-pci: \
         7.2 iommufd imports only vfio-pci BAR buffers (it attaches peer2peer + revocable and \
         asks vfio-pci for the physical range) [kernel: {errno}]; fix: export the memory \
         through vfio-pci, or map plain memory with IOMMU_IOAS_MAP (map_host)",
        .exporter.as_deref().map_or_else(|| "(unknown: no exp_name in fdinfo)".to_string(), |n| format!("{n:?}"))
    )]
    DmaBufForeign {
        /// The exporter name from the buffer's fdinfo (`exp_name`), if any.
        exporter: Option<String>,
        /// Kernel's errno (EOPNOTSUPP).
        errno: Errno,
    },

    /// The dma-buf has more than one range; 7.2 iommufd maps single-range
    /// buffers only.
    #[error(
        "IOMMU_IOAS_MAP_FILE: the vfio-pci dma-buf has {} ranges; 7.2 iommufd takes \
         single-range buffers only [kernel: {errno}]; fix: export each range as its own \
         dma-buf and map them one by one",
        .ranges.map_or_else(|| "several".to_string(), |n| n.to_string())
    )]
    DmaBufMultiRange {
        /// Number of ranges, when known.
        ranges: Option<usize>,
        /// Kernel's errno (EOPNOTSUPP).
        errno: Errno,
    },

    /// The dma-buf is revoked: MAP_FILE returns ENODEV while the exporting
    /// device's memory decode is off, it is in D3hot or being reset, or it was
    /// closed.
    #[error(
        "IOMMU_IOAS_MAP_FILE at IOVA {iova:#x}: the dma-buf is revoked{} [kernel: {errno}]; \
         fix: turn the exporter's memory decode back on (or bring it to D0) and map again; \
         a buffer of a closed device stays revoked, export a new one",
        reason_text(.reason)
    )]
    DmaBufRevoked {
        /// The IOVA the map was for.
        iova: u64,
        /// Why, when the exporter is known.
        reason: Option<RevokeReason>,
        /// Kernel's errno (ENODEV).
        errno: Errno,
    },

    /// A dma-buf range that breaks one of MAP_FILE's rules, found before the kernel is
    /// asked (it would say only EINVAL): the range is empty, its offset or length is
    /// not a multiple of the page size, or it runs past the end of the buffer
    /// (drivers/iommu/iommufd/ioas.c, io_pagetable.c).
    #[error(
        "IOMMU_IOAS_MAP_FILE of {len:#x} bytes at offset {offset:#x} of a {size:#x}-byte \
         dma-buf: {rule} [kernel: EINVAL]; fix: {fix}",
        rule = .rule.what(*.page),
        fix = .rule.fix(*.page)
    )]
    DmaBufSpan {
        /// The rule broken.
        rule: SpanRule,
        /// Offset asked for.
        offset: u64,
        /// Length asked for.
        len: u64,
        /// The buffer's size.
        size: u64,
        /// The page size the rules use.
        page: u64,
    },

    /// The dma-buf given with an exporting device was exported by another device.
    #[error(
        "the dma-buf was exported by {buffer}, not by {device} whose revoke events were to \
         be followed; fix: pass the device that exported the buffer"
    )]
    ExporterMismatch {
        /// The buffer's exporter.
        buffer: Bdf,
        /// The device given.
        device: Bdf,
    },

    /// An `fcntl(2)` on an iommufd fd failed: duplicating it (`F_DUPFD_CLOEXEC`), or
    /// reading and setting its file status flags (`F_GETFL`/`F_SETFL`, to compare two).
    #[error("{command} on an iommufd fd failed: {errno}; fix: {fix}")]
    Fcntl {
        /// The fcntl command(s), as `fcntl(2)` names them.
        command: &'static str,
        /// Kernel's errno.
        errno: Errno,
        /// What to do.
        fix: &'static str,
    },

    /// An iommufd ioctl on an IOAS failed (the generic case).
    #[error("{ioctl} on IOAS {ioas} failed: {errno}; {fix}")]
    Ioctl {
        /// The ioctl.
        ioctl: IommufdIoctl,
        /// IOAS id (0 when none yet).
        ioas: u32,
        /// Kernel's errno.
        errno: Errno,
        /// What it usually means here.
        fix: &'static str,
    },

    /// No free IOVA window fits the mapping with its guard gaps under the limit.
    #[error(
        "IOAS {ioas}: no free IOVA window of {len:#x} bytes with {guard:#x}-byte guard gaps \
         under limit {limit:#x} in the usable ranges [{}]; fix: unmap something, map less, \
         lower the guard, or use a device with a wider DMA mask",
        ranges_text(.ranges)
    )]
    IovaExhausted {
        /// IOAS id.
        ioas: u32,
        /// Length asked for.
        len: u64,
        /// Guard gap.
        guard: u64,
        /// DMA-mask limit.
        limit: u64,
        /// Usable ranges.
        ranges: Vec<IovaRange>,
    },

    /// A fixed IOVA outside the usable ranges (reserved regions such as the
    /// MSI window, or past the IOMMU's address width).
    #[error(
        "IOAS {ioas}: IOVA {iova:#x}+{len:#x} is not inside one usable range [{}] \
         [kernel: ENOSPC/EINVAL]; fix: pick an IOVA inside a range or use guarded placement",
        ranges_text(.ranges)
    )]
    IovaOutsideRanges {
        /// IOAS id.
        ioas: u32,
        /// IOVA.
        iova: u64,
        /// Length.
        len: u64,
        /// Usable ranges.
        ranges: Vec<IovaRange>,
    },

    /// A fixed IOVA beyond the DMA-mask limit of the IOAS.
    #[error(
        "IOAS {ioas}: IOVA {iova:#x}+{len:#x} ends past the DMA-mask limit {limit:#x}: the \
         device would truncate the address and DMA somewhere else; fix: pick an IOVA below \
         the limit or use guarded placement"
    )]
    IovaOverLimit {
        /// IOAS id.
        ioas: u32,
        /// IOVA.
        iova: u64,
        /// Length.
        len: u64,
        /// DMA-mask limit.
        limit: u64,
    },

    /// A fixed IOVA overlapping a mapping made through this IOAS.
    #[error(
        "IOAS {ioas}: IOVA {iova:#x}+{len:#x} overlaps the mapping at \
         {existing:#x}+{existing_len:#x} [kernel: EEXIST]; fix: unmap it first or use guarded placement"
    )]
    IovaOverlap {
        /// IOAS id.
        ioas: u32,
        /// IOVA.
        iova: u64,
        /// Length.
        len: u64,
        /// Start of the existing mapping.
        existing: u64,
        /// Its length.
        existing_len: u64,
    },

    /// A fixed IOVA or a length not aligned to what the IOAS needs.
    #[error(
        "IOAS {ioas}: IOVA {iova:#x} / length {len:#x} is not aligned to {align:#x} \
         [kernel: EINVAL]; fix: align both to the IOAS's IOVA alignment"
    )]
    IovaUnaligned {
        /// IOAS id.
        ioas: u32,
        /// IOVA.
        iova: u64,
        /// Length.
        len: u64,
        /// Alignment needed.
        align: u64,
    },

    /// `IOMMU_IOAS_MAP` or `IOMMU_IOAS_MAP_FILE` failed (the generic case).
    #[error(
        "{ioctl} of {len:#x} bytes (source offset {offset:#x}) at IOVA {iova:#x} in IOAS \
         {ioas} failed: {errno}; {fix}"
    )]
    Map {
        /// The ioctl: [`IommufdIoctl::IoasMap`] or [`IommufdIoctl::IoasMapFile`].
        ioctl: IommufdIoctl,
        /// IOAS id.
        ioas: u32,
        /// IOVA (0 when the kernel was to choose).
        iova: u64,
        /// Length.
        len: u64,
        /// Offset in the dma-buf (0 for host memory).
        offset: u64,
        /// Kernel's errno.
        errno: Errno,
        /// What it usually means here.
        fix: &'static str,
    },

    /// There is no `/dev/iommu`: the kernel has no iommufd.
    #[error(
        "{}: no such device node: this kernel has no iommufd (CONFIG_IOMMUFD is off, as in \
         Debian's stock kernels, or the iommufd module is not loaded); only the VFIO \
         group/container path exists there, and it cannot import a dma-buf; fix: boot a \
         kernel with CONFIG_IOMMUFD=y and CONFIG_VFIO_DEVICE_CDEV=y (the peerdma reference \
         kernel) or `modprobe iommufd`",
        .path.display()
    )]
    NoIommufd {
        /// The path tried.
        path: PathBuf,
    },

    /// Opening `/dev/iommu` failed for another reason than its absence.
    #[error("open {}: {errno}; fix: run as root or give the user access to the node", .path.display())]
    OpenIommufd {
        /// The path tried.
        path: PathBuf,
        /// Kernel's errno.
        errno: Errno,
    },

    /// Anonymous memory for a host buffer could not be mapped.
    #[error("mmap of a {len:#x}-byte host buffer failed: {errno}")]
    UserBuffer {
        /// Length asked for.
        len: u64,
        /// Kernel's errno.
        errno: Errno,
    },

    /// A host buffer access went past its end.
    #[error("host buffer access {offset:#x}+{len:#x} is past its end ({size:#x})")]
    UserBufferBounds {
        /// Offset.
        offset: u64,
        /// Length.
        len: u64,
        /// Buffer size.
        size: u64,
    },

    /// Anonymous memory on 2 MiB huge pages could not be mapped.
    #[error(
        "mmap of a {len:#x}-byte host buffer on 2 MiB huge pages (MAP_HUGETLB) failed: \
         {}; fix: reserve enough 2 MiB huge pages (/proc/sys/vm/nr_hugepages, or \
         /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages) on a kernel with \
         CONFIG_HUGETLBFS",
        huge_errno(*errno)
    )]
    UserBufferHuge {
        /// Length asked for (whole 2 MiB pages).
        len: u64,
        /// Kernel's errno.
        errno: Errno,
    },

    /// A zero-length mapping.
    #[error("a mapping needs a non-zero length")]
    ZeroLength,
}

/// What `mmap(MAP_HUGETLB)` failing with `errno` means, by the errno's name.
fn huge_errno(errno: Errno) -> String {
    match errno {
        Errno::NOMEM => "ENOMEM (too few free huge pages of that size)".into(),
        Errno::INVAL => "EINVAL (no 2 MiB huge page size here)".into(),
        _ => {
            let text = errno.to_string();
            let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
            format!("errno {} ({text})", errno.raw_os_error())
        }
    }
}

impl Error {
    /// The errno the kernel returned, or would return, for this error.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Attach { errno, .. }
            | Error::DmaBufForeign { errno, .. }
            | Error::DmaBufMultiRange { errno, .. }
            | Error::DmaBufRevoked { errno, .. }
            | Error::UserBuffer { errno, .. }
            | Error::UserBufferHuge { errno, .. }
            | Error::Fcntl { errno, .. }
            | Error::Ioctl { errno, .. }
            | Error::Map { errno, .. }
            | Error::OpenIommufd { errno, .. } => Some(*errno),
            Error::NoIommufd { .. } => Some(Errno::NOENT),
            Error::IovaOverlap { .. } => Some(Errno::EXIST),
            Error::IovaExhausted { .. } => Some(Errno::NOSPC),
            Error::IovaOutsideRanges { .. } | Error::IovaOverLimit { .. } => Some(Errno::NOSPC),
            Error::IovaUnaligned { .. } | Error::ZeroLength | Error::DmaBufSpan { .. } => {
                Some(Errno::INVAL)
            }
            Error::BarBeyondIommu { .. }
            | Error::DeviceNotCdev { .. }
            | Error::DifferentIommufd { .. }
            | Error::ExporterMismatch { .. } => None,
            Error::UserBufferBounds { .. } => None,
        }
    }
}

/// The rule of `IOMMU_IOAS_MAP_FILE` a dma-buf range breaks ([`Error::DmaBufSpan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanRule {
    /// The length is 0.
    Empty,
    /// The offset is not a multiple of the page size.
    OffsetUnaligned,
    /// The length is not a multiple of the page size.
    LengthUnaligned,
    /// Offset + length runs past the end of the buffer.
    PastEnd,
}

impl SpanRule {
    fn what(self, page: u64) -> String {
        match self {
            SpanRule::Empty => "the length is 0".into(),
            SpanRule::OffsetUnaligned => {
                format!("the offset is not a multiple of the {page:#x}-byte page")
            }
            SpanRule::LengthUnaligned => {
                format!("the length is not a multiple of the {page:#x}-byte page")
            }
            SpanRule::PastEnd => "the range runs past the end of the buffer".into(),
        }
    }

    fn fix(self, page: u64) -> String {
        match self {
            SpanRule::Empty => "map at least one page".into(),
            SpanRule::OffsetUnaligned | SpanRule::LengthUnaligned => {
                format!("round the range to whole {page:#x}-byte pages")
            }
            SpanRule::PastEnd => "map a range inside the buffer, or export a larger one".into(),
        }
    }

    /// The first rule `offset`/`len` break for a buffer of `size` bytes, in the order
    /// the kernel checks them; `None` when they break none.
    pub fn check(offset: u64, len: u64, size: u64, page: u64) -> Option<SpanRule> {
        if len == 0 {
            Some(SpanRule::Empty)
        } else if !offset.is_multiple_of(page) {
            Some(SpanRule::OffsetUnaligned)
        } else if !len.is_multiple_of(page) {
            Some(SpanRule::LengthUnaligned)
        } else if offset.checked_add(len).is_none_or(|end| end > size) {
            Some(SpanRule::PastEnd)
        } else {
            None
        }
    }
}

/// What an errno from a map ioctl usually means.
pub(crate) fn map_fix(errno: Errno) -> &'static str {
    match errno {
        Errno::INVAL => {
            "the offset or length is not page aligned, the range runs past the end of the \
             buffer, or no access flag was given"
        }
        Errno::EXIST => "another mapping already covers part of the IOVA range",
        Errno::NOSPC => "the IOVA range is reserved or outside the IOMMU's aperture",
        Errno::FAULT => {
            "the user address is not ordinary memory (a VFIO BAR mmap cannot be pinned: \
             export the BAR as a dma-buf and use map_dmabuf)"
        }
        Errno::NOMEM => "the kernel could not pin or allocate (RLIMIT_MEMLOCK?)",
        Errno::BADF => "the fd is not open",
        Errno::NOENT => "the IOAS id does not exist in this iommufd",
        _ => "unexpected; see drivers/iommu/iommufd/ioas.c",
    }
}

impl Error {
    /// A stable, machine-readable name for this error: the variant in snake_case
    /// (`dma_buf_revoked`, `iova_overlap`), for scripts that branch on the kind of
    /// failure instead of parsing the message. Kinds are never renamed.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Attach { .. } => "attach",
            Error::BarBeyondIommu { .. } => "bar_beyond_iommu",
            Error::DmaBufForeign { .. } => "dma_buf_foreign",
            Error::DmaBufMultiRange { .. } => "dma_buf_multi_range",
            Error::DmaBufRevoked { .. } => "dma_buf_revoked",
            Error::DmaBufSpan { .. } => "dma_buf_span",
            Error::DeviceNotCdev { .. } => "device_not_cdev",
            Error::DifferentIommufd { .. } => "different_iommufd",
            Error::ExporterMismatch { .. } => "exporter_mismatch",
            Error::UserBuffer { .. } => "user_buffer",
            Error::UserBufferBounds { .. } => "user_buffer_bounds",
            Error::UserBufferHuge { .. } => "user_buffer_huge",
            Error::Fcntl { .. } => "fcntl",
            Error::Ioctl { .. } => "ioctl",
            Error::IovaExhausted { .. } => "iova_exhausted",
            Error::IovaOverLimit { .. } => "iova_over_limit",
            Error::IovaOverlap { .. } => "iova_overlap",
            Error::IovaOutsideRanges { .. } => "iova_outside_ranges",
            Error::IovaUnaligned { .. } => "iova_unaligned",
            Error::Map { .. } => "map",
            Error::NoIommufd { .. } => "no_iommufd",
            Error::OpenIommufd { .. } => "open_iommufd",
            Error::ZeroLength => "zero_length",
        }
    }
}

#[cfg(test)]
mod span_tests {
    use super::*;

    #[test]
    fn each_broken_map_file_rule_is_named_with_its_fix() {
        let page = 4096;
        let case = |offset, len| SpanRule::check(offset, len, 0x10000, page);
        assert_eq!(case(0, 0), Some(SpanRule::Empty));
        assert_eq!(case(0x800, 0x1000), Some(SpanRule::OffsetUnaligned));
        assert_eq!(case(0x1000, 0x1800), Some(SpanRule::LengthUnaligned));
        assert_eq!(case(0xf000, 0x2000), Some(SpanRule::PastEnd));
        assert_eq!(case(u64::MAX - 0xfff, 0x2000), Some(SpanRule::PastEnd));
        assert_eq!(case(0, 0x10000), None);
        let e = Error::DmaBufSpan {
            rule: SpanRule::OffsetUnaligned,
            offset: 0x800,
            len: 0x1000,
            size: 0x10000,
            page,
        };
        let text = e.to_string();
        assert!(
            text.contains(
                "the offset is not a multiple of the 0x1000-byte page [kernel: EINVAL]; \
                 fix: round the range to whole 0x1000-byte pages"
            ),
            "{text}"
        );
        assert_eq!(e.errno(), Some(Errno::INVAL));
        let past = Error::DmaBufSpan {
            rule: SpanRule::PastEnd,
            offset: 0xf000,
            len: 0x2000,
            size: 0x10000,
            page,
        };
        assert!(
            past.to_string().contains("runs past the end of the buffer"),
            "{past}"
        );
    }
}
