//! An executable model of the kernel's checks for `VFIO_DEVICE_FEATURE_DMA_BUF`,
//! written from drivers/vfio/pci/vfio_pci_dmabuf.c of Linux 7.2 (functions
//! `vfio_pci_core_feature_dma_buf`, `validate_dmabuf_input`,
//! `vfio_pci_core_get_dmabuf_phys` and `vfio_pci_core_fill_phys_vec`), line by
//! line and independently of `crate::ranges`, so that the fuzz targets can
//! compare the two. Only the checks that depend on the arguments and the BAR
//! are modelled (not allocation failures or a device being unregistered).

use rustix::io::Errno;

/// `VFIO_PCI_ROM_REGION_INDEX`.
const ROM_REGION_INDEX: u32 = 6;
/// `DMA_IOVA_USE_SWIOTLB`.
const USE_SWIOTLB: u64 = 1 << 63;

/// The BAR as the kernel sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KernelBar {
    /// `pci_resource_start`.
    pub(crate) start: u64,
    /// `pci_resource_len` (0: no BAR, `vfio_pci_core_get_iomap` fails).
    pub(crate) len: u64,
    /// `pcim_p2pdma_provider` returns a provider (memory BARs only).
    pub(crate) has_provider: bool,
}

/// One export request as user space passes it.
#[derive(Clone, Debug)]
pub(crate) struct KernelRequest<'a> {
    pub(crate) flags: u32,
    pub(crate) region_index: u32,
    pub(crate) ranges: &'a [(u64, u64)],
    pub(crate) page_size: u64,
}

/// The kernel's answer: the dma-buf size, or the errno.
pub(crate) fn export(req: &KernelRequest<'_>, bar: &KernelBar) -> Result<u64, Errno> {
    // if (!get_dma_buf.nr_ranges || get_dma_buf.flags) return -EINVAL;
    if req.ranges.is_empty() || req.flags != 0 {
        return Err(Errno::INVAL);
    }
    // region_index >= VFIO_PCI_ROM_REGION_INDEX || IS_ERR(get_iomap) -> -ENODEV
    if req.region_index >= ROM_REGION_INDEX || bar.len == 0 {
        return Err(Errno::NODEV);
    }
    // validate_dmabuf_input()
    let aligned = |v: u64| v.is_multiple_of(req.page_size);
    let mut length: u64 = 0;
    for &(offset, len) in req.ranges {
        if len == 0 || !aligned(offset) || !aligned(len) {
            return Err(Errno::INVAL);
        }
        length = length.checked_add(len).ok_or(Errno::INVAL)?;
    }
    if length & USE_SWIOTLB != 0 {
        return Err(Errno::INVAL);
    }
    // vfio_pci_core_get_dmabuf_phys(): no provider -> -EINVAL
    if !bar.has_provider {
        return Err(Errno::INVAL);
    }
    // vfio_pci_core_fill_phys_vec(): max_addr = start + len (phys_addr_t, wraps)
    let max_addr = bar.start.wrapping_add(bar.len);
    for &(offset, len) in req.ranges {
        if len == 0 {
            return Err(Errno::INVAL);
        }
        let paddr = bar.start.checked_add(offset).ok_or(Errno::OVERFLOW)?;
        let end = paddr.checked_add(len).ok_or(Errno::OVERFLOW)?;
        if end > max_addr {
            return Err(Errno::INVAL);
        }
    }
    Ok(length)
}
