//! Validation and cleaning: text fields in, an [`Event`] or a reason a person understands out.
//!
//! Every decoder (CSV, JSON, the collector) turns a row into a [`RawEvent`] of text fields and
//! hands it to [`Validator::validate`], so every path applies the same rules:
//! trim whitespace, empty → missing, brands lower-case; required fields present; ids positive
//! integers; prices non-negative with at most two decimals; timestamps after 2000-01-01 and no
//! more than a day ahead of the clock; known event types only.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde::Serialize;

use crate::event::{Event, EventRef, EventType, Price};
use crate::time::{Clock, MICROS_PER_DAY, SystemClock};

/// A field of an event, as named in files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// `event_time`
    EventTime,
    /// `event_type`
    EventType,
    /// `product_id`
    ProductId,
    /// `category_id`
    CategoryId,
    /// `category_code`
    CategoryCode,
    /// `brand`
    Brand,
    /// `price`
    Price,
    /// `user_id`
    UserId,
    /// `user_session`
    UserSession,
    /// `client_ip`
    ClientIp,
    /// `user_agent`
    UserAgent,
}

impl Field {
    /// Every field, in REES46 column order followed by the network fields.
    pub const ALL: [Field; 11] = [
        Field::EventTime,
        Field::EventType,
        Field::ProductId,
        Field::CategoryId,
        Field::CategoryCode,
        Field::Brand,
        Field::Price,
        Field::UserId,
        Field::UserSession,
        Field::ClientIp,
        Field::UserAgent,
    ];

    /// The nine REES46 columns every file must have.
    pub const REQUIRED_COLUMNS: [Field; 9] = [
        Field::EventTime,
        Field::EventType,
        Field::ProductId,
        Field::CategoryId,
        Field::CategoryCode,
        Field::Brand,
        Field::Price,
        Field::UserId,
        Field::UserSession,
    ];

    /// The column name.
    pub fn name(self) -> &'static str {
        match self {
            Field::EventTime => "event_time",
            Field::EventType => "event_type",
            Field::ProductId => "product_id",
            Field::CategoryId => "category_id",
            Field::CategoryCode => "category_code",
            Field::Brand => "brand",
            Field::Price => "price",
            Field::UserId => "user_id",
            Field::UserSession => "user_session",
            Field::ClientIp => "client_ip",
            Field::UserAgent => "user_agent",
        }
    }

    /// Looks a column name up (exact, lower-case).
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The longest text accepted for the field, in bytes.
    pub fn max_len(self) -> usize {
        match self {
            Field::UserAgent => 1024,
            Field::CategoryCode => 256,
            _ => 128,
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A row as text, before validation. Decoders fill in what the row has.
#[derive(Debug, Clone, Default)]
pub struct RawEvent<'a> {
    values: [Option<Cow<'a, str>>; 11],
}

impl<'a> RawEvent<'a> {
    /// Sets a field's text.
    pub fn set(&mut self, field: Field, value: impl Into<Cow<'a, str>>) {
        self.values[field.index()] = Some(value.into());
    }

    /// A field's text, as given.
    pub fn get(&self, field: Field) -> Option<&str> {
        self.values[field.index()].as_deref()
    }

    /// Every field's text, indexed by [`Field`].
    pub fn fields(&self) -> [Option<&str>; 11] {
        self.values.each_ref().map(|v| v.as_deref())
    }

    /// Clears every field, keeping the allocation.
    pub fn clear(&mut self) {
        for v in &mut self.values {
            *v = None;
        }
    }

    /// The row written back as a CSV-like line of the fields present, for quarantine.
    pub fn to_raw_text(&self) -> String {
        let mut out = String::new();
        for (i, f) in Field::ALL.iter().enumerate() {
            if i >= 9 && self.get(*f).is_none() {
                continue;
            }
            if i > 0 {
                out.push(',');
            }
            out.push_str(self.get(*f).unwrap_or(""));
        }
        out
    }
}

/// Why one field of a row was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field at fault, or `None` when the row as a whole is malformed.
    pub field: Option<Field>,
    /// What is wrong, for a person.
    pub reason: String,
}

impl FieldError {
    /// An error about one field.
    pub fn new(field: Field, reason: impl Into<String>) -> FieldError {
        FieldError {
            field: Some(field),
            reason: reason.into(),
        }
    }

    /// An error about the row as a whole.
    pub fn row(reason: impl Into<String>) -> FieldError {
        FieldError {
            field: None,
            reason: reason.into(),
        }
    }
}

/// A refused row: where it was, which field, why, and its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reject {
    /// The line of the file the row starts on (1-based; the header is line 1), or the
    /// element's index in a JSON array (0-based).
    pub line: u64,
    /// The field at fault (`None` for a malformed row).
    pub field: Option<&'static str>,
    /// What is wrong, for a person: `price: "abc" is not a decimal number`.
    pub reason: String,
    /// The row's text as read.
    pub raw: String,
}

