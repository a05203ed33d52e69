//! The REES46 CSV format: a streaming decoder that validates as it reads, and an encoder that
//! writes the same format back.
//!
//! The header is required: columns are found by name, in any order; extra columns are ignored;
//! `client_ip` and `user_agent` are read when present. Quoted fields, CRLF line ends and a
//! UTF-8 byte-order mark are handled; `.csv.gz` is read through [`crate::io::open`].
//!
//! Input is cut into blocks of whole records ([`CsvBlockReader`]); a line without quotes or
//! carriage returns (nearly all) is split on commas directly, any other record goes through
//! `csv-core`'s state machine. [`CsvDecoder`] reads blocks as they arrive (a pipe's rows come
//! out as soon as their line is complete); an import hands blocks to several threads
//! ([`CsvLayout::decode_block`]). Lines are numbered by counting line feeds.

use std::io::{Read, Write};

use crate::error::{Error, Result};
use crate::event::{Event, EventRef};
use crate::validate::{Field, FieldError, Reject, Validator};

/// One decoded row: an event, or the reason it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    /// A valid event.
    Event(Event),
    /// A refused row.
    Reject(Reject),
}

/// One decoded row with its texts borrowed from the decoder: an event, or why it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowRef<'a> {
    /// A valid event.
    Event(EventRef<'a>),
    /// A refused row.
    Reject(Reject),
}

/// Reads REES46 CSV, validating each row.
pub struct CsvDecoder<R: Read> {
    blocks: CsvBlockReader<R>,
    layout: CsvLayout,
    validator: Validator,
    block: CsvBlock,
    cursor: Cursor,
    /// Bytes of the blocks before the current one (and the header).
    before: u64,
    rows: u64,
    /// The line the last row returned starts on.
    line: u64,
}

impl<R: Read> std::fmt::Debug for CsvDecoder<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvDecoder")
            .field("rows", &self.rows)
            .finish()
    }
}

impl<R: Read> CsvDecoder<R> {
    /// Reads and checks the header. Fails when the input is empty or the header lacks a
    /// REES46 column.
    pub fn new(input: R, validator: Validator) -> Result<Self> {
        let (blocks, layout) = CsvBlockReader::new(input)?;
        let blocks = blocks.streaming();
        let before = blocks.header_bytes;
        Ok(CsvDecoder {
            blocks,
            layout,
            validator,
            block: CsvBlock::default(),
            cursor: Cursor::new(0),
            before,
            rows: 0,
            line: 0,
        })
    }

    /// Data rows read so far (valid and refused).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The line the last row returned starts on (as a refused row's `line` counts; 0 before
    /// the first row).
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Bytes of (decompressed) input consumed so far.
    pub fn bytes(&self) -> u64 {
        self.before + self.cursor.pos as u64
    }

    /// The next row, `None` at the end of the input. An `Err` is a failure of the input itself
    /// (I/O, corrupt gzip): the rows before it are good, the rest cannot be read.
    pub fn next_row(&mut self) -> Result<Option<Row>> {
        Ok(self.next_ref()?.map(|row| match row {
            RowRef::Event(e) => Row::Event(e.to_event()),
            RowRef::Reject(r) => Row::Reject(r),
        }))
    }

    /// Like [`CsvDecoder::next_row`], with the event's texts borrowed from the decoder's
    /// buffer (valid until the next call): nothing is allocated for a good row.
    pub fn next_ref(&mut self) -> Result<Option<RowRef<'_>>> {
        let record = loop {
            if let Some(record) = self.cursor.advance(&self.block.bytes) {
                break record;
            }
            let Some(block) = self.blocks.next_block()? else {
                return Ok(None);
            };
            self.before += self.block.bytes.len() as u64;
            self.cursor = Cursor::new(block.first_line);
            self.block = block;
        };
        self.rows += 1;
        self.line = record.line;
        Ok(Some(self.layout.row(
            &self.validator,
            &self.block.bytes,
            &self.cursor,
            record,
        )))
    }

    /// Reads up to `max` rows into `events` and `rejects`; returns how many rows were read
    /// (0 at the end of the input).
    pub fn read_batch(
        &mut self,
        max: usize,
        events: &mut Vec<Event>,
        rejects: &mut Vec<Reject>,
    ) -> Result<usize> {
        let mut n = 0;
        while n < max {
            match self.next_row()? {
                None => break,
                Some(Row::Event(e)) => events.push(e),
                Some(Row::Reject(r)) => rejects.push(r),
            }
            n += 1;
        }
        Ok(n)
    }
}

