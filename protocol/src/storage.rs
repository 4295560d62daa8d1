//! What the reception machine asks of storage, and what comes back.
//!
//! The machine does no I/O: it emits a [`StoreRequest`] for every symbol to keep, every
//! block to decode and every object to verify, and takes the result back as a
//! [`StoreCompletion`]. An executor carries the requests out in the order they were emitted:
//! the receiver daemon on a worker thread over its durable store, the simulator in memory
//! (with faults), the tests synchronously through [`execute`] over a [`ReceptionStore`].
//!
//! The requests are the expensive work (disk writes, fsyncs, RaptorQ decoding, whole-object
//! hashes), so a receive thread that only feeds the machine never waits on any of them.

use std::collections::{BTreeMap, HashMap};
use std::io;

use crate::codec::DELTA_BASE_BYTES_MAX;
use crate::fec::{self, Oti};
use crate::feedback::{Refusal, RefusalCode};
use crate::manifest::{Compression, Manifest};

/// Work the reception machine needs done by storage, in the order it must be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreRequest {
    /// An object was accepted: keep its signed manifest, so a restart can verify it again
    /// and resume from what was kept. Always completed: [`StoreCompletion::Begun`],
    /// [`StoreCompletion::AlreadyCached`] or [`StoreCompletion::BeginFailed`]; the machine
    /// keeps the object's symbols back until then.
    BeginObject {
        /// The verified manifest.
        manifest: Box<Manifest>,
        /// Its signed bytes, as received.
        signed_manifest: Vec<u8>,
    },
    /// Keep one symbol of a block (a buffered append; the executor syncs periodically).
    /// The machine has already dropped duplicates it knows of. No completion unless the
    /// symbol was not kept ([`StoreCompletion::SymbolNotKept`]).
    AppendSymbol {
        /// The object.
        object_id: u64,
        /// The source block.
        sbn: u8,
        /// The symbol's ESI.
        esi: u32,
        /// Its bytes; empty when the machine runs with counting fidelity.
        symbol: Vec<u8>,
    },
    /// Decode a block from the symbols kept for it, check it against its signed hash and,
    /// if it matches, write it at its offset, sync it, and forget its symbols; if it does
    /// not match, forget its symbols. Always completed ([`StoreCompletion::BlockDecoded`]).
    DecodeBlock {
        /// The object.
        object_id: u64,
        /// The object's transmission information.
        oti: Oti,
        /// The block.
        sbn: u8,
        /// The block's signed BLAKE3.
        expected_hash: [u8; 32],
        /// Distinct symbols the machine counts for the block, `unverified` included (a
        /// counting executor decides by it; a real one reads what it kept).
        symbols_counted: u32,
        /// Symbols no signed list vouched for (their list was lost), used in this attempt
        /// only and never kept: if the block then fails its hash, storage keeps the symbols
        /// it holds and answers [`DecodeOutcome::UnverifiedRejected`].
        unverified: Vec<(u32, Vec<u8>)>,
    },
    /// Hash the object as kept and compare it with its signed hash; if it is coded, decode
    /// it (streaming, into a file beside it) and check the result against the signed
    /// delivered size and hash. Always completed ([`StoreCompletion::ObjectVerified`]).
    VerifyObject {
        /// The object.
        object_id: u64,
        /// Its length on the air.
        size_bytes: u64,
        /// Its signed BLAKE3 on the air.
        expected_hash: [u8; 32],
        /// How it is coded, with the signed delivered size and hash.
        compression: Compression,
        /// For a sealed object, the content key and secrets the county opened.
        opened: Option<Box<crate::confidential::Opening>>,
    },
    /// Forget everything about an object (expired, revoked, or poisoned as a whole).
    /// No completion unless it fails.
    Discard {
        /// The object.
        object_id: u64,
    },
}

/// Why a symbol was not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotKept {
    /// That ESI was already kept for the block (a restart forgot the machine's own record).
    Duplicate,
    /// Storage failed (a full disk, say); the symbol is lost like one lost on the air.
    Failed(String),
}

/// How decoding a block ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeOutcome {
    /// Decoded, matched its signed hash, written and synced.
    Verified,
    /// Decoded but did not match its signed hash: its symbols were dropped.
    Poisoned,
    /// Decoded with unverified symbols and did not match its signed hash: one of them was
    /// forged. The symbols kept (all vouched for by signed lists) stay.
    UnverifiedRejected,
    /// Not decodable from what was kept, of which this many symbols could be read back.
    NotYet {
        /// Distinct symbols read back: the machine's count is corrected to it.
        symbols_readable: u32,
    },
    /// Storage failed.
    Failed(String),
}

