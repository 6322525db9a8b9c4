//! Secrets as the state machine sees them: an opaque slow hash (never the plaintext), plus the
//! pure rule a plaintext secret must satisfy before anyone hashes it.

use std::fmt;

use bincode::{Decode, Encode};

/// Shortest accepted secret, in characters.
pub const SECRET_CHARS_MIN: usize = 8;
/// Longest accepted secret, in characters.
pub const SECRET_CHARS_MAX: usize = 25;
/// Longest stored hash text (a PHC string such as `$argon2id$v=19$…`), in bytes.
pub const SECRET_HASH_BYTES_MAX: usize = 256;

/// Why a plaintext secret or a hash is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    #[error("a secret has 8 to 25 characters")]
    Length,
    #[error("a secret needs at least one lowercase letter, one uppercase letter and one digit")]
    Composition,
    #[error("a secret hash is 1 to 256 bytes of printable ASCII")]
    Hash,
}

/// Checks the SPEC §4 rule for a plaintext secret: 8–25 characters with at least one lowercase
/// letter, one uppercase letter and one digit.
pub fn validate_secret(plaintext: &str) -> Result<(), SecretError> {
    let length = plaintext.chars().count();
    if !(SECRET_CHARS_MIN..=SECRET_CHARS_MAX).contains(&length) {
        return Err(SecretError::Length);
    }
    let lower = plaintext.chars().any(|c| c.is_ascii_lowercase());
    let upper = plaintext.chars().any(|c| c.is_ascii_uppercase());
    let digit = plaintext.chars().any(|c| c.is_ascii_digit());
    let control = plaintext.chars().any(char::is_control);
    if lower && upper && digit && !control {
        Ok(())
    } else {
        Err(SecretError::Composition)
    }
}

/// A salted slow hash of a secret, as produced at the edge (argon2id PHC text). The core treats
/// it as opaque bytes; `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, Encode)]
pub struct SecretHash(String);

impl SecretHash {
    pub fn new(text: String) -> Result<SecretHash, SecretError> {
        let printable = text.bytes().all(|byte| byte.is_ascii_graphic());
        if text.is_empty() || text.len() > SECRET_HASH_BYTES_MAX || !printable {
            return Err(SecretError::Hash);
        }
        Ok(SecretHash(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SecretHash(<redacted>)")
    }
}

impl<Context> Decode<Context> for SecretHash {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let text = String::decode(decoder)?;
        SecretHash::new(text).map_err(|_| bincode::error::DecodeError::Other("invalid secret hash"))
    }
}
bincode::impl_borrow_decode!(SecretHash);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_rules() {
        assert_eq!(validate_secret("Abcdefg1"), Ok(()));
        assert_eq!(validate_secret("Abcdef1"), Err(SecretError::Length));
        assert_eq!(
            validate_secret("Abcdefghijklmnopqrstuvwx12"),
            Err(SecretError::Length)
        );
        assert_eq!(validate_secret("abcdefg1"), Err(SecretError::Composition));
        assert_eq!(validate_secret("ABCDEFG1"), Err(SecretError::Composition));
        assert_eq!(validate_secret("Abcdefgh"), Err(SecretError::Composition));
        assert_eq!(validate_secret("Abcdef1\n"), Err(SecretError::Composition));
    }

    #[test]
    fn hashes_are_never_printed() {
        let hash = SecretHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into());
        let hash = hash.expect("valid hash text");
        assert!(!format!("{hash:?}").contains("argon2"));
        assert!(SecretHash::new(String::new()).is_err());
        assert!(SecretHash::new("a b".into()).is_err());
    }
}
