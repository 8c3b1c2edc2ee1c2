//! Signatures of checkpoint archives, in minisign's key and signature
//! formats (Ed25519), so `minisign -V` verifies what cns signs and cns
//! verifies what `minisign -S` signs.
//!
//! - public key file: `untrusted comment: ...` then base64 of
//!   `"Ed" || key id (8) || public key (32)`;
//! - secret key file: base64 of `"Ed" || kdf ("\0\0": no passphrase, as
//!   `minisign -W`) || "B2" || salt (32) || opslimit (8) || memlimit (8) ||
//!   key id (8) || secret key (64) || BLAKE2b-256 checksum (32)`;
//! - signature file: base64 of `"ED" || key id || Ed25519(BLAKE2b-512(data))`,
//!   a trusted comment, and base64 of the global signature
//!   `Ed25519(signature || trusted comment)`.
//!
//! A key id is shown as minisign shows it: the 8 bytes as a little-endian
//! number in upper-case hex.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use blake2::Digest;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::error::{Error, ErrorKind, Result};

const ALG: &[u8; 2] = b"Ed";
const ALG_PREHASHED: &[u8; 2] = b"ED";
const KDF_NONE: &[u8; 2] = b"\0\0";
const CHK: &[u8; 2] = b"B2";

/// A public key (who signed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    id: [u8; 8],
    key: VerifyingKey,
}

/// A secret key (signs).
#[derive(Debug)]
pub struct SecretKey {
    id: [u8; 8],
    key: SigningKey,
}

/// The key id as minisign prints it.
pub fn key_id_hex(id: &[u8; 8]) -> String {
    format!("{:016X}", u64::from_le_bytes(*id))
}

fn bad(what: &str) -> Error {
    Error::new(ErrorKind::Invalid, what.to_string())
}

/// The base64 line of a minisign file: the first line that is not a comment.
fn payload(text: &str, skip_comments: usize) -> Result<Vec<u8>> {
    let line = text.lines().filter(|l| !l.trim().is_empty()).nth(skip_comments).ok_or_else(|| bad("the key or signature file is empty or truncated"))?;
    B64.decode(line.trim()).map_err(|_| bad("the key or signature file is not base64 where it should be"))
}

impl PublicKey {
    /// Reads a minisign public key file.
    pub fn parse(text: &str) -> Result<PublicKey> {
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let b64 = lines.iter().find(|l| !l.starts_with("untrusted comment:")).ok_or_else(|| bad("the public key file holds no key"))?;
        let raw = B64.decode(b64.trim()).map_err(|_| bad("the public key is not base64"))?;
        if raw.len() != 42 || &raw[..2] != ALG {
            return Err(bad("not a minisign Ed25519 public key"));
        }
        let id: [u8; 8] = raw[2..10].try_into().map_err(|_| bad("bad key id"))?;
        let pk: [u8; 32] = raw[10..42].try_into().map_err(|_| bad("bad public key"))?;
        let key = VerifyingKey::from_bytes(&pk).map_err(|_| bad("the public key is not a valid Ed25519 point"))?;
        Ok(PublicKey { id, key })
    }

    pub fn id(&self) -> String {
        key_id_hex(&self.id)
    }

    /// The file text (`minisign -p`'s format).
    pub fn to_file(&self) -> String {
        let mut raw = ALG.to_vec();
        raw.extend_from_slice(&self.id);
        raw.extend_from_slice(self.key.as_bytes());
        format!("untrusted comment: minisign public key {}\n{}\n", self.id(), B64.encode(raw))
    }
}

impl SecretKey {
    /// A new random key.
    pub fn generate() -> SecretKey {
        let mut seed = [0u8; 32];
        for chunk in seed.chunks_mut(8) {
            chunk.copy_from_slice(&crate::files::random_u64().to_le_bytes());
        }
        SecretKey { id: crate::files::random_u64().to_le_bytes(), key: SigningKey::from_bytes(&seed) }
    }

