//! Turns a queued payload into a signed manifest and a block source for the broadcast
//! machine: chooses the OTI, hashes every source block and the whole payload.
//!
//! That is whole-file work (seconds for a 4 GB payload), so it runs on worker threads
//! ([`Preparers`]), never on the datapath's pacing thread: the datapath hands a worker a
//! [`Prepare`] request and takes a typed [`Prepared`] completion back, without waiting.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use rand::SeedableRng;

use satcast_protocol::broadcast::{BlockSource, Checkpoint, Delivery, NewObject, Priority};
use satcast_protocol::codec;
use satcast_protocol::confidential;
use satcast_protocol::fec::{self, Block, BlockEncoder, Oti};
use satcast_protocol::key_tree::{KeyTree, SecretKey};
use satcast_protocol::manifest::{Compression, Delivered, Manifest};
use satcast_protocol::trust::{SignedManifest, SigningKey};
use satcast_protocol::uplink_node::Resume;
use thiserror::Error;

use crate::bases::Bases;
use crate::queue::{Job, QueueError, aired_path};

/// Blocks up to this size are read and encoded on the caller's (pacing) thread when first
/// needed: 1 MiB encodes in a few milliseconds, and a small emergency notice then airs
/// without waiting on another thread.
pub const ENCODE_INLINE_BYTES_MAX: u64 = 1024 * 1024;
/// Block bytes a source builds encoders for ahead of the machine (asked of its encoding
/// thread, or built and not taken yet): one interleaving window, so the next window's
/// encoders are ready when the current one ends. The machine holds the current window's
/// encoders besides, so an airing object holds at most two windows of encoders.
pub const ENCODE_AHEAD_BYTES_MAX: u64 = satcast_protocol::broadcast::INTERLEAVE_BYTES_MAX;

/// Preparations running at once, one worker thread each. The last free worker is kept for
/// emergency jobs (see [`Preparers::request`]), so an emergency notice never waits behind
/// the hashing of a large file.
pub const PREPARATIONS_MAX: usize = 2;

/// Largest coded plaintext of a confidential object: it is sealed in memory, block by block
/// of the FEC layout (policy documents and personal-data rolls are far smaller; a software
/// image that must be confidential is refused with this number instead of exhausting memory).
pub const SEALED_PLAIN_BYTES_MAX: u64 = 256 << 20;

