//! A NIC stream from the command line, for trying the `nic` module by hand in the
//! testbed (two VMs joined by a wire); built with the feature `testing` for its revoke
//! hook. `p2pcopy` is the real command line.
//!
//! ```text
//! nic_stream serve [--nic BDF|auto] [--bar BDF|auto] [--wait SECS] [--mtu M] LISTEN
//! nic_stream send  [--nic BDF|auto] [--bar BDF|auto] [--bind ADDR] [--size BYTES]
//!                  [--payload P] [--seed N] [--mtu M (P = M − 28)] PEER
//! either role: [--test-revoke-after N] (the BAR's decode off after datagram N)
//! ```
//!
//! `auto` picks the first vfio-pci function with the ids: igb 8086:10c9 for `--nic`,
//! ivshmem 1af4:1110 for `--bar` (BAR2). Prints the report as JSON; on failure the
//! error's kind and message, exit status 1.

use std::time::Duration;

use peerdma_copy::nic::{self, LocalSpec, SendRequest, ServeRequest};
use peerdma_copy::EndpointSpec;
use peerdma_host::Bdf;

fn find(vendor: &str, device: &str) -> Option<Bdf> {
    let mut found: Vec<String> = std::fs::read_dir("/sys/bus/pci/devices")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
            let driver = std::fs::read_link(p.join("driver")).ok()?;
            (read("vendor").trim() == vendor
                && read("device").trim() == device
                && driver.ends_with("vfio-pci"))
            .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    found.sort();
    found.first()?.parse().ok()
}

fn bdf(arg: &str, vendor: &str, device: &str) -> Bdf {
    if arg == "auto" {
        find(vendor, device).unwrap_or_else(|| die(&format!("no {vendor}:{device} on vfio-pci")))
    } else {
        arg.parse()
            .unwrap_or_else(|_| die(&format!("{arg:?} is no BDF")))
    }
}

fn die(msg: &str) -> ! {
    eprintln!("nic_stream: {msg}");
    std::process::exit(2)
}

/// Sets a test hook (`--test-revoke-after N`; the example needs the feature `testing`).
fn hook(field: &mut Option<u64>, value: Option<u64>) {
    *field = value;
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(role) = args.first().cloned() else {
        die("usage: nic_stream serve|send [options] ADDR")
    };
    let mut nic_dev = None;
    let mut bar = None;
    let mut bind = None;
    let mut size = None;
    let mut payload = None;
    let mut seed = 0x5eed_u64;
    let mut wait = 120;
    let mut revoke_after: Option<u64> = None;
    let mut mtu = None;
    let mut addr = None;
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .unwrap_or_else(|| die(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--nic" => nic_dev = Some(bdf(&val(), "0x8086", "0x10c9")),
            "--bar" => bar = Some(bdf(&val(), "0x1af4", "0x1110")),
            "--bind" => {
                bind = Some(nic::parse_addr(&val()).unwrap_or_else(|e| die(&e.to_string())))
            }
            "--size" => size = Some(val().parse().unwrap_or_else(|_| die("--size BYTES"))),
            "--payload" => payload = Some(val().parse().unwrap_or_else(|_| die("--payload P"))),
            "--mtu" => mtu = Some(val().parse().unwrap_or_else(|_| die("--mtu BYTES"))),
            "--seed" => seed = val().parse().unwrap_or_else(|_| die("--seed N")),
            "--wait" => wait = val().parse().unwrap_or_else(|_| die("--wait SECS")),
            "--test-revoke-after" => {
                revoke_after = Some(
                    val()
                        .parse()
                        .unwrap_or_else(|_| die("--test-revoke-after N")),
                )
            }
            other => addr = Some(nic::parse_addr(other).unwrap_or_else(|e| die(&e.to_string()))),
        }
    }
    let addr = addr.unwrap_or_else(|| die("no address"));
    let local = match bar {
        Some(b) => LocalSpec::Bar(EndpointSpec {
            bdf: b,
            bar: Some(2),
            offset: 0,
        }),
        None => LocalSpec::Host,
    };
    let result = match role.as_str() {
        "serve" => {
            let mut req = ServeRequest::new(local, addr);
            req.nic = nic_dev;
            req.wait = Some(Duration::from_secs(wait));
            req.mtu = mtu.unwrap_or(req.mtu);
            hook(&mut req.test_revoke_after, revoke_after);
            nic::serve(&req, &mut |a| eprintln!("nic_stream: listening on {a}"))
        }
        "send" => {
            let mut req = SendRequest::new(local, addr, seed);
            req.nic = nic_dev;
            req.bind = bind;
            req.size = size;
            if let Some(p) = payload {
                req.payload = p;
            }
            req.timeout = Duration::from_secs(wait);
            if let Some(m) = mtu {
                req.mtu = m;
                req.payload = nic::plan::max_payload(m);
            }
            hook(&mut req.test_revoke_after, revoke_after);
            nic::send(&req, &mut |_, _| {})
        }
        _ => die("the role is serve or send"),
    };
    match result {
        Ok(report) => println!("{}", serde_json::to_string_pretty(&report).expect("json")),
        Err(e) => {
            println!("nic_stream: failed ({}): {e}", e.kind());
            std::process::exit(1)
        }
    }
}
