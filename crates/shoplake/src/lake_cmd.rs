//! `shoplake import`, `catalog`, `compact`, `vacuum`: the lake commands.

use std::future::IntoFuture;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use shoplake_lake::{ImportSource, ImportSummary, Lake, LakeOptions, TableInfo, TableName};

use crate::config::Config;
use crate::progress::Progress;

/// Where the lake is: shared by every lake command.
#[derive(Debug, Clone, clap::Args)]
pub struct LakeArgs {
    /// The lake root: a directory, or `s3://bucket/prefix` [default: `lake.root` of the
    /// configuration, else data/lake]. S3 settings come from `[lake.s3]` or the usual AWS_*
    /// variables (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_ALLOW_HTTP).
    #[arg(long, env = "SHOPLAKE_LAKE", value_name = "ROOT", global = true)]
    lake: Option<String>,
    /// The configuration file [default: shoplake.toml, when present].
    #[arg(long, env = "SHOPLAKE_CONFIG", value_name = "FILE", global = true)]
    config: Option<std::path::PathBuf>,
}

/// Opens the lake at `root`, else the configuration's `lake.root`, else data/lake.
pub(crate) fn open_lake(root: Option<String>, config: &Config) -> Result<Lake> {
    Ok(Lake::open(LakeOptions {
        root: lake_root(root, config),
        storage_options: config.storage_options(),
    })?)
}

/// The lake root: `root`, else the configuration's `lake.root`, else data/lake.
pub(crate) fn lake_root(root: Option<String>, config: &Config) -> String {
    root.or_else(|| config.lake.root.clone())
        .unwrap_or_else(|| "data/lake".to_owned())
}

impl LakeArgs {
    /// The configuration file named, if any.
    pub(crate) fn config_path(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }

    pub(crate) fn open(&self) -> Result<Lake> {
        let config = Config::load(self.config.as_deref())?;
        open_lake(self.lake.clone(), &config)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Options of `shoplake import`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Importing the same content again changes nothing. Rows that fail \
    validation go to the quarantine table with their reasons; exact duplicates are dropped.\n\n\
    Examples:\n  shoplake import 2019-Oct.csv.gz\n  shoplake import 'exports/*.csv.gz' --format json\n  \
    shoplake generate --events 100000 | shoplake import -"
)]
pub struct ImportArgs {
    /// Files or globs to import (`-` for stdin): CSV, CSV.gz, NDJSON or JSON.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<String>,
    #[command(flatten)]
    lake: LakeArgs,
    /// Output: a readable summary, or JSON.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Leave the marts as they are (reports then read `events` until `shoplake marts
    /// rebuild`).
    #[arg(long)]
    no_marts: bool,
}

fn expand(paths: &[String]) -> Result<Vec<ImportSource>> {
    let mut out = Vec::new();
    for p in paths {
        if p == "-" {
            out.push(ImportSource::Stdin);
            continue;
        }
        if p.contains(['*', '?', '[']) {
            let mut matched: Vec<PathBuf> = glob::glob(p)
                .with_context(|| format!("bad glob {p:?}"))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("reading {p:?}"))?;
            if matched.is_empty() {
                bail!("{p:?} matches no file");
            }
            matched.sort();
            out.extend(matched.into_iter().map(ImportSource::Path));
        } else {
            let path = PathBuf::from(p);
            if !path.exists() {
                bail!("{p}: no such file");
            }
            out.push(ImportSource::Path(path));
        }
    }
    Ok(out)
}