impl<R: Read> Iterator for CsvDecoder<R> {
    type Item = Result<Row>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_row().transpose()
    }
}

/// Where the REES46 columns are in a file, from its header.
#[derive(Debug, Clone)]
pub struct CsvLayout {
    columns: [Option<usize>; 11],
    /// Per column of the file, the field it holds.
    fields: Vec<Option<Field>>,
    width: usize,
}

impl CsvLayout {
    /// From the header's fields: columns by name, in any order; a UTF-8 byte-order mark
    /// before the first is skipped.
    fn of_header<'a>(header: impl Iterator<Item = &'a [u8]>) -> Result<CsvLayout> {
        let mut columns = [None; 11];
        let mut names = Vec::new();
        let mut fields = Vec::new();
        for (i, raw) in header.enumerate() {
            let raw = if i == 0 {
                raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
            } else {
                raw
            };
            let name = String::from_utf8_lossy(raw).trim().to_ascii_lowercase();
            let field = Field::from_name(&name);
            if let Some(field) = field {
                if columns[field as usize].is_some() {
                    return Err(Error::Header(format!("column {name} appears twice")));
                }
                columns[field as usize] = Some(i);
            }
            fields.push(field);
            names.push(name);
        }
        let missing: Vec<&str> = Field::REQUIRED_COLUMNS
            .iter()
            .filter(|f| columns[**f as usize].is_none())
            .map(|f| f.name())
            .collect();
        if !missing.is_empty() {
            return Err(Error::Header(format!(
                "missing column(s) {}; the header has: {}",
                missing.join(", "),
                names.join(",")
            )));
        }
        Ok(CsvLayout {
            columns,
            fields,
            width: names.len(),
        })
    }

    /// Decodes a block's rows in order, handing each (an event borrowing the block, or a
    /// reject) to `f`.
    pub fn decode_block(
        &self,
        validator: &Validator,
        block: &CsvBlock,
        mut f: impl FnMut(RowRef<'_>),
    ) {
        let mut cursor = Cursor::new(block.first_line);
        while let Some(record) = cursor.advance(&block.bytes) {
            f(self.row(validator, &block.bytes, &cursor, record));
        }
    }

    /// The row of a record `cursor` found in `bytes`.
    fn row<'a>(
        &self,
        validator: &Validator,
        bytes: &'a [u8],
        cursor: &'a Cursor,
        record: Record,
    ) -> RowRef<'a> {
        let fields = match record.span {
            Span::Line { start, end } => self.line_fields(&bytes[start..end]),
            Span::Parsed => self.fields(&cursor.parsed()),
        };
        match fields.and_then(|fields| validator.validate_fields(&fields)) {
            Ok(e) => RowRef::Event(e),
            Err(e) => {
                let raw = match record.span {
                    Span::Line { start, end } => {
                        String::from_utf8_lossy(&bytes[start..end]).into_owned()
                    }
                    Span::Parsed => raw_fields(&cursor.parsed()),
                };
                RowRef::Reject(Reject::new(record.line, e, raw))
            }
        }
    }

    fn check_width(&self, n: usize) -> Result<(), FieldError> {
        if n == self.width {
            Ok(())
        } else {
            Err(FieldError::row(format!(
                "has {n} fields, the header has {}",
                self.width
            )))
        }
    }

    /// Each field's text, indexed by [`Field`], from a line without quotes: split on commas.
    fn line_fields<'a>(&self, line: &'a [u8]) -> Result<[Option<&'a str>; 11], FieldError> {
        let Ok(text) = std::str::from_utf8(line) else {
            // Which field is at fault, in column order.
            let record: Vec<&[u8]> = line.split(|&b| b == b',').collect();
            return self.fields(&record);
        };
        let mut raw: [Option<&str>; 11] = [None; 11];
        let mut n = 0;
        let mut from = 0;
        for end in memchr::memchr_iter(b',', line).chain([line.len()]) {
            if let Some(Some(field)) = self.fields.get(n) {
                raw[*field as usize] = text.get(from..end);
            }
            n += 1;
            from = end + 1;
        }
        self.check_width(n)?;
        Ok(raw)
    }

    /// Each field's text, indexed by [`Field`].
    fn fields<'a>(&self, record: &[&'a [u8]]) -> Result<[Option<&'a str>; 11], FieldError> {
        self.check_width(record.len())?;
        let mut raw: [Option<&str>; 11] = [None; 11];
        for field in Field::ALL {
            if let Some(i) = self.columns[field as usize] {
                let text = std::str::from_utf8(record[i])
                    .map_err(|_| FieldError::new(field, "is not valid UTF-8"))?;
                raw[field as usize] = Some(text);
            }
        }
        Ok(raw)
    }
}

