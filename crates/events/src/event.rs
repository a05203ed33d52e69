//! The event: one row of the REES46 clickstream, plus the network fields the collector adds.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use xxhash_rust::xxh3::Xxh3;

/// What the shopper did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// Looked at a product page.
    View,
    /// Put a product into the cart.
    Cart,
    /// Took a product out of the cart.
    RemoveFromCart,
    /// Bought a product.
    Purchase,
}

impl EventType {
    /// Every event type, in a fixed order.
    pub const ALL: [EventType; 4] = [
        EventType::View,
        EventType::Cart,
        EventType::RemoveFromCart,
        EventType::Purchase,
    ];

    /// The name used in files (`view`, `cart`, `remove_from_cart`, `purchase`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::View => "view",
            EventType::Cart => "cart",
            EventType::RemoveFromCart => "remove_from_cart",
            EventType::Purchase => "purchase",
        }
    }

    /// Parses a name as written in files.
    pub fn parse(s: &str) -> Option<EventType> {
        match s {
            "view" => Some(EventType::View),
            "cart" => Some(EventType::Cart),
            "remove_from_cart" => Some(EventType::RemoveFromCart),
            "purchase" => Some(EventType::Purchase),
            _ => None,
        }
    }

    /// Its code in the identity hash and in binary log records (0 view … 3 purchase).
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A price exact to the cent, held as integer cents so sums never drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Price(pub i64);

impl Price {
    /// The largest price a `Decimal(12,2)` column holds: 9,999,999,999.99.
    pub const MAX: Price = Price(999_999_999_999);

    /// From integer cents.
    pub fn from_cents(cents: i64) -> Price {
        Price(cents)
    }

    /// The amount in cents.
    pub fn cents(self) -> i64 {
        self.0
    }

