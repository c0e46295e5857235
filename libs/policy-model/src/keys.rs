//! Client API keys: issued at random, shown once, stored only as SHA-256 plus a display prefix.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngExt;
use secrecy::SecretString;
use sha2::{Digest, Sha256};

/// Every issued key starts with this.
pub const KEY_PREFIX: &str = "sk-sy-";
/// Characters of a key shown in listings and logs.
pub const DISPLAY_CHARS: usize = 10;

/// Hex SHA-256 of a presented key.
pub fn hash(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// Lowercase hex (one allocation: a key is hashed on every request).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The display prefix of a key: enough to recognise it, never enough to use it.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(DISPLAY_CHARS).collect()
}

/// A new key: the secret (shown once), its hash and its display prefix.
pub fn issue() -> (SecretString, String, String) {
    let mut bytes = [0u8; 24];
    rand::rng().fill(&mut bytes);
    let key = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let (h, prefix) = (hash(&key), display_prefix(&key));
    (SecretString::from(key), h, prefix)
}

/// A short random id (`key_…`, `ovr_…`).
pub fn new_id(kind: &str) -> String {
    let mut bytes = [0u8; 6];
    rand::rng().fill(&mut bytes);
    format!("{kind}_{}", hex(&bytes))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn issued_keys_hash_and_prefix() {
        let (secret, h, prefix) = issue();
        let key = secret.expose_secret();
        assert!(key.starts_with(KEY_PREFIX) && key.len() == KEY_PREFIX.len() + 32);
        assert_eq!(h, hash(key));
        assert_eq!(h.len(), 64);
        assert_eq!(prefix.len(), DISPLAY_CHARS);
        assert!(key.starts_with(&prefix));
        assert_ne!(issue().1, h);
        assert_eq!(format!("{secret:?}"), "SecretBox<str>([REDACTED])");
    }

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        // The SHA-256 of "abc", as published.
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