/// A record found by a [`Cursor`]: plain positions, so that finding the next record and
/// borrowing its text are separate steps.
#[derive(Debug, Clone, Copy)]
struct Record {
    span: Span,
    /// The line it starts on.
    line: u64,
}

#[derive(Debug, Clone, Copy)]
enum Span {
    /// A line without quotes or carriage returns, `bytes[start..end]`.
    Line { start: usize, end: usize },
    /// Parsed by the CSV state machine into the cursor's buffers.
    Parsed,
}

/// Walks a block's records.
struct Cursor {
    pos: usize,
    line: u64,
    core: csv_core::Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
}

impl Cursor {
    fn new(line: u64) -> Cursor {
        Cursor {
            pos: 0,
            line,
            core: csv_core::Reader::new(),
            out: Vec::new(),
            ends: Vec::new(),
        }
    }

    /// The fields of the last record parsed by the state machine.
    fn parsed(&self) -> Vec<&[u8]> {
        split_fields(&self.out, &self.ends)
    }

    /// The next record of `bytes` (which hold whole records), skipping blank lines; `None`
    /// at the end.
    fn advance(&mut self, bytes: &[u8]) -> Option<Record> {
        while self.pos < bytes.len() {
            let rest = &bytes[self.pos..];
            let len = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
            let text = &rest[..len];
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if memchr::memchr2(b'"', b'\r', text).is_none() {
                let start = self.pos;
                self.pos += len + 1;
                self.line += 1;
                // A blank line (common at the end of hand-edited files) is not a row.
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(Record {
                    span: Span::Line {
                        start,
                        end: start + text.len(),
                    },
                    line: self.line - 1,
                });
            }
            // Quotes or a carriage return: the record (possibly over several lines) as the
            // CSV state machine sees it, from the start of its first line.
            let line = self.line
                + rest
                    .iter()
                    .take_while(|&&b| b == b'\r' || b == b'\n')
                    .filter(|&&b| b == b'\n')
                    .count() as u64;
            let n = core_record(&mut self.core, rest, &mut self.out, &mut self.ends)?;
            self.line += memchr::memchr_iter(b'\n', &rest[..n]).count() as u64;
            self.pos += n;
            if self.ends.len() == 1 && self.out.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(Record {
                span: Span::Parsed,
                line,
            });
        }
        None
    }
}

