//! The `shoplake` binary: command-line parsing and glue. The work lives in the library crates.

mod check;
mod generate;
mod progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Generate realistic shop traffic (REES46 CSV), optionally with attacks and their ground truth.
    Generate(generate::Args),
    /// Validate event files (CSV, CSV.gz, JSON, NDJSON) and report every rejected row.
    Check(check::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Check(args) => check::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
