//! `shoplake replay`: streams a REES46 file (or the generator's stdout) to a collector, paced
//! by event time (`--speed`), by rate (`--rate`) or as fast as it is acknowledged (`--max`).
//! Events are spread over connections by user, and each connection sends its batches one
//! after another, retrying a batch until it is acknowledged: one user's events arrive in
//! order.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use shoplake_events::time::MICROS_PER_SECOND;
use shoplake_events::{Decoder, Event, Row, Validator};
use tokio::sync::mpsc;

use crate::lake_cmd::{Format, runtime};

/// Options of `shoplake replay`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  shoplake replay oct.csv --speed 60              # an hour of October in a minute
  shoplake replay oct.csv.gz --rate 5000          # 5000 events/s
  shoplake generate --days 1 | shoplake replay - --max --restamp
  shoplake replay live.csv --url http://shop:7070 --token $TOKEN")]
pub struct ReplayArgs {
    /// A REES46 CSV, CSV.gz or NDJSON file; `-` reads standard input.
    #[arg(value_name = "FILE")]
    input: PathBuf,
    /// The collector.
    #[arg(long, env = "SHOPLAKE_URL", default_value = "http://127.0.0.1:7070")]
    url: String,
    /// A token with the ingest scope [default: the one in DATA/admin.token].
    #[arg(long, env = "SHOPLAKE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Where `serve` keeps its admin token (read when --token is not given).
    #[arg(
        long,
        env = "SHOPLAKE_DATA",
        value_name = "DIR",
        default_value = "data"
    )]
    data: PathBuf,
    /// Replay at X times the pace of the events' own times (60 = an hour a minute).
    #[arg(long, value_name = "X", conflicts_with_all = ["rate", "max"])]
    speed: Option<f64>,
    /// Send N events per second.
    #[arg(long, value_name = "N", conflicts_with = "max")]
    rate: Option<f64>,
    /// Send as fast as the collector acknowledges (the default).
    #[arg(long)]
    max: bool,
    /// Events per request.
    #[arg(long, default_value_t = 500, value_name = "N")]
    batch: usize,
    /// Requests in flight (events are spread over them by user).
    #[arg(long, default_value_t = 4, value_name = "N")]
    connections: usize,
    /// Replace event times with the current time (as the reference design's script did).
    #[arg(long)]
    restamp: bool,
    /// Compress requests with gzip.
    #[arg(long)]
    gzip: bool,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Give up on a batch after retrying it this long (the collector down, or refusing with
    /// 429/503).
    #[arg(long, default_value = "2m", value_name = "DURATION")]
    retry_for: humantime::Duration,
    /// The summary's format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Counters shared by the reader, the senders and the progress line.
#[derive(Default)]
struct Counters {
    read: AtomicU64,
    invalid: AtomicU64,
    sent: AtomicU64,
    acknowledged: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
    /// How far the reader is behind its schedule, in ms (`--speed`, `--rate`).
    lag_ms: AtomicU64,
    fatal: AtomicBool,
}

/// What a replay did.
#[derive(Debug, Serialize)]
struct Summary {
    events: u64,
    invalid: u64,
    acknowledged: u64,
    rejected: u64,
    failed: u64,
    requests: u64,
    retries: u64,
    seconds: f64,
    events_per_second: f64,
    latency_ms_p50: f64,
    latency_ms_p99: f64,
    latency_ms_max: f64,
}

/// Runs `shoplake replay`.
pub fn replay(args: ReplayArgs) -> Result<ExitCode> {
    if args.batch == 0 || args.connections == 0 {
        bail!("--batch and --connections must be at least 1");
    }
    if let Some(x) = args.speed.filter(|x| !(x.is_finite() && *x > 0.0)) {
        bail!("--speed {x}: expected a positive number");
    }
    if let Some(r) = args.rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
        bail!("--rate {r}: expected a positive number");
    }
    let token = match &args.token {
        Some(t) => t.clone(),
        None => {
            let path = args.data.join("admin.token");
            std::fs::read_to_string(&path)
                .map(|s| s.trim().to_owned())
                .with_context(|| {
                    format!(
                        "no --token or SHOPLAKE_TOKEN, and no admin token in {}",
                        path.display()
                    )
                })?
        }
    };
    let url = format!("{}/v1/events", args.url.trim_end_matches('/'));
    let rt = runtime()?;
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let latencies = rt.block_on(run(&args, url, token, counters.clone()))?;
    let seconds = started.elapsed().as_secs_f64();
    let c = &counters;
    let q = |p: f64| quantile(&latencies, p);
    let summary = Summary {
        events: c.read.load(Ordering::Relaxed),
        invalid: c.invalid.load(Ordering::Relaxed),
        acknowledged: c.acknowledged.load(Ordering::Relaxed),
        rejected: c.rejected.load(Ordering::Relaxed),
        failed: c.failed.load(Ordering::Relaxed),
        requests: c.requests.load(Ordering::Relaxed),
        retries: c.retries.load(Ordering::Relaxed),
        seconds,
        events_per_second: c.acknowledged.load(Ordering::Relaxed) as f64 / seconds.max(1e-9),
        latency_ms_p50: q(0.5),
        latency_ms_p99: q(0.99),
        latency_ms_max: q(1.0),
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&summary)?),
        Format::Text => {
            println!(
                "replayed {} events in {:.1} s: {} acknowledged ({:.0}/s), {} rejected by the collector, {} failed; {} requests, {} retries; acknowledgement latency p50 {:.1} ms, p99 {:.1} ms",
                summary.events,
                summary.seconds,
                summary.acknowledged,
                summary.events_per_second,
                summary.rejected,
                summary.failed,
                summary.requests,
                summary.retries,
                summary.latency_ms_p50,
                summary.latency_ms_p99
            );
            if summary.invalid > 0 {
                println!(
                    "{} invalid row(s) in the input were not sent (`shoplake check` lists them)",
                    summary.invalid
                );
            }
        }
    }
    Ok(if summary.failed > 0 || c.fatal.load(Ordering::Relaxed) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn quantile(sorted_ms: &[f64], p: f64) -> f64 {
    if sorted_ms.is_empty() {
        return 0.0;
    }
    let i = ((sorted_ms.len() - 1) as f64 * p).round() as usize;
    sorted_ms[i.min(sorted_ms.len() - 1)]
}

/// Reads, paces and dispatches on a thread; sends on tasks; returns the sorted request
/// latencies in ms.
async fn run(
    args: &ReplayArgs,
    url: String,
    token: String,
    counters: Arc<Counters>,
) -> Result<Vec<f64>> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")?;
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (tx, rx) = mpsc::channel::<Event>(args.batch * 4);
        senders.push(tx);
        tasks.push(tokio::spawn(send_loop(
            rx,
            Sender {
                client: client.clone(),
                url: url.clone(),
                auth: format!("Bearer {token}"),
                batch: args.batch,
                gzip: args.gzip,
                retry_for: *args.retry_for,
                counters: counters.clone(),
            },
        )));
    }
    let pace = match (args.speed, args.rate) {
        (Some(x), _) => Pace::Speed(x),
        (None, Some(r)) => Pace::Rate(r),
        _ => Pace::Max,
    };
    let reader = {
        let input = args.input.clone();
        let counters = counters.clone();
        let restamp = args.restamp;
        let limit = args.limit;
        std::thread::Builder::new()
            .name("replay-reader".into())
            .spawn(move || read_loop(&input, pace, restamp, limit, senders, &counters))
            .context("starting the reader")?
    };
    let progress = tokio::spawn(progress_loop(counters.clone()));
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.context("a sender failed")?);
    }
    progress.abort();
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader panicked"))??;
    if counters.fatal.load(Ordering::Relaxed) {
        bail!(
            "stopped: {} events acknowledged before the collector refused for good (see above)",
            counters.acknowledged.load(Ordering::Relaxed)
        );
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

#[derive(Debug, Clone, Copy)]
enum Pace {
    Max,
    Rate(f64),
    Speed(f64),
}

/// The rows of a REES46 file: NDJSON or a JSON array by a `.json`/`.ndjson` name, CSV
/// otherwise, optionally gzipped; each an event or a refused row.
pub(crate) fn file_rows(
    input: &std::path::Path,
) -> Result<Box<dyn Iterator<Item = shoplake_events::Result<Row>>>> {
    let reader = std::io::BufReader::with_capacity(1 << 20, shoplake_events::io::open(input)?);
    let format = shoplake_events::Format::of_name(&input.to_string_lossy());
    Ok(Box::new(Decoder::new(
        format,
        reader,
        Validator::default(),
    )?))
}

fn read_loop(
    input: &std::path::Path,
    pace: Pace,
    restamp: bool,
    limit: Option<u64>,
    senders: Vec<mpsc::Sender<Event>>,
    counters: &Counters,
) -> Result<()> {
    let name = input.to_string_lossy();
    let rows = file_rows(input)?;
    let started = Instant::now();
    let mut first_time: Option<i64> = None;
    let mut n: u64 = 0;
    let shards = senders.len() as u64;
    for row in rows {
        if counters.fatal.load(Ordering::Relaxed) {
            break;
        }
        let mut event = match row.with_context(|| format!("reading {name}"))? {
            Row::Event(e) => e,
            Row::Reject(r) => {
                counters.invalid.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("{name}: {r}");
                continue;
            }
        };
        // When this event is due, from the start.
        let due = match pace {
            Pace::Max => None,
            Pace::Rate(r) => Some(Duration::from_secs_f64(n as f64 / r)),
            Pace::Speed(x) => {
                let first = *first_time.get_or_insert(event.event_time);
                let ahead = (event.event_time - first).max(0) as f64 / MICROS_PER_SECOND as f64;
                Some(Duration::from_secs_f64(ahead / x))
            }
        };
        if let Some(due) = due {
            let now = started.elapsed();
            if due > now {
                std::thread::sleep(due - now);
                counters.lag_ms.store(0, Ordering::Relaxed);
            } else {
                counters
                    .lag_ms
                    .store((now - due).as_millis() as u64, Ordering::Relaxed);
            }
        }
        if restamp {
            event.event_time = chrono::Utc::now().timestamp_micros();
        }
        let shard = xxhash_user(event.user_id) % shards;
        counters.read.fetch_add(1, Ordering::Relaxed);
        if senders[shard as usize].blocking_send(event).is_err() {
            // The sender stopped (a fatal refusal): stop reading.
            break;
        }
        n += 1;
        if limit.is_some_and(|l| n >= l) {
            break;
        }
    }
    Ok(())
}

/// Spreads users over connections.
fn xxhash_user(user: i64) -> u64 {
    // A multiplicative hash is enough to spread ids evenly.
    (user as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32
}

struct Sender {
    client: reqwest::Client,
    url: String,
    auth: String,
    batch: usize,
    gzip: bool,
    retry_for: Duration,
    counters: Arc<Counters>,
}

/// How long a partial batch waits for more events before it is sent.
const LINGER: Duration = Duration::from_millis(100);

async fn send_loop(mut rx: mpsc::Receiver<Event>, s: Sender) -> Vec<f64> {
    let mut latencies = Vec::new();
    let mut events = Vec::with_capacity(s.batch);
    loop {
        events.clear();
        let Some(first) = rx.recv().await else { break };
        events.push(first);
        let deadline = tokio::time::Instant::now() + LINGER;
        while events.len() < s.batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) => events.push(e),
                Ok(None) | Err(_) => break,
            }
        }
        let mut body = Vec::with_capacity(events.len() * 220);
        for e in &events {
            shoplake_events::json::encode_json(&mut body, e);
        }
        if s.gzip {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            if gz.write_all(&body).is_ok()
                && let Ok(b) = gz.finish()
            {
                body = b;
            }
        }
        s.counters
            .sent
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        match send(&s, body, events.len()).await {
            Some(ms) => latencies.push(ms),
            None => {
                if s.counters.fatal.load(Ordering::Relaxed) {
                    break;
                }
            }
        }
    }
    latencies
}

