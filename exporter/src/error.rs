//! The one error type of the exporter.
//!
//! Every variant names the device (BDF), and where it applies the region (BAR),
//! the range index and the values involved, the rule that was broken, the errno
//! the kernel returns (or would return) for it, and how to fix it. Variants that
//! the library predicts before calling the kernel carry the errno the kernel's
//! own check would give, so a test can export the same arguments with
//! `skip_validation` and compare [`Error::errno`] of both.

use std::io;
use std::path::PathBuf;

use rustix::io::Errno;

use crate::msix::MsixStructure;
use peerdma_host::fdinfo::FdInfoError;
use peerdma_host::{Bdf, HostError, ParseBdfError, RegionIndex};

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while opening a device, describing it, mapping
/// it, exporting a dma-buf from it or driving its revoke lifecycle.
///
/// Variants are sorted by name (`tests/tests/sorted_variants.rs` keeps them so).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The region is a BAR the device does not implement (size 0), or whose
    /// resources vfio-pci could not claim.
    #[error(
        "{bdf} {region}: the BAR is absent (size 0) or vfio-pci did not claim its resources \
         [rule: a dma-buf needs an implemented, claimed BAR; kernel: ENODEV]; \
         fix: export from a BAR that region info reports with a non-zero size"
    )]
    BarAbsent {
        /// Device.
        bdf: Bdf,
        /// Region (BAR) index.
        region: RegionIndex,
    },

    /// The BAR ends at the top of the 64-bit address space: the kernel computes
    /// its end as `base + size`, which wraps to 0, so every range ends "past" it.
    #[error(
        "{bdf} {region}: the BAR at {base:#x} ({bar_size:#x} bytes) ends at the top of the \
         64-bit address space; the kernel computes its end as base + size, which wraps to 0, \
         and refuses every range [rule: vfio_pci_core_fill_phys_vec; kernel: EINVAL]; \
         fix: have the BAR assigned below the top of the address space (firmware or \
         pci=realloc), or export from another BAR"
    )]
    BarEndsAtAddressTop {
        /// Device.
        bdf: Bdf,
        /// Region (BAR) index.
        region: RegionIndex,
        /// Physical base address of the BAR.
        base: u64,
        /// Size of the BAR in bytes.
        bar_size: u64,
    },

    /// The BAR decodes I/O ports, not memory: there is no P2P provider for it.
    #[error(
        "{bdf} {region}: an I/O-port BAR has no P2P DMA provider \
         [rule: only memory BARs can back a dma-buf; kernel: EINVAL]; \
         fix: export from a memory BAR"
    )]
    BarNotMemory {
        /// Device.
        bdf: Bdf,
        /// Region (BAR) index.
        region: RegionIndex,
    },

    /// The BAR is smaller than one page, so no page-aligned range fits in it.
    #[error(
        "{bdf} {region}: the BAR is {bar_size:#x} bytes, smaller than a page ({page_size:#x}) \
         [rule: ranges are whole pages inside the BAR; kernel: EINVAL]; \
         fix: sub-page BARs cannot be exported; use a BAR of at least one page"
    )]
    BarSmallerThanPage {
        /// Device.
        bdf: Bdf,
        /// Region (BAR) index.
        region: RegionIndex,
        /// Size of the BAR in bytes.
        bar_size: u64,
        /// Page size of the running kernel.
        page_size: u64,
    },

    /// A PCI address did not parse.
    #[error(transparent)]
    BdfParse(#[from] ParseBdfError),

    /// A VFIO info capability chain (device or region info) is malformed.
    #[error(
        "{what}: capability chain is malformed at offset {offset:#x}: {reason}; \
         fix: this is a kernel/ABI mismatch, report it with the kernel version"
    )]
    CapChain {
        /// Which info buffer (e.g. "0000:01:00.0 BAR2 region info").
        what: String,
        /// Offset of the offending capability header in the buffer.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },

    /// Reading or writing PCI config space through the VFIO config region failed.
    #[error(
        "{bdf} config space {op} of {len} bytes at {offset:#x} failed: {errno} \
         [rule: config access goes through the VFIO config region with pread/pwrite]; \
         fix: check that the device fd is still open and the offset lies inside config space"
    )]
    ConfigAccess {
        /// Device.
        bdf: Bdf,
        /// "read" or "write".
        op: &'static str,
        /// Offset inside config space.
        offset: u64,
        /// Number of bytes.
        len: usize,
        /// The errno of pread/pwrite.
        errno: Errno,
    },

    /// A config-space access transferred fewer bytes than asked.
    #[error(
        "{bdf} config space {op} at {offset:#x}: {done} of {len} bytes transferred \
         [rule: vfio-pci transfers whole dword/word/byte accesses]; \
         fix: keep accesses inside config space and naturally aligned"
    )]
    ConfigShort {
        /// Device.
        bdf: Bdf,
        /// "read" or "write".
        op: &'static str,
        /// Offset inside config space.
        offset: u64,
        /// Bytes asked for.
        len: usize,
        /// Bytes transferred.
        done: usize,
    },

    /// The kernel refused `VFIO_DEVICE_FEATURE_DMA_BUF`.
    #[error("{bdf} {region}: VFIO_DEVICE_FEATURE_DMA_BUF failed: {errno} ({meaning}); fix: {fix}")]
    Export {
        /// Device.
        bdf: Bdf,
        /// Region (BAR) index that was asked for.
        region: RegionIndex,
        /// The kernel's errno.
        errno: Errno,
        /// What this errno means for this ioctl.
        meaning: &'static str,
        /// What to do about it.
        fix: &'static str,
    },

    /// A `/proc/self/fdinfo` entry did not parse.
    #[error("fdinfo of fd {fd}: line {line:?}: {reason}; fix: this is a kernel format change, report it")]
    FdInfoParse {
        /// The fd whose fdinfo was read (-1 when parsing a fixture).
        fd: i32,
        /// The offending line.
        line: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// Reading a `/proc/self/fdinfo` entry failed.
    #[error("reading {path}: {source}; fix: /proc must be mounted and the fd open", path = .path.display())]
    FdInfoRead {
        /// The file that was read.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },

    /// Neither the PCIe nor the Advanced Features capability offers a function-level reset.
    #[error(
        "{bdf}: the device advertises no function-level reset (PCIe DEVCAP FLR or AF FLR+TP) \
         [rule: vfio-pci only resets on an FLR write when the capability says so]; \
         fix: use Device::reset() (VFIO_DEVICE_RESET) instead"
    )]
    FlrUnsupported {
        /// Device.
        bdf: Bdf,
    },

    /// The IOMMU group holds devices that are not bound to vfio-pci (or to no driver).
    #[error(
        "{bdf}: IOMMU group {group} is not viable \
         [rule: every device in a group must be bound to vfio-pci or to no driver]; \
         fix: bind each device in /sys/kernel/iommu_groups/{group}/devices/ to vfio-pci"
    )]
    GroupNotViable {
        /// Device.
        bdf: Bdf,
        /// IOMMU group number.
        group: u32,
    },

    /// The device or its group is open in another process (a VFIO cdev opens once, a
    /// group once: `vfio_df_open`, `vfio_group_fops_open` in 7.2).
    #[error(
        "{bdf} is in use: {holders} ({op} of {node} failed: {errno}; a VFIO device or group \
         opens once); fix: end that process, or use what it holds (a dma-buf it exported is \
         reachable at /proc/PID/fd/N), then run again",
        node = node.display()
    )]
    HeldElsewhere {
        /// Device.
        bdf: Bdf,
        /// The node this open or bind was for (the cdev or the group).
        node: std::path::PathBuf,
        /// Who holds it, from `/proc/*/fd`.
        holders: peerdma_host::holders::Holders,
        /// What failed: "open" or the ioctl's name.
        op: &'static str,
        /// The kernel's errno.
        errno: Errno,
    },

    /// What the host says about the device could not be read, or says there is no such
    /// device (sysfs: [`HostError::NoSuchDevice`], [`HostError::Sysfs`],
    /// [`HostError::SysfsParse`]).
    #[error(transparent)]
    Host(#[from] HostError),

    /// An ioctl other than the dma-buf export failed.
    #[error("{bdf}: {ioctl} failed: {errno}; fix: {fix}")]
    Ioctl {
        /// Device.
        bdf: Bdf,
        /// The ioctl's name as the kernel headers spell it.
        ioctl: &'static str,
        /// The kernel's errno.
        errno: Errno,
        /// What to do about it.
        fix: &'static str,
    },

    /// The container does not support the IOMMU type this library asks for.
    #[error(
        "{bdf}: the VFIO container does not support IOMMU type {iommu_type} \
         [rule: VFIO_CHECK_EXTENSION must report the type before VFIO_SET_IOMMU]; \
         fix: load vfio_iommu_type1 (or enable noiommu mode for noiommu groups)"
    )]
    IommuTypeUnsupported {
        /// Device.
        bdf: Bdf,
        /// The VFIO IOMMU type (3 = TYPE1v2, 8 = NOIOMMU).
        iommu_type: u32,
    },

    /// Mapping a region with mmap failed.
    #[error(
        "{bdf} {region}: mmap of {len:#x} bytes at region offset {offset:#x} failed: {errno}; \
         fix: map only regions (or sparse areas) that region info marks mmap-able"
    )]
    Mmap {
        /// Device.
        bdf: Bdf,
        /// Region index.
        region: RegionIndex,
        /// Offset inside the region.
        offset: u64,
        /// Length asked for.
        len: u64,
        /// The errno of mmap.
        errno: Errno,
    },

    /// An access through a [`MappedRegion`](crate::MappedRegion) falls outside
    /// the mapping or is not naturally aligned.
    #[error(
        "{bdf} {region}: {width}-byte access at {offset:#x} of a {len:#x}-byte mapping \
         [rule: inside the mapping and naturally aligned]; fix: check the register offset"
    )]
    MmioAccess {
        /// Device.
        bdf: Bdf,
        /// Region index.
        region: RegionIndex,
        /// Offset inside the mapping.
        offset: u64,
        /// Access width in bytes.
        width: usize,
        /// Length of the mapping.
        len: usize,
    },

    /// A bulk copy through a [`MappedRegion`](crate::MappedRegion) names a span
    /// outside the mapping, or copies a mapping onto itself.
    #[error(
        "{bdf} {region}: a copy of {span:#x} bytes at {offset:#x} {why} of the {len:#x}-byte \
         mapping; fix: keep offset + length within the mapping (and copy between two \
         different mappings)"
    )]
    MmioSpan {
        /// Device.
        bdf: Bdf,
        /// Region index.
        region: RegionIndex,
        /// Offset inside the mapping.
        offset: u64,
        /// Bytes to copy.
        span: usize,
        /// Length of the mapping.
        len: usize,
        /// "leaves the end", "overlaps itself".
        why: &'static str,
    },

    /// A range touches the pages of the MSI-X table or PBA.
    #[error(
        "{bdf} {region} range {range} [{offset:#x}, +{length:#x}) touches the page(s) \
         [{start:#x}, {end:#x}) of the MSI-X {structure} \
         [rule: a peer must not reach MSI-X structures unless the region is MSI-X mappable; \
         the kernel itself would accept this]; \
         fix: export ranges outside those pages, or set ExportOptions::allow_msix_overlap"
    )]
    MsixOverlap {
        /// Device.
        bdf: Bdf,
        /// Region (BAR) index.
        region: RegionIndex,
        /// Index of the range in the request.
        range: usize,
        /// Range offset.
        offset: u64,
        /// Range length.
        length: u64,
        /// Table or PBA.
        structure: MsixStructure,
        /// First byte of the page-rounded structure.
        start: u64,
        /// One past the last byte of the page-rounded structure.
        end: u64,
    },

    /// The character-device (iommufd) access path is not available for this device.
    #[error("{bdf}: the vfio cdev path is unavailable: {reason}; fix: {fix}")]
    NoCdev {
        /// Device.
        bdf: Bdf,
        /// What is missing.
        reason: &'static str,
        /// What to do.
        fix: &'static str,
    },

    /// The device has no IOMMU group, so the group path cannot open it.
    #[error(
        "{bdf}: the device has no IOMMU group: no IOMMU translates its DMA (none present or \
         enabled), so vfio-pci cannot take it; fix: enable the IOMMU (VT-d/AMD-Vi in the \
         firmware, intel_iommu=on / amd_iommu=on on the kernel command line); without one, \
         only vfio's unsafe no-IOMMU mode (modprobe vfio enable_unsafe_noiommu_mode=1, no DMA \
         isolation, no iommufd) lets vfio-pci bind it"
    )]
    NoIommuGroup {
        /// Device.
        bdf: Bdf,
    },

    /// An export asked for no ranges at all.
    #[error(
        "{bdf} {region}: no ranges given [rule: nr_ranges must be at least 1; kernel: EINVAL]; \
         fix: pass at least one (offset, length) range"
    )]
    NoRanges {
        /// Device.
        bdf: Bdf,
        /// Region (BAR) index.
        region: RegionIndex,
    },

    /// The device is not a vfio-pci device.
    #[error(
        "{bdf}: VFIO device info flags {flags:#x} lack VFIO_DEVICE_FLAGS_PCI; \
         fix: this library only drives vfio-pci devices"
    )]
    NotPci {
        /// Device.
        bdf: Bdf,
        /// The flags VFIO_DEVICE_GET_INFO returned.
        flags: u32,
    },

    /// The device is not bound to a vfio driver.
    #[error(
        "{bdf}: bound to {driver}, not to vfio-pci; \
         fix: echo vfio-pci > /sys/bus/pci/devices/{bdf}/driver_override, unbind it, \
         then echo {bdf} > /sys/bus/pci/drivers_probe",
        driver = .driver.as_deref().unwrap_or("no driver")
    )]
    NotVfioBound {
        /// Device.
        bdf: Bdf,
        /// The driver it is bound to, if any.
        driver: Option<String>,
    },

    /// Opening a device node failed.
    #[error("{bdf}: opening {path} failed: {errno}; fix: {fix}", path = .path.display())]
    Open {
        /// Device.
        bdf: Bdf,
        /// The node.
        path: PathBuf,
        /// The errno of open.
        errno: Errno,
        /// What to do about it.
        fix: &'static str,
    },

    /// A device fd handed over for one device belongs to another.
    #[error(
        "a device fd passed for {bdf} belongs to {actual} (its fdinfo vfio-device-syspath); \
         fix: pass the fd of the device you name, or name the device of the fd"
    )]
    PassedFdMismatch {
        /// The device the caller named.
        bdf: Bdf,
        /// The device the fd belongs to.
        actual: Bdf,
    },

    /// A standard PCI capability list in config space is malformed.
    #[error(
        "{bdf}: PCI capability list is malformed at {offset:#x}: {reason}; fix: report the device"
    )]
    PciCapChain {
        /// Device.
        bdf: Bdf,
        /// Config-space offset of the offending pointer.
        offset: u16,
        /// What is wrong.
        reason: &'static str,
    },

    /// The device has no power-management capability.
    #[error(
        "{bdf}: no PCI power-management capability in config space \
         [rule: power states are set through PMCSR]; \
         fix: this device cannot change power state"
    )]
    PowerStateUnsupported {
        /// Device.
        bdf: Bdf,
    },

    /// A range has length 0.
    #[error(
        "{bdf} {region} range {range} at offset {offset:#x} has length 0 \
         [rule: every range must be non-empty; kernel: EINVAL]; fix: drop the range or give it a length"
    )]
    RangeEmpty {
        /// Device.
        bdf: Bdf,
        /// Region (BAR) index.
        region: RegionIndex,
        /// Index of the range in the request.
        range: usize,
        /// Range offset.
        offset: u64,
    },

    /// BAR address + offset (+ length) overflows 64 bits.
    #[error(
        "{bdf} {region} range {range} [{offset:#x}, +{length:#x}) overflows the physical address \
         space from BAR base {base:#x} [rule: base+offset+length must not overflow; kernel: EOVERFLOW]; \
         fix: offsets are relative to the BAR start and must lie inside it"
    )]
    RangeOverflow {
        /// Device.
        bdf: Bdf,
        /// Region (BAR) index.
        region: RegionIndex,
        /// Index of the range in the request.
        range: usize,
        /// Range offset.
        offset: u64,
        /// Range length.
        length: u64,
        /// Physical base address of the BAR (0 when unknown).
        base: u64,
    },

    /// A range ends past the end of the BAR.
    #[error(
        "{bdf} {region} range {range} [{offset:#x}, +{length:#x}) ends past the BAR size {bar_size:#x} \
         [rule: offset+length <= BAR size; kernel: EINVAL]; fix: shrink the range or lower its offset"
    )]
    RangePastEnd {
        /// Device.
        bdf: Bdf,
        /// Region (BAR) index.
        region: RegionIndex,
        /// Index of the range in the request.
        range: usize,
        /// Range offset.
        offset: u64,
        /// Range length.
        length: u64,
        /// Size of the BAR.
        bar_size: u64,
    },

    /// A range's offset or length is not a multiple of the page size.
    #[error(
        "{bdf} {region} range {range} [{offset:#x}, +{length:#x}) is not page aligned (page {page_size:#x}) \
         [rule: offset and length must be multiples of the page size; kernel: EINVAL]; \
         fix: round the offset down and the length up to whole pages"
    )]
    RangeUnaligned {
        /// Device.
        bdf: Bdf,
        /// Region (BAR) index.
        region: RegionIndex,
        /// Index of the range in the request.
        range: usize,
        /// Range offset.
        offset: u64,
        /// Range length.
        length: u64,
        /// Page size of the running kernel.
        page_size: u64,
    },

    /// The running total of range lengths overflows.
    #[error(
        "{bdf} {region} range {range}: adding length {length:#x} to the running total {total:#x} overflows \
         [rule: the sum of lengths must fit in size_t; kernel: EINVAL]; fix: use fewer or shorter ranges"
    )]
    RangesTotalOverflow {
        /// Device.
        bdf: Bdf,
        /// Region (BAR) index.
        region: RegionIndex,
        /// Index of the range whose length overflowed the total.
        range: usize,
        /// Total before this range.
        total: u64,
        /// Length of this range.
        length: u64,
    },

    /// The total size sets the kernel's DMA_IOVA_USE_SWIOTLB bit (bit 63).
    #[error(
        "{bdf} {region}: total size {total:#x} has bit 63 set \
         [rule: the dma-buf size must stay below 2^63 (DMA_IOVA_USE_SWIOTLB); kernel: EINVAL]; \
         fix: use fewer or shorter ranges"
    )]
    RangesTotalTooLarge {
        /// Device.
        bdf: Bdf,
        /// Region (BAR) index.
        region: RegionIndex,
        /// Sum of the range lengths.
        total: u64,
    },

    /// The region index is beyond what the device reports.
    #[error(
        "{bdf}: {region} does not exist (the device has {num_regions} regions) \
         [kernel: EINVAL]; fix: pick an index below num_regions"
    )]
    RegionIndex {
        /// Device.
        bdf: Bdf,
        /// Region index asked for.
        region: RegionIndex,
        /// Number of regions the device reports.
        num_regions: u32,
    },

    /// The region is not one of BAR0..BAR5.
    #[error(
        "{bdf} {region} is not a BAR \
         [rule: only BAR0 to BAR5 can be exported (not ROM, config, VGA or device regions); kernel: ENODEV]; \
         fix: use a region index 0 to 5"
    )]
    RegionNotBar {
        /// Device.
        bdf: Bdf,
        /// Region index.
        region: RegionIndex,
    },

    /// The region (or the asked part of it) cannot be mmapped.
    #[error(
        "{bdf} {region}: {reason} [rule: mmap needs VFIO_REGION_INFO_FLAG_MMAP and must stay \
         inside a sparse mmap area when the region lists them; kernel: EINVAL]; \
         fix: access the region with pread/pwrite, or map an advertised area"
    )]
    RegionNotMappable {
        /// Device.
        bdf: Bdf,
        /// Region index.
        region: RegionIndex,
        /// Why.
        reason: &'static str,
    },

    /// The device does not support VFIO_DEVICE_RESET.
    #[error(
        "{bdf}: VFIO device info lacks VFIO_DEVICE_FLAGS_RESET \
         [rule: VFIO_DEVICE_RESET needs a working reset method; kernel: EINVAL]; \
         fix: use a hot reset of the bus (VFIO_DEVICE_PCI_HOT_RESET) or FLR if offered"
    )]
    ResetUnsupported {
        /// Device.
        bdf: Bdf,
    },

    /// A mapping could not be guarded against a revoke.
    #[error(
        "{bdf} {region}: the mapping cannot be guarded against a revoke: {why}; fix: drop \
         other guarded mappings first"
    )]
    SigbusGuard {
        /// Device.
        bdf: Bdf,
        /// Region index.
        region: RegionIndex,
        /// Why.
        why: crate::GuardError,
    },

    /// The export argument would not fit the ioctl's 32-bit argsz.
    #[error(
        "{bdf} {region}: {count} ranges do not fit one VFIO_DEVICE_FEATURE argument (argsz is 32 bits); \
         fix: use fewer ranges"
    )]
    TooManyRanges {
        /// Device.
        bdf: Bdf,
        /// Region (BAR) index.
        region: RegionIndex,
        /// Number of ranges asked for.
        count: usize,
    },
}