/// Reads one record with the CSV state machine from `input`, which holds whole records (the
/// last may lack its line end at the end of the input): its fields go to `out` (ending at
/// `ends`). Returns the bytes consumed, `None` when no record is left.
fn core_record(
    core: &mut csv_core::Reader,
    input: &[u8],
    out: &mut Vec<u8>,
    ends: &mut Vec<usize>,
) -> Option<usize> {
    use csv_core::ReadRecordResult;
    out.resize(out.len().max(1024), 0);
    ends.resize(ends.len().max(32), 0);
    let (mut nin, mut nout, mut nend) = (0, 0, 0);
    loop {
        let (res, i, o, e) = core.read_record(&input[nin..], &mut out[nout..], &mut ends[nend..]);
        nin += i;
        nout += o;
        nend += e;
        match res {
            // Nothing follows the input: this ends the record.
            ReadRecordResult::InputEmpty => continue,
            ReadRecordResult::OutputFull => out.resize(out.len() * 2, 0),
            ReadRecordResult::OutputEndsFull => ends.resize(ends.len() * 2, 0),
            ReadRecordResult::Record => {
                out.truncate(nout);
                ends.truncate(nend);
                return Some(nin);
            }
            ReadRecordResult::End => return None,
        }
    }
}

/// The fields `csv-core` wrote to `out`, ending at `ends`.
fn split_fields<'a>(out: &'a [u8], ends: &[usize]) -> Vec<&'a [u8]> {
    let mut from = 0;
    ends.iter()
        .map(|&end| {
            let field = &out[from..end];
            from = end;
            field
        })
        .collect()
}

/// A record's fields written back as a CSV line, for quarantine.
fn raw_fields(fields: &[&[u8]]) -> String {
    let mut out = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_field(&mut out, f);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whole records of a CSV input, with the line the first starts on.
#[derive(Debug, Clone, Default)]
pub struct CsvBlock {
    bytes: Vec<u8>,
    first_line: u64,
}

/// Cuts CSV input into blocks of whole records (about 4 MiB each), so that several threads
/// can decode them ([`CsvLayout::decode_block`]).
pub struct CsvBlockReader<R: Read> {
    input: R,
    /// Bytes read and not yet handed out; they start at a record's start.
    carry: Vec<u8>,
    eof: bool,
    /// The line `carry` starts on.
    line: u64,
    /// The size a block is cut at (the record that crosses it is left for the next).
    block: usize,
    /// Whether a block is cut from what one read returns (rows of a pipe come out as soon as
    /// their line is complete), rather than from a block's worth of input.
    streaming: bool,
    /// The buffer of a streaming reader's reads.
    buf: Vec<u8>,
    /// The header's length in bytes.
    header_bytes: u64,
}

impl<R: Read> std::fmt::Debug for CsvBlockReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvBlockReader")
            .field("line", &self.line)
            .finish()
    }
}

impl<R: Read> CsvBlockReader<R> {
    /// Reads and checks the header, like [`CsvDecoder::new`].
    pub fn new(input: R) -> Result<(CsvBlockReader<R>, CsvLayout)> {
        let mut reader = CsvBlockReader {
            input,
            carry: Vec::new(),
            eof: false,
            line: 1,
            block: 4 << 20,
            streaming: false,
            buf: Vec::new(),
            header_bytes: 0,
        };
        let mut core = csv_core::Reader::new();
        let (mut out, mut ends) = (Vec::new(), Vec::new());
        let header_len = loop {
            if reader.carry.len() >= 1 << 20 {
                return Err(Error::Header(
                    "no line end in the first MiB: expected a CSV header line".into(),
                ));
            }
            reader.read_some()?;
            let end = if reader.eof {
                Some(reader.carry.len())
            } else {
                record_boundary(&reader.carry, 1)
            };
            if let Some(end) = end {
                match core_record(&mut core, &reader.carry[..end], &mut out, &mut ends) {
                    Some(n) => break n,
                    None => {
                        return Err(Error::Header(
                            "the input is empty: expected a header line".into(),
                        ));
                    }
                }
            }
        };
        let layout = CsvLayout::of_header(split_fields(&out, &ends).into_iter())?;
        reader.line += memchr::memchr_iter(b'\n', &reader.carry[..header_len]).count() as u64;
        reader.carry.drain(..header_len);
        reader.header_bytes = header_len as u64;
        Ok((reader, layout))
    }

