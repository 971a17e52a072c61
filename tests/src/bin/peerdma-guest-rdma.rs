//! Guest side of the `rdma` suite: the library's RDMA paths between two network
//! namespaces joined by veth, one rxe device on each end. Each mode prints one JSON
//! line (`{"error": ...}` with the error's text when it fails) and exits 0 when its
//! outcome is the expected one (an explained failure counts for the negative modes).
//!
//! Usage (in the testbed, each side in its namespace):
//! - `sink ADDR SIZE QPS [SEED]`: accept QPS connections, expose SIZE bytes of host
//!   memory (filled with SEED's pattern when given), print `{"accepted": ...}`, wait
//!   until the peer disconnects;
//! - `write ADDR SIZE MSG DEPTH ROUNDS QPS`: RDMA WRITE SIZE bytes ROUNDS times over QPS
//!   QPs, MSG bytes per WRITE, DEPTH WRITEs in flight per QP;
//! - `read ADDR SIZE MSG DEPTH SEED`: RDMA READ SIZE bytes (READ depth DEPTH ≤ 16) and
//!   check them against SEED's pattern;
//! - `bad ADDR rkey|oob`: one WRITE with a wrong rkey / past the peer's MR: the error
//!   completion's status;
//! - `dmabuf ADDR udmabuf|ROLE`: `ibv_reg_dmabuf_mr` of a udmabuf or of the BAR2
//!   dma-buf of the device with role ROLE: the explained refusal, fds before and after;
//! - `leak-serve ADDR N`: p2pcopy's receiver (host memory) N times in this process, the
//!   open fds and mappings after each session;
//! - `leak-send OK REFUSED UNREACHABLE`: p2pcopy's sender to OK twice, then to a port
//!   nobody listens on and to an address nobody has, the fds and mappings after each.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use peerdma_exporter::{Device, DmaRange, OpenOptions, Udmabuf};
use std::sync::Arc;

use peerdma_importer::rdma::{
    stream, Access, Listener, ProtectionDomain, QpOptions, QueuePair, RdmaError, RemoteMr,
    Resolved, Span, StreamOptions, DEFAULT_TIMEOUT,
};
use peerdma_testbed::manifest::Manifest;
use peerdma_testbed::pattern;
use serde_json::json;

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    let s = args.get(i).with_context(|| format!("missing {what}"))?;
    s.parse()
        .map_err(|e| anyhow::anyhow!("bad {what} {s:?}: {e}"))
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Accepts one peer, exposes a host MR, waits for its disconnect.
fn sink(args: &[String]) -> Result<serde_json::Value> {
    let addr: SocketAddr = arg(args, 1, "ADDR")?;
    let size: u64 = arg(args, 2, "SIZE")?;
    let qps_n: usize = arg(args, 3, "QPS")?;
    let seed: Option<u64> = args.get(4).map(|s| s.parse()).transpose()?;
    let listener = Listener::bind(addr)?;
    // The test scripts start the peer once this line is out, instead of sleeping.
    println!("{}", json!({ "listening": addr.to_string() }));
    std::io::Write::flush(&mut std::io::stdout())?;
    let req = listener.next_request(Some(Duration::from_secs(120)))?;
    let pd = req.alloc_pd()?;
    let mut mr = pd.register_host(size as usize, Access::ALL)?;
    if let Some(seed) = seed {
        pattern::fill(seed, 0, mr.host_bytes_mut().expect("host MR"));
    }
    let opts = QpOptions::default();
    let data = mr.remote().to_bytes();
    let mut qps = vec![req.accept(&pd, &opts, &data, DEFAULT_TIMEOUT)?];
    while qps.len() < qps_n {
        let req = listener.next_request(Some(Duration::from_secs(60)))?;
        qps.push(req.accept(&pd, &opts, &data, DEFAULT_TIMEOUT)?);
    }
    println!(
        "{}",
        json!({ "accepted": qps[0].peer(), "qps": qps.len(), "device": pd.device() })
    );
    use std::io::Write as _;
    std::io::stdout().flush()?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(600) {
        if let Err(e) = qps[0].check_peer(Duration::from_millis(100)) {
            return Ok(json!({ "sink": "peer disconnected", "why": e.to_string() }));
        }
    }
    bail!("the peer never disconnected")
}

type Connected = (Arc<ProtectionDomain>, Vec<QueuePair>, RemoteMr);

/// Connects `n` QPs to a sink (one PD, the device RDMA CM picks for `addr`).
fn connect_n(addr: SocketAddr, opts: &QpOptions, n: usize) -> Result<Connected> {
    let first = Resolved::resolve(addr, DEFAULT_TIMEOUT)?;
    let pd = first.alloc_pd()?;
    let mut qps = Vec::new();
    let mut remote = None;
    let mut next = Some(first);
    for _ in 0..n.max(1) {
        let r = match next.take() {
            Some(r) => r,
            None => Resolved::resolve(addr, DEFAULT_TIMEOUT)?,
        };
        let (qp, data) = r.connect(&pd, opts, b"guest-rdma", DEFAULT_TIMEOUT)?;
        remote = Some(RemoteMr::from_bytes(&data).context("the sink's MR")?);
        qps.push(qp);
    }
    Ok((pd, qps, remote.expect("one QP at least")))
}