impl From<FdInfoError> for Error {
    fn from(e: FdInfoError) -> Self {
        match e {
            FdInfoError::Parse { fd, line, reason } => Error::FdInfoParse { fd, line, reason },
            FdInfoError::Read { path, source } => Error::FdInfoRead { path, source },
        }
    }
}

impl Error {
    /// The errno the kernel returned, or for checks this library makes before
    /// calling the kernel, the errno the kernel's own check returns for the same
    /// arguments. `None` where no kernel errno applies (parse errors, and
    /// refusals that are this library's policy, like [`Error::MsixOverlap`]).
    pub fn errno(&self) -> Option<Errno> {
        use Error::*;
        match self {
            BarAbsent { .. } | RegionNotBar { .. } => Some(Errno::NODEV),
            BarEndsAtAddressTop { .. }
            | BarNotMemory { .. }
            | BarSmallerThanPage { .. }
            | NoRanges { .. }
            | RangeEmpty { .. }
            | RangePastEnd { .. }
            | RangeUnaligned { .. }
            | RangesTotalOverflow { .. }
            | RangesTotalTooLarge { .. }
            | RegionIndex { .. }
            | RegionNotMappable { .. }
            | ResetUnsupported { .. } => Some(Errno::INVAL),
            RangeOverflow { .. } => Some(Errno::OVERFLOW),
            Host(e) => e.errno(),
            ConfigAccess { errno, .. }
            | Export { errno, .. }
            | HeldElsewhere { errno, .. }
            | Ioctl { errno, .. }
            | Mmap { errno, .. }
            | Open { errno, .. } => Some(*errno),
            FdInfoRead { source, .. } => Errno::from_io_error(source),
            BdfParse(_)
            | CapChain { .. }
            | ConfigShort { .. }
            | FdInfoParse { .. }
            | FlrUnsupported { .. }
            | GroupNotViable { .. }
            | IommuTypeUnsupported { .. }
            | MmioAccess { .. }
            | MmioSpan { .. }
            | MsixOverlap { .. }
            | SigbusGuard { .. }
            | NoCdev { .. }
            | NoIommuGroup { .. }
            | NotPci { .. }
            | NotVfioBound { .. }
            | PassedFdMismatch { .. }
            | PciCapChain { .. }
            | PowerStateUnsupported { .. }
            | TooManyRanges { .. } => None,
        }
    }

