//! Property tests: nothing a file contains makes a decoder panic, and valid events round-trip
//! through CSV, JSON and Arrow.

use std::sync::Arc;

use proptest::prelude::*;
use shoplake_events::arrow::{from_record_batch, to_record_batch};
use shoplake_events::{
    CsvDecoder, CsvEncoder, Event, EventType, FixedClock, JsonDecoder, JsonEncoder, Price, Row,
    Validator,
};

fn validator() -> Validator {
    Validator::new(Arc::new(FixedClock(1_795_824_000_000_000)))
}

fn decode_csv(bytes: &[u8]) -> Vec<Row> {
    match CsvDecoder::new(bytes, validator()) {
        Ok(dec) => dec.map_while(Result::ok).collect(),
        Err(_) => Vec::new(),
    }
}

fn decode_json(bytes: &[u8]) -> Vec<Row> {
    JsonDecoder::new(bytes, validator())
        .map_while(Result::ok)
        .collect()
}

fn text() -> impl Strategy<Value = Option<String>> {
    // Trimmed, non-empty, with the characters that need quoting in CSV and escaping in JSON.
    proptest::option::of("[a-z0-9_.,\"é ]{0,12}[a-z0-9]")
        .prop_map(|s| s.map(|s| s.trim().to_owned()))
}

prop_compose! {
    fn event()(
        secs in 946_684_800i64..1_790_000_000,
        micros in prop_oneof![Just(0i64), 0i64..1_000_000],
        kind in 0usize..4,
        product_id in 1i64..i64::MAX,
        category_id in 1i64..i64::MAX,
        category_code in text(),
        brand in text(),
        cents in 0i64..=999_999_999_999,
        user_id in 1i64..i64::MAX,
        user_session in text(),
        ip in proptest::option::of(any::<[u8; 4]>()),
        agent in text(),
    ) -> Event {
        Event {
            event_time: secs * 1_000_000 + micros,
            event_type: EventType::ALL[kind],
            product_id,
            category_id,
            category_code,
            brand: brand.map(|b| b.to_lowercase()),
            price: Price(cents),
            user_id,
            user_session,
            client_ip: ip.map(std::net::IpAddr::from),
            user_agent: agent,
            ingest_time: None,
        }
    }
}

fn events_of(rows: Vec<Row>) -> Vec<Event> {
    rows.into_iter()
        .map(|r| match r {
            Row::Event(e) => e,
            Row::Reject(r) => panic!("unexpected reject: {r}"),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn csv_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        decode_csv(&bytes);
        let mut with_header = shoplake_events::csv::HEADER.as_bytes().to_vec();
        with_header.push(b'\n');
        with_header.extend(&bytes);
        decode_csv(&with_header);
    }

    #[test]
    fn csv_never_panics_on_row_like_text(rows in proptest::collection::vec("[0-9a-z:. ,\"\r\n_-]{0,120}", 0..20)) {
        let input = format!("{}\n{}", shoplake_events::csv::HEADER, rows.join("\n"));
        decode_csv(input.as_bytes());
    }

    #[test]
    fn json_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        decode_json(&bytes);
    }

    #[test]
    fn json_never_panics_on_json_like_text(s in "[\\[\\]{}\":,0-9a-z_ .\n-]{0,300}") {
        decode_json(s.as_bytes());
    }

    #[test]
    fn csv_round_trips(events in proptest::collection::vec(event(), 1..20), network in any::<bool>()) {
        let events: Vec<Event> = events.into_iter().map(|mut e| {
            if !network { e.client_ip = None; e.user_agent = None; }
            e
        }).collect();
        let mut enc = CsvEncoder::new(Vec::new(), network).unwrap();
        for e in &events { enc.write(e).unwrap(); }
        let bytes = enc.finish().unwrap();
        let back = events_of(decode_csv(&bytes));
        prop_assert_eq!(&back, &events);
        // And byte for byte the second time round.
        let mut enc = CsvEncoder::new(Vec::new(), network).unwrap();
        for e in &back { enc.write(e).unwrap(); }
        prop_assert_eq!(enc.finish().unwrap(), bytes);
    }

    #[test]
    fn json_round_trips(events in proptest::collection::vec(event(), 1..20)) {
        let mut enc = JsonEncoder::new(Vec::new());
        for e in &events { enc.write(e).unwrap(); }
        let bytes = enc.finish().unwrap();
        prop_assert_eq!(events_of(decode_json(&bytes)), events);
    }

    #[test]
    fn arrow_round_trips(events in proptest::collection::vec(event(), 0..20)) {
        let batch = to_record_batch(&events).unwrap();
        prop_assert_eq!(from_record_batch(&batch).unwrap(), events);
    }

    #[test]
    fn duplicates_share_an_id_and_differences_do_not(a in event(), b in event()) {
        let mut copy = a.clone();
        copy.client_ip = None;
        copy.ingest_time = Some(1);
        prop_assert_eq!(a.event_id(), copy.event_id());
        if !a.same_identity(&b) {
            prop_assert_ne!(a.event_id(), b.event_id());
        }
    }
}
