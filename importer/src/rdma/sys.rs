//! The few parts of rdma-core's libibverbs and librdmacm (Debian's
//! `libibverbs-dev`, `librdmacm-dev`, rdma-core 44+) this crate calls: `repr(C)`
//! structs with the fields it reads or writes (the rest kept as padding of the
//! same size), constants, and the exported functions. No logic.
//!
//! `ibv_post_send`, `ibv_post_recv` and `ibv_poll_cq` are `static inline` in
//! `verbs.h`: they call through the context's [`IbvContextOps`], and so do
//! [`ibv_post_send`], [`ibv_post_recv`] and [`ibv_poll_cq`] here.
//!
//! The `layout` test below compiles a C program against the installed headers
//! and compares every size, offset and constant.
#![allow(non_camel_case_types, missing_docs)]

use std::ffi::{c_char, c_int, c_void};

/// `struct ibv_context_ops`: 32 function pointers; only the data-path ones
/// the inline wrappers use are typed.
#[repr(C)]
pub struct IbvContextOps {
    pub _compat_a: [*mut c_void; 11],
    pub poll_cq: unsafe extern "C" fn(cq: *mut ibv_cq, num: c_int, wc: *mut ibv_wc) -> c_int,
    pub req_notify_cq: *mut c_void,
    pub _compat_b: [*mut c_void; 12],
    pub post_send: unsafe extern "C" fn(
        qp: *mut ibv_qp,
        wr: *mut ibv_send_wr,
        bad: *mut *mut ibv_send_wr,
    ) -> c_int,
    pub post_recv: unsafe extern "C" fn(
        qp: *mut ibv_qp,
        wr: *mut ibv_recv_wr,
        bad: *mut *mut ibv_recv_wr,
    ) -> c_int,
    pub _compat_c: [*mut c_void; 5],
}

/// `struct ibv_context`.
#[repr(C)]
pub struct ibv_context {
    pub device: *mut ibv_device,
    pub ops: IbvContextOps,
    pub cmd_fd: c_int,
    pub async_fd: c_int,
    pub num_comp_vectors: c_int,
    /// `pthread_mutex_t` and `abi_compat`.
    pub _rest: [u64; 6],
}

/// `struct ibv_device` (opaque: only passed to `ibv_get_device_name`).
#[repr(C)]
pub struct ibv_device {
    _opaque: [u8; 0],
}

/// `struct ibv_pd` (opaque).
#[repr(C)]
pub struct ibv_pd {
    _opaque: [u8; 0],
}

/// `struct ibv_cq`: the context pointer `ibv_poll_cq` dispatches through.
#[repr(C)]
pub struct ibv_cq {
    pub context: *mut ibv_context,
    pub _rest: [u64; 15],
}

/// `struct ibv_qp`.
#[repr(C)]
pub struct ibv_qp {
    pub context: *mut ibv_context,
    pub qp_context: *mut c_void,
    pub pd: *mut ibv_pd,
    pub send_cq: *mut ibv_cq,
    pub recv_cq: *mut ibv_cq,
    pub srq: *mut c_void,
    pub handle: u32,
    pub qp_num: u32,
    pub state: u32,
    pub qp_type: u32,
    /// `pthread_mutex_t`, `pthread_cond_t`, `events_completed`.
    pub _rest: [u64; 12],
}

/// `struct ibv_mr`.
#[repr(C)]
pub struct ibv_mr {
    pub context: *mut ibv_context,
    pub pd: *mut ibv_pd,
    pub addr: *mut c_void,
    pub length: usize,
    pub handle: u32,
    pub lkey: u32,
    pub rkey: u32,
}

/// `struct ibv_sge`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ibv_sge {
    pub addr: u64,
    pub length: u32,
    pub lkey: u32,
}

/// `struct ibv_send_wr`, with the `wr.rdma` member of the `wr` union named
/// (the union is 32 bytes: its `atomic` member is the largest).
#[repr(C)]
pub struct ibv_send_wr {
    pub wr_id: u64,
    pub next: *mut ibv_send_wr,
    pub sg_list: *mut ibv_sge,
    pub num_sge: c_int,
    pub opcode: u32,
    pub send_flags: u32,
    pub imm_data: u32,
    pub remote_addr: u64,
    pub rkey: u32,
    pub _wr_rest: [u32; 5],
    /// The `qp_type` union and the `bind_mw`/`tso` union.
    pub _rest: [u64; 7],
}

