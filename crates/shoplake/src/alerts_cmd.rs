//! `shoplake alerts`: incidents in the alert store (list, show, acknowledge, resolve) and the
//! allow- and deny-lists, which a running `serve` applies within seconds.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use shoplake_alerts::{AlertStore, List, SqlStore, StoredIncident};
use shoplake_detect::{KeyType, Severity};
use shoplake_events::time::{format_timestamp, parse_date, parse_timestamp};

use crate::config::Config;
use crate::lake_cmd::{Format, runtime};

/// Options of `shoplake alerts`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  shoplake alerts list                             # open incidents, most severe first
  shoplake alerts list --status all --from 2019-10-01 --format json
  shoplake alerts show 5191489f1f1dcdf9
  shoplake alerts ack 5191489f1f1dcdf9 --by alice
  shoplake alerts allow user_id 512345678          # never flag this user (live in serve)
  shoplake alerts deny client_ip 203.0.113.9 --remove")]
pub struct AlertsArgs {
    #[command(subcommand)]
    command: AlertsCommand,
    /// The data directory holding the default store (DATA/alerts.db).
    #[arg(
        long,
        env = "SHOPLAKE_DATA",
        value_name = "DIR",
        default_value = "data",
        global = true
    )]
    data: PathBuf,
    /// The alert store URL [default: `alerts.store`, else sqlite://DATA/alerts.db].
    #[arg(long, env = "SHOPLAKE_ALERTS", value_name = "URL", global = true)]
    store: Option<String>,
    /// The configuration file [default: shoplake.toml, when present].
    #[arg(long, env = "SHOPLAKE_CONFIG", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// The lake, whose `bot_flags` lose an allow-listed user's rows [default: `lake.root`,
    /// else data/lake].
    #[arg(long, env = "SHOPLAKE_LAKE", value_name = "ROOT", global = true)]
    lake: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text, global = true)]
    format: Format,
}

#[derive(Debug, clap::Subcommand)]
enum AlertsCommand {
    /// Incidents: open ones by default, most severe first.
    List {
        /// `open` or `all`.
        #[arg(long, default_value = "open", value_parser = ["open", "all"])]
        status: String,
        /// The least severity.
        #[arg(long, default_value = "low", value_parser = ["low", "medium", "high"])]
        severity: String,
        /// With --key: one key's incidents (user_id, client_ip, user_session, global).
        #[arg(long, requires = "key")]
        key_type: Option<String>,
        /// The key.
        #[arg(long, requires = "key_type")]
        key: Option<String>,
        /// With --status all: opened on or after (YYYY-MM-DD or a timestamp).
        #[arg(long)]
        from: Option<String>,
        /// With --status all: opened before.
        #[arg(long)]
        to: Option<String>,
    },
    /// One incident.
    Show {
        /// Its id.
        id: String,
    },
    /// Acknowledge an incident.
    Ack {
        /// Its id.
        id: String,
        /// Who.
        #[arg(long, env = "USER", default_value = "cli")]
        by: String,
    },
    /// Resolve an incident by hand.
    Resolve {
        /// Its id.
        id: String,
        /// Who.
        #[arg(long, env = "USER", default_value = "cli")]
        by: String,
    },
    /// Put a user id or address on the allow-list (never flagged), or take it off.
    Allow(ListArgs),
    /// Put a user id or address on the deny-list (always flagged), or take it off.
    Deny(ListArgs),
    /// Show both lists.
    Lists,
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    /// `user_id` or `client_ip`.
    #[arg(value_parser = ["user_id", "client_ip"])]
    key_type: String,
    /// The user id or address.
    key: String,
    /// Take it off the list.
    #[arg(long)]
    remove: bool,
    /// Who.
    #[arg(long, env = "USER", default_value = "cli")]
    by: String,
}

fn key_type(s: &str) -> Result<KeyType> {
    Ok(match s {
        "user_id" => KeyType::UserId,
        "client_ip" => KeyType::ClientIp,
        "user_session" => KeyType::UserSession,
        "global" => KeyType::Global,
        _ => bail!("key type {s:?}: expected user_id, client_ip, user_session or global"),
    })
}

fn time_arg(name: &str, v: &Option<String>, default: i64) -> Result<i64> {
    match v {
        None => Ok(default),
        Some(s) => parse_date(s)
            .or_else(|| parse_timestamp(s))
            .with_context(|| format!("--{name} {s:?}: expected YYYY-MM-DD or a timestamp")),
    }
}

