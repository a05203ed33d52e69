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

/// Writes the result in a format.
pub fn write<W: Write + Send>(result: &QueryOutput, format: Format, mut out: W) -> Result<()> {
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
            let mut w = arrow::json::ArrayWriter::new(&mut out);
            for b in &batches {
                w.write(b).map_err(output_error)?;
            }
            w.finish().map_err(output_error)?;
            drop(w);
            if result.rows() == 0 {
                // The writer prints nothing for no rows: an empty array is the answer.
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