/// Why a payload could not be prepared for airing.
#[derive(Debug, Error)]
pub enum PrepareError {
    /// The payload could not be read.
    #[error("cannot read payload {path}: {source}")]
    Read {
        /// The payload file.
        path: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The job file is invalid.
    #[error(transparent)]
    Job(#[from] QueueError),
    /// The payload cannot be FEC-encoded (empty, or too large).
    #[error("cannot encode payload: {0}")]
    Fec(#[from] fec::FecError),
    /// A confidential object could not be sealed (nobody enrolled is targeted, too large...).
    #[error("cannot seal the confidential object: {0}")]
    Seal(String),
    /// The manifest is invalid (name, targets...).
    #[error("invalid manifest: {0}")]
    Manifest(#[from] satcast_protocol::manifest::ManifestError),
    /// The stored signed manifest of an interrupted broadcast cannot be read back.
    #[error("stored manifest is unreadable: {0}")]
    Stored(String),
    /// The uplink's index could not be read (the record of a broadcast to reopen).
    #[error(transparent)]
    Index(#[from] satcast_store::IndexError),
    /// An operator cancelled the job while it was being prepared.
    #[error("cancelled while being prepared")]
    Cancelled,
    /// The job left the queue before it was prepared (finished or cancelled meanwhile).
    #[error("the job is no longer queued")]
    Gone,
    /// The preparation failed unexpectedly (a bug): the job is not aired.
    #[error("preparation failed unexpectedly: {0}")]
    Panicked(String),
}

/// A request to a preparation worker: make one queued job ready to air (hash and sign a
/// new one; reopen an interrupted or re-aired one), as the uplink node decided.
#[derive(Debug)]
pub struct Prepare {
    /// The job.
    pub job: Job,
    /// Feedback targets or a carousel.
    pub delivery: Delivery,
    /// How to open it.
    pub resume: Resume,
    /// The key that signs a new manifest: the current one when the request is made.
    pub signing_key: Arc<SigningKey>,
    /// Set by the datapath to stop the preparation early: the job was cancelled.
    pub cancel: Arc<AtomicBool>,
}

/// A worker's answer to one [`Prepare`].
#[derive(Debug)]
pub struct Prepared {
    /// The job, as requested.
    pub job: Job,
    /// The broadcast ready to hand to the broadcast machine, or why there is none.
    pub outcome: Result<NewObject, PrepareError>,
}

/// The preparation workers: [`PREPARATIONS_MAX`] threads taking [`Prepare`] requests and
/// answering each with one [`Prepared`]. Handing a request over never blocks the datapath:
/// it goes only to a free worker.
#[derive(Debug)]
pub struct Preparers {
    requests: SyncSender<Prepare>,
    /// Requests handed over whose answer the datapath has not taken yet.
    in_flight: usize,
}

impl Preparers {
    /// Starts the workers; each runs `work` on the requests it takes and gives the datapath
    /// the answer through `answer`, which returns false once the datapath is gone. The
    /// datapath calls [`Preparers::answered`] as it takes each answer.
    pub fn start<W, A>(work: W, answer: A) -> io::Result<Preparers>
    where
        W: Fn(&Prepare) -> Result<NewObject, PrepareError> + Send + Sync + 'static,
        A: Fn(Prepared) -> bool + Send + Sync + 'static,
    {
        let (requests, incoming) = sync_channel::<Prepare>(PREPARATIONS_MAX);
        let incoming = Arc::new(Mutex::new(incoming));
        let (work, answer) = (Arc::new(work), Arc::new(answer));
        for worker in 0..PREPARATIONS_MAX {
            let (incoming, answer, work) = (incoming.clone(), answer.clone(), work.clone());
            std::thread::Builder::new().name(format!("prepare-{worker}")).spawn(move || {
                loop {
                    // The lock is held only while waiting for a request, one worker at a time.
                    let request = match incoming.lock() {
                        Ok(incoming) => incoming.recv(),
                        Err(_) => return,
                    };
                    // The datapath is gone: so are the workers.
                    let Ok(request) = request else { return };
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&request))).unwrap_or_else(|panic| {
                        let why = panic.downcast_ref::<&str>().map(|s| (*s).to_owned()).or_else(|| panic.downcast_ref::<String>().cloned());
                        Err(PrepareError::Panicked(why.unwrap_or_default()))
                    });
                    if !answer(Prepared { job: request.job, outcome }) {
                        return;
                    }
                }
            })?;
        }
        Ok(Preparers { requests, in_flight: 0 })
    }

    /// Hands `request` to a free worker. A job that is not an emergency never takes the last
    /// free worker. Gives the request back when no worker may take it now.
    pub fn request(&mut self, request: Prepare, emergency: bool) -> Result<(), Box<Prepare>> {
        let free = PREPARATIONS_MAX - self.in_flight;
        if free == 0 || (free == 1 && !emergency) {
            return Err(Box::new(request));
        }
        self.requests.try_send(request).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(r) | std::sync::mpsc::TrySendError::Disconnected(r) => Box::new(r),
        })?;
        self.in_flight += 1;
        Ok(())
    }

    /// Counts one answer as taken by the datapath: its worker is free again.
    pub fn answered(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }
}

/// A confidential object as aired: the ciphertext written to `aired`, its layout, the
/// section for the manifest and the public name.
struct SealedObject {
    oti: Oti,
    section: satcast_protocol::confidential::Confidential,
    pseudonym: String,
}

/// Seals the coded plaintext at `coded` (coded as `inner`) for the job's targets, under a
/// fresh content key (docs/protocol.md 8.5), into `aired` (temporary file, fsync, rename).
fn seal(
    job: &Job,
    tree: &KeyTree,
    coded: &Path,
    aired: &Path,
    inner: Compression,
    symbol_size: u16,
    block_bytes_max: u64,
) -> Result<SealedObject, PrepareError> {
    let read_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| PrepareError::Read { path, source }
    };
    let plain_size = File::open(coded).and_then(|f| f.metadata()).map_err(read_err(coded))?.len();
    if plain_size > SEALED_PLAIN_BYTES_MAX {
        return Err(PrepareError::Seal(format!("{plain_size} bytes after coding, more than {SEALED_PLAIN_BYTES_MAX}")));
    }
    let plain = std::fs::read(coded).map_err(read_err(coded))?;
    let object_id = job.object_id()?;
    let kind = job.kind()?;
    let seal_err = |e: confidential::ConfidentialError| PrepareError::Seal(e.to_string());
    let oti = confidential::sealed_oti(plain.len() as u64, symbol_size, block_bytes_max).map_err(seal_err)?;
    let mut rng = rand::rngs::StdRng::try_from_os_rng().map_err(|e| PrepareError::Seal(format!("no randomness: {e}")))?;
    let key = SecretKey::generate(&mut rng);
    let secrets = confidential::Secrets {
        name: job.name.clone(),
        plain_size: plain.len() as u64,
        plain_hash: *blake3::hash(&plain).as_bytes(),
        compression: inner,
    };
    // The section first: a job no enrolled county could read is refused before any writing.
    let section = confidential::seal_section(&mut rng, tree, object_id, &job.targets, &key, &secrets).map_err(seal_err)?;
    let ciphertext = confidential::seal_object(&key, object_id, &oti, &plain).map_err(seal_err)?;
    drop(plain);
    let tmp = aired.with_extension("sealed.tmp");
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(&ciphertext)?;
        f.sync_all()
    });
    written.map_err(read_err(&tmp))?;
    // A compressed copy at `aired` is replaced by its sealed form: only the ciphertext airs.
    std::fs::rename(&tmp, aired).map_err(read_err(aired))?;
    Ok(SealedObject { oti, section, pseudonym: confidential::pseudonym(tree.name_key(), kind, &job.name) })
}

