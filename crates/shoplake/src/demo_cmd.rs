//! `shoplake demo`: everything at once for a newcomer, on embedded defaults. A calibrated
//! history (a few generated days with attacks) is imported and judged, `serve` runs on the data
//! directory, a generated day is replayed as live traffic (times restamped to now) and a bot
//! attacks every 20 seconds, so incidents fire within the first minute. It prints the
//! dashboard's address and a token; Ctrl-C stops it all cleanly, and the data stays for the
//! next run (`--reset` starts over).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::lake_cmd::runtime;

/// Options of `shoplake demo`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  shoplake demo                                    # data in ./demo, dashboard on 127.0.0.1:7070
  shoplake demo --reset                            # throw the demo data away and start over
  shoplake demo --listen 127.0.0.1:8080 --data /tmp/shop")]
pub struct DemoArgs {
    /// Where the demo keeps its lake, log, alert store and token.
    #[arg(long, value_name = "DIR", default_value = "demo")]
    data: PathBuf,
    /// The address of the dashboard and the collector.
    #[arg(long, value_name = "ADDR", default_value = shoplake_server::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Delete the demo data first and build it again.
    #[arg(long)]
    reset: bool,
    /// Days of generated history.
    #[arg(long, default_value_t = 3)]
    days: u32,
    /// Events of generated history (the live day has as many again).
    #[arg(long, default_value_t = 300_000)]
    events: u64,
    /// Live traffic, events per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
}

