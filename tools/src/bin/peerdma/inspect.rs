//! `peerdma inspect`: what a dma-buf fd is, from fdinfo, plus its attachments where
//! debugfs shows them.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use peerdma_exporter::FdInfo;
use peerdma_tools::size::human;
use serde_json::json;

/// `(fdinfo path, fd number)` for a target spelled `/proc/PID/fd/N` or `PID:FD`.
fn fdinfo_location(target: &str) -> Option<(PathBuf, i32)> {
    let (pid, fd) = if let Some(rest) = target.strip_prefix("/proc/") {
        let (pid, fd) = rest.split_once("/fd/")?;
        (pid, fd)
    } else {
        target.split_once(':')?
    };
    let fd: i32 = fd.parse().ok()?;
    if pid != "self" && pid.parse::<u32>().is_err() {
        return None;
    }
    Some((PathBuf::from(format!("/proc/{pid}/fdinfo/{fd}")), fd))
}

/// Describes the buffer.
pub fn run(target: &str, json: bool) -> Result<()> {
    let (info, _file) = match fdinfo_location(target) {
        Some((path, fd)) => (
            FdInfo::read(path.clone(), fd)
                .with_context(|| format!("reading {}", path.display()))?,
            None,
        ),
        None => {
            let file = std::fs::File::open(target).with_context(|| {
                format!("opening {target} (give /proc/PID/fd/N, PID:FD or a file)")
            })?;
            (FdInfo::of(&file)?, Some(file))
        }
    };
    let Some(exp_name) = info.exp_name.clone() else {
        bail!("{target} is not a dma-buf (its fdinfo has no exp_name line)");
    };
    let attached = info.attachments();
    let out = json!({
        "target": target,
        "size": info.size,
        "exporter": exp_name,
        "name": info.name,
        "inode": info.ino,
        "file_refs": info.count,
        "flags": format!("{:#o}", info.flags),
        "cloexec": info.cloexec(),
        "attachments": attached,
    });
    if json {
        crate::print_json(&out);
        return Ok(());
    }
    println!(
        "{target}: dma-buf of {} from exporter {exp_name}, inode {}, {} other file reference(s){}",
        human(info.size.unwrap_or(0)),
        info.ino.map(|i| i.to_string()).unwrap_or("?".into()),
        info.count.unwrap_or(0),
        info.name
            .as_ref()
            .map(|n| format!(", name {n:?}"))
            .unwrap_or_default()
    );
    match attached {
        Some(devs) if devs.is_empty() => println!("  no importer attached"),
        Some(devs) => println!("  attached: {}", devs.join(", ")),
        None => println!("  attachments unknown (mount debugfs at /sys/kernel/debug to see them)"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_their_fdinfo() {
        assert_eq!(
            fdinfo_location("/proc/42/fd/7"),
            Some((PathBuf::from("/proc/42/fdinfo/7"), 7))
        );
        assert_eq!(
            fdinfo_location("42:7"),
            Some((PathBuf::from("/proc/42/fdinfo/7"), 7))
        );
        assert_eq!(fdinfo_location("/dev/dma_heap/system"), None);
        assert_eq!(fdinfo_location("x:7"), None);
    }
}