fn percent(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// Prints a data-quality profile, indented.
fn print_profile(p: &shoplake_lake::profile::Profile, indent: &str) {
    if let (Some(a), Some(b)) = (&p.first_event, &p.last_event) {
        println!(
            "{indent}events from {a} to {b} over {} day(s)",
            p.rows_per_day.len()
        );
    }
    let list = |items: Vec<String>| items.join(", ");
    println!(
        "{indent}event types: {}",
        list(
            p.event_types
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect()
        )
    );
    println!(
        "{indent}nulls: {}",
        list(
            p.null_rate
                .iter()
                .map(|(k, v)| format!("{k} {}", percent(*v)))
                .collect()
        )
    );
    println!(
        "{indent}distinct: {}",
        list(
            p.distinct
                .iter()
                .map(|(k, v)| format!("{k} ~{v}"))
                .collect()
        )
    );
    let q = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    println!(
        "{indent}price: min {} p25 {} median {} p75 {} p95 {} max {} mean {}",
        q(p.price.min),
        q(p.price.p25),
        q(p.price.median),
        q(p.price.p75),
        q(p.price.p95),
        q(p.price.max),
        q(p.price.mean)
    );
    for (reason, n) in &p.rejects_by_reason {
        println!("{indent}rejected: {n} × {reason}");
    }
}

fn print_summary(s: &ImportSummary) {
    if s.already_imported {
        println!(
            "{}: already imported as {} (same content, {}); nothing to do",
            s.source, s.import_id, s.fingerprint
        );
        return;
    }
    let rate = s.rows_read as f64 / s.seconds.max(1e-9);
    println!(
        "{}: {} rows read: {} accepted, {} rejected (quarantined), {} duplicates dropped; {:.2} s, {:.0} rows/s",
        s.source, s.rows_read, s.rows_accepted, s.rows_rejected, s.duplicates, s.seconds, rate
    );
    print_profile(&s.profile, "  ");
}

/// Runs `shoplake import`.
pub fn import(args: ImportArgs) -> Result<ExitCode> {
    let sources = expand(&args.paths)?;
    let lake = args.lake.open()?;
    let rt = runtime()?;
    let mut all = Vec::new();
    for source in sources {
        let progress = Arc::new(Mutex::new(Progress::new("import", None)));
        let p = progress.clone();
        let result = rt.block_on(
            lake.import(vec![source.clone()])
                .with_progress(move |at| {
                    if let Ok(mut bar) = p.lock() {
                        bar.update(at.rows, at.bytes, at.total_bytes);
                    }
                })
                .into_future(),
        );
        if let Ok(Ok(bar)) = Arc::try_unwrap(progress).map(Mutex::into_inner) {
            bar.finish();
        }
        let summaries = result.with_context(|| format!("importing {}", source.name()))?;
        for s in summaries {
            if args.format == Format::Text {
                print_summary(&s);
            }
            all.push(s);
        }
    }
    if !args.no_marts && all.iter().any(|s| !s.already_imported) {
        // Keep the marts in step with the data (reports fall back to `events` until then).
        let started = std::time::Instant::now();
        let done = rt
            .block_on(shoplake_query::marts::refresh(&lake, &[]))
            .context("refreshing the marts (the import itself is committed)")?;
        if args.format == Format::Text {
            let zones: Vec<&str> = done.iter().map(|m| m.zone.as_str()).collect();
            println!(
                "marts refreshed for {} in {:.1} s",
                zones.join(", "),
                started.elapsed().as_secs_f64()
            );
        }
    }
    if args.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Options of `shoplake catalog`.
#[derive(Debug, clap::Args)]
pub struct CatalogArgs {
    /// A table (`events`, `quarantine`, `imports`) for its details, or `imports` for the
    /// import history with profiles; all tables when absent.
    #[arg(value_name = "TABLE")]
    table: Option<String>,
    #[command(flatten)]
    lake: LakeArgs,
    /// Output: readable, or JSON.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

fn print_table(t: &TableInfo, detail: bool) {
    if !t.exists {
        println!("{:<11} (not created yet) {}", t.name, t.location);
        return;
    }
    println!(
        "{:<11} v{:<4} {:>12} rows {:>6} files {:>12} bytes {:>4} partitions  last: {} {}",
        t.name,
        t.version.unwrap_or(0),
        t.rows,
        t.files,
        t.bytes,
        t.partitions.len(),
        t.last_commit
            .as_ref()
            .and_then(|c| c.operation.clone())
            .unwrap_or_default(),
        t.last_commit
            .as_ref()
            .and_then(|c| c.timestamp.clone())
            .unwrap_or_default(),
    );
    if detail {
        println!("  location: {}", t.location);
        if !t.partition_columns.is_empty() {
            println!("  partitioned by: {}", t.partition_columns.join(", "));
        }
        println!("  schema:");
        for c in &t.schema {
            println!(
                "    {:<16} {}{}",
                c.name,
                c.data_type,
                if c.nullable { "" } else { " not null" }
            );
        }
        if !t.partitions.is_empty() {
            println!("  partitions:");
            for p in &t.partitions {
                println!(
                    "    {}  {:>10} rows {:>4} files {:>12} bytes",
                    p.value, p.rows, p.files, p.bytes
                );
            }
        }
    }
}

/// Runs `shoplake catalog`.
pub fn catalog(args: CatalogArgs) -> Result<ExitCode> {
    let lake = args.lake.open()?;
    let rt = runtime()?;
    match args.table.as_deref() {
        Some("imports") if args.format == Format::Text || args.table.is_some() => {
            let imports = rt.block_on(lake.imports())?;
            let info = rt.block_on(lake.table_info(TableName::Imports))?;
            match args.format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"table": info, "imports": imports})
                    )?
                ),
                Format::Text => {
                    print_table(&info, false);
                    for i in &imports {
                        println!(
                            "{}  {}  {}  read {} accepted {} rejected {} duplicates {}  {:.2} s",
                            i.import_id,
                            i.started_at,
                            i.source,
                            i.rows_read,
                            i.rows_accepted,
                            i.rows_rejected,
                            i.duplicates,
                            i.seconds
                        );
                        print_profile(&i.profile, "    ");
                    }
                }
            }
        }
        Some(name) => {
            let Some(table) = TableName::parse(name) else {
                bail!("no table {name:?}; the tables are events, quarantine, imports");
            };
            let info = rt.block_on(lake.table_info(table))?;
            match args.format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&info)?),
                Format::Text => print_table(&info, true),
            }
        }
        None => {
            let all = rt.block_on(lake.catalog())?;
            match args.format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&all)?),
                Format::Text => {
                    println!("lake: {}", lake.root());
                    for t in &all {
                        print_table(t, false);
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Options of `shoplake compact`.
#[derive(Debug, clap::Args)]
pub struct CompactArgs {
    /// The table to compact (default: events).
    #[arg(long, default_value = "events")]
    table: String,
    /// Target file size in MiB.
    #[arg(long, default_value_t = 128, value_name = "MIB")]
    target_mib: u64,
    #[command(flatten)]
    lake: LakeArgs,
    /// Output: readable, or JSON.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Runs `shoplake compact`.
pub fn compact(args: CompactArgs) -> Result<ExitCode> {
    let Some(table) = TableName::parse(&args.table) else {
        bail!(
            "no table {:?}; the tables are events, quarantine, imports",
            args.table
        );
    };
    let lake = args.lake.open()?;
    let rt = runtime()?;
    let s = rt.block_on(
        lake.compact(table)
            .with_target_size(args.target_mib * 1024 * 1024)
            .into_future(),
    )?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&s)?),
        Format::Text => match s.version {
            Some(v) => println!(
                "{}: {} small files rewritten as {} in {} partition(s); version {v}",
                s.table, s.files_removed, s.files_added, s.partitions
            ),
            None => println!("{}: nothing to compact", s.table),
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// Options of `shoplake vacuum`.
#[derive(Debug, clap::Args)]
pub struct VacuumArgs {
    /// Keep files that a version younger than this still uses (`7d`, `24h`, `30m`). Readers
    /// running longer than this may fail.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    retain: std::time::Duration,
    /// Only list what would be deleted.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    lake: LakeArgs,
    /// Output: readable, or JSON.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Runs `shoplake vacuum` on every table.
pub fn vacuum(args: VacuumArgs) -> Result<ExitCode> {
    let lake = args.lake.open()?;
    let rt = runtime()?;
    let mut all = Vec::new();
    for t in TableName::ALL {
        all.push(
            rt.block_on(
                lake.vacuum(t, args.retain)
                    .with_dry_run(args.dry_run)
                    .into_future(),
            )?,
        );
    }
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&all)?),
        Format::Text => {
            for s in &all {
                let verb = if s.dry_run { "would delete" } else { "deleted" };
                println!(
                    "{}: {verb} {} unreferenced file(s)",
                    s.table, s.files_deleted
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
