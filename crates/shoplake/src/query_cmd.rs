//! `shoplake query`, `sql` and `report`: SQL over the lake and the four reports.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::Value;
use shoplake_query::output::{self, Format};
use shoplake_query::reports::{
    self, AbandonmentOptions, BrandsOptions, CategoriesOptions, ReportScope,
};
use shoplake_query::{Engine, QueryOutput, ReportRange};

use crate::lake_cmd::{LakeArgs, runtime};

/// Options shared by `query` and `sql`.
#[derive(Debug, Clone, clap::Args)]
pub struct SqlArgs {
    #[command(flatten)]
    lake: LakeArgs,
    /// Time limit per query (e.g. `30s`, `5m`).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, global = true)]
    timeout: Duration,
}

/// Options of `shoplake query`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Tables: events, quarantine, imports. Functions: local_time(ts, 'Area/City'), \
    category_level(category_code, level). Read-only: DDL, DML, COPY and SET are refused.\n\n\
    Examples:\n  shoplake query \"SELECT event_type, COUNT(*) FROM events GROUP BY 1\"\n  \
    shoplake query \"SELECT * FROM quarantine\" --format csv --out rejects.csv"
)]
pub struct QueryArgs {
    /// One SQL statement.
    sql: String,
    #[command(flatten)]
    sql_args: SqlArgs,
    /// Output format [default: table on a terminal, else csv].
    #[arg(long, value_parser = ["table", "csv", "json", "parquet"])]
    format: Option<String>,
    /// Write to a file instead of standard output (required for parquet on a terminal).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn engine(args: &SqlArgs, rt: &tokio::runtime::Runtime) -> Result<Engine> {
    let lake = args.lake.open()?;
    Ok(rt.block_on(Engine::open(&lake))?.with_timeout(args.timeout))
}

fn emit(result: &QueryOutput, format: Format, out: Option<&PathBuf>) -> Result<()> {
    match out {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            output::write(result, format, std::io::BufWriter::new(file))?;
        }
        None => {
            if format == Format::Parquet && std::io::stdout().is_terminal() {
                bail!("parquet is binary: give --out FILE or redirect standard output");
            }
            output::write(result, format, std::io::BufWriter::new(std::io::stdout()))?;
        }
    }
    Ok(())
}

fn default_format(format: Option<&str>) -> Result<Format> {
    Ok(match format {
        Some(f) => f.parse()?,
        None if std::io::stdout().is_terminal() => Format::Table,
        None => Format::Csv,
    })
}

/// `shoplake query`.
pub fn query(args: QueryArgs) -> Result<ExitCode> {
    let rt = runtime()?;
    let engine = engine(&args.sql_args, &rt)?;
    let format = default_format(args.format.as_deref())?;
    let result = rt.block_on(engine.query(&args.sql))?;
    emit(&result, format, args.out.as_ref())?;
    Ok(ExitCode::SUCCESS)
}

/// Options of `shoplake sql`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Statements end with `;`. Commands: \\d (tables), \\d TABLE (columns), \
    \\q (quit). History is kept in ~/.local/share/shoplake/sql_history."
)]
pub struct ShellArgs {
    #[command(flatten)]
    sql_args: SqlArgs,
}

fn history_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    let dir = base.join("shoplake");
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir.join("sql_history"))
}

