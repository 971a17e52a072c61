//! What a kernel errno means for the call that returned it, and what to do.
//!
//! The tables follow the kernel source of each call (Linux 7.2): the dma-buf
//! export (`vfio_pci_dmabuf.c`, `vfio_main.c`), the access-path ioctls
//! (`group.c`, `container.c`, `device_cdev.c`) and opening the device nodes.

use rustix::io::Errno;

use crate::error::Error;
use crate::ioctl::VfioIoctl;
use peerdma_host::Bdf;

/// Meaning and fix for an errno of `VFIO_DEVICE_FEATURE_DMA_BUF`.
pub(crate) fn dma_buf(errno: Errno) -> (&'static str, &'static str) {
    match errno {
        Errno::INVAL => (
            "the kernel refused the arguments: nr_ranges 0, flags not 0, a zero, unaligned or \
             out-of-BAR range, a total with bit 63 set, a BAR without a P2P provider, a short \
             argsz, or a cdev device fd not bound to an iommufd",
            "check the ranges against the BAR (the library's own checks name the rule) and \
             that the BAR is a memory BAR the P2P core knows (CONFIG_PCI_P2PDMA)",
        ),
        Errno::NODEV => (
            "the region is not a BAR vfio-pci claimed (ROM, config, VGA, an absent BAR), or the \
             device is being unregistered",
            "export a BAR that region info reports with a non-zero size; if the device is \
             going away, reopen it after it returns",
        ),
        Errno::OVERFLOW => (
            "BAR address + offset + length overflows 64 bits",
            "offsets are relative to the BAR start and must lie inside it",
        ),
        Errno::OPNOTSUPP => (
            "the device's vfio driver offers no dma-buf export (a variant driver without \
             get_dmabuf_phys)",
            "bind the device to vfio-pci itself",
        ),
        Errno::NOTTY => (
            "the kernel has no VFIO_DEVICE_FEATURE_DMA_BUF (before 6.19, or built without \
             CONFIG_VFIO_PCI_DMABUF, which needs PCI_P2PDMA and DMA_SHARED_BUFFER)",
            "run a kernel that has it; Device::supports_dma_buf() tells in advance",
        ),
        Errno::NOMEM => (
            "the kernel could not allocate the range list or the buffer",
            "use fewer ranges",
        ),
        Errno::MFILE | Errno::NFILE => (
            "no file descriptor left for the new dma-buf",
            "close descriptors or raise RLIMIT_NOFILE",
        ),
        Errno::FAULT => (
            "the kernel could not read the argument",
            "this is a bug in the library; report it",
        ),
        Errno::BADF => (
            "the device fd is not open",
            "keep the Device alive while exporting",
        ),
        _ => (
            "an errno this kernel's exporter is not known to return",
            "check dmesg for the vfio-pci message",
        ),
    }
}

/// Fix for an errno of one of the access-path or device ioctls.
pub(crate) fn ioctl(op: VfioIoctl, errno: Errno) -> &'static str {
    use VfioIoctl::*;
    match (op, errno) {
        // vfio_device_block_group (device_cdev.c).
        (DeviceBindIommufd, Errno::BUSY) => {
            "the device's group is open through /dev/vfio/GROUP; close it, or open the device through the group/container access path"
        }
        (DeviceBindIommufd, Errno::INVAL) => {
            "the device is already open (a cdev device can be opened once) or the fd is already bound"
        }
        // noiommu devices have no cdev in 7.2; EPERM comes from iommufd_device_bind:
        // iommu_device_claim_dma_owner, or no MSI isolation.
        (DeviceBindIommufd, Errno::PERM) => {
            "another device of the IOMMU group is bound to a kernel driver or owned by another \
             container/iommufd (bind every group member to vfio-pci), or the platform cannot \
             isolate MSIs (enable interrupt remapping, or load iommufd with allow_unsafe_interrupts=1)"
        }
        // vfio_group_has_iommu (group.c).
        (GroupSetContainer, Errno::INVAL) => {
            "the group is already in a container or bound to an iommufd"
        }
        // __iommu_take_dma_ownership (drivers/iommu/iommu.c).
        (GroupSetContainer, Errno::BUSY) => {
            "the IOMMU group's DMA domain is in use by someone else; close what holds it"
        }
        // vfio_container_attach_group, iommu_group_claim_dma_owner.
        (GroupSetContainer, Errno::PERM) => {
            "noiommu groups need CAP_SYS_RAWIO and cannot share a container with IOMMU groups, \
             or the group is already owned (a member bound to a kernel driver, another container)"
        }
        (GroupSetContainer, Errno::BADFD) => {
            "the fd passed as container is neither /dev/vfio/vfio nor an iommufd"
        }
        (SetIommu, Errno::NODEV) => {
            "no IOMMU backend accepts this group; load vfio_iommu_type1 (or use noiommu mode)"
        }
        (SetIommu, Errno::INVAL) => {
            "the container has no group yet or its IOMMU is already set"
        }
        (GroupGetDeviceFd, Errno::INVAL) => {
            "the group has no container with an IOMMU set"
        }
        (GroupGetDeviceFd, Errno::NODEV) => {
            "the device is not in this IOMMU group or not bound to vfio-pci"
        }
        (GroupGetDeviceFd, Errno::BUSY) => {
            "the device is open through its cdev; close that first"
        }
        (GroupGetStatus, _) => "the fd is not a VFIO group",
        (DeviceReset, Errno::INVAL) => {
            "the device has no reset method; try a bus hot reset"
        }
        (DeviceReset, Errno::AGAIN) | (DeviceReset, Errno::BUSY) => {
            "another reset or config access holds the device; retry"
        }
        (DeviceGetRegionInfo, Errno::INVAL) => {
            "the region index is beyond num_regions, or VGA on a non-VGA device"
        }
        // vfio_df_ioctl_attach_pt (device_cdev.c), iommufd_device_attach.
        (DeviceAttachIommufdPt, Errno::INVAL) => {
            "the device fd is not bound to an iommufd, or the id is not an IOAS"
        }
        (DeviceAttachIommufdPt, Errno::NOENT) => "no such IOAS in the device's iommufd",
        (DeviceAttachIommufdPt, Errno::BUSY) => "the device is already attached elsewhere",
        (DeviceAttachIommufdPt, Errno::NOSPC) | (DeviceAttachIommufdPt, Errno::EXIST) => {
            "an existing mapping of the IOAS overlaps a reserved region of this device \
             (the MSI window): map such IOVAs only after attaching"
        }
        (DeviceAttachIommufdPt, _) => "unexpected; see drivers/vfio/device_cdev.c",
        (DeviceDetachIommufdPt, Errno::INVAL) => {
            "the device fd is not bound to an iommufd, or it is not attached"
        }
        (_, Errno::NOTTY) => "the fd is not the kind of VFIO fd this ioctl needs",
        (_, Errno::INVAL) => {
            "a cdev device fd must be bound to an iommufd before any other ioctl"
        }
        (_, Errno::NODEV) => "the device is gone (unbound or removed); reopen it",
        _ => "check dmesg for the vfio message",
    }
}

