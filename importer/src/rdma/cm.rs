//! RDMA CM: an event channel per connection, address and route resolution
//! (the active side), listening and connect requests (the passive side), and
//! the private data both sides exchange.

use std::ffi::CStr;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::io::Errno;

use super::error::{last_errno, RdmaError, Result};
use super::mr::ProtectionDomain;
use super::qp::{QpOptions, QueuePair};
use super::sys;

/// The name librdmacm gives an event type.
pub(crate) fn event_name(kind: u32) -> String {
    // SAFETY: rdma_event_str returns a static string for any value.
    let s = unsafe { sys::rdma_event_str(kind) };
    if s.is_null() {
        format!("CM event {kind}")
    } else {
        // SAFETY: non-null static C string.
        unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
    }
}

/// One CM event, copied out before it was acknowledged.
pub(crate) struct CmEvent {
    pub(crate) kind: u32,
    pub(crate) status: i32,
    /// The id it is about (for a connect request: the new id, now ours).
    pub(crate) id: *mut sys::rdma_cm_id,
    pub(crate) private: Vec<u8>,
}

/// An `rdma_event_channel`.
pub(crate) struct Channel(NonNull<sys::rdma_event_channel>);

// SAFETY: the channel is an fd wrapper; librdmacm allows use from any thread.
unsafe impl Send for Channel {}

impl Channel {
    pub(crate) fn new() -> Result<Channel> {
        // SAFETY: plain constructor.
        let ch = unsafe { sys::rdma_create_event_channel() };
        NonNull::new(ch)
            .map(Channel)
            .ok_or_else(|| RdmaError::Call {
                call: "rdma_create_event_channel",
                errno: last_errno(),
                fix: "load the RDMA CM (rdma_ucm) and check that /dev/infiniband/rdma_cm exists",
            })
    }

    pub(crate) fn raw(&self) -> *mut sys::rdma_event_channel {
        self.0.as_ptr()
    }

    /// The next event, or `None` when none comes within `timeout`.
    pub(crate) fn next(&self, timeout: Duration) -> Result<Option<CmEvent>> {
        let mut pfd = libc::pollfd {
            // SAFETY: the channel is live.
            fd: unsafe { (*self.0.as_ptr()).fd },
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: pfd is one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let errno = last_errno();
            if errno == rustix::io::Errno::INTR {
                return Ok(None);
            }
            return Err(RdmaError::Call {
                call: "poll on the RDMA CM channel",
                errno,
                fix: "retry",
            });
        }
        if n == 0 {
            return Ok(None);
        }
        let mut ev: *mut sys::rdma_cm_event = std::ptr::null_mut();
        // SAFETY: the channel is live; ev receives an event we ack below.
        if unsafe { sys::rdma_get_cm_event(self.raw(), &mut ev) } != 0 {
            return Err(RdmaError::Call {
                call: "rdma_get_cm_event",
                errno: last_errno(),
                fix: "retry",
            });
        }
        // SAFETY: ev is a valid event until acked; its private data is
        // private_data_len bytes.
        let copied = unsafe {
            let e = &*ev;
            let private = if e.conn.private_data.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(
                    e.conn.private_data.cast::<u8>(),
                    usize::from(e.conn.private_data_len),
                )
                .to_vec()
            };
            CmEvent {
                kind: e.event,
                status: e.status,
                id: e.id,
                private,
            }
        };
        // SAFETY: acknowledges the event got above, once.
        unsafe { sys::rdma_ack_cm_event(ev) };
        Ok(Some(copied))
    }

    /// Waits up to `timeout` for `expected`; any other event is an error.
    pub(crate) fn expect(
        &self,
        expected: u32,
        timeout: Duration,
        on_other: &dyn Fn(&CmEvent) -> RdmaError,
    ) -> Result<CmEvent> {
        let deadline = deadline(timeout);
        loop {
            let left = until(deadline);
            match self.next(left)? {
                Some(e) if e.kind == expected => return Ok(e),
                Some(e) => return Err(on_other(&e)),
                None if deadline.is_some() && left.is_zero() => {
                    return Err(RdmaError::Timeout {
                        what: event_name(expected),
                        seconds: timeout.as_secs(),
                        fix: "check that the peer runs and that both ends' RDMA devices are up \
                              (`rdma link`)",
                    })
                }
                None => {}
            }
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        // SAFETY: every id on the channel was destroyed first (IdGuard's
        // Drop runs before its channel field is dropped).
        unsafe { sys::rdma_destroy_event_channel(self.0.as_ptr()) };
    }
}

