//! The time range and zone of a report: local dates, inclusive, in an IANA zone.

use chrono::{Days, NaiveDate, NaiveTime, TimeZone};
use chrono_tz::Tz;

use crate::error::{Error, Result};
use crate::udf::parse_zone;

/// Which local days a report covers (`None`: from the first / to the last data), and the zone
/// days, hours and weekdays are computed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportRange {
    /// First local day (inclusive).
    pub from: Option<NaiveDate>,
    /// Last local day (inclusive).
    pub to: Option<NaiveDate>,
    /// The zone.
    pub tz: Tz,
}

impl Default for ReportRange {
    fn default() -> Self {
        ReportRange {
            from: None,
            to: None,
            tz: Tz::UTC,
        }
    }
}

impl ReportRange {
    /// From strings as given on a command line or in a URL: `YYYY-MM-DD` dates and a zone.
    pub fn parse(from: Option<&str>, to: Option<&str>, tz: Option<&str>) -> Result<ReportRange> {
        let date = |s: &str, what: &str| {
            NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| {
                Error::Argument(format!("{what} {s:?} is not a date (expected YYYY-MM-DD)"))
            })
        };
        let range = ReportRange {
            from: from.map(|s| date(s, "from")).transpose()?,
            to: to.map(|s| date(s, "to")).transpose()?,
            tz: match tz {
                Some(z) => parse_zone(z.trim()).map_err(Error::Argument)?,
                None => Tz::UTC,
            },
        };
        if let (Some(f), Some(t)) = (range.from, range.to)
            && f > t
        {
            return Err(Error::Argument(format!(
                "from {f} is after to {t}: the range is empty"
            )));
        }
        Ok(range)
    }

    /// The UTC instant (micros) at which a local day starts: its midnight, or the first
    /// instant after it when midnight falls in a daylight-saving gap.
    pub fn day_start(&self, day: NaiveDate) -> i64 {
        let mut local = day.and_time(NaiveTime::MIN);
        for _ in 0..48 {
            if let Some(t) = self.tz.from_local_datetime(&local).earliest() {
                return t.timestamp_micros();
            }
            local += chrono::Duration::minutes(30);
        }
        day.and_time(NaiveTime::MIN).and_utc().timestamp_micros()
    }

    /// The UTC bounds `[start, end)` in micros.
    pub fn utc_bounds(&self) -> (Option<i64>, Option<i64>) {
        let start = self.from.map(|d| self.day_start(d));
        let end = self
            .to
            .and_then(|d| d.checked_add_days(Days::new(1)))
            .map(|d| self.day_start(d));
        (start, end)
    }

    /// A SQL condition on `events` selecting the range (partition pruning on `event_date`,
    /// then exact on `event_time`).
    pub(crate) fn sql(&self) -> String {
        let mut parts = vec!["TRUE".to_owned()];
        if let (Some(s), _) = self.utc_bounds() {
            parts.push(format!("event_date >= DATE '{}'", utc_date(s)));
            parts.push(format!("CAST(event_time AS BIGINT) >= {s}"));
        }
        parts.push(self.before_end_sql());
        parts.join(" AND ")
    }

    /// A SQL condition on `events` selecting everything before the range's end (all of it
    /// without an end), pruned on `event_date` like [`ReportRange::sql`].
    pub(crate) fn before_end_sql(&self) -> String {
        match self.utc_bounds() {
            (_, Some(e)) => format!(
                "event_date <= DATE '{}' AND CAST(event_time AS BIGINT) < {e}",
                utc_date(e)
            ),
            (_, None) => "TRUE".to_owned(),
        }
    }

    /// A SQL condition on a mart's `prev_day` column (the previous day its key was seen): the
    /// row is its key's first in the range, as the previous day lies before the range or
    /// there is none.
    pub(crate) fn first_in_range_sql(&self) -> String {
        match self.from {
            Some(f) => format!("(prev_day IS NULL OR prev_day < DATE '{f}')"),
            None => "prev_day IS NULL".to_owned(),
        }
    }

    /// A SQL condition on a local `day` column (marts).
    pub(crate) fn day_sql(&self) -> String {
        let mut parts = vec!["TRUE".to_owned()];
        if let Some(f) = self.from {
            parts.push(format!("day >= DATE '{f}'"));
        }
        if let Some(t) = self.to {
            parts.push(format!("day <= DATE '{t}'"));
        }
        parts.join(" AND ")
    }

    /// The zone's name as a SQL string literal (names are `[A-Za-z0-9_/+-]`).
    pub(crate) fn zone_sql(&self) -> String {
        format!("'{}'", self.tz.name())
    }

    /// The zone's name.
    pub fn zone(&self) -> &'static str {
        self.tz.name()
    }
}

/// The UTC date of a time, `YYYY-MM-DD`.
pub(crate) fn utc_date(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.date_naive().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_local_midnights() {
        let r = ReportRange::parse(
            Some("2019-10-27"),
            Some("2019-10-27"),
            Some("Europe/Berlin"),
        )
        .unwrap();
        let (s, e) = r.utc_bounds();
        // 2019-10-26 22:00 UTC to 2019-10-27 23:00 UTC: a 25-hour day.
        assert_eq!(s, Some(1_572_127_200_000_000));
        assert_eq!(e, Some(1_572_217_200_000_000));
        assert!(ReportRange::parse(Some("2019-10-28"), Some("2019-10-27"), None).is_err());
        assert!(ReportRange::parse(Some("27/10/2019"), None, None).is_err());
        assert!(ReportRange::parse(None, None, Some("Nowhere/Else")).is_err());
    }
}
