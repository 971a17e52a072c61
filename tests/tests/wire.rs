//! Two VMs joined by a wire (`peerdma_testbed::pair`): kernel-socket UDP across it in
//! both directions (virtio-net and e1000e), seen by the receiver and in the wire's pcap;
//! and a failing VM taking its peer down with it. (igb on both ends: the nic suite.)

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use common::*;
use peerdma_testbed::kernel::KernelChoice;
use peerdma_testbed::pair::{datagram_payload, Pair, PairOutcome, WireOptions};
use peerdma_testbed::vm::VmOptions;

/// The UDP port of the suite's datagrams (docs/nic.md's default).
const PORT: u16 = 18521;

fn vm(devices: &str) -> VmOptions {
    VmOptions {
        devices: devices.parse().expect("device list"),
        ..options(KernelChoice::Reference)
    }
}

fn udp() -> String {
    workspace_bin("peerdma-guest-udp").display().to_string()
}

/// The IPv4 address (without prefix) of the first kernel NIC in a run's manifest.
fn kernel_nic_ip(out: &peerdma_testbed::vm::RunOutcome) -> (String, Ipv4Addr) {
    let d = out
        .manifest
        .devices
        .iter()
        .find(|d| d.extras.ipv4.is_some())
        .expect("a kernel NIC in the manifest");
    let ip = d.extras.ipv4.as_deref().unwrap();
    let addr = ip.split('/').next().unwrap().parse().unwrap();
    (d.extras.mac.clone().unwrap(), addr)
}

fn mac_bytes(mac: &str) -> [u8; 6] {
    let v: Vec<u8> = mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

/// Runs `count` datagrams of `size` bytes from VM `from` (its kernel NIC at
/// 10.77.0.<from+1>) to VM 1 - `from`, with a capture; with `mtu`, both VMs' NIC
/// (their only one: eth0) get that MTU first.
fn send_across(
    a: &str,
    b: &str,
    from: usize,
    count: u64,
    size: usize,
    mtu: Option<u32>,
) -> PairOutcome {
    let pair = pair(a, b, true);
    let to = 1 - from;
    let send = [
        udp(),
        "send".into(),
        format!("10.77.0.{}", from + 1),
        format!("10.77.0.{}:{PORT}", to + 1),
        count.to_string(),
        size.to_string(),
    ];
    let recv = [
        udp(),
        "recv".into(),
        format!("10.77.0.{}:{PORT}", to + 1),
        count.to_string(),
        size.to_string(),
        "120".into(),
    ];
    let wrap = |argv: &[String]| -> Vec<String> {
        match mtu {
            None => argv.to_vec(),
            Some(m) => vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("ip link set eth0 mtu {m} && {}", argv.join(" ")),
            ],
        }
    };
    let (send, recv) = (wrap(&send), wrap(&recv));
    let (argv_a, argv_b) = if from == 0 {
        (&send, &recv)
    } else {
        (&recv, &send)
    };
    let out = pair.run(argv_a, argv_b).expect("both VMs run");
    for (i, o) in [&out.a, &out.b].into_iter().enumerate() {
        assert_eq!(o.status, 0, "VM {i} failed:\n{}", o.output);
    }
    out
}

/// Checks that the capture holds exactly the `count` data datagrams from VM `from` to
/// the other, in order, with consecutive IPv4 idents (a connected socket's), DF set
/// and the two NICs' MACs; returns the receiver's JSON line.
fn check_capture(out: &PairOutcome, from: usize, count: u64, size: usize) -> serde_json::Value {
    let (src, dst) = if from == 0 {
        (&out.a, &out.b)
    } else {
        (&out.b, &out.a)
    };
    let (src_mac, src_ip) = kernel_nic_ip(src);
    let (dst_mac, dst_ip) = kernel_nic_ip(dst);
    assert_eq!(src_ip, Ipv4Addr::new(10, 77, 0, from as u8 + 1));
    let cap = peerdma_testbed::pcap::read(out.pcap.as_ref().expect("a capture")).unwrap();
    let data: Vec<_> = cap
        .udp_datagrams()
        .into_iter()
        .filter(|d| d.dst == SocketAddrV4::new(dst_ip, PORT) && d.payload.len() == size)
        .collect();
    assert_eq!(data.len() as u64, count, "data datagrams in the capture");
    for (k, d) in data.iter().enumerate() {
        assert_eq!(d.payload, datagram_payload(k as u64, size), "datagram {k}");
        assert_eq!(*d.src.ip(), src_ip);
        assert_eq!(
            (d.src_mac, d.dst_mac),
            (mac_bytes(&src_mac), mac_bytes(&dst_mac))
        );
        assert!(d.dont_fragment && d.ttl == 64, "datagram {k}: {d:?}");
        if k > 0 {
            // docs/nic.md's sequence: a connected socket numbers its datagrams one by one.
            assert_eq!(
                d.ident,
                data[k - 1].ident.wrapping_add(1),
                "ident of datagram {k}"
            );
        }
    }
    let lines = json_lines(&dst.output);
    let r = lines.last().expect("the receiver's JSON line").clone();
    assert_eq!(r["received"], count, "{r}");
    assert_eq!(r["bad"], 0, "{r}");
    r
}

