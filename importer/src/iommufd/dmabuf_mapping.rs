//! A dma-buf range mapped in an IOAS (`IOMMU_IOAS_MAP_FILE`): the
//! [`DmaBufMapping`], which follows its exporter's revokes
//! ([`MappingState`]), remaps in place, and unmaps on drop.

use std::borrow::Borrow;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use peerdma_exporter::{Device, DmaBuf, RevokeEvent, RevokeReason, RevokeState, SubscriptionToken};
use peerdma_host::fdinfo::FdInfo;
use peerdma_host::sysfs::Sysfs;
use peerdma_uapi::iommufd::IOMMU_IOAS_MAP_FIXED_IOVA;
use rustix::io::Errno;

use super::error::{map_fix, Error, Result, SpanRule};
use super::ioctl::{self, IommufdIoctl};
use super::iova::{release, reserve};
use super::map_request::MapRequest;
use super::{Ioas, IoasInner, Iova, Prot};

/// The exporter name vfio-pci gives its dma-bufs (fdinfo `exp_name`).
const VFIO_EXP_NAME: &str = "vfio_pci_core";

/// Whether DMA through a dma-buf mapping reaches the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingState {
    /// Mapped, and no revoke seen since: DMA reaches the buffer.
    Live,
    /// The exporter revoked the buffer: the kernel tore the IOMMU mapping
    /// down, DMA to the IOVA faults. The reason, when known.
    Revoked(Option<RevokeReason>),
    /// The exporter restored the buffer, but the mapping is still dead (the
    /// kernel does not rebuild it): [`DmaBufMapping::remap`].
    NeedsRemap,
    /// Nothing is mapped at the IOVA (a remap failed); the IOVA stays reserved.
    Unmapped,
}

/// What this mapping knows of its exporter's revoke lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Live,
    Revoked(Option<RevokeReason>),
    Restored,
}

/// Issues `IOMMU_IOAS_MAP_FILE` for `req` at `at` (always
/// `IOMMU_IOAS_MAP_FIXED_IOVA`: the window is reserved first) and turns a
/// refusal into the error that explains it.
fn map_file_at(ioas: &IoasInner, file: BorrowedFd<'_>, at: u64, req: &MapRequest) -> Result<()> {
    ioctl::ioas_map_file(
        ioas.fd(),
        ioas.id,
        req.prot.flags() | IOMMU_IOAS_MAP_FIXED_IOVA,
        file,
        req.offset,
        req.len,
        at,
    )
    .map(|_| ())
    .map_err(|errno| map_file_error(ioas, file, at, req, errno))
}

/// Turns a MAP_FILE errno into the error that explains it.
fn map_file_error(
    ioas: &IoasInner,
    file: BorrowedFd<'_>,
    iova: u64,
    req: &MapRequest,
    errno: Errno,
) -> Error {
    match errno {
        Errno::OPNOTSUPP => {
            let exporter = FdInfo::of(file).ok().and_then(|i| i.exp_name);
            if exporter.as_deref() == Some(VFIO_EXP_NAME) {
                Error::DmaBufMultiRange {
                    ranges: req.ranges,
                    errno,
                }
            } else {
                Error::DmaBufForeign { exporter, errno }
            }
        }
        Errno::NODEV => Error::DmaBufRevoked {
            iova,
            reason: req.revoked,
            errno,
        },
        _ => Error::Map {
            ioctl: IommufdIoctl::IoasMapFile,
            ioas: ioas.id,
            iova,
            len: req.len,
            offset: req.offset,
            errno,
            fix: map_fix(errno),
        },
    }
}

/// A range of a dma-buf mapped in an IOAS (`IOMMU_IOAS_MAP_FILE`), unmapped on
/// drop. It holds the buffer handle it was given (`F`: `&DmaBuf`, `Arc<DmaBuf>`,
/// a `DmaBuf`, an `OwnedFd`...) so that it can [`remap`](Self::remap) the same
/// fd after a revoke, and it keeps the IOAS alive. Mapping issues exactly the
/// `IOMMU_IOAS_MAP_FILE` ioctl, unmapping exactly `IOMMU_IOAS_UNMAP`; nothing
/// else touches the kernel on that path.
#[derive(Debug)]
pub struct DmaBufMapping<F: AsFd> {
    ioas: Arc<IoasInner>,
    file: F,
    offset: u64,
    len: u64,
    iova: u64,
    prot: Prot,
    mapped: bool,
    seen: Seen,
    events: Option<Receiver<RevokeEvent>>,
    /// Keeps the exporter's record of `events` for as long as the mapping lives.
    subscription: Option<SubscriptionToken>,
    ranges: Option<usize>,
}

impl<F: AsFd> DmaBufMapping<F> {
    fn with_events(mut self, events: Option<(Receiver<RevokeEvent>, SubscriptionToken)>) -> Self {
        if let Some((rx, token)) = events {
            self.events = Some(rx);
            self.subscription = Some(token);
        }
        self
    }

