//! satcast-store: durable state. Files are the truth: spools, partial objects, the
//! content-addressed cache and delivered files are written by temp file, fsync, rename and
//! directory fsync, so a power cut leaves either the old state or the new, never a mix.
//! sled is only an index over them, rebuilt from the files if it is broken. A state folder
//! belongs to one process at a time (see [`lock`]).
#![warn(missing_docs)]

pub mod fsutil;
pub mod index;
pub mod lock;
pub mod receiver;
pub mod spool;
pub mod trust_state;
pub mod uplink;

pub use index::{IndexError, IndexOpen};
pub use lock::{LockError, Owner, Ownership, StateLock};
pub use receiver::{CacheEntry, DiskUse, OpenReport, Outbox, ReceiverLimits, ReceiverStore, StoreError};
pub use trust_state::{TrustState, TrustStateError};
pub use uplink::{BroadcastRecord, LedgerEntry, LedgerState, ReceiverRecord, UplinkStore};