/// An `rdma_cm_id` with its own event channel, destroyed in that order.
pub(crate) struct IdGuard {
    pub(crate) id: NonNull<sys::rdma_cm_id>,
    pub(crate) channel: Channel,
}

// SAFETY: the id is used by one owner at a time.
unsafe impl Send for IdGuard {}

impl IdGuard {
    fn new() -> Result<IdGuard> {
        let channel = Channel::new()?;
        let mut id: *mut sys::rdma_cm_id = std::ptr::null_mut();
        // SAFETY: channel is live; id receives the new id.
        let rc = unsafe {
            sys::rdma_create_id(
                channel.raw(),
                &mut id,
                std::ptr::null_mut(),
                sys::RDMA_PS_TCP,
            )
        };
        if rc != 0 {
            return Err(RdmaError::Call {
                call: "rdma_create_id",
                errno: last_errno(),
                fix: "check that /dev/infiniband/rdma_cm exists and is accessible",
            });
        }
        Ok(IdGuard {
            id: NonNull::new(id).expect("rdma_create_id set the id"),
            channel,
        })
    }

    /// Moves a connect request's id to a channel of its own.
    fn adopt(id: *mut sys::rdma_cm_id) -> Result<IdGuard> {
        let id = NonNull::new(id).ok_or_else(|| RdmaError::Protocol {
            what: "a connect request without an id".into(),
        })?;
        let channel = Channel::new()?;
        // SAFETY: id is a live id from a connect request; channel is live.
        if unsafe { sys::rdma_migrate_id(id.as_ptr(), channel.raw()) } != 0 {
            let errno = last_errno();
            // SAFETY: the id is ours and unused.
            unsafe { sys::rdma_destroy_id(id.as_ptr()) };
            return Err(RdmaError::Call {
                call: "rdma_migrate_id",
                errno,
                fix: "retry",
            });
        }
        Ok(IdGuard { id, channel })
    }

    pub(crate) fn raw(&self) -> *mut sys::rdma_cm_id {
        self.id.as_ptr()
    }

    /// The device context the id is bound to (after address resolution or
    /// on a connect request).
    pub(crate) fn context(&self) -> Option<NonNull<sys::ibv_context>> {
        // SAFETY: the id is live.
        NonNull::new(unsafe { (*self.raw()).verbs })
    }

    fn addr_at(&self, offset: usize) -> Option<SocketAddr> {
        // SAFETY: the id is live; offset is inside it (layout-tested) and
        // holds a sockaddr_storage.
        unsafe { sockaddr_at(self.raw().cast::<u8>().add(offset)) }
    }

    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        self.addr_at(sys::RDMA_CM_ID_DST_ADDR)
    }

    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.addr_at(sys::RDMA_CM_ID_SRC_ADDR)
    }
}

impl Drop for IdGuard {
    fn drop(&mut self) {
        // SAFETY: the id is ours; its QP (if any) was destroyed by its owner.
        unsafe { sys::rdma_destroy_id(self.id.as_ptr()) };
    }
}

