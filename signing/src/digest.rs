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

    /// Gives `first` once, then `data`.
    struct Flaky {
        first: Option<std::io::ErrorKind>,
        data: &'static [u8],
    }

    impl Read for Flaky {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if let Some(kind) = self.first.take() {
                return Err(kind.into());
            }
            self.data.read(buf)
        }
    }

    #[test]
    fn an_interrupted_read_is_retried_and_any_other_error_returned() {
        let interrupted = Flaky {
            first: Some(std::io::ErrorKind::Interrupted),
            data: b"firmware",
        };
        let (hex, size) = sha256_reader(interrupted).unwrap();
        assert_eq!((hex, size), (sha256_hex(b"firmware"), 8));

        let broken = Flaky {
            first: Some(std::io::ErrorKind::UnexpectedEof),
            data: b"firmware",
        };
        let err = sha256_reader(broken).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
