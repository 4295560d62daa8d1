//! Stopping a daemon: SIGTERM (systemd) or SIGINT (Ctrl-C) sets a flag that the daemon's
//! loops look at, so each finishes what it is doing (a datagram, a record) and exits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A stop flag, set on the first SIGTERM or SIGINT by a thread of its own (named
/// `signals`, on a small tokio runtime for the signal streams). Both signals are caught
/// from the moment this returns: a SIGTERM while the daemon starts (systemd stopping a unit
/// that has just started) sets the flag instead of killing the process outright.
pub fn stop_on_signals() -> std::io::Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Registered here, not in the thread: until the thread got round to it, the default
    // action of SIGTERM (exit at once) applied.
    let (mut term, mut interrupt) = {
        let _context = runtime.enter();
        (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?)
    };
    let flag = stop.clone();
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
            flag.store(true, Ordering::Relaxed);
        });
    })?;
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SIGTERM the moment the daemon has set up its signals (systemd stopping a unit that
    /// has just started) must set the flag, not kill the process with the default action.
    #[test]
    fn a_sigterm_right_after_set_up_sets_the_flag() {
        let stop = stop_on_signals().expect("signals");
        // At once, as a racing systemd would: no child process to wait for.
        rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::TERM).expect("kill");
        // Generous: the flag is set within microseconds; this only bounds a broken handler.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !stop.load(Ordering::Relaxed) {
            assert!(std::time::Instant::now() < deadline, "SIGTERM did not set the stop flag");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
