//! Parsers of outside input against independent models: BDF spellings, VFIO
//! info capability chains, the PCI capability list (against the kernel's own
//! walk), MSI-X location, fdinfo, debugfs bufinfo and sysfs `resource`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::Rng;
use crate::info_caps::{device_caps, region_caps, walk, CAP_HEADER_LEN};
use crate::msix::MsixLayout;
use peerdma_host::fdinfo::{bufinfo_attachments, FdInfo};
use peerdma_host::pci_caps::{capabilities, find, flr_method, pmcsr_offset};
use peerdma_host::sysfs::{parse_resources, Resource, BAR_AND_ROM_RESOURCES};
use peerdma_host::Bdf;

const HEX: &[u8] = b"0123456789abcdefABCDEF";
const NOISE: &[char] = &[
    '0', '1', '7', '8', 'f', 'F', 'g', 'x', ':', '.', ' ', '\t', '\n', '-', '+', '_', 'é', '\0',
];

fn hex_digits(rng: &mut Rng, n: usize) -> String {
    (0..n).map(|_| *rng.pick(HEX) as char).collect()
}

/// Inserts, deletes or replaces a few characters.
fn mutate(rng: &mut Rng, s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(chars.len() as u64 + 1) as usize;
        match rng.below(3) {
            0 => chars.insert(at, *rng.pick(NOISE)),
            1 if at < chars.len() => {
                chars.remove(at);
            }
            _ if at < chars.len() => chars[at] = *rng.pick(NOISE),
            _ => chars.push(*rng.pick(NOISE)),
        }
    }
    chars.into_iter().collect()
}

fn noise(rng: &mut Rng, max: u64) -> String {
    (0..rng.below(max + 1)).map(|_| *rng.pick(NOISE)).collect()
}

// ---------------------------------------------------------------------------------
// BDF

/// The BDF grammar, `[DOMAIN:]BB:DD.F` with 1..8 domain digits, written on bytes
/// from the right (unlike `Bdf::from_str`), after surrounding whitespace and a
/// `/sys/bus/pci/devices/` prefix (with an optional trailing `/`) are dropped.
fn bdf_model(s: &str) -> Option<(u32, u8, u8, u8)> {
    let s = s.trim_matches(|c: char| c.is_whitespace());
    let s = match s.strip_prefix("/sys/bus/pci/devices/") {
        Some(rest) => rest.strip_suffix('/').unwrap_or(rest),
        None => s,
    };
    let b = s.as_bytes();
    let n = b.len();
    if n < 7 {
        return None;
    }
    let tail = &b[n - 7..];
    let hex = |c: u8| (c as char).to_digit(16);
    if tail[2] != b':' || tail[5] != b'.' {
        return None;
    }
    let bus = hex(tail[0])? * 16 + hex(tail[1])?;
    let device = hex(tail[3])? * 16 + hex(tail[4])?;
    let function = hex(tail[6])?;
    if device > 0x1f || function > 7 {
        return None;
    }
    let head = &b[..n - 7];
    let domain = if head.is_empty() {
        0
    } else {
        let (last, digits) = head.split_last()?;
        if *last != b':' || digits.is_empty() || digits.len() > 8 {
            return None;
        }
        digits
            .iter()
            .try_fold(0u32, |acc, &c| Some(acc * 16 + hex(c)?))?
    };
    Some((domain, bus as u8, device as u8, function as u8))
}

