//! The sending side of a NIC stream as a state machine without IO (docs/nic.md,
//! "Flow"): the IO feeds it the control messages that arrive and the time, and does
//! what [`Sender::poll`] says (send START, data datagram k with its IPv4 ident, END,
//! ABORT) until it says [`SenderAction::Finished`].
//!
//! START every second until READY (or the answer timeout); then data, keeping at most
//! W datagrams beyond the last ACK; once every datagram is acknowledged, END every
//! second until VERDICT (or the answer timeout). The sequence is the IPv4
//! Identification: START carries S, data datagram k carries S+1+k, END S+1+N (mod
//! 2^16). A kernel socket picks its own idents (the same sequence, on a connected
//! socket); a NIC IO writes these.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::error::NicError;
use super::plan::Plan;
use super::wire::{Abort, End, Message, Start, Verdict};

/// What the sender is told to do.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// The stream id.
    pub stream: u32,
    /// The datagrams.
    pub plan: Plan,
    /// The pattern's seed.
    pub seed: u64,
    /// The source in words (START's description).
    pub what: String,
    /// The peer, for messages ("10.77.0.1:18521").
    pub peer: String,
    /// S: START's IPv4 ident.
    pub ident: u16,
    /// How long the receiver may take to answer START, and END.
    pub answer_timeout: Duration,
    /// How long the ACKs may stop while the sender waits for them.
    pub stall: Duration,
    /// How often START and END are sent again (1 s).
    pub resend: Duration,
}

/// What the IO does next.
#[derive(Clone, Debug, PartialEq)]
pub enum SenderAction {
    /// Send this control message (a NIC IO: with this IPv4 ident).
    Control {
        /// The message.
        msg: Message,
        /// Its ident.
        ident: u16,
    },
    /// Send data datagram `index` (its bytes: the plan's datagram `index` of the
    /// source) with this IPv4 ident.
    Data {
        /// The datagram (0-based).
        index: u64,
        /// Its ident: S+1+index mod 2^16.
        ident: u16,
    },
    /// The stream is over.
    Finished(Result<SenderOutcome, NicError>),
}

/// A stream the receiver accepted.
#[derive(Clone, Debug, PartialEq)]
pub struct SenderOutcome {
    /// The destination, as READY described it.
    pub remote: String,
    /// The receiver's window.
    pub window: u32,
    /// Its verdict.
    pub verdict: Verdict,
    /// Seconds from the first data datagram to the ACK of the last.
    pub seconds: f64,
}

#[derive(Debug)]
enum State {
    Starting {
        since: Instant,
        next: Instant,
    },
    Streaming {
        sent: u64,
        acked: u64,
        /// The last ACK that moved, or the last datagram sent.
        progress: Instant,
        began: Instant,
    },
    Ending {
        since: Instant,
        next: Instant,
    },
    Done,
}

/// The sending side.
#[derive(Debug)]
pub struct Sender {
    cfg: SenderConfig,
    state: State,
    pending: VecDeque<SenderAction>,
    remote: String,
    window: u32,
    seconds: f64,
}

