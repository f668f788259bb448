//! Content digests (sha256) and hashing while copying.

use std::fmt;
use std::io::{self, Read, Write};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// Length of a sha256 digest in hex digits.
pub const HEX_LEN: usize = 64;

/// The shortest hex prefix accepted as a digest abbreviation.
pub const MIN_PREFIX_LEN: usize = 12;

/// A sha256 content digest. Shown and serialised as `sha256:<64 lowercase hex>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<hex>` or a bare 64-digit hex string (any case).
    pub fn parse(s: &str) -> Result<Digest> {
        let hex = s
            .strip_prefix("sha256:")
            .or_else(|| s.strip_prefix("sha256-"))
            .unwrap_or(s);
        Self::from_hex(hex).ok_or_else(|| Error::InvalidDigest {
            digest: s.to_string(),
            reason: "expected 'sha256:' followed by 64 hex digits".into(),
        })
    }

    /// A digest from exactly 64 hex digits, or `None`.
    pub fn from_hex(hex: &str) -> Option<Digest> {
        if hex.len() == HEX_LEN && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Some(Digest(hex.to_ascii_lowercase()))
        } else {
            None
        }
    }

    /// The digest of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    pub(crate) fn from_hasher(hasher: Sha256) -> Digest {
        let out = hasher.finalize();
        let mut hex = String::with_capacity(HEX_LEN);
        for b in out {
            hex.push_str(&format!("{b:02x}"));
        }
        Digest(hex)
    }

    /// The 64 lowercase hex digits.
    pub fn hex(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, enough to name a blob in a listing.
    pub fn short(&self) -> &str {
        &self.0[..MIN_PREFIX_LEN]
    }

    /// The blob's file name under `blobs/`: `sha256-<hex>`.
    pub fn blob_file_name(&self) -> String {
        format!("sha256-{}", self.0)
    }

    /// The digest named by a blob file name `sha256-<hex>`, or `None`.
    pub fn from_blob_file_name(name: &str) -> Option<Digest> {
        name.strip_prefix("sha256-").and_then(Self::from_hex)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Copies `reader` into `writer`, hashing on the way; returns the digest and the byte count.
pub(crate) fn copy_hashing(
    mut reader: impl Read,
    mut writer: impl Write,
) -> io::Result<(Digest, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n_total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n])?;
        n_total += n as u64;
    }
    writer.flush()?;
    Ok((Digest::from_hasher(hasher), n_total))
}

/// Feeds everything `reader` yields into `hasher`; returns the byte count.
pub(crate) fn hash_into(mut reader: impl Read, hasher: &mut Sha256) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 16];
    let mut n_total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(n_total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        n_total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest_and_forms() {
        let d = Digest::of_bytes(b"abc");
        assert_eq!(
            d.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        assert_eq!(Digest::parse(&d.hex().to_uppercase()).unwrap(), d);
        assert_eq!(
            Digest::from_blob_file_name(&d.blob_file_name()),
            Some(d.clone())
        );
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "g".repeat(64))).is_err());
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
    }
}
