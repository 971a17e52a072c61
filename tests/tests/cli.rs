//! The `peerdma` command in the testbed: list, regions, export (--hold) + inspect from a
//! second process, path, and its errors.

mod common;

use common::*;
use peerdma_testbed::devices::Topology;
use peerdma_testbed::kernel::KernelChoice;

#[test]
fn peerdma_lists_exports_and_inspects_on_the_reference_kernel() {
    // nvme0 (00:13.0) for the sysfs reset: the others have no reset method on the root bus.
    let tb = testbed_with(
        KernelChoice::Reference,
        "ivshmem,ivshmem,edu,nvme",
        Topology::Root,
        true,
    );
    let p = workspace_bin("peerdma").display().to_string();
    let script = format!(
        "set -e
         {p} list --json
         {p} regions 00:10.0 --json
         {p} regions 00:12.0 --access group --json
         {p} export 00:10.0 --bar 2 --range 0:2M --range 0x400000:64K --range 8M:4K --json
         {p} path 00:10.0 00:11.0 --json
         {p} export 00:11.0 --bar 2 --range 0:1M --hold --json > /run/tmp/hold.json 2>/run/tmp/hold.err &
         holder=$!
         for i in $(seq 100); do grep -q path /run/tmp/hold.json 2>/dev/null && break; sleep 0.1; done
         cat /run/tmp/hold.json
         held=\"$(sed 's/.*\"path\":\"\\([^\"]*\\)\".*/\\1/' /run/tmp/hold.json)\"
         {p} inspect \"$held\" --json
         cfg=/sys/bus/pci/devices/0000:00:11.0/config
         dd if=$cfg of=/run/tmp/cmd bs=1 skip=4 count=2 2>/dev/null
         printf '\\000\\000' | dd of=$cfg bs=1 seek=4 count=2 conv=notrunc 2>/dev/null
         sleep 1
         {p} inspect \"$held\" --json
         dd if=/run/tmp/cmd of=$cfg bs=1 seek=4 count=2 conv=notrunc 2>/dev/null
         sleep 1
         kill -TERM $holder; wait $holder; echo \"## holder rc=$?\"
         tail -n +2 /run/tmp/hold.json
         cat /run/tmp/hold.err
         if {p} export 00:10.0 --bar 2 --range 0:5K; then exit 9; fi
         if {p} regions 00:1f.2; then exit 9; fi
         {p} export 00:13.0 --bar 0 --range 0:4K --hold --json > /run/tmp/hold2.json 2>/run/tmp/hold2.err &
         holder=$!
         for i in $(seq 100); do grep -q path /run/tmp/hold2.json 2>/dev/null && break; sleep 0.1; done
         echo \"## reset method $(cat /sys/bus/pci/devices/0000:00:13.0/reset_method)\"
         echo 1 > /sys/bus/pci/devices/0000:00:13.0/reset
         sleep 0.5
         kill -TERM $holder; wait $holder; echo \"## reset holder rc=$?\"
         tail -n +2 /run/tmp/hold2.json
         cat /run/tmp/hold2.err"
    );
    let out = run_sh(&tb, &script);
    let j = json_lines(&out.output);
    assert!(j.len() >= 10, "{}", out.output);

    let devices = j[0]["devices"].as_array().unwrap();
    let ivshmem = devices.iter().find(|d| d["bdf"] == "0000:00:10.0").unwrap();
    assert_eq!(ivshmem["vendor"], "1af4");
    assert_eq!(ivshmem["driver"], "vfio-pci");
    assert_eq!(ivshmem["vfio"], "bound");
    let bar2 = ivshmem["bars"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["index"] == 2)
        .unwrap();
    assert_eq!(bar2["size"], 64u64 << 20);
    assert_eq!(bar2["prefetchable"], true);
    assert_eq!(bar2["64bit"], true);
    let ahci = devices.iter().find(|d| d["bdf"] == "0000:00:1f.2").unwrap();
    assert_eq!(ahci["vfio"], "bindable");

    assert_eq!(j[1]["opened_via"], "Cdev");
    assert_eq!(j[1]["dma_buf_export"], "Supported");
    let regions = j[1]["regions"].as_array().unwrap();
    let r2 = regions.iter().find(|r| r["index"] == 2).unwrap();
    assert_eq!(r2["size"], 64u64 << 20);
    assert_eq!(r2["mmap"], true);
    assert_eq!(
        r2["offset"],
        2u64 << 40,
        "vfio-pci region offsets are index << 40"
    );
    assert_eq!(j[2]["opened_via"], "Group");

    assert_eq!(
        j[3]["size"],
        (2u64 << 20) + (64 << 10) + 4096,
        "size is the sum of the ranges"
    );
    assert_eq!(j[3]["exporter"], "vfio_pci_core");
    assert_eq!(j[3]["cloexec"], true);
    assert_eq!(j[3]["state"], "live");

    assert_eq!(
        j[4]["drm_rdma_import"], "refused",
        "QEMU's host bridge is on no allow-list"
    );

    // The held buffer, seen from another process through /proc/PID/fd/N.
    assert_eq!(j[5]["size"], 1u64 << 20);
    assert_eq!(j[6]["exporter"], "vfio_pci_core");
    assert_eq!(j[6]["size"], 1u64 << 20);
    assert_eq!(j[6]["inode"], j[5]["inode"]);
    // The kernel's own view of the buffers: live (the multi-range one too: iommufd's
    // refusal of more than one range comes after the kernel's revoke check).
    assert_eq!(j[3]["kernel_state"], "live", "{}", j[3]);
    assert_eq!(j[5]["kernel_state"], "live", "{}", j[5]);
    assert_eq!(j[6]["kernel_state"], "live", "{}", j[6]);
    // Another process turned decode off through sysfs: the device stops decoding, but
    // the kernel does not revoke the buffer (only VFIO's own paths do). inspect still
    // says live, and the holder names the difference.
    assert_eq!(j[7]["kernel_state"], "live", "{}", j[7]);
    let events = &j[8..];
    let off = events
        .iter()
        .position(|e| {
            e["state"]
                .as_str()
                .is_some_and(|s| s.starts_with("revoked"))
                && e["kernel_state"] == "live"
                && e["note"]
                    .as_str()
                    .is_some_and(|n| n.contains("outside VFIO"))
        })
        .unwrap_or_else(|| panic!("the holder did not report decode off: {events:?}"));
    assert!(
        events[off..]
            .iter()
            .any(|e| e["state"] == "live" && e["kernel_state"] == "live"),
        "the holder did not report decode back on: {events:?}"
    );
    assert!(out.output.contains("## holder rc=0"), "{}", out.output);
    assert!(
        out.output.contains("releasing the buffer"),
        "{}",
        out.output
    );

    assert!(
        out.output.contains("not page aligned") && out.output.contains("EINVAL"),
        "{}",
        out.output
    );
    assert!(out.output.contains("not to vfio-pci"), "{}", out.output);

    // A reset through sysfs (nvme0 resets by FLR) under a held buffer: the kernel neither
    // revokes it nor lets config reads through until the reset is over, so the registers
    // look the same before and after; the holder names the read that the reset held up.
    assert!(out.output.contains("## reset method flr"), "{}", out.output);
    assert!(
        out.output.contains("## reset holder rc=0"),
        "{}",
        out.output
    );
    let blocked = j
        .iter()
        .find(|e| e["event"] == "config_blocked")
        .unwrap_or_else(|| panic!("the holder did not see the sysfs reset:\n{}", out.output));
    let ms = blocked["milliseconds"].as_f64().unwrap();
    // pcie_flr sleeps 100 ms with config access locked.
    assert!(
        ms >= 100.0,
        "an FLR blocks config reads for 100 ms at least: {blocked}"
    );
    assert!(
        blocked["note"].as_str().unwrap().contains("not revoked"),
        "{blocked}"
    );
    assert_eq!(
        j.iter().filter(|e| e["event"] == "config_blocked").count(),
        1,
        "only the reset held a read up (not the sysfs decode-off): {}",
        out.output
    );
    eprintln!("sysfs FLR under a held buffer: a register read waited {ms} ms");
}
