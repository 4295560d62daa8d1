//! Turns a queued payload into a signed manifest and a block source for the broadcast
//! machine: chooses the OTI, hashes every source block and the whole payload.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use satcast_protocol::broadcast::{BlockSource, Checkpoint, Delivery, NewObject, Priority};
use satcast_protocol::fec::{self, Oti};
use satcast_protocol::manifest::{Compression, Manifest};
use satcast_protocol::trust::{SignedManifest, SigningKey};
use thiserror::Error;

use crate::queue::{Job, QueueError};

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
        source: Box::new(FileSource(file)),
        priority: Priority::Normal,
        not_before: None,
        deadline: None,
        delivery,
        resume,
    }
}

/// Reads block bytes from the payload file with positioned reads.
#[derive(Debug)]
pub struct FileSource(pub File);

impl BlockSource for FileSource {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
}

/// Builds, signs and wraps one queued job for the broadcast machine.
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
) -> Result<NewObject, PrepareError> {
    let read_err = |source| PrepareError::Read { path: payload.display().to_string(), source };
    let mut file = File::open(payload).map_err(read_err)?;
    let size_bytes = file.metadata().map_err(read_err)?.len();
    let oti = Oti::new_for_object(size_bytes, symbol_size, block_bytes_max)?;
    let mut object_hasher = blake3::Hasher::new();
    let mut block_hashes = Vec::new();
    for block in fec::blocks(&oti) {
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
