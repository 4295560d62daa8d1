//! satcast-sim: the link simulator (`run`, `bench`), the UDP impairment relay and the demo.
#![warn(missing_docs)]

pub mod ackload;
pub mod bench;
pub mod bound;
pub mod cluster;
pub mod delta;
pub mod demo;
pub mod disk;
pub mod divisions;
pub mod harness;
pub mod loss;
pub mod plot;
pub mod relay;
pub mod run;
pub mod utilisation;
pub mod vopr;
pub mod wan;