/// Reads a `sockaddr_in`/`sockaddr_in6` at `p`.
///
/// # Safety
///
/// `p` points to a readable `struct sockaddr_storage`.
unsafe fn sockaddr_at(p: *const u8) -> Option<SocketAddr> {
    // SAFETY: per the contract, p holds a sockaddr_storage, which starts with
    // the family and is large and aligned enough for either struct.
    unsafe {
        let family = p.cast::<libc::sa_family_t>().read_unaligned();
        match i32::from(family) {
            libc::AF_INET => {
                let sin = p.cast::<libc::sockaddr_in>().read_unaligned();
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 => {
                let sin6 = p.cast::<libc::sockaddr_in6>().read_unaligned();
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

/// A `sockaddr` for `addr`, with its storage.
fn sockaddr(addr: SocketAddr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe {
                std::ptr::addr_of_mut!(ss)
                    .cast::<libc::sockaddr_in>()
                    .write(sin)
            };
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe {
                std::ptr::addr_of_mut!(ss)
                    .cast::<libc::sockaddr_in6>()
                    .write(sin6)
            };
        }
    }
    ss
}

/// How long address and route resolution and the handshake may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The instant `timeout` from now; `None` when no clock reaches it (a timeout of
/// 2^64 - 1 seconds): then there is no deadline and the wait has no end, which is
/// what so long a timeout asks for.
pub fn deadline(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// How long until `deadline` (zero once passed); an hour at a time without one.
fn until(deadline: Option<Instant>) -> Duration {
    deadline.map_or(Duration::from_secs(3600), |d| {
        d.saturating_duration_since(Instant::now())
    })
}

/// The active side after RDMA CM resolved the peer's address and route: the
/// local RDMA device is known (the one whose netdev routes to the peer), so
/// a PD and MRs can be made before connecting.
pub struct Resolved {
    guard: IdGuard,
    addr: SocketAddr,
}

impl Resolved {
    /// Resolves `addr` (an IP address and the port the peer listens on) to
    /// a local RDMA device and a route.
    ///
    /// # Errors
    ///
    /// [`RdmaError::Unreachable`] when no RDMA device routes to `addr`;
    /// [`RdmaError::Call`] when RDMA CM is missing.
    pub fn resolve(addr: SocketAddr, timeout: Duration) -> Result<Resolved> {
        let guard = IdGuard::new()?;
        let dst = sockaddr(addr);
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let unreachable = |why: String| RdmaError::Unreachable { addr, why };
        // SAFETY: the id is live; dst is a valid sockaddr for the call.
        let rc = unsafe {
            sys::rdma_resolve_addr(
                guard.raw(),
                std::ptr::null(),
                std::ptr::addr_of!(dst).cast(),
                ms,
            )
        };
        if rc != 0 {
            return Err(unreachable(format!("rdma_resolve_addr: {}", last_errno())));
        }
        let other = |e: &CmEvent| {
            unreachable(format!(
                "{} (status {}: {})",
                event_name(e.kind),
                e.status,
                rustix::io::Errno::from_raw_os_error(-e.status)
            ))
        };
        guard.channel.expect(
            sys::RDMA_CM_EVENT_ADDR_RESOLVED,
            timeout.saturating_add(Duration::from_secs(1)),
            &other,
        )?;
        // SAFETY: the id is live and its address resolved.
        if unsafe { sys::rdma_resolve_route(guard.raw(), ms) } != 0 {
            return Err(unreachable(format!("rdma_resolve_route: {}", last_errno())));
        }
        guard.channel.expect(
            sys::RDMA_CM_EVENT_ROUTE_RESOLVED,
            timeout.saturating_add(Duration::from_secs(1)),
            &other,
        )?;
        if guard.context().is_none() {
            return Err(unreachable("no RDMA device was bound to the route".into()));
        }
        Ok(Resolved { guard, addr })
    }

    /// Allocates a PD on the device the route goes through.
    ///
    /// # Errors
    ///
    /// [`RdmaError::Call`] when `ibv_alloc_pd` fails.
    pub fn alloc_pd(&self) -> Result<Arc<ProtectionDomain>> {
        ProtectionDomain::alloc(self.guard.context().expect("resolved ids have a device"))
    }

    /// The local address the route leaves from.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.guard.local_addr()
    }

    /// Creates the RC QP on `pd` and connects, sending `private` (at most 56
    /// bytes) with the request; returns the QP and the peer's accept data.
    ///
    /// # Errors
    ///
    /// [`RdmaError::Rejected`] when the peer refuses (the reason from its
    /// reject data when it gave one); [`RdmaError::Unreachable`] when it
    /// does not answer; [`RdmaError::DeviceMismatch`] when `pd` is on
    /// another device; [`RdmaError::Call`] for QP/CQ creation.
    pub fn connect(
        self,
        pd: &Arc<ProtectionDomain>,
        opts: &QpOptions,
        private: &[u8],
        timeout: Duration,
    ) -> Result<(QueuePair, Vec<u8>)> {
        let addr = self.addr;
        if self.guard.context() != Some(pd.context()) {
            let other = self
                .guard
                .context()
                .map(|c| {
                    // SAFETY: c is a live device context.
                    unsafe { CStr::from_ptr(sys::ibv_get_device_name((*c.as_ptr()).device)) }
                        .to_string_lossy()
                        .into_owned()
                })
                .unwrap_or_default();
            return Err(RdmaError::DeviceMismatch {
                addr,
                first: pd.device().to_string(),
                other,
            });
        }
        let mut qp = QueuePair::create(self.guard, pd, opts, addr.to_string())?;
        let mut param = conn_param(opts, private);
        // SAFETY: the id has a QP; param and its private data outlive the call.
        if unsafe { sys::rdma_connect(qp.id(), &mut param) } != 0 {
            return Err(RdmaError::Call {
                call: "rdma_connect",
                errno: last_errno(),
                fix: "check the private data length (56 bytes at most)",
            });
        }
        let ev =
            qp.channel()
                .expect(sys::RDMA_CM_EVENT_ESTABLISHED, timeout, &|e| match e.kind {
                    sys::RDMA_CM_EVENT_REJECTED => RdmaError::Rejected {
                        addr,
                        status: e.status,
                        reason: reject_reason(e.status, &e.private),
                    },
                    sys::RDMA_CM_EVENT_UNREACHABLE | sys::RDMA_CM_EVENT_CONNECT_ERROR => {
                        RdmaError::Unreachable {
                            addr,
                            why: format!(
                                "{} (status {}): the peer did not answer the connect request",
                                event_name(e.kind),
                                e.status
                            ),
                        }
                    }
                    _ => RdmaError::UnexpectedEvent {
                        expected: "RDMA_CM_EVENT_ESTABLISHED",
                        got: event_name(e.kind),
                        status: e.status,
                    },
                })?;
        qp.set_connected();
        Ok((qp, ev.private))
    }
}

/// The peer's reason from the reject's private data, or what the status
/// means when it gave none.
fn reject_reason(status: i32, private: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(private);
    let text = text.trim_end_matches('\0').trim();
    if !text.is_empty() && text.chars().all(|c| !c.is_control()) {
        return Some(text.to_string());
    }
    match status {
        8 => Some("nothing listens on that port (invalid service ID)".into()),
        28 => Some("the peer's application refused (consumer reject)".into()),
        _ => None,
    }
}

/// The connection parameters both sides use.
fn conn_param(opts: &QpOptions, private: &[u8]) -> sys::rdma_conn_param {
    sys::rdma_conn_param {
        private_data: private.as_ptr().cast(),
        private_data_len: private.len().min(255) as u8,
        responder_resources: opts.read_depth,
        initiator_depth: opts.read_depth,
        flow_control: 1,
        retry_count: 7,
        rnr_retry_count: 7,
        srq: 0,
        qp_num: 0,
    }
}

/// The passive side: an id bound to an address, listening.
pub struct Listener {
    guard: IdGuard,
}

impl Listener {
    /// Binds to `addr` (an IP address of an RDMA-capable netdev, or the
    /// wildcard; port 0 picks one) and listens.
    ///
    /// # Errors
    ///
    /// [`RdmaError::Call`] when the address cannot be bound (in use, not
    /// local) or listening fails.
    pub fn bind(addr: SocketAddr) -> Result<Listener> {
        let guard = IdGuard::new()?;
        let sa = sockaddr(addr);
        // SAFETY: the id is live; sa is a valid sockaddr.
        if unsafe { sys::rdma_bind_addr(guard.raw(), std::ptr::addr_of!(sa).cast()) } != 0 {
            return Err(RdmaError::Call {
                call: "rdma_bind_addr",
                errno: last_errno(),
                fix: "listen on an address of this host's RDMA-capable netdev and a free port",
            });
        }
        // SAFETY: the id is bound.
        if unsafe { sys::rdma_listen(guard.raw(), 8) } != 0 {
            return Err(RdmaError::Call {
                call: "rdma_listen",
                errno: last_errno(),
                fix: "listen on an address that an RDMA device serves (`rdma link` shows them)",
            });
        }
        Ok(Listener { guard })
    }

    /// The address and port it listens on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.guard.local_addr()
    }

    /// Allocates a PD on the device that serves the bound address (to
    /// register memory before any peer connects).
    ///
    /// # Errors
    ///
    /// [`RdmaError::Unreachable`] when the listener is bound to the wildcard
    /// address (no device yet); [`RdmaError::Call`] when `ibv_alloc_pd` fails.
    pub fn alloc_pd(&self) -> Result<Arc<ProtectionDomain>> {
        match self.guard.context() {
            Some(ctx) => ProtectionDomain::alloc(ctx),
            None => Err(RdmaError::Unreachable {
                addr: self
                    .local_addr()
                    .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
                why: "the listener is bound to no particular RDMA device (the wildcard \
                      address)"
                    .into(),
            }),
        }
    }

    /// The next connect request if one is waiting, without waiting.
    ///
    /// # Errors
    ///
    /// [`RdmaError::Call`] when the event channel cannot be read.
    pub fn pending_request(&self) -> Result<Option<ConnectRequest>> {
        loop {
            match self.guard.channel.next(Duration::ZERO)? {
                Some(e) if e.kind == sys::RDMA_CM_EVENT_CONNECT_REQUEST => {
                    let guard = IdGuard::adopt(e.id)?;
                    let peer = guard
                        .peer_addr()
                        .map_or_else(|| "the peer".to_string(), |a| a.ip().to_string());
                    return Ok(Some(ConnectRequest {
                        guard,
                        private: e.private,
                        peer,
                    }));
                }
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }

    /// Waits for the next connect request (`None`: until one comes).
    ///
    /// # Errors
    ///
    /// [`RdmaError::Timeout`] when none comes in time.
    pub fn next_request(&self, timeout: Option<Duration>) -> Result<ConnectRequest> {
        let deadline = timeout.and_then(deadline);
        loop {
            let left = until(deadline);
            match self.guard.channel.next(left)? {
                Some(e) if e.kind == sys::RDMA_CM_EVENT_CONNECT_REQUEST => {
                    let guard = IdGuard::adopt(e.id)?;
                    let peer = guard
                        .peer_addr()
                        .map_or_else(|| "the peer".to_string(), |a| a.ip().to_string());
                    return Ok(ConnectRequest {
                        guard,
                        private: e.private,
                        peer,
                    });
                }
                Some(_) => {}
                None if deadline.is_some() && left.is_zero() => {
                    return Err(RdmaError::Timeout {
                        what: "a connect request".into(),
                        seconds: timeout.unwrap_or_default().as_secs(),
                        fix: "start the client, pointing it at this address",
                    })
                }
                None => {}
            }
        }
    }
}

/// A peer's connect request, not yet accepted.
pub struct ConnectRequest {
    guard: IdGuard,
    private: Vec<u8>,
    peer: String,
}

impl ConnectRequest {
    /// The private data the peer sent.
    pub fn private_data(&self) -> &[u8] {
        &self.private
    }

    /// The peer's IP address.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Allocates a PD on the device the request came in on.
    ///
    /// # Errors
    ///
    /// [`RdmaError::Call`] when `ibv_alloc_pd` fails.
    pub fn alloc_pd(&self) -> Result<Arc<ProtectionDomain>> {
        let ctx = self.guard.context().ok_or_else(|| RdmaError::Protocol {
            what: "a connect request without a device".into(),
        })?;
        ProtectionDomain::alloc(ctx)
    }

    /// Whether `pd` is on the device this request came in on.
    pub fn same_device(&self, pd: &ProtectionDomain) -> bool {
        self.guard.context() == Some(pd.context())
    }

    /// Creates the QP on `pd`, accepts with `private` (the answer the peer
    /// reads), and waits for the connection.
    ///
    /// # Errors
    ///
    /// [`RdmaError::Call`] for QP creation and `rdma_accept`;
    /// [`RdmaError::PeerGone`] when the peer leaves before it is established.
    pub fn accept(
        self,
        pd: &Arc<ProtectionDomain>,
        opts: &QpOptions,
        private: &[u8],
        timeout: Duration,
    ) -> Result<QueuePair> {
        let peer = self.peer.clone();
        // The kernel refuses a QP for a request its sender withdrew (it went away
        // before the accept: the request's CM state is no longer REQ_RCVD and
        // ib_cm_init_qp_attr answers EINVAL); the depth is this side's own.
        let mut qp =
            QueuePair::create(self.guard, pd, opts, peer.clone()).map_err(|e| match e {
                RdmaError::Call {
                    call: "rdma_create_qp",
                    errno: Errno::INVAL,
                    ..
                } => RdmaError::PeerGone {
                    peer: peer.clone(),
                    during: "before its connect request was accepted".into(),
                    event: "its request was withdrawn: rdma_create_qp EINVAL".into(),
                },
                e => e,
            })?;
        let mut param = conn_param(opts, private);
        // SAFETY: the id has a QP; param outlives the call.
        if unsafe { sys::rdma_accept(qp.id(), &mut param) } != 0 {
            return Err(RdmaError::Call {
                call: "rdma_accept",
                errno: last_errno(),
                fix: "check the private data length (196 bytes at most)",
            });
        }
        qp.channel()
            .expect(sys::RDMA_CM_EVENT_ESTABLISHED, timeout, &|e| {
                RdmaError::PeerGone {
                    peer: peer.clone(),
                    during: "before the connection was established".into(),
                    event: event_name(e.kind),
                }
            })?;
        qp.set_connected();
        Ok(qp)
    }

    /// Refuses the request; the peer's error shows `reason`.
    pub fn reject(self, reason: &str) {
        let b = reason.as_bytes();
        let len = b.len().min(148);
        // SAFETY: the id is a live connect request; b outlives the call.
        unsafe { sys::rdma_reject(self.guard.raw(), b.as_ptr().cast(), len as u8) };
    }
}

#[cfg(test)]
mod deadline_tests {
    use super::*;

    #[test]
    fn a_timeout_past_the_clock_has_no_deadline_instead_of_a_panic() {
        assert!(deadline(Duration::from_secs(u64::MAX)).is_none());
        assert_eq!(until(None), Duration::from_secs(3600));
        let d = deadline(Duration::from_secs(60)).expect("a minute from now");
        assert!(until(Some(d)) <= Duration::from_secs(60));
        assert_eq!(
            until(deadline(Duration::ZERO)),
            Duration::ZERO,
            "zero means now"
        );
    }
}
