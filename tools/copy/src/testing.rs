//! Test hooks (feature `testing`): the one way a test acts on a copy while it runs.
//!
//! A [`Hooks`] goes with a request to [`run`] or [`run_storage`]. Its one kind of hook
//! runs on another thread beside the copy, given the copy's two devices ([`Alongside`]):
//! a test revokes, resets and powers them through it. [`RevokeTrigger`] is such a hook,
//! provided here ([`Hooks::revoke`]); `p2pcopy --test-revoke-after-{ms,bytes}` are its
//! flags. [`Hooks::fault_dst`] aims a DMA engine past the destination so the IOMMU
//! faults. A build without the feature has none of this: the copy functions run no
//! hook and p2pcopy has no such flags.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use peerdma_exporter::Device;

use super::{CopyError, CopyReport, CopyRequest, Progress, Side, StorageReport, StorageRequest};

/// A hook that runs on its own thread while the bytes move.
pub type AlongsideHook<'h> = dyn Fn(Alongside<'_>) + Sync + 'h;

/// What a test does to a copy while it runs. `Hooks::default()` does nothing.
#[derive(Default)]
pub struct Hooks<'h> {
    alongside: Option<Box<AlongsideHook<'h>>>,
    fault_dst: bool,
}

impl<'h> Hooks<'h> {
    /// Runs `hook` on another thread from the first step of the copy until the last,
    /// before verification (the copy waits for it to return).
    ///
    /// A revoke that the copy did not meet (the devices were revoked and restored
    /// between two steps) is still reported: when verification then fails and either
    /// device's revoke generation moved during the copy, the error is
    /// [`CopyError::Revoked`] naming it, not a mismatch. On a storage copy the hook's
    /// `src` and `dst` are the two sides' devices, the NVMe controller (the engine's own
    /// `Device`) and the BAR's; with host memory as the other side the hook does not
    /// run. A revoke of the controller ends the copy with [`CopyError::Revoked`] naming
    /// it.
    pub fn alongside(hook: impl Fn(Alongside<'_>) + Sync + 'h) -> Hooks<'h> {
        Hooks {
            alongside: Some(Box::new(hook)),
            fault_dst: false,
        }
    }

    /// Turns `side`'s memory decode off when `trigger` says (the provided hook behind
    /// p2pcopy's `--test-revoke-after-*`).
    pub fn revoke(side: Side, trigger: RevokeTrigger) -> Hooks<'h> {
        Hooks::alongside(move |a| trigger.revoke(&a, side))
    }

    /// On a DMA path, the engine is given destination IOVAs just past the destination's
    /// mapping, in the unmapped guard gap above it (so a copy of at most the guard,
    /// 64 KiB, lands nowhere): every write faults in the IOMMU, nothing arrives, and the
    /// copy fails with the faults as the cause ([`CopyError::DmaFaulted`]). Ignored on
    /// the CPU path and on storage copies.
    pub fn fault_dst() -> Hooks<'h> {
        Hooks {
            alongside: None,
            fault_dst: true,
        }
    }

    pub(super) fn faults_dst(&self) -> bool {
        self.fault_dst
    }

    /// Starts the alongside hook, if any, on a thread of `scope`.
    pub(super) fn spawn<'s, 'e: 's>(
        &'e self,
        scope: &'s std::thread::Scope<'s, 'e>,
        src: &'e Device,
        dst: &'e Device,
        step: u64,
        watch: &'e CopyWatch,
    ) {
        if let Some(hook) = &self.alongside {
            let sides = Alongside {
                src,
                dst,
                step,
                watch,
            };
            scope.spawn(move || hook(sides));
        }
    }
}

/// When [`Hooks::revoke`] turns the side's decode off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeTrigger {
    /// This long after the copy starts (races the copy: a fast copy may finish first,
    /// and then nothing is revoked).
    After(Duration),
    /// As soon as this many bytes have been copied: the copy goes on while the other
    /// thread turns decode off, so a copy longer than this always meets the revoke.
    AfterBytes(u64),
}

impl RevokeTrigger {
    /// Waits for the trigger, then turns `side`'s memory decode off, unless the copy
    /// ended first.
    pub fn revoke(self, a: &Alongside<'_>, side: Side) {
        let still_copying = match self {
            RevokeTrigger::After(after) => a.wait_for(after),
            RevokeTrigger::AfterBytes(n) => a.wait_for_bytes(n),
        };
        if still_copying {
            let device = match side {
                Side::Src => a.src,
                Side::Dst => a.dst,
            };
            let _ = device.set_memory_decode(false);
        }
    }
}

/// What a hook that runs alongside a copy is given: the two devices as the copy opened
/// them (a VFIO cdev device opens once, so revokes that the copy must notice go through
/// these), the copy's step, and the copy's progress.
pub struct Alongside<'a> {
    /// The source device.
    pub src: &'a Device,
    /// The destination device.
    pub dst: &'a Device,
    /// Bytes per step: between two progress reports at most this much moves.
    pub step: u64,
    watch: &'a CopyWatch,
}

impl Alongside<'_> {
    /// True while the copy runs; the hook must return soon after it turns false (the
    /// copy waits for it before it verifies).
    pub fn copying(&self) -> bool {
        self.watch.state().copying
    }

    /// Waits until the copy has moved `bytes` (as its progress reports count them) or
    /// has ended: true when it still runs.
    pub fn wait_for_bytes(&self, bytes: u64) -> bool {
        let mut s = self.watch.state();
        while s.copying && s.done < bytes {
            s = self
                .watch
                .changed
                .wait(s)
                .unwrap_or_else(PoisonError::into_inner);
        }
        s.copying
    }

    /// Waits `time`, or less when the copy ends first: true when it still runs.
    pub fn wait_for(&self, time: Duration) -> bool {
        let deadline = Instant::now() + time;
        let mut s = self.watch.state();
        while s.copying {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = self
                .watch
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        s.copying
    }
}

/// The copy's progress as the hooks see it.
#[derive(Default)]
pub(super) struct CopyWatch {
    state: Mutex<WatchState>,
    changed: Condvar,
}

struct WatchState {
    copying: bool,
    done: u64,
}

impl Default for WatchState {
    fn default() -> Self {
        WatchState {
            copying: true,
            done: 0,
        }
    }
}

impl CopyWatch {
    fn state(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The copy has moved `done` bytes.
    pub(super) fn progress(&self, done: u64) {
        self.state().done = done;
        self.changed.notify_all();
    }

    /// The copy has ended (the hooks return).
    pub(super) fn finish(&self) {
        self.state().copying = false;
        self.changed.notify_all();
    }
}

/// Runs a copy as [`super::run`] does, with `hooks`.
///
/// # Errors
///
/// As [`super::run`].
pub fn run(
    req: &CopyRequest,
    progress: &mut dyn FnMut(Progress),
    hooks: &Hooks<'_>,
) -> Result<CopyReport, CopyError> {
    super::run_inner(req, progress, hooks)
}

/// Runs a storage copy as [`super::run_storage`] does, with `hooks`.
///
/// # Errors
///
/// As [`super::run_storage`].
pub fn run_storage(
    req: &StorageRequest,
    progress: &mut dyn FnMut(Progress),
    hooks: &Hooks<'_>,
) -> Result<StorageReport, CopyError> {
    super::storage::run_storage_inner(req, progress, hooks)
}
