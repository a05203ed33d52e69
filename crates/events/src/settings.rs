//! Settings as configuration files write them, parsed once when the file is checked: a
//! duration as text (`10s`, `5m`, `1h 30m`), and one that may also be `off`. The errors say
//! what was expected; the caller adds the key.

use std::time::Duration;

/// Parses a duration as the settings write it.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?}: {e} (expected e.g. 10s, 5m or 1h 30m)"))
}

/// Parses a duration, or `off` (any case) as `None`.
pub fn parse_duration_or_off(text: &str) -> Result<Option<Duration>, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    parse_duration(text)
        .map(Some)
        .map_err(|e| format!("{e}, or off"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_off_are_parsed() {
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration_or_off(" OFF "), Ok(None));
        assert_eq!(
            parse_duration_or_off("7d"),
            Ok(Some(Duration::from_secs(7 * 86_400)))
        );
    }

    #[test]
    fn a_bad_duration_says_what_was_expected() {
        let e = parse_duration("5x").unwrap_err();
        assert!(e.contains("\"5x\""), "{e}");
        assert!(e.contains("expected e.g. 10s"), "{e}");
        let e = parse_duration_or_off("never").unwrap_err();
        assert!(e.contains("or off"), "{e}");
    }
}