    /// Whether this error was predicted by the library before any ioctl, as
    /// opposed to reported by the kernel.
    pub fn is_predicted(&self) -> bool {
        use Error::*;
        matches!(
            self,
            BarAbsent { .. }
                | BarEndsAtAddressTop { .. }
                | BarNotMemory { .. }
                | BarSmallerThanPage { .. }
                | MsixOverlap { .. }
                | NoRanges { .. }
                | RangeEmpty { .. }
                | RangeOverflow { .. }
                | RangePastEnd { .. }
                | RangeUnaligned { .. }
                | RangesTotalOverflow { .. }
                | RangesTotalTooLarge { .. }
                | RegionNotBar { .. }
                | ResetUnsupported { .. }
                | TooManyRanges { .. }
        )
    }
}

impl Error {
    /// A stable, machine-readable name for this error: the variant in snake_case
    /// (`range_past_end`; for [`Error::Host`], the host error's own kind:
    /// `no_such_device`), for scripts that branch on the kind of
    /// failure instead of parsing the message. Kinds are never renamed; new variants
    /// add new kinds.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::BarAbsent { .. } => "bar_absent",
            Error::BarEndsAtAddressTop { .. } => "bar_ends_at_address_top",
            Error::BarNotMemory { .. } => "bar_not_memory",
            Error::BarSmallerThanPage { .. } => "bar_smaller_than_page",
            Error::BdfParse(..) => "bdf_parse",
            Error::CapChain { .. } => "cap_chain",
            Error::ConfigAccess { .. } => "config_access",
            Error::ConfigShort { .. } => "config_short",
            Error::Export { .. } => "export",
            Error::FdInfoParse { .. } => "fd_info_parse",
            Error::FdInfoRead { .. } => "fd_info_read",
            Error::FlrUnsupported { .. } => "flr_unsupported",
            Error::GroupNotViable { .. } => "group_not_viable",
            Error::HeldElsewhere { .. } => "held_elsewhere",
            Error::Host(e) => e.kind(),
            Error::Ioctl { .. } => "ioctl",
            Error::IommuTypeUnsupported { .. } => "iommu_type_unsupported",
            Error::Mmap { .. } => "mmap",
            Error::MmioAccess { .. } => "mmio_access",
            Error::MmioSpan { .. } => "mmio_span",
            Error::MsixOverlap { .. } => "msix_overlap",
            Error::NoCdev { .. } => "no_cdev",
            Error::NoIommuGroup { .. } => "no_iommu_group",
            Error::NoRanges { .. } => "no_ranges",
            Error::NotPci { .. } => "not_pci",
            Error::NotVfioBound { .. } => "not_vfio_bound",
            Error::Open { .. } => "open",
            Error::PassedFdMismatch { .. } => "passed_fd_mismatch",
            Error::PciCapChain { .. } => "pci_cap_chain",
            Error::PowerStateUnsupported { .. } => "power_state_unsupported",
            Error::RangeEmpty { .. } => "range_empty",
            Error::RangeOverflow { .. } => "range_overflow",
            Error::RangePastEnd { .. } => "range_past_end",
            Error::RangeUnaligned { .. } => "range_unaligned",
            Error::RangesTotalOverflow { .. } => "ranges_total_overflow",
            Error::RangesTotalTooLarge { .. } => "ranges_total_too_large",
            Error::RegionIndex { .. } => "region_index",
            Error::RegionNotBar { .. } => "region_not_bar",
            Error::RegionNotMappable { .. } => "region_not_mappable",
            Error::ResetUnsupported { .. } => "reset_unsupported",
            Error::SigbusGuard { .. } => "sigbus_guard",
            Error::TooManyRanges { .. } => "too_many_ranges",
        }
    }
}

