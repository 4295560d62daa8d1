//! satcast-store: durable state. Files are the truth: partial objects, the
//! content-addressed cache and delivered files are written by temp file, fsync, rename and
//! directory fsync, so a power cut leaves either the old state or the new, never a mix.
#![warn(missing_docs)]

pub mod fsutil;
pub mod receiver;
pub mod trust_state;

pub use receiver::{ReceiverStore, StoreError};
pub use trust_state::{TrustState, TrustStateError};