impl Reject {
    /// A reject from a field error.
    pub fn new(line: u64, error: FieldError, raw: String) -> Reject {
        Reject {
            line,
            field: error.field.map(Field::name),
            reason: error.reason,
            raw,
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "line {}: {field}: {}", self.line, self.reason),
            None => write!(f, "line {}: {}", self.line, self.reason),
        }
    }
}

/// Quotes a value for a message, shortened when long.
pub(crate) fn quote(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() > MAX {
        let short: String = s.chars().take(MAX).collect();
        format!("{:?}…", short)
    } else {
        format!("{s:?}")
    }
}

/// The rules, with the clock they measure "the future" against.
#[derive(Clone)]
pub struct Validator {
    clock: Arc<dyn Clock>,
    min_time: i64,
    max_ahead: i64,
    /// The latest time known to be acceptable, from an earlier reading of the clock: clocks
    /// only move forward, so rows before it need no new reading of the clock.
    horizon: Arc<AtomicI64>,
}

impl fmt::Debug for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validator")
            .field("min_time", &self.min_time)
            .field("max_ahead", &self.max_ahead)
            .finish()
    }
}

impl Default for Validator {
    fn default() -> Self {
        Validator::new(Arc::new(SystemClock))
    }
}

/// The earliest accepted event time: 2000-01-01 00:00:00 UTC.
pub const MIN_EVENT_TIME: i64 = 946_684_800_000_000;

impl Validator {
    /// Validates against the given clock, with the default bounds (from 2000-01-01 to one day
    /// ahead of the clock).
    pub fn new(clock: Arc<dyn Clock>) -> Validator {
        Validator {
            clock,
            min_time: MIN_EVENT_TIME,
            max_ahead: MICROS_PER_DAY,
            horizon: Arc::new(AtomicI64::new(i64::MIN)),
        }
    }

    /// The same rules, but accepting event times at most `ahead` past the clock (the
    /// collector's tight bound for live traffic; imports of history keep a day).
    pub fn with_max_ahead(mut self, ahead: std::time::Duration) -> Validator {
        self.max_ahead = i64::try_from(ahead.as_micros()).unwrap_or(i64::MAX);
        self.horizon = Arc::new(AtomicI64::new(i64::MIN));
        self
    }