    /// The amount as a float, for statistics only (never for sums).
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 100.0
    }

    /// Appends the amount with exactly two decimals (`35.79`, `0.77`).
    pub fn write(self, out: &mut Vec<u8>) {
        let cents = self.0;
        if cents < 0 {
            out.push(b'-');
        }
        let abs = cents.unsigned_abs();
        let mut buf = itoa::Buffer::new();
        out.extend_from_slice(buf.format(abs / 100).as_bytes());
        let frac = (abs % 100) as u8;
        out.extend_from_slice(&[b'.', b'0' + frac / 10, b'0' + frac % 10]);
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::with_capacity(16);
        self.write(&mut out);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

/// A stable identity for an event: the 128-bit XXH3 hash of its nine canonical REES46 fields.
///
/// Exact duplicate rows share an id, whatever path they came in by; the network fields and the
/// ingest time are not part of it. Written as 32 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub u128);

impl EventId {
    /// Parses 32 hex digits.
    pub fn parse(s: &str) -> Option<EventId> {
        if s.len() != 32 {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(EventId)
    }

    /// The 32 lower-case hex digits, without going through `fmt`.
    pub fn to_hex(self) -> [u8; 32] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (i, byte) in self.0.to_be_bytes().iter().enumerate() {
            out[2 * i] = DIGITS[usize::from(byte >> 4)];
            out[2 * i + 1] = DIGITS[usize::from(byte & 0xf)];
        }
        out
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// One clickstream event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Event {
    /// When it happened, in microseconds since the Unix epoch (UTC).
    pub event_time: i64,
    /// What happened.
    pub event_type: EventType,
    /// The product.
    pub product_id: i64,
    /// The product's category (ids go up to 2^63).
    pub category_id: i64,
    /// The dotted category taxonomy (`electronics.smartphone`), when known.
    pub category_code: Option<String>,
    /// The brand, lower-case, when known.
    pub brand: Option<String>,
    /// The product's price at the time of the event.
    pub price: Price,
    /// The shopper.
    pub user_id: i64,
    /// The shopper's session, when known.
    pub user_session: Option<String>,
    /// The address the event came from (not part of the identity).
    pub client_ip: Option<IpAddr>,
    /// The sender's user agent (not part of the identity).
    pub user_agent: Option<String>,
    /// When the collector received it, in microseconds (not part of the identity).
    pub ingest_time: Option<i64>,
}

impl Event {
    /// The event's stable identity: a hash of the nine REES46 fields.
    ///
    /// The canonical encoding hashed is: `event_time` (i64 µs), the event type's code (u8),
    /// `product_id`, `category_id` (i64), `category_code`, `brand` (text), `price` (i64 cents),
    /// `user_id` (i64), `user_session` (text); integers little-endian, text as a u32 length then
    /// its UTF-8 bytes, a missing text as the length `u32::MAX`. Changing this changes every id
    /// in every lake: it is part of the storage format.
    pub fn event_id(&self) -> EventId {
        self.as_event_ref().event_id()
    }

    /// The event with its texts borrowed (the ingest time left out).
    pub fn as_event_ref(&self) -> EventRef<'_> {
        EventRef {
            event_time: self.event_time,
            event_type: self.event_type,
            product_id: self.product_id,
            category_id: self.category_id,
            category_code: self.category_code.as_deref(),
            brand: self.brand.as_deref().map(Cow::Borrowed),
            price: self.price,
            user_id: self.user_id,
            user_session: self.user_session.as_deref(),
            client_ip: self.client_ip,
            user_agent: self.user_agent.as_deref(),
        }
    }

    /// Whether two events are exact duplicates (same nine REES46 fields).
    pub fn same_identity(&self, other: &Event) -> bool {
        self.event_time == other.event_time
            && self.event_type == other.event_type
            && self.product_id == other.product_id
            && self.category_id == other.category_id
            && self.category_code == other.category_code
            && self.brand == other.brand
            && self.price == other.price
            && self.user_id == other.user_id
            && self.user_session == other.user_session
    }
}

/// An event whose texts borrow from the row it was read from: what a decoder yields before (or
/// instead of) allocating an [`Event`]. Brands are lower-cased, so a brand with upper-case
/// letters is owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// When it happened, in microseconds since the Unix epoch (UTC).
    pub event_time: i64,
    /// What happened.
    pub event_type: EventType,
    /// The product.
    pub product_id: i64,
    /// The product's category.
    pub category_id: i64,
    /// The dotted category taxonomy, when known.
    pub category_code: Option<&'a str>,
    /// The brand, lower-case, when known.
    pub brand: Option<Cow<'a, str>>,
    /// The product's price at the time of the event.
    pub price: Price,
    /// The shopper.
    pub user_id: i64,
    /// The shopper's session, when known.
    pub user_session: Option<&'a str>,
    /// The address the event came from.
    pub client_ip: Option<IpAddr>,
    /// The sender's user agent.
    pub user_agent: Option<&'a str>,
}

impl EventRef<'_> {
    /// The event's id (see [`Event::event_id`] for the canonical encoding hashed).
    pub fn event_id(&self) -> EventId {
        // The encoding goes into a reused buffer and is hashed in one call (a streaming
        // hasher's setup, copying its secret and buffer, cost more than the hashing); XXH3
        // gives the same digest either way.
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(512));
        }
        BUF.with(|buf| {
            let Ok(mut buf) = buf.try_borrow_mut() else {
                return self.event_id_streaming();
            };
            buf.clear();
            buf.extend_from_slice(&self.event_time.to_le_bytes());
            buf.push(self.event_type.code());
            buf.extend_from_slice(&self.product_id.to_le_bytes());
            buf.extend_from_slice(&self.category_id.to_le_bytes());
            text(&mut buf, self.category_code);
            text(&mut buf, self.brand.as_deref());
            buf.extend_from_slice(&self.price.0.to_le_bytes());
            buf.extend_from_slice(&self.user_id.to_le_bytes());
            text(&mut buf, self.user_session);
            EventId(xxhash_rust::xxh3::xxh3_128(&buf))
        })
    }

    /// The same id through the streaming hasher (when the buffer is in use: a re-entrant
    /// call); the tests' second computation.
    fn event_id_streaming(&self) -> EventId {
        fn text(h: &mut Xxh3, s: Option<&str>) {
            match s {
                Some(s) => {
                    h.update(&(s.len() as u32).to_le_bytes());
                    h.update(s.as_bytes());
                }
                None => h.update(&u32::MAX.to_le_bytes()),
            }
        }
        let mut h = Xxh3::new();
        h.update(&self.event_time.to_le_bytes());
        h.update(&[self.event_type.code()]);
        h.update(&self.product_id.to_le_bytes());
        h.update(&self.category_id.to_le_bytes());
        text(&mut h, self.category_code);
        text(&mut h, self.brand.as_deref());
        h.update(&self.price.0.to_le_bytes());
        h.update(&self.user_id.to_le_bytes());
        text(&mut h, self.user_session);
        EventId(h.digest128())
    }

    /// The event, owning its texts (no ingest time).
    pub fn to_event(&self) -> Event {
        Event {
            event_time: self.event_time,
            event_type: self.event_type,
            product_id: self.product_id,
            category_id: self.category_id,
            category_code: self.category_code.map(str::to_owned),
            brand: self.brand.as_deref().map(str::to_owned),
            price: self.price,
            user_id: self.user_id,
            user_session: self.user_session.map(str::to_owned),
            client_ip: self.client_ip,
            user_agent: self.user_agent.map(str::to_owned),
            ingest_time: None,
        }
    }
}

