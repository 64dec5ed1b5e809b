//! The work every alternative does: fill a buffer, read every byte of it, move bytes
//! through stream sockets. Shared so that all alternatives pay exactly the same for it.

use std::io::{Read, Write};

/// Errors of the harness: anything goes, the message is what matters.
pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Fills `buf` with `seed` (a `memset`: the cheapest fill there is, so the numbers show the
/// transport, not the fill).
pub fn fill(buf: &mut [u8], seed: u8) {
    buf.fill(seed);
}

/// Reads every byte of `buf`: a wrapping sum of its little-endian `u64` words (plus the
/// tail bytes). Four accumulators so the loop vectorizes.
pub fn checksum(buf: &[u8]) -> u64 {
    let mut acc = [0u64; 4];
    let mut chunks = buf.chunks_exact(32);
    for c in &mut chunks {
        for (i, a) in acc.iter_mut().enumerate() {
            let w = u64::from_le_bytes(c[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
            *a = a.wrapping_add(w);
        }
    }
    let mut sum = acc.iter().fold(0u64, |s, a| s.wrapping_add(*a));
    let rest = chunks.remainder();
    let mut words = rest.chunks_exact(8);
    for w in &mut words {
        sum = sum.wrapping_add(u64::from_le_bytes(w.try_into().unwrap_or([0; 8])));
    }
    for &b in words.remainder() {
        sum = sum.wrapping_add(u64::from(b));
    }
    sum
}

/// What [`checksum`] returns for `len` bytes filled by [`fill`] with `seed`.
pub fn expected(len: usize, seed: u8) -> u64 {
    let word = u64::from_le_bytes([seed; 8]);
    let words = (len / 8) as u64;
    word.wrapping_mul(words)
        .wrapping_add(u64::from(seed) * (len % 8) as u64)
}

/// Fails with a clear message when a consumer saw other bytes than the producer wrote.
pub fn check(what: &str, got: u64, want: u64) -> Res<()> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: checksum {got:#x}, expected {want:#x}: bytes were lost").into())
    }
}

/// Writes one `u64` (an acknowledgement) to a stream socket.
pub fn write_u64(s: &mut impl Write, v: u64) -> Res<()> {
    s.write_all(&v.to_le_bytes())?;
    Ok(())
}

/// Reads one `u64` from a stream socket; `None` at end of stream.
pub fn read_u64(s: &mut impl Read) -> Res<Option<u64>> {
    let mut b = [0u8; 8];
    match s.read_exact(&mut b) {
        Ok(()) => Ok(Some(u64::from_le_bytes(b))),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads exactly `buf.len()` bytes; `false` at a clean end of stream before the first byte.
pub fn read_buf(s: &mut impl Read, buf: &mut [u8]) -> Res<bool> {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err("stream ended in the middle of a buffer".into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// A buffer of `len` bytes whose pages are already faulted in (a warm, reused buffer: what
/// a copying program keeps around).
pub fn warm_buffer(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill(&mut v, 1);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_expected_for_odd_lengths() {
        for len in [0, 1, 7, 8, 31, 32, 33, 4096, 4099] {
            let mut v = vec![0u8; len];
            fill(&mut v, 0xa5);
            assert_eq!(checksum(&v), expected(len, 0xa5), "len {len}");
        }
        let mut v = vec![0u8; 64];
        fill(&mut v, 3);
        v[40] = 4;
        assert_ne!(checksum(&v), expected(64, 3));
    }
}