/// What kind of node an open failed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    /// `/dev/iommu`.
    Iommu,
    /// `/dev/vfio/devices/vfioN`.
    Cdev,
    /// `/dev/vfio/vfio`.
    Container,
    /// `/dev/vfio/N` or `/dev/vfio/noiommu-N`.
    Group,
}

/// Fix for an errno of opening a VFIO or iommufd node.
pub(crate) fn open(node: Node, errno: Errno) -> &'static str {
    match (node, errno) {
        (Node::Iommu, Errno::NOENT) => "load the iommufd module (CONFIG_IOMMUFD), or open the device through the VFIO group/container access path",
        (Node::Cdev, Errno::NOENT) => {
            "bind the device to vfio-pci on a kernel with CONFIG_VFIO_DEVICE_CDEV, or open it through the VFIO group/container access path"
        }
        (Node::Container, Errno::NOENT) => "load the vfio module",
        (Node::Group, Errno::NOENT) => {
            "bind every device of the IOMMU group to vfio-pci (the group node appears then)"
        }
        (Node::Group, Errno::BUSY) => {
            "another process (or this one) holds the group open, or a device of it is open through its cdev"
        }
        (Node::Cdev, Errno::NODEV) => "the device is being unbound; rebind it to vfio-pci",
        (_, Errno::ACCESS) | (_, Errno::PERM) => {
            "give this user access to the node (udev rule, chown) or run with the needed privileges"
        }
        _ => "check that the node is a VFIO/iommufd character device",
    }
}

/// Maps an errno from ioctl `op` on device `bdf` to [`Error::Ioctl`] with its fix.
pub(crate) fn ioctl_err(bdf: Bdf, op: VfioIoctl) -> impl Fn(Errno) -> Error {
    move |errno| Error::Ioctl {
        bdf,
        ioctl: op.name(),
        errno,
        fix: ioctl(op, errno),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use VfioIoctl::*;

    #[test]
    fn export_errnos_have_distinct_meanings() {
        let errnos = [
            Errno::INVAL,
            Errno::NODEV,
            Errno::OVERFLOW,
            Errno::OPNOTSUPP,
            Errno::NOTTY,
            Errno::NOMEM,
            Errno::MFILE,
            Errno::FAULT,
            Errno::BADF,
            Errno::IO,
        ];
        let meanings: std::collections::HashSet<_> = errnos.iter().map(|e| dma_buf(*e).0).collect();
        assert_eq!(meanings.len(), errnos.len());
        assert!(dma_buf(Errno::NODEV).0.contains("BAR"));
        assert!(dma_buf(Errno::OVERFLOW).1.contains("offset"));
    }

    #[test]
    fn ioctl_fixes_are_specific_first() {
        assert!(ioctl(DeviceBindIommufd, Errno::BUSY).contains("group"));
        assert!(ioctl(DeviceBindIommufd, Errno::PERM).contains("kernel driver"));
        assert!(ioctl(GroupSetContainer, Errno::INVAL).contains("already"));
        assert!(ioctl(DeviceGetInfo, Errno::INVAL).contains("bound"));
        assert!(ioctl(DeviceReset, Errno::INVAL).contains("reset"));
        assert!(ioctl(DeviceAttachIommufdPt, Errno::EXIST).contains("MSI window"));
        assert!(ioctl(DeviceAttachIommufdPt, Errno::NOTTY).contains("device_cdev.c"));
        assert!(open(Node::Group, Errno::BUSY).contains("holds the group"));
        assert!(open(Node::Cdev, Errno::ACCESS).contains("access"));
    }
}
