//! Stopping a daemon: SIGTERM (systemd) or SIGINT (Ctrl-C) sets a flag that the daemon's
//! loops look at, so each finishes what it is doing (a datagram, a record) and exits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A stop flag, set on the first SIGTERM or SIGINT by a thread of its own (named
/// `signals`, on a small tokio runtime for the signal streams).
pub fn stop_on_signals() -> std::io::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let flag = stop.clone();
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        runtime.block_on(async {
            // Without a SIGTERM handler the default action (exit) still stops the daemon,
            // only less tidily; nothing to report to anyone.
            let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else { return };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            flag.store(true, Ordering::Relaxed);
        });
    })?;
    Ok(stop)
}
