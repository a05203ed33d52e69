//! `shoplake detect`: the detection rules over history in the lake, day by day in event-time
//! order, with the same engine the live stream uses.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use shoplake_detect::{Collected, DetectConfig, Detector, Incident};
use shoplake_events::SystemClock;
use shoplake_events::time::{MICROS_PER_DAY, parse_date};
use shoplake_query::Engine;
use shoplake_query::history::{day_events, event_days};

use crate::config::Config;
use crate::lake_cmd::{Format, LakeArgs, runtime};

/// Options of `shoplake detect`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  shoplake detect                                  # every day in the lake, default rules
  shoplake detect --from 2019-10-01 --to 2019-10-07 --format json
  shoplake detect --rules strict.toml              # rules from a file ([detect] keys at its top)
  shoplake detect --flag                           # and write the bot verdicts to bot_flags
  shoplake detect --input day.csv                  # over a file, with decoding and detection rates")]
pub struct DetectArgs {
    #[command(flatten)]
    lake: LakeArgs,
    /// The first UTC day [default: the lake's first].
    #[arg(long, value_name = "YYYY-MM-DD")]
    from: Option<String>,
    /// The last UTC day, included [default: the lake's last].
    #[arg(long, value_name = "YYYY-MM-DD")]
    to: Option<String>,
    /// Run over a REES46 file (CSV, or NDJSON by its `.json`/`.ndjson` name, optionally
    /// gzipped; in time order) instead of the lake, and print the decoding and detection
    /// rates.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["from", "to", "flag"])]
    input: Option<PathBuf>,
    /// Rules and settings from this file (the keys of `[detect]`) instead of shoplake.toml's.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Write the bot verdicts of the incidents found to `bot_flags`, as `serve` does live
    /// (idempotent: a verdict already there is not written twice), so that "humans only"
    /// reports over imported history leave the bots out.
    #[arg(long)]
    flag: bool,
    /// With --flag: leave the marts as they are (reports then read `events` until `shoplake
    /// marts rebuild`).
    #[arg(long, requires = "flag")]
    no_marts: bool,
}

fn day_arg(name: &str, value: &Option<String>) -> Result<Option<i64>> {
    value
        .as_deref()
        .map(|v| {
            parse_date(v)
                .map(|m| m / MICROS_PER_DAY)
                .with_context(|| format!("--{name} {v:?}: expected YYYY-MM-DD"))
        })
        .transpose()
}

/// Runs `shoplake detect`.
pub fn detect(args: DetectArgs) -> Result<ExitCode> {
    let config = match &args.rules {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<DetectConfig>(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => Config::load(args.lake.config_path())?.detect,
    };
    let settings = config
        .settings()
        .map_err(|errors| anyhow::anyhow!("the detection settings:\n  {}", errors.join("\n  ")))?;
    let from = day_arg("from", &args.from)?;
    let to = day_arg("to", &args.to)?;
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        bail!("--from is after --to");
    }
    if let Some(input) = &args.input {
        let incidents = detect_file(input, settings)?;
        return print(&incidents, args.format);
    }
    let lake = args.lake.open()?;
    let rt = runtime()?;
    let flag_severity = settings.flag_severity;
    let (incidents, stats) = rt.block_on(async {
        let engine = Engine::open(&lake).await?;
        let Some((first, last)) = event_days(&engine).await? else {
            return Ok::<_, anyhow::Error>((Vec::new(), Default::default()));
        };
        let (from, to) = (from.unwrap_or(first), to.unwrap_or(last));
        let mut detector = Detector::new(settings, Arc::new(SystemClock));
        let mut incidents = Collected::default();
        for day in from..=to {
            let events = day_events(&engine, day).await?;
            detector.process_all(&events);
            incidents.take(&mut detector);
        }
        let incidents = incidents.finish(&mut detector);
        Ok((incidents, detector.stats().clone()))
    })?;
    eprintln!(
        "{} events, {} late, {} duplicates, {} windows fired: {} incidents",
        stats.events,
        stats.late,
        stats.duplicates,
        stats.windows_fired,
        incidents.len()
    );
    if args.flag {
        let now = chrono::Utc::now().timestamp_micros();
        let flags: Vec<_> = incidents
            .iter()
            .flat_map(|i| shoplake_server::bot_flags_of(i, flag_severity, now))
            .collect();
        let added = rt.block_on(lake.add_bot_flags(&flags))?;
        eprintln!(
            "bot_flags: {added} user-day verdict(s) written ({} already there)",
            flags.len() - added
        );
        // The marts count humans only: bring them up to date with the new verdicts, as an
        // import does with new events.
        if added > 0
            && !args.no_marts
            && rt
                .block_on(lake.latest_version(shoplake_lake::TableName::MartDaily))?
                .is_some()
        {
            let summaries = rt.block_on(shoplake_query::marts::refresh(&lake, &[]))?;
            eprintln!("marts refreshed for {} zone(s)", summaries.len());
        }
    }
    print(&incidents, args.format)
}

