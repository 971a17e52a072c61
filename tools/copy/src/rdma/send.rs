//! The sending end: resolve the peer, register the source, connect the QPs
//! with the seed and size in the private data, RDMA WRITE the span, send
//! Done, wait for the receiver's verdict.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use peerdma_exporter::AccessPath;
use peerdma_importer::rdma::{
    self, stream, Access, Operation, QpOptions, QueuePair, RdmaError, Resolved, Span, StreamOptions,
};

use super::memory::{Local, LocalSpec};
use super::wire::{Accept, Done, Hello, Verdict, MSG_LEN};
use super::{rate, RdmaReport};
use crate::harness::{self, Harness};
use crate::transport::{StepError, Transport, TransportKind};
use crate::CopyError;
use crate::{Hooks, Progress};

/// What to send where.
#[derive(Clone, Debug)]
pub struct SendRequest {
    /// The source.
    pub src: LocalSpec,
    /// The receiver (`p2pcopy --serve` there).
    pub peer: SocketAddr,
    /// Bytes; `None`: the BAR's span past the offset (host memory: 16 MiB).
    pub size: Option<u64>,
    /// Pattern seed.
    pub seed: u64,
    /// QPs (1..=16).
    pub qps: u8,
    /// Bytes per RDMA WRITE.
    pub msg_size: u32,
    /// WRITEs in flight per QP.
    pub depth: u32,
    /// VFIO access path for a BAR source.
    pub access: AccessPath,
    /// How long the peer may take to answer.
    pub timeout: Duration,
}

/// Host memory sources default to this size.
pub const HOST_DEFAULT_SIZE: u64 = 16 << 20;

/// Sends; `progress(done, total)` after each completion batch.
///
/// # Errors
///
/// [`CopyError::Rdma`] for an unreachable, refusing or vanishing peer and
/// for error completions; [`CopyError::PeerMismatch`] /
/// [`CopyError::PeerFailed`] when the receiver's check fails; the BAR
/// source's open, span and alignment errors.
pub fn send(
    req: &SendRequest,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RdmaReport, CopyError> {
    let qps_n = req.qps.clamp(1, 16);
    let first = Resolved::resolve(req.peer, req.timeout)?;
    let pd = first.alloc_pd()?;
    let size = match (req.size, &req.src) {
        (Some(s), _) => s,
        (None, LocalSpec::Host) => HOST_DEFAULT_SIZE,
        (None, LocalSpec::Bar(spec)) => {
            let ep = crate::Endpoint::open(
                spec,
                peerdma_exporter::OpenOptions {
                    access: req.access,
                    ..Default::default()
                },
            )?;
            ep.bar.size().saturating_sub(ep.offset)
        }
    };
    if size == 0 {
        return Err(CopyError::ZeroSize);
    }
    let src = Local::source(&pd, &req.src, size, req.seed, req.access)?;
    let mut msgs = pd.register_host(2 * MSG_LEN, Access::ALL)?;
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let session = clock ^ u64::from(std::process::id()).rotate_left(32) ^ req.seed.rotate_left(17);
    let opts = QpOptions {
        depth: req.depth.max(1),
        ..QpOptions::default()
    };
    let mut qps: Vec<QueuePair> = Vec::with_capacity(usize::from(qps_n));
    let mut accept: Option<Accept> = None;
    let mut pending = Some(first);
    for index in 0..qps_n {
        let resolved = match pending.take() {
            Some(r) => r,
            None => Resolved::resolve(req.peer, req.timeout)?,
        };
        let hello = Hello {
            qps: qps_n,
            index,
            seed: req.seed,
            size,
            session,
        };
        let (qp, data) = resolved.connect(&pd, &opts, &hello.to_bytes(), req.timeout)?;
        let a = Accept::from_bytes(&data).ok_or_else(|| RdmaError::Protocol {
            what: format!("an accept of {} bytes", data.len()),
        })?;
        if a.mr.len < size {
            return Err(RdmaError::Protocol {
                what: format!("a destination of {:#x} bytes for {size:#x}", a.mr.len),
            }
            .into());
        }
        accept.get_or_insert(a);
        qps.push(qp);
    }
    let accept = accept.expect("at least one QP");
    // The verdict arrives on QP 0.
    qps[0].post_recv(&msgs, MSG_LEN as u64, MSG_LEN as u32, 1)?;
    let msg_size = req.msg_size.max(1);
    let mut transport = RdmaWrite {
        qps: &mut qps,
        src: &src,
        remote: accept.mr,
        device: pd.device().to_string(),
        opts: StreamOptions {
            msg_size,
            stall: req.timeout,
            ..StreamOptions::default()
        },
        max_step: step_for(msg_size, req.depth.max(1), qps_n),
    };
    let hooks = Hooks::default();
    let mut harness = Harness::start(&hooks, None, None);
    let span = harness::Span {
        size,
        chunk: transport.max_step,
        iterations: 1,
    };
    let start = Instant::now();
    harness.drive(
        &mut transport,
        span,
        &mut |p: Progress| progress(p.done, p.total),
        &|_, done, total| match &src.bar {
            Some(bar) => crate::verify::revoked(&bar.ep, done, total),
            // Host memory is never revoked; a step reports its own failure.
            None => CopyError::Rdma(RdmaError::Protocol {
                what: "a revoke of host memory".to_string(),
            }),
        },
    )?;
    let seconds = start.elapsed().as_secs_f64();
    msgs.host_bytes_mut().expect("a host MR")[..MSG_LEN]
        .copy_from_slice(&Done { bytes: size }.to_bytes());
    qps[0].post_send(&msgs, 0, MSG_LEN as u32, 2)?;
    let verdict = wait_verdict(&mut qps[0], &msgs, req.timeout)?;
    for qp in &mut qps {
        qp.disconnect();
    }
    let peer = req.peer.to_string();
    match verdict {
        Verdict::Verified { .. } => {}
        Verdict::Mismatch { first, count } => {
            return Err(CopyError::PeerMismatch { peer, first, count })
        }
        Verdict::Failed => return Err(CopyError::PeerFailed { peer }),
    }
    let mut not_p2p = Vec::new();
    if let Some(why) = &src.staged {
        not_p2p.push(format!(
            "the source {} went through host memory (the CPU read the BAR into a host MR) because {why}",
            src.what
        ));
    }
    if accept.staged {
        not_p2p.push(format!("the destination is {}", accept.what));
    }
    let device_memory = src.bar.is_some() || accept.peer_to_peer || accept.staged;
    Ok(RdmaReport {
        role: "sender",
        engine: "rdma",
        local: src.what.clone(),
        remote: accept.what,
        peer,
        device: pd.device().to_string(),
        driver: pd.driver().to_string(),
        qps: qps_n,
        bytes: size,
        seconds,
        gbps: rate(size, seconds),
        verified: true,
        peer_to_peer: device_memory && not_p2p.is_empty(),
        not_p2p,
    })
}

/// The copy's transport towards a peer: RDMA WRITEs of the source MR into the
/// receiver's, on the connected QPs, one span step at a time (the receiver checks the
/// bytes and sends the verdict after the last). Between steps every WRITE of the step
/// has completed, so a step that fails says how far the copy got.
struct RdmaWrite<'a> {
    qps: &'a mut Vec<QueuePair>,
    src: &'a Local,
    remote: rdma::RemoteMr,
    device: String,
    opts: StreamOptions,
    max_step: u64,
}