/// Sends one batch until it is acknowledged, refused for good, or retries run out. Returns the
/// latency of the request that was acknowledged.
async fn send(s: &Sender, body: Vec<u8>, n: usize) -> Option<f64> {
    let c = &s.counters;
    let first_failure = Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut request = s
            .client
            .post(&s.url)
            .header("authorization", &s.auth)
            .header("content-type", "application/x-ndjson")
            .body(body.clone());
        if s.gzip {
            request = request.header("content-encoding", "gzip");
        }
        let started = Instant::now();
        c.requests.fetch_add(1, Ordering::Relaxed);
        let (retry, wait) = match request.send().await {
            Ok(r) => {
                let status = r.status();
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text = r.text().await.unwrap_or_default();
                let answer: serde_json::Value =
                    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
                let rejected = answer["rejected"].as_array().map_or(0, Vec::len) as u64;
                if status.is_success() {
                    let ms = started.elapsed().as_secs_f64() * 1000.0;
                    c.acknowledged
                        .fetch_add(answer["accepted"].as_u64().unwrap_or(0), Ordering::Relaxed);
                    c.rejected.fetch_add(rejected, Ordering::Relaxed);
                    return Some(ms);
                }
                let message = answer["error"].as_str().unwrap_or(&text).to_owned();
                match status.as_u16() {
                    429 | 500..=599 => (format!("{status}: {message}"), retry_after),
                    401 | 403 => {
                        eprintln!("error: the collector refused the token: {status}: {message}");
                        c.fatal.store(true, Ordering::Relaxed);
                        c.failed.fetch_add(n as u64, Ordering::Relaxed);
                        return None;
                    }
                    _ => {
                        // The batch itself is at fault: not retried.
                        if rejected > 0 {
                            c.rejected.fetch_add(rejected, Ordering::Relaxed);
                            c.failed
                                .fetch_add((n as u64).saturating_sub(rejected), Ordering::Relaxed);
                        } else {
                            c.failed.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        eprintln!("error: a batch of {n} was refused: {status}: {message}");
                        return None;
                    }
                }
            }
            Err(e) => (format!("{e}"), None),
        };
        if first_failure.elapsed() >= s.retry_for {
            eprintln!(
                "error: giving up on a batch of {n} after retrying for {}: {retry}",
                humantime::format_duration(s.retry_for)
            );
            c.failed.fetch_add(n as u64, Ordering::Relaxed);
            c.fatal.store(true, Ordering::Relaxed);
            return None;
        }
        c.retries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("retrying a batch of {n}: {retry}");
        tokio::time::sleep(wait.unwrap_or(backoff).min(Duration::from_secs(10))).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Prints sent, acknowledged, rate and lag every second (a line every 5 s when stderr is not a
/// terminal).
async fn progress_loop(c: Arc<Counters>) {
    let terminal = std::io::stderr().is_terminal();
    let every = if terminal {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(5)
    };
    let started = Instant::now();
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::time::sleep(every).await;
        let acked = c.acknowledged.load(Ordering::Relaxed);
        let now = Instant::now();
        let rate = (acked - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-9);
        last = (now, acked);
        let line = format!(
            "replay: sent {}  acknowledged {}  {:.0} events/s  lag {:.1} s  in flight {}  retries {}  {:.0} s",
            c.sent.load(Ordering::Relaxed),
            acked,
            rate,
            c.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            c.sent.load(Ordering::Relaxed).saturating_sub(
                acked + c.rejected.load(Ordering::Relaxed) + c.failed.load(Ordering::Relaxed)
            ),
            c.retries.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64()
        );
        if terminal {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }
}