pub(crate) fn bdf(rng: &mut Rng) -> Result<(), String> {
    let domain = if rng.chance(2) {
        String::new()
    } else {
        let digits = 1 + rng.below(9) as usize;
        format!("{}:", hex_digits(rng, digits))
    };
    let valid = format!(
        "{domain}{}:{}.{}",
        hex_digits(rng, 2),
        hex_digits(rng, 2),
        rng.below(10)
    );
    let input = match rng.below(5) {
        0 => valid,
        1 | 2 => mutate(rng, &valid),
        3 => mutate(rng, &format!("/sys/bus/pci/devices/{valid}/")),
        _ => noise(rng, 16),
    };
    let parsed = input.parse::<Bdf>();
    let model = bdf_model(&input);
    let got = parsed
        .as_ref()
        .ok()
        .map(|b| (b.domain(), b.bus(), b.device(), b.function()));
    if got != model {
        return Err(format!(
            "{input:?}: parsed {parsed:?}, the grammar says {model:?}"
        ));
    }
    if let Ok(bdf) = parsed {
        let again = bdf.to_string().parse::<Bdf>();
        if again.as_ref() != Ok(&bdf) {
            return Err(format!("{input:?}: {bdf} does not parse back ({again:?})"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// VFIO info capability chains

/// The walk as the kernel's `vfio_info_cap` chains define it, with a set of
/// visited offsets: `(offset, id, version, bytes length)` per capability.
type ModelCap = (u32, u16, u16, usize);

fn chain_model(buf: &[u8], first: u32, fixed: usize) -> Option<Vec<ModelCap>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut at = first as u64;
    while at != 0 {
        let header_end = at + CAP_HEADER_LEN as u64;
        if at < fixed as u64 || header_end > buf.len() as u64 || !seen.insert(at) {
            return None;
        }
        let a = at as usize;
        let id = u16::from_ne_bytes([buf[a], buf[a + 1]]);
        let version = u16::from_ne_bytes([buf[a + 2], buf[a + 3]]);
        let next = u32::from_ne_bytes(buf[a + 4..a + 8].try_into().ok()?) as u64;
        let end = if next > at && next <= buf.len() as u64 {
            next
        } else {
            buf.len() as u64
        };
        out.push((at as u32, id, version, (end - at) as usize));
        at = next;
    }
    Some(out)
}

pub(crate) fn vfio_cap_chain(rng: &mut Rng) -> Result<(), String> {
    let fixed = *rng.pick(&[16usize, 24, 32]);
    let len = fixed + rng.below(256) as usize;
    let mut buf = rng.bytes(len);
    let first = if rng.chance(8) {
        rng.next() as u32
    } else {
        // A chain of well-placed capabilities, then maybe one bad link.
        let slots: Vec<u32> = (fixed as u32..len.saturating_sub(8) as u32)
            .step_by(8)
            .collect();
        let mut chain: Vec<u32> = (0..rng.below(6))
            .filter_map(|_| {
                slots
                    .get(rng.below(slots.len().max(1) as u64) as usize)
                    .copied()
            })
            .collect();
        chain.dedup();
        for w in 0..chain.len() {
            let at = chain[w] as usize;
            let next = chain.get(w + 1).copied().unwrap_or(0);
            let next = match rng.below(12) {
                0 => rng.next() as u32,
                1 => chain[rng.below(chain.len() as u64) as usize], // a loop
                2 => rng.below(fixed as u64) as u32,
                _ => next,
            };
            buf[at + 4..at + 8].copy_from_slice(&next.to_ne_bytes());
            if rng.chance(2) {
                let id = 1 + rng.below(5) as u16;
                buf[at..at + 2].copy_from_slice(&id.to_ne_bytes());
            }
        }
        chain.first().copied().unwrap_or(0)
    };
    let got = walk(&buf, first, fixed).ok().map(|caps| {
        caps.iter()
            .map(|c| (c.offset, c.id, c.version, c.bytes.len()))
            .collect::<Vec<_>>()
    });
    let model = chain_model(&buf, first, fixed);
    if got != model {
        return Err(format!(
            "chain from {first} (fixed {fixed}, len {len}): walk {got:?}, model {model:?}"
        ));
    }
    // The typed parsers: no panic, and one entry per raw capability when they succeed.
    let n = model.map(|m| m.len());
    if let Ok(caps) = region_caps(&buf, first, fixed) {
        if Some(caps.len()) != n {
            return Err(format!("region_caps gave {} caps, walk {n:?}", caps.len()));
        }
    }
    if let Ok(caps) = device_caps(&buf, first, fixed) {
        if Some(caps.len()) != n {
            return Err(format!("device_caps gave {} caps, walk {n:?}", caps.len()));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// PCI capability list and MSI-X location

/// A config-space snapshot with a capability list, often well formed.
fn config_space(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(6) {
        0 => rng.below(300) as usize,
        1 => 4096,
        _ => 256,
    };
    let mut config = if rng.chance(3) {
        rng.bytes(len)
    } else {
        vec![0u8; len]
    };
    if len < 0x40 {
        return config;
    }
    config[0x06] |= 0x10; // status: capability list
    config[0x0e] = 0; // a normal header
    let slots: Vec<usize> = (0x40..len.min(256).saturating_sub(4)).step_by(4).collect();
    if slots.is_empty() {
        return config;
    }
    let mut at_ptr = 0x34;
    for _ in 0..rng.below(10) {
        let pos = slots[rng.below(slots.len() as u64) as usize];
        config[at_ptr] = match rng.below(16) {
            0 => rng.next() as u8,
            _ => pos as u8,
        };
        let any = rng.next() as u8;
        config[pos] = *rng.pick(&[0x01, 0x05, 0x09, 0x10, 0x11, 0x13, 0xff, any]);
        if config[pos] == 0x11 && pos + 12 <= len {
            let table = rng.next() as u32;
            let pba = rng.next() as u32;
            config[pos + 2..pos + 4].copy_from_slice(&(rng.next() as u16).to_le_bytes());
            config[pos + 4..pos + 8].copy_from_slice(&table.to_le_bytes());
            config[pos + 8..pos + 12].copy_from_slice(&pba.to_le_bytes());
        }
        at_ptr = pos + 1;
    }
    config[at_ptr] = if rng.chance(6) { rng.next() as u8 } else { 0 };
    config
}

/// The kernel's `pci_find_capability` (drivers/pci/pci.c, `__pci_find_next_cap_ttl`
/// with a TTL of 48): reads past the snapshot as all-ones, as a gone device does.
fn kernel_find_capability(config: &[u8], id: u8) -> Option<u16> {
    let byte = |at: usize| config.get(at).copied().unwrap_or(0xff);
    let status = u16::from_le_bytes([byte(0x06), byte(0x07)]);
    if status & 0x10 == 0 {
        return None;
    }
    let mut pos = byte(0x34) as usize;
    for _ in 0..48 {
        if pos < 0x40 {
            break;
        }
        pos &= !3;
        let found = byte(pos);
        if found == 0xff {
            break;
        }
        if found == id {
            return Some(pos as u16);
        }
        pos = byte(pos + 1) as usize;
    }
    None
}

pub(crate) fn pci_cap_list(rng: &mut Rng) -> Result<(), String> {
    let config = config_space(rng);
    let Ok(caps) = capabilities(&config) else {
        return Ok(()); // refusing a malformed list is allowed; panicking is not
    };
    if caps.len() > 48 {
        return Err(format!("{} capabilities", caps.len()));
    }
    let mut seen = HashSet::new();
    for c in &caps {
        let at = usize::from(c.offset);
        if c.offset < 0x40 || c.offset % 4 != 0 || at + 2 > config.len() || !seen.insert(at) {
            return Err(format!(
                "bad capability {c:?} in a {}-byte snapshot",
                config.len()
            ));
        }
    }
    for id in 0..=255u8 {
        let kernel = kernel_find_capability(&config, id);
        if find(&caps, id) != kernel {
            return Err(format!(
                "capability {id:#x}: library {:?}, kernel {kernel:?} ({caps:?})",
                find(&caps, id)
            ));
        }
    }
    let _ = flr_method(&config, &caps);
    let _ = pmcsr_offset(&caps);
    Ok(())
}

pub(crate) fn msix_location(rng: &mut Rng) -> Result<(), String> {
    let config = config_space(rng);
    let cap = if rng.chance(4) {
        rng.next() as u16
    } else {
        (0x40 + rng.below(0xc0) as u16) & !3
    };
    let mut layouts: Vec<MsixLayout> = MsixLayout::from_config(&config, cap).into_iter().collect();
    if let Ok(caps) = capabilities(&config) {
        layouts.extend(MsixLayout::find(&config, &caps));
    }
    for m in layouts {
        if !(1..=2048).contains(&m.vectors) || m.table_bir > 7 || m.pba_bir > 7 {
            return Err(format!("impossible layout {m:?}"));
        }
        if m.table_offset % 8 != 0 || m.pba_offset % 8 != 0 {
            return Err(format!("unaligned offsets in {m:?}"));
        }
        for page in [0x1000u64, 0x4000, 0x10000] {
            for region in 0..9u32 {
                for span in m.spans_in(region, page) {
                    let (bir, offset, len) = match span.structure {
                        crate::msix::MsixStructure::Table => {
                            (m.table_bir, m.table_offset, m.table_len())
                        }
                        crate::msix::MsixStructure::Pba => (m.pba_bir, m.pba_offset, m.pba_len()),
                    };
                    let offset = u64::from(offset);
                    if u32::from(bir) != region
                        || span.start % page != 0
                        || span.end % page != 0
                        || span.start > offset
                        || span.end < offset + len
                        || span.end - span.start > len + 2 * page
                    {
                        return Err(format!("span {span:?} for {m:?} in region {region}"));
                    }
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// fdinfo and bufinfo

pub(crate) fn fdinfo(rng: &mut Rng) -> Result<(), String> {
    let hostile = rng.chance(3);
    let mut expected = FdInfo::default();
    let mut seen_flags = false;
    let mut text = String::new();
    for _ in 0..rng.below(12) {
        let n = rng.edgy_u64();
        let word = noise(rng, 6).replace(['\n', ':'], "");
        let (key, value) = match rng.below(11) {
            0 => ("pos", n.to_string()),
            1 => ("flags", format!("0{:o}", n as u32)),
            2 => ("mnt_id", n.to_string()),
            3 => (*rng.pick(&["ino", "inode"]), n.to_string()),
            4 => ("size", n.to_string()),
            5 => ("count", n.to_string()),
            6 => ("exp_name", word.trim().to_owned()),
            7 => ("name", word.trim().to_owned()),
            8 => (
                "vfio-device-syspath",
                format!("/sys/devices/{}", word.trim()),
            ),
            9 => ("tfd", n.to_string()),
            _ => ("eventfd-count", format!("{n:x}")),
        };
        match key {
            "pos" => expected.pos = n,
            "flags" => {
                expected.flags = n as u32;
                seen_flags = true;
            }
            "mnt_id" => expected.mnt_id = Some(n),
            "ino" | "inode" => expected.ino = Some(n),
            "size" => expected.size = Some(n),
            "count" => expected.count = Some(n),
            "exp_name" => expected.exp_name = Some(value.clone()),
            "name" => expected.name = Some(value.clone()),
            "vfio-device-syspath" => expected.vfio_device_syspath = Some(PathBuf::from(&value)),
            _ => expected.extra.push((key.to_owned(), value.clone())),
        }
        text.push_str(&format!("{key}:\t{value}\n"));
    }
    if hostile {
        text = mutate(rng, &text);
    }
    let parsed = FdInfo::parse(&text, -1);
    if !hostile {
        let want = seen_flags.then_some(&expected);
        if parsed.as_ref().ok() != want {
            return Err(format!("{text:?}: parsed {parsed:?}, expected {want:?}"));
        }
    }
    if let Ok(info) = parsed {
        let _ = (info.cloexec(), info.access_mode());
    }
    Ok(())
}

pub(crate) fn bufinfo(rng: &mut Rng) -> Result<(), String> {
    // A well-formed listing of a few buffers, each with its attachments.
    let mut text = String::from(
        "\nDma-buf Objects:\nsize    \tflags   \tmode    \tcount   \texp_name\tino     \tname\n",
    );
    let mut buffers: Vec<(u64, Vec<String>)> = Vec::new();
    for _ in 0..rng.below(5) {
        let ino = rng.below(50);
        let devs: Vec<String> = (0..rng.below(3))
            .map(|i| format!("0000:00:{:02x}.{i}", rng.below(32)))
            .collect();
        text.push_str(&format!(
            "{:08}\t{:08x}\t{:08x}\t{:08}\tvfio_pci_core\t{ino:08}\t<none>\n",
            4096 * (1 + rng.below(9)),
            2,
            0x80002,
            1 + rng.below(3)
        ));
        text.push_str("\tExclusive fence: none\n\tAttached Devices:\n");
        for d in &devs {
            text.push_str(&format!("\t{d}\n"));
        }
        text.push_str(&format!("Total {} devices attached\n\n", devs.len()));
        buffers.push((ino, devs));
    }
    text.push_str(&format!("\nTotal {} objects, {} bytes\n", buffers.len(), 0));
    let ino = if rng.chance(4) {
        rng.edgy_u64()
    } else {
        rng.below(50)
    };
    let hostile = rng.chance(3);
    if hostile {
        text = mutate(rng, &text);
        let _ = bufinfo_attachments(&text, ino);
        let _ = bufinfo_attachments(&noise(rng, 40), ino);
        return Ok(());
    }
    let expected = buffers
        .iter()
        .find(|(i, _)| *i == ino)
        .map(|(_, devs)| devs.clone());
    let got = bufinfo_attachments(&text, ino);
    if got != expected {
        return Err(format!(
            "ino {ino}: {got:?}, expected {expected:?} in {text:?}"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// sysfs resource

/// One hex field as sysfs prints it (`0x` optional), without `from_str_radix`.
fn hex_model(s: &str) -> Option<u64> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    if digits.is_empty() {
        return None;
    }
    let mut v: u128 = 0;
    for c in digits.chars() {
        v = v * 16 + u128::from(c.to_digit(16)?);
        if v > u128::from(u64::MAX) {
            return None;
        }
    }
    Some(v as u64)
}

fn resources_model(text: &str) -> Option<Vec<Resource>> {
    let mut out = Vec::new();
    for line in text.lines().take(BAR_AND_ROM_RESOURCES) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 3 {
            return None;
        }
        let r = Resource {
            start: hex_model(f[0])?,
            end: hex_model(f[1])?,
            flags: hex_model(f[2])?,
        };
        if r.end != 0 && r.end < r.start {
            return None;
        }
        out.push(r);
    }
    out.resize(BAR_AND_ROM_RESOURCES, Resource::default());
    Some(out)
}

pub(crate) fn sysfs_resource(rng: &mut Rng) -> Result<(), String> {
    let mut text = String::new();
    for _ in 0..rng.below(14) {
        let start = rng.edgy_u64();
        let end = if rng.chance(3) {
            rng.edgy_u64()
        } else {
            start.saturating_add(rng.edgy_u64() >> rng.below(64))
        };
        let any = rng.next();
        let flags = *rng.pick(&[0u64, 0x40200, 0x14220c, 0x101, any]);
        text.push_str(&format!("0x{start:016x} 0x{end:016x} 0x{flags:016x}\n"));
    }
    if rng.chance(2) {
        text = mutate(rng, &text);
    }
    let parsed = parse_resources(Path::new("/sys/bus/pci/devices/fuzz/resource"), &text);
    let model = resources_model(&text);
    if parsed.as_ref().ok() != model.as_ref() {
        return Err(format!("{text:?}: parsed {parsed:?}, model {model:?}"));
    }
    for r in parsed.iter().flatten() {
        let _ = (
            r.size(),
            r.is_io(),
            r.is_mem(),
            r.is_prefetchable(),
            r.is_mem64(),
        );
    }
    Ok(())
}
