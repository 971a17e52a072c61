//! Copies that suit uncached and write-combining MMIO: aligned 16-byte loads and
//! non-temporal 16-byte stores (whole lines reach the device, no read-modify-write of
//! the destination), a store fence at the end. Plain memory works too.

/// Copies `len` bytes from `src` to `dst`.
///
/// # Safety
/// `src` must be valid for `len` bytes of reads and `dst` for `len` bytes of writes, and
/// the two must not overlap. Both should be 16-byte aligned for the fast path.
pub(crate) unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if (dst as usize | src as usize).is_multiple_of(16) {
            // SAFETY: forwarded from the caller; SSE2 is part of x86_64.
            unsafe { copy_sse2(dst, src, len) };
            return;
        }
    }
    // SAFETY: forwarded from the caller.
    unsafe { copy_words(dst, src, len) };
}

/// Word-at-a-time volatile copy (no compiler-merged or split accesses).
///
/// # Safety
/// As [`copy`].
unsafe fn copy_words(dst: *mut u8, src: *const u8, len: usize) {
    let mut i = 0;
    if (dst as usize | src as usize).is_multiple_of(8) {
        while i + 8 <= len {
            // SAFETY: in bounds and 8-byte aligned, per the caller and the check above.
            unsafe {
                let v = std::ptr::read_volatile(src.add(i) as *const u64);
                std::ptr::write_volatile(dst.add(i) as *mut u64, v);
            }
            i += 8;
        }
    }
    while i < len {
        // SAFETY: in bounds, per the caller.
        unsafe { std::ptr::write_volatile(dst.add(i), std::ptr::read_volatile(src.add(i))) };
        i += 1;
    }
}

#[cfg(target_arch = "x86_64")]
/// # Safety
/// As [`copy`], with both pointers 16-byte aligned.
unsafe fn copy_sse2(dst: *mut u8, src: *const u8, len: usize) {
    use std::arch::x86_64::{__m128i, _mm_load_si128, _mm_sfence, _mm_stream_si128};
    let mut i = 0;
    while i + 64 <= len {
        // SAFETY: 16-byte aligned and in bounds (i + 64 <= len).
        unsafe {
            let a = _mm_load_si128(src.add(i) as *const __m128i);
            let b = _mm_load_si128(src.add(i + 16) as *const __m128i);
            let c = _mm_load_si128(src.add(i + 32) as *const __m128i);
            let d = _mm_load_si128(src.add(i + 48) as *const __m128i);
            _mm_stream_si128(dst.add(i) as *mut __m128i, a);
            _mm_stream_si128(dst.add(i + 16) as *mut __m128i, b);
            _mm_stream_si128(dst.add(i + 32) as *mut __m128i, c);
            _mm_stream_si128(dst.add(i + 48) as *mut __m128i, d);
        }
        i += 64;
    }
    while i + 16 <= len {
        // SAFETY: 16-byte aligned and in bounds.
        unsafe {
            let a = _mm_load_si128(src.add(i) as *const __m128i);
            _mm_stream_si128(dst.add(i) as *mut __m128i, a);
        }
        i += 16;
    }
    // SAFETY: orders the non-temporal stores before anything that follows.
    unsafe { _mm_sfence() };
    if i < len {
        // SAFETY: the tail is in bounds.
        unsafe { copy_words(dst.add(i), src.add(i), len - i) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_size_and_alignment() {
        for len in [0usize, 1, 15, 16, 63, 64, 65, 4096, 4096 + 24] {
            for (so, doff) in [(0usize, 0usize), (8, 8), (1, 3)] {
                let src: Vec<u8> = (0..len + 64).map(|i| (i * 7 + 3) as u8).collect();
                let mut dst = vec![0u8; len + 64];
                // Align both buffers' bases to 16 before applying the offsets.
                let sbase = (16 - src.as_ptr() as usize % 16) % 16;
                let dbase = (16 - dst.as_ptr() as usize % 16) % 16;
                if sbase + so + len > src.len() || dbase + doff + len > dst.len() {
                    continue;
                }
                // SAFETY: both ranges are inside their vectors and do not overlap.
                unsafe {
                    copy(
                        dst.as_mut_ptr().add(dbase + doff),
                        src.as_ptr().add(sbase + so),
                        len,
                    )
                };
                assert_eq!(
                    &dst[dbase + doff..dbase + doff + len],
                    &src[sbase + so..sbase + so + len],
                    "len {len} offsets {so}/{doff}"
                );
                assert!(dst[..dbase + doff].iter().all(|&b| b == 0));
                assert!(dst[dbase + doff + len..].iter().all(|&b| b == 0));
            }
        }
    }
}