/// Rebuilds an interrupted broadcast from its stored signed manifest, so counties see the
/// same manifest and keep what they already have. A coded payload airs from its coded copy
/// beside the payload, made by [`prepare`].
pub fn resume(
    signed_manifest: Vec<u8>,
    payload: &Path,
    delivery: Delivery,
    checkpoint: Option<Checkpoint>,
) -> Result<NewObject, PrepareError> {
    let signed = SignedManifest::from_bytes(&signed_manifest).map_err(|e| PrepareError::Stored(e.to_string()))?;
    let manifest = Manifest::from_bytes(&signed.manifest).map_err(|e| PrepareError::Stored(e.to_string()))?;
    let aired = if manifest.compression == Compression::None { payload.to_owned() } else { aired_path(payload) };
    let file = File::open(&aired).map_err(|source| PrepareError::Read { path: aired.display().to_string(), source })?;
    if file.metadata().map_err(|source| PrepareError::Read { path: aired.display().to_string(), source })?.len() != manifest.size_bytes {
        return Err(PrepareError::Stored(format!("{} is not the size its manifest says", aired.display())));
    }
    Ok(new_object(manifest, signed_manifest, file, delivery, checkpoint))
}

/// A broadcast of normal priority with no schedule; the daemon sets those from the job.
fn new_object(manifest: Manifest, signed_manifest: Vec<u8>, file: File, delivery: Delivery, resume: Option<Checkpoint>) -> NewObject {
    NewObject {
        manifest,
        signed_manifest,
        source: Box::new(FileSource::new(file)),
        priority: Priority::Normal,
        not_before: None,
        deadline: None,
        delivery,
        resume,
    }
}

/// Reads block bytes from the payload file with positioned reads, and builds the FEC
/// encoders of large blocks on a thread of its own, ahead of the broadcast machine: reading
/// and encoding a 16 MiB block takes 50 to 100 ms, too long for the pacing thread.
#[derive(Debug)]
pub struct FileSource {
    file: Arc<File>,
    /// The encoding thread and what is asked of it; started when a large block is first needed.
    encoding: Option<Encoding>,
}

/// The encoding thread of one source.
#[derive(Debug)]
struct Encoding {
    requests: SyncSender<(Oti, Block)>,
    built: Receiver<(u8, io::Result<BlockEncoder>)>,
    /// Blocks asked of the thread and not back yet, with their sizes.
    asked: HashMap<u8, u64>,
    /// Encoders back from the thread and not yet taken by the machine, with their sizes.
    ready: HashMap<u8, (u64, io::Result<BlockEncoder>)>,
}

impl FileSource {
    /// A source reading `file`.
    pub fn new(file: File) -> FileSource {
        FileSource { file: Arc::new(file), encoding: None }
    }
}

fn read_and_encode(file: &File, oti: &Oti, block: Block) -> io::Result<BlockEncoder> {
    let mut data = vec![0u8; block.len as usize];
    file.read_exact_at(&mut data, block.offset)?;
    BlockEncoder::new(oti, block.sbn, &data).map_err(io::Error::other)
}

impl Encoding {
    fn start(file: Arc<File>) -> io::Result<Encoding> {
        // Room for every block of an object, so neither side ever waits on the other.
        let capacity = usize::from(fec::SOURCE_BLOCKS_MAX) + 1;
        let (requests, incoming) = sync_channel::<(Oti, Block)>(capacity);
        let (done, built) = sync_channel(capacity);
        std::thread::Builder::new().name("encode".into()).spawn(move || {
            while let Ok((oti, block)) = incoming.recv() {
                // The source is gone (the broadcast ended): stop.
                if done.send((block.sbn, read_and_encode(&file, &oti, block))).is_err() {
                    return;
                }
            }
        })?;
        Ok(Encoding { requests, built, asked: HashMap::new(), ready: HashMap::new() })
    }

    /// Block bytes asked of the thread or built and not taken.
    fn ahead_bytes(&self) -> u64 {
        self.asked.values().sum::<u64>() + self.ready.values().map(|(len, _)| len).sum::<u64>()
    }
}

