//! Log set-up shared by both daemons' commands: human text by default, JSON lines on
//! request (`--log-json`), level from RUST_LOG (default info), always to standard error
//! (standard output is for what a command prints: ids, tables, JSON).

use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