fn connect(
    addr: SocketAddr,
    opts: &QpOptions,
) -> Result<(Arc<ProtectionDomain>, QueuePair, RemoteMr)> {
    let (pd, mut qps, remote) = connect_n(addr, opts, 1)?;
    Ok((pd, qps.remove(0), remote))
}

fn write(args: &[String]) -> Result<serde_json::Value> {
    let addr: SocketAddr = arg(args, 1, "ADDR")?;
    let size: u64 = arg(args, 2, "SIZE")?;
    let msg: u32 = arg(args, 3, "MSG")?;
    let depth: u32 = arg(args, 4, "DEPTH")?;
    let rounds: u32 = arg(args, 5, "ROUNDS")?;
    let n: usize = arg(args, 6, "QPS")?;
    let opts = QpOptions {
        depth,
        ..QpOptions::default()
    };
    let (pd, mut qps, remote) = connect_n(addr, &opts, n)?;
    let mr = pd.register_host(size as usize, Access::LOCAL_READ)?;
    let start = Instant::now();
    for round in 1..=rounds {
        stream::write(
            &mut qps,
            Span {
                local: &mr,
                local_off: 0,
                remote,
                remote_off: 0,
                len: size,
            },
            StreamOptions {
                msg_size: msg,
                stall: Duration::from_secs(60),
                ..StreamOptions::default()
            },
            &mut |_| {},
        )?;
        if round == 1 {
            // A test that acts mid-stream waits for this line.
            println!("{}", json!({ "round": round, "of": rounds }));
            std::io::Write::flush(&mut std::io::stdout())?;
        }
    }
    let s = start.elapsed().as_secs_f64();
    let bytes = size * u64::from(rounds);
    Ok(json!({
        "bytes": bytes, "seconds": s, "gbps": bytes as f64 / s / 1e9, "device": pd.device(),
        "qps": qps.len(), "msg": msg, "depth": depth,
    }))
}

fn read(args: &[String]) -> Result<serde_json::Value> {
    let addr: SocketAddr = arg(args, 1, "ADDR")?;
    let size: u64 = arg(args, 2, "SIZE")?;
    let msg: u32 = arg(args, 3, "MSG")?;
    let depth: u32 = arg(args, 4, "DEPTH")?;
    let seed: u64 = arg(args, 5, "SEED")?;
    let read_depth = u8::try_from(depth.min(16))?;
    let opts = QpOptions {
        depth: depth.min(16),
        read_depth,
        ..QpOptions::default()
    };
    let (pd, qp, remote) = connect(addr, &opts)?;
    let mr = pd.register_host(size as usize, Access::ALL)?;
    let mut qps = vec![qp];
    let start = Instant::now();
    stream::read(
        &mut qps,
        Span {
            local: &mr,
            local_off: 0,
            remote,
            remote_off: 0,
            len: size,
        },
        StreamOptions {
            msg_size: msg,
            stall: Duration::from_secs(60),
            ..StreamOptions::default()
        },
        &mut |_| {},
    )?;
    let s = start.elapsed().as_secs_f64();
    let bad = pattern::first_mismatch(seed, 0, mr.host_bytes().expect("host MR"));
    Ok(json!({
        "bytes": size, "seconds": s, "gbps": size as f64 / s / 1e9,
        "read_depth": read_depth, "verified": bad.is_none(), "mismatch": bad.map(|b| b.0),
    }))
}

fn bad(args: &[String]) -> Result<serde_json::Value> {
    let addr: SocketAddr = arg(args, 1, "ADDR")?;
    let kind: String = arg(args, 2, "rkey|oob")?;
    let (pd, mut qp, remote) = connect(addr, &QpOptions::default())?;
    let mr = pd.register_host(8192, Access::LOCAL_READ)?;
    let (target, off) = match kind.as_str() {
        "rkey" => (
            RemoteMr {
                rkey: remote.rkey ^ 0x5a5a_0000,
                ..remote
            },
            0,
        ),
        "oob" => (remote, remote.len),
        k => bail!("unknown kind {k}"),
    };
    qp.post_write_unchecked(&mr, 0, &target, off, 4096, 1)?;
    let start = Instant::now();
    let mut comps = Vec::new();
    loop {
        match qp.poll(&mut comps) {
            Err(e @ RdmaError::Completion { .. }) => {
                let RdmaError::Completion { status, .. } = &e else {
                    unreachable!()
                };
                return Ok(json!({ "status": status.name(), "error": e.to_string() }));
            }
            Err(e) => return Err(e.into()),
            Ok(_) if !comps.is_empty() => bail!("the bad WRITE completed successfully"),
            Ok(_) if start.elapsed() > Duration::from_secs(60) => bail!("no completion in 60 s"),
            Ok(_) => {}
        }
    }
}