/// `struct ibv_recv_wr`.
#[repr(C)]
pub struct ibv_recv_wr {
    pub wr_id: u64,
    pub next: *mut ibv_recv_wr,
    pub sg_list: *mut ibv_sge,
    pub num_sge: c_int,
}

/// `struct ibv_wc`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ibv_wc {
    pub wr_id: u64,
    pub status: u32,
    pub opcode: u32,
    pub vendor_err: u32,
    pub byte_len: u32,
    pub imm_data: u32,
    pub qp_num: u32,
    pub src_qp: u32,
    pub wc_flags: u32,
    pub pkey_index: u16,
    pub slid: u16,
    pub sl: u8,
    pub dlid_path_bits: u8,
}

/// `struct ibv_qp_cap`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ibv_qp_cap {
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_send_sge: u32,
    pub max_recv_sge: u32,
    pub max_inline_data: u32,
}

/// `struct ibv_qp_init_attr`.
#[repr(C)]
pub struct ibv_qp_init_attr {
    pub qp_context: *mut c_void,
    pub send_cq: *mut ibv_cq,
    pub recv_cq: *mut ibv_cq,
    pub srq: *mut c_void,
    pub cap: ibv_qp_cap,
    pub qp_type: u32,
    pub sq_sig_all: c_int,
}

/// `struct rdma_event_channel`.
#[repr(C)]
pub struct rdma_event_channel {
    pub fd: c_int,
}

/// `struct rdma_cm_id`: the verbs context and QP are read; the route
/// (addresses, path records) is kept as padding.
#[repr(C)]
pub struct rdma_cm_id {
    pub verbs: *mut ibv_context,
    pub channel: *mut rdma_event_channel,
    pub context: *mut c_void,
    pub qp: *mut ibv_qp,
    /// `struct rdma_route`.
    pub _route: [u64; 39],
    pub ps: u32,
    pub port_num: u8,
    pub event: *mut rdma_cm_event,
    pub send_cq_channel: *mut c_void,
    pub send_cq: *mut ibv_cq,
    pub recv_cq_channel: *mut c_void,
    pub recv_cq: *mut ibv_cq,
    pub srq: *mut c_void,
    pub pd: *mut ibv_pd,
    pub qp_type: u32,
}

/// `struct rdma_conn_param`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rdma_conn_param {
    pub private_data: *const c_void,
    pub private_data_len: u8,
    pub responder_resources: u8,
    pub initiator_depth: u8,
    pub flow_control: u8,
    pub retry_count: u8,
    pub rnr_retry_count: u8,
    pub srq: u8,
    pub qp_num: u32,
}

/// `struct rdma_cm_event`: the `param` union read as its `conn` member (the
/// `ud` member makes it 56 bytes).
#[repr(C)]
pub struct rdma_cm_event {
    pub id: *mut rdma_cm_id,
    pub listen_id: *mut rdma_cm_id,
    pub event: u32,
    pub status: c_int,
    pub conn: rdma_conn_param,
    pub _ud_rest: [u64; 4],
}

pub const IBV_ACCESS_LOCAL_WRITE: c_int = 1;
pub const IBV_ACCESS_REMOTE_WRITE: c_int = 1 << 1;
pub const IBV_ACCESS_REMOTE_READ: c_int = 1 << 2;

pub const IBV_WR_RDMA_WRITE: u32 = 0;
pub const IBV_WR_SEND: u32 = 2;
pub const IBV_WR_RDMA_READ: u32 = 4;

pub const IBV_SEND_SIGNALED: u32 = 1 << 1;

pub const IBV_QPT_RC: u32 = 2;

pub const IBV_WC_SUCCESS: u32 = 0;

pub const RDMA_PS_TCP: u32 = 0x0106;

pub const RDMA_CM_EVENT_ADDR_RESOLVED: u32 = 0;
pub const RDMA_CM_EVENT_ADDR_ERROR: u32 = 1;
pub const RDMA_CM_EVENT_ROUTE_RESOLVED: u32 = 2;
pub const RDMA_CM_EVENT_ROUTE_ERROR: u32 = 3;
pub const RDMA_CM_EVENT_CONNECT_REQUEST: u32 = 4;
pub const RDMA_CM_EVENT_CONNECT_RESPONSE: u32 = 5;
pub const RDMA_CM_EVENT_CONNECT_ERROR: u32 = 6;
pub const RDMA_CM_EVENT_UNREACHABLE: u32 = 7;
pub const RDMA_CM_EVENT_REJECTED: u32 = 8;
pub const RDMA_CM_EVENT_ESTABLISHED: u32 = 9;
pub const RDMA_CM_EVENT_DISCONNECTED: u32 = 10;
pub const RDMA_CM_EVENT_DEVICE_REMOVAL: u32 = 11;
pub const RDMA_CM_EVENT_TIMEWAIT_EXIT: u32 = 15;