    /// The buffer handle the mapping holds.
    pub fn buffer(&self) -> &F {
        &self.file
    }

    /// The IOVA devices use.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the mapping is empty (never).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Offset of the mapped range in the dma-buf.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// What devices may do through the mapping.
    pub fn prot(&self) -> Prot {
        self.prot
    }

    /// The IOAS id.
    pub fn ioas_id(&self) -> u32 {
        self.ioas.id
    }

    /// Follows `exporter`'s revoke events from now on (what
    /// [`Ioas::map_vfio_dmabuf`] does before mapping), starting from its
    /// current state. Only changes made through this process's `Device` are
    /// seen; see [`Device::subscribe`].
    pub fn follow(&mut self, exporter: &Device) {
        let (rx, token) = exporter.subscribe_tracked();
        self.events = Some(rx);
        self.subscription = Some(token);
        if let Ok(RevokeState::Revoked(reason)) = exporter.revoke_state() {
            self.seen = Seen::Revoked(Some(reason));
        }
    }

    /// Whether DMA through the mapping reaches the buffer, after taking in
    /// the exporter's revoke events (without [`follow`](Self::follow)ing an
    /// exporter, revokes are not seen and a mapped buffer reads as live).
    pub fn state(&mut self) -> MappingState {
        if let Some(rx) = &self.events {
            for event in rx.try_iter() {
                self.seen = match (event, self.seen) {
                    (RevokeEvent::Revoked { reason, .. }, _) => Seen::Revoked(Some(reason)),
                    (RevokeEvent::Restored { .. }, Seen::Revoked(_)) => Seen::Restored,
                    (RevokeEvent::Restored { .. }, s) => s,
                };
            }
        }
        if !self.mapped {
            return MappingState::Unmapped;
        }
        match self.seen {
            Seen::Live => MappingState::Live,
            Seen::Revoked(reason) => MappingState::Revoked(reason),
            Seen::Restored => MappingState::NeedsRemap,
        }
    }

    /// Unmaps and maps the same range of the same buffer again at the same
    /// IOVA, the way back after the exporter restores a revoked buffer. The
    /// IOVA stays reserved throughout; the IOAS and its other mappings are
    /// untouched. While the buffer is still revoked this fails with
    /// [`Error::DmaBufRevoked`] and the mapping is left
    /// [`Unmapped`](MappingState::Unmapped) (call again later).
    pub fn remap(&mut self) -> Result<()> {
        let reason = match self.state() {
            MappingState::Revoked(reason) => reason,
            _ => None,
        };
        if self.mapped {
            match self.ioas.unmap(self.iova, self.len) {
                Ok(()) => {}
                Err(e) if e.errno() == Some(Errno::NOENT) => {}
                Err(e) => return Err(e),
            }
            self.mapped = false;
        }
        let req = MapRequest {
            offset: self.offset,
            len: self.len,
            iova: Iova::Fixed(self.iova),
            prot: self.prot,
            revoked: reason,
            ranges: self.ranges,
        };
        map_file_at(&self.ioas, self.file.as_fd(), self.iova, &req)?;
        self.mapped = true;
        self.seen = Seen::Live;
        Ok(())
    }

    /// [`remap`](Self::remap)s if the exporter restored the buffer since it
    /// was revoked, or a previous remap left it unmapped; returns whether it
    /// did.
    pub fn remap_if_needed(&mut self) -> Result<bool> {
        match self.state() {
            MappingState::NeedsRemap | MappingState::Unmapped => self.remap().map(|()| true),
            MappingState::Live | MappingState::Revoked(_) => Ok(false),
        }
    }

    /// Unmaps now, reporting failure (drop does the same silently).
    pub fn unmap(mut self) -> Result<()> {
        let result = if self.mapped {
            self.ioas.unmap(self.iova, self.len)
        } else {
            Ok(())
        };
        self.mapped = false;
        if result.is_ok() {
            release(&self.ioas, self.iova);
        }
        // Drop skips what is done; on failure the IOVA stays reserved.
        self.len = 0;
        result
    }
}

impl<F: AsFd> Drop for DmaBufMapping<F> {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        if self.mapped && self.ioas.unmap(self.iova, self.len).is_err() {
            // Still mapped in the kernel: keep the window reserved.
            return;
        }
        release(&self.ioas, self.iova);
    }
}

impl Ioas {
    /// Maps `len` bytes at `offset` of the dma-buf `buf` (`IOMMU_IOAS_MAP_FILE`)
    /// at `iova`. The buffer must be a single-range vfio-pci dma-buf; `offset`
    /// and `len` page aligned and inside it.
    ///
    /// The mapping does not see revokes unless told to
    /// ([`DmaBufMapping::follow`]); [`Ioas::map_vfio_dmabuf`] does that.
    pub fn map_dmabuf<F: AsFd>(
        &self,
        buf: F,
        offset: u64,
        len: u64,
        iova: Iova,
        prot: Prot,
    ) -> Result<DmaBufMapping<F>> {
        let req = MapRequest {
            offset,
            len,
            iova,
            prot,
            revoked: None,
            ranges: None,
        };
        self.map_file(buf, req, None)
    }

