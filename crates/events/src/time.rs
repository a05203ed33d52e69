//! Timestamps: microseconds since the Unix epoch, UTC.
//!
//! The REES46 format writes `2019-10-01 00:00:04 UTC`; RFC 3339 (`2019-10-01T00:00:04Z`,
//! with any offset) is accepted too. Parsing the REES46 form is hand-written because it is on
//! the hot path of every import; everything else goes through `chrono`.

use std::fmt::Write as _;

/// Microseconds in one second.
pub const MICROS_PER_SECOND: i64 = 1_000_000;
/// Microseconds in one day.
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (year, month, day) of a day number counted from 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

fn digits(bytes: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(b - b'0');
    }
    Some(v)
}

/// Parses `YYYY-MM-DD HH:MM:SS[.ffffff] UTC` (the REES46 form).
fn parse_rees46(s: &[u8]) -> Option<i64> {
    if s.len() < 23 || !s.ends_with(b" UTC") {
        return None;
    }
    let (date_time, _) = s.split_at(s.len() - 4);
    if date_time[4] != b'-' || date_time[7] != b'-' || date_time[10] != b' ' {
        return None;
    }
    if date_time[13] != b':' || date_time[16] != b':' {
        return None;
    }
    let year = i64::from(digits(&date_time[0..4])?);
    let month = digits(&date_time[5..7])?;
    let day = digits(&date_time[8..10])?;
    let hour = i64::from(digits(&date_time[11..13])?);
    let minute = i64::from(digits(&date_time[14..16])?);
    let second = i64::from(digits(&date_time[17..19])?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let frac = &date_time[19..];
    let micros = match frac {
        [] => 0,
        [b'.', rest @ ..] if !rest.is_empty() && rest.len() <= 6 => {
            let v = i64::from(digits(rest)?);
            v * 10_i64.pow(6 - rest.len() as u32)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(((days * 86_400 + hour * 3600 + minute * 60 + second) * MICROS_PER_SECOND) + micros)
}

/// Parses a timestamp in the REES46 form or RFC 3339; returns microseconds since the epoch.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    parse_rees46(s.as_bytes()).or_else(|| {
        let dt = chrono::DateTime::parse_from_rfc3339(s).ok()?;
        Some(dt.timestamp_micros())
    })
}

/// Writes a timestamp in the REES46 form; sub-second digits only when the value has them.
pub fn write_timestamp(out: &mut Vec<u8>, micros: i64) {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let in_day = micros.rem_euclid(MICROS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let secs = in_day / MICROS_PER_SECOND;
    let frac = in_day % MICROS_PER_SECOND;
    let (hh, mm, ss) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if (0..=9999).contains(&y) {
        let y = y as u32;
        let buf = [
            b'0' + (y / 1000) as u8,
            b'0' + (y / 100 % 10) as u8,
            b'0' + (y / 10 % 10) as u8,
            b'0' + (y % 10) as u8,
            b'-',
            b'0' + (m / 10) as u8,
            b'0' + (m % 10) as u8,
            b'-',
            b'0' + (d / 10) as u8,
            b'0' + (d % 10) as u8,
            b' ',
            b'0' + (hh / 10) as u8,
            b'0' + (hh % 10) as u8,
            b':',
            b'0' + (mm / 10) as u8,
            b'0' + (mm % 10) as u8,
            b':',
            b'0' + (ss / 10) as u8,
            b'0' + (ss % 10) as u8,
        ];
        out.extend_from_slice(&buf);
    } else {
        let mut s = String::new();
        let _ = write!(s, "{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}");
        out.extend_from_slice(s.as_bytes());
    }
    if frac != 0 {
        let mut s = String::with_capacity(7);
        let _ = write!(s, ".{frac:06}");
        out.extend_from_slice(s.as_bytes());
    }
    out.extend_from_slice(b" UTC");
}

/// Formats a timestamp in the REES46 form.
pub fn format_timestamp(micros: i64) -> String {
    let mut out = Vec::with_capacity(30);
    write_timestamp(&mut out, micros);
    String::from_utf8_lossy(&out).into_owned()
}

/// Formats a timestamp as RFC 3339 (`2019-10-01T00:00:04Z`), for JSON documents such as the
/// generator's ground truth.
pub fn format_rfc3339(micros: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(micros) {
        Some(dt) => dt.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => format_timestamp(micros),
    }
}

/// Parses a calendar date `YYYY-MM-DD` into microseconds at its UTC midnight.
pub fn parse_date(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = i64::from(digits(&b[0..4])?);
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day) * MICROS_PER_DAY)
}

/// A source of "now", injected wherever time matters so tests can run on a fake clock.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Microseconds since the Unix epoch.
    fn now_micros(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> i64 {
        chrono::Utc::now().timestamp_micros()
    }
}

/// A clock that always answers the same instant (for tests and reproducible runs).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub i64);

impl Clock for FixedClock {
    fn now_micros(&self) -> i64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rees46_and_rfc3339_to_the_same_instant() {
        let a = parse_timestamp("2019-10-01 00:00:04 UTC");
        let b = parse_timestamp("2019-10-01T00:00:04Z");
        let c = parse_timestamp("2019-10-01T03:00:04+03:00");
        assert_eq!(a, Some(1_569_888_004_000_000));
        assert_eq!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn rejects_impossible_dates() {
        for s in [
            "2019-02-29 00:00:00 UTC",
            "2019-13-01 00:00:00 UTC",
            "2019-10-01 24:00:00 UTC",
            "2019-10-01 00:00:04",
            "2019-10-01 00:00:04 UTC+3",
            "2019-10-01 00:00:04.1234567 UTC",
            "yesterday",
            "",
        ] {
            assert_eq!(parse_timestamp(s), None, "{s}");
        }
        assert!(parse_timestamp("2020-02-29 00:00:00 UTC").is_some());
    }

    #[test]
    fn formats_back_byte_for_byte() {
        for s in [
            "2019-10-01 00:00:04 UTC",
            "1999-12-31 23:59:59 UTC",
            "2024-02-29 12:34:56.000123 UTC",
        ] {
            let t = parse_timestamp(s).unwrap();
            assert_eq!(format_timestamp(t), s);
        }
    }

    #[test]
    fn civil_round_trip() {
        for days in -800_000..800_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
