//! Import dma-bufs into other devices.
//!
//! - [`iommufd`]: map a vfio-pci BAR dma-buf into an iommufd I/O address space
//!   so that a device attached there DMAs to the peer BAR (always built);
//! - [`engine`]: the devices that move bytes through an IOAS (QEMU's edu
//!   today), driven from user space, and [`engine::AttachedEngine`], one
//!   attached to its IOAS;
//! - `drm` (feature `drm`): import a BAR dma-buf into a DRM driver that attaches
//!   peer-to-peer (amdgpu, xe, virtio-gpu with blob resources) and scan it out;
//! - `rdma` (feature `rdma`): memory regions from host memory or any dma-buf,
//!   RC queue pairs over RDMA CM, RDMA WRITE/READ streams.
//!
//! Which importers a machine has and what each driver does with a BAR dma-buf (the
//! atlas, the driver table), and the IOMMU fault log, are host facts: they live in
//! `peerdma-host` (`peerdma_host::{atlas, importers, fault_log}`).

#[cfg(feature = "drm")]
#[deny(missing_docs)]
pub mod drm;
#[deny(missing_docs)]
pub mod engine;
#[deny(missing_docs)]
pub mod iommufd;
#[cfg(feature = "rdma")]
#[deny(missing_docs)]
pub mod rdma;
#[cfg(feature = "vulkan")]
pub mod vulkan;

/// `subject: cause`, or the cause alone where it already starts with the subject (an
/// exporter error names its BDF first): the BDF said once.
pub(crate) fn said_once(subject: &str, cause: &dyn std::fmt::Display) -> String {
    let cause = cause.to_string();
    if cause.starts_with(subject) {
        cause
    } else {
        format!("{subject}: {cause}")
    }
}

#[cfg(test)]
mod said_once_tests {
    #[test]
    fn a_cause_that_names_the_subject_first_is_not_prefixed_again() {
        let bdf = "0000:00:12.0";
        assert_eq!(
            super::said_once(bdf, &"0000:00:12.0 is in use: pid 86"),
            "0000:00:12.0 is in use: pid 86"
        );
        assert_eq!(
            super::said_once(bdf, &"config read failed"),
            "0000:00:12.0: config read failed"
        );
    }
}
