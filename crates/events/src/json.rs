//! JSON events: one object per event with the CSV's field names. The decoder reads NDJSON
//! (streaming, one object per line; a pretty-printed object may span lines), a JSON array of
//! objects, or a single object. Ids may be numbers or strings; prices numbers or strings.

use std::borrow::Cow;
use std::fmt;
use std::io::{BufRead, Write};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::csv::Row;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::validate::{Field, FieldError, RawEvent, Reject, Validator};

/// The largest single JSON value accepted (an object spanning lines is buffered until complete).
const MAX_VALUE_BYTES: usize = 1 << 20;

/// A JSON scalar as read, borrowing from the input where it can.
enum Scalar<'a> {
    Text(Cow<'a, str>),
    Null,
    Other(&'static str),
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Owned(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Owned(
            itoa::Buffer::new().format(v).to_owned(),
        )))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Owned(
            itoa::Buffer::new().format(v).to_owned(),
        )))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // The shortest text that reads back as the same float: `35.79` stays `35.79`.
        Ok(Scalar::Text(Cow::Owned(format!("{v}"))))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Other("a boolean"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other("an object"))
    }
}

impl<'de> de::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

/// An object's fields as text, or the first field with a type that cannot be text.
struct JsonRow<'a>(Result<RawEvent<'a>, FieldError>);

impl<'de> de::Deserialize<'de> for JsonRow<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RowVisitor;
        impl<'de> Visitor<'de> for RowVisitor {
            type Value = JsonRow<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut raw = RawEvent::default();
                let mut error = None;
                while let Some(key) = map.next_key::<Scalar<'de>>()? {
                    let field = match &key {
                        Scalar::Text(k) => Field::from_name(k),
                        _ => None,
                    };
                    let Some(field) = field else {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    };
                    match map.next_value::<Scalar<'de>>()? {
                        Scalar::Text(v) => raw.set(field, v),
                        Scalar::Null => {}
                        Scalar::Other(kind) => {
                            error.get_or_insert_with(|| {
                                FieldError::new(
                                    field,
                                    format!("expected a string or a number, found {kind}"),
                                )
                            });
                        }
                    }
                }
                Ok(JsonRow(match error {
                    Some(e) => Err(e),
                    None => Ok(raw),
                }))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(JsonRow(Err(FieldError::row(
                    "expected a JSON object, found an array",
                ))))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(JsonRow(Err(FieldError::row(
                    "expected a JSON object, found a string",
                ))))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(JsonRow(Err(FieldError::row(
                    "expected a JSON object, found a number",
                ))))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(JsonRow(Err(FieldError::row(
                    "expected a JSON object, found a number",
                ))))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(JsonRow(Err(FieldError::row(
                    "expected a JSON object, found a number",
                ))))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(JsonRow(Err(FieldError::row(
                    "expected a JSON object, found a boolean",
                ))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(JsonRow(Err(FieldError::row(
                    "expected a JSON object, found null",
                ))))
            }
        }
        d.deserialize_any(RowVisitor)
    }
}

fn decode_value(text: &str, validator: &Validator) -> Result<Event, FieldError> {
    let row: JsonRow<'_> = serde_json::from_str(text)
        .map_err(|e| FieldError::row(format!("is not valid JSON: {e}")))?;
    validator.validate(&row.0?)
}

fn reject(line: u64, error: FieldError, raw: &[u8]) -> Reject {
    Reject::new(
        line,
        error,
        String::from_utf8_lossy(raw).trim_end().to_owned(),
    )
}

