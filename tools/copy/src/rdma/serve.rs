//! The receiving end: listen, take one sender's connect requests (seed and
//! size in their private data), expose the poisoned destination, wait for
//! Done, check every byte, answer with the verdict.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use peerdma_exporter::AccessPath;
use peerdma_importer::rdma::{
    self, Access, ConnectRequest, Listener, MemoryRegion, Operation, ProtectionDomain, QpOptions,
    QueuePair, RdmaError,
};

use super::memory::{Local, LocalSpec};
use super::wire::{Accept, Done, Hello, Verdict, MSG_LEN};
use super::{rate, RdmaReport};
use crate::CopyError;

/// What to expose where.
#[derive(Clone, Debug)]
pub struct ServeRequest {
    /// The destination.
    pub dst: LocalSpec,
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// VFIO access path for a BAR destination.
    pub access: AccessPath,
    /// How long to wait for the sender to connect (`None`: forever).
    pub wait: Option<Duration>,
    /// How long the sender may take once connected.
    pub timeout: Duration,
    /// The largest host-memory destination to allocate.
    pub max_host_size: u64,
}

/// Serves one sender; `on_listen` is told the address once listening.
///
/// # Errors
///
/// [`CopyError::Rdma`] when listening fails, the sender's requests are not
/// p2pcopy's, or it goes away before Done; the destination's open, span and
/// alignment errors (the sender is refused with the reason).
pub fn serve(
    req: &ServeRequest,
    on_listen: &mut dyn FnMut(SocketAddr),
) -> Result<RdmaReport, CopyError> {
    let listener = Listener::bind(req.listen)?;
    on_listen(listener.local_addr().unwrap_or(req.listen));
    let first = listener.next_request(req.wait)?;
    let Some(hello) = Hello::from_bytes(first.private_data()) else {
        first.reject("not a p2pcopy sender of this version");
        return Err(RdmaError::Protocol {
            what: "a connect request".into(),
        }
        .into());
    };
    let peer = first.peer().to_string();
    if matches!(req.dst, LocalSpec::Host) && hello.size > req.max_host_size {
        let why = format!(
            "the receiver takes at most {:#x} bytes of host memory, not {:#x}",
            req.max_host_size, hello.size
        );
        first.reject(&why);
        return Err(RdmaError::Protocol { what: why }.into());
    }
    let pd = first.alloc_pd()?;
    let dst = match Local::destination(&pd, &req.dst, hello.size, hello.seed, req.access) {
        Ok(d) => d,
        Err(e) => {
            first.reject(&format!("the receiver's destination: {e}"));
            return Err(e);
        }
    };
    let accept = Accept {
        mr: dst.mr.remote(),
        peer_to_peer: dst.peer_to_peer(),
        staged: dst.staged.is_some(),
        what: match &dst.staged {
            None => dst.what.clone(),
            Some(_) => format!(
                "{} staged through host memory (NOT peer-to-peer: {} cannot register its dma-buf)",
                dst.what,
                pd.device()
            ),
        },
    }
    .to_bytes();
    let opts = QpOptions::default();
    let mut msgs = pd.register_host(2 * MSG_LEN, Access::ALL)?;
    let mut qps = vec![accept_one(first, &pd, &opts, &accept, &msgs, req.timeout)?];
    let start = Instant::now();
    while qps.len() < usize::from(hello.qps.max(1)) {
        let r = listener.next_request(Some(req.timeout))?;
        match Hello::from_bytes(r.private_data()) {
            Some(h) if h.session == hello.session && r.same_device(&pd) => {
                qps.push(accept_one(r, &pd, &opts, &accept, &msgs, req.timeout)?)
            }
            _ => r.reject("this receiver serves another sender"),
        }
    }
    // A second sender meanwhile is refused at once with the reason (it would
    // otherwise wait in the listen backlog until its connect timed out).
    let busy = format!(
        "this receiver is busy with a stream from {peer}; try again when it ends, or send to \
         another receiver (another port)"
    );
    let refuse_others = || {
        while let Ok(Some(r)) = listener.pending_request() {
            r.reject(&busy);
        }
    };
    let done = wait_done(&mut qps, &msgs, req.timeout, &refuse_others)?;
    let seconds = start.elapsed().as_secs_f64();
    let verdict = if done.bytes != hello.size {
        Verdict::Mismatch {
            first: done.bytes.min(hello.size),
            count: hello.size.abs_diff(done.bytes),
        }
    } else {
        match dst.check_destination(hello.seed)? {
            None => Verdict::Verified {
                nanos: (seconds * 1e9) as u64,
            },
            Some((first, count)) => Verdict::Mismatch { first, count },
        }
    };
    refuse_others();
    msgs.host_bytes_mut().expect("a host MR")[..MSG_LEN].copy_from_slice(&verdict.to_bytes());
    qps[0].post_send(&msgs, 0, MSG_LEN as u32, 3)?;
    // The verdict's completion; the sender disconnects after reading it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut comps = Vec::new();
    while Instant::now() < deadline {
        comps.clear();
        match qps[0].poll(&mut comps) {
            Ok(_) if comps.iter().any(|c| c.op == Operation::Send) => break,
            Ok(_) => {}
            Err(_) => break, // the sender already left: the verdict is ours to print
        }
    }
    // Let the sender read the verdict and hang up first.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && qps[0].check_peer(Duration::from_millis(50)).is_ok() {
        refuse_others();
    }
    refuse_others();
    if let Verdict::Mismatch { first, count } = verdict {
        return Err(CopyError::Mismatch {
            first,
            count,
            detail: None,
        });
    }
    let mut not_p2p = Vec::new();
    if let Some(why) = &dst.staged {
        not_p2p.push(format!(
            "the destination {} went through host memory (the CPU copied a host MR into the BAR) because {why}",
            dst.what
        ));
    }
    Ok(RdmaReport {
        role: "receiver",
        engine: "rdma",
        local: dst.what.clone(),
        remote: "the sender's memory".into(),
        peer,
        device: pd.device().to_string(),
        driver: pd.driver().to_string(),
        qps: qps.len() as u8,
        bytes: hello.size,
        seconds,
        gbps: rate(hello.size, seconds),
        verified: true,
        peer_to_peer: dst.peer_to_peer(),
        not_p2p,
    })
}