    /// Cuts blocks at about `bytes` (default 4 MiB) instead.
    pub fn with_block_size(mut self, bytes: usize) -> Self {
        self.block = bytes.max(1);
        self
    }

    /// Cuts each block from what one read returns (at least one whole record).
    pub fn streaming(mut self) -> Self {
        self.streaming = true;
        self
    }

    /// One read (of up to 64 KiB) onto `carry`.
    fn read_some(&mut self) -> Result<()> {
        if self.eof {
            return Ok(());
        }
        self.buf.resize(64 * 1024, 0);
        loop {
            match self.input.read(&mut self.buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.carry.extend_from_slice(&self.buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::io(format!("reading input near line {}", self.line))(
                        e,
                    ));
                }
            }
            return Ok(());
        }
    }

    /// Reads until `carry` holds `want` bytes or the input ends.
    fn fill(&mut self, want: usize) -> Result<()> {
        if self.carry.len() < want && !self.eof {
            let more = (want - self.carry.len()) as u64;
            // Straight into `carry` (no zeroing, no second copy).
            let n = (&mut self.input)
                .take(more)
                .read_to_end(&mut self.carry)
                .map_err(Error::io(format!("reading input near line {}", self.line)))?;
            self.eof = (n as u64) < more;
        }
        Ok(())
    }

    /// The next block, `None` at the end of the input.
    pub fn next_block(&mut self) -> Result<Option<CsvBlock>> {
        let mut want = self.block;
        loop {
            if !self.streaming {
                self.fill(want)?;
            }
            if self.carry.is_empty() && self.eof {
                return Ok(None);
            }
            let end = if self.eof {
                Some(self.carry.len())
            } else {
                record_boundary(&self.carry, usize::MAX)
            };
            if let Some(end) = end.filter(|&e| e > 0) {
                let rest = self.carry.split_off(end);
                let bytes = std::mem::replace(&mut self.carry, rest);
                let block = CsvBlock {
                    first_line: self.line,
                    bytes,
                };
                self.line += memchr::memchr_iter(b'\n', &block.bytes).count() as u64;
                if !self.streaming {
                    self.carry.reserve(self.block);
                }
                return Ok(Some(block));
            }
            // No whole record yet (or one longer than a block): read on, doubling what is held
            // once it is past one read's worth (each look scans all of it).
            want = self.carry.len() * 2;
            if self.streaming && self.carry.len() < 64 * 1024 {
                self.read_some()?;
            } else if self.streaming {
                self.fill(want)?;
            }
        }
    }
}

/// Where the last whole record of `buf` (which starts at a record's start) ends, looking at
/// no more than `records` records; `None` when no record ends in it.
fn record_boundary(buf: &[u8], records: usize) -> Option<usize> {
    if records == usize::MAX && memchr::memchr(b'"', buf).is_none() {
        // Without quotes, every line end ends a record.
        return memchr::memrchr2(b'\n', b'\r', buf).map(|i| i + 1);
    }
    let mut core = csv_core::Reader::new();
    let (mut out, mut ends) = (vec![0u8; 64 * 1024], vec![0usize; 64]);
    let (mut pos, mut last, mut seen) = (0, None, 0);
    while seen < records {
        let (res, nin, _, _) = core.read_record(&buf[pos..], &mut out, &mut ends);
        pos += nin;
        match res {
            csv_core::ReadRecordResult::Record => {
                last = Some(pos);
                seen += 1;
            }
            csv_core::ReadRecordResult::OutputFull => out.resize(out.len() * 2, 0),
            csv_core::ReadRecordResult::OutputEndsFull => ends.resize(ends.len() * 2, 0),
            // The rest is an unfinished record (or nothing).
            csv_core::ReadRecordResult::InputEmpty | csv_core::ReadRecordResult::End => break,
        }
        if pos >= buf.len() {
            break;
        }
    }
    last
}

