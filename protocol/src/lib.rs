//! satcast-protocol: the wire format, manifests and keys, the RaptorQ object codec and
//! (later) the sans-IO state machines shared by the daemons and the simulator.
//!
//! Nothing in this crate performs I/O, reads a clock or draws thread randomness: time and
//! randomness are passed in by the caller.
#![warn(missing_docs)]

pub mod broadcast;
pub mod codec;
pub mod confidential;
pub mod esi_set;
pub mod fec;
pub mod feedback;
pub mod key_tree;
pub mod manifest;
pub mod network_key;
pub mod object_id;
pub mod pacer;
pub mod receiver_node;
pub mod reception;
pub mod sizing;
pub mod storage;
pub mod trust;
pub mod uplink_node;
pub mod wire;

pub use object_id::ObjectId;
