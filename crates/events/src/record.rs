//! The event as a record of the event log.
//!
//! Two encodings, told apart by their first byte, so that a log may hold both and every
//! consumer reads either:
//!
//! - [`RecordFormat::Json`]: the event as one JSON object (what [`crate::json::encode_json`]
//!   writes, without the newline). Any Kafka consumer can read it; the collector writes it to
//!   Kafka by default.
//! - [`RecordFormat::Binary`]: a compact layout for the embedded log, where only shoplake reads
//!   the records: about half the bytes, and decoding it costs a few allocations instead of a
//!   JSON parse and the validation of every text field. Decoding checks the layout (lengths,
//!   UTF-8, the event type, flags, nothing past the end), then the event against the
//!   validator's rules ([`Validator::check`]: a well-formed record with a bad value, from
//!   another producer, is refused like a bad JSON one).
//!
//! The binary layout, integers little-endian:
//!
//! | bytes | what |
//! |---|---|
//! | 1 | [`BINARY_V1`] (`0xB1`: never the first byte of JSON text, which is ASCII) |
//! | 1 | which optional fields follow: [`CATEGORY_CODE`], [`BRAND`], [`USER_SESSION`], [`IPV4`], [`IPV6`], [`USER_AGENT`], [`INGEST_TIME`] |
//! | 1 | the event type (0 view, 1 cart, 2 remove_from_cart, 3 purchase) |
//! | 5 × 8 | `event_time` (µs), `product_id`, `category_id`, `price` (cents), `user_id` |
//! | 8 | `ingest_time` (µs), when present |
//! | 4 or 16 | `client_ip`, when present |
//! | 4 + n, each | `category_code`, `brand`, `user_session`, `user_agent` when present: a u32 length, then UTF-8 |
//!
//! Changing the layout means a new first byte: records already in a log keep theirs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::event::{Event, EventType, Price};
use crate::validate::{FieldError, Validator};

/// The first byte of a binary record (layout version 1).
pub const BINARY_V1: u8 = 0xB1;

/// Flag: `category_code` follows.
pub const CATEGORY_CODE: u8 = 1;
/// Flag: `brand` follows.
pub const BRAND: u8 = 1 << 1;
/// Flag: `user_session` follows.
pub const USER_SESSION: u8 = 1 << 2;
/// Flag: an IPv4 `client_ip` follows.
pub const IPV4: u8 = 1 << 3;
/// Flag: an IPv6 `client_ip` follows.
pub const IPV6: u8 = 1 << 4;
/// Flag: `user_agent` follows.
pub const USER_AGENT: u8 = 1 << 5;
/// Flag: `ingest_time` follows.
pub const INGEST_TIME: u8 = 1 << 6;

/// How events are written into the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecordFormat {
    /// The compact binary layout (the embedded log's default).
    #[default]
    Binary,
    /// One JSON object per record (the Kafka default: readable by any consumer).
    Json,
}

impl RecordFormat {
    /// Parses `binary` or `json`.
    pub fn parse(s: &str) -> Option<RecordFormat> {
        match s {
            "binary" => Some(RecordFormat::Binary),
            "json" => Some(RecordFormat::Json),
            _ => None,
        }
    }
}

/// Appends an event as one record in `format`.
pub fn encode(buf: &mut Vec<u8>, e: &Event, format: RecordFormat) {
    match format {
        RecordFormat::Json => {
            crate::json::encode_json(buf, e);
            buf.pop();
        }
        RecordFormat::Binary => encode_binary(buf, e),
    }
}

