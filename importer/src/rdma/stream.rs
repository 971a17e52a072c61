//! Moving a span with one-sided operations across one or more connected QPs:
//! messages of a fixed size, round-robin over the QPs, each QP bounded by
//! its depth, completions polled until every message is done.

use std::time::{Duration, Instant};

use super::completion::Operation;
use super::error::{RdmaError, Result};
use super::mr::{MemoryRegion, RemoteMr};
use super::qp::{Completion, QueuePair};

/// How a span is cut up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamOptions {
    /// Bytes per work request.
    pub msg_size: u32,
    /// How long without any completion before giving up.
    pub stall: Duration,
    /// Request a completion for every this many work requests per QP (1:
    /// every one), as perftest's CQ moderation does; the last ones and the
    /// one that fills a QP are always signaled.
    pub signal_every: u32,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            msg_size: 1 << 20,
            stall: Duration::from_secs(30),
            signal_every: 16,
        }
    }
}

/// A span to move: `len` bytes between `local` at `local_off` and the peer's
/// `remote` at `remote_off`.
#[derive(Clone, Copy)]
pub struct Span<'a> {
    /// The local MR.
    pub local: &'a MemoryRegion,
    /// Offset into it.
    pub local_off: u64,
    /// The peer's MR.
    pub remote: RemoteMr,
    /// Offset into it.
    pub remote_off: u64,
    /// Bytes.
    pub len: u64,
}

/// RDMA WRITEs `span` from the local MR into the peer's, calling `progress`
/// with the bytes completed so far.
///
/// # Errors
///
/// [`RdmaError::OutOfRange`] before anything is posted when the span does
/// not fit either MR; [`RdmaError::Completion`] (with its status) or
/// [`RdmaError::PeerGone`] when a work request fails; [`RdmaError::Timeout`]
/// when nothing completes for [`StreamOptions::stall`].
pub fn write(
    qps: &mut [QueuePair],
    span: Span<'_>,
    opts: StreamOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    run(Operation::Write, qps, span, opts, progress)
}

/// RDMA READs `span` from the peer's MR into the local one (which needs
/// local write access).
///
/// # Errors
///
/// As [`write()`].
pub fn read(
    qps: &mut [QueuePair],
    span: Span<'_>,
    opts: StreamOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    run(Operation::Read, qps, span, opts, progress)
}

fn run(
    op: Operation,
    qps: &mut [QueuePair],
    span: Span<'_>,
    opts: StreamOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    span.local
        .check("the local span", span.local_off, span.len)?;
    if span
        .remote_off
        .checked_add(span.len)
        .is_none_or(|e| e > span.remote.len)
    {
        return Err(RdmaError::OutOfRange {
            what: "the remote span",
            offset: span.remote_off,
            len: span.len,
            mr_len: span.remote.len,
            fix: "stay inside the MR the peer advertised",
        });
    }
    assert!(!qps.is_empty(), "a stream needs at least one QP");
    let msg = u64::from(opts.msg_size.max(1));
    let mut posted = 0u64; // bytes posted
    let mut done = 0u64; // bytes completed
    let mut next_qp = 0usize;
    let mut sizes: Vec<std::collections::VecDeque<u64>> = vec![Default::default(); qps.len()];
    let mut comps: Vec<Completion> = Vec::new();
    let mut last = Instant::now();
    let mut idle_polls = 0u32;
    while done < span.len {
        // Post while some QP has room.
        while posted < span.len {
            let Some(i) = (0..qps.len())
                .map(|k| (next_qp + k) % qps.len())
                .find(|&i| qps[i].has_room())
            else {
                break;
            };
            let n = msg.min(span.len - posted);
            let (lo, ro) = (span.local_off + posted, span.remote_off + posted);
            // Signal: every signal_every-th, the one that fills the QP, and the last
            // round (one message per QP), so that every QP's last one is signaled.
            let left_after = span.len - posted - n;
            let signaled = qps[i].unsignaled() + 1 >= opts.signal_every.max(1)
                || qps[i].room() <= 1
                || left_after < msg.saturating_mul(qps.len() as u64);
            qps[i].post_moderated(
                op,
                span.local,
                lo,
                &span.remote,
                ro,
                n as u32,
                posted,
                signaled,
            )?;
            sizes[i].push_back(n);
            posted += n;
            next_qp = (i + 1) % qps.len();
        }
        let mut any = false;
        for (i, qp) in qps.iter_mut().enumerate() {
            comps.clear();
            qp.poll(&mut comps).map_err(|e| during(e, done, span.len))?;
            for c in comps.iter().filter(|c| c.op == op) {
                // Completions of one QP come in posting order; a signaled one
                // retires the unsignaled ones before it.
                for _ in 0..c.covers {
                    done += sizes[i].pop_front().unwrap_or(0);
                }
                any = true;
            }
        }
        if any {
            last = Instant::now();
            idle_polls = 0;
            progress(done);
        } else {
            idle_polls += 1;
            if idle_polls.is_multiple_of(4096) {
                for qp in qps.iter_mut() {
                    qp.check_peer(Duration::ZERO)
                        .map_err(|e| during(e, done, span.len))?;
                }
                if last.elapsed() > opts.stall {
                    return Err(RdmaError::Timeout {
                        what: format!("{op} completions ({done:#x} of {:#x} bytes done)", span.len),
                        seconds: opts.stall.as_secs(),
                        fix: "check the peer and the link (`rdma link`, `ip link`)",
                    });
                }
            }
            std::hint::spin_loop();
        }
    }
    Ok(())
}

/// Says how far the stream got in a peer-gone error.
fn during(e: RdmaError, done: u64, total: u64) -> RdmaError {
    match e {
        RdmaError::PeerGone { peer, event, .. } => RdmaError::PeerGone {
            peer,
            during: format!("mid-stream, after {done:#x} of {total:#x} bytes"),
            event,
        },
        e => e,
    }
}