    /// Maps `len` bytes at `offset` of `buf`, a dma-buf that `exporter`
    /// exported, and follows `exporter`'s revoke events (subscribed before
    /// mapping, so none is missed). A multi-range buffer is refused before the
    /// kernel is asked, with the error the kernel would give; so is a buffer whose
    /// physical range lies beyond the IOMMU's address width
    /// ([`Error::BarBeyondIommu`]: the kernel would map it, and DMA would fault), and
    /// so is a range the kernel would refuse with a bare EINVAL: empty, not
    /// page-aligned, or past the end of the buffer ([`Error::DmaBufSpan`], naming
    /// the rule).
    ///
    /// # Errors
    ///
    /// [`Error::ExporterMismatch`], [`Error::DmaBufMultiRange`],
    /// [`Error::DmaBufSpan`], [`Error::BarBeyondIommu`] before the kernel is asked;
    /// then MAP_FILE's: [`Error::DmaBufRevoked`] (ENODEV), [`Error::Map`].
    pub fn map_vfio_dmabuf<B: Borrow<DmaBuf> + AsFd>(
        &self,
        exporter: &Device,
        buf: B,
        offset: u64,
        len: u64,
        iova: Iova,
        prot: Prot,
    ) -> Result<DmaBufMapping<B>> {
        let dmabuf: &DmaBuf = buf.borrow();
        if dmabuf.bdf() != exporter.bdf() {
            return Err(Error::ExporterMismatch {
                buffer: dmabuf.bdf(),
                device: exporter.bdf(),
            });
        }
        let ranges = dmabuf.ranges().len();
        if ranges != 1 {
            return Err(Error::DmaBufMultiRange {
                ranges: Some(ranges),
                errno: Errno::OPNOTSUPP,
            });
        }
        let page = rustix::param::page_size() as u64;
        if let Some(rule) = SpanRule::check(offset, len, dmabuf.size(), page) {
            return Err(Error::DmaBufSpan {
                rule,
                offset,
                len,
                size: dmabuf.size(),
                page,
            });
        }
        check_iommu_reach(exporter, dmabuf, offset, len)?;
        let events = exporter.subscribe_tracked();
        let reason = match exporter.revoke_state() {
            Ok(RevokeState::Revoked(reason)) => Some(reason),
            _ => None,
        };
        let req = MapRequest {
            offset,
            len,
            iova,
            prot,
            revoked: reason,
            ranges: Some(ranges),
        };
        self.map_file(buf, req, Some(events))
    }

    /// Reserves the window, maps `req`'s range of `file` there, and returns
    /// the mapping (following `events` when given).
    fn map_file<F: AsFd>(
        &self,
        file: F,
        req: MapRequest,
        events: Option<(Receiver<RevokeEvent>, SubscriptionToken)>,
    ) -> Result<DmaBufMapping<F>> {
        let ioas = &self.inner;
        let at = reserve(ioas, req.iova, req.len)?;
        if let Err(e) = map_file_at(ioas, file.as_fd(), at, &req) {
            release(ioas, at);
            return Err(e);
        }
        Ok(DmaBufMapping {
            ioas: Arc::clone(ioas),
            file,
            offset: req.offset,
            len: req.len,
            iova: at,
            prot: req.prot,
            mapped: true,
            seen: match req.revoked {
                Some(r) => Seen::Revoked(Some(r)),
                None => Seen::Live,
            },
            events: None,
            subscription: None,
            ranges: req.ranges,
        }
        .with_events(events))
    }
}

/// Refuses a buffer whose physical range the IOMMU cannot put in its page tables
/// ([`Error::BarBeyondIommu`]). Skipped where the BAR's address or the IOMMU's width
/// cannot be read.
fn check_iommu_reach(exporter: &Device, buf: &DmaBuf, offset: u64, len: u64) -> Result<()> {
    let Some(range) = buf.ranges().first() else {
        return Ok(());
    };
    let base = match exporter.bar_facts(buf.region()) {
        Ok(facts) if facts.base != 0 => facts.base,
        _ => return Ok(()),
    };
    let start = base
        .saturating_add(range.offset)
        .saturating_add(offset.min(range.length));
    let end = start.saturating_add(len.max(1) - 1);
    let Some(width) = Sysfs::system().iommu_address_width(exporter.bdf()) else {
        return Ok(());
    };
    if width.reaches(end) {
        return Ok(());
    }
    Err(Error::BarBeyondIommu {
        bdf: exporter.bdf(),
        region: buf.region(),
        start,
        end,
        limit: if width.bits >= 64 {
            u64::MAX
        } else {
            (1u64 << width.bits) - 1
        },
        iommu: width.iommu,
        bits: width.bits,
        width_from: width.source,
    })
}