/// How verifying a whole object ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// The object as kept matches its signed hash.
    Verified,
    /// It does not: everything kept for it was discarded.
    Mismatch,
    /// It matches, but cannot be delivered (a patch whose base this county lacks, or a
    /// payload that does not decode to its signed bytes): everything kept for it was
    /// discarded, and the county refuses it for good.
    Refused(Refusal),
    /// Storage failed.
    Failed(String),
}

/// A finished [`StoreRequest`], handed back to the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreCompletion {
    /// [`StoreRequest::BeginObject`] succeeded: symbols may be kept.
    Begun {
        /// The object.
        object_id: u64,
    },
    /// [`StoreRequest::BeginObject`] failed.
    BeginFailed {
        /// The object.
        object_id: u64,
        /// The error, as text.
        error: String,
        /// No room: the spool limit, or the disk (`ErrorKind::StorageFull`).
        storage_full: bool,
    },
    /// [`StoreRequest::BeginObject`] refused the object for good before receiving it: a
    /// patch whose base is not in the cache, or a declared size over the cache's limit.
    BeginRefused {
        /// The object.
        object_id: u64,
        /// Why, as the uplink is told.
        refusal: Refusal,
    },
    /// [`StoreRequest::BeginObject`] found the verified object in the cache already (a
    /// crash between the commit and the version record): deliver it from there.
    AlreadyCached {
        /// The object.
        object_id: u64,
    },
    /// A symbol of [`StoreRequest::AppendSymbol`] was not kept.
    SymbolNotKept {
        /// The object.
        object_id: u64,
        /// The block.
        sbn: u8,
        /// The ESI.
        esi: u32,
        /// Why.
        why: NotKept,
    },
    /// [`StoreRequest::DecodeBlock`] finished.
    BlockDecoded {
        /// The object.
        object_id: u64,
        /// The block.
        sbn: u8,
        /// How.
        outcome: DecodeOutcome,
    },
    /// [`StoreRequest::VerifyObject`] finished.
    ObjectVerified {
        /// The object.
        object_id: u64,
        /// How.
        outcome: VerifyOutcome,
    },
    /// [`StoreRequest::Discard`] failed.
    DiscardFailed {
        /// The object.
        object_id: u64,
        /// The error, as text.
        error: String,
    },
}

/// What storage holds of an object from before a restart, for
/// [`crate::reception::Reception::resume`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// Blocks decoded, verified and written.
    pub verified: Vec<u8>,
    /// Distinct symbols kept, per block not yet verified.
    pub kept: Vec<(u8, u32)>,
    /// The whole object, verified, is already in the content-addressed cache (a crash in
    /// the delivery window): it is delivered from there without a symbol more.
    pub in_cache: bool,
}