/// Decodes every element of a JSON array; `line` of a reject is the element's index. Stops
/// with [`Error::TooManyRows`] at the element past `max_rows`, before decoding it.
fn decode_array(
    bytes: &[u8],
    validator: &Validator,
    max_rows: Option<u64>,
    out: &mut Vec<Row>,
) -> Result<()> {
    struct Elements<'v, 'o> {
        validator: &'v Validator,
        max_rows: Option<u64>,
        out: &'o mut Vec<Row>,
    }
    impl<'de> DeserializeSeed<'de> for Elements<'_, '_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }
    impl<'de> Visitor<'de> for Elements<'_, '_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON array of event objects")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut index = 0u64;
            while let Some(raw) = seq.next_element::<&'de RawValue>()? {
                if self.max_rows.is_some_and(|max| index >= max) {
                    return Err(de::Error::custom(TooMany));
                }
                self.out
                    .push(match decode_value(raw.get(), self.validator) {
                        Ok(e) => Row::Event(e),
                        Err(e) => Row::Reject(reject(index, e, raw.get().as_bytes())),
                    });
                index += 1;
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = Elements {
        validator,
        max_rows,
        out: &mut *out,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    result.map_err(|e| match max_rows {
        Some(limit) if e.to_string().starts_with(TooMany::MESSAGE) => Error::TooManyRows { limit },
        _ => Error::Json(format!(
            "the array is malformed after {} element(s): {e}",
            out.len()
        )),
    })
}

/// The array's element past the row limit (serde's errors carry only text).
struct TooMany;

impl TooMany {
    const MESSAGE: &'static str = "shoplake: more rows than the limit";
}

impl fmt::Display for TooMany {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::MESSAGE)
    }
}

/// Where an NDJSON value being read stands, carried from line to line so that each byte is
/// looked at once: a value spanning many lines is parsed once, when its brackets close, not
/// again at every line.
#[derive(Debug, Default, Clone, Copy)]
struct Nesting {
    /// Open `{` and `[` minus closed ones (outside strings); below zero on a stray closer.
    depth: i64,
    in_string: bool,
    escaped: bool,
}

impl Nesting {
    fn scan(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => self.depth -= 1,
                _ => {}
            }
        }
    }

    /// Whether the value may be complete: every bracket closed, outside any string.
    fn may_be_complete(&self) -> bool {
        self.depth <= 0 && !self.in_string
    }
}

/// Whether a line is a JSON object on its own: it starts with `{` and its brackets balance.
fn starts_an_object(line: &[u8]) -> bool {
    if !line.trim_ascii_start().starts_with(b"{") {
        return false;
    }
    let mut n = Nesting::default();
    n.scan(line);
    n.depth == 0 && !n.in_string
}

/// Reads JSON events, validating each; NDJSON streams in constant memory.
pub struct JsonDecoder<R: BufRead> {
    input: R,
    validator: Validator,
    /// Lines read so far.
    lines: u64,
    started: bool,
    buf: Vec<u8>,
    pending: Vec<u8>,
    pending_line: u64,
    nesting: Nesting,
    carry: bool,
    queued: std::vec::IntoIter<Row>,
    rows: u64,
    max_rows: Option<u64>,
    /// The input is an array (rows are numbered by index).
    array: bool,
    /// Where the last row returned starts.
    last_line: u64,
}

impl<R: BufRead> fmt::Debug for JsonDecoder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonDecoder")
            .field("lines", &self.lines)
            .finish()
    }
}

impl<R: BufRead> JsonDecoder<R> {
    /// A decoder over `input`.
    pub fn new(input: R, validator: Validator) -> Self {
        JsonDecoder {
            input,
            validator,
            lines: 0,
            started: false,
            buf: Vec::new(),
            pending: Vec::new(),
            pending_line: 0,
            nesting: Nesting::default(),
            carry: false,
            queued: Vec::new().into_iter(),
            rows: 0,
            max_rows: None,
            array: false,
            last_line: 0,
        }
    }

    /// Stops with [`Error::TooManyRows`] instead of reading a row past `max` (a JSON array is
    /// checked while it is decoded, not after).
    pub fn with_max_rows(mut self, max: u64) -> Self {
        self.max_rows = Some(max);
        self
    }

    /// Rows read so far (valid and refused).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Where the last row returned starts, as a refused row's `line` counts: the line of an
    /// NDJSON value, the index of an array's element (0 before the first row).
    pub fn line(&self) -> u64 {
        self.last_line
    }