/// Runs `shoplake demo` until Ctrl-C.
pub fn demo(args: DemoArgs) -> Result<ExitCode> {
    let exe = std::env::current_exe().context("finding the shoplake binary")?;
    let data = &args.data;
    if args.reset && data.exists() {
        eprintln!("demo: deleting {} (--reset)", data.display());
        std::fs::remove_dir_all(data).with_context(|| format!("deleting {}", data.display()))?;
    }
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let live = data.join("live.csv");
    prepare(&exe, &args, &live)?;
    let mut server = start_server(&exe, &args)?;
    let token = std::fs::read_to_string(data.join("admin.token"))
        .context("reading the admin token serve created")?
        .trim()
        .to_owned();
    let url = format!("http://{}", args.listen);
    let mut replay = Command::new(&exe)
        .args(["replay", path(&live)?, "--url", &url, "--data", path(data)?])
        .args([
            "--rate",
            &args.rate.to_string(),
            "--restamp",
            "--connections",
            "2",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(data.join("replay.log"))?)
        .spawn()
        .context("starting the live replay")?;
    // The handlers go in before the banner: a Ctrl-C right after it stops the demo cleanly.
    let rt = runtime()?;
    let interrupted = {
        let _entered = rt.enter();
        crate::signals::shutdown()?
    };
    banner(&args, &url, &token)?;

    rt.block_on(async {
        let attacks = tokio::spawn(attack_loop(url.clone(), token.clone()));
        let stopped = tokio::select! {
            _ = interrupted => false,
            () = wait_exit(&mut server) => true,
        };
        attacks.abort();
        if stopped {
            bail!(
                "serve stopped on its own: see {}",
                data.join("serve.log").display()
            );
        }
        Ok(())
    })?;
    eprintln!("demo: stopping …");
    let _ = replay.kill();
    let _ = replay.wait();
    stop(&mut server)?;
    eprintln!(
        "demo: stopped; the data stays in {} (`shoplake demo` reuses it, --reset starts over)",
        data.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Generates the history (imported and judged for bots) and the live traffic, unless an
/// earlier run left them complete.
fn prepare(exe: &Path, args: &DemoArgs, live: &Path) -> Result<()> {
    let data = &args.data;
    let lake = data.join("lake");
    let history = data.join("history.csv");
    let ready = data.join("demo.ready");
    if ready.exists() {
        eprintln!(
            "demo: reusing the data in {} (run with --reset to start over)",
            data.display()
        );
        return Ok(());
    }
    eprintln!(
        "demo: generating {} days of shop traffic with attacks ({} events) …",
        args.days, args.events
    );
    let days = args.days.to_string();
    let events = args.events.to_string();
    // The history ends where the live traffic (stamped now) begins: its last day is
    // yesterday, so every per-day chart shows one timeline.
    let start = (chrono::Utc::now().date_naive() - chrono::Days::new(u64::from(args.days.max(1))))
        .format("%Y-%m-%d")
        .to_string();
    let generate = |out: &Path, seed: &str| -> Result<()> {
        run(
            exe,
            &[
                "generate",
                "--start",
                &start,
                "--days",
                &days,
                "--events",
                &events,
                "--seed",
                seed,
                "--network-fields",
                "--attacks",
                "default",
                "--out",
                path(out)?,
            ],
        )
    };
    generate(&history, "7")?;
    eprintln!("demo: importing them into {} …", lake.display());
    run(exe, &["import", path(&history)?, "--lake", path(&lake)?])?;
    eprintln!("demo: judging the history for bots (bot_flags) …");
    run(exe, &["detect", "--flag", "--lake", path(&lake)?])?;
    generate(live, "8")?;
    std::fs::write(&ready, "the demo data is complete\n")?;
    Ok(())
}

/// Starts `serve` on the embedded defaults (whatever shoplake.toml the working directory
/// holds) and waits until it listens.
fn start_server(exe: &Path, args: &DemoArgs) -> Result<Child> {
    let data = &args.data;
    let config = data.join("demo.toml");
    std::fs::write(&config, "# shoplake demo: the embedded defaults\n")?;
    let mut server = Command::new(exe)
        .args([
            "serve",
            "--data",
            path(data)?,
            "--listen",
            &args.listen.to_string(),
        ])
        .args(["--config", path(&config)?])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(data.join("serve.log"))?)
        .spawn()
        .context("starting shoplake serve")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(args.listen).is_err() {
        if let Some(status) = server.try_wait()? {
            bail!(
                "serve stopped ({status}) before listening on {}: see {}",
                args.listen,
                data.join("serve.log").display()
            );
        }
        if Instant::now() > deadline {
            let _ = server.kill();
            bail!("serve did not listen on {} within a minute", args.listen);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(server)
}

/// What the demo prints once it runs.
fn banner(args: &DemoArgs, url: &str, token: &str) -> Result<()> {
    let data = &args.data;
    let mut out = std::io::stdout().lock();
    writeln!(out, "\nshoplake demo is running")?;
    writeln!(out, "  dashboard: {url}/")?;
    writeln!(out, "  token:     {token}")?;
    writeln!(
        out,
        "  live:      {} events/s replayed now, a bot attack every 20 s (see Live)",
        args.rate
    )?;
    writeln!(
        out,
        "  logs:      {}/serve.log, {}/replay.log",
        data.display(),
        data.display()
    )?;
    writeln!(
        out,
        "Ctrl-C stops it; the data stays in {}.",
        data.display()
    )?;
    out.flush()?;
    Ok(())
}

fn path(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not valid UTF-8", p.display()))
}

/// Runs a shoplake subcommand to its end.
fn run(exe: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new(exe)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running shoplake {}", args[0]))?;
    if !status.success() {
        bail!("shoplake {} failed ({status})", args.join(" "));
    }
    Ok(())
}

async fn wait_exit(child: &mut Child) {
    loop {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops serve as Ctrl-C would (SIGINT reached it already when it came from a terminal).
fn stop(server: &mut Child) -> Result<()> {
    if server.try_wait()?.is_none() {
        let _ = Command::new("kill")
            .args(["-INT", &server.id().to_string()])
            .status();
    }
    let status = server.wait()?;
    if !status.success() {
        bail!("serve stopped with {status}");
    }
    Ok(())
}

/// A bot: every 20 s (the first after 5 s) a fresh user sends 15 views of different products
/// within a second, which `user_burst` opens and escalates to high.
async fn attack_loop(url: String, token: String) {
    let client = reqwest::Client::new();
    let mut n: i64 = 0;
    tokio::time::sleep(Duration::from_secs(5)).await;
    loop {
        n += 1;
        let user = 1_900_000_000 + n;
        let now = shoplake_events::time::format_timestamp(chrono::Utc::now().timestamp_micros());
        let mut body = String::new();
        for k in 0..15 {
            body.push_str(
                &serde_json::json!({
                    "event_time": now, "event_type": "view", "product_id": 9_000_000 + k,
                    "category_id": 2_053_013_555_631_882_655_i64,
                    "category_code": "electronics.smartphone", "brand": "bot",
                    "price": 99.0, "user_id": user, "user_session": format!("demo-bot-{user}"),
                })
                .to_string(),
            );
            body.push('\n');
        }
        let sent = client
            .post(format!("{url}/v1/events"))
            .bearer_auth(&token)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await;
        if let Err(e) = sent {
            tracing::warn!("demo attack: {e}");
        }
        tokio::time::sleep(Duration::from_secs(20)).await;
    }
}