fn accept_one(
    r: ConnectRequest,
    pd: &Arc<ProtectionDomain>,
    opts: &QpOptions,
    accept: &[u8],
    msgs: &MemoryRegion,
    timeout: Duration,
) -> Result<QueuePair, CopyError> {
    let mut qp = r.accept(pd, opts, accept, timeout)?;
    qp.post_recv(msgs, MSG_LEN as u64, MSG_LEN as u32, 1)?;
    Ok(qp)
}

/// Waits for the sender's Done on any QP, watching every QP for a disconnect;
/// `meanwhile` runs on each round (refusing other senders).
fn wait_done(
    qps: &mut [QueuePair],
    msgs: &MemoryRegion,
    timeout: Duration,
    meanwhile: &dyn Fn(),
) -> Result<Done, CopyError> {
    let deadline = rdma::deadline(timeout);
    let mut comps = Vec::new();
    loop {
        meanwhile();
        for qp in qps.iter_mut() {
            comps.clear();
            qp.poll(&mut comps).map_err(before_done)?;
            if comps.iter().any(|c| c.op == Operation::Recv) {
                let b = &msgs.host_bytes().expect("a host MR")[MSG_LEN..2 * MSG_LEN];
                return Done::from_bytes(b).ok_or_else(|| {
                    RdmaError::Protocol {
                        what: "a final message".into(),
                    }
                    .into()
                });
            }
            if let Err(gone) = qp.check_peer(Duration::ZERO) {
                // Done may have landed just before the sender hung up.
                comps.clear();
                let late =
                    qp.poll(&mut comps).is_ok() && comps.iter().any(|c| c.op == Operation::Recv);
                if !late {
                    return Err(before_done(gone).into());
                }
                let b = &msgs.host_bytes().expect("a host MR")[MSG_LEN..2 * MSG_LEN];
                return Done::from_bytes(b).ok_or_else(|| {
                    RdmaError::Protocol {
                        what: "a final message".into(),
                    }
                    .into()
                });
            }
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            return Err(RdmaError::Timeout {
                what: "the sender's last message".into(),
                seconds: timeout.as_secs(),
                fix: "check the sender's output",
            }
            .into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn before_done(e: RdmaError) -> RdmaError {
    match e {
        RdmaError::PeerGone { peer, event, .. } => RdmaError::PeerGone {
            peer,
            during: "before it said the stream was complete".into(),
            event,
        },
        e => e,
    }
}
