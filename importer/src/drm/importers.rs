//! Which DRM drivers can import a vfio-pci BAR dma-buf, read in the Linux 7.2 source.
//!
//! The exporter (`drivers/vfio/pci/vfio_pci_dmabuf.c`, `vfio_pci_dma_buf_attach`)
//! admits an attachment only when the importer allows peer-to-peer
//! (`attach->peer2peer`) **and** can be revoked (`dma_buf_attach_revocable()`: its
//! attach ops supply `invalidate_mappings`); otherwise attach fails with
//! EOPNOTSUPP, and a revoked buffer fails with ENODEV.
//!
//! - `drivers/gpu/drm/drm_prime.c` `drm_gem_prime_import_dev()`, the import of every
//!   driver without its own, attaches with `dma_buf_attach()`: static, no peer2peer,
//!   so vgem and virtio-gpu without blob resources are refused.
//! - `drivers/gpu/drm/virtio/virtgpu_prime.c` `virtgpu_gem_prime_import()` uses
//!   `dma_buf_dynamic_attach()` with `allow_peer2peer = true` and
//!   `invalidate_mappings` only when the device has resource blobs and no virgl 3D;
//!   otherwise it falls back to `drm_gem_prime_import()`.
//! - `amdgpu_dma_buf.c` and `xe_dma_buf.c` attach dynamically with `allow_peer2peer`
//!   and a move/invalidate callback.
//! - i915 (`i915_gem_dmabuf.c`: `dma_buf_attach()`) and nouveau (`nouveau_prime.c`
//!   has only `gem_prime_import_sg_table`, so the generic `drm_gem_prime_import()`)
//!   attach statically.

/// What a DRM driver does with a vfio-pci BAR dma-buf in Linux 7.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Importer {
    /// Attaches peer-to-peer and revocably: the import works where the P2P distance
    /// check passes.
    PeerToPeer,
    /// Peer-to-peer and revocable only in one configuration (the text says which).
    Conditional(&'static str),
    /// Attaches statically (no peer2peer, not revocable): refused with EOPNOTSUPP.
    Static,
    /// A driver this table does not know.
    Unknown,
}

/// The drivers known to import a vfio-pci BAR dma-buf, for messages.
pub const CAPABLE: &str = "amdgpu, xe, and virtio_gpu with blob resources and no virgl 3D \
                           (QEMU: -device virtio-gpu-pci,blob=true)";

/// What `driver` (the DRM driver name, `DRM_IOCTL_VERSION`) does with a BAR dma-buf:
/// [`crate::atlas::DRM_DRIVERS`], the one table, with virtio-gpu's condition spelled out.
pub fn importer(driver: &str) -> Importer {
    if driver == "virtio_gpu" {
        return Importer::Conditional(
            "only with resource blobs and without virgl 3D (QEMU: -device \
             virtio-gpu-pci,blob=true, which needs /dev/udmabuf and a memfd memory backend \
             on the host); otherwise it falls back to drm_gem_prime_import(), a static attach",
        );
    }
    match crate::atlas::DRM_DRIVERS
        .iter()
        .find(|(d, _, _)| *d == driver)
    {
        Some((_, true, _)) => Importer::PeerToPeer,
        Some((_, false, _)) => Importer::Static,
        None => Importer::Unknown,
    }
}

/// Why `driver` refused a BAR dma-buf with EOPNOTSUPP, and what works instead.
pub fn refusal_fix(driver: &str) -> String {
    let why = match importer(driver) {
        Importer::PeerToPeer => format!(
            "{driver} normally attaches peer-to-peer and revocably; check that the buffer \
             comes from vfio-pci (other exporters refuse differently)"
        ),
        Importer::Conditional(when) => format!("{driver} imports a peer BAR {when}"),
        Importer::Static => format!(
            "{driver} attaches dma-bufs statically (no peer2peer, not revocable), which the \
             vfio-pci exporter refuses"
        ),
        Importer::Unknown => format!(
            "{driver} does not attach peer-to-peer and revocably, which the vfio-pci \
             exporter requires"
        ),
    };
    format!("{why}; drivers that import a vfio BAR in Linux 7.2: {CAPABLE}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_matches_the_72_source() {
        assert_eq!(importer("amdgpu"), Importer::PeerToPeer);
        assert_eq!(importer("xe"), Importer::PeerToPeer);
        assert!(matches!(importer("virtio_gpu"), Importer::Conditional(_)));
        for d in ["vgem", "i915", "nouveau"] {
            assert_eq!(importer(d), Importer::Static, "{d}");
        }
        let fix = refusal_fix("vgem");
        assert!(fix.contains("vgem") && fix.contains("amdgpu, xe"), "{fix}");
        assert!(refusal_fix("virtio_gpu").contains("blob=true"));
    }
}