/// Offsets of `route.addr.src_addr` and `route.addr.dst_addr` in
/// `struct rdma_cm_id` (each a `struct sockaddr_storage` union).
pub const RDMA_CM_ID_SRC_ADDR: usize = 32;
pub const RDMA_CM_ID_DST_ADDR: usize = 32 + 128;

#[link(name = "ibverbs")]
extern "C" {
    pub fn ibv_get_device_name(device: *mut ibv_device) -> *const c_char;
    pub fn ibv_alloc_pd(context: *mut ibv_context) -> *mut ibv_pd;
    pub fn ibv_dealloc_pd(pd: *mut ibv_pd) -> c_int;
    pub fn ibv_reg_mr(
        pd: *mut ibv_pd,
        addr: *mut c_void,
        length: usize,
        access: c_int,
    ) -> *mut ibv_mr;
    pub fn ibv_reg_dmabuf_mr(
        pd: *mut ibv_pd,
        offset: u64,
        length: usize,
        iova: u64,
        fd: c_int,
        access: c_int,
    ) -> *mut ibv_mr;
    pub fn ibv_dereg_mr(mr: *mut ibv_mr) -> c_int;
    pub fn ibv_create_cq(
        context: *mut ibv_context,
        cqe: c_int,
        cq_context: *mut c_void,
        channel: *mut c_void,
        comp_vector: c_int,
    ) -> *mut ibv_cq;
    pub fn ibv_destroy_cq(cq: *mut ibv_cq) -> c_int;
}

#[link(name = "rdmacm")]
extern "C" {
    pub fn rdma_create_event_channel() -> *mut rdma_event_channel;
    pub fn rdma_destroy_event_channel(channel: *mut rdma_event_channel);
    pub fn rdma_create_id(
        channel: *mut rdma_event_channel,
        id: *mut *mut rdma_cm_id,
        context: *mut c_void,
        ps: u32,
    ) -> c_int;
    pub fn rdma_destroy_id(id: *mut rdma_cm_id) -> c_int;
    pub fn rdma_bind_addr(id: *mut rdma_cm_id, addr: *const libc::sockaddr) -> c_int;
    pub fn rdma_resolve_addr(
        id: *mut rdma_cm_id,
        src: *const libc::sockaddr,
        dst: *const libc::sockaddr,
        timeout_ms: c_int,
    ) -> c_int;
    pub fn rdma_resolve_route(id: *mut rdma_cm_id, timeout_ms: c_int) -> c_int;
    pub fn rdma_create_qp(
        id: *mut rdma_cm_id,
        pd: *mut ibv_pd,
        attr: *mut ibv_qp_init_attr,
    ) -> c_int;
    pub fn rdma_destroy_qp(id: *mut rdma_cm_id);
    pub fn rdma_connect(id: *mut rdma_cm_id, param: *mut rdma_conn_param) -> c_int;
    pub fn rdma_listen(id: *mut rdma_cm_id, backlog: c_int) -> c_int;
    pub fn rdma_accept(id: *mut rdma_cm_id, param: *mut rdma_conn_param) -> c_int;
    pub fn rdma_reject(id: *mut rdma_cm_id, private_data: *const c_void, len: u8) -> c_int;
    pub fn rdma_disconnect(id: *mut rdma_cm_id) -> c_int;
    pub fn rdma_get_cm_event(
        channel: *mut rdma_event_channel,
        event: *mut *mut rdma_cm_event,
    ) -> c_int;
    pub fn rdma_ack_cm_event(event: *mut rdma_cm_event) -> c_int;
    pub fn rdma_event_str(event: u32) -> *const c_char;
    pub fn rdma_migrate_id(id: *mut rdma_cm_id, channel: *mut rdma_event_channel) -> c_int;
}

