//! What a guest-side test program counts about itself to prove nothing leaked.

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