fn write_field(out: &mut Vec<u8>, value: &[u8]) {
    if value
        .iter()
        .any(|&b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
    {
        out.push(b'"');
        for &b in value {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(value);
    }
}

/// The REES46 header line (without the line end).
pub const HEADER: &str =
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session";

/// Writes events as REES46 CSV: the nine columns, plus `client_ip,user_agent` when asked.
#[derive(Debug)]
pub struct CsvEncoder<W: Write> {
    out: W,
    buf: Vec<u8>,
    network_fields: bool,
}

impl<W: Write> CsvEncoder<W> {
    /// Writes the header and returns the encoder.
    pub fn new(out: W, network_fields: bool) -> Result<Self> {
        let mut enc = CsvEncoder {
            out,
            buf: Vec::with_capacity(64 * 1024),
            network_fields,
        };
        enc.buf.extend_from_slice(HEADER.as_bytes());
        if network_fields {
            enc.buf.extend_from_slice(b",client_ip,user_agent");
        }
        enc.buf.push(b'\n');
        Ok(enc)
    }

    /// Appends one event.
    pub fn write(&mut self, e: &Event) -> Result<()> {
        encode_row(&mut self.buf, e, self.network_fields);
        if self.buf.len() >= 60 * 1024 {
            self.out
                .write_all(&self.buf)
                .map_err(Error::io("writing CSV"))?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes what is buffered and returns the writer.
    pub fn finish(mut self) -> Result<W> {
        self.out
            .write_all(&self.buf)
            .map_err(Error::io("writing CSV"))?;
        self.out.flush().map_err(Error::io("writing CSV"))?;
        Ok(self.out)
    }
}

/// Appends one event as a CSV line (with its `\n`).
pub fn encode_row(buf: &mut Vec<u8>, e: &Event, network_fields: bool) {
    let mut ints = itoa::Buffer::new();
    crate::time::write_timestamp(buf, e.event_time);
    buf.push(b',');
    buf.extend_from_slice(e.event_type.as_str().as_bytes());
    buf.push(b',');
    buf.extend_from_slice(ints.format(e.product_id).as_bytes());
    buf.push(b',');
    buf.extend_from_slice(ints.format(e.category_id).as_bytes());
    buf.push(b',');
    write_field(buf, e.category_code.as_deref().unwrap_or("").as_bytes());
    buf.push(b',');
    write_field(buf, e.brand.as_deref().unwrap_or("").as_bytes());
    buf.push(b',');
    e.price.write(buf);
    buf.push(b',');
    buf.extend_from_slice(ints.format(e.user_id).as_bytes());
    buf.push(b',');
    write_field(buf, e.user_session.as_deref().unwrap_or("").as_bytes());
    if network_fields {
        buf.push(b',');
        if let Some(ip) = e.client_ip {
            use std::io::Write as _;
            let _ = write!(buf, "{ip}");
        }
        buf.push(b',');
        write_field(buf, e.user_agent.as_deref().unwrap_or("").as_bytes());
    }
    buf.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::FixedClock;
    use std::sync::Arc;

    fn validator() -> Validator {
        Validator::new(Arc::new(FixedClock(1_795_824_000_000_000)))
    }

    fn decode(input: &str) -> (Vec<Event>, Vec<Reject>) {
        let mut dec = CsvDecoder::new(input.as_bytes(), validator()).unwrap();
        let (mut events, mut rejects) = (Vec::new(), Vec::new());
        dec.read_batch(usize::MAX, &mut events, &mut rejects)
            .unwrap();
        (events, rejects)
    }

    const ROW: &str = "2019-10-01 00:00:04 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde-8bb3-4e00-8c23-a032dfed738c";

    #[test]
    fn columns_by_name_in_any_order_with_extras_bom_crlf_and_quotes() {
        let input = "\u{feff}user_id,extra,event_time,event_type,product_id,category_id,category_code,brand,price,user_session\r\n\
                     541312140,x,2019-10-01 00:00:04 UTC,view,44600062,2103807459595387724,\"a,b\",\"Shi\"\"seido\",35.79,s1\r\n";
        let (events, rejects) = decode(input);
        assert!(rejects.is_empty(), "{rejects:?}");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].category_code.as_deref(), Some("a,b"));
        assert_eq!(events[0].brand.as_deref(), Some("shi\"seido"));
        assert_eq!(events[0].user_id, 541_312_140);
    }

    #[test]
    fn rows_come_out_as_soon_as_their_line_is_read() {
        // A pipe whose writer has sent the header and one row so far (the next read fails
        // here instead of waiting).
        struct Pipe(Vec<&'static [u8]>);
        impl Read for Pipe {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0.is_empty() {
                    return Err(std::io::Error::other("would wait for the writer"));
                }
                let part = self.0.remove(0);
                buf[..part.len()].copy_from_slice(part);
                Ok(part.len())
            }
        }
        let first = format!("{HEADER}\n{ROW}\n{}", &ROW[..10]).leak().as_bytes();
        let mut dec = CsvDecoder::new(Pipe(vec![first]), validator()).unwrap();
        assert!(matches!(dec.next_row(), Ok(Some(Row::Event(_)))));
        assert!(dec.next_row().is_err());
    }

    #[test]
    fn long_lines_are_read_whole_and_a_header_must_end_within_a_mib() {
        let input = format!("{HEADER}\n{}\n{ROW}", "x".repeat(300_000));
        let (events, rejects) = decode(&input);
        assert_eq!(events.len(), 1);
        assert_eq!(rejects.len(), 1);
        assert_eq!(rejects[0].line, 2);
        assert_eq!(rejects[0].raw.len(), 300_000);
        let err = CsvDecoder::new("y".repeat(3 << 20).as_bytes(), validator()).unwrap_err();
        assert!(
            err.to_string().contains("no line end in the first MiB"),
            "{err}"
        );
    }

    #[test]
    fn header_is_checked() {
        let err = CsvDecoder::new("event_time,event_type\n".as_bytes(), validator()).unwrap_err();
        assert!(
            err.to_string()
                .contains("missing column(s) product_id, category_id"),
            "{err}"
        );
        assert!(CsvDecoder::new("".as_bytes(), validator()).is_err());
    }

    #[test]
    fn bad_rows_are_rejected_with_line_and_reason_and_good_rows_kept() {
        let input = format!(
            "{HEADER}\n{ROW}\n2019-10-01 00:00:05 UTC,view,1,2,,b,abc,3,s\n{ROW}\n1,2,3\n2019-10-01 00:00:05 UTC,click,1,2,,b,1.00,3,s\n"
        );
        let (events, rejects) = decode(&input);
        assert_eq!(events.len(), 2);
        let got: Vec<String> = rejects.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            got,
            [
                "line 3: price: \"abc\" is not a decimal number",
                "line 5: has 3 fields, the header has 9",
                "line 6: event_type: \"click\" is not one of view, cart, remove_from_cart, purchase",
            ]
        );
        assert_eq!(rejects[1].raw, "1,2,3");
    }

    #[test]
    fn round_trips_byte_for_byte() {
        let input =
            format!("{HEADER}\n{ROW}\n2019-10-01 00:00:05 UTC,purchase,1,2,\"x,y\",,0.77,3,\n");
        let (events, _) = decode(&input);
        let mut enc = CsvEncoder::new(Vec::new(), false).unwrap();
        for e in &events {
            enc.write(e).unwrap();
        }
        assert_eq!(String::from_utf8(enc.finish().unwrap()).unwrap(), input);
    }

    #[test]
    fn network_fields_round_trip() {
        let input = format!(
            "{HEADER},client_ip,user_agent\n{ROW},203.0.113.7,\"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)\"\n"
        );
        let (events, rejects) = decode(&input);
        assert!(rejects.is_empty());
        let mut enc = CsvEncoder::new(Vec::new(), true).unwrap();
        enc.write(&events[0]).unwrap();
        assert_eq!(String::from_utf8(enc.finish().unwrap()).unwrap(), input);
    }
}
