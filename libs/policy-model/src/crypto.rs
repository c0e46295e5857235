//! BYOK secrets at rest: envelope encryption with AES-256-GCM. Each secret gets its own random
//! data key; the data key is wrapped by the master key. Both encryptions bind the org and the
//! provider as associated data, so a ciphertext moved to another org or provider fails to open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngExt;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};

/// Environment variable holding the master key (base64 of 32 bytes).
pub const MASTER_KEY_ENV: &str = "SWITCHYARD_MASTER_KEY";
/// Environment variable naming a file that holds the master key (base64 of 32 bytes).
pub const MASTER_KEY_FILE_ENV: &str = "SWITCHYARD_MASTER_KEY_FILE";

/// The key that wraps every data key. `Debug` prints `[REDACTED]`.
pub struct MasterKey(SecretBox<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([REDACTED])")
    }
}

/// Why a secret could not be sealed or opened. Never carries secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The master key is not base64 of 32 bytes.
    #[error("the master key must be base64 of exactly 32 bytes")]
    BadMasterKey,
    /// The master key file could not be read.
    #[error("cannot read the master key file: {0}")]
    MasterKeyFile(String),
    /// The sealed value is not well formed.
    #[error("sealed secret is malformed: {0}")]
    Malformed(&'static str),
    /// Authentication failed: wrong master key, tampered, or sealed for another org or provider.
    #[error(
        "sealed secret cannot be opened (wrong master key, tampered, or sealed for another org or provider)"
    )]
    Rejected,
}

impl MasterKey {
    /// From base64 text.
    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let bytes = B64
            .decode(text.trim())
            .map_err(|_| CryptoError::BadMasterKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadMasterKey)?;
        Ok(MasterKey(SecretBox::new(Box::new(key))))
    }

    /// From `SWITCHYARD_MASTER_KEY` or the file named by `SWITCHYARD_MASTER_KEY_FILE`; `None`
    /// when neither is set.
    pub fn from_env() -> Result<Option<Self>, CryptoError> {
        if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
            return Self::from_base64(&text).map(Some);
        }
        if let Ok(path) = std::env::var(MASTER_KEY_FILE_ENV) {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| CryptoError::MasterKeyFile(format!("{path}: {}", e.kind())))?;
            return Self::from_base64(&text).map(Some);
        }
        Ok(None)
    }

    /// A fresh random key, as base64 (for `switchyard policy new-master-key`).
    pub fn generate_base64() -> String {
        let mut key = [0u8; 32];
        rand::rng().fill(&mut key);
        B64.encode(key)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&Key::<Aes256Gcm>::from(*self.0.expose_secret()))
    }
}

/// A sealed secret as stored in config and in Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedSecret {
    /// Format version.
    pub v: u8,
    /// The data key, encrypted by the master key (base64).
    pub wrapped_key: String,
    /// Nonce of the wrapping (base64).
    pub key_nonce: String,
    /// Nonce of the secret's encryption (base64).
    pub nonce: String,
    /// The secret, encrypted by the data key (base64).
    pub ciphertext: String,
}

fn aad(org: &str, provider: &str) -> Vec<u8> {
    format!("switchyard:byok:v1:{org}:{provider}").into_bytes()
}

fn nonce() -> [u8; 12] {
    let mut n = [0u8; 12];
    rand::rng().fill(&mut n);
    n
}

/// Encrypts `secret` for `org` and `provider`.
pub fn seal(
    master: &MasterKey,
    org: &str,
    provider: &str,
    secret: &str,
) -> Result<SealedSecret, CryptoError> {
    let aad = aad(org, provider);
    let mut data_key = [0u8; 32];
    rand::rng().fill(&mut data_key);
    let (key_nonce, value_nonce) = (nonce(), nonce());
    let data_cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(data_key));
    let ciphertext = data_cipher
        .encrypt(
            &value_nonce.into(),
            Payload {
                msg: secret.as_bytes(),
                aad: &aad,
            },
        )
        .map_err(|_| CryptoError::Rejected)?;
    let wrapped = master
        .cipher()
        .encrypt(
            &key_nonce.into(),
            Payload {
                msg: &data_key,
                aad: &aad,
            },
        )
        .map_err(|_| CryptoError::Rejected)?;
    data_key.fill(0);
    Ok(SealedSecret {
        v: 1,
        wrapped_key: B64.encode(wrapped),
        key_nonce: B64.encode(key_nonce),
        nonce: B64.encode(value_nonce),
        ciphertext: B64.encode(ciphertext),
    })
}

