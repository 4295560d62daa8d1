//! Log setup shared by the receiver's commands: human text by default, JSON on request,
//! level from RUST_LOG (default info).

use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber; writes to standard error.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
