//! The SQL functions the report definitions need (DESIGN.md section 4):
//!
//! - `local_time(ts, 'Area/City')`: the wall-clock time of a UTC timestamp in an IANA zone, as a
//!   timestamp without zone, so that `CAST(.. AS DATE)`, `date_part('hour', ..)` and
//!   `date_part('dow', ..)` give the local day, hour and weekday.
//! - `local_day(ts, 'Area/City')`: the local date of a UTC timestamp in an IANA zone; the same
//!   as `CAST(local_time(ts, zone) AS DATE)` in one pass over the values (arrow's cast of a
//!   timestamp to a date goes through a calendar per value: a second per 42 M rows).
//! - `category_level(category_code, level)`: the first `level` dotted segments of a category
//!   code (`level` 0: the whole code); a missing or empty code is `(unknown)`.

use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, StringBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, TimeUnit};
use chrono::{Offset, TimeZone};
use chrono_tz::Tz;
use deltalake::datafusion::common::{ScalarValue, exec_err, plan_err};
use deltalake::datafusion::error::Result;
use deltalake::datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The label of a missing or empty category code.
pub const UNKNOWN_CATEGORY: &str = "(unknown)";

/// The functions, for registration.
pub fn functions() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::from(LocalTime::new()),
        ScalarUDF::from(LocalDay::new()),
        ScalarUDF::from(CategoryLevel::new()),
    ]
}

/// Parses an IANA zone name, with a precise error.
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    Tz::from_str(name).map_err(|_| {
        format!(
            "{name:?} is not an IANA time zone (examples: UTC, Europe/Berlin, America/New_York)"
        )
    })
}

/// The category at a level (see the module docs); `level` 0 is the whole code.
pub fn category_at(code: Option<&str>, level: usize) -> &str {
    let code = match code {
        Some(c) if !c.trim().is_empty() => c,
        _ => return UNKNOWN_CATEGORY,
    };
    if level == 0 {
        return code;
    }
    match code.match_indices('.').nth(level - 1) {
        Some((end, _)) => &code[..end],
        None => code,
    }
}

/// UTC offsets in microseconds, cached per UTC minute (zone transitions fall on minutes), so
/// a column of nearby times costs one zone lookup per minute it spans.
struct Offsets {
    tz: Tz,
    minute: i64,
    offset: i64,
}

const MICROS_PER_MINUTE: i64 = 60_000_000;

impl Offsets {
    fn new(tz: Tz) -> Offsets {
        Offsets {
            tz,
            minute: i64::MIN,
            offset: 0,
        }
    }

    fn local(&mut self, utc_micros: i64) -> i64 {
        let minute = utc_micros.div_euclid(MICROS_PER_MINUTE);
        if minute != self.minute {
            let secs = minute.saturating_mul(60);
            self.offset = match self.tz.timestamp_opt(secs, 0).single() {
                Some(t) => i64::from(t.offset().fix().local_minus_utc()) * 1_000_000,
                None => 0,
            };
            self.minute = minute;
        }
        utc_micros + self.offset
    }

    fn apply(&mut self, utc: &TimestampMicrosecondArray) -> TimestampMicrosecondArray {
        if self.tz == Tz::UTC {
            return utc.clone();
        }
        let values: Vec<i64> = utc.values().iter().map(|&t| self.local(t)).collect();
        TimestampMicrosecondArray::new(values.into(), utc.nulls().cloned())
    }

