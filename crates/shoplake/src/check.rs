//! `shoplake check`: validate event files and report every rejected row.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;
use shoplake_events::io::open;
use shoplake_events::time::format_timestamp;
use shoplake_events::{Decoder, EventType, Reject, Row, Validator};

use crate::progress::Progress;

/// Options of `shoplake check`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 when every row is valid, 1 when any row was rejected, \
    2 when a file could not be read."
)]
pub struct Args {
    /// Files to check (`-` for stdin). CSV, NDJSON or JSON; gzip is detected from the content.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Output: a readable summary, or JSON with every reject.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// How the files are encoded (default: from the name: `.json`, `.ndjson`, `.jsonl` are
    /// JSON, anything else CSV).
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    input_format: InputFormat,
    /// Rejects shown per file in the text summary.
    #[arg(long, default_value_t = 10, value_name = "N")]
    show: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum InputFormat {
    Auto,
    Csv,
    Json,
}

#[derive(Debug, Default, Serialize)]
struct FileReport {
    path: String,
    rows: u64,
    valid: u64,
    rejected: u64,
    /// Valid rows per event type.
    event_types: std::collections::BTreeMap<&'static str, u64>,
    first_event: Option<String>,
    last_event: Option<String>,
    /// Set when the file could not be read to the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    rejects: Vec<Reject>,
}

#[derive(Debug, Serialize)]
struct Report {
    files: Vec<FileReport>,
    rows: u64,
    valid: u64,
    rejected: u64,
}

fn format_of(path: &Path, format: InputFormat) -> shoplake_events::Format {
    match format {
        InputFormat::Csv => shoplake_events::Format::Csv,
        InputFormat::Json => shoplake_events::Format::Json,
        InputFormat::Auto => shoplake_events::Format::of_name(&path.to_string_lossy()),
    }
}

fn check_file(path: &Path, format: InputFormat, validator: &Validator) -> FileReport {
    let mut report = FileReport {
        path: path.display().to_string(),
        ..FileReport::default()
    };
    let mut first = i64::MAX;
    let mut last = i64::MIN;
    let mut progress = Progress::new("check", None);
    let mut on_row = |row: Row, report: &mut FileReport| {
        report.rows += 1;
        match row {
            Row::Event(e) => {
                report.valid += 1;
                *report.event_types.entry(e.event_type.as_str()).or_default() += 1;
                first = first.min(e.event_time);
                last = last.max(e.event_time);
            }
            Row::Reject(r) => {
                report.rejected += 1;
                report.rejects.push(r);
            }
        }
        if report.rows.is_multiple_of(65_536) {
            progress.inc(65_536);
        }
    };
    let result: shoplake_events::Result<()> = (|| {
        let input = BufReader::new(open(path)?);
        for row in Decoder::new(format_of(path, format), input, validator.clone())? {
            on_row(row?, &mut report);
        }
        Ok(())
    })();
    progress.finish();
    if let Err(e) = result {
        report.error = Some(format!("after {} rows: {e}", report.rows));
    }
    if report.valid > 0 {
        report.first_event = Some(format_timestamp(first));
        report.last_event = Some(format_timestamp(last));
    }
    for t in EventType::ALL {
        report.event_types.entry(t.as_str()).or_default();
    }
    report
}

/// Runs the command.
pub fn run(args: Args) -> Result<ExitCode> {
    let validator = Validator::default();
    let files: Vec<FileReport> = args
        .files
        .iter()
        .map(|p| check_file(p, args.input_format, &validator))
        .collect();
    let report = Report {
        rows: files.iter().map(|f| f.rows).sum(),
        valid: files.iter().map(|f| f.valid).sum(),
        rejected: files.iter().map(|f| f.rejected).sum(),
        files,
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => {
            for f in &report.files {
                println!(
                    "{}: {} rows, {} valid, {} rejected",
                    f.path, f.rows, f.valid, f.rejected
                );
                if let (Some(a), Some(b)) = (&f.first_event, &f.last_event) {
                    let mix: Vec<String> = f
                        .event_types
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect();
                    println!("  events from {a} to {b}; {}", mix.join(", "));
                }
                for r in f.rejects.iter().take(args.show) {
                    println!("  {r}");
                    println!("    raw: {}", r.raw);
                }
                if f.rejects.len() > args.show {
                    println!(
                        "  … and {} more (use --format json for the full list)",
                        f.rejects.len() - args.show
                    );
                }
                if let Some(e) = &f.error {
                    println!("  error: {e}");
                }
            }
            if report.files.len() > 1 {
                println!(
                    "total: {} rows, {} valid, {} rejected",
                    report.rows, report.valid, report.rejected
                );
            }
        }
    }
    Ok(if report.files.iter().any(|f| f.error.is_some()) {
        ExitCode::from(2)
    } else if report.rejected > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