/// `shoplake sql`: an interactive shell (or statements from a pipe).
pub fn shell(args: ShellArgs) -> Result<ExitCode> {
    use rustyline::error::ReadlineError;

    let rt = runtime()?;
    let engine = engine(&args.sql_args, &rt)?;
    let mut editor = rustyline::DefaultEditor::new().context("starting the line editor")?;
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        println!(
            "shoplake SQL over the lake (read-only). End statements with ;  \\d lists tables, \\q quits."
        );
    }
    let mut pending = String::new();
    let mut failures = 0u32;
    loop {
        let prompt = if pending.is_empty() {
            "shoplake> "
        } else {
            "     ...> "
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                pending.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("reading input"),
        };
        let trimmed = line.trim();
        if pending.is_empty() && trimmed.starts_with('\\') {
            let _ = editor.add_history_entry(trimmed);
            let sql = match trimmed.split_whitespace().collect::<Vec<_>>()[..] {
                ["\\q"] => break,
                ["\\d"] => "SHOW TABLES".to_owned(),
                ["\\d", table] => format!("DESCRIBE {table}"),
                _ => {
                    eprintln!("unknown command {trimmed}: \\d, \\d TABLE, \\q");
                    continue;
                }
            };
            failures += u32::from(!run_one(&rt, &engine, &sql));
            continue;
        }
        if !pending.is_empty() {
            pending.push('\n');
        }
        pending.push_str(&line);
        while let Some(end) = pending.find(';') {
            let statement: String = pending[..end].trim().to_owned();
            pending = pending[end + 1..].to_owned();
            if statement.is_empty() {
                continue;
            }
            let _ = editor.add_history_entry(format!("{statement};"));
            failures += u32::from(!run_one(&rt, &engine, &statement));
        }
    }
    if !pending.trim().is_empty() {
        failures += u32::from(!run_one(&rt, &engine, pending.trim()));
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(if failures == 0 || interactive {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run_one(rt: &tokio::runtime::Runtime, engine: &Engine, sql: &str) -> bool {
    let started = std::time::Instant::now();
    match rt.block_on(engine.query(sql)) {
        Ok(result) => {
            if let Err(e) = output::write(
                &result,
                Format::Table,
                std::io::BufWriter::new(std::io::stdout()),
            ) {
                eprintln!("error: {e}");
                return false;
            }
            eprintln!("({:.3} s)", started.elapsed().as_secs_f64());
            true
        }
        Err(e) => {
            eprintln!("error: {e}");
            false
        }
    }
}

/// Options shared by the reports.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportCommon {
    #[command(flatten)]
    sql_args: SqlArgs,
    /// First local day, YYYY-MM-DD [default: the first data].
    #[arg(long, global = true)]
    from: Option<String>,
    /// Last local day, YYYY-MM-DD, inclusive [default: the last data].
    #[arg(long, global = true)]
    to: Option<String>,
    /// IANA time zone for days, hours and weekdays.
    #[arg(long, global = true, default_value = "UTC")]
    tz: String,
    /// Count every event, also from users flagged as bots (by default a user's events on a
    /// UTC day `bot_flags` flags it for are left out).
    #[arg(long, global = true, conflicts_with = "humans_only")]
    all_traffic: bool,
    /// Only humans (the default).
    #[arg(long, global = true)]
    humans_only: bool,
    /// Output format.
    #[arg(long, global = true, default_value = "table", value_parser = ["table", "csv", "json"])]
    format: String,
    /// Where figures come from: the marts when up to date (auto), always events, or only
    /// the marts.
    #[arg(long, global = true, default_value = "auto", value_parser = ["auto", "events", "marts"])]
    source: String,
}

/// Options of `shoplake report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[command(subcommand)]
    report: Report,
    #[command(flatten)]
    common: ReportCommon,
}

#[derive(Debug, clap::Subcommand)]
enum Report {
    /// Unique visitors per day: visitors, sessions, events, new visitors.
    Visitors,
    /// Abandoned carts: cart sessions per day, items by status, top lists, retargeting list.
    Abandonment {
        /// How long after the first cart a purchase recovers the item.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        window: Duration,
        /// Entries in each top list.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Rows of the retargeting list, oldest first (0: all); the total is always given.
        #[arg(long, default_value_t = 20)]
        list: usize,
        /// For csv: which part to write.
        #[arg(long, default_value = "sessions",
              value_parser = ["sessions", "items", "products", "brands", "categories", "retarget"])]
        section: String,
    },
    /// Top categories per hour of day or weekday.
    Categories {
        /// Buckets.
        #[arg(long, default_value = "hour", value_parser = ["hour", "weekday"])]
        by: String,
        /// Category level: 1, 2, 3 or full.
        #[arg(long, default_value = "1", value_parser = ["1", "2", "3", "full"])]
        level: String,
        /// Categories per bucket.
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// Ranking metric.
        #[arg(long, default_value = "views",
              value_parser = ["views", "carts", "purchases", "revenue", "visitors"])]
        metric: String,
    },
    /// Brands that need more marketing, ranked by opportunity.
    Brands {
        /// Brands with fewer views in the range are left out.
        #[arg(long, default_value_t = 100)]
        min_views: u64,
    },
}