/// Storage as an executor sees it: the synchronous operations behind the requests. The
/// in-memory [`MemoryStore`] serves tests; the receiver daemon's durable store implements
/// it too, and runs it on a worker thread.
pub trait ReceptionStore {
    /// An object was accepted: keep its signed manifest.
    fn begin_object(&mut self, manifest: &Manifest, signed_manifest: &[u8]) -> io::Result<()>;
    /// Keeps one symbol. Returns false if that ESI was already kept for the block.
    fn add_symbol(&mut self, object_id: u64, sbn: u8, esi: u32, symbol: &[u8]) -> io::Result<bool>;
    /// How many distinct symbols are kept for the block.
    fn symbol_count(&self, object_id: u64, sbn: u8) -> u32;
    /// Every symbol kept for the block.
    fn symbols(&mut self, object_id: u64, sbn: u8) -> io::Result<Vec<(u32, Vec<u8>)>>;
    /// Forgets the symbols of one block (decoded, or poisoned).
    fn clear_block(&mut self, object_id: u64, sbn: u8) -> io::Result<()>;
    /// Writes a decoded, verified block at its offset in the partial object, durably.
    fn write_block(&mut self, object_id: u64, sbn: u8, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Whether a verified block was written before (so a restart does not collect it again).
    fn block_written(&self, object_id: u64, sbn: u8) -> bool;
    /// BLAKE3 of the partial object's first `len` bytes, read back from where it is kept.
    fn object_hash(&mut self, object_id: u64, len: u64) -> io::Result<[u8; 32]>;
    /// Forgets everything about an object.
    fn discard(&mut self, object_id: u64) -> io::Result<()>;
    /// Whether a verified object with this hash is already in the content-addressed cache
    /// (delivered before, or committed just before a crash). The hash is the delivered
    /// one ([`Manifest::delivered_hash`]).
    fn has_cached(&self, _object_hash: &[u8; 32]) -> bool {
        false
    }
    /// Decodes a coded object whose transmitted bytes verified (see [`crate::codec`]) into
    /// the bytes to deliver, kept beside it until the commit. The default store holds no
    /// bases and decodes nothing.
    fn decode_object(
        &mut self,
        _object_id: u64,
        _compression: &Compression,
        _opened: Option<&crate::confidential::Opening>,
    ) -> Result<(), DecodeFailure> {
        Err(DecodeFailure::Refused(Refusal::new(RefusalCode::Undecodable, "this store does not decode")))
    }
}

/// Why [`ReceptionStore::decode_object`] delivered nothing.
#[derive(Debug)]
pub enum DecodeFailure {
    /// The payload cannot be delivered by this county, whatever it retries.
    Refused(Refusal),
    /// Storage failed (a full disk, say): retried later.
    Io(io::Error),
}

/// The refusal a decode error stands for, or the I/O error to retry on.
pub fn decode_failure(error: crate::codec::DecodeError) -> DecodeFailure {
    match error {
        crate::codec::DecodeError::Write(error) => DecodeFailure::Io(error),
        other => DecodeFailure::Refused(Refusal::new(RefusalCode::Undecodable, other.to_string())),
    }
}

/// Why a coded object cannot even begin here, if it cannot: a patch whose base is not in
/// the cache (or too large to hold in memory).
pub fn begin_refusal(store: &dyn ReceptionStore, manifest: &Manifest) -> Option<Refusal> {
    let base_hash = manifest.base_hash()?;
    if !store.has_cached(&base_hash) {
        return Some(Refusal::new(RefusalCode::NoBase, format!("base {} is not in the cache", hex::encode(&base_hash[..8]))));
    }
    if manifest.delivered_size() > DELTA_BASE_BYTES_MAX {
        return Some(Refusal::new(
            RefusalCode::Undecodable,
            format!("patch result of {} bytes is over the limit", manifest.delivered_size()),
        ));
    }
    None
}

/// What `store` holds of an object, for resuming it after a restart. `object_hash` is the
/// hash its kept manifest names (the machine verifies the manifest again before it counts).
pub fn held(store: &dyn ReceptionStore, object_id: u64, object_hash: &[u8; 32]) -> Held {
    let mut held = Held { in_cache: store.has_cached(object_hash), ..Held::default() };
    for sbn in 0..=u8::MAX {
        if store.block_written(object_id, sbn) {
            held.verified.push(sbn);
        } else {
            let kept = store.symbol_count(object_id, sbn);
            if kept > 0 {
                held.kept.push((sbn, kept));
            }
        }
    }
    held
}

/// Carries out one request against `store`, with full fidelity (real decoding and hashes).
/// Returns the completion to hand back to the machine, if the request has one.
pub fn execute(request: StoreRequest, store: &mut dyn ReceptionStore) -> Option<StoreCompletion> {
    match request {
        StoreRequest::BeginObject { manifest, signed_manifest } => {
            let object_id = manifest.object_id;
            if store.has_cached(&manifest.delivered_hash()) {
                return Some(StoreCompletion::AlreadyCached { object_id });
            }
            if let Some(refusal) = begin_refusal(store, &manifest) {
                return Some(StoreCompletion::BeginRefused { object_id, refusal });
            }
            Some(match store.begin_object(&manifest, &signed_manifest) {
                Ok(()) => StoreCompletion::Begun { object_id },
                Err(e) => {
                    StoreCompletion::BeginFailed { object_id, storage_full: e.kind() == io::ErrorKind::StorageFull, error: e.to_string() }
                }
            })
        }
        StoreRequest::AppendSymbol { object_id, sbn, esi, symbol } => {
            let why = match store.add_symbol(object_id, sbn, esi, &symbol) {
                Ok(true) => return None,
                Ok(false) => NotKept::Duplicate,
                Err(error) => NotKept::Failed(error.to_string()),
            };
            Some(StoreCompletion::SymbolNotKept { object_id, sbn, esi, why })
        }
        StoreRequest::DecodeBlock { object_id, oti, sbn, expected_hash, unverified, .. } => {
            let outcome = decode_block(store, object_id, &oti, sbn, expected_hash, unverified)
                .unwrap_or_else(|e| DecodeOutcome::Failed(e.to_string()));
            Some(StoreCompletion::BlockDecoded { object_id, sbn, outcome })
        }
        StoreRequest::VerifyObject { object_id, size_bytes, expected_hash, compression, opened } => {
            let outcome = match store.object_hash(object_id, size_bytes) {
                Ok(hash) if hash == expected_hash && compression == Compression::None => VerifyOutcome::Verified,
                Ok(hash) if hash == expected_hash => match store.decode_object(object_id, &compression, opened.as_deref()) {
                    Ok(()) => VerifyOutcome::Verified,
                    Err(DecodeFailure::Refused(refusal)) => match store.discard(object_id) {
                        Ok(()) => VerifyOutcome::Refused(refusal),
                        Err(error) => VerifyOutcome::Failed(error.to_string()),
                    },
                    Err(DecodeFailure::Io(error)) => VerifyOutcome::Failed(error.to_string()),
                },
                Ok(_) => match store.discard(object_id) {
                    Ok(()) => VerifyOutcome::Mismatch,
                    Err(error) => VerifyOutcome::Failed(error.to_string()),
                },
                Err(error) => VerifyOutcome::Failed(error.to_string()),
            };
            Some(StoreCompletion::ObjectVerified { object_id, outcome })
        }
        StoreRequest::Discard { object_id } => {
            store.discard(object_id).err().map(|e| StoreCompletion::DiscardFailed { object_id, error: e.to_string() })
        }
    }
}

fn decode_block(
    store: &mut dyn ReceptionStore,
    object_id: u64,
    oti: &Oti,
    sbn: u8,
    expected_hash: [u8; 32],
    unverified: Vec<(u32, Vec<u8>)>,
) -> io::Result<DecodeOutcome> {
    let Some(block) = fec::blocks(oti).into_iter().find(|b| b.sbn == sbn) else {
        return Ok(DecodeOutcome::Failed(format!("block {sbn} is not in the object")));
    };
    let mut symbols = store.symbols(object_id, sbn)?;
    let symbols_readable = symbols.len() as u32;
    let with_unverified = !unverified.is_empty();
    symbols.extend(unverified.into_iter().filter(|(esi, _)| !symbols.iter().any(|(kept, _)| kept == esi)).collect::<Vec<_>>());
    let Ok(data) = fec::decode_block(oti, sbn, symbols) else {
        return Ok(DecodeOutcome::NotYet { symbols_readable });
    };
    if fec::block_hash(&data) != expected_hash && with_unverified {
        return Ok(DecodeOutcome::UnverifiedRejected);
    }
    if fec::block_hash(&data) != expected_hash {
        store.clear_block(object_id, sbn)?;
        return Ok(DecodeOutcome::Poisoned);
    }
    store.write_block(object_id, sbn, block.offset, &data)?;
    store.clear_block(object_id, sbn)?;
    Ok(DecodeOutcome::Verified)
}

/// Counting fidelity's executor for one request: nothing is kept, a block "decodes" with
/// the RFC 6330 section 5.6 success probability for the symbols counted (failure
/// 0.01 * 0.01^(n - K) for n >= K), drawn from `draw` (a uniform number in [0, 1)), and an
/// object verifies once all its blocks have.
pub fn execute_counting(request: StoreRequest, draw: impl FnOnce() -> f64) -> Option<StoreCompletion> {
    match request {
        StoreRequest::BeginObject { manifest, .. } => Some(StoreCompletion::Begun { object_id: manifest.object_id }),
        StoreRequest::AppendSymbol { .. } | StoreRequest::Discard { .. } => None,
        StoreRequest::DecodeBlock { object_id, oti, sbn, symbols_counted, .. } => {
            let source_symbols = fec::blocks(&oti).get(usize::from(sbn)).map_or(u32::MAX, |b| b.source_symbols);
            let outcome = if symbols_counted >= source_symbols && draw() >= decode_failure_probability(symbols_counted - source_symbols) {
                DecodeOutcome::Verified
            } else {
                DecodeOutcome::NotYet { symbols_readable: symbols_counted }
            };
            Some(StoreCompletion::BlockDecoded { object_id, sbn, outcome })
        }
        StoreRequest::VerifyObject { object_id, .. } => {
            Some(StoreCompletion::ObjectVerified { object_id, outcome: VerifyOutcome::Verified })
        }
    }
}

/// RFC 6330 section 5.6: the chance that K + `overhead` distinct symbols fail to decode.
pub fn decode_failure_probability(overhead: u32) -> f64 {
    0.01 * 0.01f64.powi(overhead.min(16) as i32)
}

/// A [`ReceptionStore`] in memory, for tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    symbols: HashMap<(u64, u8), BTreeMap<u32, Vec<u8>>>,
    objects: HashMap<u64, Vec<u8>>,
    written: HashMap<u64, Vec<u8>>,
    decoded: HashMap<u64, Vec<u8>>,
}

