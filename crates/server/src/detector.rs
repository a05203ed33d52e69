//! The detector's entry in `serve`: its outputs (notifications, bot flags, the live feed)
//! and which loop detects: [`crate::detection`]'s over every partition in one process (the
//! embedded log; processing-time mode, in the member owning partition 0 of the group, the
//! others standing by), or [`crate::spread`]'s over the partitions the detector group gives
//! this process.

use std::sync::Arc;

use shoplake_detect::TimeMode;
use shoplake_events::time::Clock;
use shoplake_lake::Lake;
use shoplake_log::{EventLog, Ownership};
use tokio::sync::{mpsc, watch};

use crate::detection::{DetectionOptions, NOTIFY_GRACE, Outputs, flag_loop, run};
use crate::error::Result;
use crate::metrics::Metrics;
use crate::notify::Notifier;

/// Detects until `stop`: over every partition on the embedded log (then reads once more to the
/// log's end, closing the windows); on a log shared by a group, on the partitions the
/// detector group gives this process (to where the log ended at the stop, then checkpoints
/// and leaves the windows open for the next owner) (processing-time mode: over every partition while it owns partition 0, standing by
/// otherwise; a member that loses the partition stops where it is, and the new owner restores
/// the last checkpoint and reads on from there, notifying nothing twice).
pub(crate) async fn detect_loop(
    lake: Lake,
    (log, mut ownership): (Arc<dyn EventLog>, Ownership),
    options: DetectionOptions,
    metrics: Arc<Metrics>,
    live: crate::live::LiveSender,
    clock: Arc<dyn Clock>,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let notifier = Notifier::start(
        &options.notify,
        options.store.clone(),
        metrics.clone(),
        clock.clone(),
    )?;
    let (flags_tx, flags_rx) = mpsc::unbounded_channel();
    let flags_task = tokio::spawn(flag_loop(lake.clone(), flags_rx, metrics.clone()));
    let out = Outputs {
        notifier,
        live,
        flags: flags_tx,
        flag_severity: options.settings.flag_severity,
        clock,
    };
    let result = lead(&lake, log, &mut ownership, &options, &metrics, &out, stop).await;
    let Outputs {
        notifier, flags, ..
    } = out;
    drop(flags);
    notifier.close(NOTIFY_GRACE).await;
    if let Err(e) = flags_task.await {
        tracing::error!(error = %e, "the bot flag writer failed");
    }
    result
}

/// Detects until `stop`. On a log shared by a group, in event-time mode, on the partitions
/// this member owns ([`crate::spread`]). Otherwise while this member owns partition 0 of the
/// detector group (always, on the embedded log), standing by when not: processing-time
/// windows count the arrivals at one process.
async fn lead(
    lake: &Lake,
    log: Arc<dyn EventLog>,
    ownership: &mut Ownership,
    options: &DetectionOptions,
    metrics: &Arc<Metrics>,
    out: &Outputs,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    if ownership.is_group() && options.settings.time == TimeMode::Event {
        return crate::spread::run(lake, log, ownership, options, metrics, out, stop).await;
    }
    loop {
        let mut announced = false;
        while !crate::roles::detects(&ownership.partitions()) {
            if *stop.borrow() {
                return Ok(());
            }
            if !announced && ownership.assigned() {
                tracing::info!("detector standing by: another process of the group detects");
                announced = true;
            }
            tokio::select! {
                () = ownership.changed() => {}
                _ = stop.changed() => {}
            }
        }
        tracing::info!("detector active: this process owns partition 0 of its group");
        let mut watch = ownership.clone();
        let lost = async move {
            while crate::roles::detects(&watch.partitions()) {
                watch.changed().await;
            }
        };
        tokio::select! {
            result = run(lake, log.clone(), options, metrics, out, stop.clone()) => return result,
            () = lost => {
                tracing::warn!("detector lost partition 0 of its group to another process: standing by");
            }
        }
    }
}
