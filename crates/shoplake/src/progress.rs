//! Progress for long work: a bar on a terminal, plain periodic lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Reports progress of a count towards an optional total.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: &'static str,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_line: Instant,
}

const LINE_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    /// Starts reporting on stderr.
    pub fn new(label: &'static str, total: Option<u64>) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match total {
                Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
                None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            };
            let template = if total.is_some() {
                "{prefix} [{bar:30}] {human_pos}/{human_len} rows  {per_sec}  eta {eta}"
            } else {
                "{prefix} {spinner} {human_pos} rows  {per_sec}  {elapsed}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(label);
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            label,
            total,
            done: 0,
            started: now,
            last_line: now,
        }
    }

    /// Adds `n` to the count.
    pub fn inc(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(bar) => bar.inc(n),
            None if self.last_line.elapsed() >= LINE_EVERY => {
                self.last_line = Instant::now();
                eprintln!("{}", self.line());
            }
            None => {}
        }
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let rate = self.done as f64 / secs;
        match self.total {
            Some(t) => format!(
                "{}: {}/{} rows ({:.0}%), {:.0} rows/s",
                self.label,
                self.done,
                t,
                100.0 * self.done as f64 / t.max(1) as f64,
                rate
            ),
            None => format!("{}: {} rows, {:.0} rows/s", self.label, self.done, rate),
        }
    }

    /// Sets the count to `rows`, with `bytes` of `total_bytes` read (for inputs of known size
    /// the bar follows bytes, so its ETA is right).
    pub fn update(&mut self, rows: u64, bytes: u64, total_bytes: Option<u64>) {
        self.done = rows;
        match &self.bar {
            Some(bar) => {
                if let (Some(t), None) = (total_bytes, self.total) {
                    self.total = Some(t);
                    bar.set_length(t);
                    if let Ok(style) = ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {bytes}/{total_bytes} {msg} eta {eta}",
                    ) {
                        bar.set_style(style.progress_chars("=> "));
                    }
                }
                let secs = self.started.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("{rows} rows, {:.0} rows/s", rows as f64 / secs));
                bar.set_position(if self.total.is_some() { bytes } else { rows });
            }
            None if self.last_line.elapsed() >= LINE_EVERY => {
                self.last_line = Instant::now();
                let secs = self.started.elapsed().as_secs_f64().max(1e-9);
                let share = total_bytes.map_or(String::new(), |t| {
                    format!(" ({:.0}%)", 100.0 * bytes as f64 / t.max(1) as f64)
                });
                eprintln!(
                    "{}: {rows} rows{share}, {:.0} rows/s",
                    self.label,
                    rows as f64 / secs
                );
            }
            None => {}
        }
    }

    /// Ends the report; returns the elapsed time.
    pub fn finish(self) -> Duration {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        self.started.elapsed()
    }
}