/// `ibv_post_send` (static inline in `verbs.h`).
///
/// # Safety
///
/// `qp` is a live QP; `wr` a valid chain whose SGEs name registered memory.
pub unsafe fn ibv_post_send(
    qp: *mut ibv_qp,
    wr: *mut ibv_send_wr,
    bad: *mut *mut ibv_send_wr,
) -> c_int {
    // SAFETY: the caller passes a live QP, whose context's ops are the provider's.
    unsafe { ((*(*qp).context).ops.post_send)(qp, wr, bad) }
}

/// `ibv_post_recv` (static inline in `verbs.h`).
///
/// # Safety
///
/// As [`ibv_post_send`].
pub unsafe fn ibv_post_recv(
    qp: *mut ibv_qp,
    wr: *mut ibv_recv_wr,
    bad: *mut *mut ibv_recv_wr,
) -> c_int {
    // SAFETY: the caller passes a live QP, whose context's ops are the provider's.
    unsafe { ((*(*qp).context).ops.post_recv)(qp, wr, bad) }
}

/// `ibv_poll_cq` (static inline in `verbs.h`).
///
/// # Safety
///
/// `cq` is a live CQ; `wc` has room for `num` entries.
pub unsafe fn ibv_poll_cq(cq: *mut ibv_cq, num: c_int, wc: *mut ibv_wc) -> c_int {
    // SAFETY: the caller passes a live CQ, whose context's ops are the provider's.
    unsafe { ((*(*cq).context).ops.poll_cq)(cq, num, wc) }
}

#[cfg(test)]
mod layout {
    use super::*;
    use std::mem::{offset_of, size_of};
    use std::process::Command;