    /// How far past the clock an event time may be.
    pub fn max_ahead(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.max_ahead.max(0).unsigned_abs())
    }

    /// A text the server supplies for a field (a header's `User-Agent`), made to pass the
    /// field's rules: trimmed, cut at the field's length on a character boundary, `None`
    /// when nothing is left.
    pub fn fit(field: Field, s: &str) -> Option<&str> {
        let s = s.trim();
        let mut end = s.len().min(field.max_len());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        Some(s[..end].trim_end()).filter(|s| !s.is_empty())
    }

    /// Turns a raw row into an event, or says which field is wrong and why.
    pub fn validate(&self, raw: &RawEvent<'_>) -> Result<Event, FieldError> {
        self.validate_fields(&raw.fields()).map(|e| e.to_event())
    }

    /// Like [`Validator::validate`], for a row given as each field's text (indexed by
    /// [`Field`], `None` when the row lacks the field), without copying the texts.
    pub fn validate_fields<'a>(
        &self,
        raw: &[Option<&'a str>; 11],
    ) -> Result<EventRef<'a>, FieldError> {
        let event_time = self.event_time(raw)?;
        let event_type = {
            let s = required(raw, Field::EventType)?;
            EventType::parse(s).ok_or_else(|| {
                FieldError::new(
                    Field::EventType,
                    format!(
                        "{} is not one of view, cart, remove_from_cart, purchase",
                        quote(s)
                    ),
                )
            })?
        };
        let product_id = id(raw, Field::ProductId)?;
        let category_id = id(raw, Field::CategoryId)?;
        let category_code = text(raw, Field::CategoryCode)?;
        let brand = text(raw, Field::Brand)?.map(|b| {
            if b.bytes().any(|c| c.is_ascii_uppercase()) {
                Cow::Owned(b.to_lowercase())
            } else {
                Cow::Borrowed(b)
            }
        });
        let price = price(required(raw, Field::Price)?)?;
        let user_id = id(raw, Field::UserId)?;
        let user_session = text(raw, Field::UserSession)?;
        let client_ip = match text(raw, Field::ClientIp)? {
            None => None,
            Some(s) => Some(s.parse::<IpAddr>().map_err(|_| {
                FieldError::new(
                    Field::ClientIp,
                    format!("{} is not an IP address", quote(s)),
                )
            })?),
        };
        let user_agent = text(raw, Field::UserAgent)?;
        Ok(EventRef {
            event_time,
            event_type,
            product_id,
            category_id,
            category_code,
            brand,
            price,
            user_id,
            user_session,
            client_ip,
            user_agent,
        })
    }

    fn event_time(&self, raw: &[Option<&str>; 11]) -> Result<i64, FieldError> {
        let s = required(raw, Field::EventTime)?;
        let t = crate::time::parse_timestamp(s).ok_or_else(|| {
            FieldError::new(
                Field::EventTime,
                format!(
                    "{} is not a timestamp (expected `2019-10-01 00:00:04 UTC` or RFC 3339)",
                    quote(s)
                ),
            )
        })?;
        self.check_time(t, || quote(s))
    }

    /// Whether a time is within the bounds; `shown` is how the error shows it.
    fn check_time(&self, t: i64, shown: impl Fn() -> String) -> Result<i64, FieldError> {
        if t < self.min_time {
            return Err(FieldError::new(
                Field::EventTime,
                format!("{} is before 2000-01-01", shown()),
            ));
        }
        if t > self.horizon.load(Ordering::Relaxed) {
            let horizon = self.clock.now_micros().saturating_add(self.max_ahead);
            self.horizon.fetch_max(horizon, Ordering::Relaxed);
            if t <= horizon {
                return Ok(t);
            }
            return Err(FieldError::new(
                Field::EventTime,
                format!(
                    "{} is more than {} in the future",
                    shown(),
                    ahead_text(self.max_ahead)
                ),
            ));
        }
        Ok(t)
    }

    /// Checks an event built without [`Validator::validate`] (such as a binary log record)
    /// against the same rules: the time's bounds, positive ids, a price in range, texts
    /// present only when non-empty, trimmed and within their length, brands lower-case.
    pub fn check(&self, e: &Event) -> Result<(), FieldError> {
        self.check_time(e.event_time, || format!("{} µs since 1970", e.event_time))?;
        for (field, v) in [
            (Field::ProductId, e.product_id),
            (Field::CategoryId, e.category_id),
            (Field::UserId, e.user_id),
        ] {
            if v <= 0 {
                return Err(FieldError::new(field, format!("{v} is not a positive id")));
            }
        }
        if !(0..=Price::MAX.cents()).contains(&e.price.cents()) {
            return Err(FieldError::new(
                Field::Price,
                format!("{} cents is out of range", e.price.cents()),
            ));
        }
        for (field, v) in [
            (Field::CategoryCode, &e.category_code),
            (Field::Brand, &e.brand),
            (Field::UserSession, &e.user_session),
            (Field::UserAgent, &e.user_agent),
        ] {
            let Some(s) = v else { continue };
            let reason = if s.is_empty() {
                "is empty (a missing value is null)".to_owned()
            } else if s.trim() != s {
                format!("{} has surrounding whitespace", quote(s))
            } else if s.len() > field.max_len() {
                format!(
                    "is longer than {} bytes ({} bytes)",
                    field.max_len(),
                    s.len()
                )
            } else if field == Field::Brand && s.bytes().any(|c| c.is_ascii_uppercase()) {
                format!("{} is not lower-case", quote(s))
            } else {
                continue;
            };
            return Err(FieldError::new(field, reason));
        }
        Ok(())
    }
}

/// A bound on the future in words: `a day`, `15m`.
fn ahead_text(micros: i64) -> String {
    if micros == MICROS_PER_DAY {
        return "a day".to_owned();
    }
    match micros.max(0).unsigned_abs() / 1_000_000 {
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A field's trimmed text, `None` when missing or empty; errors when too long.
fn text<'a>(raw: &[Option<&'a str>; 11], field: Field) -> Result<Option<&'a str>, FieldError> {
    match raw[field.index()].map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) if s.len() > field.max_len() => Err(FieldError::new(
            field,
            format!(
                "is longer than {} bytes ({} bytes)",
                field.max_len(),
                s.len()
            ),
        )),
        Some(s) => Ok(Some(s)),
    }
}