impl BlockSource for FileSource {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn encoder(&mut self, oti: &Oti, block: Block, next: &[Block]) -> io::Result<Option<BlockEncoder>> {
        if block.len <= ENCODE_INLINE_BYTES_MAX {
            return read_and_encode(&self.file, oti, block).map(Some);
        }
        let encoding = match &mut self.encoding {
            Some(encoding) => encoding,
            None => self.encoding.insert(Encoding::start(self.file.clone())?),
        };
        while let Ok((sbn, built)) = encoding.built.try_recv() {
            if let Some(len) = encoding.asked.remove(&sbn) {
                encoding.ready.insert(sbn, (len, built));
            }
        }
        // What the machine will not ask for (a new round, a cancelled one) is dropped.
        encoding.ready.retain(|sbn, _| *sbn == block.sbn || next.iter().any(|b| b.sbn == *sbn));
        let taken = encoding.ready.remove(&block.sbn).map(|(_, built)| built);
        // Ask for this block (if not built yet), then for those after it, as far as the
        // budget allows; beyond it only when nothing else is ahead (a block larger than
        // the budget).
        let wanted = taken.is_none().then_some(block).into_iter().chain(next.iter().copied());
        for ahead in wanted.filter(|b| b.len > ENCODE_INLINE_BYTES_MAX) {
            if encoding.asked.contains_key(&ahead.sbn) || encoding.ready.contains_key(&ahead.sbn) {
                continue;
            }
            let spent = encoding.ahead_bytes();
            if spent > 0 && spent + ahead.len > ENCODE_AHEAD_BYTES_MAX {
                break;
            }
            if encoding.requests.try_send((*oti, ahead)).is_err() {
                break;
            }
            encoding.asked.insert(ahead.sbn, ahead.len);
        }
        taken.transpose()
    }
}

/// How [`prepare`] codes a payload for the air.
#[derive(Debug, Clone, Copy)]
pub enum Coding<'a> {
    /// As it is (tests of the air path).
    Plain,
    /// Compressed when it pays.
    Compress,
    /// Compressed when it pays, or a patch against the kept base of its (kind, name) when
    /// that is smaller still.
    Delta(&'a Bases),
}

/// What the coding chose, with the coded bytes' length.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Chosen {
    compression: Compression,
    aired_bytes: u64,
}

/// Codes `payload` (`size_bytes` long, BLAKE3 `hash`) into its coded copy at `aired` and
/// says how; `Compression::None` (no copy) when nothing pays.
fn code_payload(
    job: &Job,
    payload: &Path,
    size_bytes: u64,
    hash: [u8; 32],
    aired: &Path,
    coding: Coding<'_>,
) -> Result<Chosen, PrepareError> {
    let none = Chosen { compression: Compression::None, aired_bytes: size_bytes };
    if matches!(coding, Coding::Plain) || size_bytes < codec::COMPRESS_BYTES_MIN {
        return Ok(none);
    }
    let kind = job.kind()?;
    let read_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| PrepareError::Read { path, source }
    };
    let delivered = Delivered { size_bytes, hash };
    let tmp = aired.with_extension("aired.tmp");
    let level = codec::level_for(kind, size_bytes);
    let open = || File::open(payload).map(io::BufReader::new).map_err(read_err(payload));
    // A fast probe first: random or already compressed bytes are not worth seconds a MB.
    let mut chosen = none.clone();
    if codec::worth_compressing(&mut open()?, size_bytes, level).map_err(read_err(payload))? {
        let mut output = io::BufWriter::new(File::create(&tmp).map_err(read_err(&tmp))?);
        let compressed = codec::compress(&mut open()?, size_bytes, level, &mut output).map_err(read_err(&tmp))?;
        output.flush().map_err(read_err(&tmp))?;
        chosen = Chosen { compression: Compression::Zstd(delivered), aired_bytes: compressed };
    }
    if let Coding::Delta(bases) = coding {
        if let Some(patch) = patch_against_base(bases, kind, job, payload, size_bytes, hash, level)? {
            if patch.aired_bytes < chosen.aired_bytes {
                std::fs::write(&tmp, &patch.bytes).map_err(read_err(&tmp))?;
                chosen = Chosen { compression: patch.compression, aired_bytes: patch.aired_bytes };
            }
        }
    }
    if !codec::pays(chosen.aired_bytes, size_bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Ok(none);
    }
    File::open(&tmp).and_then(|f| f.sync_all()).map_err(read_err(&tmp))?;
    std::fs::rename(&tmp, aired).map_err(read_err(aired))?;
    Ok(chosen)
}

struct Patch {
    bytes: Vec<u8>,
    compression: Compression,
    aired_bytes: u64,
}

