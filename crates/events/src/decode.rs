//! One choice of decoder for every path that reads events (import, the collector, `check`,
//! `replay`): the format by a file's name or a request's content type, and a [`Decoder`]
//! that reads either, row by row, each with the line it starts on.

use std::io::BufRead;

use crate::csv::{CsvDecoder, Row};
use crate::error::Result;
use crate::json::JsonDecoder;
use crate::validate::Validator;

/// The formats events come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// REES46 CSV with its header line.
    Csv,
    /// JSON: NDJSON, an array of objects, or one object.
    Json,
}

impl Format {
    /// By a file's name: `.json`, `.ndjson`, `.jsonl` (optionally `.gz`) are JSON, anything
    /// else CSV.
    pub fn of_name(name: &str) -> Format {
        let name = name.to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if [".json", ".ndjson", ".jsonl"]
            .iter()
            .any(|s| name.ends_with(s))
        {
            Format::Json
        } else {
            Format::Csv
        }
    }

    /// By a media type (a `Content-Type` with or without parameters), or `None` for one that
    /// is neither.
    pub fn of_media_type(media_type: &str) -> Option<Format> {
        let essence = media_type.split(';').next().unwrap_or_default().trim();
        match essence.to_ascii_lowercase().as_str() {
            "application/json"
            | "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines" => Some(Format::Json),
            "text/csv" | "application/csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// The rows of an input in either format (a buffered one: a file through a `BufReader`, a
/// request body as a byte slice).
pub enum Decoder<R: BufRead> {
    /// CSV.
    Csv(Box<CsvDecoder<R>>),
    /// JSON.
    Json(JsonDecoder<R>),
}

impl<R: BufRead> std::fmt::Debug for Decoder<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decoder::Csv(_) => f.write_str("Decoder::Csv"),
            Decoder::Json(_) => f.write_str("Decoder::Json"),
        }
    }
}

impl<R: BufRead> Decoder<R> {
    /// A decoder of `input` in `format` (CSV reads and checks its header now).
    pub fn new(format: Format, input: R, validator: Validator) -> Result<Decoder<R>> {
        Ok(match format {
            Format::Csv => Decoder::Csv(Box::new(CsvDecoder::new(input, validator)?)),
            Format::Json => Decoder::Json(JsonDecoder::new(input, validator)),
        })
    }

    /// JSON: stops with [`crate::Error::TooManyRows`] past `max` rows while decoding an
    /// array, never after it. CSV and NDJSON come a row at a time: their reader counts.
    pub fn with_max_rows(self, max: u64) -> Decoder<R> {
        match self {
            Decoder::Json(d) => Decoder::Json(d.with_max_rows(max)),
            csv => csv,
        }
    }

    /// The next row: an event or a refused row; `None` at the end.
    pub fn next_row(&mut self) -> Result<Option<Row>> {
        match self {
            Decoder::Csv(d) => d.next_row(),
            Decoder::Json(d) => d.next_row(),
        }
    }

    /// The line (CSV, NDJSON: 1-based) or array index (0-based) of the row last returned.
    pub fn line(&self) -> u64 {
        match self {
            Decoder::Csv(d) => d.line(),
            Decoder::Json(d) => d.line(),
        }
    }
}

impl<R: BufRead> Iterator for Decoder<R> {
    type Item = Result<Row>;

    fn next(&mut self) -> Option<Result<Row>> {
        self.next_row().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_comes_from_the_name_or_the_media_type() {
        for (name, want) in [
            ("oct.csv", Format::Csv),
            ("oct.csv.gz", Format::Csv),
            ("OCT.NDJSON", Format::Json),
            ("x.jsonl.gz", Format::Json),
            ("x.json", Format::Json),
            ("x", Format::Csv),
        ] {
            assert_eq!(Format::of_name(name), want, "{name}");
        }
        assert_eq!(
            Format::of_media_type("application/x-ndjson; charset=utf-8"),
            Some(Format::Json)
        );
        assert_eq!(Format::of_media_type("Text/CSV"), Some(Format::Csv));
        assert_eq!(Format::of_media_type("text/plain"), None);
    }

    #[test]
    fn either_format_gives_the_same_rows_with_their_lines() {
        let csv = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n\
                   2019-10-01 00:00:00 UTC,view,1,2,,,1.00,3,s\n\
                   nope,view,1,2,,,1.00,3,s\n";
        let json = "{\"event_time\":\"2019-10-01 00:00:00 UTC\",\"event_type\":\"view\",\"product_id\":1,\"category_id\":2,\"price\":1.0,\"user_id\":3,\"user_session\":\"s\"}\n\
                    {\"event_time\":\"nope\",\"event_type\":\"view\",\"product_id\":1,\"category_id\":2,\"price\":1.0,\"user_id\":3}\n";
        for (format, input) in [(Format::Csv, csv), (Format::Json, json)] {
            let mut d = Decoder::new(format, input.as_bytes(), Validator::default()).unwrap();
            let mut seen = Vec::new();
            while let Some(row) = d.next_row().unwrap() {
                seen.push((matches!(row, Row::Event(_)), d.line()));
            }
            let first = if format == Format::Csv { 2 } else { 1 };
            assert_eq!(seen, vec![(true, first), (false, first + 1)], "{format:?}");
        }
    }
}