#[cfg(test)]
mod tests {
    /// The variants of `Error`, in source order, read from this file.
    fn variants() -> Vec<String> {
        let src = include_str!("error.rs");
        let body = src
            .split_once("pub enum Error {")
            .and_then(|(_, rest)| rest.split_once("\n}\n"))
            .map(|(body, _)| body)
            .expect("the Error enum");
        body.lines()
            .filter_map(|l| l.strip_prefix("    "))
            .filter(|l| l.starts_with(|c: char| c.is_ascii_uppercase()))
            .map(|l| {
                l.split(|c: char| !c.is_ascii_alphanumeric())
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn each_kind_is_its_variant_in_snake_case() {
        let src = include_str!("error.rs");
        let names = variants();
        assert!(names.len() > 30, "the scan found {names:?}");
        for name in names {
            let mut snake = String::new();
            for (i, c) in name.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    snake.push('_');
                }
                snake.push(c.to_ascii_lowercase());
            }
            let arm = |tail: &str| format!("Error::{name}{tail} => \"{snake}\",");
            // A wrapped error keeps the kind it has in its own crate.
            let wrapped = format!("Error::{name}(e) => e.kind(),");
            assert!(
                src.contains(&arm(" { .. }"))
                    || src.contains(&arm("(..)"))
                    || src.contains(&wrapped),
                "{name}: no kind {snake:?}"
            );
        }
    }
}