/// A patch of `payload` against the kept base of (kind, name), if there is a usable one: an
/// older version, within [`codec::DELTA_BASE_BYTES_MAX`], whose bytes still match its hash.
fn patch_against_base(
    bases: &Bases,
    kind: satcast_protocol::manifest::Kind,
    job: &Job,
    payload: &Path,
    size_bytes: u64,
    hash: [u8; 32],
    level: i32,
) -> Result<Option<Patch>, PrepareError> {
    let Some((base, base_path)) = bases.latest(kind, &job.name) else { return Ok(None) };
    let Some(base_hash) = hex::decode(&base.hash).ok().and_then(|h| <[u8; 32]>::try_from(h).ok()) else { return Ok(None) };
    if base.version >= job.version || base_hash == hash || size_bytes > codec::DELTA_BASE_BYTES_MAX {
        return Ok(None);
    }
    let read_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| PrepareError::Read { path, source }
    };
    let base_bytes = std::fs::read(&base_path).map_err(read_err(&base_path))?;
    // A base whose bytes changed on disk would make a patch no county can apply.
    if blake3::hash(&base_bytes).as_bytes() != &base_hash {
        tracing::warn!(kind = %kind, name = %job.name, "kept base fails its hash; airing without a patch");
        return Ok(None);
    }
    let new_bytes = std::fs::read(payload).map_err(read_err(payload))?;
    let Ok(bytes) = codec::make_patch(&base_bytes, &new_bytes, level) else { return Ok(None) };
    let aired_bytes = bytes.len() as u64;
    let compression = Compression::ZstdPatch { base_hash, delivered: Delivered { size_bytes, hash } };
    Ok(Some(Patch { bytes, compression, aired_bytes }))
}

