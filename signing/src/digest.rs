//! sha256 of byte slices and of streams read in large blocks.

use sha2::{Digest, Sha256};
use std::io::Read;

/// Block size for streamed hashing: big enough that syscalls don't dominate.
const BLOCK: usize = 1 << 20;

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hashes a reader to its end in constant memory; returns (sha256 hex, size).
pub fn sha256_reader(mut reader: impl Read) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BLOCK];
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// True when `s` is 64 lowercase hex digits, the only form firmcast writes.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_matches_slice() {
        let data = vec![7u8; BLOCK * 2 + 13];
        let (hex, size) = sha256_reader(&data[..]).unwrap();
        assert_eq!(hex, sha256_hex(&data));
        assert_eq!(size, data.len() as u64);
        assert!(is_sha256_hex(&hex));
        assert!(!is_sha256_hex(&hex.to_uppercase()));
    }
}
