//! Turns a queued payload into a signed manifest and a block source for the broadcast
//! machine: chooses the OTI, hashes every source block and the whole payload.
//!
//! That is whole-file work (seconds for a 4 GB payload), so it runs on worker threads
//! ([`Preparers`]), never on the datapath's pacing thread: the datapath hands a worker a
//! [`Prepare`] request and takes a typed [`Prepared`] completion back, without waiting.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use satcast_protocol::broadcast::{BlockSource, Checkpoint, Delivery, NewObject, Priority};
use satcast_protocol::fec::{self, Block, BlockEncoder, Oti};
use satcast_protocol::manifest::{Compression, Manifest};
use satcast_protocol::trust::{SignedManifest, SigningKey};
use satcast_protocol::uplink_node::Resume;
use thiserror::Error;

use crate::queue::{Job, QueueError};

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

/// Rebuilds an interrupted broadcast from its stored signed manifest, so counties see the
/// same manifest and keep what they already have.
pub fn resume(
    signed_manifest: Vec<u8>,
    payload: &Path,
    delivery: Delivery,
    checkpoint: Option<Checkpoint>,
) -> Result<NewObject, PrepareError> {
    let signed = SignedManifest::from_bytes(&signed_manifest).map_err(|e| PrepareError::Stored(e.to_string()))?;
    let manifest = Manifest::from_bytes(&signed.manifest).map_err(|e| PrepareError::Stored(e.to_string()))?;
    let file = File::open(payload).map_err(|source| PrepareError::Read { path: payload.display().to_string(), source })?;
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

/// Builds, signs and wraps one queued job for the broadcast machine. Stops early, with
/// [`PrepareError::Cancelled`], once `cancel` is set.
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
) -> Result<NewObject, PrepareError> {
    let read_err = |source| PrepareError::Read { path: payload.display().to_string(), source };
    let mut file = File::open(payload).map_err(read_err)?;
    let size_bytes = file.metadata().map_err(read_err)?.len();
    let oti = Oti::new_for_object(size_bytes, symbol_size, block_bytes_max)?;
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
        name: job.name.clone(),
        version: job.version,
        size_bytes,
        compression: Compression::None,
        oti: oti.encode(),
        object_hash: *object_hasher.finalize().as_bytes(),
        block_hashes,
        targets: job.targets.clone(),
        created_unix_secs: now_unix_secs,
        expires_unix_secs: now_unix_secs + lifetime_secs,
    };
    let signed_manifest = signing_key.sign_manifest(&manifest)?.to_bytes();
    Ok(new_object(manifest, signed_manifest, file, delivery, None))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use rand::SeedableRng;
    use satcast_protocol::broadcast::AirPlan;
    use satcast_protocol::trust::RootKey;

    use super::*;

    fn job(object_id: &str, priority: &str) -> Job {
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
        }
    }

    fn signing_key() -> SigningKey {
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
            )
        };
        assert!(matches!(prepare_with(true), Err(PrepareError::Cancelled)));
        let object = prepare_with(false).expect("prepared");
        assert_eq!(object.manifest.size_bytes, 3_000_000);
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
