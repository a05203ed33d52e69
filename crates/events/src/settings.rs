//! Settings as configuration files write them, parsed once when the file is read (a bad
//! value is an error at its key and line, never a default taken silently):
//! durations as text (`10s`, `5m`, `1h 30m`) with [`duration`], and durations that may be
//! `off` with [`duration_or_off`]. Use them as `#[serde(with = "…")]`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Parses a duration as the settings write it.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?}: {e} (expected e.g. 10s, 5m or 1h 30m)"))
}

/// A duration written as text (`"10s"`).
pub mod duration {
    use super::*;

    /// Reads `"10s"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }

    /// Writes `"10s"`.
    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*value).to_string())
    }
}

/// A duration written as text, or `"off"` (`None`).
pub mod duration_or_off {
    use super::*;

    /// Reads `"10s"` or `"off"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        parse_duration(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{e}, or off")))
    }

    /// Writes `"10s"` or `"off"`.
    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_str("off"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, serde::Serialize, PartialEq)]
    struct S {
        #[serde(with = "duration")]
        every: Duration,
        #[serde(with = "duration_or_off")]
        keep: Option<Duration>,
    }

    #[test]
    fn durations_and_off_are_parsed_when_read_and_written_back_alike() {
        let s: S = serde_json::from_str(r#"{"every": "1m 30s", "keep": "OFF"}"#).unwrap();
        assert_eq!(
            s,
            S {
                every: Duration::from_secs(90),
                keep: None
            }
        );
        let again: S = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
        let s: S = serde_json::from_str(r#"{"every": "10s", "keep": "7d"}"#).unwrap();
        assert_eq!(s.keep, Some(Duration::from_secs(7 * 86_400)));
    }

    #[test]
    fn a_bad_duration_says_what_was_expected() {
        let e = serde_json::from_str::<S>(r#"{"every": "5x", "keep": "off"}"#).unwrap_err();
        assert!(e.to_string().contains("\"5x\""), "{e}");
        assert!(e.to_string().contains("expected e.g. 10s"), "{e}");
        let e = serde_json::from_str::<S>(r#"{"every": "5s", "keep": "never"}"#).unwrap_err();
        assert!(e.to_string().contains("or off"), "{e}");
    }
}