    /// The local dates (days since 1970-01-01).
    fn days(&mut self, utc: &TimestampMicrosecondArray) -> Date32Array {
        let day = |micros: i64| micros.div_euclid(MICROS_PER_DAY) as i32;
        let values: Vec<i32> = if self.tz == Tz::UTC {
            utc.values().iter().map(|&t| day(t)).collect()
        } else {
            utc.values().iter().map(|&t| day(self.local(t))).collect()
        };
        Date32Array::new(values.into(), utc.nulls().cloned())
    }
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Converts a UTC micros value to local wall-clock micros in `tz` (for tests and Rust-side
/// computations that must agree with the SQL function).
pub fn local_micros(tz: Tz, utc_micros: i64) -> i64 {
    Offsets::new(tz).local(utc_micros)
}

/// Local dates of UTC times, as `local_day` computes them, for Rust-side computations over
/// many times (the zone's offset is looked up once per minute the times span).
pub(crate) struct LocalDays(Offsets);

impl LocalDays {
    pub(crate) fn new(tz: Tz) -> LocalDays {
        LocalDays(Offsets::new(tz))
    }

    /// A UTC time as local wall-clock micros (no lookup at all in UTC).
    fn local(&mut self, utc_micros: i64) -> i64 {
        if self.0.tz == Tz::UTC {
            utc_micros
        } else {
            self.0.local(utc_micros)
        }
    }

    /// The local date of a UTC time, in days since 1970-01-01.
    pub(crate) fn day(&mut self, utc_micros: i64) -> i32 {
        self.local(utc_micros).div_euclid(MICROS_PER_DAY) as i32
    }

    /// The zone's offset from UTC at a UTC time, in microseconds.
    pub(crate) fn offset(&mut self, utc_micros: i64) -> i64 {
        self.local(utc_micros) - utc_micros
    }

    /// The local date (days since 1970-01-01) and hour of a UTC time, as `local_day` and
    /// `date_part('hour', local_time(..))` give them.
    pub(crate) fn day_and_hour(&mut self, utc_micros: i64) -> (i32, u8) {
        let local = self.local(utc_micros);
        let day = local.div_euclid(MICROS_PER_DAY);
        let hour = (local - day * MICROS_PER_DAY) / MICROS_PER_HOUR;
        (day as i32, hour as u8)
    }
}

pub(crate) const MICROS_PER_HOUR: i64 = 3_600_000_000;

#[derive(Debug, PartialEq, Eq, Hash)]
struct LocalTime {
    signature: Signature,
}

impl LocalTime {
    fn new() -> LocalTime {
        LocalTime {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

fn zone_argument(value: &ColumnarValue, function: &str) -> Result<Tz> {
    match value {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
        ) => parse_zone(s).or_else(|e| plan_err!("{function}: {e}")),
        _ => plan_err!("{function}: the zone must be a constant string such as 'Europe/Berlin'"),
    }
}

impl ScalarUDFImpl for LocalTime {
    fn name(&self) -> &str {
        "local_time"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args.first() {
            Some(DataType::Timestamp(_, _)) => Ok(DataType::Timestamp(TimeUnit::Microsecond, None)),
            other => plan_err!("local_time(timestamp, zone): got {other:?} for the timestamp"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        zoned(&args, "local_time", |offsets, utc| {
            Arc::new(offsets.apply(utc))
        })
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct LocalDay {
    signature: Signature,
}

impl LocalDay {
    fn new() -> LocalDay {
        LocalDay {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for LocalDay {
    fn name(&self) -> &str {
        "local_day"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args.first() {
            Some(DataType::Timestamp(_, _)) => Ok(DataType::Date32),
            other => plan_err!("local_day(timestamp, zone): got {other:?} for the timestamp"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        zoned(&args, "local_day", |offsets, utc| {
            Arc::new(offsets.days(utc))
        })
    }
}

/// Runs `f` over the UTC micros of the first argument with the offsets of the zone named by
/// the second (a scalar in, a scalar out).
fn zoned(
    args: &ScalarFunctionArgs,
    function: &str,
    f: impl Fn(&mut Offsets, &TimestampMicrosecondArray) -> ArrayRef,
) -> Result<ColumnarValue> {
    let tz = zone_argument(&args.args[1], function)?;
    let micros = |array: &ArrayRef| -> Result<TimestampMicrosecondArray> {
        let target = DataType::Timestamp(TimeUnit::Microsecond, None);
        let cast = arrow::compute::cast(array, &target)?;
        Ok(cast
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
            .clone())
    };
    let mut offsets = Offsets::new(tz);
    match &args.args[0] {
        ColumnarValue::Array(array) => {
            let utc = utc_micros(array, &micros)?;
            Ok(ColumnarValue::Array(f(&mut offsets, &utc)))
        }
        ColumnarValue::Scalar(s) => {
            let array = s.to_array()?;
            let utc = utc_micros(&array, &micros)?;
            let out = f(&mut offsets, &utc);
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        }
    }
}

/// The UTC micros of a timestamp column of any unit and zone (the stored values are UTC).
fn utc_micros(
    array: &ArrayRef,
    micros: &dyn Fn(&ArrayRef) -> Result<TimestampMicrosecondArray>,
) -> Result<TimestampMicrosecondArray> {
    match array.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => Ok(array
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
            .clone()
            .with_timezone_opt(None::<String>)),
        DataType::Timestamp(unit, Some(_)) => {
            // Drop the zone first: a zoned cast would shift to that zone's wall clock.
            let naive = arrow::compute::cast(array, &DataType::Timestamp(*unit, None));
            let naive = match naive {
                Ok(n) => n,
                Err(e) => return exec_err!("local_time: {e}"),
            };
            micros(&naive)
        }
        DataType::Timestamp(_, None) => micros(array),
        other => exec_err!("local_time: expected a timestamp, got {other}"),
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CategoryLevel {
    signature: Signature,
}

impl CategoryLevel {
    fn new() -> CategoryLevel {
        CategoryLevel {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for CategoryLevel {
    fn name(&self) -> &str {
        "category_level"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let level = match &args.args[1] {
            ColumnarValue::Scalar(s) => match s.cast_to(&DataType::Int64)? {
                ScalarValue::Int64(Some(l)) if (0..=64).contains(&l) => l as usize,
                _ => {
                    return plan_err!(
                        "category_level(code, level): level must be a constant from 0 (the whole code) to 64"
                    );
                }
            },
            ColumnarValue::Array(_) => {
                return plan_err!("category_level(code, level): level must be a constant");
            }
        };
        let (array, scalar) = match &args.args[0] {
            ColumnarValue::Array(a) => (a.clone(), false),
            ColumnarValue::Scalar(s) => (s.to_array()?, true),
        };
        let strings = arrow::compute::cast(&array, &DataType::Utf8)?;
        let strings = strings.as_string::<i32>();
        let mut out = StringBuilder::with_capacity(strings.len(), strings.len() * 12);
        for i in 0..strings.len() {
            let code = strings.is_valid(i).then(|| strings.value(i));
            out.append_value(category_at(code, level));
        }
        let out: ArrayRef = Arc::new(out.finish());
        if scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_at_levels() {
        let code = Some("appliances.kitchen.washer");
        assert_eq!(category_at(code, 1), "appliances");
        assert_eq!(category_at(code, 2), "appliances.kitchen");
        assert_eq!(category_at(code, 3), "appliances.kitchen.washer");
        assert_eq!(category_at(code, 4), "appliances.kitchen.washer");
        assert_eq!(category_at(code, 0), "appliances.kitchen.washer");
        assert_eq!(category_at(Some("apparel"), 2), "apparel");
        assert_eq!(category_at(None, 1), UNKNOWN_CATEGORY);
        assert_eq!(category_at(Some(""), 0), UNKNOWN_CATEGORY);
    }

    #[test]
    fn local_time_follows_daylight_saving() {
        let berlin = parse_zone("Europe/Berlin").unwrap();
        // 2019-10-27 00:30 UTC is 02:30 CEST; 01:30 UTC is 02:30 CET (the clock went back).
        let a = 1_572_136_200_000_000;
        assert_eq!(local_micros(berlin, a) - a, 2 * 3_600_000_000);
        let b = a + 3_600_000_000;
        assert_eq!(local_micros(berlin, b) - b, 3_600_000_000);
        assert!(parse_zone("Mars/Olympus").is_err());
    }

    #[tokio::test]
    async fn local_day_is_the_date_of_local_time() {
        use deltalake::datafusion::prelude::SessionContext;
        let ctx = SessionContext::new();
        for f in functions() {
            ctx.register_udf(f);
        }
        // Every 65 minutes and a bit from 1963 to 2031 (negative times included), in zones
        // east and west of UTC, with and without daylight saving, and a half-hour offset.
        for zone in [
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "Asia/Kolkata",
            "Pacific/Auckland",
        ] {
            let sql = format!(
                "SELECT COUNT(*) AS n,
                        COUNT(*) FILTER (WHERE local_day(t, '{zone}')
                                          <> CAST(local_time(t, '{zone}') AS DATE)) AS bad,
                        COUNT(*) FILTER (WHERE local_day(t, '{zone}') IS NULL) AS nulls
                 FROM (SELECT CASE WHEN v % 1000 = 0 THEN NULL
                              ELSE to_timestamp_micros(v * 3911111111) END AS t
                       FROM generate_series(-50000, 500000) AS g(v))"
            );
            let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
            let col = |i: usize| {
                batches[0]
                    .column(i)
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .value(0)
            };
            assert_eq!(col(0), 550_001, "{zone}");
            assert_eq!(
                col(1),
                0,
                "{zone}: local_day differs from the date of local_time"
            );
            assert_eq!(col(2), 551, "{zone}: nulls stay null");
        }
    }

    #[tokio::test]
    async fn day_and_hour_are_those_of_the_sql_functions() {
        use arrow::datatypes::{Date32Type, Int64Type};
        use deltalake::datafusion::prelude::SessionContext;
        let ctx = SessionContext::new();
        for f in functions() {
            ctx.register_udf(f);
        }
        for zone in ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"] {
            let sql = format!(
                "SELECT CAST(t AS BIGINT) AS t, local_day(t, '{zone}') AS day,
                        CAST(date_part('hour', local_time(t, '{zone}')) AS BIGINT) AS hour
                 FROM (SELECT to_timestamp_micros(v * 1911111111) AS t
                       FROM generate_series(-20000, 200000) AS g(v))"
            );
            let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
            let mut local = LocalDays::new(parse_zone(zone).unwrap());
            let mut n = 0;
            for b in &batches {
                let t = b.column(0).as_primitive::<Int64Type>();
                let day = b.column(1).as_primitive::<Date32Type>();
                let hour = b.column(2).as_primitive::<Int64Type>();
                for i in 0..b.num_rows() {
                    let (d, h) = local.day_and_hour(t.value(i));
                    assert_eq!((d, i64::from(h)), (day.value(i), hour.value(i)), "{zone}");
                    n += 1;
                }
            }
            assert_eq!(n, 220_001, "{zone}");
        }
    }
}
