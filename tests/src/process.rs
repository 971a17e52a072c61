//! What a guest-side test program counts about itself to prove nothing leaked, and how it
//! reports.

/// The number of open file descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The number of memory mappings of this process (lines of /proc/self/maps).
pub fn map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|m| m.lines().count())
        .unwrap_or(0)
}

/// The resident set size of this process in KiB (from /proc/self/statm).
pub fn rss_kib() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    pages * rustix::param::page_size() as u64 / 1024
}

/// A guest program's exit: its JSON report on stdout and success, or the error (named
/// after `program`) on stderr and failure.
pub fn report(program: &str, result: anyhow::Result<serde_json::Value>) -> std::process::ExitCode {
    match result {
        Ok(v) => {
            println!("{v}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{program}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_opens_and_mappings() {
        let before = fd_count();
        let f = std::fs::File::open("/proc/self/status").unwrap();
        assert_eq!(fd_count(), before + 1);
        drop(f);
        assert_eq!(fd_count(), before);
        assert!(map_count() > 0);
    }
}
