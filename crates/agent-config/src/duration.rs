//! Durations as the GitLab agent's config writes them: Go duration strings
//! (`1h`, `90m`, `1h30m`, `3600s`, `1.5s`, `500ms`), which is also how
//! protobuf's JSON mapping spells a Duration (`3600s`).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("duration {0:?} lacks a unit (e.g. 10s, 5m, 1h)")]
    NoUnit(String),
    #[error("duration {0:?} is not a number followed by a unit")]
    NotANumber(String),
    #[error("duration {0:?} has an invalid number")]
    BadNumber(String),
    #[error("duration {text:?} has unknown unit {unit:?}")]
    UnknownUnit { text: String, unit: String },
    #[error("duration {0:?} is out of range")]
    OutOfRange(String),
}

/// Parses a Go duration string. Negative durations are refused: no timeout in
/// the schema can be negative.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| DurationError::NoUnit(text.to_owned()))?;
        if number_len == 0 {
            return Err(DurationError::NotANumber(text.to_owned()));
        }
        let value: f64 = rest[..number_len]
            .parse()
            .map_err(|_| DurationError::BadNumber(text.to_owned()))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            unit => {
                return Err(DurationError::UnknownUnit {
                    text: text.to_owned(),
                    unit: unit.to_owned(),
                });
            }
        };
        rest = &rest[unit_len..];
        total += value * seconds_per_unit;
    }
    Duration::try_from_secs_f64(total).map_err(|_| DurationError::OutOfRange(text.to_owned()))
}

/// Formats as whole or fractional seconds (`3600s`), the protobuf JSON form.
pub fn format(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(de)?;
    parse(&text).map_err(serde::de::Error::custom)
}

pub fn serialize<S: Serializer>(d: &Duration, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(&format(*d))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases = [
            ("3600s", 3600.0),
            ("1h", 3600.0),
            ("1h30m", 5400.0),
            ("90m", 5400.0),
            ("1.5s", 1.5),
            ("500ms", 0.5),
            ("0", 0.0),
        ];
        for (text, secs) in cases {
            assert_eq!(parse(text), Ok(Duration::from_secs_f64(secs)), "{text}");
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        for bad in ["", "10", "s", "-5s", "1d", "1h-", "h1", "1..5s"] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    proptest! {
        #[test]
        fn formatted_durations_parse_back(secs in 0u64..10_000_000, millis in 0u32..1000) {
            let d = Duration::from_secs(secs) + Duration::from_millis(millis.into());
            let back = parse(&format(d)).expect("own format parses");
            let diff = back.abs_diff(d);
            prop_assert!(diff < Duration::from_micros(1), "{d:?} -> {back:?}");
        }

        #[test]
        fn never_panics(text in "\\PC{0,20}") {
            let _ = parse(&text);
        }
    }
}
