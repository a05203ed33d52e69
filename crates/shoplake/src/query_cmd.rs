//! `shoplake query`, `sql` and `report`: SQL over the lake and the four reports.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use shoplake_query::output::{self, Format, write_rows};
use shoplake_query::reports::{self, ReportAnswer, ReportParams, ReportRequest};
use shoplake_query::{Engine, QueryOutput};

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

/// Options shared by the reports (their defaults are the library's: `ReportParams`).
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
    /// IANA time zone for days, hours and weekdays [default: UTC].
    #[arg(long, global = true)]
    tz: Option<String>,
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
    /// the marts [default: auto].
    #[arg(long, global = true, value_parser = ["auto", "events", "marts"])]
    source: Option<String>,
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
        /// How long after the first cart a purchase recovers the item [default: 24h].
        #[arg(long)]
        window: Option<String>,
        /// Entries in each top list [default: 10].
        #[arg(long)]
        top: Option<usize>,
        /// Rows of the retargeting list, oldest first (0: all) [default: 20]; the total is
        /// always given.
        #[arg(long)]
        list: Option<usize>,
        /// For csv: which part to write.
        #[arg(long, default_value = "sessions",
              value_parser = ["sessions", "items", "products", "brands", "categories", "retarget"])]
        section: String,
    },
    /// Top categories per hour of day or weekday.
    Categories {
        /// Buckets: hour or weekday [default: hour].
        #[arg(long)]
        by: Option<String>,
        /// Category level: 1, 2, 3 or full [default: 1].
        #[arg(long)]
        level: Option<String>,
        /// Categories per bucket [default: 5].
        #[arg(long)]
        top: Option<usize>,
        /// Ranking metric: views, carts, purchases, revenue or visitors [default: views].
        #[arg(long)]
        metric: Option<String>,
    },
    /// Brands that need more marketing, ranked by opportunity.
    Brands {
        /// Brands with fewer views in the range are left out [default: 100].
        #[arg(long)]
        min_views: Option<u64>,
    },
    /// Events per local weekday and hour (the dashboard's heat map).
    Activity,
    /// Users flagged as bots per UTC day.
    Bots,
}

impl Report {
    /// The report's name and its own options.
    fn params(&self, mut p: ReportParams) -> (&'static str, ReportParams) {
        let name = match self {
            Report::Visitors => "visitors",
            Report::Activity => "activity",
            Report::Bots => "bots",
            Report::Abandonment {
                window, top, list, ..
            } => {
                (p.window, p.top, p.list) = (window.clone(), *top, *list);
                "abandonment"
            }
            Report::Categories {
                by,
                level,
                top,
                metric,
            } => {
                (p.by, p.level, p.top, p.metric) =
                    (by.clone(), level.clone(), *top, metric.clone());
                "categories"
            }
            Report::Brands { min_views } => {
                p.min_views = *min_views;
                "brands"
            }
        };
        (name, p)
    }
}

/// `shoplake report`.
pub fn report(args: ReportArgs) -> Result<ExitCode> {
    let c = &args.common;
    let common = ReportParams {
        from: c.from.clone(),
        to: c.to.clone(),
        tz: c.tz.clone(),
        all_traffic: Some(c.all_traffic),
        source: c.source.clone(),
        ..ReportParams::default()
    };
    let (name, params) = args.report.params(common);
    let request = ReportRequest::parse(name, &params)?;
    let format: Format = c.format.parse()?;
    let rt = runtime()?;
    let engine = engine(&c.sql_args, &rt)?;
    let answer = rt.block_on(request.run(&engine))?;
    let mut out = std::io::stdout().lock();
    match answer {
        ReportAnswer::Visitors(rows) => write_rows(&rows, format, &mut out)?,
        ReportAnswer::Activity(rows) => write_rows(&rows, format, &mut out)?,
        ReportAnswer::Bots(rows) => write_rows(&rows, format, &mut out)?,
        ReportAnswer::Categories(rows) => write_rows(&rows, format, &mut out)?,
        ReportAnswer::Brands(rows) => write_rows(&rows, format, &mut out)?,
        ReportAnswer::Abandonment(r) => {
            let section = match &args.report {
                Report::Abandonment { section, .. } => section.as_str(),
                _ => "sessions",
            };
            abandonment(&r, format, section, &mut out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The abandonment report: JSON as one object, CSV one part of it, a table all its parts.
fn abandonment(
    r: &reports::Abandonment,
    format: Format,
    section: &str,
    out: &mut impl Write,
) -> Result<()> {
    match format {
        Format::Json => output::write_json(r, out)?,
        Format::Csv => match section {
            "items" => write_rows(&r.items, format, out)?,
            "products" => write_rows(&r.top_products, format, out)?,
            "brands" => write_rows(&r.top_brands, format, out)?,
            "categories" => write_rows(&r.top_categories, format, out)?,
            "retarget" => write_rows(&r.retarget, format, out)?,
            _ => write_rows(&r.sessions, format, out)?,
        },
        _ => {
            writeln!(out, "Cart sessions by day of first event")?;
            write_rows(&r.sessions, format, &mut *out)?;
            writeln!(
                out,
                "\nItems (first cart in range; recovered = bought within {} h; newest event {})",
                r.window_hours,
                r.newest_event.as_deref().unwrap_or("-")
            )?;
            write_rows(&r.items, format, &mut *out)?;
            writeln!(out, "\nTop abandoned products")?;
            write_rows(&r.top_products, format, &mut *out)?;
            writeln!(out, "\nTop abandoned brands")?;
            write_rows(&r.top_brands, format, &mut *out)?;
            writeln!(out, "\nTop abandoned categories")?;
            write_rows(&r.top_categories, format, &mut *out)?;
            writeln!(
                out,
                "\nRetargeting list ({} of {}, oldest first; --list 0 for all)",
                r.retarget.len(),
                r.retarget_total
            )?;
            write_rows(&r.retarget, format, &mut *out)?;
        }
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
    /// Bring the marts up to date: fold in only what changed since they were last brought
    /// up to date (new rows, late rows, new or lifted verdicts); zones added with --tz are
    /// built whole.
    Refresh {
        /// Also hold marts for these IANA zones (repeatable).
        #[arg(long)]
        tz: Vec<String>,
    },
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
    let whole = matches!(args.action, MartsAction::Rebuild { .. });
    match args.action {
        MartsAction::Refresh { tz } | MartsAction::Rebuild { tz } => {
            let zones = tz
                .iter()
                .map(|z| shoplake_query::udf::parse_zone(z).map_err(anyhow::Error::msg))
                .collect::<Result<Vec<_>>>()?;
            let done = if whole {
                rt.block_on(shoplake_query::marts::rebuild(&lake, &zones))?
            } else {
                rt.block_on(shoplake_query::marts::refresh(&lake, &zones))?
            };
            if done.is_empty() {
                println!("no events yet: nothing to build");
            }
            for m in done {
                println!(
                    "{}: {} ({} daily rows, {} brand rows, {} item rows), events version {} \
                     ({:.2} s)",
                    m.zone,
                    m.mode,
                    m.daily_rows,
                    m.brand_rows,
                    m.item_rows,
                    m.events_version,
                    m.seconds
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