    /// (C expression, Rust value) pairs.
    fn facts() -> Vec<(&'static str, u64)> {
        macro_rules! f {
            ($c:literal, $r:expr) => {
                ($c, $r as u64)
            };
        }
        vec![
            f!(
                "offsetof(struct ibv_context, ops.poll_cq)",
                offset_of!(ibv_context, ops) + offset_of!(IbvContextOps, poll_cq)
            ),
            f!(
                "offsetof(struct ibv_context, ops.post_send)",
                offset_of!(ibv_context, ops) + offset_of!(IbvContextOps, post_send)
            ),
            f!(
                "offsetof(struct ibv_context, ops.post_recv)",
                offset_of!(ibv_context, ops) + offset_of!(IbvContextOps, post_recv)
            ),
            f!("sizeof(struct ibv_context_ops)", size_of::<IbvContextOps>()),
            f!(
                "offsetof(struct ibv_context, cmd_fd)",
                offset_of!(ibv_context, cmd_fd)
            ),
            f!(
                "offsetof(struct ibv_context, num_comp_vectors)",
                offset_of!(ibv_context, num_comp_vectors)
            ),
            f!("sizeof(struct ibv_context)", size_of::<ibv_context>()),
            f!("sizeof(struct ibv_cq)", size_of::<ibv_cq>()),
            f!(
                "offsetof(struct ibv_qp, qp_num)",
                offset_of!(ibv_qp, qp_num)
            ),
            f!(
                "offsetof(struct ibv_qp, qp_type)",
                offset_of!(ibv_qp, qp_type)
            ),
            f!("sizeof(struct ibv_qp)", size_of::<ibv_qp>()),
            f!(
                "offsetof(struct ibv_mr, length)",
                offset_of!(ibv_mr, length)
            ),
            f!("offsetof(struct ibv_mr, lkey)", offset_of!(ibv_mr, lkey)),
            f!("offsetof(struct ibv_mr, rkey)", offset_of!(ibv_mr, rkey)),
            f!("sizeof(struct ibv_mr)", size_of::<ibv_mr>()),
            f!("sizeof(struct ibv_sge)", size_of::<ibv_sge>()),
            f!("offsetof(struct ibv_sge, lkey)", offset_of!(ibv_sge, lkey)),
            f!(
                "offsetof(struct ibv_send_wr, num_sge)",
                offset_of!(ibv_send_wr, num_sge)
            ),
            f!(
                "offsetof(struct ibv_send_wr, opcode)",
                offset_of!(ibv_send_wr, opcode)
            ),
            f!(
                "offsetof(struct ibv_send_wr, send_flags)",
                offset_of!(ibv_send_wr, send_flags)
            ),
            f!(
                "offsetof(struct ibv_send_wr, imm_data)",
                offset_of!(ibv_send_wr, imm_data)
            ),
            f!(
                "offsetof(struct ibv_send_wr, wr.rdma.remote_addr)",
                offset_of!(ibv_send_wr, remote_addr)
            ),
            f!(
                "offsetof(struct ibv_send_wr, wr.rdma.rkey)",
                offset_of!(ibv_send_wr, rkey)
            ),
            f!(
                "offsetof(struct ibv_send_wr, qp_type)",
                offset_of!(ibv_send_wr, _rest)
            ),
            f!("sizeof(struct ibv_send_wr)", size_of::<ibv_send_wr>()),
            f!("sizeof(struct ibv_recv_wr)", size_of::<ibv_recv_wr>()),
            f!(
                "offsetof(struct ibv_wc, status)",
                offset_of!(ibv_wc, status)
            ),
            f!(
                "offsetof(struct ibv_wc, vendor_err)",
                offset_of!(ibv_wc, vendor_err)
            ),
            f!(
                "offsetof(struct ibv_wc, byte_len)",
                offset_of!(ibv_wc, byte_len)
            ),
            f!(
                "offsetof(struct ibv_wc, qp_num)",
                offset_of!(ibv_wc, qp_num)
            ),
            f!(
                "offsetof(struct ibv_wc, wc_flags)",
                offset_of!(ibv_wc, wc_flags)
            ),
            f!("sizeof(struct ibv_wc)", size_of::<ibv_wc>()),
            f!(
                "offsetof(struct ibv_qp_init_attr, cap)",
                offset_of!(ibv_qp_init_attr, cap)
            ),
            f!(
                "offsetof(struct ibv_qp_init_attr, qp_type)",
                offset_of!(ibv_qp_init_attr, qp_type)
            ),
            f!(
                "sizeof(struct ibv_qp_init_attr)",
                size_of::<ibv_qp_init_attr>()
            ),
            f!("sizeof(struct ibv_qp_cap)", size_of::<ibv_qp_cap>()),
            f!(
                "offsetof(struct rdma_cm_id, qp)",
                offset_of!(rdma_cm_id, qp)
            ),
            f!(
                "offsetof(struct rdma_cm_id, route)",
                offset_of!(rdma_cm_id, _route)
            ),
            f!(
                "offsetof(struct rdma_cm_id, route.addr.src_addr)",
                RDMA_CM_ID_SRC_ADDR
            ),
            f!(
                "offsetof(struct rdma_cm_id, route.addr.dst_addr)",
                RDMA_CM_ID_DST_ADDR
            ),
            f!(
                "offsetof(struct rdma_cm_id, ps)",
                offset_of!(rdma_cm_id, ps)
            ),
            f!(
                "offsetof(struct rdma_cm_id, port_num)",
                offset_of!(rdma_cm_id, port_num)
            ),
            f!(
                "offsetof(struct rdma_cm_id, event)",
                offset_of!(rdma_cm_id, event)
            ),
            f!(
                "offsetof(struct rdma_cm_id, pd)",
                offset_of!(rdma_cm_id, pd)
            ),
            f!(
                "offsetof(struct rdma_cm_id, qp_type)",
                offset_of!(rdma_cm_id, qp_type)
            ),
            f!("sizeof(struct rdma_cm_id)", size_of::<rdma_cm_id>()),
            f!(
                "offsetof(struct rdma_conn_param, private_data_len)",
                offset_of!(rdma_conn_param, private_data_len)
            ),
            f!(
                "offsetof(struct rdma_conn_param, responder_resources)",
                offset_of!(rdma_conn_param, responder_resources)
            ),
            f!(
                "offsetof(struct rdma_conn_param, initiator_depth)",
                offset_of!(rdma_conn_param, initiator_depth)
            ),
            f!(
                "offsetof(struct rdma_conn_param, retry_count)",
                offset_of!(rdma_conn_param, retry_count)
            ),
            f!(
                "offsetof(struct rdma_conn_param, rnr_retry_count)",
                offset_of!(rdma_conn_param, rnr_retry_count)
            ),
            f!(
                "offsetof(struct rdma_conn_param, qp_num)",
                offset_of!(rdma_conn_param, qp_num)
            ),
            f!(
                "sizeof(struct rdma_conn_param)",
                size_of::<rdma_conn_param>()
            ),
            f!(
                "offsetof(struct rdma_cm_event, event)",
                offset_of!(rdma_cm_event, event)
            ),
            f!(
                "offsetof(struct rdma_cm_event, status)",
                offset_of!(rdma_cm_event, status)
            ),
            f!(
                "offsetof(struct rdma_cm_event, param.conn)",
                offset_of!(rdma_cm_event, conn)
            ),
            f!("sizeof(struct rdma_cm_event)", size_of::<rdma_cm_event>()),
            f!("IBV_ACCESS_LOCAL_WRITE", IBV_ACCESS_LOCAL_WRITE),
            f!("IBV_ACCESS_REMOTE_WRITE", IBV_ACCESS_REMOTE_WRITE),
            f!("IBV_ACCESS_REMOTE_READ", IBV_ACCESS_REMOTE_READ),
            f!("IBV_WR_RDMA_WRITE", IBV_WR_RDMA_WRITE),
            f!("IBV_WR_SEND", IBV_WR_SEND),
            f!("IBV_WR_RDMA_READ", IBV_WR_RDMA_READ),
            f!("IBV_SEND_SIGNALED", IBV_SEND_SIGNALED),
            f!("IBV_QPT_RC", IBV_QPT_RC),
            f!("IBV_WC_SUCCESS", IBV_WC_SUCCESS),
            f!("RDMA_PS_TCP", RDMA_PS_TCP),
            f!("RDMA_CM_EVENT_ADDR_RESOLVED", RDMA_CM_EVENT_ADDR_RESOLVED),
            f!("RDMA_CM_EVENT_ADDR_ERROR", RDMA_CM_EVENT_ADDR_ERROR),
            f!("RDMA_CM_EVENT_ROUTE_RESOLVED", RDMA_CM_EVENT_ROUTE_RESOLVED),
            f!("RDMA_CM_EVENT_ROUTE_ERROR", RDMA_CM_EVENT_ROUTE_ERROR),
            f!(
                "RDMA_CM_EVENT_CONNECT_REQUEST",
                RDMA_CM_EVENT_CONNECT_REQUEST
            ),
            f!(
                "RDMA_CM_EVENT_CONNECT_RESPONSE",
                RDMA_CM_EVENT_CONNECT_RESPONSE
            ),
            f!("RDMA_CM_EVENT_CONNECT_ERROR", RDMA_CM_EVENT_CONNECT_ERROR),
            f!("RDMA_CM_EVENT_UNREACHABLE", RDMA_CM_EVENT_UNREACHABLE),
            f!("RDMA_CM_EVENT_REJECTED", RDMA_CM_EVENT_REJECTED),
            f!("RDMA_CM_EVENT_ESTABLISHED", RDMA_CM_EVENT_ESTABLISHED),
            f!("RDMA_CM_EVENT_DISCONNECTED", RDMA_CM_EVENT_DISCONNECTED),
            f!("RDMA_CM_EVENT_DEVICE_REMOVAL", RDMA_CM_EVENT_DEVICE_REMOVAL),
            f!("RDMA_CM_EVENT_TIMEWAIT_EXIT", RDMA_CM_EVENT_TIMEWAIT_EXIT),
        ]
    }

