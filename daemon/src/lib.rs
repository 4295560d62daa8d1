//! satcast-daemon: what the uplink and receiver daemons share, so each is written once:
//! loading a TOML config file ([`config`]), the QUIC acknowledgement channel's TLS set-up
//! from PEM files ([`tls`]), stopping on SIGTERM or SIGINT ([`signals`]), log set-up
//! ([`logging`]), the wall clock ([`clock`]), object ids in JSON ([`object_id`]), and
//! command-line output: one-line errors and closed pipes ([`cli`]), the `check` report
//! ([`check`]), completions and man pages for packaging ([`assets`]), and repeated
//! warnings summarised ([`summary`]), and HTTP listeners with bounded connections
//! ([`http`]).
#![warn(missing_docs)]

pub mod assets;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod http;
pub mod logging;
pub mod object_id;
pub mod signals;
pub mod summary;
pub mod tls;
