//! Notifications (SNS in the reference design): a webhook (JSON, signed with HMAC-SHA256), a
//! Slack-compatible webhook and SMTP e-mail, sent when an incident opens or escalates, never
//! per window. Each channel has its own queue and task: a slow or failing channel never holds
//! up detection or the other channels. A delivery is retried with exponential backoff and
//! given up after a number of attempts, counted in the metrics.
//!
//! The webhook's signature header, `X-Shoplake-Signature: t=<unix seconds>,v1=<hex>`, carries
//! the HMAC-SHA256, keyed with the channel's secret, of `<t>.<body>`: a receiver recomputes it
//! and compares, and refuses old timestamps to stop replays.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use shoplake_alerts::{AlertStore, Claimed, Outgoing, Settled};
use shoplake_detect::{Change, Incident, Severity};
use shoplake_events::time::Clock;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::metrics::{ChannelLabel, Metrics};

/// The webhook signature header.
pub const SIGNATURE_HEADER: &str = "x-shoplake-signature";
/// The webhook header naming the notice's type (`incident.opened`, `incident.escalated`).
pub const EVENT_HEADER: &str = "x-shoplake-event";

/// `[notify]`: how notifications are delivered, and the channels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Attempts per notice before it is given up (default 5).
    pub attempts: Option<u32>,
    /// The wait before the first retry, doubled at each next one, at most a minute
    /// (default `1s`).
    pub backoff: Option<String>,
    /// The time limit of one attempt (default `10s`).
    pub timeout: Option<String>,
    /// `[[notify.channels]]`.
    #[serde(default)]
    pub channels: Vec<ChannelConfig>,
}

/// `[[notify.channels]]`: one destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// A name for logs and metrics (default: the kind and its position).
    pub name: Option<String>,
    /// `webhook`, `slack` or `email`.
    pub kind: String,
    /// The least severity notified (default `high`: the level meant to wake someone).
    pub min_severity: Option<Severity>,
    /// `webhook` and `slack`: where to POST.
    pub url: Option<String>,
    /// `webhook`: the HMAC key of the signature header (none: unsigned).
    pub secret: Option<String>,
    /// `email`: the SMTP server as a URL: `smtp://host:port` (plain), `smtp://host:587?tls=required`
    /// (STARTTLS), `smtps://host:465` (TLS), with `user:password@` when it needs a login.
    pub smtp: Option<String>,
    /// `email`: the sender.
    pub from: Option<String>,
    /// `email`: the recipients.
    #[serde(default)]
    pub to: Vec<String>,
}

/// Delivery settings, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Delivery {
    attempts: u32,
    backoff: Duration,
    timeout: Duration,
}

/// Where notices go.
#[derive(Debug, Clone)]
enum Target {
    Webhook {
        url: reqwest::Url,
        secret: Option<String>,
    },
    Slack {
        url: reqwest::Url,
    },
    Email {
        smtp: String,
        from: Mailbox,
        to: Vec<Mailbox>,
    },
}

/// A channel, checked.
#[derive(Debug, Clone)]
pub struct Channel {
    name: String,
    min_severity: Severity,
    target: Target,
}

/// The notification settings, checked: every channel ready to start.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    delivery: Delivery,
    channels: Vec<Channel>,
}

impl Default for NotifySettings {
    /// No channels.
    fn default() -> Self {
        NotifySettings {
            delivery: Delivery {
                attempts: 5,
                backoff: Duration::from_secs(1),
                timeout: Duration::from_secs(10),
            },
            channels: Vec::new(),
        }
    }
}

impl NotifySettings {
    /// Whether any channel is configured.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }
}

fn duration(key: &str, value: Option<&str>, default: &str, errors: &mut Vec<String>) -> Duration {
    let text = value.unwrap_or(default);
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => d,
        _ => {
            errors.push(format!(
                "{key} = {text:?}: expected a duration such as 1s or 500ms"
            ));
            Duration::from_secs(1)
        }
    }
}