    /// Reads a minisign secret key file (without a passphrase: `minisign -G -W`).
    pub fn parse(text: &str) -> Result<SecretKey> {
        let raw = payload(text, 1).or_else(|_| payload(text, 0))?;
        if raw.len() != 158 || &raw[..2] != ALG || &raw[4..6] != CHK {
            return Err(bad("not a minisign Ed25519 secret key"));
        }
        if &raw[2..4] != KDF_NONE {
            return Err(Error::invalid("the secret key is protected by a passphrase", "make a key without one: `cns key generate PATH` (or `minisign -G -W`)"));
        }
        let id: [u8; 8] = raw[54..62].try_into().map_err(|_| bad("bad key id"))?;
        let sk: [u8; 64] = raw[62..126].try_into().map_err(|_| bad("bad secret key"))?;
        let chk = &raw[126..158];
        // minisign -W leaves the checksum of an unencrypted key all zeros.
        if chk.iter().any(|&b| b != 0) && checksum(&id, &sk)[..] != chk[..] {
            return Err(bad("the secret key file is corrupt (checksum mismatch)"));
        }
        let key = SigningKey::from_keypair_bytes(&sk).map_err(|_| bad("the secret key does not match its public half"))?;
        Ok(SecretKey { id, key })
    }

    /// The file text (`minisign -s`'s format, no passphrase).
    pub fn to_file(&self) -> String {
        let sk = self.key.to_keypair_bytes();
        let mut raw = Vec::with_capacity(158);
        raw.extend_from_slice(ALG);
        raw.extend_from_slice(KDF_NONE);
        raw.extend_from_slice(CHK);
        raw.extend_from_slice(&[0u8; 48]); // salt, opslimit, memlimit: unused without a passphrase
        raw.extend_from_slice(&self.id);
        raw.extend_from_slice(&sk);
        // As minisign -W writes an unencrypted key: no checksum (zeros).
        raw.extend_from_slice(&[0u8; 32]);
        format!("untrusted comment: cns secret key {} (no passphrase: keep it 0600)\n{}\n", key_id_hex(&self.id), B64.encode(raw))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey { id: self.id, key: self.key.verifying_key() }
    }

    /// A minisign signature file (prehashed, "ED") of `data`.
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> String {
        let hash = blake2::Blake2b512::digest(data);
        let sig = self.key.sign(&hash);
        let mut raw = ALG_PREHASHED.to_vec();
        raw.extend_from_slice(&self.id);
        raw.extend_from_slice(&sig.to_bytes());
        let tc = trusted_comment.replace('\n', " ");
        let mut global = sig.to_bytes().to_vec();
        global.extend_from_slice(tc.as_bytes());
        let gsig = self.key.sign(&global);
        format!(
            "untrusted comment: signature from cns secret key {}\n{}\ntrusted comment: {tc}\n{}\n",
            key_id_hex(&self.id),
            B64.encode(raw),
            B64.encode(gsig.to_bytes())
        )
    }
}

/// minisign's checksum of an encrypted secret key (BLAKE2b-256).
fn checksum(id: &[u8; 8], sk: &[u8; 64]) -> [u8; 32] {
    let mut h = blake2::Blake2b::<blake2::digest::consts::U32>::new();
    h.update(ALG);
    h.update(id);
    h.update(sk);
    h.finalize().into()
}

/// Who signed, once verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub key_id: String,
    pub trusted_comment: String,
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// The signature file cannot be read (truncated, not minisign's).
    Malformed(String),
    /// Signed by a key none of `keys` is (its id).
    UntrustedKey(String),
    /// The key is trusted, the signature does not match the data.
    BadSignature(String),
}

/// The key id a signature file names, without verifying anything.
pub fn signer_id(sig: &str) -> Option<String> {
    let raw = payload(sig, 1).ok()?;
    let id: [u8; 8] = raw.get(2..10)?.try_into().ok()?;
    Some(key_id_hex(&id))
}

