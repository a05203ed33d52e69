//! The `shoplake` binary: command-line parsing and glue. The work lives in the library crates.

mod alerts_cmd;
mod check;
mod config;
mod demo_cmd;
mod detect_cmd;
mod generate;
mod lake_cmd;
mod progress;
mod query_cmd;
mod replay_cmd;
mod serve_cmd;
mod signals;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc, as DataFusion's own CLI uses: scans allocate and free large buffers batch after
/// batch, and the system allocator hands each back to the kernel and faults fresh zeroed pages
/// in for the next (a fifth of a mart report's time went to that).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// shoplake — self-hostable e-commerce analytics: clickstream in, insights and alerts out.
///
/// Events follow the REES46 format (`event_time,event_type,product_id,category_id,
/// category_code,brand,price,user_id,user_session`).
#[derive(Debug, Parser)]
#[command(name = "shoplake", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything at once: generated history, serve, live traffic with attacks, the dashboard.
    Demo(demo_cmd::DemoArgs),
    /// Generate realistic shop traffic (REES46 CSV), optionally with attacks and their ground truth.
    Generate(generate::Args),
    /// Validate event files (CSV, CSV.gz, JSON, NDJSON) and report every rejected row.
    Check(check::Args),
    /// Import event files into the lake: clean, deduplicate, quarantine bad rows, profile.
    Import(lake_cmd::ImportArgs),
    /// Show the lake's tables: schema, version, partitions, files, rows; or the import history.
    Catalog(lake_cmd::CatalogArgs),
    /// Bin-pack small data files (safe while readers run).
    Compact(lake_cmd::CompactArgs),
    /// Delete data files no version within the retention period uses.
    Vacuum(lake_cmd::VacuumArgs),
    /// Run one read-only SQL statement over the lake (DataFusion).
    Query(query_cmd::QueryArgs),
    /// An interactive SQL shell over the lake, with history.
    Sql(query_cmd::ShellArgs),
    /// The four reports: visitors, abandonment, categories, brands.
    Report(query_cmd::ReportArgs),
    /// Rebuild the marts (the small tables reports read) or show their state.
    Marts(query_cmd::MartsArgs),
    /// Run the collector, the event log and delivery into the lake (Kinesis + Firehose).
    Serve(serve_cmd::ServeArgs),
    /// Stream a REES46 file to a collector, paced by event time or rate.
    Replay(replay_cmd::ReplayArgs),
    /// Incidents in the alert store, and the allow- and deny-lists.
    Alerts(alerts_cmd::AlertsArgs),
    /// Run the detection rules over history in the lake and list the incidents.
    Detect(detect_cmd::DetectArgs),
    /// Check the configuration file (shoplake.toml).
    Config(config::ConfigArgs),
}

/// Our crates log at info; dependencies only warn (the Delta kernel reports expected
/// conditions, such as a table not created yet, as errors).
const DEFAULT_LOG: &str = "warn,shoplake=info,shoplake_lake=info,shoplake_query=info,shoplake_simulate=info,shoplake_server=info,shoplake_log=info,buoyant_kernel=off,deltalake_core::writer::stats=error";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo_cmd::demo(args),
        Command::Generate(args) => generate::run(args),
        Command::Check(args) => check::run(args),
        Command::Import(args) => lake_cmd::import(args),
        Command::Catalog(args) => lake_cmd::catalog(args),
        Command::Compact(args) => lake_cmd::compact(args),
        Command::Vacuum(args) => lake_cmd::vacuum(args),
        Command::Query(args) => query_cmd::query(args),
        Command::Sql(args) => query_cmd::shell(args),
        Command::Report(args) => query_cmd::report(args),
        Command::Marts(args) => query_cmd::marts(args),
        Command::Serve(args) => serve_cmd::serve(args),
        Command::Replay(args) => replay_cmd::replay(args),
        Command::Detect(args) => detect_cmd::detect(args),
        Command::Alerts(args) => alerts_cmd::alerts(args),
        Command::Config(args) => config::run(args),
    };
    match result {
        Ok(code) => code,
        // The reader went away (`shoplake report … | head`): not an error, as in other Unix
        // tools.
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}{}", hint(&e));
            ExitCode::from(2)
        }
    }
}

/// What the command line can do about an error, where the library's message cannot say it.
fn hint(e: &anyhow::Error) -> &'static str {
    let timed_out = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<shoplake_query::Error>(),
            Some(shoplake_query::Error::Timeout(_))
        )
    });
    if timed_out {
        " (raise it with --timeout)"
    } else {
        ""
    }
}

/// Whether an error comes from writing to a closed pipe.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || matches!(
                c.downcast_ref::<shoplake_query::Error>(),
                Some(shoplake_query::Error::Closed)
            )
    })
}