impl NotifyConfig {
    /// Checks the configuration, or lists every problem.
    pub fn settings(&self) -> Result<NotifySettings, Vec<String>> {
        let mut errors = Vec::new();
        let attempts = self.attempts.unwrap_or(5);
        if attempts == 0 {
            errors.push("notify.attempts must be at least 1".to_owned());
        }
        let delivery = Delivery {
            attempts,
            backoff: duration("notify.backoff", self.backoff.as_deref(), "1s", &mut errors),
            timeout: duration(
                "notify.timeout",
                self.timeout.as_deref(),
                "10s",
                &mut errors,
            ),
        };
        let mut channels = Vec::new();
        for (i, c) in self.channels.iter().enumerate() {
            let p = format!("notify.channels[{i}]");
            let mut refuse = |field: &str, set: bool| {
                if set {
                    errors.push(format!(
                        "{p}.{field}: not a setting of a {} channel",
                        c.kind
                    ));
                }
            };
            let is_email = c.kind == "email";
            refuse("url", c.url.is_some() && is_email);
            refuse("secret", c.secret.is_some() && c.kind != "webhook");
            refuse("smtp", c.smtp.is_some() && !is_email);
            refuse("from", c.from.is_some() && !is_email);
            refuse("to", !c.to.is_empty() && !is_email);
            let url = |errors: &mut Vec<String>| match c.url.as_deref() {
                None => {
                    errors.push(format!("{p}.url: required for a {} channel", c.kind));
                    None
                }
                Some(u) => match reqwest::Url::parse(u) {
                    Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
                    _ => {
                        errors.push(format!("{p}.url = {u:?}: expected an http(s) URL"));
                        None
                    }
                },
            };
            let target = match c.kind.as_str() {
                "webhook" => url(&mut errors).map(|url| Target::Webhook {
                    url,
                    secret: c.secret.clone(),
                }),
                "slack" => url(&mut errors).map(|url| Target::Slack { url }),
                "email" => email_target(&p, c, &mut errors),
                other => {
                    errors.push(format!(
                        "{p}.kind = {other:?}: expected webhook, slack or email"
                    ));
                    None
                }
            };
            let name = c.name.clone().unwrap_or_else(|| format!("{}-{i}", c.kind));
            if channels.iter().any(|ch: &Channel| ch.name == name) {
                errors.push(format!("{p}.name = {name:?}: two channels have this name"));
            }
            if let Some(target) = target {
                channels.push(Channel {
                    name,
                    min_severity: c.min_severity.unwrap_or(Severity::High),
                    target,
                });
            }
        }
        if errors.is_empty() {
            Ok(NotifySettings { delivery, channels })
        } else {
            Err(errors)
        }
    }
}

fn email_target(p: &str, c: &ChannelConfig, errors: &mut Vec<String>) -> Option<Target> {
    let smtp = match c.smtp.as_deref() {
        None => {
            errors.push(format!("{p}.smtp: required for an email channel"));
            None
        }
        Some(s) => match AsyncSmtpTransport::<Tokio1Executor>::from_url(s) {
            Ok(_) => Some(s.to_owned()),
            Err(e) => {
                errors.push(format!("{p}.smtp = {s:?}: {e}"));
                None
            }
        },
    };
    let mailbox = |field: &str, text: &str, errors: &mut Vec<String>| match text.parse::<Mailbox>()
    {
        Ok(m) => Some(m),
        Err(e) => {
            errors.push(format!(
                "{p}.{field} = {text:?}: not an e-mail address (`name@host` or \
                 `Name <name@host>`: {e})"
            ));
            None
        }
    };
    let from = match c.from.as_deref() {
        None => {
            errors.push(format!("{p}.from: required for an email channel"));
            None
        }
        Some(f) => mailbox("from", f, errors),
    };
    if c.to.is_empty() {
        errors.push(format!("{p}.to: at least one recipient"));
    }
    let to: Vec<Mailbox> =
        c.to.iter()
            .filter_map(|t| mailbox("to", t, errors))
            .collect();
    Some(Target::Email {
        smtp: smtp?,
        from: from?,
        to: (to.len() == c.to.len() && !to.is_empty()).then_some(to)?,
    })
}