fn print(incidents: &[Incident], format: Format) -> Result<ExitCode> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(incidents)?),
        Format::Text => print_incidents(incidents)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The rules over a file: decoded first (invalid rows reported and skipped), then detected,
/// each phase timed.
fn detect_file(
    input: &std::path::Path,
    settings: shoplake_detect::Settings,
) -> Result<Vec<Incident>> {
    use shoplake_events::Row;
    let name = input.to_string_lossy();
    let started = std::time::Instant::now();
    let rows = crate::replay_cmd::file_rows(input)?;
    let mut events = Vec::new();
    let mut invalid = 0u64;
    for row in rows {
        match row.with_context(|| format!("reading {name}"))? {
            Row::Event(e) => events.push(e),
            Row::Reject(r) => {
                invalid += 1;
                if invalid <= 10 {
                    eprintln!("{name}: skipped {r}");
                }
            }
        }
    }
    let decoded = started.elapsed();
    let started = std::time::Instant::now();
    let mut detector = Detector::new(settings, Arc::new(SystemClock));
    let mut incidents = Collected::default();
    for chunk in events.chunks(65_536) {
        detector.process_all(chunk);
        incidents.take(&mut detector);
    }
    let incidents = incidents.finish(&mut detector);
    let detected = started.elapsed();
    let stats = detector.stats();
    let rate = |d: std::time::Duration| events.len() as f64 / d.as_secs_f64().max(1e-9);
    eprintln!(
        "{} events ({invalid} invalid rows skipped) decoded in {:.3} s ({:.0} events/s); \
         detected in {:.3} s ({:.0} events/s): {} late, {} duplicates, {} windows fired, {} incidents",
        events.len(),
        decoded.as_secs_f64(),
        rate(decoded),
        detected.as_secs_f64(),
        rate(detected),
        stats.late,
        stats.duplicates,
        stats.windows_fired,
        incidents.len()
    );
    Ok(incidents)
}

/// Prints incidents (the detector's or the store's: the same field names) as a table.
pub fn print_incidents<T: serde::Serialize>(incidents: &[T]) -> Result<()> {
    println!(
        "{:<16} {:<19} {:<15} {:<12} {:<38} {:<7} {:<12} {:>7} {:>8} {:>8}",
        "id", "opened", "rule", "key type", "key", "sev.", "status", "windows", "peak", "events"
    );
    for i in incidents {
        let v = serde_json::to_value(i)?;
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        let opened: String = text("opened_at")
            .replace('T', " ")
            .chars()
            .take(19)
            .collect();
        println!(
            "{:<16} {:<19} {:<15} {:<12} {:<38} {:<7} {:<12} {:>7} {:>8} {:>8}",
            text("id"),
            opened,
            text("rule"),
            text("key_type"),
            text("key"),
            text("severity"),
            text("status"),
            v["windows"],
            v["peak"],
            v["events"]
        );
    }
    Ok(())
}