fn encode_binary(buf: &mut Vec<u8>, e: &Event) {
    let mut flags = 0u8;
    let mut flag = |present: bool, bit: u8| {
        if present {
            flags |= bit;
        }
    };
    flag(e.category_code.is_some(), CATEGORY_CODE);
    flag(e.brand.is_some(), BRAND);
    flag(e.user_session.is_some(), USER_SESSION);
    flag(matches!(e.client_ip, Some(IpAddr::V4(_))), IPV4);
    flag(matches!(e.client_ip, Some(IpAddr::V6(_))), IPV6);
    flag(e.user_agent.is_some(), USER_AGENT);
    flag(e.ingest_time.is_some(), INGEST_TIME);
    buf.extend_from_slice(&[BINARY_V1, flags, e.event_type.code()]);
    for n in [
        e.event_time,
        e.product_id,
        e.category_id,
        e.price.cents(),
        e.user_id,
    ] {
        buf.extend_from_slice(&n.to_le_bytes());
    }
    if let Some(t) = e.ingest_time {
        buf.extend_from_slice(&t.to_le_bytes());
    }
    match e.client_ip {
        Some(IpAddr::V4(ip)) => buf.extend_from_slice(&ip.octets()),
        Some(IpAddr::V6(ip)) => buf.extend_from_slice(&ip.octets()),
        None => {}
    }
    for s in [&e.category_code, &e.brand, &e.user_session, &e.user_agent]
        .into_iter()
        .flatten()
    {
        // Fields are far shorter than 4 GiB: the validator bounds each.
        buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
        buf.extend_from_slice(s.as_bytes());
    }
}

/// Decodes a record in either format: JSON is decoded and validated like a request's row,
/// a binary record is checked for its layout and then against the validator's rules.
pub fn decode(bytes: &[u8], validator: &Validator) -> Result<Event, FieldError> {
    match bytes.first() {
        Some(&BINARY_V1) => {
            let e = decode_binary(bytes)?;
            validator.check(&e)?;
            Ok(e)
        }
        _ => crate::json::decode_event(bytes, validator),
    }
}