#[test]
fn virtio_net_datagrams_from_vm0_arrive_in_vm1_and_on_the_wire_capture() {
    let out = send_across("virtio-net", "virtio-net", 0, 64, 1472, None);
    let r = check_capture(&out, 0, 64, 1472);
    assert_eq!(
        r["from"].as_str().unwrap().split(':').next(),
        Some("10.77.0.1")
    );
    for (i, o) in [&out.a, &out.b].into_iter().enumerate() {
        let d = o.manifest.device("virtio-net0").unwrap();
        assert_eq!(
            d.extras.mac.as_deref(),
            Some(&*format!("52:54:00:77:0{i}:00"))
        );
        assert_eq!(
            d.extras.ipv4.as_deref(),
            Some(&*format!("10.77.0.{}/24", i + 1))
        );
        assert!(d
            .extras
            .interface
            .as_deref()
            .is_some_and(|n| n.starts_with("eth")));
        assert_eq!(d.driver.as_deref(), Some("virtio-pci"));
    }
}

#[test]
fn e1000e_sends_the_other_way_and_a_burst_of_4000_full_size_datagrams_arrives_whole() {
    let out = send_across("virtio-net", "e1000e", 1, 4000, 1472, None);
    let r = check_capture(&out, 1, 4000, 1472);
    assert_eq!(r["udp_rcvbuf_errors"], 0, "{r}");
    assert_eq!(
        out.b.manifest.device("e1000e0").unwrap().driver.as_deref(),
        Some("e1000e")
    );
}

#[test]
fn jumbo_datagrams_of_8972_bytes_cross_the_wire_unfragmented_at_mtu_9000() {
    let out = send_across("virtio-net", "e1000e", 0, 200, 8972, Some(9000));
    // check_capture counts only unfragmented datagrams of the full size.
    check_capture(&out, 0, 200, 8972);
}

/// Processes whose command line holds `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(needle).then_some(cmd)
        })
        .collect()
}

#[test]
fn a_timed_out_vm_stops_its_peer_at_once_and_no_qemu_is_left() {
    let dir = std::env::temp_dir().join(format!("peerdma-wire-timeout-{}", std::process::id()));
    let pair = Pair::new(
        VmOptions {
            timeout: Duration::from_secs(25),
            ..vm("virtio-net")
        },
        vm("virtio-net"),
        WireOptions {
            pcap: false,
            dir: Some(dir.clone()),
        },
    )
    .expect("the pair resolves");
    let start = Instant::now();
    let e = pair
        .run(&["sleep", "600"], &["sleep", "600"])
        .expect_err("VM 0 times out");
    let took = start.elapsed();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("VM 0: the guest did not finish within 25 s"),
        "{msg}"
    );
    assert!(msg.contains("VM 1: stopped: VM 0 failed"), "{msg}");
    assert!(took < Duration::from_secs(60), "took {took:?}");
    let left = processes_with(&dir.display().to_string());
    assert!(left.is_empty(), "processes left: {left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_command_that_fails_stops_a_waiting_peer_after_the_grace() {
    let pair = pair("e1000e", "virtio-net", false);
    let start = Instant::now();
    let e = pair
        .run(&["sh", "-c", "exit 3"], &["sleep", "600"])
        .expect_err("VM 1 is stopped");
    let msg = format!("{e:#}");
    assert!(
        msg.contains("VM 0: the command exited with status 3"),
        "{msg}"
    );
    assert!(
        msg.contains("VM 1: stopped: VM 0's command exited with status 3 10 s earlier"),
        "{msg}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(90),
        "{:?}",
        start.elapsed()
    );
}
