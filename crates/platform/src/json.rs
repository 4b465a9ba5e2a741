//! Request-body numbers as the OpenAPI documents define them. JSON Schema's `integer` is any
//! number with a zero fraction, so `5.0` is as valid a quantity as `5`; serde's integer types
//! refuse it. Fields the documents declare `integer` deserialize with [`whole_number`].

use serde::{Deserialize, Deserializer, de::Error as _};

/// The largest integer an `f64` holds exactly.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// A non-negative whole number, written with or without a zero fraction, that fits `T`.
pub fn whole_number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let number = serde_json::Number::deserialize(deserializer)?;
    let whole = match number.as_u64() {
        Some(n) => n,
        None => match number.as_f64() {
            Some(f) if f.fract() == 0.0 && (0.0..=MAX_EXACT).contains(&f) => f as u64,
            _ => {
                return Err(D::Error::custom(format!(
                    "{number} is not a whole number ≥ 0"
                )));
            }
        },
    };
    T::try_from(whole).map_err(|_| D::Error::custom(format!("{whole} is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Line {
        #[serde(deserialize_with = "whole_number")]
        quantity: u32,
    }

    fn quantity(json: &str) -> Result<u32, String> {
        serde_json::from_str::<Line>(json)
            .map(|l| l.quantity)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_whole_number_is_read_with_or_without_a_zero_fraction() {
        assert_eq!(quantity(r#"{"quantity": 5}"#), Ok(5));
        assert_eq!(quantity(r#"{"quantity": 5.0}"#), Ok(5));
        assert_eq!(quantity(r#"{"quantity": 5e2}"#), Ok(500));
    }

    #[test]
    fn fractions_negatives_and_overflows_are_refused() {
        for json in [
            r#"{"quantity": 5.5}"#,
            r#"{"quantity": -1}"#,
            r#"{"quantity": -1.0}"#,
            r#"{"quantity": 4294967296}"#,
            r#"{"quantity": "5"}"#,
        ] {
            assert!(quantity(json).is_err(), "{json} was accepted");
        }
    }
}