/// Reads a binary record front to back.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FieldError> {
        if self.rest.len() < n {
            return Err(FieldError::row("the binary record is cut short"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FieldError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn i64(&mut self) -> Result<i64, FieldError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn text(&mut self, present: bool) -> Result<Option<String>, FieldError> {
        if !present {
            return Ok(None);
        }
        let len = u32::from_le_bytes(self.array()?) as usize;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(|s| Some(s.to_owned()))
            .map_err(|_| FieldError::row("a text field of the binary record is not UTF-8"))
    }
}

fn decode_binary(bytes: &[u8]) -> Result<Event, FieldError> {
    let mut r = Reader { rest: bytes };
    let [_, flags, code] = r.array::<3>()?;
    if flags & 0x80 != 0 || flags & (IPV4 | IPV6) == IPV4 | IPV6 {
        return Err(FieldError::row(format!(
            "the binary record has unknown flags {flags:#04x}"
        )));
    }
    let event_type = EventType::ALL
        .get(usize::from(code))
        .copied()
        .ok_or_else(|| FieldError::row(format!("the binary record has event type {code}")))?;
    let event_time = r.i64()?;
    let product_id = r.i64()?;
    let category_id = r.i64()?;
    let price = Price(r.i64()?);
    if !(0..=Price::MAX.cents()).contains(&price.cents()) {
        return Err(FieldError::row(format!(
            "the binary record has price {} cents, out of range",
            price.cents()
        )));
    }
    let user_id = r.i64()?;
    let has = |bit: u8| flags & bit != 0;
    let ingest_time = if has(INGEST_TIME) {
        Some(r.i64()?)
    } else {
        None
    };
    let client_ip = if has(IPV4) {
        Some(IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)))
    } else if has(IPV6) {
        Some(IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)))
    } else {
        None
    };
    let category_code = r.text(has(CATEGORY_CODE))?;
    let brand = r.text(has(BRAND))?;
    let user_session = r.text(has(USER_SESSION))?;
    let user_agent = r.text(has(USER_AGENT))?;
    if !r.rest.is_empty() {
        return Err(FieldError::row(format!(
            "the binary record has {} bytes past its end",
            r.rest.len()
        )));
    }
    Ok(Event {
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
        ingest_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            event_time: 1_569_888_001_000_000,
            event_type: EventType::Purchase,
            product_id: 1_004_856,
            category_id: 2_053_013_555_631_882_655,
            category_code: Some("electronics.smartphone".to_owned()),
            brand: Some("samsung".to_owned()),
            price: Price(13_098),
            user_id: 541_312_140,
            user_session: Some("72d76fde-8bb3-4e00-8c23-a032dfed738c".to_owned()),
            client_ip: Some("203.0.113.7".parse().unwrap()),
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) \"quoted\" ünïcode".to_owned()),
            ingest_time: Some(1_569_888_002_000_000),
        }
    }

    fn variants() -> Vec<Event> {
        let full = event();
        let mut bare = full.clone();
        bare.category_code = None;
        bare.brand = None;
        bare.user_session = None;
        bare.client_ip = None;
        bare.user_agent = None;
        bare.ingest_time = None;
        let mut v6 = full.clone();
        v6.client_ip = Some("2001:db8::1".parse().unwrap());
        v6.event_type = EventType::RemoveFromCart;
        vec![full, bare, v6]
    }

    #[test]
    fn both_formats_round_trip() {
        let validator = Validator::default();
        for e in variants() {
            let mut buf = Vec::new();
            encode(&mut buf, &e, RecordFormat::Binary);
            assert_eq!(buf[0], BINARY_V1);
            assert_eq!(decode(&buf, &validator).unwrap(), e);

            let mut json = Vec::new();
            encode(&mut json, &e, RecordFormat::Json);
            assert_eq!(json[0], b'{');
            assert!(buf.len() < json.len(), "binary is the smaller");
            let mut back = decode(&json, &validator).unwrap();
            // JSON records carry no ingest time (the log's append time stands in).
            back.ingest_time = e.ingest_time;
            assert_eq!(back, e);
        }
    }

    #[test]
    fn every_cut_and_every_flipped_byte_is_an_error_or_an_event_never_a_panic() {
        let validator = Validator::default();
        let mut buf = Vec::new();
        encode(&mut buf, &event(), RecordFormat::Binary);
        for n in 0..buf.len() {
            let cut = &buf[..n];
            if n > 0 {
                let err = decode(cut, &validator).unwrap_err();
                assert!(err.reason.contains("binary record"), "{}", err.reason);
            }
        }
        let mut longer = buf.clone();
        longer.push(0);
        assert!(
            decode(&longer, &validator)
                .unwrap_err()
                .reason
                .contains("past its end")
        );
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[i] ^= 1 << bit;
                let _ = decode(&bad, &validator);
            }
        }
    }

    #[test]
    fn a_well_formed_record_with_a_bad_value_is_refused_like_json() {
        let validator = Validator::default();
        type Spoil = fn(&mut Event);
        let cases: [(Spoil, &str); 7] = [
            (|e| e.brand = Some(String::new()), "brand: is empty"),
            (|e| e.brand = Some("Samsung".into()), "not lower-case"),
            (
                |e| e.user_session = Some(" s ".into()),
                "surrounding whitespace",
            ),
            (|e| e.user_id = 0, "user_id: 0 is not a positive id"),
            (|e| e.product_id = -5, "product_id: -5 is not a positive id"),
            (|e| e.event_time = 0, "before 2000-01-01"),
            (
                |e| e.user_agent = Some("x".repeat(5000)),
                "user_agent: is longer than",
            ),
        ];
        for (spoil, want) in cases {
            let mut e = event();
            spoil(&mut e);
            let mut buf = Vec::new();
            encode(&mut buf, &e, RecordFormat::Binary);
            let err = decode(&buf, &validator).unwrap_err();
            let err = format!(
                "{}: {}",
                err.field.map_or("row", crate::validate::Field::name),
                err.reason
            );
            assert!(err.contains(want), "{err} lacks {want}");
        }
    }

    #[test]
    fn a_bad_type_price_or_flag_is_refused() {
        let validator = Validator::default();
        let mut buf = Vec::new();
        encode(&mut buf, &event(), RecordFormat::Binary);
        let mut bad = buf.clone();
        bad[2] = 4;
        assert!(
            decode(&bad, &validator)
                .unwrap_err()
                .reason
                .contains("event type 4")
        );
        let mut bad = buf.clone();
        bad[1] |= 0x80;
        assert!(
            decode(&bad, &validator)
                .unwrap_err()
                .reason
                .contains("unknown flags")
        );
        let mut bad = buf.clone();
        bad[3 + 24..3 + 32].copy_from_slice(&(-1i64).to_le_bytes());
        assert!(
            decode(&bad, &validator)
                .unwrap_err()
                .reason
                .contains("out of range")
        );
    }
}