    /// Compiles a program against the installed rdma-core headers and
    /// compares every fact.
    #[test]
    fn matches_the_installed_rdma_core_headers() {
        let facts = facts();
        let mut c = String::from(
            "#include <stdio.h>\n#include <stddef.h>\n#include <rdma/rdma_cma.h>\n\
             int main(void) {\n",
        );
        for (expr, _) in &facts {
            c.push_str(&format!(
                "printf(\"%llu\\n\", (unsigned long long)({expr}));\n"
            ));
        }
        c.push_str("return 0;\n}\n");
        let dir = std::env::temp_dir().join(format!("peerdma-rdma-layout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("layout.c");
        let exe = dir.join("layout");
        std::fs::write(&src, c).unwrap();
        let out = Command::new("cc")
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .output()
            .expect("cc runs (install build-essential)");
        assert!(
            out.status.success(),
            "the layout program did not compile (install libibverbs-dev and librdmacm-dev): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(&exe).output().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let text = String::from_utf8(out.stdout).unwrap();
        let values: Vec<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(values.len(), facts.len());
        let wrong: Vec<String> = facts
            .iter()
            .zip(&values)
            .filter(|((_, r), c)| r != *c)
            .map(|((e, r), c)| format!("{e}: C {c}, Rust {r}"))
            .collect();
        assert!(wrong.is_empty(), "layout differs:\n{}", wrong.join("\n"));
    }
}
