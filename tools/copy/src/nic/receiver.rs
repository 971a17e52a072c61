//! The receiving side of a NIC stream as a state machine without IO (docs/nic.md,
//! "Flow"): the IO feeds it the control messages and data datagrams that arrive (with
//! their IPv4 ident where it can see it) and the time, and does what
//! [`Receiver::poll`] says (prepare the destination, post receive slots for data
//! datagrams, send READY, ACK, VERDICT or ABORT, check the destination) until it says
//! [`ReceiverAction::Finished`].
//!
//! A NIC IO sees every frame's IPv4 Identification and checks the sequence (data
//! datagram k after a START of ident S carries S+1+k mod 2^16): a lost or reordered
//! frame is named at the datagram where it shows. A kernel socket hides the ident;
//! the count, the lengths and the full check of the content still hold.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::error::NicError;
use super::plan::{Datagram, Plan};
use super::sender::data_ident;
use super::wire::{Abort, Ack, Message, Ready, Start, Verdict};

/// What the receiver is told to do.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// Datagrams the sender may send beyond the last ACK (the receive slots the IO
    /// can keep posted).
    pub window: u32,
    /// The destination in words (READY's description).
    pub what: String,
    /// Bytes the destination can hold.
    pub room: u64,
    /// Whether every datagram must start at an even destination offset (a NIC
    /// receiver: the 82576's RX packet address has the no-snoop bit as bit 0), so P
    /// and the total must be even.
    pub even_offsets: bool,
    /// The link's MTU.
    pub mtu: u32,
    /// Where it listens, for messages ("10.77.0.1:18521").
    pub listen: String,
    /// How long to wait for START (`None`: forever).
    pub wait: Option<Duration>,
    /// How long the data datagrams may stop before the last.
    pub stall: Duration,
    /// How long the sender may take to send END after the last datagram.
    pub answer_timeout: Duration,
    /// How long the verdict is sent again for a repeated END.
    pub linger: Duration,
}

/// What the IO does next.
#[derive(Clone, Debug, PartialEq)]
pub enum ReceiverAction {
    /// A stream begins: make the destination ready for `plan` (poison it with the
    /// complement of the pattern of `seed`).
    Prepare {
        /// The datagrams.
        plan: Plan,
        /// The pattern's seed.
        seed: u64,
    },
    /// Post receive slots for data datagrams `first..first + count` (each at its
    /// plan offset in the destination).
    PostSlots {
        /// The first datagram.
        first: u64,
        /// How many.
        count: u64,
    },
    /// Every data datagram arrived: receive into host memory again.
    DataPhaseOver,
    /// Send this control message to the sender.
    Control(Message),
    /// Check the destination against the pattern and call
    /// [`Receiver::on_checked`].
    Check,
    /// The stream is over.
    Finished(Result<ReceiverOutcome, NicError>),
}

/// A stream that ran to its verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceiverOutcome {
    /// The sender's START.
    pub start: Start,
    /// The sender.
    pub peer: String,
    /// The verdict sent.
    pub verdict: Verdict,
    /// Seconds from the first data datagram's arrival to the last's (the
    /// destination's preparation excluded).
    pub seconds: f64,
}

/// What the check of the destination found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// Bytes checked.
    pub verified: u64,
    /// The first offset that differs, and how many bytes differ (`None`: all match).
    pub mismatch: Option<(u64, u64)>,
    /// How the bytes were read.
    pub read_by: String,
}

#[derive(Debug)]
enum State {
    Waiting {
        since: Instant,
    },
    Receiving {
        received: u64,
        acked: u64,
        posted: u64,
        /// START's ident (the latest START's, until data arrives).
        base: u16,
        last: Instant,
    },
    Draining {
        since: Instant,
    },
    Checking,
    Answered {
        verdict: Verdict,
        until: Instant,
    },
    Done,
}