/// Bytes per step: at least 64 MiB, and at least four times what the QPs keep in
/// flight, so that draining the QPs at a step's end costs little of the stream.
fn step_for(msg_size: u32, depth: u32, qps: u8) -> u64 {
    let in_flight = u64::from(msg_size) * u64::from(depth) * u64::from(qps);
    (64u64 << 20).max(in_flight.saturating_mul(4))
}

impl Transport for RdmaWrite<'_> {
    fn kind(&self) -> TransportKind {
        TransportKind::RdmaWrite
    }

    fn engine(&self) -> Option<String> {
        Some(self.device.clone())
    }

    fn max_step(&self) -> u64 {
        self.max_step
    }

    fn step(&mut self, offset: u64, len: u64, at: Progress) -> Result<(), StepError> {
        stream::write(
            self.qps,
            Span {
                local: &self.src.mr,
                local_off: offset,
                remote: self.remote,
                remote_off: offset,
                len,
            },
            self.opts,
            &mut |_| {},
        )
        .map(|_| ())
        .map_err(|e| StepError::Failed(revoked_or(e, self.src, at.done, at.total)))
    }
}

/// Polls QP 0 until the receiver's verdict arrives (the Done SEND completes
/// on the way).
fn wait_verdict(
    qp: &mut QueuePair,
    msgs: &rdma::MemoryRegion,
    timeout: Duration,
) -> Result<Verdict, CopyError> {
    let deadline = rdma::deadline(timeout);
    let mut comps = Vec::new();
    let got_recv = |qp: &mut QueuePair, comps: &mut Vec<_>| -> Result<bool, RdmaError> {
        comps.clear();
        qp.poll(comps)?;
        Ok(comps
            .iter()
            .any(|c: &rdma::Completion| c.op == Operation::Recv))
    };
    loop {
        let mut arrived =
            got_recv(qp, &mut comps).map_err(|e| gone_while(e, "checking the bytes"))?;
        if !arrived {
            if let Err(gone) = qp.check_peer(Duration::from_millis(1)) {
                // The verdict may have landed just before the receiver hung up.
                arrived = got_recv(qp, &mut comps).unwrap_or(false);
                if !arrived {
                    return Err(gone_while(gone, "checking the bytes").into());
                }
            }
        }
        if arrived {
            let b = &msgs.host_bytes().expect("a host MR")[MSG_LEN..2 * MSG_LEN];
            return Verdict::from_bytes(b).ok_or_else(|| {
                RdmaError::Protocol {
                    what: "a verdict".into(),
                }
                .into()
            });
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            return Err(RdmaError::Timeout {
                what: "the receiver's verdict".into(),
                seconds: timeout.as_secs(),
                fix: "check the receiver's output",
            }
            .into());
        }
    }
}

/// A failed completion on a dma-buf MR of a BAR that the exporter revoked
/// (decode off, reset) is the revoke, said as such; anything else as it came.
fn revoked_or(e: RdmaError, src: &Local, done: u64, total: u64) -> CopyError {
    if let (
        RdmaError::Completion {
            local_dmabuf: true, ..
        },
        Some(bar),
    ) = (&e, &src.bar)
    {
        if matches!(
            bar.ep.device.revoke_state(),
            Ok(peerdma_exporter::RevokeState::Revoked(_))
        ) {
            return crate::verify::revoked(&bar.ep, done, total);
        }
    }
    e.into()
}

fn gone_while(e: RdmaError, what: &str) -> RdmaError {
    match e {
        RdmaError::PeerGone { peer, event, .. } => RdmaError::PeerGone {
            peer,
            during: format!("while {what}"),
            event,
        },
        e => e,
    }
}