fn dmabuf(args: &[String]) -> Result<serde_json::Value> {
    let addr: SocketAddr = arg(args, 1, "ADDR")?;
    let what: String = arg(args, 2, "udmabuf|ROLE")?;
    // librdmacm opens every RDMA device once per process and keeps it: warm that up
    // first so that the count compares like with like.
    drop(Listener::bind(addr)?.alloc_pd()?);
    let before = fds();
    let result = {
        let listener = Listener::bind(addr)?;
        let pd = listener.alloc_pd()?;
        let size = 1u64 << 20;
        match what.as_str() {
            "udmabuf" => {
                let buf = Udmabuf::create(size)?;
                pd.register_dmabuf(buf, 0, size, 0, Access::ALL).map(|_| ())
            }
            role => {
                let manifest = Manifest::load_in_guest()?;
                let dev = manifest
                    .device(role)
                    .with_context(|| format!("no device {role}"))?;
                let device = Device::open_with(dev.bdf.parse()?, OpenOptions::default())?;
                let buf = device.export_dma_buf(2u32, &[DmaRange::new(0, size)])?;
                pd.register_dmabuf(buf, 0, size, 0, Access::ALL).map(|_| ())
            }
        }
    };
    let after = fds();
    match result {
        Ok(()) => bail!("the dma-buf MR was registered (fds {before} -> {after})"),
        Err(e) => Ok(json!({
            "refused": matches!(e, RdmaError::DmabufRefused { .. }),
            "error": e.to_string(), "fds_before": before, "fds_after": after,
        })),
    }
}

/// Open fds and mappings of this process.
fn usage() -> (usize, usize) {
    let maps = std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count());
    (fds(), maps)
}

fn leak_serve(args: &[String]) -> Result<serde_json::Value> {
    use peerdma_copy::rdma::{serve, LocalSpec, ServeRequest};
    let addr: SocketAddr = arg(args, 1, "ADDR")?;
    let n: usize = arg(args, 2, "N")?;
    let mut after = Vec::new();
    for _ in 0..n {
        let req = ServeRequest {
            dst: LocalSpec::Host,
            listen: addr,
            access: peerdma_exporter::AccessPath::Auto,
            wait: Some(Duration::from_secs(120)),
            timeout: Duration::from_secs(60),
            max_host_size: 1 << 30,
        };
        let r = serve(&req, &mut |a| {
            println!("{}", json!({ "listening": a.to_string() }));
            let _ = std::io::Write::flush(&mut std::io::stdout());
        })?;
        anyhow::ensure!(r.verified, "session not verified");
        after.push(usage());
    }
    Ok(json!({ "served": n, "after": after }))
}

/// Waits until `file` has `n` lines that contain `what` (another process's report), or
/// fails after a minute, naming what it waited for.
fn await_lines(file: &std::path::Path, what: &str, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = std::fs::read_to_string(file)
            .map_or(0, |s| s.lines().filter(|l| l.contains(what)).count());
        if seen >= n {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{}: {seen} of {n} lines with {what} after 60 s",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn leak_send(args: &[String]) -> Result<serde_json::Value> {
    use peerdma_copy::rdma::{send, LocalSpec, SendRequest};
    let peers: Vec<SocketAddr> = (1..=3)
        .map(|i| arg(args, i, "ADDR"))
        .collect::<Result<_>>()?;
    let receiver_out: std::path::PathBuf = arg(args, 4, "RECEIVER_OUTPUT")?;
    let req = |peer| SendRequest {
        src: LocalSpec::Host,
        peer,
        size: Some(1 << 20),
        seed: 5,
        qps: 2,
        msg_size: 65536,
        depth: 16,
        access: peerdma_exporter::AccessPath::Auto,
        timeout: Duration::from_secs(30),
    };
    let mut after = Vec::new();
    let mut errors = Vec::new();
    for (i, peer) in [peers[0], peers[0], peers[1], peers[2]]
        .into_iter()
        .enumerate()
    {
        let r = send(&req(peer), &mut |_, _| {});
        match (i, r) {
            (0 | 1, Ok(rep)) => anyhow::ensure!(rep.verified, "send {i} not verified"),
            (0 | 1, Err(e)) => bail!("send {i} to {peer} failed: {e}"),
            (_, Ok(_)) => bail!("send {i} to {peer} succeeded"),
            (_, Err(e)) => errors.push(e.to_string()),
        }
        after.push(usage());
        if i == 0 {
            // The second send goes to the same receiver: once it listens again.
            await_lines(&receiver_out, "\"listening\"", 2)?;
        }
    }
    Ok(json!({ "after": after, "errors": errors }))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("sink") => sink(&args),
        Some("write") => write(&args),
        Some("read") => read(&args),
        Some("bad") => bad(&args),
        Some("dmabuf") => dmabuf(&args),
        Some("leak-serve") => leak_serve(&args),
        Some("leak-send") => leak_send(&args),
        _ => Err(anyhow::anyhow!(
            "usage: peerdma-guest-rdma sink|write|read|bad|dmabuf|leak-serve|leak-send ..."
        )),
    };
    match r {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{}", json!({ "error": format!("{e:#}") }));
            ExitCode::FAILURE
        }
    }
}
