//! Money as integer nano-USD. Floats never hold money: prices are parsed from their decimal text
//! and every cost is computed in integers, rounding up so a request is never under-charged.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Nano-USD in one US dollar.
pub const NANOS_PER_USD: i64 = 1_000_000_000;

/// An amount of money in integer nano-USD (10⁻⁹ USD). Signed so that refunds and validation of
/// bad input can be expressed; budgets and prices reject negatives where they are loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(i64);

impl Money {
    /// Zero dollars.
    pub const ZERO: Money = Money(0);
    /// The largest representable amount (about 9.2 billion USD).
    pub const MAX: Money = Money(i64::MAX);

    /// An amount of nano-USD.
    pub const fn from_nanos(nanos: i64) -> Self {
        Money(nanos)
    }

    /// Whole US dollars, saturating at the bounds.
    pub const fn from_usd(usd: i64) -> Self {
        Money(usd.saturating_mul(NANOS_PER_USD))
    }

    /// The amount in nano-USD.
    pub const fn nanos(self) -> i64 {
        self.0
    }

    /// True below zero.
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// Addition that reports overflow instead of wrapping.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    /// Subtraction that reports overflow instead of wrapping.
    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).map(Money)
    }

    /// Addition clamped to the representable range.
    pub fn saturating_add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }

    /// The amount as approximate USD, for display and metrics only (never for arithmetic).
    pub fn as_usd_f64(self) -> f64 {
        self.0 as f64 / NANOS_PER_USD as f64
    }

    /// Parses a decimal USD amount such as `"0.15"`, `"3"`, `"-1.5"` or `"0.000000001"`.
    /// More than nine decimal places cannot be represented and is an error, not a rounding.
    pub fn parse_usd(text: &str) -> Result<Money, MoneyParseError> {
        let s = text.trim();
        let (negative, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        let (whole, frac) = match digits.split_once('.') {
            Some((w, f)) => (w, f),
            None => (digits, ""),
        };
        if whole.is_empty() && frac.is_empty() {
            return Err(MoneyParseError::Invalid(text.to_string()));
        }
        if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MoneyParseError::Invalid(text.to_string()));
        }
        if frac.len() > 9 {
            return Err(MoneyParseError::TooPrecise(text.to_string()));
        }
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            whole
                .parse()
                .map_err(|_| MoneyParseError::OutOfRange(text.to_string()))?
        };
        let mut frac_nanos: i64 = 0;
        for (i, b) in frac.bytes().enumerate() {
            frac_nanos += i64::from(b - b'0') * 10_i64.pow(8 - i as u32);
        }
        let nanos = whole
            .checked_mul(NANOS_PER_USD)
            .and_then(|w| w.checked_add(frac_nanos))
            .ok_or_else(|| MoneyParseError::OutOfRange(text.to_string()))?;
        Ok(Money(if negative { -nanos } else { nanos }))
    }
}

/// Why a decimal amount could not become [`Money`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyParseError {
    /// Not a decimal number.
    #[error("`{0}` is not a decimal USD amount")]
    Invalid(String),
    /// More than nine decimal places.
    #[error("`{0}` has more than 9 decimal places (the unit is 1 nano-USD)")]
    TooPrecise(String),
    /// Outside ±9.2 billion USD.
    #[error("`{0}` is out of range")]
    OutOfRange(String),
}

impl FromStr for Money {
    type Err = MoneyParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Money::parse_usd(s)
    }
}

impl fmt::Display for Money {
    /// Exact decimal USD with trailing zeros trimmed: `0.15`, `3`, `-0.000000001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / NANOS_PER_USD as u64;
        let frac = abs % NANOS_PER_USD as u64;
        if frac == 0 {
            write!(f, "{sign}{whole}")
        } else {
            // The nine digits of the fraction on the stack, trailing zeros trimmed.
            let mut digits = [b'0'; 9];
            let mut rest = frac;
            for d in digits.iter_mut().rev() {
                *d = b'0' + (rest % 10) as u8;
                rest /= 10;
            }
            let end = digits.iter().rposition(|&d| d != b'0').map_or(0, |i| i + 1);
            let frac = std::str::from_utf8(&digits[..end]).map_err(|_| fmt::Error)?;
            write!(f, "{sign}{whole}.{frac}")
        }
    }
}