    /// The next row, `None` at the end. An `Err` means the input itself failed (I/O, or a
    /// malformed array): the rows before it are good.
    pub fn next_row(&mut self) -> Result<Option<Row>> {
        let row = self.next_inner()?;
        if row.is_some() {
            if let Some(limit) = self.max_rows
                && self.rows >= limit
            {
                return Err(Error::TooManyRows { limit });
            }
            self.last_line = if self.array {
                self.rows
            } else {
                self.pending_line
            };
            self.rows += 1;
        }
        Ok(row)
    }

    fn next_inner(&mut self) -> Result<Option<Row>> {
        if let Some(row) = self.queued.next() {
            return Ok(Some(row));
        }
        loop {
            // A line kept from the last call (it started a new value) is read again.
            if !std::mem::take(&mut self.carry) {
                self.buf.clear();
                let n = self
                    .input
                    .read_until(b'\n', &mut self.buf)
                    .map_err(Error::io("reading JSON"))?;
                if n == 0 {
                    return Ok(self.end_of_input());
                }
                self.lines += 1;
            }
            let mut chunk: &[u8] = &self.buf;
            if !self.started {
                chunk = chunk.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(chunk);
                if chunk.trim_ascii().is_empty() {
                    continue;
                }
                self.started = true;
                if chunk.trim_ascii_start().starts_with(b"[") {
                    let head = chunk.to_vec();
                    return self.read_array(head);
                }
            }
            if self.pending.is_empty() {
                if chunk.trim_ascii().is_empty() {
                    continue;
                }
                self.pending_line = self.lines;
            } else if starts_an_object(chunk) {
                // A line that is a whole object of its own while a value is open: the open
                // value was cut short (NDJSON has one value a line). It is refused, and the
                // line read again as the start of the next.
                self.carry = true;
                self.nesting = Nesting::default();
                let raw = std::mem::take(&mut self.pending);
                let err = FieldError::row(
                    "is an incomplete JSON value (the next line starts another one)",
                );
                return Ok(Some(Row::Reject(reject(self.pending_line, err, &raw))));
            }
            self.pending.extend_from_slice(chunk);
            self.nesting.scan(chunk);
            // A value's first line is parsed at once (a line that is already not JSON is
            // refused at that line); after that only when its brackets close, or when a
            // string runs past the end of a line (no JSON string holds a raw newline).
            let first_line = self.pending_line == self.lines;
            if !first_line
                && !self.nesting.may_be_complete()
                && !self.nesting.in_string
                && self.pending.len() <= MAX_VALUE_BYTES
            {
                continue;
            }
            if let Some(row) = self.parse_pending() {
                return Ok(Some(row));
            }
        }
    }

    /// The end of the input: a value still open there is refused.
    fn end_of_input(&mut self) -> Option<Row> {
        if self.pending.is_empty() {
            return None;
        }
        let raw = std::mem::take(&mut self.pending);
        let err = FieldError::row("is an incomplete JSON value (the input ends inside it)");
        Some(Row::Reject(reject(self.pending_line, err, &raw)))
    }

    /// An input that is one JSON array: the rest is read and decoded whole (the row limit
    /// checked while decoding), its rows queued.
    fn read_array(&mut self, mut all: Vec<u8>) -> Result<Option<Row>> {
        self.array = true;
        self.input
            .read_to_end(&mut all)
            .map_err(Error::io("reading JSON"))?;
        let mut rows = Vec::new();
        let result = decode_array(&all, &self.validator, self.max_rows, &mut rows);
        self.queued = rows.into_iter();
        result?;
        Ok(self.queued.next())
    }

