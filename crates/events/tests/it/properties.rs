//! Property tests: nothing a file contains makes a decoder panic, and valid events round-trip
//! through CSV, JSON and Arrow.

use std::sync::Arc;

use proptest::prelude::*;
use shoplake_events::arrow::{from_record_batch, to_record_batch};
use shoplake_events::csv::CsvBlockReader;
use shoplake_events::{
    CsvDecoder, CsvEncoder, Event, EventType, Field, FieldError, FixedClock, JsonDecoder,
    JsonEncoder, Price, RawEvent, Reject, Row, RowRef, Validator,
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

/// The rows as a straightforward decoder on the `csv` crate sees them: the reference.
fn decode_csv_reference(bytes: &[u8]) -> Vec<Row> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut header = csv::ByteRecord::new();
    if !reader.read_byte_record(&mut header).unwrap_or(false) {
        return Vec::new();
    }
    let columns: Vec<Option<Field>> = header
        .iter()
        .map(|name| Field::from_name(&String::from_utf8_lossy(name).trim().to_ascii_lowercase()))
        .collect();
    let v = validator();
    let mut rows = Vec::new();
    let mut record = csv::ByteRecord::new();
    while reader.read_byte_record(&mut record).unwrap_or(false) {
        if record.len() == 1 && record[0].iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let line = record.position().map_or(0, |p| p.line());
        let mut raw_text = Vec::new();
        for (i, f) in record.iter().enumerate() {
            if i > 0 {
                raw_text.push(b',');
            }
            if f.iter().any(|&b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
                raw_text.push(b'"');
                for &b in f {
                    if b == b'"' {
                        raw_text.push(b'"');
                    }
                    raw_text.push(b);
                }
                raw_text.push(b'"');
            } else {
                raw_text.extend_from_slice(f);
            }
        }
        let raw_text = String::from_utf8_lossy(&raw_text).into_owned();
        let checked = if record.len() != columns.len() {
            Err(FieldError::row(format!(
                "has {} fields, the header has {}",
                record.len(),
                columns.len()
            )))
        } else {
            let mut raw = RawEvent::default();
            let mut bad = None;
            for field in Field::ALL {
                if let Some(i) = columns.iter().position(|c| *c == Some(field)) {
                    match std::str::from_utf8(&record[i]) {
                        Ok(text) => raw.set(field, text.to_owned()),
                        Err(_) => {
                            bad = Some(FieldError::new(field, "is not valid UTF-8"));
                            break;
                        }
                    }
                }
            }
            match bad {
                Some(e) => Err(e),
                None => v.validate(&raw),
            }
        };
        rows.push(match checked {
            Ok(e) => Row::Event(e),
            Err(e) => Row::Reject(Reject::new(line, e, raw_text)),
        });
    }
    rows
}

/// The rows as the block decoder (used by imports) sees them, cut into blocks of `block` bytes.
fn decode_csv_blocks(bytes: &[u8], block: usize) -> Vec<Row> {
    let Ok((reader, layout)) = CsvBlockReader::new(bytes) else {
        return Vec::new();
    };
    let mut reader = reader.with_block_size(block);
    let mut rows = Vec::new();
    let v = validator();
    while let Ok(Some(b)) = reader.next_block() {
        layout.decode_block(&v, &b, |row| {
            rows.push(match row {
                RowRef::Event(e) => Row::Event(e.to_event()),
                RowRef::Reject(r) => Row::Reject(r),
            })
        });
    }
    rows
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

/// A CSV field as files hold it: plain, quoted (with commas, quotes, line ends), empty,
/// padded, or with a carriage return or an invalid byte.
fn csv_piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => Just(b"2019-10-01 00:00:04 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde".to_vec()),
        2 => Just(b"2019-10-01 00:00:05 UTC,cart,1,2,\"a,b\",\"Br\"\"and\",1.00,3,s".to_vec()),
        1 => Just(b"2019-10-01 00:00:05 UTC,cart,1,2,\"line\nbreak\",x,1.00,3,s".to_vec()),
        1 => Just(b"2019-10-01 00:00:05 UTC,cart,1,2,\"cr\r\nlf\",x,1.00,3,s".to_vec()),
        1 => Just(b"2019-10-01 00:00:06 UTC,view,1,2,,b,abc,3,s".to_vec()),
        1 => Just(b"1,2,3".to_vec()),
        1 => Just(b"   ".to_vec()),
        1 => Just(b"".to_vec()),
        1 => Just(b"2019-10-01 00:00:07 UTC,view,1,2,,\xff,1,3,s".to_vec()),
        1 => Just(b"2019-10-01 00:00:07 UTC,view,1,2,,a\rb,1,3,s".to_vec()),
        1 => Just(b"2019-10-01 00:00:08 UTC,view,1,2,,ab\"c,1,3,s".to_vec()),
        1 => Just(b"\"unterminated,1,2".to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The block decoder (imports) and the row decoder find the same rows, reasons and raw
    /// texts as the `csv` crate's reader, wherever the blocks are cut.
    #[test]
    fn block_decoding_matches_row_decoding(
        pieces in proptest::collection::vec((csv_piece(), prop_oneof![Just(&b"\n"[..]), Just(&b"\r\n"[..]), Just(&b"\r"[..])]), 0..24),
        last_end in any::<bool>(),
        block in 1usize..200,
    ) {
        let mut input = b"event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n".to_vec();
        let n = pieces.len();
        for (i, (piece, end)) in pieces.into_iter().enumerate() {
            input.extend_from_slice(&piece);
            if i + 1 < n || last_end {
                input.extend_from_slice(end);
            }
        }
        // The csv crate numbers a record after blank lines or a CR LF line end from the line
        // before; ours count line feeds (lines are checked in
        // `block_decoding_numbers_lines_exactly`).
        let normal = |rows: Vec<Row>| -> Vec<Row> {
            rows.into_iter()
                .map(|r| match r {
                    Row::Reject(mut r) => {
                        r.line = 0;
                        Row::Reject(r)
                    }
                    r => r,
                })
                .collect()
        };
        let rows = normal(decode_csv_reference(&input));
        prop_assert_eq!(normal(decode_csv_blocks(&input, block)), rows.clone(), "{:?}", String::from_utf8_lossy(&input));
        prop_assert_eq!(normal(decode_csv_blocks(&input, 4 << 20)), rows.clone());
        prop_assert_eq!(normal(decode_csv(&input)), rows);
    }
}

#[test]
fn block_decoding_numbers_lines_exactly() {
    let bad = "2019-10-01 00:00:06 UTC,view,1,2,,b,abc,3,s";
    let quoted = "2019-10-01 00:00:05 UTC,cart,1,2,\"line\nbreak\",x,1.00,3,s";
    let header = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session";
    for end in ["\n", "\r\n"] {
        let input = [header, "", bad, quoted, bad, "", "", "1,2", bad]
            .join(end)
            .into_bytes();
        for block in [1, 7, 64, 4 << 20] {
            let lines: Vec<u64> = decode_csv_blocks(&input, block)
                .into_iter()
                .filter_map(|r| match r {
                    Row::Reject(r) => Some(r.line),
                    Row::Event(_) => None,
                })
                .collect();
            assert_eq!(lines, [3, 6, 9, 10], "{end:?} {block}");
        }
        let lines: Vec<u64> = decode_csv(&input)
            .into_iter()
            .filter_map(|r| match r {
                Row::Reject(r) => Some(r.line),
                Row::Event(_) => None,
            })
            .collect();
        assert_eq!(lines, [3, 6, 9, 10], "{end:?} row decoder");
    }
}
