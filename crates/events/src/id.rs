//! Identifiers that end up inside NATS subjects, `Nats-Msg-Id`s and KV keys.
//!
//! KV keys allow only `[-/_=.a-zA-Z0-9]` and subjects must not contain `*`, `>`, `.` or spaces
//! inside a token, so every id that crosses the wire is validated when it is built or decoded:
//! a bad id is a decode error (dead letter), never a malformed key or a wildcard publish.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a string was refused as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {rule}")]
pub struct InvalidId {
    /// Which identifier was being built (`sku`, `customer id`, ...).
    pub kind: &'static str,
    /// The refused input, for the error message.
    pub value: String,
    /// The rule it broke.
    pub rule: &'static str,
}

/// The unique id of an order: a UUID v7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(pub Uuid);

impl OrderId {
    /// A fresh, time-ordered order id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for OrderId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hyphenated lowercase: valid in subjects and KV keys as is.
        self.0.fmt(f)
    }
}

impl std::str::FromStr for OrderId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self).map_err(|_| InvalidId {
            kind: "order id",
            value: s.to_owned(),
            rule: "must be a UUID",
        })
    }
}

impl JsonSchema for OrderId {
    fn schema_name() -> Cow<'static, str> {
        "OrderId".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "uuid" })
    }
}

/// Declares a string identifier restricted to `[A-Za-z0-9_-]{1,64}`: safe as a subject token
/// and as a KV key segment.
macro_rules! token_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                if is_token(&value) {
                    Ok(Self(value))
                } else {
                    Err(InvalidId { kind: $kind, value, rule: TOKEN_RULE })
                }
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidId;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Self::new(value)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "pattern": TOKEN_PATTERN })
            }
        }
    };
}

/// What a token identifier ([`Sku`], [`CustomerId`]) may be, as a regular expression (for the
/// JSON Schemas and the OpenAPI documents; [`is_token`] is the same rule, tested to agree).
pub const TOKEN_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";
/// The longest token identifier.
pub const TOKEN_MAX_LEN: usize = 64;
const TOKEN_RULE: &str = "1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'";

fn is_token(value: &str) -> bool {
    (1..=TOKEN_MAX_LEN).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

token_id!(
    /// A stock keeping unit: the key of a stock record.
    Sku,
    "sku"
);
token_id!(
    /// The customer who placed an order.
    CustomerId,
    "customer id"
);

/// An ISO 4217 alphabetic currency code (three upper-case letters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    /// Validates the shape of an ISO 4217 code; which codes are accepted is the API's policy.
    pub fn new(value: impl Into<String>) -> Result<Self, InvalidId> {
        let value = value.into();
        if value.len() == 3 && value.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(value))
        } else {
            Err(InvalidId {
                kind: "currency",
                value,
                rule: "three upper-case letters (ISO 4217)",
            })
        }
    }

    /// The code as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = InvalidId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for Currency {
    fn schema_name() -> Cow<'static, str> {
        "Currency".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": "^[A-Z]{3}$" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sku_accepts_subject_safe_tokens() {
        assert!(Sku::new("SKU-001_a").is_ok());
    }

    #[test]
    fn sku_refuses_wildcards_dots_spaces_and_empty() {
        for bad in ["", "a.b", "a*", ">", "a b", "ü", &"x".repeat(65)] {
            assert!(Sku::new(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn currency_must_be_three_upper_case_letters() {
        assert!(Currency::new("EUR").is_ok());
        assert!(Currency::new("eur").is_err());
        assert!(Currency::new("EURO").is_err());
    }

    proptest::proptest! {
        /// The documents publish the pattern; the types enforce `is_token`: they must agree.
        #[test]
        fn the_token_pattern_accepts_exactly_what_the_types_accept(
            value in "[A-Za-z0-9_\\-.* >ü\n]{0,70}"
        ) {
            let pattern = regex::Regex::new(TOKEN_PATTERN).unwrap();
            proptest::prop_assert_eq!(pattern.is_match(&value), Sku::new(value.clone()).is_ok());
        }
    }

    #[test]
    fn a_bad_sku_fails_to_deserialize_with_the_rule() {
        let err = serde_json::from_str::<Sku>("\"a.b\"").unwrap_err();
        assert!(err.to_string().contains("invalid sku"), "{err}");
    }
}