/// Builds, signs and wraps one queued job for the broadcast machine: codes the payload as
/// `coding` allows (see [`Coding`]), hashes what goes on the air block by block, signs.
/// Stops early, with [`PrepareError::Cancelled`], once `cancel` is set.
#[allow(clippy::too_many_arguments)] // each argument is a distinct setting; a struct would only rename them
pub fn prepare(
    job: &Job,
    payload: &Path,
    symbol_size: u16,
    block_bytes_max: u64,
    signing_key: &SigningKey,
    delivery: Delivery,
    now_unix_secs: u64,
    lifetime_secs: u64,
    cancel: &AtomicBool,
    coding: Coding<'_>,
    sealing: Option<&KeyTree>,
) -> Result<NewObject, PrepareError> {
    let payload_err = |source| PrepareError::Read { path: payload.display().to_string(), source };
    let delivered_hash = {
        let mut hasher = blake3::Hasher::new();
        let mut file = File::open(payload).map_err(payload_err)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(PrepareError::Cancelled);
            }
            let n = file.read(&mut buf).map_err(payload_err)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        *hasher.finalize().as_bytes()
    };
    let delivered_size = File::open(payload).and_then(|f| f.metadata()).map_err(payload_err)?.len();
    let aired = aired_path(payload);
    let chosen = code_payload(job, payload, delivered_size, delivered_hash, &aired, coding)?;
    if cancel.load(Ordering::Relaxed) {
        return Err(PrepareError::Cancelled);
    }
    let coded = if chosen.compression == Compression::None { payload.to_owned() } else { aired.clone() };
    let (name, compression, aired, oti) = match sealing {
        None => {
            let size_bytes = File::open(&coded).and_then(|f| f.metadata()).map_err(payload_err)?.len();
            let oti = Oti::new_for_object(size_bytes, Oti::symbol_size_for(size_bytes, symbol_size), block_bytes_max)?;
            (job.name.clone(), chosen.compression, coded, oti)
        }
        Some(tree) => {
            let sealed = seal(job, tree, &coded, &aired, chosen.compression, symbol_size, block_bytes_max)?;
            (sealed.pseudonym, Compression::Sealed(Box::new(sealed.section)), aired, sealed.oti)
        }
    };
    let read_err = |source| PrepareError::Read { path: aired.display().to_string(), source };
    let mut file = File::open(&aired).map_err(read_err)?;
    let size_bytes = file.metadata().map_err(read_err)?.len();
    let mut object_hasher = blake3::Hasher::new();
    let mut block_hashes = Vec::new();
    for block in fec::blocks(&oti) {
        // Checked per block (at most 64 MiB of reading and hashing), so a cancel takes effect
        // within a fraction of a second.
        if cancel.load(Ordering::Relaxed) {
            return Err(PrepareError::Cancelled);
        }
        let mut data = vec![0u8; block.len as usize];
        file.read_exact(&mut data).map_err(read_err)?;
        object_hasher.update(&data);
        block_hashes.push(fec::block_hash(&data));
    }
    let manifest = Manifest {
        object_id: job.object_id()?,
        kind: job.kind()?,
        name,
        version: job.version,
        size_bytes,
        compression,
        oti: oti.encode(),
        object_hash: *object_hasher.finalize().as_bytes(),
        block_hashes,
        targets: job.targets.clone(),
        created_unix_secs: now_unix_secs,
        expires_unix_secs: now_unix_secs + lifetime_secs,
    };
    let signed_manifest = signing_key.sign_manifest(&manifest)?.to_bytes();
    // The file read for the hashes is read again from the start by the broadcast.
    let file = File::open(&aired).map_err(read_err)?;
    Ok(new_object(manifest, signed_manifest, file, delivery, None))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use rand::SeedableRng;
    use satcast_protocol::broadcast::AirPlan;
    use satcast_protocol::manifest::Kind;
    use satcast_protocol::trust::RootKey;

    use super::*;

    pub(super) fn job(object_id: &str, priority: &str) -> Job {
        Job {
            object_id: object_id.into(),
            kind: "software".into(),
            name: "agent.bin".into(),
            version: 1,
            targets: vec!["41".into()],
            queued_unix_secs: 1_800_000_000,
            feedback: false,
            priority: priority.into(),
            not_before_unix_secs: None,
            deadline_unix_secs: None,
            confidential: None,
        }
    }

    pub(super) fn signing_key() -> SigningKey {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let root = RootKey::generate(&mut rng);
        SigningKey::generate(&mut rng, &root, 1, 1_799_999_000, 1_800_100_000)
    }

    #[test]
    fn the_last_free_worker_is_kept_for_an_emergency() {
        // Each preparation holds its worker until the test lets it go.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = Mutex::new(held);
        let (answer, answers) = sync_channel(PREPARATIONS_MAX);
        let mut preparers = Preparers::start(
            move |_| {
                let _ = held.lock().map(|held| held.recv());
                Err(PrepareError::Gone)
            },
            move |done| answer.send(done).is_ok(),
        )
        .expect("start");
        let key = Arc::new(signing_key());
        let request = |id: &str, priority: &str| Prepare {
            job: job(id, priority),
            delivery: Delivery::Carousel(AirPlan { target_loss: 0.1, passes: 1 }),
            resume: Resume::Fresh,
            signing_key: key.clone(),
            cancel: Arc::new(AtomicBool::new(false)),
        };
        assert!(preparers.request(request("00000000000000b1", "bulk"), false).is_ok());
        let refused = preparers.request(request("00000000000000b2", "bulk"), false).expect_err("the last worker is kept");
        assert_eq!(refused.job.object_id, "00000000000000b2");
        assert!(preparers.request(request("00000000000000e1", "emergency"), true).is_ok(), "an emergency takes it");
        assert!(preparers.request(request("00000000000000e2", "emergency"), true).is_err(), "every worker is busy");
        for _ in 0..PREPARATIONS_MAX {
            release.send(()).expect("release");
        }
        // The bound only says how long to wait before calling the test failed.
        let mut answered: Vec<String> = (0..PREPARATIONS_MAX)
            .filter_map(|_| answers.recv_timeout(Duration::from_secs(30)).ok())
            .map(|done| done.job.object_id)
            .collect();
        answered.sort();
        for _ in &answered {
            preparers.answered();
        }
        assert_eq!(answered, ["00000000000000b1", "00000000000000e1"]);
        assert!(preparers.request(request("00000000000000b2", "bulk"), false).is_ok(), "free again");
        release.send(()).expect("release");
    }

    #[test]
    fn a_preparation_stops_once_cancelled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let payload = dir.path().join("agent.bin");
        std::fs::File::create(&payload).and_then(|mut f| f.write_all(&vec![7u8; 3_000_000])).expect("payload");
        let plan = Delivery::Carousel(AirPlan { target_loss: 0.1, passes: 1 });
        let key = signing_key();
        let prepare_with = |cancel: bool| {
            prepare(
                &job("00000000000000c1", "bulk"),
                &payload,
                1436,
                1 << 20,
                &key,
                plan.clone(),
                1_800_000_000,
                3600,
                &AtomicBool::new(cancel),
                Coding::Plain,
                None,
            )
        };
        assert!(matches!(prepare_with(true), Err(PrepareError::Cancelled)));
        let object = prepare_with(false).expect("prepared");
        assert_eq!(object.manifest.size_bytes, 3_000_000);
    }

    #[test]
    fn a_table_airs_compressed_then_its_next_version_as_a_patch_and_a_reair_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bases = Bases::open(dir.path()).expect("bases");
        let plan = Delivery::Carousel(AirPlan { target_loss: 0.1, passes: 1 });
        let key = signing_key();
        let table: String = (0..5000).map(|i| format!("{:06},县{},{}\n", 110_000 + i, i % 97, i % 3)).collect();
        let payload = dir.path().join("t.payload");
        let mut job = Job { kind: "codetable".into(), name: "divisions.csv".into(), ..job("00000000000000d1", "normal") };
        let air = |job: &Job, bytes: &[u8], coding: Coding<'_>| {
            std::fs::write(&payload, bytes).expect("payload");
            prepare(job, &payload, 1436, 1 << 20, &key, plan.clone(), 1_800_000_000, 3600, &AtomicBool::new(false), coding, None)
                .expect("prepared")
        };
        let v1 = air(&job, table.as_bytes(), Coding::Delta(&bases));
        assert!(matches!(v1.manifest.compression, Compression::Zstd(_)), "{:?}", v1.manifest.compression);
        assert!(v1.manifest.size_bytes * 4 < table.len() as u64, "{} aired for {}", v1.manifest.size_bytes, table.len());
        assert_eq!(v1.manifest.delivered_hash(), *blake3::hash(table.as_bytes()).as_bytes());
        bases.record(Kind::CodeTable, "divisions.csv", 1, &payload, &v1.manifest.delivered_hash()).expect("base");

        let v2 = table.replace("110100,县", "110100,更名县");
        job.version = 2;
        let patched = air(&job, v2.as_bytes(), Coding::Delta(&bases));
        assert_eq!(patched.manifest.base_hash(), Some(v1.manifest.delivered_hash()));
        assert!(patched.manifest.size_bytes < 200, "a one-line change costs {} bytes", patched.manifest.size_bytes);
        let aired = std::fs::read(aired_path(&payload)).expect("aired copy");
        let mut out = Vec::new();
        codec::decode(&mut &aired[..], Some(table.as_bytes()), v2.len() as u64, &patched.manifest.delivered_hash(), &mut out)
            .expect("applies");
        assert_eq!(out, v2.as_bytes());

        let whole = air(&job, v2.as_bytes(), Coding::Compress);
        assert!(matches!(whole.manifest.compression, Compression::Zstd(_)), "a re-air goes whole");
        assert_eq!(whole.manifest.delivered_hash(), patched.manifest.delivered_hash(), "the same object to counties");
        let mut noise = vec![0u8; 10_000];
        blake3::Hasher::new().finalize_xof().fill(&mut noise);
        assert_eq!(air(&job, &noise, Coding::Compress).manifest.compression, Compression::None, "incompressible goes as it is");
    }

    #[test]
    fn a_file_source_builds_large_blocks_ahead_on_its_own_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.bin");
        let bytes: Vec<u8> = (0..7_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).expect("payload");
        let oti = Oti::new_for_object(bytes.len() as u64, 1436, 3 << 20).expect("oti");
        let blocks = fec::blocks(&oti);
        assert!(blocks.len() >= 3 && blocks.iter().all(|b| b.len > ENCODE_INLINE_BYTES_MAX));
        let mut source = FileSource::new(File::open(&path).expect("open"));
        // The first ask starts the thread on this block and the ones after it.
        assert!(source.encoder(&oti, blocks[0], &blocks[1..]).expect("ask").is_none());
        for (i, block) in blocks.iter().enumerate() {
            // Asked again as the machine would, until built; the bound only ends a hung test.
            let mut built = None;
            for _ in 0..3000 {
                built = source.encoder(&oti, *block, &blocks[i + 1..]).expect("ask");
                if built.is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let built = built.expect("built within 30 s");
            let data = &bytes[block.offset as usize..(block.offset + block.len) as usize];
            let direct = BlockEncoder::new(&oti, block.sbn, data).expect("direct");
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let esi = block.source_symbols + 3;
            built.symbol_into(esi, &mut a).expect("symbol");
            direct.symbol_into(esi, &mut b).expect("symbol");
            assert_eq!(a, b, "block {} encodes as if built in place", block.sbn);
        }
        let encoding = source.encoding.as_ref().expect("a thread was started");
        assert!(encoding.asked.is_empty() && encoding.ready.is_empty(), "nothing left over");
    }
}