    /// The open value parsed: its row (an event or a refusal), or `None` while it needs more
    /// lines.
    fn parse_pending(&mut self) -> Option<Row> {
        match serde_json::from_slice::<&RawValue>(&self.pending) {
            Ok(raw) => {
                self.nesting = Nesting::default();
                let row = match decode_value(raw.get(), &self.validator) {
                    Ok(e) => Row::Event(e),
                    Err(e) => Row::Reject(reject(self.pending_line, e, &self.pending)),
                };
                self.pending.clear();
                Some(row)
            }
            Err(e) if e.is_eof() && self.pending.len() <= MAX_VALUE_BYTES => None,
            Err(e) => {
                self.nesting = Nesting::default();
                let reason = if e.is_eof() {
                    format!("is a JSON value larger than {MAX_VALUE_BYTES} bytes")
                } else {
                    format!("is not valid JSON: {e}")
                };
                let raw = std::mem::take(&mut self.pending);
                let err = FieldError::row(reason);
                Some(Row::Reject(reject(self.pending_line, err, &raw)))
            }
        }
    }
}

impl<R: BufRead> Iterator for JsonDecoder<R> {
    type Item = Result<Row>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_row().transpose()
    }
}

/// Decodes and validates one JSON object (an event as `encode_json` writes it, such as a log
/// record), without a decoder's buffering.
pub fn decode_event(bytes: &[u8], validator: &Validator) -> Result<Event, FieldError> {
    let text = std::str::from_utf8(bytes).map_err(|_| FieldError::row("is not UTF-8"))?;
    decode_value(text.trim_ascii(), validator)
}

/// Appends one event as a JSON object and a newline (NDJSON).
pub fn encode_json(buf: &mut Vec<u8>, e: &Event) {
    fn string(buf: &mut Vec<u8>, s: &str) {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, s);
    }
    fn opt(buf: &mut Vec<u8>, s: Option<&str>) {
        match s {
            Some(s) => string(buf, s),
            None => buf.extend_from_slice(b"null"),
        }
    }
    let mut ints = itoa::Buffer::new();
    buf.extend_from_slice(b"{\"event_time\":\"");
    crate::time::write_timestamp(buf, e.event_time);
    buf.extend_from_slice(b"\",\"event_type\":\"");
    buf.extend_from_slice(e.event_type.as_str().as_bytes());
    buf.extend_from_slice(b"\",\"product_id\":");
    buf.extend_from_slice(ints.format(e.product_id).as_bytes());
    buf.extend_from_slice(b",\"category_id\":");
    buf.extend_from_slice(ints.format(e.category_id).as_bytes());
    buf.extend_from_slice(b",\"category_code\":");
    opt(buf, e.category_code.as_deref());
    buf.extend_from_slice(b",\"brand\":");
    opt(buf, e.brand.as_deref());
    buf.extend_from_slice(b",\"price\":");
    e.price.write(buf);
    buf.extend_from_slice(b",\"user_id\":");
    buf.extend_from_slice(ints.format(e.user_id).as_bytes());
    buf.extend_from_slice(b",\"user_session\":");
    opt(buf, e.user_session.as_deref());
    if let Some(ip) = e.client_ip {
        buf.extend_from_slice(b",\"client_ip\":\"");
        match ip {
            // Digits by hand: formatting through `Display` was a visible share of the
            // collector's time.
            std::net::IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().iter().enumerate() {
                    if i > 0 {
                        buf.push(b'.');
                    }
                    buf.extend_from_slice(ints.format(*octet).as_bytes());
                }
            }
            std::net::IpAddr::V6(v6) => {
                use std::io::Write as _;
                let _ = write!(buf, "{v6}");
            }
        }
        buf.push(b'"');
    }
    if let Some(ua) = &e.user_agent {
        buf.extend_from_slice(b",\"user_agent\":");
        string(buf, ua);
    }
    buf.extend_from_slice(b"}\n");
}

