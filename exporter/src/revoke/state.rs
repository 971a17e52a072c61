//! The revoke state, its reasons and events, and the per-device bookkeeping
//! ([`Lifecycle`]: generation, last reset, subscribers). Plain data: no device
//! access.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Weak};
use std::time::Instant;

use peerdma_uapi::pci::{PCI_COMMAND_MEMORY, PCI_PM_CTRL_STATE_MASK};
use rustix::io::Errno;

/// A PCI power state, as in the PMCSR PowerState field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PowerState {
    /// Fully on.
    D0,
    /// Light sleep.
    D1,
    /// Deeper sleep.
    D2,
    /// Off with power applied: BARs do not decode, dma-bufs are revoked.
    D3hot,
}

impl PowerState {
    /// Decodes the 2-bit PMCSR PowerState field.
    pub fn from_pmcsr(pmcsr: u16) -> Self {
        match pmcsr & PCI_PM_CTRL_STATE_MASK {
            0 => PowerState::D0,
            1 => PowerState::D1,
            2 => PowerState::D2,
            _ => PowerState::D3hot,
        }
    }

    /// The PMCSR PowerState field value.
    pub fn pmcsr_bits(self) -> u16 {
        match self {
            PowerState::D0 => 0,
            PowerState::D1 => 1,
            PowerState::D2 => 2,
            PowerState::D3hot => 3,
        }
    }

    /// Whether the kernel treats memory as disabled in this state
    /// (`current_state >= PCI_D3hot`).
    pub fn revokes(self) -> bool {
        self == PowerState::D3hot
    }
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerState::D0 => "D0",
            PowerState::D1 => "D1",
            PowerState::D2 => "D2",
            PowerState::D3hot => "D3hot",
        })
    }
}

/// How a reset was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResetMethod {
    /// `VFIO_DEVICE_RESET`.
    VfioReset,
    /// BCR_FLR written to the PCIe Device Control register.
    PcieFlr,
    /// FLR written to the Advanced Features control register.
    AfFlr,
}

/// A reset this library performed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetRecord {
    /// How.
    pub method: ResetMethod,
    /// When it returned.
    pub at: Instant,
    /// The revoke generation after it.
    pub generation: u64,
    /// The errno if the kernel reported failure (the buffers were revoked and,
    /// with decode on, restored all the same).
    pub errno: Option<Errno>,
}

/// Why a device's dma-bufs are (or were) revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RevokeReason {
    /// Memory Space Enable is clear in PCI_COMMAND.
    MemoryDecodeOff,
    /// The device is in a power state where memory does not decode.
    PowerState(PowerState),
    /// A reset revoked them while it ran (events only: a reset restores them
    /// when it finishes with decode on).
    Reset(ResetMethod),
    /// The device was closed: revoked for good.
    DeviceClosed,
    /// This dma-buf alone was revoked for good on request
    /// (`VFIO_DEVICE_FEATURE_DMA_BUF_REVOKE`, a posted series: [`crate::posted`]).
    Requested,
}

impl fmt::Display for RevokeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RevokeReason::MemoryDecodeOff => f.write_str("memory decode is off"),
            RevokeReason::PowerState(s) => write!(f, "the device is in {s}"),
            RevokeReason::Reset(m) => write!(f, "the device was reset ({m:?})"),
            RevokeReason::DeviceClosed => f.write_str("the device was closed"),
            RevokeReason::Requested => f.write_str("it was revoked for good on request"),
        }
    }
}

/// Whether a device's dma-bufs can be mapped by importers right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RevokeState {
    /// Importers may map the buffers.
    Live,
    /// Maps fail with ENODEV; existing mappings were invalidated.
    Revoked(RevokeReason),
}

impl RevokeState {
    /// Whether the buffers are live.
    pub fn is_live(self) -> bool {
        self == RevokeState::Live
    }

    /// Computes the state from the device's registers, in the kernel's terms
    /// (`__vfio_pci_memory_enabled`): power state below D3hot and, unless the
    /// function has no command memory bit (SR-IOV VF), Memory Space Enable set.
    pub fn from_registers(command: u16, pmcsr: Option<u16>, is_virtfn: bool) -> Self {
        if let Some(state) = pmcsr.map(PowerState::from_pmcsr).filter(|s| s.revokes()) {
            return RevokeState::Revoked(RevokeReason::PowerState(state));
        }
        if !is_virtfn && command & PCI_COMMAND_MEMORY == 0 {
            return RevokeState::Revoked(RevokeReason::MemoryDecodeOff);
        }
        RevokeState::Live
    }
}