/// Runs `shoplake alerts`.
pub fn alerts(args: AlertsArgs) -> Result<ExitCode> {
    let config = Config::load(args.config.as_deref())?;
    let url = args.store.clone().map_or_else(
        || {
            config
                .alerts
                .settings(&args.data)
                .map(|s| s.url)
                .map_err(|e| crate::config::problems("alerts", e))
        },
        Ok,
    )?;
    if let Some(path) = url.strip_prefix("sqlite://")
        && !std::path::Path::new(path).exists()
    {
        bail!("no alert store at {path}: `shoplake serve` creates it (or pass --store / --data)");
    }
    let rt = runtime()?;
    rt.block_on(async {
        let store = SqlStore::open(&url)
            .await
            .with_context(|| format!("opening the alert store {url}"))?;
        let now = chrono::Utc::now().timestamp_micros();
        match args.command {
            command @ AlertsCommand::List { .. } => list(&store, command, args.format).await?,
            AlertsCommand::Show { id } => match store.get(&id).await? {
                Some(i) => show(&i, args.format)?,
                None => bail!("no incident {id}"),
            },
            AlertsCommand::Ack { id, by } => {
                if !store.acknowledge(&id, &by, now).await? {
                    bail!("no incident {id}");
                }
                println!("{id} acknowledged by {by}");
            }
            AlertsCommand::Resolve { id, by } => {
                if !store.resolve(&id, &by, now).await? {
                    bail!("no incident {id}");
                }
                println!("{id} resolved by {by}");
            }
            AlertsCommand::Allow(l) => {
                let user = (l.key_type == "user_id" && !l.remove)
                    .then(|| l.key.parse::<i64>().ok())
                    .flatten();
                change(&store, List::Allow, l, now).await?;
                if let Some(user) = user {
                    unflag(&config, args.lake.clone(), user).await?;
                }
            }
            AlertsCommand::Deny(l) => change(&store, List::Deny, l, now).await?,
            AlertsCommand::Lists => print_lists(&store.listed().await?, args.format)?,
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `alerts list`: incidents by key, the open ones, or those in a time range, at or above a
/// severity.
async fn list(store: &SqlStore, command: AlertsCommand, format: Format) -> Result<()> {
    let AlertsCommand::List {
        status,
        severity,
        key_type: kt,
        key,
        from,
        to,
    } = command
    else {
        return Ok(());
    };
    let min = Severity::parse(&severity).unwrap_or(Severity::Low);
    let mut out = match (kt, key) {
        (Some(t), Some(k)) => store.by_key(key_type(&t)?, &k, usize::MAX).await?,
        _ if status == "open" => store.open(min, usize::MAX).await?,
        _ => {
            let from = time_arg("from", &from, i64::MIN)?;
            let to = time_arg("to", &to, i64::MAX)?;
            store
                .between(from, to, &shoplake_alerts::Page::all())
                .await?
        }
    };
    out.retain(|i| Severity::parse(&i.severity).unwrap_or(Severity::Low) >= min);
    print(&out, format)
}

/// `alerts show`: one incident, field by field.
fn show(incident: &StoredIncident, format: Format) -> Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(incident)?),
        Format::Text => {
            for (k, v) in serde_json::to_value(incident)?
                .as_object()
                .into_iter()
                .flatten()
            {
                println!(
                    "{k:>16}  {}",
                    v.as_str().map_or(v.to_string(), str::to_owned)
                );
            }
        }
    }
    Ok(())
}

/// `alerts lists`: the allow- and deny-lists.
fn print_lists(listed: &[shoplake_alerts::Listed], format: Format) -> Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(listed)?),
        Format::Text => {
            for l in listed {
                println!(
                    "{:<6} {:<10} {:<40} by {} at {}",
                    l.list.as_str(),
                    l.key_type,
                    l.key,
                    l.added_by,
                    format_timestamp(l.added_at)
                );
            }
        }
    }
    Ok(())
}

/// Removes an allow-listed user's bot flags from the lake, when there is one (a running
/// `serve` does the same within seconds).
async fn unflag(config: &Config, root: Option<String>, user: i64) -> Result<()> {
    let root = crate::lake_cmd::lake_root(root, config);
    if !root.contains("://") && !std::path::Path::new(&root).exists() {
        return Ok(());
    }
    let lake = crate::lake_cmd::open_lake(Some(root), config)?;
    let removed = lake.remove_bot_flags(&[user]).await?;
    if removed > 0 {
        println!("removed {removed} bot flag(s) of user {user} from bot_flags");
    }
    Ok(())
}

async fn change(store: &SqlStore, list: List, l: ListArgs, now: i64) -> Result<()> {
    let kt = key_type(&l.key_type)?;
    let valid = match kt {
        KeyType::UserId => l.key.parse::<i64>().is_ok_and(|u| u > 0),
        _ => l.key.parse::<std::net::IpAddr>().is_ok(),
    };
    if !valid {
        bail!(
            "{} {:?}: expected a positive user id or an IP address",
            l.key_type,
            l.key
        );
    }
    store
        .set_listed(list, kt, &l.key, !l.remove, &l.by, now)
        .await?;
    println!(
        "{} {} {} the {} list",
        l.key_type,
        l.key,
        if l.remove { "taken off" } else { "put on" },
        list.as_str()
    );
    Ok(())
}

fn print(incidents: &[StoredIncident], format: Format) -> Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(incidents)?),
        Format::Text => crate::detect_cmd::print_incidents(incidents)?,
    }
    Ok(())
}
