//! DRM import of a vfio-pci BAR, end to end on the reference 7.2 kernel (issue 15).
//!
//! - Refusals, each with the kernel's errno and the library's explanation, nothing
//!   leaked (the process's fds and the buffer's debugfs attachments are as before):
//!   vgem and a virtio-gpu without blob resources (EOPNOTSUPP: they attach statically),
//!   and under the default CPU model (`-cpu max`, AMD family 6) a virtio-gpu *with*
//!   blobs on QEMU's root bus (EINVAL from the P2P distance check, which `peerdma path`
//!   predicted).
//! - The positive path under an AMD Zen model (`-cpu max,family=23`), which Linux 7.2
//!   trusts to route P2P through any host bridge: the host writes colour bars and a
//!   marker into the ivshmem backing file, the guest runs `peerdma show`, and QEMU's
//!   `screendump` matches the image pixel by pixel; the host then changes the image and
//!   the next screendump shows the change with no copy (the display reads the BAR).
//!   Revoke (memory decode off) is reported and the buffer is shown again after it;
//!   atomic and legacy mode setting both put the console's framebuffer back.
//!
//! These machines have no /dev/udmabuf, which QEMU needs for `virtio-gpu-pci,blob=true`:
//! the testbed's udmabuf emulation (`VmOptions::emulate_udmabuf`, an LD_PRELOAD library
//! built at run time) stands in for it, and the run says so. Where /dev/udmabuf exists
//! the real module is used.
//!
//! Run: `cargo build --workspace --bins && cargo test -p peerdma-testbed --test drm --
//! --test-threads=1` (the reference kernel: `PEERDMA_REFERENCE_KERNEL`).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use peerdma_testbed::kernel::KernelChoice;
use peerdma_testbed::vm::{
    host_has_udmabuf, live_ivshmem_backing, RunOutcome, Testbed, VmOptions, GPU_XRES, GPU_YRES,
};
use serde_json::Value;

const W: usize = GPU_XRES as usize;
const H: usize = GPU_YRES as usize;

/// A testbed with `devices`, the udmabuf emulation allowed, and a CPU model.
fn drm_testbed(devices: &str, cpu_model: Option<&str>, scratch: Option<PathBuf>) -> Testbed {
    Testbed::new(VmOptions {
        devices: devices.parse().expect("device list"),
        cpu_model: cpu_model.map(str::to_string),
        emulate_udmabuf: true,
        scratch,
        timeout: Duration::from_secs(420),
        ..options(KernelChoice::Reference)
    })
    .expect("the testbed resolves its kernel and QEMU")
}

/// Shell lines that set IV (the ivshmem function) and GPU (the virtio-gpu function).
const FIND_BDFS: &str = r#"
for d in /sys/bus/pci/devices/*; do
  id="$(cat $d/vendor):$(cat $d/device)"
  [ "$id" = 0x1af4:0x1110 ] && IV=${d##*/}
  [ "$id" = 0x1af4:0x1050 ] && GPU=${d##*/}
done
echo "bdfs: IV=$IV GPU=$GPU"
"#;

fn peerdma() -> String {
    workspace_bin("peerdma").display().to_string()
}

fn guest_drm() -> String {
    workspace_bin("peerdma-guest-drm").display().to_string()
}

/// The JSON line of one guest scenario for one driver.
fn scenario<'a>(lines: &'a [Value], name: &str, driver: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["scenario"] == name && l["driver"] == driver)
        .unwrap_or_else(|| panic!("no {name} line for {driver} in {lines:#?}"))
}

/// Asserts an import was refused with `errno`, nothing left behind.
fn assert_refused(l: &Value, errno: &str) -> String {
    let first = &l["first"];
    assert_eq!(first["outcome"], "refused", "{l}");
    assert!(
        first["errno"]
            .as_str()
            .is_some_and(|e| e.starts_with(errno)),
        "expected {errno}: {l}"
    );
    assert_eq!(l["all_alike"], true, "every round fails alike: {l}");
    assert_eq!(l["fds_before"], l["fds_after"], "fds leaked: {l}");
    assert_eq!(l["attachments_before"], 0, "{l}");
    assert_eq!(l["attachments_after"], 0, "attachment leaked: {l}");
    first["message"].as_str().unwrap_or_default().to_string()
}