impl Serialize for Money {
    /// Serialized as exact decimal USD text, so no consumer ever reads money through a float.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Money {
    /// Accepts decimal USD as a string (`"0.15"`) or a number (`0.15`, `3`). A number is read
    /// through its shortest decimal form, so `0.15` is exactly 150,000,000 nano-USD.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Money;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal USD amount")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Money, E> {
                Money::parse_usd(v).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Money, E> {
                v.checked_mul(NANOS_PER_USD)
                    .map(Money)
                    .ok_or_else(|| E::custom(MoneyParseError::OutOfRange(v.to_string())))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Money, E> {
                i64::try_from(v)
                    .ok()
                    .and_then(|v| v.checked_mul(NANOS_PER_USD))
                    .map(Money)
                    .ok_or_else(|| E::custom(MoneyParseError::OutOfRange(v.to_string())))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Money, E> {
                if !v.is_finite() {
                    return Err(E::custom(MoneyParseError::Invalid(v.to_string())));
                }
                Money::parse_usd(&format!("{v}")).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A price per one million tokens (the unit providers publish), held as nano-USD per 1M tokens.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct PricePerMtok(pub Money);

impl PricePerMtok {
    /// The cost of `tokens` tokens at this price, rounded up to the next nano-USD.
    pub fn cost_of(self, tokens: u64) -> Money {
        let per_mtok = i128::from(self.0.nanos());
        let total = per_mtok * i128::from(tokens);
        // Ceiling division that is also right for negative prices (never produced by validated
        // config, but the arithmetic stays total).
        let cost = total.div_euclid(1_000_000) + i128::from(total.rem_euclid(1_000_000) != 0);
        Money(i64::try_from(cost).unwrap_or(if cost < 0 { i64::MIN } else { i64::MAX }))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn displays_exact_decimal_usd_with_trailing_zeros_trimmed() {
        let shown = |n: i64| Money::from_nanos(n).to_string();
        assert_eq!(shown(150_000_000), "0.15");
        assert_eq!(shown(3_000_000_000), "3");
        assert_eq!(shown(-1), "-0.000000001");
        assert_eq!(shown(1_000_000_010), "1.00000001");
        assert_eq!(shown(0), "0");
    }

    #[test]
    fn parses_decimal_text_exactly() {
        assert_eq!(Money::parse_usd("0.15").unwrap().nanos(), 150_000_000);
        assert_eq!(Money::parse_usd("3").unwrap().nanos(), 3_000_000_000);
        assert_eq!(Money::parse_usd(".5").unwrap().nanos(), 500_000_000);
        assert_eq!(Money::parse_usd("-1.25").unwrap().nanos(), -1_250_000_000);
        assert_eq!(Money::parse_usd("0.000000001").unwrap().nanos(), 1);
        assert!(matches!(
            Money::parse_usd("0.0000000001"),
            Err(MoneyParseError::TooPrecise(_))
        ));
        assert!(Money::parse_usd("abc").is_err());
        assert!(Money::parse_usd("").is_err());
        assert!(Money::parse_usd(".").is_err());
        assert!(Money::parse_usd("1e3").is_err());
        assert!(matches!(
            Money::parse_usd("99999999999999999999"),
            Err(MoneyParseError::OutOfRange(_))
        ));
    }

    #[test]
    fn json_numbers_and_strings_deserialize_exactly() {
        let m: Money = serde_json::from_str("0.15").unwrap();
        assert_eq!(m.nanos(), 150_000_000);
        let m: Money = serde_json::from_str("\"2.5\"").unwrap();
        assert_eq!(m.nanos(), 2_500_000_000);
        let m: Money = serde_json::from_str("7").unwrap();
        assert_eq!(m, Money::from_usd(7));
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"7\"");
    }

    #[test]
    fn cost_rounds_up_never_under_charges() {
        // $0.15 per 1M tokens: one token costs exactly 150 nano-USD.
        let price = PricePerMtok(Money::parse_usd("0.15").unwrap());
        assert_eq!(price.cost_of(1).nanos(), 150);
        assert_eq!(price.cost_of(1_000_000).nanos(), 150_000_000);
        // $0.000001 per 1M tokens: one token costs 0.001 nano-USD, charged as 1.
        let price = PricePerMtok(Money::parse_usd("0.000001").unwrap());
        assert_eq!(price.cost_of(1).nanos(), 1);
        assert_eq!(price.cost_of(1_000).nanos(), 1);
        assert_eq!(price.cost_of(1_001).nanos(), 2);
        assert_eq!(price.cost_of(0).nanos(), 0);
        let price = PricePerMtok(Money::from_usd(10));
        assert_eq!(price.cost_of(3).nanos(), 30_000);
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(nanos in any::<i64>().prop_filter("min has no abs", |n| *n != i64::MIN)) {
            let m = Money::from_nanos(nanos);
            prop_assert_eq!(Money::parse_usd(&m.to_string()).unwrap(), m);
        }

        #[test]
        fn cost_is_ceiling_of_exact_cost(price in 0i64..1_000_000_000_000, tokens in 0u64..10_000_000) {
            let cost = PricePerMtok(Money::from_nanos(price)).cost_of(tokens).nanos() as i128;
            let exact_times_mtok = i128::from(price) * i128::from(tokens);
            prop_assert!(cost * 1_000_000 >= exact_times_mtok);
            prop_assert!((cost - 1) * 1_000_000 < exact_times_mtok || cost == 0);
        }

        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = Money::parse_usd(&s);
        }
    }
}