/// Verifies a minisign signature file over `data` against `keys`.
pub fn verify(sig: &str, data: &[u8], keys: &[PublicKey]) -> std::result::Result<Signed, Rejected> {
    let lines: Vec<&str> = sig.lines().filter(|l| !l.trim().is_empty()).collect();
    let malformed = |w: &str| Rejected::Malformed(w.to_string());
    if lines.len() < 4 || !lines[2].starts_with("trusted comment: ") {
        return Err(malformed("the signature is truncated"));
    }
    let raw = B64.decode(lines[1].trim()).map_err(|_| malformed("the signature is not base64"))?;
    if raw.len() != 74 {
        return Err(malformed("the signature has the wrong length"));
    }
    let id: [u8; 8] = raw[2..10].try_into().map_err(|_| malformed("bad key id"))?;
    let key = keys.iter().find(|k| k.id == id).ok_or_else(|| Rejected::UntrustedKey(key_id_hex(&id)))?;
    let s: [u8; 64] = raw[10..74].try_into().map_err(|_| malformed("bad signature"))?;
    let signature = Signature::from_bytes(&s);
    let ok = match &raw[..2] {
        a if a == ALG_PREHASHED => key.key.verify(&blake2::Blake2b512::digest(data), &signature).is_ok(),
        a if a == ALG => key.key.verify(data, &signature).is_ok(),
        _ => return Err(malformed("unknown signature algorithm")),
    };
    if !ok {
        return Err(Rejected::BadSignature(key_id_hex(&id)));
    }
    let tc = lines[2].trim_start_matches("trusted comment: ");
    let g = B64.decode(lines[3].trim()).map_err(|_| malformed("the global signature is not base64"))?;
    let g: [u8; 64] = g.as_slice().try_into().map_err(|_| malformed("the global signature has the wrong length"))?;
    let mut global = s.to_vec();
    global.extend_from_slice(tc.as_bytes());
    if key.key.verify(&global, &Signature::from_bytes(&g)).is_err() {
        return Err(Rejected::BadSignature(key_id_hex(&id)));
    }
    Ok(Signed { key_id: key_id_hex(&id), trusted_comment: tc.to_string() })
}

/// Writes a new key pair: the secret key at `path` (0600, never over an
/// existing file), the public key at `path.pub`.
pub fn generate_files(path: &std::path::Path) -> Result<PublicKey> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pub_path = std::path::PathBuf::from(format!("{}.pub", path.display()));
    for p in [path, pub_path.as_path()] {
        if std::fs::symlink_metadata(p).is_ok() {
            return Err(Error::new(ErrorKind::Exists, format!("{} exists: cns never overwrites a key", p.display())).with_hint("choose another path, or remove the old key first"));
        }
    }
    let sk = SecretKey::generate();
    let write = |p: &std::path::Path, text: &str, mode: u32| -> Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).custom_flags(libc::O_NOFOLLOW).open(p).map_err(|e| Error::wrap(format!("cannot create {}", p.display()), e))?;
        f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| Error::wrap(format!("cannot write {}", p.display()), e))
    };
    write(path, &sk.to_file(), 0o600)?;
    if let Err(e) = write(&pub_path, &sk.public().to_file(), 0o644) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(sk.public())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_signatures_verify() {
        let sk = SecretKey::generate();
        let back = SecretKey::parse(&sk.to_file()).expect("secret key");
        assert_eq!(back.public(), sk.public());
        let pk = PublicKey::parse(&sk.public().to_file()).expect("public key");
        let sig = sk.sign(b"manifest bytes", "cns checkpoint web");
        let ok = verify(&sig, b"manifest bytes", std::slice::from_ref(&pk)).expect("verified");
        assert_eq!(ok.key_id, pk.id());
        assert_eq!(ok.trusted_comment, "cns checkpoint web");
        assert_eq!(signer_id(&sig), Some(pk.id()));
        assert!(matches!(verify(&sig, b"manifest bytez", std::slice::from_ref(&pk)), Err(Rejected::BadSignature(_))));
        let other = SecretKey::generate().public();
        assert!(matches!(verify(&sig, b"manifest bytes", &[other]), Err(Rejected::UntrustedKey(id)) if id == pk.id()));
        let truncated: String = sig.lines().take(2).collect::<Vec<_>>().join("\n");
        assert!(matches!(verify(&truncated, b"manifest bytes", std::slice::from_ref(&pk)), Err(Rejected::Malformed(_))));
        // A changed trusted comment breaks the global signature.
        let forged = sig.replace("cns checkpoint web", "cns checkpoint evil");
        assert!(matches!(verify(&forged, b"manifest bytes", &[pk]), Err(Rejected::BadSignature(_))));
    }
}
