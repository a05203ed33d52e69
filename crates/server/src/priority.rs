//! The query runtime's threads run at a lower CPU priority than the rest of the server.
//!
//! Queries and reports are the heaviest work a `read` token can ask for; on a machine with
//! few cores they would otherwise take turns on the CPU with the threads that answer
//! `/healthz`, take in events and deliver them. A nice value of [`QUERY_NICE`] (Linux: the
//! nice value is per thread) lets those threads run first whenever they have work, while
//! queries still get the CPU the rest of the server leaves, and a share of it under load.

/// The nice value of the query runtime's threads (0 is the default, 19 the lowest).
pub(crate) const QUERY_NICE: i32 = 10;

/// Lowers the calling thread's priority to [`QUERY_NICE`]; on failure (or off Linux) the
/// thread keeps its priority, which is only slower for others, never wrong.
pub(crate) fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), QUERY_NICE) {
            tracing::debug!("could not lower the query thread's priority: {e}");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_lowered_thread_runs_at_the_query_nice_value_and_others_keep_theirs() {
        let before = rustix::process::getpriority_process(None).unwrap_or(0);
        let inside = std::thread::spawn(|| {
            lower_this_thread();
            rustix::process::getpriority_process(Some(rustix::thread::gettid()))
        })
        .join()
        .map_err(|_| "the thread panicked");
        assert_eq!(inside, Ok(Ok(QUERY_NICE.max(before))));
        assert_eq!(
            rustix::process::getpriority_process(None).ok(),
            Some(before)
        );
    }
}