fn required<'a>(raw: &[Option<&'a str>; 11], field: Field) -> Result<&'a str, FieldError> {
    text(raw, field)?.ok_or_else(|| FieldError::new(field, "is missing"))
}

fn id(raw: &[Option<&str>; 11], field: Field) -> Result<i64, FieldError> {
    let s = required(raw, field)?;
    let bytes = s.as_bytes();
    let (negative, digits) = match bytes.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, bytes),
    };
    // Up to 19 digits fit a u64: one unchecked pass (ids are the bulk of every row).
    if !digits.is_empty() && digits.len() <= 19 {
        let mut v = 0u64;
        let mut ok = true;
        for &b in digits {
            let d = b.wrapping_sub(b'0');
            ok &= d <= 9;
            v = v.wrapping_mul(10).wrapping_add(u64::from(d));
        }
        if let Some(v) = i64::try_from(v).ok().filter(|_| ok) {
            let v = if negative { -v } else { v };
            if v <= 0 {
                return Err(FieldError::new(
                    field,
                    format!("{} is not a positive id", quote(s)),
                ));
            }
            return Ok(v);
        }
    }
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(FieldError::new(
            field,
            format!("{} is not an integer", quote(s)),
        ));
    }
    // One pass over the digits, checked: ids are the bulk of every row.
    let magnitude = digits.iter().try_fold(0i64, |v, d| {
        v.checked_mul(10)?.checked_add(i64::from(d - b'0'))
    });
    let v = match magnitude {
        Some(v) if negative => -v,
        Some(v) => v,
        // i64::MIN has no positive counterpart; it is not a positive id either way.
        None if negative && s == "-9223372036854775808" => i64::MIN,
        None => {
            return Err(FieldError::new(
                field,
                format!("{} is out of range for a 64-bit integer", quote(s)),
            ));
        }
    };
    if v <= 0 {
        return Err(FieldError::new(
            field,
            format!("{} is not a positive id", quote(s)),
        ));
    }
    Ok(v)
}