/// What is sent: the change and the incident with its documented fields.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    /// `incident.opened` or `incident.escalated`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The incident as it now is.
    pub incident: Incident,
}

impl Notice {
    /// The notice for a change, when it is one that notifies (an opening or an escalation).
    pub fn of(change: &Change) -> Option<Notice> {
        match change {
            Change::Opened(i) => Some(Notice {
                kind: "incident.opened",
                incident: i.clone(),
            }),
            Change::Escalated(i) => Some(Notice {
                kind: "incident.escalated",
                incident: i.clone(),
            }),
            Change::Updated(_) | Change::Resolved(_) => None,
        }
    }

    fn verb(&self) -> &'static str {
        if self.kind == "incident.opened" {
            "opened"
        } else {
            "escalated"
        }
    }

    /// One line for people: severity, what and who, the figures. The key (a session id or
    /// any other text an attacker chose) is shown on one line, control characters escaped.
    pub fn summary(&self) -> String {
        let i = &self.incident;
        format!(
            "{} incident {}: {} on {} {} (peak {}, {} events, {} window(s)), id {}",
            i.severity,
            self.verb(),
            i.rule,
            i.key_type.as_str(),
            one_line(&i.key),
            i.peak,
            i.events,
            i.windows,
            i.id
        )
    }

    /// The summary as Slack `text`: `&`, `<` and `>` escaped as Slack documents, so a key
    /// cannot mention `<!channel>` or make a link.
    fn slack_text(&self) -> String {
        format!(
            ":rotating_light: shoplake: {}",
            slack_escape(&self.summary())
        )
    }

    /// The e-mail subject: one line, at most 200 characters, whatever the key holds.
    fn subject(&self) -> String {
        let i = &self.incident;
        let subject = format!(
            "[shoplake] {} incident {}: {} {}={}",
            i.severity,
            self.verb(),
            i.rule,
            i.key_type.as_str(),
            one_line(&i.key)
        );
        subject.chars().take(200).collect()
    }
}

/// Text on one line: control characters (CR, LF, tabs, escapes) shown as `\u{..}` escapes.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Slack's message escaping: `&amp;`, `&lt;`, `&gt;`.
fn slack_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Signs a webhook body: the header value for `X-Shoplake-Signature`.
pub fn signature(secret: &str, unix_seconds: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={unix_seconds},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The running channels: a sender task per channel over the alert store's outbox.
pub struct Notifier {
    channels: Vec<Channel>,
    wake: Vec<Arc<Notify>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    store: Arc<dyn AlertStore>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("channels", &self.channels.len())
            .finish_non_exhaustive()
    }
}

/// Why an attempt failed.
enum Failure {
    /// Worth another attempt.
    Transient(String),
    /// Another attempt would fail the same way (a 4xx, a refused recipient).
    Permanent(String),
}

/// Notices a sender claims at a time.
const CLAIM: usize = 32;

/// Now on the wall clock (µs): outbox times are compared between processes.
pub(crate) fn wall_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// A name for this process's claims, different in every process.
fn owner() -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{}-{random:016x}", std::process::id())
}