#[test]
fn vgem_and_virtio_gpu_without_blobs_refuse_with_eopnotsupp() {
    let tb = drm_testbed("ivshmem,gpu-noblob", None, None);
    let g = guest_drm();
    let p = peerdma();
    let out = run_sh(
        &tb,
        &format!(
            "{FIND_BDFS}
             dmesg | grep -m1 'virtio_gpu\\|features:'
             {g} import ivshmem0 vgem 5; echo '## vgem rc='$?
             {g} import ivshmem0 gpu-noblob0 5; echo '## noblob rc='$?
             {p} show $IV --bar 2 --width 1024 --height 768 --card $GPU --seconds 1; echo '## show rc='$?
             {p} show $IV --bar 2 --width 1024 --height 768 --pitch 4000 2>&1 | sed 's/^/pitch: /'
             {p} show $IV --bar 2 --width 1024 --height 20000 2>&1 | sed 's/^/tall: /'"
        ),
    );
    let lines = json_lines(&out.output);
    assert_eq!(marked_rc(&out.output, "vgem"), 0, "{}", out.output);
    assert_eq!(marked_rc(&out.output, "noblob"), 0, "{}", out.output);

    let vgem = scenario(&lines, "import", "vgem");
    assert_eq!(vgem["gpu"], Value::Null, "vgem is no PCI device: {vgem}");
    assert_eq!(
        vgem["prime_import"], true,
        "vgem imports dma-bufs in general: {vgem}"
    );
    let msg = assert_refused(vgem, "EOPNOTSUPP");
    assert!(
        msg.contains("(vgem)") && msg.contains("statically") && msg.contains("amdgpu, xe"),
        "{msg}"
    );

    let noblob = scenario(&lines, "import", "virtio_gpu");
    let msg = assert_refused(noblob, "EOPNOTSUPP");
    assert!(
        msg.contains("virtio_gpu") && msg.contains("blob") && msg.contains("amdgpu, xe"),
        "{msg}"
    );

    // The tool says the same and fails.
    assert_ne!(marked_rc(&out.output, "show"), 0, "{}", out.output);
    assert!(
        out.output.contains("peerdma: error:") && out.output.contains("EOPNOTSUPP"),
        "{}",
        out.output
    );
    // Layouts that cannot work are refused with their numbers before any export.
    let said = |prefix: &str| -> String {
        out.output
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let pitch = said("pitch: ");
    assert!(
        pitch.contains("pitch 4000")
            && pitch.contains("shorter than one row")
            && pitch.contains("4096"),
        "{pitch}"
    );
    let tall = said("tall: ");
    assert!(
        tall.contains("1024x20000")
            && tall.contains("needs 81920000 bytes")
            && tall.contains("the buffer has 67108864")
            && tall.contains("at most 16384 rows"),
        "{tall}"
    );
    assert!(out.kernel_warnings.is_empty(), "{:?}", out.kernel_warnings);
}

#[test]
fn family_6_refuses_through_the_host_bridge_as_peerdma_path_predicted() {
    let tb = drm_testbed("ivshmem,gpu", None, None);
    let out = run_sh(
        &tb,
        &format!(
            "{FIND_BDFS}
             grep -m1 'cpu family' /proc/cpuinfo
             dmesg | grep -m1 'resource_blob'
             {p} path $IV $GPU --json
             {g} import ivshmem0 gpu0 3; echo '## import rc='$?
             dmesg | grep -c 'whitelisted host bridge' | sed 's/^/## kernel-refusals=/'",
            p = peerdma(),
            g = guest_drm(),
        ),
    );
    assert_eq!(out.udmabuf_emulated, !host_has_udmabuf());
    assert!(out.output.contains("+resource_blob"), "{}", out.output);
    assert!(out.output.contains("cpu family\t: 6"), "{}", out.output);
    let lines = json_lines(&out.output);
    let path = lines
        .iter()
        .find(|l| l.get("drm_rdma_import").is_some())
        .unwrap_or_else(|| panic!("no peerdma path line: {}", out.output));
    assert_eq!(path["drm_rdma_import"], "refused", "{path}");

    let import = scenario(&lines, "import", "virtio_gpu");
    let msg = assert_refused(import, "EINVAL");
    assert!(
        msg.contains("whitelisted host bridge")
            && msg.contains("`peerdma path` predicted this")
            && msg.contains("one PCIe switch")
            && msg.contains("0x17"),
        "{msg}"
    );
    let refusals: u32 = out
        .output
        .split("## kernel-refusals=")
        .nth(1)
        .and_then(|r| r.lines().next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        refusals >= 1,
        "the kernel logged no distance refusal:\n{}",
        out.output
    );
}

/// Colour bars (white, yellow, cyan, green, magenta, red, blue, black) with a 64x64
/// marker of per-pixel values at (`mx`, `my`); `reverse` mirrors the bars.
fn image(mx: usize, my: usize, reverse: bool) -> Vec<[u8; 3]> {
    const BARS: [[u8; 3]; 8] = [
        [255, 255, 255],
        [255, 255, 0],
        [0, 255, 255],
        [0, 255, 0],
        [255, 0, 255],
        [255, 0, 0],
        [0, 0, 255],
        [0, 0, 0],
    ];
    let mut px = Vec::with_capacity(W * H);
    for y in 0..H {
        for x in 0..W {
            let mut bar = x * 8 / W;
            if reverse {
                bar = 7 - bar;
            }
            let mut c = BARS[bar];
            if (mx..mx + 64).contains(&x) && (my..my + 64).contains(&y) {
                let (dx, dy) = ((x - mx) as u8, (y - my) as u8);
                c = [dx.wrapping_mul(4), dy.wrapping_mul(4), dx ^ dy];
            }
            px.push(c);
        }
    }
    px
}

/// Writes an image as XRGB8888 (little-endian B, G, R, X) at the start of the file.
fn write_xrgb(path: &Path, px: &[[u8; 3]]) {
    let mut bytes = Vec::with_capacity(px.len() * 4);
    for [r, g, b] in px {
        bytes.extend_from_slice(&[*b, *g, *r, 0]);
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    f.write_all(&bytes).expect("writing the image");
    f.sync_all().ok();
}

/// QEMU's screendump of the display, as RGB pixels.
fn screendump(scratch: &Path, name: &str) -> (usize, usize, Vec<[u8; 3]>) {
    let file = scratch.join(name);
    let reply = monitor(
        &scratch.join("monitor.sock"),
        &format!("screendump {}", file.display()),
    );
    let data = std::fs::read(&file)
        .unwrap_or_else(|e| panic!("screendump wrote no {} ({e}): {reply}", file.display()));
    // P6 <w> <h> <max>\n<rgb...>
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while data[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while !data[i].is_ascii_whitespace() {
            i += 1;
        }
        fields.push(String::from_utf8_lossy(&data[start..i]).into_owned());
    }
    i += 1;
    assert_eq!(fields[0], "P6", "not a binary PPM: {fields:?}");
    let (w, h): (usize, usize) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    let px = data[i..]
        .chunks_exact(3)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    (w, h, px)
}

/// Pixels that differ, with the first few named.
fn compare(got: &[[u8; 3]], want: &[[u8; 3]]) -> (usize, Vec<String>) {
    let mut bad = 0;
    let mut first = Vec::new();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g != w {
            bad += 1;
            if first.len() < 5 {
                first.push(format!("({}, {}): got {g:?} want {w:?}", i % W, i / W));
            }
        }
    }
    (bad + want.len().abs_diff(got.len()), first)
}

fn wait_for(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The screendumps, taken on the host while the guest shows the BAR.
struct Shots {
    first: (usize, usize, Vec<[u8; 3]>),
    second: (usize, usize, Vec<[u8; 3]>),
}

/// Drives the host side: image 1, wait for `shown`, screendump, image 2, screendump.
fn host_side(scratch: &Path, one: &[[u8; 3]], two: &[[u8; 3]]) -> Shots {
    // A host file, or QEMU's memfd where the host has a real /dev/udmabuf.
    let mut backing = PathBuf::new();
    wait_for("the ivshmem memory", Duration::from_secs(120), || {
        live_ivshmem_backing(scratch, "ivshmem0").is_ok_and(|p| {
            backing = p;
            std::fs::metadata(&backing).is_ok_and(|m| m.len() >= (W * H * 4) as u64)
        })
    });
    write_xrgb(&backing, one);
    std::fs::write(scratch.join("image1"), b"").unwrap();
    let log = scratch.join("show.jsonl");
    wait_for(
        "peerdma show's \"shown\" line",
        Duration::from_secs(300),
        || {
            std::fs::read_to_string(&log)
                .is_ok_and(|t| t.contains("\"shown\"") || t.contains("error"))
        },
    );
    let first = screendump(scratch, "shot1.ppm");
    write_xrgb(&backing, two);
    let second = screendump(scratch, "shot2.ppm");
    std::fs::write(scratch.join("done"), b"").unwrap();
    Shots { first, second }
}

#[test]
fn family_23_scans_the_bar_out_pixel_by_pixel_and_follows_the_host() {
    let scratch = std::env::temp_dir().join(format!("peerdma-drm-suite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let tb = drm_testbed("ivshmem,gpu", Some("max,family=23"), Some(scratch.clone()));
    let script = format!(
        "{FIND_BDFS}
         S=/run/peerdma
         grep -m1 'cpu family' /proc/cpuinfo
         {p} path $IV $GPU --json
         {g} import ivshmem0 gpu0 3
         while [ ! -e $S/image1 ]; do sleep 0.1; done
         {p} show $IV --bar 2 --width {W} --height {H} --card $GPU --json > $S/show.jsonl 2>&1 &
         P=$!
         while [ ! -e $S/done ] && kill -0 $P 2>/dev/null; do sleep 0.2; done
         kill -TERM $P; wait $P; echo '## show rc='$?
         cat $S/show.jsonl
         {g} revoke ivshmem0 gpu0
         {g} legacy ivshmem0 gpu0
         C=$(ls /sys/bus/pci/devices/$GPU/drm | grep -m1 '^card')
         {p} show $IV --bar 2 --width 16384 --height 16 --card $GPU --seconds 1; echo '## wide rc='$?
         cat /dev/dri/$C > /dev/null & HOLD=$!
         for i in $(seq 100); do ls -l /proc/$HOLD/fd 2>/dev/null | grep -q $C && break; sleep 0.1; done
         ls -l /proc/$HOLD/fd 2>/dev/null | grep -q $C || {{ echo \"## timed out: nothing holds $C\"; exit 97; }}
         {p} show $IV --bar 2 --width {W} --height {H} --card $GPU --seconds 1 --json; echo '## master rc='$?
         kill $HOLD; wait $HOLD
         CONN=$(ls -d /sys/class/drm/$C-* | head -n1)
         echo off > $CONN/status
         {p} show $IV --bar 2 --width {W} --height {H} --card $GPU --seconds 1; echo '## off rc='$?
         echo detect > $CONN/status; true",
        p = peerdma(),
        g = guest_drm(),
    );
    let one = image(100, 200, false);
    let two = image(700, 500, true);
    let (out, shots): (RunOutcome, Option<Shots>) = std::thread::scope(|s| {
        let guest = s.spawn(|| tb.run(&["/bin/sh", "-c", &script]).expect("the VM runs"));
        let host = s.spawn(|| host_side(&scratch, &one, &two));
        let shots = host.join();
        if shots.is_err() {
            // Let the guest finish (it waits for `image1`, then `done`) before reporting.
            let _ = std::fs::write(scratch.join("image1"), b"");
            let _ = std::fs::write(scratch.join("done"), b"");
        }
        (guest.join().expect("the VM thread"), shots.ok())
    });
    assert_eq!(out.status, 0, "{}", out.output);
    assert_eq!(out.udmabuf_emulated, !host_has_udmabuf());
    let shots = shots.unwrap_or_else(|| panic!("the host side failed; guest:\n{}", out.output));
    assert!(out.output.contains("cpu family\t: 23"), "{}", out.output);
    let lines = json_lines(&out.output);
    let path = lines
        .iter()
        .find(|l| l.get("drm_rdma_import").is_some())
        .unwrap_or_else(|| panic!("no peerdma path line: {}", out.output));
    assert_eq!(path["drm_rdma_import"], "possible", "{path}");

    // The library: imported every round, a framebuffer made, nothing left behind.
    let import = scenario(&lines, "import", "virtio_gpu");
    assert_eq!(import["first"]["outcome"], "imported", "{import}");
    assert!(import["first"]["framebuffer"].is_u64(), "{import}");
    assert_eq!(import["attachments_while_imported"], 1, "{import}");
    assert_eq!(import["second_import_same_gem"], true, "{import}");
    assert_eq!(import["attachments_after"], 0, "{import}");
    assert_eq!(import["fds_before"], import["fds_after"], "{import}");

    // The tool showed it, then restored on SIGTERM and exited 0.
    assert_eq!(marked_rc(&out.output, "show"), 0, "{}", out.output);
    let shown = lines
        .iter()
        .find(|l| l["event"] == "shown")
        .unwrap_or_else(|| panic!("no shown line: {}", out.output));
    assert_eq!(shown["driver"], "virtio_gpu", "{shown}");
    assert_eq!(shown["mode"], format!("{W}x{H}"), "{shown}");

    // Pixel by pixel: the display is the BAR.
    let (w, h, px) = &shots.first;
    assert_eq!((*w, *h), (W, H), "screendump size");
    let (bad, first) = compare(px, &one);
    assert_eq!(bad, 0, "{bad} of {} pixels differ: {first:?}", W * H);
    let (w, h, px) = &shots.second;
    assert_eq!((*w, *h), (W, H));
    let (bad, first) = compare(px, &two);
    assert_eq!(
        bad, 0,
        "after the host changed the BAR, {bad} pixels differ: {first:?}"
    );

    // Revoke is reported; the buffer is shown again once decode is back.
    let revoke = scenario(&lines, "revoke", "virtio_gpu");
    assert_eq!(revoke["revoked_reported"], true, "{revoke}");
    assert!(
        revoke["show_while_revoked_errno"]
            .as_str()
            .is_some_and(|e| e.starts_with("ENODEV")),
        "{revoke}"
    );
    assert_eq!(revoke["on_restore"]["Ok"], "Restored", "{revoke}");
    assert_eq!(revoke["attachments_restored"], 1, "{revoke}");
    assert_eq!(revoke["attachments_after"], 0, "{revoke}");

    // Atomic where offered, legacy when asked; either way the console comes back.
    assert_eq!(revoke["setting"], "Atomic", "{revoke}");
    assert_eq!(revoke["crtc_fb_shown"], revoke["fb"], "{revoke}");
    let legacy = scenario(&lines, "legacy", "virtio_gpu");
    assert_eq!(legacy["setting"], "Legacy", "{legacy}");
    assert_eq!(legacy["crtc_fb_shown"], legacy["fb"], "{legacy}");
    for l in [revoke, legacy] {
        let after = l["crtc_fb_after"].as_u64().unwrap_or(0);
        assert!(
            after != 0 && Some(after) != l["fb"].as_u64(),
            "the previous framebuffer (fbdev's) is back on the CRTC: {l}"
        );
    }
    assert_eq!(legacy["attachments_after"], 0, "{legacy}");

    // Refusals said with their cause: past the card's framebuffer maximum (was a bare
    // ADDFB2 EINVAL), another DRM master (was a bare EACCES), nothing connected (was a
    // framebuffer-size fix).
    let said = |name: &str| -> String {
        assert_ne!(marked_rc(&out.output, name), 0, "{name}:\n{}", out.output);
        let before = out.output.split(&format!("## {name} rc=")).next().unwrap();
        before.rsplit("## ").next().unwrap().to_string()
    };
    let wide = said("wide");
    assert!(
        wide.contains("16384x16")
            && wide.contains("takes framebuffers")
            && wide.contains("at most"),
        "{wide}"
    );
    let master = said("master");
    assert!(
        master.contains("EACCES") && master.contains("DRM master") && master.contains("(cat)"),
        "{master}"
    );
    // --json says it on stdout too (was nothing): the error object, once.
    let errors: Vec<_> = json_lines(&master)
        .into_iter()
        .filter(|l| l.get("error").is_some())
        .collect();
    assert_eq!(errors.len(), 1, "{master}");
    assert!(
        errors[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("DRM master"),
        "{}",
        errors[0]
    );
    let off = said("off");
    assert!(
        off.contains("no connector is connected") && !off.contains("give the framebuffer the size"),
        "{off}"
    );
    assert!(out.kernel_warnings.is_empty(), "{:?}", out.kernel_warnings);
    drop(out);
    let _ = std::fs::remove_dir_all(&scratch);
}
