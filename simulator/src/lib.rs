//! satcast-sim: the link simulator, the UDP impairment relay and the demo.
#![warn(missing_docs)]

pub mod relay;