impl Notifier {
    /// Starts a sender per channel over `store`'s outbox; `clock` stamps webhook signatures.
    pub fn start(
        settings: &NotifySettings,
        store: Arc<dyn AlertStore>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Result<Notifier> {
        let http = reqwest::Client::builder()
            .timeout(settings.delivery.timeout)
            .user_agent(concat!("shoplake/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Notify {
                channel: "(all)".to_owned(),
                reason: format!("starting the HTTP client: {e}"),
            })?;
        let owner = owner();
        let (stop, stopped) = watch::channel(false);
        let mut wake = Vec::new();
        let mut tasks = Vec::new();
        for channel in &settings.channels {
            let mailer = match &channel.target {
                Target::Email { smtp, .. } => Some(
                    AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp)
                        .map_err(|e| Error::Notify {
                            channel: channel.name.clone(),
                            reason: e.to_string(),
                        })?
                        .timeout(Some(settings.delivery.timeout))
                        .build(),
                ),
                _ => None,
            };
            let worker = Worker {
                label: ChannelLabel {
                    channel: channel.name.clone(),
                },
                channel: channel.clone(),
                delivery: settings.delivery,
                http: http.clone(),
                mailer,
                metrics: metrics.clone(),
                clock: clock.clone(),
                store: store.clone(),
                owner: owner.clone(),
            };
            let bell = Arc::new(Notify::new());
            tasks.push(tokio::spawn(worker.run(bell.clone(), stopped.clone())));
            wake.push(bell);
        }
        Ok(Notifier {
            channels: settings.channels.clone(),
            wake,
            stop,
            tasks,
            store,
        })
    }

    /// The outbox entries of changes: an opening or escalation's notice for every channel it
    /// is severe enough for, rendered for that channel.
    pub fn notices(&self, changes: &[Change]) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for notice in changes.iter().filter_map(Notice::of) {
            for channel in &self.channels {
                if notice.incident.severity < channel.min_severity {
                    continue;
                }
                match channel.render(&notice) {
                    Ok(n) => out.push(n),
                    Err(why) => tracing::error!(
                        channel = %channel.name,
                        incident = %notice.incident.id,
                        error = %why,
                        "a notice could not be rendered"
                    ),
                }
            }
        }
        out
    }

    /// Tells the senders that new notices are in the outbox.
    pub fn wake(&self) {
        for bell in &self.wake {
            bell.notify_one();
        }
    }

    /// Sends what is due until `grace` is over; what is left stays in the outbox for the
    /// next sender (another process, or this one started again).
    pub async fn close(self, grace: Duration) {
        let _ = self.stop.send(true);
        let all = futures::future::join_all(self.tasks);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("notification senders were still busy at shutdown: stopped");
        }
        for channel in &self.channels {
            match self.store.pending_notices(&channel.name).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    channel = %channel.name,
                    notices = n,
                    "notices left in the outbox for the next sender"
                ),
                Err(e) => tracing::warn!(channel = %channel.name, error = %e, "reading the outbox"),
            }
        }
    }
}

impl Channel {
    /// The outbox entry of a notice on this channel: the body (and subject) it sends.
    fn render(&self, notice: &Notice) -> Result<Outgoing, String> {
        let i = &notice.incident;
        let (subject, body) = match &self.target {
            Target::Webhook { .. } => (
                String::new(),
                serde_json::to_string(notice).map_err(|e| format!("encoding the notice: {e}"))?,
            ),
            Target::Slack { .. } => (
                String::new(),
                serde_json::json!({ "text": notice.slack_text() }).to_string(),
            ),
            Target::Email { .. } => {
                let fields = serde_json::to_string_pretty(i)
                    .map_err(|e| format!("encoding the notice: {e}"))?;
                (
                    notice.subject(),
                    format!("{}\n\n{fields}\n", notice.summary()),
                )
            }
        };
        Ok(Outgoing {
            incident_id: i.id.clone(),
            kind: notice.kind.to_owned(),
            severity: i.severity.as_str().to_owned(),
            channel: self.name.clone(),
            subject,
            body,
        })
    }
}

struct Worker {
    label: ChannelLabel,
    channel: Channel,
    delivery: Delivery,
    http: reqwest::Client,
    mailer: Option<AsyncSmtpTransport<Tokio1Executor>>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    store: Arc<dyn AlertStore>,
    owner: String,
}