impl MemoryStore {
    /// The assembled bytes of an object, if any block was written.
    pub fn object(&self, object_id: u64) -> Option<&[u8]> {
        self.objects.get(&object_id).map(Vec::as_slice)
    }

    /// The bytes to deliver: the decoded ones of a coded object, else the assembled ones.
    pub fn delivered(&self, object_id: u64) -> Option<&[u8]> {
        self.decoded.get(&object_id).or_else(|| self.objects.get(&object_id)).map(Vec::as_slice)
    }
}

impl ReceptionStore for MemoryStore {
    fn begin_object(&mut self, _manifest: &Manifest, _signed_manifest: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn add_symbol(&mut self, object_id: u64, sbn: u8, esi: u32, symbol: &[u8]) -> io::Result<bool> {
        let block = self.symbols.entry((object_id, sbn)).or_default();
        if block.contains_key(&esi) {
            return Ok(false);
        }
        block.insert(esi, symbol.to_vec());
        Ok(true)
    }

    fn symbol_count(&self, object_id: u64, sbn: u8) -> u32 {
        self.symbols.get(&(object_id, sbn)).map_or(0, |b| b.len() as u32)
    }

    fn symbols(&mut self, object_id: u64, sbn: u8) -> io::Result<Vec<(u32, Vec<u8>)>> {
        Ok(self.symbols.get(&(object_id, sbn)).map(|b| b.iter().map(|(e, s)| (*e, s.clone())).collect()).unwrap_or_default())
    }

    fn clear_block(&mut self, object_id: u64, sbn: u8) -> io::Result<()> {
        self.symbols.remove(&(object_id, sbn));
        Ok(())
    }

    fn write_block(&mut self, object_id: u64, sbn: u8, offset: u64, data: &[u8]) -> io::Result<()> {
        let object = self.objects.entry(object_id).or_default();
        let end = offset as usize + data.len();
        if object.len() < end {
            object.resize(end, 0);
        }
        object[offset as usize..end].copy_from_slice(data);
        self.written.entry(object_id).or_default().push(sbn);
        Ok(())
    }

    fn block_written(&self, object_id: u64, sbn: u8) -> bool {
        self.written.get(&object_id).is_some_and(|w| w.contains(&sbn))
    }

    fn object_hash(&mut self, object_id: u64, len: u64) -> io::Result<[u8; 32]> {
        let object = self.objects.get(&object_id).map(Vec::as_slice).unwrap_or_default();
        let len = (len as usize).min(object.len());
        Ok(*blake3::hash(&object[..len]).as_bytes())
    }

    fn discard(&mut self, object_id: u64) -> io::Result<()> {
        self.symbols.retain(|(id, _), _| *id != object_id);
        self.objects.remove(&object_id);
        self.written.remove(&object_id);
        self.decoded.remove(&object_id);
        Ok(())
    }

    fn decode_object(
        &mut self,
        object_id: u64,
        compression: &Compression,
        _opened: Option<&crate::confidential::Opening>,
    ) -> Result<(), DecodeFailure> {
        // No cache, so no bases, and no sealed objects: only whole frames decode here.
        let Compression::Zstd(delivered) = compression else {
            return Err(DecodeFailure::Refused(Refusal::new(RefusalCode::NoBase, "the memory store holds no bases")));
        };
        let aired = self.objects.get(&object_id).map(Vec::as_slice).unwrap_or_default();
        let mut out = Vec::new();
        crate::codec::decode(&mut &aired[..], None, delivered.size_bytes, &delivered.hash, &mut out).map_err(decode_failure)?;
        self.decoded.insert(object_id, out);
        Ok(())
    }
}

/// Carries out every request the machine has queued, synchronously and in order, against
/// `store`, handing each completion back, until none is left: the executor of tests and
/// benchmarks.
pub fn drain(reception: &mut crate::reception::Reception, store: &mut dyn ReceptionStore) {
    while let Some(request) = reception.poll_request() {
        if let Some(completion) = execute(request, store) {
            reception.handle_completion(completion);
        }
    }
}