#[cfg(test)]
mod sealed_tests {
    use std::io::Write;

    use rand::SeedableRng;
    use satcast_protocol::broadcast::AirPlan;
    use satcast_protocol::confidential::Opened;
    use satcast_protocol::key_tree::{CountySecret, KeyRing, Node};

    use super::tests::{job, signing_key};
    use super::*;

    /// A confidential policy job for province 41 with feedback.
    fn sealed_job(object_id: &str, name: &str, version: u64) -> Job {
        Job { kind: "policy".into(), name: name.into(), version, feedback: true, confidential: Some(true), ..job(object_id, "normal") }
    }

    #[test]
    fn a_confidential_job_airs_ciphertext_under_a_pseudonym_that_only_the_targeted_province_opens() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(14);
        let mut tree = KeyTree::new(&mut rng);
        let mut ring = |code: &str, tree: &mut KeyTree| {
            let secret = CountySecret::generate(&mut rng);
            let node = Node::county(code).expect("code");
            tree.enroll(&mut rng, node, secret.public()).expect("enrols");
            KeyRing::new(node, secret)
        };
        let mut henan = ring("410102", &mut tree);
        let mut hubei = ring("420101", &mut tree);
        let wraps = tree.edge_wraps(&mut rand::rngs::StdRng::seed_from_u64(15)).expect("wraps");
        henan.learn(&wraps);
        hubei.learn(&wraps);