impl Worker {
    /// Claims due notices and sends them, until `stop` and nothing more is due; looks again
    /// when woken, and at least every `backoff` (at most every second): for retries that
    /// came due and for notices a sender that died left behind.
    async fn run(self, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
        let poll = self
            .delivery
            .backoff
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        // One attempt's claim: long enough that it never runs out while the attempt runs.
        let lease = micros(self.delivery.timeout * 2 + Duration::from_secs(5));
        loop {
            let stopping = *stop.borrow_and_update();
            let now = wall_micros();
            match self
                .store
                .claim_notices(&self.channel.name, &self.owner, now, now + lease, CLAIM)
                .await
            {
                Ok(claimed) => {
                    for c in &claimed {
                        self.attempt(c).await;
                    }
                    if claimed.len() == CLAIM {
                        continue;
                    }
                }
                Err(e) => tracing::warn!(
                    channel = %self.channel.name,
                    error = %e,
                    "claiming notices from the outbox"
                ),
            }
            if stopping {
                return;
            }
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// One attempt at a claimed notice, settled in the outbox.
    async fn attempt(&self, c: &Claimed) {
        let outcome = match self.send(&c.notice).await {
            Ok(()) => {
                self.metrics
                    .notifications_sent
                    .get_or_create(&self.label)
                    .inc();
                Settled::Sent
            }
            Err(Failure::Transient(why)) if c.attempts < self.delivery.attempts => {
                let delay = self
                    .delivery
                    .backoff
                    .saturating_mul(1 << (c.attempts - 1).min(16))
                    .min(Duration::from_secs(60));
                tracing::warn!(
                    channel = %self.channel.name,
                    attempt = c.attempts,
                    error = %why,
                    retry_in = ?delay,
                    "notification failed: retrying"
                );
                self.metrics
                    .notifications_retried
                    .get_or_create(&self.label)
                    .inc();
                Settled::Retry {
                    due_at: wall_micros() + micros(delay),
                    error: why,
                }
            }
            Err(Failure::Transient(why) | Failure::Permanent(why)) => {
                tracing::error!(
                    channel = %self.channel.name,
                    incident = %c.notice.incident_id,
                    attempts = c.attempts,
                    error = %why,
                    "notification given up"
                );
                self.metrics
                    .notifications_failed
                    .get_or_create(&self.label)
                    .inc();
                Settled::Failed { error: why }
            }
        };
        let mut delay = Duration::from_millis(100);
        for _ in 0..5 {
            match self
                .store
                .settle_notice(&c.notice, &self.owner, wall_micros(), &outcome)
                .await
            {
                Ok(true) => return,
                Ok(false) => {
                    tracing::warn!(
                        channel = %self.channel.name,
                        incident = %c.notice.incident_id,
                        "a notice's claim ran out before it was settled: another sender has it"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!(channel = %self.channel.name, error = %e, "settling a notice");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        // The claim runs out and the notice is attempted again.
        tracing::error!(
            channel = %self.channel.name,
            incident = %c.notice.incident_id,
            "a notice could not be settled in the outbox: it will be attempted again"
        );
    }

    async fn send(&self, notice: &Outgoing) -> Result<(), Failure> {
        match &self.channel.target {
            Target::Webhook { url, secret } => {
                let mut request = self
                    .http
                    .post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(EVENT_HEADER, notice.kind.as_str());
                if let Some(secret) = secret {
                    let now = self.clock.now_micros().div_euclid(1_000_000);
                    request = request.header(
                        SIGNATURE_HEADER,
                        signature(secret, now, notice.body.as_bytes()),
                    );
                }
                http_outcome(request.body(notice.body.clone()).send().await)
            }
            Target::Slack { url } => http_outcome(
                self.http
                    .post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(notice.body.clone())
                    .send()
                    .await,
            ),
            Target::Email { from, to, .. } => {
                let Some(mailer) = &self.mailer else {
                    return Err(Failure::Permanent("no SMTP transport".into()));
                };
                let mut builder = Message::builder()
                    .from(from.clone())
                    .subject(notice.subject.as_str());
                for t in to {
                    builder = builder.to(t.clone());
                }
                let message = builder
                    .header(ContentType::TEXT_PLAIN)
                    .body(notice.body.clone())
                    .map_err(|e| Failure::Permanent(format!("building the message: {e}")))?;
                match mailer.send(message).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_permanent() => Err(Failure::Permanent(e.to_string())),
                    Err(e) => Err(Failure::Transient(e.to_string())),
                }
            }
        }
    }
}

fn http_outcome(r: reqwest::Result<reqwest::Response>) -> Result<(), Failure> {
    match r {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => {
            let status = resp.status();
            let why = format!("the receiver answered {status}");
            // A receiver's refusal stays a refusal, except "too many" and "timeout".
            if status.is_client_error()
                && status != reqwest::StatusCode::TOO_MANY_REQUESTS
                && status != reqwest::StatusCode::REQUEST_TIMEOUT
            {
                Err(Failure::Permanent(why))
            } else {
                Err(Failure::Transient(why))
            }
        }
        Err(e) => Err(Failure::Transient(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attacker_text_is_escaped_per_channel() {
        let key = "s-1\r\nBcc: victim@example.com <!channel> <https://evil|click>";
        let line = one_line(key);
        assert!(!line.contains('\r') && !line.contains('\n'), "{line}");
        assert!(line.starts_with("s-1\\u{d}\\u{a}Bcc:"), "{line}");
        let slack = slack_escape(&line);
        assert!(!slack.contains('<') && !slack.contains('>'), "{slack}");
        assert!(slack.contains("&lt;!channel&gt;"), "{slack}");
        assert_eq!(slack_escape("a & b"), "a &amp; b");
        assert_eq!(one_line("tab\there\u{2028}"), "tab\\u{9}here\\u{2028}");
    }

    #[test]
    fn signature_is_hmac_sha256_of_time_and_body() {
        // RFC 4231 test case 2 shape: key "Jefe"; here over "1.{}".
        let s = signature("Jefe", 1, b"{}");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1.{}");
        assert_eq!(
            s,
            format!("t=1,v1={}", hex::encode(mac.finalize().into_bytes()))
        );
        assert_eq!(s.len(), "t=1,v1=".len() + 64);
    }

    #[test]
    fn every_problem_is_listed() {
        let c: NotifyConfig = toml::from_str(
            r#"
attempts = 0
backoff = "soon"
[[channels]]
kind = "pager"
[[channels]]
kind = "webhook"
url = "ftp://x"
[[channels]]
kind = "email"
smtp = "smtp://127.0.0.1:2525"
to = ["not an address"]
[[channels]]
kind = "slack"
secret = "s"
"#,
        )
        .unwrap();
        let errors = c.settings().unwrap_err();
        let text = errors.join("\n");
        for needle in [
            "notify.attempts must be at least 1",
            "notify.backoff",
            "notify.channels[0].kind = \"pager\"",
            "notify.channels[1].url = \"ftp://x\"",
            "notify.channels[2].from: required",
            "notify.channels[2].to = \"not an address\"",
            "notify.channels[3].secret: not a setting of a slack channel",
            "notify.channels[3].url: required",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }

    #[test]
    fn defaults_notify_high_only() {
        let c: NotifyConfig =
            toml::from_str("[[channels]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/h\"\n")
                .unwrap();
        let s = c.settings().unwrap();
        assert_eq!(s.channels[0].min_severity, Severity::High);
        assert_eq!(s.channels[0].name, "webhook-0");
        assert_eq!(s.delivery.attempts, 5);
    }
}