/// The abandonment report's parts, as columns (the documented JSON field names).
const SESSION_COLUMNS: &[&str] = &[
    "day",
    "cart_sessions",
    "abandoned_sessions",
    "abandonment_rate",
];
const ITEM_COLUMNS: &[&str] = &["status", "items", "value"];
const PRODUCT_COLUMNS: &[&str] = &["product_id", "brand", "category", "items", "value"];
const NAME_COLUMNS: &[&str] = &["name", "items", "value"];
const RETARGET_COLUMNS: &[&str] = &["user_id", "product_id", "carted_at", "price"];

/// `shoplake report`.
pub fn report(args: ReportArgs) -> Result<ExitCode> {
    let c = &args.common;
    let scope = ReportScope {
        range: ReportRange::parse(c.from.as_deref(), c.to.as_deref(), Some(&c.tz))?,
        all_traffic: c.all_traffic,
        source: c.source.parse()?,
    };
    let rt = runtime()?;
    let engine = engine(&c.sql_args, &rt)?;
    let format = c.format.as_str();
    let mut out = std::io::stdout().lock();
    match args.report {
        Report::Visitors => {
            let rows = rt.block_on(reports::visitors(&engine, &scope))?;
            print_rows(
                &mut out,
                format,
                &rows,
                &["day", "visitors", "sessions", "events", "new_visitors"],
            )?;
        }
        Report::Abandonment {
            window,
            top,
            list,
            section,
        } => {
            let options = AbandonmentOptions {
                window,
                top,
                retarget_limit: (list > 0).then_some(list),
            };
            let r = rt.block_on(reports::abandonment(&engine, &scope, &options))?;
            match format {
                "json" => print_rows(&mut out, format, std::slice::from_ref(&r), &[])?,
                "csv" => match section.as_str() {
                    "items" => print_rows(&mut out, format, &r.items, ITEM_COLUMNS)?,
                    "products" => print_rows(&mut out, format, &r.top_products, PRODUCT_COLUMNS)?,
                    "brands" => print_rows(&mut out, format, &r.top_brands, NAME_COLUMNS)?,
                    "categories" => print_rows(&mut out, format, &r.top_categories, NAME_COLUMNS)?,
                    "retarget" => print_rows(&mut out, format, &r.retarget, RETARGET_COLUMNS)?,
                    _ => print_rows(&mut out, format, &r.sessions, SESSION_COLUMNS)?,
                },
                _ => {
                    writeln!(out, "Cart sessions by day of first event")?;
                    print_rows(&mut out, format, &r.sessions, SESSION_COLUMNS)?;
                    writeln!(
                        out,
                        "\nItems (first cart in range; recovered = bought within {} h; newest event {})",
                        r.window_hours,
                        r.newest_event.as_deref().unwrap_or("-")
                    )?;
                    print_rows(&mut out, format, &r.items, ITEM_COLUMNS)?;
                    writeln!(out, "\nTop abandoned products")?;
                    print_rows(&mut out, format, &r.top_products, PRODUCT_COLUMNS)?;
                    writeln!(out, "\nTop abandoned brands")?;
                    print_rows(&mut out, format, &r.top_brands, NAME_COLUMNS)?;
                    writeln!(out, "\nTop abandoned categories")?;
                    print_rows(&mut out, format, &r.top_categories, NAME_COLUMNS)?;
                    writeln!(
                        out,
                        "\nRetargeting list ({} of {}, oldest first; --list 0 for all)",
                        r.retarget.len(),
                        r.retarget_total
                    )?;
                    print_rows(&mut out, format, &r.retarget, RETARGET_COLUMNS)?;
                }
            }
        }
        Report::Categories {
            by,
            level,
            top,
            metric,
        } => {
            let options = CategoriesOptions {
                by: by.parse()?,
                level: if level == "full" {
                    0
                } else {
                    level.parse().unwrap_or(1)
                },
                top,
                metric: metric.parse()?,
            };
            let rows = rt.block_on(reports::categories(&engine, &scope, &options))?;
            print_rows(
                &mut out,
                format,
                &rows,
                &[
                    "bucket",
                    "category",
                    "views",
                    "carts",
                    "purchases",
                    "revenue",
                    "visitors",
                    "rank",
                    "share",
                ],
            )?;
        }
        Report::Brands { min_views } => {
            let rows = rt.block_on(reports::brands(
                &engine,
                &scope,
                &BrandsOptions { min_views },
            ))?;
            print_rows(
                &mut out,
                format,
                &rows,
                &[
                    "brand",
                    "category",
                    "views",
                    "carts",
                    "purchases",
                    "revenue",
                    "conversion",
                    "cart_rate",
                    "view_share",
                    "class",
                    "opportunity",
                ],
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cell(v: Option<&Value>) -> String {
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

/// Rows as JSON (an array), CSV, or an aligned table, with `columns` in order.
fn print_rows<T: Serialize>(
    out: &mut impl Write,
    format: &str,
    rows: &[T],
    columns: &[&str],
) -> Result<()> {
    if format == "json" {
        let json = if columns.is_empty() && rows.len() == 1 {
            serde_json::to_string_pretty(&rows[0])?
        } else {
            serde_json::to_string_pretty(rows)?
        };
        writeln!(out, "{json}")?;
        return Ok(());
    }
    let values: Vec<Value> = rows
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    let table: Vec<Vec<String>> = values
        .iter()
        .map(|v| columns.iter().map(|c| cell(v.get(*c))).collect())
        .collect();
    if format == "csv" {
        let mut w = csv::Writer::from_writer(out);
        w.write_record(columns)?;
        for r in &table {
            w.write_record(r)?;
        }
        w.flush()?;
        return Ok(());
    }
    let mut widths: Vec<usize> = columns.iter().map(|c| c.len()).collect();
    for r in &table {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    writeln!(out, "{}", line(columns.to_vec()).trim_end())?;
    writeln!(
        out,
        "{}",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  ")
    )?;
    for r in &table {
        writeln!(
            out,
            "{}",
            line(r.iter().map(String::as_str).collect()).trim_end()
        )?;
    }
    if table.is_empty() {
        writeln!(out, "(no rows)")?;
    }
    Ok(())
}

/// Options of `shoplake marts`.
#[derive(Debug, clap::Args)]
pub struct MartsArgs {
    #[command(subcommand)]
    action: MartsAction,
    #[command(flatten)]
    sql_args: SqlArgs,
}

#[derive(Debug, clap::Subcommand)]
enum MartsAction {
    /// Recompute every mart from `events` (for UTC, the zones already held, and --tz).
    Rebuild {
        /// Also hold marts for these IANA zones (repeatable).
        #[arg(long)]
        tz: Vec<String>,
    },
    /// Which zones the marts hold and whether they are up to date.
    Status,
}

/// `shoplake marts`.
pub fn marts(args: MartsArgs) -> Result<ExitCode> {
    let rt = runtime()?;
    let lake = args.sql_args.lake.open()?;
    match args.action {
        MartsAction::Rebuild { tz } => {
            let zones = tz
                .iter()
                .map(|z| shoplake_query::udf::parse_zone(z).map_err(anyhow::Error::msg))
                .collect::<Result<Vec<_>>>()?;
            let done = rt.block_on(shoplake_query::marts::refresh(&lake, &zones))?;
            if done.is_empty() {
                println!("no events yet: nothing to build");
            }
            for m in done {
                println!(
                    "{}: {} daily rows, {} brand rows, events version {} ({:.2} s)",
                    m.zone, m.daily_rows, m.brand_rows, m.events_version, m.seconds
                );
            }
        }
        MartsAction::Status => {
            let engine = engine(&args.sql_args, &rt)?;
            for tz in rt.block_on(shoplake_query::marts::zones(&engine, &[]))? {
                let fresh = rt.block_on(shoplake_query::marts::fresh(&engine, tz))?;
                println!(
                    "{}: {}",
                    tz.name(),
                    if fresh {
                        "up to date"
                    } else {
                        "stale or missing (reports read events)"
                    }
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
