//! A dma-buf imported as a GEM object (`DRM_IOCTL_PRIME_FD_TO_HANDLE`), its handle
//! closed (`DRM_IOCTL_GEM_CLOSE`) on drop.

use std::os::fd::AsFd;
use std::sync::Arc;

use drm::buffer::Handle;
use drm::control::Device as _;
use peerdma_exporter::DmaBuf;
use peerdma_host::importers::{drm_refusal_fix, DRM_CAPABLE};
use peerdma_host::sysfs::Sysfs;
use peerdma_host::Bdf;
use rustix::io::Errno;

use super::card::Card;
use super::error::{Error, Result};

/// An imported buffer: a GEM handle on a card, closed when the last [`Arc`] goes.
/// Importing the same dma-buf again on the same card while it lives returns the same
/// `Gem` (the kernel hands back the same handle).
#[derive(Debug)]
pub struct Gem {
    card: Card,
    handle: Handle,
    size: u64,
    exporter: Option<Bdf>,
}

impl Card {
    /// Imports a vfio-pci BAR dma-buf; the exporter's BDF explains refusals.
    ///
    /// # Errors
    ///
    /// As [`import_fd`](Self::import_fd).
    pub fn import(&self, buf: &DmaBuf) -> Result<Arc<Gem>> {
        self.import_fd(buf, buf.size(), Some(buf.bdf()))
    }

    /// Imports any dma-buf fd of `size` bytes; `exporter` is the PCI function whose
    /// BAR it holds, when known.
    ///
    /// # Errors
    ///
    /// [`Error::NoPrimeImport`] when the driver cannot import at all;
    /// [`Error::NotPeerToPeer`] for EOPNOTSUPP (the driver does not attach
    /// peer-to-peer and revocably; the message names the drivers that do);
    /// [`Error::P2pDistance`] for EINVAL (the P2P distance check refused; the
    /// message carries `peerdma path`'s verdict and the topology that works);
    /// [`Error::Revoked`] for ENODEV; [`Error::PrimeImport`] otherwise.
    pub fn import_fd(&self, buf: impl AsFd, size: u64, exporter: Option<Bdf>) -> Result<Arc<Gem>> {
        if !self.can_prime_import()? {
            return Err(Error::NoPrimeImport {
                card: self.describe(),
                fix: format!("use a driver that imports: {}", DRM_CAPABLE),
            });
        }
        // Held across the ioctl, so a Gem being dropped cannot close the handle the
        // kernel is about to hand back.
        let mut imports = self.imports();
        match self.prime_fd_to_buffer(buf.as_fd()) {
            Ok(handle) => {
                if let Some(live) = imports.get(&u32::from(handle)).and_then(|w| w.upgrade()) {
                    return Ok(live);
                }
                let gem = Arc::new(Gem {
                    card: self.clone(),
                    handle,
                    size,
                    exporter,
                });
                imports.insert(u32::from(handle), Arc::downgrade(&gem));
                Ok(gem)
            }
            Err(e) => {
                Err(self.import_error(Errno::from_io_error(&e).unwrap_or(Errno::IO), exporter))
            }
        }
    }

    fn import_error(&self, errno: Errno, exporter: Option<Bdf>) -> Error {
        match errno {
            Errno::OPNOTSUPP => Error::NotPeerToPeer {
                card: self.describe(),
                driver: self.driver().to_string(),
                exporter,
                errno,
                fix: drm_refusal_fix(self.driver()),
            },
            Errno::INVAL => {
                let verdict = match (exporter, self.bdf()) {
                    (Some(a), Some(b)) => Sysfs::system().p2p_route(a, b).ok().map(|r| r.verdict),
                    _ => None,
                };
                Error::P2pDistance {
                    card: self.describe(),
                    gpu: self.bdf(),
                    exporter,
                    verdict,
                    errno,
                    fix: distance_fix(verdict),
                }
            }
            Errno::NODEV => Error::Revoked {
                card: self.describe(),
                exporter,
                reason: None,
                fix: "turn the exporter's memory decode back on (or finish its reset) and \
                      import again"
                    .into(),
            },
            _ => Error::PrimeImport {
                card: self.describe(),
                errno,
                fix: "see the kernel log (dmesg) for the driver's reason".into(),
            },
        }
    }
}

/// What to say about an EINVAL import, given `peerdma path`'s verdict.
fn distance_fix(verdict: Option<peerdma_host::p2pdma::P2pVerdict>) -> String {
    const WORKS: &str = "P2P works between devices under one PCIe switch or root port (a \
                         common upstream bridge, without ACS redirection), through a host \
                         bridge on the kernel's allow-list (pci_p2pdma_whitelist: Intel Xeon \
                         E5/E7, Skylake-E, Ice Lake-SP), or on an AMD Zen or later CPU (family \
                         >= 0x17), which the kernel trusts with any host bridge";
    match verdict {
        Some(v) if !v.allowed() => format!("`peerdma path` predicted this: {}. {WORKS}", v.why()),
        Some(v) => format!(
            "`peerdma path` predicted the route allowed ({}), so the driver refused for \
             another reason: see dmesg. {WORKS}",
            v.why()
        ),
        None => format!("run `peerdma path EXPORTER GPU` for the route. {WORKS}"),
    }
}

impl Gem {
    /// The card it lives on.
    pub fn card(&self) -> &Card {
        &self.card
    }

    /// The GEM handle.
    pub fn handle(&self) -> Handle {
        self.handle
    }

    /// The buffer's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The exporting device, when known.
    pub fn exporter(&self) -> Option<Bdf> {
        self.exporter
    }
}

impl Drop for Gem {
    fn drop(&mut self) {
        // Under the imports lock, so no import of the same buffer runs in between.
        let mut imports = self.card.imports();
        let key = u32::from(self.handle);
        if imports.get(&key).is_some_and(|w| w.strong_count() > 0) {
            // A newer import got the same handle from the kernel and owns it now.
            return;
        }
        imports.remove(&key);
        // GEM_CLOSE of a handle this Gem owns; nothing useful to do on failure.
        let _ = self.card.close_buffer(self.handle);
    }
}