/// The receiving side.
#[derive(Debug)]
pub struct Receiver {
    cfg: ReceiverConfig,
    state: State,
    pending: VecDeque<ReceiverAction>,
    start: Option<(Start, Plan)>,
    peer: String,
    began: Option<Instant>,
    seconds: f64,
    /// STARTs the sender may have repeated that the IO could not receive (its
    /// receive slots were not posted while it prepared the destination).
    missed_starts: u16,
}

impl Receiver {
    /// A receiver waiting for START from `now`.
    pub fn new(cfg: ReceiverConfig, now: Instant) -> Receiver {
        Receiver {
            cfg,
            state: State::Waiting { since: now },
            pending: VecDeque::new(),
            start: None,
            peer: String::new(),
            began: None,
            seconds: 0.0,
            missed_starts: 0,
        }
    }

    /// The stream being received, once START arrived.
    pub fn stream(&self) -> Option<u32> {
        self.start.as_ref().map(|(s, _)| s.stream)
    }

    /// The plan, once START arrived.
    pub fn plan(&self) -> Option<Plan> {
        self.start.as_ref().map(|(_, p)| *p)
    }

    /// The data datagram expected next (where its bytes go), while data is expected.
    pub fn next_data(&self) -> Option<Datagram> {
        match &self.state {
            State::Receiving { received, .. } => self.plan()?.datagram(*received),
            _ => None,
        }
    }

    /// The IO had no receive slot posted for `seconds` after START (while it prepared
    /// the destination): a kernel sender may have repeated START that often meanwhile,
    /// each with the next ident, unseen. Datagram 0 may then carry an ident up to
    /// `seconds` (rounded up) past the one the last START seen gives; the sequence
    /// follows it from there. (A NIC sender repeats START with the same ident.)
    pub fn missed_starts_for(&mut self, seconds: f64) {
        self.missed_starts = seconds.max(0.0).ceil().min(f64::from(u16::MAX)) as u16;
    }

