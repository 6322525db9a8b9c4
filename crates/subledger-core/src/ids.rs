//! Identifiers and instants: api keys, dense account ids, command and secret ids, sequence
//! numbers, timestamps and currency codes. Each is a newtype that can only hold a valid value.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use bincode::{Decode, Encode};
use uuid::Uuid;

/// Length of an api key in characters.
pub const API_KEY_CHARS: usize = 8;

/// Why a text is not a valid identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    #[error("an api key is 8 characters of a-z and 0-9")]
    ApiKey,
    #[error("a currency is 3 letters A-Z (ISO 4217)")]
    Currency,
    #[error("not a UUID")]
    Uuid,
}

/// An account's public key: exactly 8 characters from `[a-z0-9]`, unique, never reused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiKey([u8; API_KEY_CHARS]);

impl ApiKey {
    /// The key from its 8 bytes, if every byte is in `[a-z0-9]`.
    pub fn from_bytes(bytes: [u8; API_KEY_CHARS]) -> Result<ApiKey, IdError> {
        if bytes
            .iter()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit())
        {
            Ok(ApiKey(bytes))
        } else {
            Err(IdError::ApiKey)
        }
    }

    /// A key from 8 random bytes (from the caller's RNG): each byte picks one of 36 characters.
    /// The slight bias (256 is not a multiple of 36) is irrelevant for identifiers.
    pub fn from_random(random: [u8; API_KEY_CHARS]) -> ApiKey {
        const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        ApiKey(random.map(|byte| ALPHABET[usize::from(byte) % ALPHABET.len()]))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever stored, so this cannot fail; the fallback keeps it panic-free.
        std::str::from_utf8(&self.0).unwrap_or("????????")
    }

    pub fn as_bytes(&self) -> [u8; API_KEY_CHARS] {
        self.0
    }
}

impl Hash for ApiKey {
    /// One `u64` write: FxHash turns it into a single multiply.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from_le_bytes(self.0));
    }
}

impl FromStr for ApiKey {
    type Err = IdError;

    fn from_str(text: &str) -> Result<ApiKey, IdError> {
        let bytes: [u8; API_KEY_CHARS] = text.as_bytes().try_into().map_err(|_| IdError::ApiKey)?;
        ApiKey::from_bytes(bytes)
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "ApiKey({})", self.as_str())
    }
}

impl Encode for ApiKey {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.0.encode(encoder)
    }
}

impl<Context> Decode<Context> for ApiKey {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let bytes = <[u8; API_KEY_CHARS]>::decode(decoder)?;
        ApiKey::from_bytes(bytes).map_err(|_| bincode::error::DecodeError::Other("invalid api key"))
    }
}
bincode::impl_borrow_decode!(ApiKey);

/// Dense internal index of an account, assigned in order of creation (0, 1, 2, …) and recorded
/// in the creating event. Events refer to accounts by this id: 1–5 bytes on disk instead of 8,
/// and a `Vec` index instead of a hash lookup on replay.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Encode, Decode)]
pub struct AccountId(pub u32);

impl AccountId {
    pub fn index(self) -> usize {
        // u32 always fits usize on the 32- and 64-bit targets we build for.
        self.0 as usize
    }
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Encode, Decode)]
        pub struct $name([u8; 16]);

        impl $name {
            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid.into_bytes())
            }

            pub const fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(bytes)
            }

            pub fn to_bytes(self) -> [u8; 16] {
                self.0
            }

            pub fn to_uuid(self) -> Uuid {
                Uuid::from_bytes(self.0)
            }
        }

        impl Hash for $name {
            fn hash<H: Hasher>(&self, state: &mut H) {
                state.write_u128(u128::from_le_bytes(self.0));
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(text: &str) -> Result<Self, IdError> {
                Uuid::parse_str(text).map(Self::from_uuid).map_err(|_| IdError::Uuid)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.to_uuid().hyphenated().fmt(formatter)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(formatter, "{}({})", stringify!($name), self)
            }
        }
    };
}

uuid_id!(
    /// The client-supplied or generated id of a money command; the idempotency key.
    CommandId
);
uuid_id!(
    /// The id of one of an account's secrets.
    SecretId
);

/// Position of an event in the log: 1 for the first event, then +1 per event, never reused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Encode, Decode)]
pub struct Sequence(pub u64);

impl Sequence {
    /// The sequence number before any event.
    pub const ZERO: Sequence = Sequence(0);

    pub fn next(self) -> Sequence {
        Sequence(self.0.saturating_add(1))
    }
}

impl fmt::Display for Sequence {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

/// A UTC instant in milliseconds since the Unix epoch. The state machine never reads a clock:
/// the engine stamps each committed batch with one and records it in the log.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Encode, Decode)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn millis(self) -> i64 {
        self.0
    }
}

/// An ISO 4217 currency code: three letters `A`–`Z`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    /// The default currency of a primary account family.
    pub const EUR: Currency = Currency(*b"EUR");

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl FromStr for Currency {
    type Err = IdError;

    fn from_str(text: &str) -> Result<Currency, IdError> {
        let bytes: [u8; 3] = text.as_bytes().try_into().map_err(|_| IdError::Currency)?;
        if bytes.iter().all(u8::is_ascii_uppercase) {
            Ok(Currency(bytes))
        } else {
            Err(IdError::Currency)
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Currency({})", self.as_str())
    }
}

impl Encode for Currency {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.0.encode(encoder)
    }
}

impl<Context> Decode<Context> for Currency {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let bytes = <[u8; 3]>::decode(decoder)?;
        if bytes.iter().all(u8::is_ascii_uppercase) {
            Ok(Currency(bytes))
        } else {
            Err(bincode::error::DecodeError::Other("invalid currency"))
        }
    }
}
bincode::impl_borrow_decode!(Currency);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_are_validated() {
        assert!("abc12345".parse::<ApiKey>().is_ok());
        for bad in [
            "abc1234",
            "abc123456",
            "ABC12345",
            "abc-1234",
            "",
            "abc1234é",
        ] {
            assert_eq!(bad.parse::<ApiKey>(), Err(IdError::ApiKey), "{bad:?}");
        }
        let generated = ApiKey::from_random([0, 35, 36, 255, 7, 8, 9, 10]);
        assert!(generated.as_str().parse::<ApiKey>().is_ok());
    }

    #[test]
    fn currencies_are_validated() {
        assert_eq!(
            "USD".parse::<Currency>().map(|c| c.to_string()),
            Ok("USD".into())
        );
        for bad in ["usd", "US", "EURO", "E1R"] {
            assert!(bad.parse::<Currency>().is_err(), "{bad:?}");
        }
    }
}