/// Appends a text of the identity encoding: its length as a u32, then its bytes; a missing
/// text as the length `u32::MAX`.
fn text(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
            buf.extend_from_slice(s.as_bytes());
        }
        None => buf.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            event_time: 1_569_888_004_000_000,
            event_type: EventType::View,
            product_id: 44_600_062,
            category_id: 2_103_807_459_595_387_724,
            category_code: None,
            brand: Some("shiseido".into()),
            price: Price(3579),
            user_id: 541_312_140,
            user_session: Some("72d76fde-8bb3-4e00-8c23-a032dfed738c".into()),
            client_ip: None,
            user_agent: None,
            ingest_time: None,
        }
    }

    #[test]
    fn one_shot_and_streaming_ids_agree() {
        let mut e = sample();
        assert_eq!(e.event_id(), e.as_event_ref().event_id_streaming());
        e.brand = None;
        e.user_session = Some("s".repeat(600));
        assert_eq!(e.event_id(), e.as_event_ref().event_id_streaming());
        e.category_code = Some("x".repeat(490));
        e.user_session = None;
        assert_eq!(e.event_id(), e.as_event_ref().event_id_streaming());
    }

    #[test]
    fn identity_ignores_network_fields() {
        let a = sample();
        let mut b = sample();
        b.client_ip = Some("203.0.113.9".parse().unwrap());
        b.user_agent = Some("curl/8".into());
        b.ingest_time = Some(1);
        assert_eq!(a.event_id(), b.event_id());
        assert!(a.same_identity(&b));
    }

    #[test]
    fn identity_distinguishes_missing_from_empty_and_shifted_text() {
        let a = sample();
        let mut b = sample();
        b.category_code = Some(String::new());
        assert_ne!(a.event_id(), b.event_id());
        let mut c = sample();
        c.brand = None;
        c.category_code = Some("shiseido".into());
        assert_ne!(a.event_id(), c.event_id());
    }

    #[test]
    fn event_id_is_stable_across_releases() {
        // Part of the storage format: if this changes, every lake's dedupe breaks.
        assert_eq!(
            sample().event_id().to_string(),
            "da19889d2c979bfaca908888711d6407"
        );
        let id = sample().event_id();
        assert_eq!(EventId::parse(&id.to_string()), Some(id));
        for id in [id, EventId(0), EventId(u128::MAX), EventId(0x0f << 64)] {
            assert_eq!(id.to_hex().as_slice(), id.to_string().as_bytes());
        }
    }

    #[test]
    fn price_formats_two_decimals() {
        assert_eq!(Price(3579).to_string(), "35.79");
        assert_eq!(Price(77).to_string(), "0.77");
        assert_eq!(Price(257_407).to_string(), "2574.07");
        assert_eq!(Price(0).to_string(), "0.00");
        assert_eq!(Price(-5).to_string(), "-0.05");
    }
}
