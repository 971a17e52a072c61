//! Seeded byte patterns that both sides of a test can regenerate: the guest writes one,
//! the host checks the ivshmem backing file for it after the run.

/// Fills `buf` with the pattern for `seed`, as if it started at byte `start` of the
/// stream (so a region can be checked piecewise).
pub fn fill(seed: u64, start: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = byte(seed, start + i as u64);
    }
}

/// Fills `buf` with the bitwise complement of the pattern (see [`fill`]): a buffer
/// that differs from the pattern in every byte, to poison a destination before a copy.
pub fn fill_complement(seed: u64, start: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = !byte(seed, start + i as u64);
    }
}

/// Byte `index` of the pattern for `seed` (a cheap 64-bit mix of seed and word index).
pub fn byte(seed: u64, index: u64) -> u8 {
    let mut x = seed ^ (index / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x >> ((index % 8) * 8)) as u8
}

/// The first offset where `buf` (starting at stream byte `start`) differs from the
/// pattern, and how many bytes differ in all.
pub fn first_mismatch(seed: u64, start: u64, buf: &[u8]) -> Option<(u64, u64)> {
    let mut first = None;
    let mut count = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b != byte(seed, start + i as u64) {
            first.get_or_insert(start + i as u64);
            count += 1;
        }
    }
    first.map(|f| (f, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_complement_differs_in_every_byte() {
        let mut a = vec![0u8; 4096];
        fill_complement(7, 123, &mut a);
        assert_eq!(first_mismatch(7, 123, &a), Some((123, 4096)));
    }

    #[test]
    fn pattern_is_deterministic_and_seeded() {
        let mut a = vec![0u8; 4096];
        let mut b = vec![0u8; 4096];
        fill(7, 0, &mut a);
        fill(7, 0, &mut b);
        assert_eq!(a, b);
        fill(8, 0, &mut b);
        assert_ne!(a, b);
        assert_eq!(first_mismatch(7, 0, &a), None);
        let mut tail = vec![0u8; 100];
        fill(7, 1000, &mut tail);
        assert_eq!(&a[1000..1100], &tail[..]);
        a[10] ^= 1;
        a[20] ^= 1;
        assert_eq!(first_mismatch(7, 0, &a), Some((10, 2)));
    }
}
