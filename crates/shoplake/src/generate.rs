//! `shoplake generate`: calibrated traffic to a file or stdout.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use flate2::Compression;
use flate2::write::GzEncoder;
use shoplake_events::CsvEncoder;
use shoplake_simulate::{AttackSpec, Generator, Options};

use crate::progress::Progress;

/// Options of `shoplake generate`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  shoplake generate --events 1000000 --seed 7 --out oct.csv.gz\n  \
    shoplake generate --days 2 --network-fields --attacks default --truth truth.jsonl --out live.csv\n  \
    shoplake generate --events 5000 | head"
)]
pub struct Args {
    /// Total events to write (alone: spread at about 1.37 M a day, as in the real October file).
    #[arg(long, value_name = "N")]
    events: Option<u64>,
    /// Days of data (alone: about 1.37 M events a day).
    #[arg(long, value_name = "D")]
    days: Option<u32>,
    /// First day (UTC), YYYY-MM-DD.
    #[arg(long, value_name = "DATE", default_value = "2019-10-01")]
    start: String,
    /// Seed: the same seed and options give byte-identical output.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output file (`.csv` or `.csv.gz`); stdout when absent or `-`.
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Add `client_ip` and `user_agent` columns.
    #[arg(long)]
    network_fields: bool,
    /// Attacks to inject: `none`, `default` (the default mix per day), or kinds and totals such
    /// as `burst=3,scraper=2`; kinds: burst, sustained, scraper, session_flood, ddos, robotic,
    /// ip_flood, crawler.
    #[arg(long, value_name = "SPEC", default_value = "none")]
    attacks: AttackSpec,
    /// Write the ground truth (one JSON line per injected actor) to this file.
    #[arg(long, value_name = "FILE")]
    truth: Option<PathBuf>,
    /// Share of `remove_from_cart` events (0 reproduces the multi-category store).
    #[arg(long, value_name = "SHARE", default_value_t = 0.01)]
    remove_share: f64,
    /// Crawler sessions of 20–35 k views (default: one per 8 M events).
    #[arg(long, value_name = "N")]
    crawlers: Option<u32>,
}

fn create(path: &Path, gz: bool) -> Result<Box<dyn Write>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let buffered = BufWriter::with_capacity(1 << 20, file);
    Ok(if gz {
        Box::new(GzEncoder::new(buffered, Compression::fast()))
    } else {
        Box::new(buffered)
    })
}

/// Runs the command.
pub fn run(args: Args) -> Result<ExitCode> {
    let Some(start) = shoplake_events::time::parse_date(&args.start) else {
        bail!(
            "--start {:?} is not a date (expected YYYY-MM-DD)",
            args.start
        );
    };
    let opts = Options {
        seed: args.seed,
        start,
        events: args.events,
        days: args.days,
        remove_share: args.remove_share,
        network_fields: args.network_fields,
        attacks: args.attacks,
        crawlers: args.crawlers,
    };
    let mut generator = Generator::new(&opts)?;
    let to_file = args.out.as_ref().filter(|p| p.as_os_str() != "-");
    // Write to a side file and rename at the end, so a stopped run leaves no half file.
    let partial = to_file.map(|p| {
        let mut name = p.as_os_str().to_owned();
        name.push(".partial");
        PathBuf::from(name)
    });
    let out: Box<dyn Write> = match &partial {
        Some(p) => create(
            p,
            to_file.is_some_and(|f| f.extension().is_some_and(|e| e == "gz")),
        )?,
        None => Box::new(BufWriter::with_capacity(1 << 20, std::io::stdout().lock())),
    };
    let mut encoder = CsvEncoder::new(out, opts.network_fields)?;
    let mut progress = Progress::new("generate", Some(generator.target()));
    let mut n = 0u64;
    for event in generator.by_ref() {
        if let Err(e) = encoder.write(&event) {
            // A closed pipe (`| head`) is a normal way to stop.
            if is_broken_pipe(&e) {
                return Ok(ExitCode::SUCCESS);
            }
            return Err(e.into());
        }
        n += 1;
        if n.is_multiple_of(65_536) {
            progress.inc(65_536);
        }
    }
    progress.inc(n % 65_536);
    let elapsed = progress.finish();
    match encoder.finish() {
        Ok(mut w) => w.flush().context("flushing output")?,
        Err(e) if is_broken_pipe(&e) => return Ok(ExitCode::SUCCESS),
        Err(e) => return Err(e.into()),
    }
    if let (Some(partial), Some(out)) = (&partial, to_file) {
        std::fs::rename(partial, out).with_context(|| format!("renaming to {}", out.display()))?;
    }
    if let Some(path) = &args.truth {
        let mut w = BufWriter::new(
            File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        for t in generator.truth() {
            serde_json::to_writer(&mut w, &t)?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
    }
    tracing::info!(
        events = n,
        days = generator.days(),
        actors = generator.truth().len(),
        seconds = format!("{:.2}", elapsed.as_secs_f64()),
        events_per_s = format!("{:.0}", n as f64 / elapsed.as_secs_f64().max(1e-9)),
        "generated"
    );
    Ok(ExitCode::SUCCESS)
}

fn is_broken_pipe(e: &shoplake_events::Error) -> bool {
    matches!(e, shoplake_events::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
}
