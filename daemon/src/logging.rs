//! Log set-up shared by both daemons' commands: human text by default, JSON lines on
//! request (`--log-json`), level from RUST_LOG (default info), always to standard error
//! (standard output is for what a command prints: ids, tables, JSON). Colour only when
//! standard error is a terminal: under systemd, in a log file or a pipe the escape codes
//! would end up as noise in the journal and in grep. NO_COLOR (no-color.org) turns it off too.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()))
        // A line that cannot be written (standard error a closed pipe) is lost either way;
        // by default tracing-subscriber reports that with eprintln!, which panics there.
        .log_internal_errors(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