fn decode_nonce(text: &str) -> Result<[u8; 12], CryptoError> {
    B64.decode(text)
        .map_err(|_| CryptoError::Malformed("nonce is not base64"))?
        .try_into()
        .map_err(|_| CryptoError::Malformed("nonce is not 12 bytes"))
}

/// Decrypts a sealed secret for `org` and `provider`.
pub fn open(
    master: &MasterKey,
    org: &str,
    provider: &str,
    sealed: &SealedSecret,
) -> Result<SecretString, CryptoError> {
    if sealed.v != 1 {
        return Err(CryptoError::Malformed("unknown version"));
    }
    let aad = aad(org, provider);
    let wrapped = B64
        .decode(&sealed.wrapped_key)
        .map_err(|_| CryptoError::Malformed("wrapped_key is not base64"))?;
    let ciphertext = B64
        .decode(&sealed.ciphertext)
        .map_err(|_| CryptoError::Malformed("ciphertext is not base64"))?;
    let key_nonce = decode_nonce(&sealed.key_nonce)?;
    let value_nonce = decode_nonce(&sealed.nonce)?;
    let data_key: [u8; 32] = master
        .cipher()
        .decrypt(
            &key_nonce.into(),
            Payload {
                msg: &wrapped,
                aad: &aad,
            },
        )
        .map_err(|_| CryptoError::Rejected)?
        .try_into()
        .map_err(|_| CryptoError::Rejected)?;
    let plain = Aes256Gcm::new(&Key::<Aes256Gcm>::from(data_key))
        .decrypt(
            &value_nonce.into(),
            Payload {
                msg: &ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| CryptoError::Rejected)?;
    let text =
        String::from_utf8(plain).map_err(|_| CryptoError::Malformed("secret is not UTF-8"))?;
    Ok(SecretString::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> MasterKey {
        MasterKey::from_base64(&MasterKey::generate_base64()).unwrap()
    }

    #[test]
    fn round_trip() {
        let m = master();
        let sealed = seal(&m, "acme", "openai", "sk-live-abc").unwrap();
        assert!(!sealed.ciphertext.contains("sk-live"));
        assert_eq!(
            open(&m, "acme", "openai", &sealed).unwrap().expose_secret(),
            "sk-live-abc"
        );
        // Two seals of one secret differ (fresh data key and nonces).
        assert_ne!(seal(&m, "acme", "openai", "sk-live-abc").unwrap(), sealed);
    }

    #[test]
    fn moved_tampered_or_foreign_ciphertexts_are_rejected() {
        let m = master();
        let sealed = seal(&m, "acme", "openai", "sk-live-abc").unwrap();
        assert_eq!(
            open(&m, "globex", "openai", &sealed).unwrap_err(),
            CryptoError::Rejected
        );
        assert_eq!(
            open(&m, "acme", "anthropic", &sealed).unwrap_err(),
            CryptoError::Rejected
        );
        assert_eq!(
            open(&master(), "acme", "openai", &sealed).unwrap_err(),
            CryptoError::Rejected
        );
        let mut bytes = B64.decode(&sealed.ciphertext).unwrap();
        bytes[0] ^= 1;
        let tampered = SealedSecret {
            ciphertext: B64.encode(bytes),
            ..sealed.clone()
        };
        assert_eq!(
            open(&m, "acme", "openai", &tampered).unwrap_err(),
            CryptoError::Rejected
        );
        let mut bytes = B64.decode(&sealed.wrapped_key).unwrap();
        bytes[3] ^= 0x80;
        let tampered = SealedSecret {
            wrapped_key: B64.encode(bytes),
            ..sealed.clone()
        };
        assert_eq!(
            open(&m, "acme", "openai", &tampered).unwrap_err(),
            CryptoError::Rejected
        );
        let bad = SealedSecret {
            nonce: "!!".into(),
            ..sealed
        };
        assert!(matches!(
            open(&m, "acme", "openai", &bad),
            Err(CryptoError::Malformed(_))
        ));
    }

    #[test]
    fn master_keys_are_checked_and_redacted() {
        assert_eq!(
            MasterKey::from_base64("c2hvcnQ=").unwrap_err(),
            CryptoError::BadMasterKey
        );
        assert_eq!(
            MasterKey::from_base64("not base64!").unwrap_err(),
            CryptoError::BadMasterKey
        );
        assert_eq!(format!("{:?}", master()), "MasterKey([REDACTED])");
    }
}