        let dir = tempfile::tempdir().expect("tempdir");
        let payload = dir.path().join("payload");
        let plain: Vec<u8> = (0..20_000u32).flat_map(|i| format!("身份证 4101{i:06} 低保 {i}\n").into_bytes()).collect();
        File::create(&payload).and_then(|mut f| f.write_all(&plain)).expect("payload");
        let job = sealed_job("00000000000000c1", "低保名册.csv", 3);
        let key = signing_key();
        let plan = Delivery::Carousel(AirPlan { target_loss: 0.1, passes: 1 });
        let cancel = AtomicBool::new(false);
        let object = prepare(&job, &payload, 1024, 64 * 1024, &key, plan, 1_800_000_000, 3600, &cancel, Coding::Compress, Some(&tree))
            .expect("prepares");
        let manifest = object.manifest;
        assert_eq!(Manifest::from_bytes(&manifest.to_bytes()).expect("round trip"), manifest);
        assert!(manifest.name.starts_with("sealed-") && !manifest.name.contains("低保"), "{}", manifest.name);
        let Compression::Sealed(section) = &manifest.compression else { panic!("not sealed: {:?}", manifest.compression) };

        // What airs: the hashes cover it, and it holds neither the text nor its compressed form.
        let aired = std::fs::read(aired_path(&payload)).expect("aired");
        assert_eq!(aired.len() as u64, manifest.size_bytes);
        assert_eq!(blake3::hash(&aired).as_bytes(), &manifest.object_hash);
        assert!(!aired.windows(8).any(|w| w == &plain[..8]), "plaintext on the air");
        let oti = Oti::decode(&manifest.oti).expect("oti");
        for (block, hash) in fec::blocks(&oti).iter().zip(&manifest.block_hashes) {
            assert_eq!(&fec::block_hash(&aired[block.offset as usize..(block.offset + block.len) as usize]), hash);
        }

        assert_eq!(confidential::open_section(&hubei, manifest.object_id, section), Ok(Opened::NotTargeted), "another province");
        let Ok(Opened::Readable(content_key, secrets)) = confidential::open_section(&henan, manifest.object_id, section) else {
            panic!("the targeted county cannot open it");
        };
        assert_eq!(secrets.name, "低保名册.csv");
        assert!(matches!(secrets.compression, Compression::Zstd(_)), "compressed before sealing: {:?}", secrets.compression);
        let mut opened = Vec::new();
        for block in fec::blocks(&oti) {
            let mut bytes = aired[block.offset as usize..(block.offset + block.len) as usize].to_vec();
            confidential::open_block(&content_key, manifest.object_id, &oti, block.sbn, &mut bytes).expect("opens");
            opened.extend_from_slice(&bytes);
        }
        opened.truncate(secrets.plain_size as usize);
        assert_eq!(blake3::hash(&opened).as_bytes(), &secrets.plain_hash);
        let Compression::Zstd(delivered) = secrets.compression else { unreachable!() };
        let mut out = Vec::new();
        codec::decode(&mut opened.as_slice(), None, delivered.size_bytes, &delivered.hash, &mut out).expect("decodes");
        assert_eq!(out, plain, "byte-exact");
    }

    #[test]
    fn a_confidential_job_no_enrolled_county_could_read_is_refused() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(16);
        let tree = KeyTree::new(&mut rng);
        let dir = tempfile::tempdir().expect("tempdir");
        let payload = dir.path().join("payload");
        std::fs::write(&payload, b"draft").expect("payload");
        let job = sealed_job("00000000000000c2", "draft.txt", 1);
        let key = signing_key();
        let plan = Delivery::Carousel(AirPlan { target_loss: 0.1, passes: 1 });
        let refused =
            prepare(&job, &payload, 1024, 64 * 1024, &key, plan, 1_800_000_000, 3600, &AtomicBool::new(false), Coding::Plain, Some(&tree));
        assert!(matches!(refused, Err(PrepareError::Seal(_))), "{:?}", refused.err());
    }
}