/// A change of revoke state caused by this library.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeEvent {
    /// The device's buffers were revoked; importers lost their mappings.
    Revoked {
        /// Incremented on each revoke; an importer that mapped at an older
        /// generation must map again once restored.
        generation: u64,
        /// Why.
        reason: RevokeReason,
    },
    /// The buffers are usable again; importers must map them again.
    Restored {
        /// The generation of the revoke this ends.
        generation: u64,
    },
}

/// A device's revoke generation: advanced by [`Lifecycle::record`] under the
/// lifecycle lock, read without it (every export reads it).
#[derive(Debug, Default)]
pub(crate) struct Generation(AtomicU64);

impl Generation {
    /// The current generation.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Advances the generation; returns the new one.
    fn advance(&self) -> u64 {
        self.0.fetch_add(1, Ordering::AcqRel) + 1
    }
}

/// Keeps a subscription ([`crate::Device::subscribe_tracked`]) counted as alive;
/// dropping it lets the device forget the subscriber at the next subscription,
/// without waiting for a revoke event to find the receiver gone.
#[derive(Debug)]
pub struct SubscriptionToken(#[allow(dead_code)] Arc<()>);

/// One subscriber: its sender and, when tracked, whether its token still lives.
#[derive(Debug)]
struct Subscriber {
    tx: Sender<RevokeEvent>,
    alive: Option<Weak<()>>,
}

/// Bookkeeping of the lifecycle a `Device` shares with its buffers.
#[derive(Debug, Default)]
pub(crate) struct Lifecycle {
    subscribers: Vec<Subscriber>,
    pub(crate) last_reset: Option<ResetRecord>,
}

impl Lifecycle {
    /// Adds a subscriber, forgotten once sending to it fails (at the next event).
    pub(crate) fn subscribe(&mut self, tx: Sender<RevokeEvent>) {
        self.forget_dropped();
        self.subscribers.push(Subscriber { tx, alive: None });
    }

    /// Adds a subscriber that lives as long as the returned token: a process that
    /// subscribes for every mapping and sees no revoke does not pile up dead senders.
    pub(crate) fn subscribe_tracked(&mut self, tx: Sender<RevokeEvent>) -> SubscriptionToken {
        self.forget_dropped();
        let token = Arc::new(());
        self.subscribers.push(Subscriber {
            tx,
            alive: Some(Arc::downgrade(&token)),
        });
        SubscriptionToken(token)
    }

    /// Drops the tracked subscribers whose token is gone.
    fn forget_dropped(&mut self) {
        self.subscribers
            .retain(|s| s.alive.as_ref().is_none_or(|w| w.strong_count() > 0));
    }

    fn emit(&mut self, event: RevokeEvent) {
        self.subscribers.retain(|s| s.tx.send(event).is_ok());
    }

    /// Records what an action did to the state and notifies subscribers.
    ///
    /// `forced` is the revoke the kernel performs unconditionally for this
    /// action (a reset, a write clearing Memory Space Enable), even when the
    /// state is the same before and after.
    pub(crate) fn record(
        &mut self,
        generation: &Generation,
        before: RevokeState,
        after: RevokeState,
        forced: Option<RevokeReason>,
    ) {
        let revoked_now = match (before, after, forced) {
            (RevokeState::Live, _, Some(reason)) => Some(reason),
            (RevokeState::Live, RevokeState::Revoked(reason), None) => Some(reason),
            _ => None,
        };
        if let Some(reason) = revoked_now {
            let generation = generation.advance();
            self.emit(RevokeEvent::Revoked { generation, reason });
        }
        let was_revoked = !before.is_live() || revoked_now.is_some();
        if was_revoked && after.is_live() {
            let generation = generation.get();
            self.emit(RevokeEvent::Restored { generation });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    /// A lifecycle with one subscriber, its generation counter, and what the
    /// subscriber receives.
    fn subscribed() -> (
        Lifecycle,
        Generation,
        std::sync::mpsc::Receiver<RevokeEvent>,
    ) {
        let mut l = Lifecycle::default();
        let (tx, rx) = channel();
        l.subscribe(tx);
        (l, Generation::default(), rx)
    }

    #[test]
    fn state_from_registers() {
        use RevokeState::*;
        assert_eq!(RevokeState::from_registers(0x6, Some(0), false), Live);
        assert_eq!(
            RevokeState::from_registers(0x4, Some(0), false),
            Revoked(RevokeReason::MemoryDecodeOff)
        );
        assert_eq!(
            RevokeState::from_registers(0x4, None, false),
            Revoked(RevokeReason::MemoryDecodeOff)
        );
        // VFs have no memory bit of their own.
        assert_eq!(RevokeState::from_registers(0x0, Some(0), true), Live);
        // D3hot wins, D1/D2 do not revoke.
        assert_eq!(
            RevokeState::from_registers(0x6, Some(0x8003), false),
            Revoked(RevokeReason::PowerState(PowerState::D3hot))
        );
        assert_eq!(RevokeState::from_registers(0x6, Some(2), false), Live);
        assert_eq!(
            RevokeState::from_registers(0x0, Some(3), true),
            Revoked(RevokeReason::PowerState(PowerState::D3hot))
        );
    }

    #[test]
    fn power_state_round_trip() {
        for s in [
            PowerState::D0,
            PowerState::D1,
            PowerState::D2,
            PowerState::D3hot,
        ] {
            assert_eq!(PowerState::from_pmcsr(0x0100 | s.pmcsr_bits()), s);
        }
    }

    #[test]
    fn decode_off_then_on() {
        let (mut l, g, rx) = subscribed();
        let off = RevokeState::Revoked(RevokeReason::MemoryDecodeOff);
        l.record(
            &g,
            RevokeState::Live,
            off,
            Some(RevokeReason::MemoryDecodeOff),
        );
        l.record(&g, off, off, Some(RevokeReason::MemoryDecodeOff)); // again: nothing new
        l.record(&g, off, RevokeState::Live, None);
        let events: Vec<_> = rx.try_iter().collect();
        assert_eq!(
            events,
            vec![
                RevokeEvent::Revoked {
                    generation: 1,
                    reason: RevokeReason::MemoryDecodeOff
                },
                RevokeEvent::Restored { generation: 1 }
            ]
        );
    }

    #[test]
    fn reset_revokes_and_restores_in_one_action() {
        let (mut l, g, rx) = subscribed();
        let reason = RevokeReason::Reset(ResetMethod::VfioReset);
        l.record(&g, RevokeState::Live, RevokeState::Live, Some(reason));
        l.record(&g, RevokeState::Live, RevokeState::Live, Some(reason));
        let events: Vec<_> = rx.try_iter().collect();
        assert_eq!(
            events,
            vec![
                RevokeEvent::Revoked {
                    generation: 1,
                    reason
                },
                RevokeEvent::Restored { generation: 1 },
                RevokeEvent::Revoked {
                    generation: 2,
                    reason
                },
                RevokeEvent::Restored { generation: 2 },
            ]
        );
        assert_eq!(g.get(), 2);
    }

    #[test]
    fn reset_with_decode_off_changes_nothing() {
        let (mut l, g, rx) = subscribed();
        let off = RevokeState::Revoked(RevokeReason::MemoryDecodeOff);
        l.record(
            &g,
            off,
            off,
            Some(RevokeReason::Reset(ResetMethod::PcieFlr)),
        );
        assert_eq!(rx.try_iter().count(), 0);
        assert_eq!(g.get(), 0);
    }

    #[test]
    fn vf_decode_write_is_a_transient_revoke() {
        let (mut l, g, rx) = subscribed();
        l.record(
            &g,
            RevokeState::Live,
            RevokeState::Live,
            Some(RevokeReason::MemoryDecodeOff),
        );
        assert_eq!(rx.try_iter().count(), 2);
    }

    #[test]
    fn dropped_subscribers_are_forgotten() {
        let (mut l, g, rx) = subscribed();
        drop(rx);
        let d3 = RevokeState::Revoked(RevokeReason::PowerState(PowerState::D3hot));
        l.record(&g, RevokeState::Live, d3, None);
        assert!(l.subscribers.is_empty());
        assert_eq!(g.get(), 1);
    }

    #[test]
    fn tracked_subscribers_are_forgotten_without_an_event() {
        // Found by the soak: one subscription per mapping, no revoke in between, and
        // the senders piled up (about 1.4 KiB of RSS per export-map-unmap cycle).
        let mut l = Lifecycle::default();
        for _ in 0..1000 {
            let (tx, rx) = channel();
            let token = l.subscribe_tracked(tx);
            drop((rx, token));
        }
        assert_eq!(l.subscribers.len(), 1, "only the last one, not yet pruned");
        let (tx, rx) = channel();
        let _token = l.subscribe_tracked(tx);
        l.record(
            &Generation::default(),
            RevokeState::Live,
            RevokeState::Revoked(RevokeReason::MemoryDecodeOff),
            None,
        );
        assert_eq!(
            rx.try_iter().count(),
            1,
            "a live tracked subscriber hears events"
        );
    }
}