/// Writes events as NDJSON.
#[derive(Debug)]
pub struct JsonEncoder<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> JsonEncoder<W> {
    /// An encoder writing to `out`.
    pub fn new(out: W) -> Self {
        JsonEncoder {
            out,
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    /// Appends one event.
    pub fn write(&mut self, e: &Event) -> Result<()> {
        encode_json(&mut self.buf, e);
        if self.buf.len() >= 60 * 1024 {
            self.out
                .write_all(&self.buf)
                .map_err(Error::io("writing JSON"))?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes what is buffered and returns the writer.
    pub fn finish(mut self) -> Result<W> {
        self.out
            .write_all(&self.buf)
            .map_err(Error::io("writing JSON"))?;
        self.out.flush().map_err(Error::io("writing JSON"))?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::FixedClock;
    use std::sync::Arc;

    fn decode(input: &str) -> Result<(Vec<Event>, Vec<Reject>)> {
        let v = Validator::new(Arc::new(FixedClock(1_795_824_000_000_000)));
        let mut events = Vec::new();
        let mut rejects = Vec::new();
        for row in JsonDecoder::new(input.as_bytes(), v) {
            match row? {
                Row::Event(e) => events.push(e),
                Row::Reject(r) => rejects.push(r),
            }
        }
        Ok((events, rejects))
    }

    const OBJ: &str = r#"{"event_time":"2019-10-01 00:00:04 UTC","event_type":"view","product_id":44600062,"category_id":"2103807459595387724","category_code":null,"brand":"shiseido","price":35.79,"user_id":541312140,"user_session":"72d76fde-8bb3-4e00-8c23-a032dfed738c"}"#;

    #[test]
    fn ndjson_array_single_and_pretty_objects() {
        let (e, r) = decode(&format!("{OBJ}\n\n{OBJ}\n")).unwrap();
        assert_eq!((e.len(), r.len()), (2, 0));
        let (e, r) = decode(&format!("[{OBJ},\n{OBJ}]")).unwrap();
        assert_eq!((e.len(), r.len()), (2, 0));
        let (e, r) = decode(OBJ).unwrap();
        assert_eq!((e.len(), r.len()), (1, 0));
        let pretty =
            serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(OBJ).unwrap())
                .unwrap();
        let (e, r) = decode(&format!("{pretty}\n{OBJ}\n")).unwrap();
        assert_eq!((e.len(), r.len()), (2, 0));
        assert_eq!(e[0].price.cents(), 3579);
        assert_eq!(e[0].category_id, 2_103_807_459_595_387_724);
    }

    #[test]
    fn each_row_says_where_it_starts() {
        let ndjson = "\n{\"a\":1}\n{\n\"b\": 2\n}\n\n[]\n";
        let mut d = JsonDecoder::new(ndjson.as_bytes(), Validator::default());
        let mut lines = Vec::new();
        while d.next_row().unwrap().is_some() {
            lines.push(d.line());
        }
        assert_eq!(lines, vec![2, 3, 7]);
        let array = "[{\"a\":1},\n 2,\n {}]";
        let mut d = JsonDecoder::new(array.as_bytes(), Validator::default());
        let mut lines = Vec::new();
        while let Some(row) = d.next_row().unwrap() {
            lines.push(d.line());
            if let Row::Reject(r) = row {
                assert_eq!(r.line, d.line(), "as refused rows count");
            }
        }
        assert_eq!(lines, vec![0, 1, 2]);
    }

    #[test]
    fn bad_rows_are_rejected_with_line_and_good_rows_kept() {
        let bad_type = OBJ.replace("\"price\":35.79", "\"price\":true");
        let bad_value = OBJ.replace("\"view\"", "\"click\"");
        let input = format!("{OBJ}\n{{not json\n{bad_type}\n42\n{bad_value}\n{OBJ}\n");
        let (e, r) = decode(&input).unwrap();
        assert_eq!(e.len(), 2);
        let got: Vec<String> = r.iter().map(|r| r.to_string()).collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got[0].starts_with("line 2: is not valid JSON"), "{got:?}");
        assert_eq!(
            got[1],
            "line 3: price: expected a string or a number, found a boolean"
        );
        assert_eq!(got[2], "line 4: expected a JSON object, found a number");
        assert_eq!(
            got[3],
            "line 5: event_type: \"click\" is not one of view, cart, remove_from_cart, purchase"
        );
    }

    #[test]
    fn array_rejects_carry_the_index() {
        let bad = OBJ.replace("541312140", "\"x\"");
        let (e, r) = decode(&format!("[{OBJ},{bad}]")).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(r[0].to_string(), "line 1: user_id: \"x\" is not an integer");
        assert!(decode(&format!("[{OBJ},")).is_err());
    }

    #[test]
    fn round_trips_through_the_encoder() {
        let (events, _) = decode(OBJ).unwrap();
        let mut enc = JsonEncoder::new(Vec::new());
        enc.write(&events[0]).unwrap();
        let text = String::from_utf8(enc.finish().unwrap()).unwrap();
        let (again, _) = decode(&text).unwrap();
        assert_eq!(events, again);
    }

    #[test]
    fn a_value_spanning_lines_is_complete_only_when_its_brackets_close() {
        // Braces and brackets inside strings (escaped quotes too) do not count.
        let tricky = OBJ.replace("\"shiseido\"", "\"a{[\\\"}]\"");
        let spread = tricky.replace(',', ",\n");
        let (e, r) = decode(&format!("{spread}\n{OBJ}\n")).unwrap();
        assert_eq!((e.len(), r.len()), (2, 0), "{r:?}");
        assert_eq!(e[0].brand.as_deref(), Some("a{[\"}]"));
        // An open brace and a million newlines: one refused value, then the good row.
        let mut big = "{".to_owned();
        big.push_str(&"\n".repeat(MAX_VALUE_BYTES + 10));
        big.push_str(OBJ);
        big.push('\n');
        let (e, r) = decode(&big).unwrap();
        assert_eq!((e.len(), r.len()), (1, 1));
        assert!(r[0].reason.contains("larger than"), "{}", r[0]);
        // A value cut short is refused at the next line that is an object of its own, and
        // that line and the ones after it are kept; so is a string cut at a line's end.
        let (e, r) = decode(&format!("{{\"user_id\":1,\n{OBJ}\n{OBJ}\n")).unwrap();
        assert_eq!((e.len(), r.len(), r[0].line), (2, 1, 1), "{r:?}");
        assert!(r[0].reason.contains("next line starts another"), "{}", r[0]);
        let (e, r) = decode(&format!("{{\"brand\":\n\"cut\n{OBJ}\n")).unwrap();
        assert_eq!((e.len(), r.len()), (1, 1), "{r:?}");
        // A stray closer is refused at its line, not carried on.
        let (e, r) = decode(&format!("}}\n{OBJ}\n")).unwrap();
        assert_eq!((e.len(), r.len(), r[0].line), (1, 1, 1));
    }

    #[test]
    fn the_row_limit_holds_while_decoding() {
        let v = Validator::new(Arc::new(FixedClock(1_795_824_000_000_000)));
        let array = format!("[{}]", ["1"; 1000].join(","));
        let mut rows = JsonDecoder::new(array.as_bytes(), v.clone()).with_max_rows(10);
        assert!(matches!(
            rows.next_row(),
            Err(Error::TooManyRows { limit: 10 })
        ));
        let ndjson = format!("{OBJ}\n").repeat(11);
        let mut rows = JsonDecoder::new(ndjson.as_bytes(), v.clone()).with_max_rows(10);
        for _ in 0..10 {
            assert!(matches!(rows.next_row(), Ok(Some(Row::Event(_)))));
        }
        assert!(matches!(
            rows.next_row(),
            Err(Error::TooManyRows { limit: 10 })
        ));
        // At the limit exactly: all rows, no error.
        let ten = format!("[{}]", [OBJ; 10].join(","));
        let n = JsonDecoder::new(ten.as_bytes(), v)
            .with_max_rows(10)
            .filter(|r| r.is_ok())
            .count();
        assert_eq!(n, 10);
    }
}