impl Sender {
    /// A sender about to send START at `now`.
    pub fn new(cfg: SenderConfig, now: Instant) -> Sender {
        Sender {
            cfg,
            state: State::Starting {
                since: now,
                next: now,
            },
            pending: VecDeque::new(),
            remote: String::new(),
            window: 0,
            seconds: 0.0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SenderConfig {
        &self.cfg
    }

    /// START, as this sender sends it.
    pub fn start_message(&self) -> Message {
        Message::Start(Start {
            stream: self.cfg.stream,
            total: self.cfg.plan.total(),
            payload: self.cfg.plan.payload(),
            count: self.cfg.plan.count(),
            seed: self.cfg.seed,
            what: self.cfg.what.clone(),
        })
    }

    /// Whether START is being sent (no READY yet).
    pub fn is_starting(&self) -> bool {
        matches!(self.state, State::Starting { .. })
    }

    /// Whether data datagrams are being sent (between READY and the last ACK).
    pub fn streaming(&self) -> bool {
        matches!(self.state, State::Streaming { .. })
    }

    /// Whether [`SenderAction::Finished`] was given.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done) && self.pending.is_empty()
    }

    /// A control message arrived at `now`. Messages of another stream are ignored
    /// (a late answer to an earlier run).
    pub fn on_message(&mut self, now: Instant, msg: &Message) {
        if msg.stream() != self.cfg.stream || matches!(self.state, State::Done) {
            return;
        }
        match (msg, &mut self.state) {
            (Message::Ready(r), State::Starting { .. }) => {
                if r.window == 0 {
                    return self.fail(NicError::Protocol {
                        peer: self.cfg.peer.clone(),
                        what: "READY offered a window of 0 datagrams".into(),
                    });
                }
                self.remote = r.what.clone();
                self.window = r.window;
                self.state = State::Streaming {
                    sent: 0,
                    acked: 0,
                    progress: now,
                    began: now,
                };
            }
            (
                Message::Ack(a),
                State::Streaming {
                    sent,
                    acked,
                    progress,
                    began,
                },
            ) => {
                if a.received > *sent {
                    let what = format!(
                        "it acknowledged {} datagrams, only {sent} were sent",
                        a.received
                    );
                    return self.fail(NicError::Protocol {
                        peer: self.cfg.peer.clone(),
                        what,
                    });
                }
                if a.received > *acked {
                    *acked = a.received;
                    *progress = now;
                }
                if *acked == self.cfg.plan.count() {
                    self.seconds = now.duration_since(*began).as_secs_f64();
                    self.state = State::Ending {
                        since: now,
                        next: now,
                    };
                }
            }
            (Message::Verdict(v), State::Ending { .. } | State::Streaming { .. }) => {
                let outcome = if v.ok {
                    Ok(SenderOutcome {
                        remote: self.remote.clone(),
                        window: self.window,
                        verdict: v.clone(),
                        seconds: self.seconds,
                    })
                } else {
                    Err(NicError::PeerVerdict {
                        peer: self.cfg.peer.clone(),
                        verified: v.verified,
                        total: self.cfg.plan.total(),
                        first: v.first_mismatch,
                        message: v.message.clone(),
                    })
                };
                self.finish(outcome);
            }
            (Message::Abort(a), _) => self.finish(Err(NicError::PeerAborted {
                peer: self.cfg.peer.clone(),
                reason: a.reason.clone(),
            })),
            // A READY repeated for a repeated START, ACKs after the last, our own kinds.
            _ => {}
        }
    }

    /// The IO cannot go on (`reason`: the source was revoked, a send failed): the
    /// ABORT to send; the sender is done (the IO reports its own error).
    pub fn abort(&mut self, reason: &str) -> SenderAction {
        self.state = State::Done;
        self.pending.clear();
        SenderAction::Control {
            msg: Message::Abort(Abort {
                stream: self.cfg.stream,
                reason: reason.to_string(),
            }),
            ident: self.end_ident(),
        }
    }

    /// The next thing to do at `now`, or `None`: wait for a message until
    /// [`deadline`](Self::deadline).
    pub fn poll(&mut self, now: Instant) -> Option<SenderAction> {
        if let Some(a) = self.pending.pop_front() {
            return Some(a);
        }
        let count = self.cfg.plan.count();
        let ident = self.cfg.ident;
        match &mut self.state {
            State::Starting { since, next } => {
                if now >= *since + self.cfg.answer_timeout {
                    let e = NicError::NoAnswer {
                        peer: self.cfg.peer.clone(),
                        seconds: self.cfg.answer_timeout.as_secs(),
                    };
                    self.fail(e);
                    return self.pending.pop_front();
                }
                if now >= *next {
                    *next = now + self.cfg.resend;
                    return Some(SenderAction::Control {
                        msg: self.start_message(),
                        ident,
                    });
                }
                None
            }
            State::Streaming {
                sent,
                acked,
                progress,
                ..
            } => {
                if *sent < count && *sent - *acked < u64::from(self.window) {
                    let index = *sent;
                    *sent += 1;
                    *progress = now;
                    return Some(SenderAction::Data {
                        index,
                        ident: data_ident(ident, index),
                    });
                }
                if now >= *progress + self.cfg.stall {
                    let e = NicError::AckStalled {
                        acked: *acked,
                        count,
                        seconds: self.cfg.stall.as_secs(),
                    };
                    self.fail(e);
                    return self.pending.pop_front();
                }
                None
            }
            State::Ending { since, next } => {
                if now >= *since + self.cfg.answer_timeout {
                    let e = NicError::NoVerdict {
                        peer: self.cfg.peer.clone(),
                        seconds: self.cfg.answer_timeout.as_secs(),
                    };
                    self.fail(e);
                    return self.pending.pop_front();
                }
                if now >= *next {
                    *next = now + self.cfg.resend;
                    return Some(SenderAction::Control {
                        msg: Message::End(End {
                            stream: self.cfg.stream,
                            sent: count,
                            bytes: self.cfg.plan.total(),
                        }),
                        ident: self.end_ident(),
                    });
                }
                None
            }
            State::Done => None,
        }
    }

    /// When [`poll`](Self::poll) has something to do without a message arriving:
    /// `None` when done.
    pub fn deadline(&self) -> Option<Instant> {
        if !self.pending.is_empty() {
            return Some(Instant::now());
        }
        match &self.state {
            State::Starting { since, next } | State::Ending { since, next } => {
                Some((*next).min(*since + self.cfg.answer_timeout))
            }
            State::Streaming {
                sent,
                acked,
                progress,
                ..
            } => {
                if *sent < self.cfg.plan.count() && *sent - *acked < u64::from(self.window) {
                    Some(*progress)
                } else {
                    Some(*progress + self.cfg.stall)
                }
            }
            State::Done => None,
        }
    }

    fn end_ident(&self) -> u16 {
        data_ident(self.cfg.ident, self.cfg.plan.count())
    }

    /// Tells the receiver (ABORT) and finishes with `e`.
    fn fail(&mut self, e: NicError) {
        let abort = self.abort(&e.what());
        self.pending.push_back(abort);
        self.pending.push_back(SenderAction::Finished(Err(e)));
    }

    fn finish(&mut self, outcome: Result<SenderOutcome, NicError>) {
        self.state = State::Done;
        self.pending.push_back(SenderAction::Finished(outcome));
    }
}

/// The IPv4 ident of data datagram `index` after a START of ident `start`:
/// `start + 1 + index` mod 2^16 (END: `index` = N).
pub fn data_ident(start: u16, index: u64) -> u16 {
    start.wrapping_add(1).wrapping_add(index as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nic::plan::DEFAULT_MTU;
    use crate::nic::wire::{Ack, Ready};

    const S: Duration = Duration::from_secs(1);

    fn sender(t0: Instant, count: u64) -> Sender {
        Sender::new(
            SenderConfig {
                stream: 42,
                plan: Plan::new(count * 1000, 1000, DEFAULT_MTU).unwrap(),
                seed: 7,
                what: "host memory".into(),
                peer: "10.77.0.1:18521".into(),
                ident: 0xfff0,
                answer_timeout: 60 * S,
                stall: 10 * S,
                resend: S,
            },
            t0,
        )
    }

    fn ready(window: u32) -> Message {
        Message::Ready(Ready {
            stream: 42,
            window,
            what: "BAR2 of 0000:00:04.0".into(),
        })
    }

    fn ack(received: u64) -> Message {
        Message::Ack(Ack {
            stream: 42,
            received,
        })
    }

    fn verdict(ok: bool) -> Message {
        Message::Verdict(Verdict {
            stream: 42,
            ok,
            verified: if ok { 10_000 } else { 0 },
            first_mismatch: (!ok).then_some(17),
            message: "m".into(),
        })
    }

    fn drain(s: &mut Sender, now: Instant) -> Vec<SenderAction> {
        std::iter::from_fn(|| s.poll(now)).collect()
    }

    fn finished(actions: &[SenderAction]) -> Option<&Result<SenderOutcome, NicError>> {
        actions.iter().find_map(|a| match a {
            SenderAction::Finished(r) => Some(r),
            _ => None,
        })
    }

    #[test]
    fn a_silent_peer_gets_start_every_second_then_a_named_timeout() {
        let t0 = Instant::now();
        let mut s = sender(t0, 10);
        let mut starts = 0;
        for ms in (0..60_000).step_by(250) {
            for a in drain(&mut s, t0 + Duration::from_millis(ms)) {
                match a {
                    SenderAction::Control {
                        msg: Message::Start(st),
                        ident,
                    } => {
                        assert_eq!((st.count, st.payload, ident), (10, 1000, 0xfff0));
                        starts += 1;
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(starts, 60);
        assert_eq!(s.deadline(), Some(t0 + 60 * S));
        let end = drain(&mut s, t0 + 60 * S);
        assert!(matches!(
            &end[0],
            SenderAction::Control {
                msg: Message::Abort(_),
                ..
            }
        ));
        let e = finished(&end).unwrap().clone().unwrap_err();
        assert_eq!(e.what(), "peer 10.77.0.1:18521 never answered within 60 s");
        assert!(s.is_done());
        assert_eq!(s.poll(t0 + 61 * S), None);
    }

    #[test]
    fn the_window_holds_the_sender_and_acks_open_it() {
        let t0 = Instant::now();
        let mut s = sender(t0, 10);
        drain(&mut s, t0);
        s.on_message(t0, &ready(4));
        let sent = drain(&mut s, t0);
        assert_eq!(
            sent,
            (0..4)
                .map(|index| SenderAction::Data {
                    index,
                    ident: data_ident(0xfff0, index)
                })
                .collect::<Vec<_>>()
        );
        // The ident wraps past 0xffff.
        assert_eq!(data_ident(0xfff0, 15), 0);
        assert_eq!(s.deadline(), Some(t0 + 10 * S));
        s.on_message(t0, &ack(1));
        assert_eq!(drain(&mut s, t0).len(), 1);
        s.on_message(t0, &ack(5));
        assert_eq!(drain(&mut s, t0).len(), 4);
        s.on_message(t0, &ack(9));
        assert_eq!(drain(&mut s, t0).len(), 1);
        // A stale ACK changes nothing.
        s.on_message(t0, &ack(3));
        assert!(drain(&mut s, t0).is_empty());
        s.on_message(t0 + S, &ack(10));
        let end = drain(&mut s, t0 + S);
        assert_eq!(
            end,
            vec![SenderAction::Control {
                msg: Message::End(End {
                    stream: 42,
                    sent: 10,
                    bytes: 10_000
                }),
                ident: data_ident(0xfff0, 10)
            }]
        );
        // END again every second until the verdict; a repeated READY changes nothing.
        s.on_message(t0 + S, &ready(4));
        assert_eq!(drain(&mut s, t0 + 2 * S).len(), 1);
        s.on_message(t0 + 2 * S, &verdict(true));
        let out = drain(&mut s, t0 + 2 * S);
        let ok = finished(&out).unwrap().clone().unwrap();
        assert_eq!(ok.window, 4);
        assert_eq!(ok.remote, "BAR2 of 0000:00:04.0");
        assert_eq!(ok.seconds, 1.0);
        assert!(s.is_done());
    }

    #[test]
    fn acks_that_stop_are_a_named_stall() {
        let t0 = Instant::now();
        let mut s = sender(t0, 10_000);
        drain(&mut s, t0);
        s.on_message(t0, &ready(8192));
        assert_eq!(drain(&mut s, t0).len(), 8192);
        s.on_message(t0 + S, &ack(4096));
        assert_eq!(drain(&mut s, t0 + S).len(), 10_000 - 8192);
        assert!(drain(&mut s, t0 + 10 * S).is_empty());
        let out = drain(&mut s, t0 + 11 * S);
        assert_eq!(
            finished(&out).unwrap().clone().unwrap_err().what(),
            "the receiver acknowledged 4096 of 10000 datagrams, then nothing for 10 s"
        );
    }

    #[test]
    fn a_peer_that_never_gives_a_verdict_times_out() {
        let t0 = Instant::now();
        let mut s = sender(t0, 1);
        drain(&mut s, t0);
        s.on_message(t0, &ready(1));
        drain(&mut s, t0);
        s.on_message(t0, &ack(1));
        let mut ends = 0;
        for sec in 0..60 {
            ends += drain(&mut s, t0 + sec * S).len();
        }
        assert_eq!(ends, 60);
        let out = drain(&mut s, t0 + 60 * S);
        assert_eq!(
            finished(&out).unwrap().clone().unwrap_err().kind(),
            "nic_no_verdict"
        );
    }

    #[test]
    fn refusals_and_aborts_from_the_peer_end_the_stream() {
        let t0 = Instant::now();
        let mut s = sender(t0, 3);
        drain(&mut s, t0);
        s.on_message(t0, &ready(8));
        drain(&mut s, t0);
        s.on_message(t0, &ack(3));
        s.on_message(t0, &verdict(false));
        let out = drain(&mut s, t0);
        let e = finished(&out).unwrap().clone().unwrap_err();
        assert!(e.what().contains("first difference at offset 0x11"), "{e}");

        let mut s = sender(t0, 3);
        s.on_message(t0, &ready(0));
        let out = drain(&mut s, t0);
        assert_eq!(
            finished(&out).unwrap().clone().unwrap_err().kind(),
            "nic_protocol"
        );

        let mut s = sender(t0, 3);
        s.on_message(t0, &ready(1));
        drain(&mut s, t0);
        s.on_message(t0, &ack(2));
        let out = drain(&mut s, t0);
        let e = finished(&out).unwrap().clone().unwrap_err();
        assert!(e.what().contains("acknowledged 2 datagrams, only 1"), "{e}");

        let mut s = sender(t0, 3);
        // Another stream's messages are not this one's.
        s.on_message(
            t0,
            &Message::Abort(Abort {
                stream: 41,
                reason: "x".into(),
            }),
        );
        assert!(!s.is_done());
        s.on_message(
            t0,
            &Message::Abort(Abort {
                stream: 42,
                reason: "0000:00:04.0 BAR2 was revoked".into(),
            }),
        );
        let out = drain(&mut s, t0);
        assert_eq!(
            finished(&out).unwrap().clone().unwrap_err().what(),
            "peer 10.77.0.1:18521 aborted the stream: 0000:00:04.0 BAR2 was revoked"
        );
    }
}
