//! satcast-receiver: the county receiver daemon. It joins the downlink, drives the
//! reception machine over the durable store, and delivers finished objects atomically.
#![warn(missing_docs)]

pub mod acks;
pub mod check;
pub mod config;
pub mod daemon;
pub mod droplog;
pub mod heartbeat;
pub mod hooks;
pub mod metrics;
pub mod network_keys;
pub mod status;
pub mod upgrade;
pub mod worker;

pub use config::ReceiverConfig;
