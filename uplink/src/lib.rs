//! satcast-uplink: the ministry uplink daemon and the operators' CLI. The daemon takes
//! queued broadcasts, signs their manifests and airs them through the broadcast machine
//! with a paced UDP sender.
#![warn(missing_docs)]

pub mod acks;
pub mod admit;
pub mod alarms;
pub mod bases;
pub mod check;
pub mod client;
pub mod config;
pub mod control;
pub mod dashboard;
pub mod divisions;
pub mod keys;
pub mod metrics;
pub mod prepare;
pub mod queue;
pub mod report;
pub mod serve;

pub use config::UplinkConfig;
