//! The query runtime's threads run at a lower CPU priority than the rest of the server.
//!
//! Queries and reports are the heaviest work a `read` token can ask for; on a machine with
//! few cores they would otherwise take turns on the CPU with the threads that answer
//! `/healthz`, take in events and deliver them. A nice value (`query_nice`; Linux: the nice
//! value is per thread) lets those threads run first whenever they have work, while queries
//! get the CPU the rest of the server leaves, and a share of it under load. The share is
//! against every process on the machine. Off by default ([`QUERY_NICE`] is 0): a knob for
//! machines where queries should yield to everything (the README has what it measured).

/// The nice value of the query runtime's threads unless configured: 0, every thread's own
/// (19 is the lowest priority).
pub const QUERY_NICE: i32 = 0;

/// Sets the calling thread's nice value to `nice` (never below the one it has: raising a
/// priority needs privileges); on failure (or off Linux) the thread keeps its priority,
/// which is only slower for others, never wrong.
pub(crate) fn lower_this_thread(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        let now = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
        if nice <= now {
            return;
        }
        if let Err(e) = rustix::process::setpriority_process(Some(tid), nice) {
            tracing::debug!(error = %e, "could not lower the query thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_lowered_thread_runs_at_its_nice_value_and_others_keep_theirs() {
        let before = rustix::process::getpriority_process(None).unwrap_or(0);
        let inside = std::thread::spawn(|| {
            lower_this_thread(10);
            rustix::process::getpriority_process(Some(rustix::thread::gettid()))
        })
        .join()
        .map_err(|_| "the thread panicked");
        assert_eq!(inside, Ok(Ok(10.max(before))));
        assert_eq!(
            rustix::process::getpriority_process(None).ok(),
            Some(before)
        );
        // 0 leaves a thread as it is.
        let untouched = std::thread::spawn(|| {
            lower_this_thread(0);
            rustix::process::getpriority_process(Some(rustix::thread::gettid()))
        })
        .join()
        .map_err(|_| "the thread panicked");
        assert_eq!(untouched, Ok(Ok(before)));
    }
}