    /// Whether [`ReceiverAction::Finished`] was given.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done) && self.pending.is_empty()
    }

    /// The ack interval: every max(1, W/4) datagrams.
    fn ack_every(&self) -> u64 {
        u64::from((self.cfg.window / 4).max(1))
    }

    /// A control message arrived at `now` from `from`, with its IPv4 ident where the
    /// IO can see it.
    pub fn on_control(&mut self, now: Instant, msg: &Message, ident: Option<u16>, from: &str) {
        if matches!(self.state, State::Done) {
            return;
        }
        let ours = self.stream() == Some(msg.stream());
        match (msg, &mut self.state) {
            (Message::Start(s), State::Waiting { .. }) => self.begin(now, s, ident, from),
            (
                Message::Start(s),
                State::Receiving {
                    received: 0, base, ..
                },
            ) if ours => {
                // START sent again before our READY arrived: the data follows the
                // latest one (once data arrived, a late repeated START is ignored).
                if let Some(i) = ident {
                    *base = i;
                }
                let ready = self.ready(s.stream);
                self.pending.push_back(ready);
            }
            (Message::Start(s), _) if !ours => {
                let reason = format!(
                    "this receiver is busy with stream {:#010x} from {}; try again when it \
                     ends, or send to another port",
                    self.stream().unwrap_or(0),
                    self.peer
                );
                self.pending
                    .push_back(ReceiverAction::Control(Message::Abort(Abort {
                        stream: s.stream,
                        reason,
                    })));
            }
            (Message::End(e), State::Receiving { received, .. }) if ours => {
                let (received, count) = (*received, self.plan().map_or(0, |p| p.count()));
                self.fail(NicError::ShortStream {
                    received,
                    sent: e.sent,
                    count,
                });
            }
            (Message::End(e), State::Draining { .. }) if ours => {
                let plan = self.plan().expect("a stream");
                if e.sent != plan.count() || e.bytes != plan.total() {
                    let e = NicError::ShortStream {
                        received: plan.count(),
                        sent: e.sent,
                        count: plan.count(),
                    };
                    return self.fail(e);
                }
                self.state = State::Checking;
                self.pending.push_back(ReceiverAction::Check);
            }
            (Message::End(_), State::Answered { verdict, until }) if ours => {
                // Our VERDICT was lost: the same again.
                *until = now + self.cfg.linger;
                let v = verdict.clone();
                self.pending
                    .push_back(ReceiverAction::Control(Message::Verdict(v)));
            }
            (Message::Abort(a), _) if ours => {
                let e = NicError::PeerAborted {
                    peer: self.peer.clone(),
                    reason: a.reason.clone(),
                };
                self.state = State::Done;
                self.pending.push_back(ReceiverAction::Finished(Err(e)));
            }
            _ => {}
        }
    }

    fn begin(&mut self, now: Instant, s: &Start, ident: Option<u16>, from: &str) {
        self.peer = from.to_string();
        if s.payload > super::plan::max_payload(self.cfg.mtu) {
            let e = NicError::MtuMismatch {
                peer: from.to_string(),
                payload: s.payload,
                mtu: self.cfg.mtu,
            };
            return self.refuse(s.stream, e);
        }
        let Some(plan) = Plan::from_start(s.total, s.payload, s.count, self.cfg.mtu) else {
            let e = NicError::Protocol {
                peer: from.to_string(),
                what: format!(
                    "its START of {} bytes in {} datagrams of {} bytes makes no plan on a link \
                     of MTU {} (datagrams of 36 to {} bytes, each at least 18)",
                    s.total,
                    s.count,
                    s.payload,
                    self.cfg.mtu,
                    super::plan::max_payload(self.cfg.mtu)
                ),
            };
            return self.refuse(s.stream, e);
        };
        if self.cfg.even_offsets && (!s.payload.is_multiple_of(2) || !s.total.is_multiple_of(2)) {
            let e = NicError::Plan(super::plan::PlanError::Odd {
                payload: s.payload,
                total: s.total,
            });
            return self.refuse(s.stream, e);
        }
        if s.total > self.cfg.room {
            let e = NicError::TooLarge {
                total: s.total,
                room: self.cfg.room,
                dst: self.cfg.what.clone(),
            };
            return self.refuse(s.stream, e);
        }
        self.start = Some((s.clone(), plan));
        let posted = u64::from(self.cfg.window).min(plan.count());
        self.pending
            .push_back(ReceiverAction::Prepare { plan, seed: s.seed });
        self.pending.push_back(ReceiverAction::PostSlots {
            first: 0,
            count: posted,
        });
        let ready = self.ready(s.stream);
        self.pending.push_back(ready);
        self.state = State::Receiving {
            received: 0,
            acked: 0,
            posted,
            base: ident.unwrap_or(0),
            last: now,
        };
    }

    fn ready(&self, stream: u32) -> ReceiverAction {
        ReceiverAction::Control(Message::Ready(Ready {
            stream,
            window: self.cfg.window,
            what: self.cfg.what.clone(),
        }))
    }

    /// A data datagram of `len` bytes arrived at `now` (its bytes at
    /// [`next_data`](Self::next_data)'s place), with its IPv4 ident where the IO can
    /// see it. Outside the data phase it is ignored.
    pub fn on_data(&mut self, now: Instant, len: usize, ident: Option<u16>) {
        let Some(plan) = self.plan() else { return };
        let every = self.ack_every();
        let window = u64::from(self.cfg.window);
        let State::Receiving {
            received,
            acked,
            posted,
            base,
            last,
        } = &mut self.state
        else {
            return;
        };
        let k = *received;
        let expected = plan.datagram(k).expect("fewer than N received").len;
        if let Some(got) = ident {
            let mut want = data_ident(*base, k);
            // STARTs repeated while the IO could not receive them (see
            // `missed_starts`): the data follows the last of them.
            let ahead = got.wrapping_sub(want);
            if k == 0 && ahead != 0 && ahead <= self.missed_starts {
                *base = base.wrapping_add(ahead);
                want = got;
            }
            if got != want {
                return self.fail(NicError::IdentMismatch {
                    index: k,
                    got,
                    expected: want,
                });
            }
        }
        if len != expected as usize {
            return self.fail(NicError::WrongLength {
                index: k,
                got: len,
                expected,
            });
        }
        *received += 1;
        *last = now;
        if k == 0 {
            self.began = Some(now);
        }
        if *received == plan.count() {
            self.seconds = self
                .began
                .map_or(0.0, |b| now.duration_since(b).as_secs_f64());
            self.pending.push_back(ReceiverAction::DataPhaseOver);
            self.ack(plan.count());
            self.state = State::Draining { since: now };
        } else if *received - *acked >= every {
            *acked = *received;
            let upto = (*received + window).min(plan.count());
            let first = *posted;
            *posted = upto;
            let r = *received;
            if upto > first {
                self.pending.push_back(ReceiverAction::PostSlots {
                    first,
                    count: upto - first,
                });
            }
            self.ack(r);
        }
    }

    fn ack(&mut self, received: u64) {
        let stream = self.stream().expect("a stream");
        self.pending
            .push_back(ReceiverAction::Control(Message::Ack(Ack {
                stream,
                received,
            })));
    }

    /// The check asked for by [`ReceiverAction::Check`] found `checked`: the verdict
    /// goes out.
    pub fn on_checked(&mut self, now: Instant, checked: &Checked) {
        if !matches!(self.state, State::Checking) {
            return;
        }
        let total = self.plan().map_or(0, |p| p.total());
        let ok = checked.mismatch.is_none() && checked.verified == total;
        let message = match checked.mismatch {
            None if ok => format!(
                "all {total} bytes match the pattern (read by {})",
                checked.read_by
            ),
            None => format!("{} of {total} bytes checked", checked.verified),
            Some((first, count)) => format!(
                "{count} byte(s) differ from the pattern, the first at offset {first:#x} (read \
                 by {})",
                checked.read_by
            ),
        };
        let verdict = Verdict {
            stream: self.stream().expect("a stream"),
            ok,
            verified: checked.verified,
            first_mismatch: checked.mismatch.map(|(f, _)| f),
            message,
        };
        self.pending
            .push_back(ReceiverAction::Control(Message::Verdict(verdict.clone())));
        self.state = State::Answered {
            verdict,
            until: now + self.cfg.linger,
        };
    }

    /// The IO cannot go on (`reason`: the destination was revoked, a receive failed):
    /// the ABORT to send, if a stream began; the receiver is done (the IO reports its
    /// own error).
    pub fn abort(&mut self, reason: &str) -> Option<ReceiverAction> {
        self.state = State::Done;
        self.pending.clear();
        let stream = self.stream()?;
        Some(ReceiverAction::Control(Message::Abort(Abort {
            stream,
            reason: reason.to_string(),
        })))
    }

    /// The next thing to do at `now`, or `None`: wait for a datagram until
    /// [`deadline`](Self::deadline).
    pub fn poll(&mut self, now: Instant) -> Option<ReceiverAction> {
        if let Some(a) = self.pending.pop_front() {
            return Some(a);
        }
        let count = self.plan().map_or(0, |p| p.count());
        let e = match &self.state {
            State::Waiting { since } => match self.cfg.wait {
                Some(w) if now >= *since + w => NicError::NoSender {
                    listen: self.cfg.listen.clone(),
                    seconds: w.as_secs(),
                },
                _ => return None,
            },
            State::Receiving { received, last, .. } if now >= *last + self.cfg.stall => {
                NicError::DataStalled {
                    received: *received,
                    count,
                    seconds: self.cfg.stall.as_secs(),
                }
            }
            State::Draining { since } if now >= *since + self.cfg.answer_timeout => {
                NicError::NoEnd {
                    peer: self.peer.clone(),
                    seconds: self.cfg.answer_timeout.as_secs(),
                }
            }
            State::Answered { verdict, until } if now >= *until => {
                let outcome = ReceiverOutcome {
                    start: self.start.as_ref().expect("a stream").0.clone(),
                    peer: self.peer.clone(),
                    verdict: verdict.clone(),
                    seconds: self.seconds,
                };
                self.state = State::Done;
                return Some(ReceiverAction::Finished(Ok(outcome)));
            }
            _ => return None,
        };
        self.fail(e);
        self.pending.pop_front()
    }

    /// When [`poll`](Self::poll) has something to do without a datagram arriving
    /// (`None`: nothing until one arrives, or done).
    pub fn deadline(&self) -> Option<Instant> {
        if !self.pending.is_empty() {
            return Some(Instant::now());
        }
        match &self.state {
            State::Waiting { since } => self.cfg.wait.map(|w| *since + w),
            State::Receiving { last, .. } => Some(*last + self.cfg.stall),
            State::Draining { since } => Some(*since + self.cfg.answer_timeout),
            State::Answered { until, .. } => Some(*until),
            State::Checking | State::Done => None,
        }
    }

    /// Refuses a START of `stream` (ABORT with the reason) and finishes with `e`.
    fn refuse(&mut self, stream: u32, e: NicError) {
        self.pending
            .push_back(ReceiverAction::Control(Message::Abort(Abort {
                stream,
                reason: e.what(),
            })));
        self.state = State::Done;
        self.pending.push_back(ReceiverAction::Finished(Err(e)));
    }

    /// Tells the sender (ABORT) and finishes with `e`.
    fn fail(&mut self, e: NicError) {
        let stream = self.stream().unwrap_or(0);
        self.refuse(stream, e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nic::plan::DEFAULT_MTU;
    use crate::nic::wire::End;

    const S: Duration = Duration::from_secs(1);

    fn receiver(t0: Instant, window: u32) -> Receiver {
        Receiver::new(
            ReceiverConfig {
                window,
                what: "host memory via kernel socket (NOT peer-to-peer)".into(),
                room: 1 << 30,
                even_offsets: false,
                mtu: DEFAULT_MTU,
                listen: "10.77.0.1:18521".into(),
                wait: Some(60 * S),
                stall: 10 * S,
                answer_timeout: 60 * S,
                linger: 2 * S,
            },
            t0,
        )
    }

    fn start(count: u64) -> Message {
        Message::Start(Start {
            stream: 9,
            total: count * 1000,
            payload: 1000,
            count,
            seed: 5,
            what: "BAR2 of 0000:00:04.0 via NIC 0000:00:05.0".into(),
        })
    }

    fn end(sent: u64) -> Message {
        Message::End(End {
            stream: 9,
            sent,
            bytes: sent * 1000,
        })
    }

    fn drain(r: &mut Receiver, now: Instant) -> Vec<ReceiverAction> {
        std::iter::from_fn(|| r.poll(now)).collect()
    }

    fn acks(actions: &[ReceiverAction]) -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                ReceiverAction::Control(Message::Ack(a)) => Some(a.received),
                _ => None,
            })
            .collect()
    }

    fn finished(actions: &[ReceiverAction]) -> Option<Result<ReceiverOutcome, NicError>> {
        actions.iter().find_map(|a| match a {
            ReceiverAction::Finished(r) => Some(r.clone()),
            _ => None,
        })
    }

    fn aborted(actions: &[ReceiverAction]) -> bool {
        actions
            .iter()
            .any(|a| matches!(a, ReceiverAction::Control(Message::Abort(_))))
    }

    const ALL_GOOD: Checked = Checked {
        verified: 10_000,
        mismatch: None,
        read_by: String::new(),
    };

    #[test]
    fn a_whole_stream_with_idents_acks_slots_and_a_repeated_end() {
        let t0 = Instant::now();
        let mut r = receiver(t0, 8);
        r.on_control(t0, &start(10), Some(0xfffd), "10.77.0.2:40000");
        let first = drain(&mut r, t0);
        assert!(matches!(first[0], ReceiverAction::Prepare { seed: 5, .. }));
        assert_eq!(first[1], ReceiverAction::PostSlots { first: 0, count: 8 });
        assert!(matches!(
            &first[2],
            ReceiverAction::Control(Message::Ready(Ready { window: 8, .. }))
        ));
        // START again (READY crossed it): READY again, the data follows it.
        r.on_control(t0, &start(10), Some(0xfffe), "10.77.0.2:40000");
        assert_eq!(drain(&mut r, t0).len(), 1);
        let mut all = Vec::new();
        for k in 0..10u64 {
            assert_eq!(r.next_data().unwrap().offset, k * 1000);
            let at = t0 + S + Duration::from_millis(100 * k);
            r.on_data(at, 1000, Some(0xfffeu16.wrapping_add(1 + k as u16)));
            all.extend(drain(&mut r, at));
        }
        // Every max(1, 8/4) = 2 datagrams and after the last; slots W ahead.
        assert_eq!(acks(&all), vec![2, 4, 6, 8, 10]);
        assert_eq!(
            all.iter()
                .filter_map(|a| match a {
                    ReceiverAction::PostSlots { first, count } => Some((*first, *count)),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            vec![(8, 2)]
        );
        assert!(all.contains(&ReceiverAction::DataPhaseOver));
        assert_eq!(r.next_data(), None);
        r.on_control(t0 + 2 * S, &end(10), None, "");
        assert_eq!(drain(&mut r, t0 + 2 * S), vec![ReceiverAction::Check]);
        // A repeated END while checking waits for the check.
        r.on_control(t0 + 2 * S, &end(10), None, "");
        assert!(drain(&mut r, t0 + 2 * S).is_empty());
        r.on_checked(t0 + 2 * S, &ALL_GOOD);
        let v = drain(&mut r, t0 + 2 * S);
        let ReceiverAction::Control(Message::Verdict(verdict)) = &v[0] else {
            panic!("{v:?}")
        };
        assert!(verdict.ok && verdict.first_mismatch.is_none());
        // The verdict was lost: END again gets the same verdict again.
        r.on_control(t0 + 3 * S, &end(10), None, "");
        assert_eq!(drain(&mut r, t0 + 3 * S), v);
        assert!(drain(&mut r, t0 + 4 * S).is_empty());
        let out = finished(&drain(&mut r, t0 + 5 * S)).unwrap().unwrap();
        assert_eq!(out.peer, "10.77.0.2:40000");
        // First datagram to last: 9 × 100 ms.
        assert!((out.seconds - 0.9).abs() < 1e-9, "{}", out.seconds);
        assert!(r.is_done());
    }

    #[test]
    fn a_lost_frame_shows_as_the_next_ident() {
        let t0 = Instant::now();
        let mut r = receiver(t0, 64);
        r.on_control(t0, &start(100), Some(0x1223), "p");
        drain(&mut r, t0);
        for k in 0..17u16 {
            r.on_data(t0, 1000, Some(0x1224 + k));
        }
        // Datagram 17 (ident 0x1235) was lost; 18 arrives in its place.
        r.on_data(t0, 1000, Some(0x1236));
        let out = drain(&mut r, t0);
        assert!(aborted(&out));
        assert_eq!(
            finished(&out).unwrap().unwrap_err().what(),
            "datagram 17 carried IPv4 ident 0x1236, expected 0x1235: a frame was lost or \
             reordered"
        );
    }

    #[test]
    fn starts_missed_while_preparing_move_the_sequence_once() {
        let t0 = Instant::now();
        let mut r = receiver(t0, 64);
        r.on_control(t0, &start(10), Some(100), "p");
        drain(&mut r, t0);
        // Two seconds of preparing: up to two STARTs (idents 101, 102) went unseen.
        r.missed_starts_for(1.5);
        r.on_data(t0, 1000, Some(103));
        r.on_data(t0, 1000, Some(104));
        assert!(!aborted(&drain(&mut r, t0)));
        // Past datagram 0 the sequence is strict again.
        r.on_data(t0, 1000, Some(106));
        let e = finished(&drain(&mut r, t0)).unwrap().unwrap_err();
        assert_eq!(e.kind(), "nic_ident_mismatch");
        // More than the missed STARTs explain is a lost frame.
        let mut r = receiver(t0, 64);
        r.on_control(t0, &start(10), Some(100), "p");
        drain(&mut r, t0);
        r.missed_starts_for(1.0);
        r.on_data(t0, 1000, Some(103));
        let e = finished(&drain(&mut r, t0)).unwrap().unwrap_err();
        assert_eq!(e.kind(), "nic_ident_mismatch");
    }

    #[test]
    fn without_idents_a_short_stream_is_named_by_count_and_length() {
        let t0 = Instant::now();
        let mut r = receiver(t0, 64);
        r.on_control(
            t0,
            &Message::Start(Start {
                stream: 9,
                total: 2500,
                payload: 1000,
                count: 3,
                seed: 5,
                what: String::new(),
            }),
            None,
            "p",
        );
        drain(&mut r, t0);
        r.on_data(t0, 1000, None);
        r.on_data(t0, 1000, None);
        // The tail of 500 bytes: a 1000-byte datagram is not it.
        r.on_data(t0, 1000, None);
        let e = finished(&drain(&mut r, t0)).unwrap().unwrap_err();
        assert_eq!(e.kind(), "nic_wrong_length");
        assert!(e
            .what()
            .contains("datagram 2 carried 1000 bytes, the plan says 500"));

        let mut r = receiver(t0, 64);
        r.on_control(t0, &start(10), None, "p");
        drain(&mut r, t0);
        for _ in 0..4 {
            r.on_data(t0, 1000, None);
        }
        r.on_control(t0, &end(10), None, "p");
        let out = drain(&mut r, t0);
        assert!(aborted(&out));
        assert_eq!(
            finished(&out).unwrap().unwrap_err().what(),
            "the sender says it sent 10 of 10 datagrams, 4 arrived"
        );
    }

    #[test]
    fn silence_is_bounded_in_every_phase() {
        let t0 = Instant::now();
        let mut r = receiver(t0, 64);
        assert!(drain(&mut r, t0 + 59 * S).is_empty());
        let e = finished(&drain(&mut r, t0 + 60 * S)).unwrap().unwrap_err();
        assert_eq!(
            e.what(),
            "no sender sent START to 10.77.0.1:18521 within 60 s"
        );

        let mut r = receiver(t0, 64);
        r.on_control(t0, &start(10_000), None, "p");
        drain(&mut r, t0);
        for _ in 0..4096 {
            r.on_data(t0 + S, 1000, None);
        }
        drain(&mut r, t0 + S);
        assert_eq!(r.deadline(), Some(t0 + 11 * S));
        let e = finished(&drain(&mut r, t0 + 11 * S)).unwrap().unwrap_err();
        assert!(e
            .what()
            .starts_with("received 4096 of 10000 datagrams, then nothing for 10 s"));

        let mut r = receiver(t0, 64);
        r.on_control(t0, &start(1), None, "p");
        r.on_data(t0, 1000, None);
        drain(&mut r, t0);
        let e = finished(&drain(&mut r, t0 + 60 * S)).unwrap().unwrap_err();
        assert_eq!(e.kind(), "nic_no_end");
    }

    #[test]
    fn refusals_a_busy_receiver_and_a_failed_check() {
        let t0 = Instant::now();
        // A START that does not add up.
        let mut r = receiver(t0, 64);
        r.on_control(
            t0,
            &Message::Start(Start {
                stream: 9,
                total: 1000,
                payload: 1000,
                count: 2,
                seed: 5,
                what: String::new(),
            }),
            None,
            "p",
        );
        let out = drain(&mut r, t0);
        assert!(aborted(&out));
        assert_eq!(finished(&out).unwrap().unwrap_err().kind(), "nic_protocol");
        // Datagrams longer than this end's MTU allows: the MTUs differ, said so.
        let mut r = receiver(t0, 64);
        r.on_control(
            t0,
            &Message::Start(Start {
                stream: 9,
                total: 1 << 20,
                payload: 8972,
                count: (1u64 << 20).div_ceil(8972),
                seed: 5,
                what: String::new(),
            }),
            None,
            "p",
        );
        let out = drain(&mut r, t0);
        assert!(aborted(&out));
        let e = finished(&out).unwrap().unwrap_err();
        assert_eq!(e.kind(), "nic_mtu_mismatch");
        assert!(
            e.fix().contains("same MTU") && e.fix().contains("9000"),
            "{}",
            e.fix()
        );
        // A NIC receiver takes even offsets only.
        let mut r = receiver(t0, 64);
        r.cfg.even_offsets = true;
        r.on_control(
            t0,
            &Message::Start(Start {
                stream: 9,
                total: 1001,
                payload: 1000,
                count: 2,
                seed: 5,
                what: String::new(),
            }),
            None,
            "p",
        );
        let out = drain(&mut r, t0);
        assert!(aborted(&out));
        let e = finished(&out).unwrap().unwrap_err();
        assert!(e.what().contains("even"), "{e}");
        let mut r = receiver(t0, 64);
        r.cfg.even_offsets = true;
        r.on_control(t0, &start(2), None, "p");
        assert!(!aborted(&drain(&mut r, t0)));
        // More than the destination holds.
        let mut r = receiver(t0, 64);
        r.cfg.room = 4096;
        r.on_control(t0, &start(10), None, "p");
        let e = finished(&drain(&mut r, t0)).unwrap().unwrap_err();
        assert_eq!(e.kind(), "nic_too_large");
        // A second sender is told to go away; the first goes on.
        let mut r = receiver(t0, 64);
        r.on_control(t0, &start(1), None, "p");
        drain(&mut r, t0);
        let mut other = start(1);
        if let Message::Start(s) = &mut other {
            s.stream = 10;
        }
        r.on_control(t0, &other, None, "q");
        let out = drain(&mut r, t0);
        let [ReceiverAction::Control(Message::Abort(a))] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(a.stream, 10);
        assert!(
            a.reason.contains("busy with stream 0x00000009 from p"),
            "{}",
            a.reason
        );
        r.on_data(t0, 1000, None);
        r.on_control(t0, &end(1), None, "p");
        drain(&mut r, t0);
        r.on_checked(
            t0,
            &Checked {
                verified: 1000,
                mismatch: Some((17, 3)),
                read_by: "the CPU".into(),
            },
        );
        let out = drain(&mut r, t0);
        let ReceiverAction::Control(Message::Verdict(v)) = &out[0] else {
            panic!("{out:?}")
        };
        assert!(!v.ok);
        assert_eq!(v.first_mismatch, Some(17));
        assert!(v.message.contains("3 byte(s) differ"), "{}", v.message);
        let out = finished(&drain(&mut r, t0 + 2 * S)).unwrap().unwrap();
        assert!(!out.verdict.ok);
        // The sender's ABORT ends it.
        let mut r = receiver(t0, 64);
        r.on_control(t0, &start(3), None, "p");
        r.on_control(
            t0,
            &Message::Abort(Abort {
                stream: 9,
                reason: "revoked".into(),
            }),
            None,
            "p",
        );
        let out = drain(&mut r, t0);
        assert_eq!(
            finished(&out).unwrap().unwrap_err().kind(),
            "nic_peer_aborted"
        );
    }
}
