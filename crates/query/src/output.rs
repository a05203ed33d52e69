//! Writing query results: a readable table, CSV, JSON (an array of objects) or Parquet.

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
                "--format {s:?}: expected table, csv, json or parquet"
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
