//! [`DurationArg`]: a duration as flags and the TOML file give it: `500ms`, `30s`, `10m`,
//! `1h`, or a plain number of seconds; in TOML a string or an integer (seconds).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationArg(pub Duration);

impl FromStr for DurationArg {
    type Err = String;

    fn from_str(text: &str) -> Result<DurationArg, String> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(split);
        let bad = || format!("invalid duration {text:?} (expected e.g. 500ms, 30s, 10m or 1h)");
        let number: u64 = digits.parse().map_err(|_| bad())?;
        let millis = match unit.trim() {
            "ms" => Some(number),
            "" | "s" => number.checked_mul(1000),
            "m" => number.checked_mul(60_000),
            "h" => number.checked_mul(3_600_000),
            _ => return Err(bad()),
        };
        millis
            .map(|ms| DurationArg(Duration::from_millis(ms)))
            .ok_or_else(|| format!("duration {text:?} is too long"))
    }
}

impl fmt::Display for DurationArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl<'de> Deserialize<'de> for DurationArg {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<DurationArg, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Seconds(seconds) => Ok(DurationArg(Duration::from_secs(seconds))),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        let ms = |n| Ok(DurationArg(Duration::from_millis(n)));
        assert_eq!("500ms".parse(), ms(500));
        assert_eq!("30s".parse(), ms(30_000));
        assert_eq!("30".parse(), ms(30_000));
        assert_eq!("10m".parse(), ms(600_000));
        assert_eq!("1h".parse(), ms(3_600_000));
        for bad in ["", "s", "1.5s", "-1s", "3d", "99999999999999999999h"] {
            assert!(bad.parse::<DurationArg>().is_err(), "{bad:?} parsed");
        }
    }
}
