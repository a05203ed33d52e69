//! Writing query results: a readable table, CSV, JSON (an array of objects) or Parquet; and
//! the reports' rows, each type naming its columns ([`Tabular`]), as a table, CSV or JSON.

use std::io::Write;
use std::str::FromStr;

use arrow::array::RecordBatch;

use crate::engine::QueryOutput;
use crate::error::{Error, Result};

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Aligned columns for a terminal.
    #[default]
    Table,
    /// CSV with a header line.
    Csv,
    /// A JSON array of objects.
    Json,
    /// A Parquet file.
    Parquet,
}

impl FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Format> {
        match s {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "parquet" => Ok(Format::Parquet),
            _ => Err(Error::Argument(format!(
                "format {s:?}: expected table, csv, json or parquet"
            ))),
        }
    }
}

fn output_error(e: impl std::fmt::Display) -> Error {
    Error::Output(e.to_string())
}

/// Writes the result in a format. When the reader goes away (a closed pipe), the error is
/// [`Error::Closed`], whichever writer met it.
pub fn write<W: Write + Send>(result: &QueryOutput, format: Format, out: W) -> Result<()> {
    let mut out = Watch {
        inner: out,
        closed: false,
    };
    let written = write_to(result, format, &mut out);
    if out.closed {
        return Err(Error::Closed);
    }
    written
}

/// Counts the bytes written through it.
struct Counted<W> {
    inner: W,
    bytes: usize,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Notes a closed pipe on the way through.
struct Watch<W> {
    inner: W,
    closed: bool,
}

impl<W: Write> Write for Watch<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.inner.write(buf);
        self.note(r)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.inner.flush();
        self.note(r)
    }
}

impl<W> Watch<W> {
    fn note<T>(&mut self, r: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &r {
            self.closed |= e.kind() == std::io::ErrorKind::BrokenPipe;
        }
        r
    }
}

fn write_to<W: Write + Send>(result: &QueryOutput, format: Format, mut out: W) -> Result<()> {
    let batches: Vec<RecordBatch> = if result.batches.is_empty() {
        vec![RecordBatch::new_empty(result.schema.clone())]
    } else {
        result.batches.clone()
    };
    match format {
        Format::Table => {
            let table =
                arrow::util::pretty::pretty_format_batches(&batches).map_err(output_error)?;
            writeln!(out, "{table}").map_err(output_error)?;
            let n = result.rows();
            writeln!(out, "{n} row{}", if n == 1 { "" } else { "s" }).map_err(output_error)?;
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            for b in &batches {
                w.write(b).map_err(output_error)?;
            }
        }
        Format::Json => {
            // Whether the writer prints anything for no rows has changed between arrow
            // releases: count what it writes, and answer an empty array when it wrote nothing.
            let mut counted = Counted {
                inner: &mut out,
                bytes: 0,
            };
            let mut w = arrow::json::ArrayWriter::new(&mut counted);
            for b in batches.iter().filter(|b| b.num_rows() > 0) {
                w.write(b).map_err(output_error)?;
            }
            w.finish().map_err(output_error)?;
            drop(w);
            if counted.bytes == 0 {
                write!(out, "[]").map_err(output_error)?;
            }
            writeln!(out).map_err(output_error)?;
        }
        Format::Parquet => {
            let mut w = parquet::arrow::ArrowWriter::try_new(out, result.schema.clone(), None)
                .map_err(output_error)?;
            for b in &batches {
                w.write(b).map_err(output_error)?;
            }
            w.close().map_err(output_error)?;
        }
    }
    Ok(())
}

/// A report's row type: its columns, in order (its documented JSON field names).
pub trait Tabular: serde::Serialize {
    /// The columns of a table or CSV, as the row's JSON fields are named.
    const COLUMNS: &'static [&'static str];
}

/// Writes a report's rows: a JSON array (pretty), CSV with a header line, or an aligned
/// table for a terminal (`(no rows)` when there are none). Parquet is for query results.
pub fn write_rows<T: Tabular, W: Write>(rows: &[T], format: Format, out: W) -> Result<()> {
    let mut out = Watch {
        inner: out,
        closed: false,
    };
    let written = write_rows_to(rows, format, &mut out);
    if out.closed {
        return Err(Error::Closed);
    }
    written
}

/// Writes one value as pretty JSON (a report that is one object of several lists).
pub fn write_json<T: serde::Serialize, W: Write>(value: &T, out: W) -> Result<()> {
    let mut out = Watch {
        inner: out,
        closed: false,
    };
    let written = serde_json::to_writer_pretty(&mut out, value)
        .map_err(output_error)
        .and_then(|()| writeln!(out).map_err(output_error));
    if out.closed {
        return Err(Error::Closed);
    }
    written
}

fn write_rows_to<T: Tabular, W: Write>(rows: &[T], format: Format, mut out: W) -> Result<()> {
    if format == Format::Json {
        serde_json::to_writer_pretty(&mut out, rows).map_err(output_error)?;
        return writeln!(out).map_err(output_error);
    }
    let mut table = Vec::with_capacity(rows.len());
    for row in rows {
        let value = serde_json::to_value(row).map_err(output_error)?;
        table.push(T::COLUMNS.iter().map(|c| cell(value.get(*c))).collect());
    }
    match format {
        Format::Csv => write_csv(T::COLUMNS, &table, out),
        Format::Table => write_table(T::COLUMNS, &table, out),
        Format::Json => Ok(()),
        Format::Parquet => Err(Error::Argument(
            "format parquet is for query results; a report writes table, csv or json".to_owned(),
        )),
    }
}

/// A JSON value as a table cell: text as is, whole numbers as integers, fractions below one
/// with four places (rates, shares), others with two (money).
fn cell(v: Option<&serde_json::Value>) -> String {
    use serde_json::Value;
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.fract() != 0.0 && f.abs() < 1.0 => format!("{f:.4}"),
            (None, Some(f)) => format!("{f:.2}"),
            _ => n.to_string(),
        },
        Some(other) => other.to_string(),
    }
}

fn write_csv<W: Write>(columns: &[&str], table: &[Vec<String>], out: W) -> Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(columns).map_err(output_error)?;
    for r in table {
        w.write_record(r).map_err(output_error)?;
    }
    w.flush().map_err(output_error)
}

fn write_table<W: Write>(columns: &[&str], table: &[Vec<String>], mut out: W) -> Result<()> {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for r in table {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    writeln!(out, "{}", line(&mut columns.iter().copied())).map_err(output_error)?;
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    writeln!(out, "{}", rule.join("  ")).map_err(output_error)?;
    for r in table {
        writeln!(out, "{}", line(&mut r.iter().map(String::as_str))).map_err(output_error)?;
    }
    if table.is_empty() {
        writeln!(out, "(no rows)").map_err(output_error)?;
    }
    Ok(())
}