/// Parses a decimal price exactly into cents: `35.79`, `35.7`, `35`, `35.790`.
pub fn price(s: &str) -> Result<Price, FieldError> {
    let not_decimal = || {
        FieldError::new(
            Field::Price,
            format!("{} is not a decimal number", quote(s)),
        )
    };
    let bytes = s.as_bytes();
    let (negative, body) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        Some(b'+') => (false, &bytes[1..]),
        _ => (false, bytes),
    };
    let (int, frac) = match body.iter().position(|&b| b == b'.') {
        Some(dot) => (&body[..dot], &body[dot + 1..]),
        None => (body, &body[body.len()..]),
    };
    if int.is_empty() && frac.is_empty() {
        return Err(not_decimal());
    }
    if !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return Err(not_decimal());
    }
    if negative {
        return Err(FieldError::new(
            Field::Price,
            format!("{} is negative", quote(s)),
        ));
    }
    if frac.len() > 2 && frac[2..].iter().any(|&b| b != b'0') {
        return Err(FieldError::new(
            Field::Price,
            format!("{} has more than two decimal places", quote(s)),
        ));
    }
    let int = {
        let trimmed = &int[int.iter().position(|&b| b != b'0').unwrap_or(int.len())..];
        if trimmed.len() > 10 {
            return Err(FieldError::new(
                Field::Price,
                format!("{} is larger than 9999999999.99", quote(s)),
            ));
        }
        trimmed
            .iter()
            .fold(0i64, |acc, &b| acc * 10 + i64::from(b - b'0'))
    };
    let mut cents = 0i64;
    for i in 0..2 {
        cents = cents * 10 + frac.get(i).map_or(0, |&b| i64::from(b - b'0'));
    }
    Ok(Price(int * 100 + cents))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::FixedClock;

    fn validator() -> Validator {
        // 2026-11-28
        Validator::new(Arc::new(FixedClock(1_795_824_000_000_000)))
    }

    fn good() -> RawEvent<'static> {
        let mut r = RawEvent::default();
        r.set(Field::EventTime, "2019-10-01 00:00:04 UTC");
        r.set(Field::EventType, "view");
        r.set(Field::ProductId, "44600062");
        r.set(Field::CategoryId, "2103807459595387724");
        r.set(Field::CategoryCode, "");
        r.set(Field::Brand, " Shiseido ");
        r.set(Field::Price, "35.79");
        r.set(Field::UserId, "541312140");
        r.set(Field::UserSession, "72d76fde-8bb3-4e00-8c23-a032dfed738c");
        r
    }

    fn reason(f: impl FnOnce(&mut RawEvent<'static>)) -> String {
        let mut r = good();
        f(&mut r);
        let e = validator().validate(&r).unwrap_err();
        match e.field {
            Some(field) => format!("{field}: {}", e.reason),
            None => e.reason,
        }
    }

    #[test]
    fn cleans_a_good_row() {
        let e = validator().validate(&good()).unwrap();
        assert_eq!(e.brand.as_deref(), Some("shiseido"));
        assert_eq!(e.category_code, None);
        assert_eq!(e.price, Price(3579));
    }

    #[test]
    fn reasons_are_precise() {
        assert_eq!(
            reason(|r| r.set(Field::Price, "abc")),
            "price: \"abc\" is not a decimal number"
        );
        assert_eq!(
            reason(|r| r.set(Field::Price, "-1.00")),
            "price: \"-1.00\" is negative"
        );
        assert_eq!(
            reason(|r| r.set(Field::Price, "1.005")),
            "price: \"1.005\" has more than two decimal places"
        );
        assert_eq!(
            reason(|r| r.set(Field::EventType, "click")),
            "event_type: \"click\" is not one of view, cart, remove_from_cart, purchase"
        );
        assert_eq!(reason(|r| r.set(Field::UserId, "")), "user_id: is missing");
        assert_eq!(
            reason(|r| r.set(Field::ProductId, "12x")),
            "product_id: \"12x\" is not an integer"
        );
        assert_eq!(
            reason(|r| r.set(Field::CategoryId, "99999999999999999999")),
            "category_id: \"99999999999999999999\" is out of range for a 64-bit integer"
        );
        assert_eq!(
            reason(|r| r.set(Field::UserId, "-4")),
            "user_id: \"-4\" is not a positive id"
        );
        assert_eq!(
            reason(|r| r.set(Field::EventTime, "1999-12-31 23:59:59 UTC")),
            "event_time: \"1999-12-31 23:59:59 UTC\" is before 2000-01-01"
        );
        assert_eq!(
            reason(|r| r.set(Field::EventTime, "2026-11-30 00:00:01 UTC")),
            "event_time: \"2026-11-30 00:00:01 UTC\" is more than a day in the future"
        );
        assert!(
            reason(|r| r.set(Field::EventTime, "soon"))
                .starts_with("event_time: \"soon\" is not a timestamp")
        );
        assert_eq!(
            reason(|r| r.set(Field::ClientIp, "300.1.1.1")),
            "client_ip: \"300.1.1.1\" is not an IP address"
        );
    }

    #[test]
    fn prices_are_exact() {
        for (s, c) in [
            ("35.79", 3579),
            ("35.7", 3570),
            ("35", 3500),
            ("0.77", 77),
            ("35.790", 3579),
            (".5", 50),
            ("9999999999.99", 999_999_999_999),
        ] {
            assert_eq!(price(s).unwrap(), Price(c), "{s}");
        }
        for s in ["", ".", "1e3", "1,5", "NaN", "99999999999.00", "--1"] {
            assert!(price(s).is_err(), "{s}");
        }
    }

    #[test]
    fn server_texts_are_fitted_to_the_field() {
        assert_eq!(
            Validator::fit(Field::UserAgent, "  curl/8  "),
            Some("curl/8")
        );
        assert_eq!(Validator::fit(Field::UserAgent, "   "), None);
        let long = "é".repeat(600);
        let cut = Validator::fit(Field::UserAgent, &long).unwrap();
        assert!(cut.len() <= 1024 && cut.len() >= 1022, "{}", cut.len());
        let mut e = validator().validate(&good()).unwrap();
        e.user_agent = Some(cut.to_owned());
        validator().check(&e).unwrap();
        let spaced = format!("{} tail", "x".repeat(1023));
        assert_eq!(
            Validator::fit(Field::UserAgent, &spaced).unwrap().len(),
            1023
        );
    }

    #[test]
    fn the_future_bound_is_a_setting() {
        let v = validator().with_max_ahead(std::time::Duration::from_secs(900));
        assert_eq!(v.max_ahead(), std::time::Duration::from_secs(900));
        let mut r = good();
        r.set(Field::EventTime, "2026-11-28 00:14:00 UTC");
        v.validate(&r).unwrap();
        r.set(Field::EventTime, "2026-11-28 00:16:00 UTC");
        let e = v.validate(&r).unwrap_err();
        assert_eq!(
            e.reason,
            "\"2026-11-28 00:16:00 UTC\" is more than 15m in the future"
        );
    }
}
