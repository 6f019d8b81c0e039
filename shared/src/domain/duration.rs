//! ISO 8601 durations (`PT2H`, `P2D`, `P1DT30M`, `PT45S`, `P1W`), as used by wait steps and the
//! policy file. Years and months are refused: their length depends on the calendar.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IsoDuration {
    seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an ISO 8601 duration such as PT2H, P1DT30M or PT45S (years and months are not accepted)")]
pub struct DurationError(String);

/// The longest duration any field accepts (ten years): every `now + duration` the system
/// computes then stays far inside chrono's range, so time arithmetic cannot overflow.
pub const MAX_DURATION_SECS: u64 = 10 * 366 * 86_400;

impl IsoDuration {
    pub const fn from_secs(seconds: u64) -> Self {
        Self { seconds }
    }

    pub fn as_secs(self) -> u64 {
        self.seconds
    }

    pub fn to_chrono(self) -> chrono::Duration {
        // `from_secs` is not range-checked; clamp so no sum with a date can overflow.
        chrono::Duration::seconds(self.seconds.min(MAX_DURATION_SECS) as i64)
    }

    pub fn parse(s: &str) -> Result<Self, DurationError> {
        let err = || DurationError(s.to_owned());
        let rest = s.strip_prefix('P').ok_or_else(err)?;
        if rest.is_empty() {
            return Err(err());
        }
        let (date, time) = match rest.split_once('T') {
            Some((_, "")) => return Err(err()),
            Some((d, t)) => (d, Some(t)),
            None => (rest, None),
        };
        let mut seconds: u64 = 0;
        let mut add = |part: &str, units: &[(char, u64)]| -> Result<(), DurationError> {
            let mut number = String::new();
            let mut last_unit = 0usize;
            for c in part.chars() {
                if c.is_ascii_digit() {
                    number.push(c);
                    continue;
                }
                let index = units.iter().position(|(u, _)| *u == c).ok_or_else(err)?;
                // Units must come in order, each at most once, each with a number.
                if number.is_empty() || index < last_unit {
                    return Err(err());
                }
                let value: u64 = number.parse().map_err(|_| err())?;
                seconds = value.checked_mul(units[index].1).and_then(|v| seconds.checked_add(v)).ok_or_else(err)?;
                number.clear();
                last_unit = index + 1;
            }
            if number.is_empty() {
                Ok(())
            } else {
                Err(err())
            }
        };
        add(date, &[('W', 604_800), ('D', 86_400)])?;
        if let Some(time) = time {
            add(time, &[('H', 3_600), ('M', 60), ('S', 1)])?;
        }
        if seconds > MAX_DURATION_SECS {
            return Err(err());
        }
        Ok(Self { seconds })
    }
}

impl fmt::Display for IsoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (days, rem) = (self.seconds / 86_400, self.seconds % 86_400);
        let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
        f.write_str("P")?;
        if days > 0 {
            write!(f, "{days}D")?;
        }
        if rem > 0 || days == 0 {
            f.write_str("T")?;
            if h > 0 {
                write!(f, "{h}H")?;
            }
            if m > 0 {
                write!(f, "{m}M")?;
            }
            if s > 0 || rem == 0 {
                write!(f, "{s}S")?;
            }
        }
        Ok(())
    }
}

impl Serialize for IsoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IsoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        IsoDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_past_ten_years_are_refused() {
        assert!(IsoDuration::parse("P999999999D").is_err());
        assert!(IsoDuration::parse("PT99999999999999H").is_err());
        assert!(IsoDuration::parse("P3650D").is_ok());
        assert!(serde_json::from_str::<IsoDuration>("\"P999999999D\"").is_err());
        let huge = IsoDuration::from_secs(u64::MAX).to_chrono();
        assert!(chrono::Utc::now().checked_add_signed(huge).is_some(), "to_chrono stays in range");
    }

    #[test]
    fn parses_common_forms() {
        let cases = [
            ("PT2H", 7_200),
            ("P2D", 172_800),
            ("P1DT30M", 88_200),
            ("PT45S", 45),
            ("P1W", 604_800),
            ("PT1H30M15S", 5_415),
            ("PT0S", 0),
        ];
        for (text, secs) in cases {
            assert_eq!(IsoDuration::parse(text).unwrap().as_secs(), secs, "{text}");
        }
    }

    #[test]
    fn refuses_malformed_and_calendar_units() {
        for bad in [
            "",
            "P",
            "PT",
            "2H",
            "PT2",
            "P1Y",
            "P1M",
            "PTH",
            "PT2H2H",
            "PT30M2H",
            "P1DT",
            "PT-1H",
            "pt2h",
            "PT99999999999999999999S",
        ] {
            assert!(IsoDuration::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn displays_in_canonical_form() {
        assert_eq!(IsoDuration::from_secs(7_200).to_string(), "PT2H");
        assert_eq!(IsoDuration::from_secs(88_200).to_string(), "P1DT30M");
        assert_eq!(IsoDuration::from_secs(86_400).to_string(), "P1D");
        assert_eq!(IsoDuration::from_secs(0).to_string(), "PT0S");
        for secs in [1, 59, 61, 3_601, 90_061] {
            let d = IsoDuration::from_secs(secs);
            assert_eq!(IsoDuration::parse(&d.to_string()).unwrap(), d);
        }
    }
}
