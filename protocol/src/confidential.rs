//! Confidential objects: a fresh content key per object, XChaCha20-Poly1305 per source
//! block, and the sealed part of the manifest (the real name, the delivered size and hash).
//!
//! The ciphertext is laid out on the FEC's own blocks: source block `sbn` of the aired
//! object holds exactly one AEAD segment, the plaintext segment followed by its 16-byte tag.
//! A county decrypts each block on its own after FEC decoding, so a poisoned block costs
//! only that block, and the manifest's block hashes (over the ciphertext, the bytes aired)
//! are checked before any decryption. The nonce and associated data bind the object id, the
//! block number and the block count, so blocks cannot be swapped, moved to another object
//! or cut off the end.
//!
//! The plaintext is padded with zeros so the aired length is a whole number of symbols: an
//! outsider learns the size to the symbol (the FEC needs it), not to the byte.

use bincode::{Decode, Encode};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

use crate::fec::{FecError, Oti};
use crate::key_tree::{KeyRing, KeyTree, KeyTreeError, NONCE_LEN, Node, Sealed, SecretKey, Wrapped};
use crate::manifest::{Compression, Kind, NAME_BYTES_MAX, TARGETS_MAX, decode_canonical, encode_canonical};

/// Bytes of the AEAD tag closing each block.
pub const TAG_LEN: usize = 16;
/// Content-key wraps in one manifest: a target list of [`TARGETS_MAX`] prefixes needs at
/// most one each.
pub const CONTENT_WRAPS_MAX: usize = TARGETS_MAX;
/// Largest sealed metadata: the encoding of [`Secrets`] and its tag.
pub const SEALED_SECRETS_BYTES_MAX: usize = 8 + NAME_BYTES_MAX + 8 + 32 + 4 + 8 + 32 + 32 + TAG_LEN;
/// Largest canonical encoding of a [`Confidential`] section.
pub const CONFIDENTIAL_BYTES_MAX: usize = 8 + CONTENT_WRAPS_MAX * crate::key_tree::SEALED_BYTES_MAX + 8 + SEALED_SECRETS_BYTES_MAX;
/// Bytes of the name digest in a pseudonym.
pub const PSEUDONYM_DIGEST_LEN: usize = 12;

const BLOCK_DOMAIN: u8 = 0;
const SECRETS_DOMAIN: u8 = 1;
const BLOCK_AAD: &[u8] = b"satcast/v1/block\0";
const SECRETS_AAD: &[u8] = b"satcast/v1/secrets\0";
const PSEUDONYM_CONTEXT: &str = "satcast/v1 pseudonym of a confidential name";

/// Why a confidential object could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfidentialError {
    /// The FEC layout refused the sealed length.
    #[error("layout: {0}")]
    Fec(#[from] FecError),
    /// A block shorter than its tag: the symbol size is too small for a sealed object.
    #[error("block {sbn} of {len} bytes cannot hold a {TAG_LEN}-byte tag")]
    BlockTooSmall {
        /// The block.
        sbn: u8,
        /// Its length.
        len: u64,
    },
    /// The block failed authentication: wrong key, or bytes that are not the uplink's.
    #[error("block {sbn} does not decrypt under the content key")]
    Block {
        /// The block.
        sbn: u8,
    },
    /// The sealed metadata failed authentication or decoding.
    #[error("the sealed name and hash do not open under the content key")]
    Secrets,
    /// The key tree refused.
    #[error("{0}")]
    Tree(#[from] KeyTreeError),
    /// More content-key wraps than [`CONTENT_WRAPS_MAX`].
    #[error("{0} content-key wraps, more than {CONTENT_WRAPS_MAX}")]
    TooManyWraps(usize),
    /// No enrolled county is targeted: nobody could read the object.
    #[error("no county with a key is targeted")]
    NobodyTargeted,
}

/// What the public manifest of a confidential object hides, sealed under the content key.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Secrets {
    /// The real file name.
    pub name: String,
    /// The plaintext's length before padding (the bytes the FEC blocks carry after
    /// decryption, before any decompression).
    pub plain_size: u64,
    /// BLAKE3 of the plaintext (before padding).
    pub plain_hash: [u8; 32],
    /// How the plaintext is coded (zstd or not); the delivered size and hash live here.
    pub compression: Compression,
}

/// The confidential section of a manifest: the content key's wraps and the sealed secrets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Confidential {
    /// The content key sealed under each node of the cover of the targets.
    pub wraps: Vec<Sealed>,
    /// [`Secrets`] sealed under the content key.
    pub sealed_secrets: Vec<u8>,
}

impl Confidential {
    /// The canonical encoding, as carried in the manifest.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_canonical::<Self, CONFIDENTIAL_BYTES_MAX>(self)
    }

    /// Decodes [`Confidential::to_bytes`], refusing more than [`CONTENT_WRAPS_MAX`] wraps.
    pub fn from_bytes(bytes: &[u8]) -> Result<Confidential, ConfidentialError> {
        let section: Confidential = decode_canonical::<Self, CONFIDENTIAL_BYTES_MAX>(bytes).map_err(|_| ConfidentialError::Secrets)?;
        if section.wraps.len() > CONTENT_WRAPS_MAX {
            return Err(ConfidentialError::TooManyWraps(section.wraps.len()));
        }
        Ok(section)
    }
}

fn nonce(domain: u8, object_id: u64, sbn: u8) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[0] = domain;
    nonce[1..9].copy_from_slice(&object_id.to_be_bytes());
    nonce[9] = sbn;
    nonce
}

fn block_aad(object_id: u64, sbn: u8, source_blocks: u8) -> Vec<u8> {
    let mut aad = BLOCK_AAD.to_vec();
    aad.extend_from_slice(&object_id.to_be_bytes());
    aad.push(sbn);
    aad.push(source_blocks);
    aad
}

/// The OTI of the sealed object for `plain_len` plaintext bytes: the fewest whole symbols
/// holding the plaintext and one tag per block. Symbol size and block size as for a clear
/// object ([`Oti::symbol_size_for`], [`Oti::new_for_object`]).
pub fn sealed_oti(plain_len: u64, symbol_size: u16, block_bytes_max: u64) -> Result<Oti, ConfidentialError> {
    let tag = TAG_LEN as u64;
    // An empty plaintext still needs a block longer than its tag.
    let plain_len = plain_len.max(1);
    let symbol_size = Oti::symbol_size_for(plain_len + tag, symbol_size);
    let t = u64::from(symbol_size);
    let mut blocks = 1u64;
    // More blocks need more tags, which may need more blocks: the count only grows and is
    // bounded by 255, so this ends; in practice after one or two rounds.
    loop {
        let length = (plain_len + tag * blocks).div_ceil(t).max(1) * t;
        let oti = Oti::new_for_object(length, symbol_size, block_bytes_max)?;
        if u64::from(oti.source_blocks) <= blocks {
            for block in crate::fec::blocks(&oti) {
                if block.len <= tag {
                    return Err(ConfidentialError::BlockTooSmall { sbn: block.sbn, len: block.len });
                }
            }
            return Ok(oti);
        }
        blocks = u64::from(oti.source_blocks);
    }
}

/// Seals `plain` (padded with zeros) into the object described by `oti` (from
/// [`sealed_oti`]): each source block is its segment encrypted, then its tag.
pub fn seal_object(key: &SecretKey, object_id: u64, oti: &Oti, plain: &[u8]) -> Result<Vec<u8>, ConfidentialError> {
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    let blocks = crate::fec::blocks(oti);
    let mut out = Vec::with_capacity(oti.transfer_length as usize);
    let mut taken = 0usize;
    for block in &blocks {
        let segment =
            (block.len as usize).checked_sub(TAG_LEN).ok_or(ConfidentialError::BlockTooSmall { sbn: block.sbn, len: block.len })?;
        let start = out.len();
        let end = (taken + segment).min(plain.len());
        out.extend_from_slice(&plain[taken.min(plain.len())..end]);
        out.resize(start + segment, 0);
        taken += segment;
        let aad = block_aad(object_id, block.sbn, oti.source_blocks);
        let tag = cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce(BLOCK_DOMAIN, object_id, block.sbn)), &aad, &mut out[start..])
            .map_err(|_| ConfidentialError::Block { sbn: block.sbn })?;
        out.extend_from_slice(&tag);
    }
    if taken < plain.len() {
        // sealed_oti sizes the object for the plaintext; another OTI is a caller's mistake.
        return Err(ConfidentialError::BlockTooSmall { sbn: oti.source_blocks, len: plain.len() as u64 });
    }
    Ok(out)
}

/// Opens one decoded source block in place: checks its tag and leaves the plaintext segment
/// (padding included) in `block`.
pub fn open_block(key: &SecretKey, object_id: u64, oti: &Oti, sbn: u8, block: &mut Vec<u8>) -> Result<(), ConfidentialError> {
    let Some(segment) = block.len().checked_sub(TAG_LEN) else {
        return Err(ConfidentialError::BlockTooSmall { sbn, len: block.len() as u64 });
    };
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    let tag = *Tag::from_slice(&block[segment..]);
    let aad = block_aad(object_id, sbn, oti.source_blocks);
    cipher
        .decrypt_in_place_detached(XNonce::from_slice(&nonce(BLOCK_DOMAIN, object_id, sbn)), &aad, &mut block[..segment], &tag)
        .map_err(|_| ConfidentialError::Block { sbn })?;
    block.truncate(segment);
    Ok(())
}

/// Seals the secrets under the content key.
pub fn seal_secrets(key: &SecretKey, object_id: u64, secrets: &Secrets) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    let mut bytes = encode_canonical::<Secrets, SEALED_SECRETS_BYTES_MAX>(secrets);
    let aad = [SECRETS_AAD, &object_id.to_be_bytes()].concat();
    // In-place encryption into a Vec cannot fail below the AEAD's length limit.
    if let Ok(tag) = cipher.encrypt_in_place_detached(XNonce::from_slice(&nonce(SECRETS_DOMAIN, object_id, 0)), &aad, &mut bytes) {
        bytes.extend_from_slice(&tag);
    }
    bytes
}

/// Opens [`seal_secrets`], checking the name is a safe file name.
pub fn open_secrets(key: &SecretKey, object_id: u64, sealed: &[u8]) -> Result<Secrets, ConfidentialError> {
    if sealed.len() < TAG_LEN || sealed.len() > SEALED_SECRETS_BYTES_MAX {
        return Err(ConfidentialError::Secrets);
    }
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    let (body, tag) = sealed.split_at(sealed.len() - TAG_LEN);
    let mut bytes = body.to_vec();
    let aad = [SECRETS_AAD, &object_id.to_be_bytes()].concat();
    cipher
        .decrypt_in_place_detached(XNonce::from_slice(&nonce(SECRETS_DOMAIN, object_id, 0)), &aad, &mut bytes, Tag::from_slice(tag))
        .map_err(|_| ConfidentialError::Secrets)?;
    let secrets: Secrets = decode_canonical::<Secrets, SEALED_SECRETS_BYTES_MAX>(&bytes).map_err(|_| ConfidentialError::Secrets)?;
    crate::manifest::validate_name(&secrets.name).map_err(|_| ConfidentialError::Secrets)?;
    Ok(secrets)
}

/// The public stand-in for a confidential object's name: stable across versions of the same
/// (kind, name), so rollback protection works on it unchanged, and keyed by a secret of the
/// uplink's, so an outsider cannot test a guessed name against it.
pub fn pseudonym(name_key: &SecretKey, kind: Kind, name: &str) -> String {
    let mut hasher = blake3::Hasher::new_keyed(&blake3::derive_key(PSEUDONYM_CONTEXT, &name_key.0));
    hasher.update(kind.as_str().as_bytes());
    hasher.update(&[0]);
    hasher.update(name.as_bytes());
    format!("sealed-{}", hex::encode(&hasher.finalize().as_bytes()[..PSEUDONYM_DIGEST_LEN]))
}

/// Builds the confidential section for `object_id` aimed at `targets`: the content key
/// sealed under the cover of the targeted enrolled counties, and the secrets sealed under it.
pub fn seal_section(
    rng: &mut impl rand::CryptoRng,
    tree: &KeyTree,
    object_id: u64,
    targets: &[String],
    key: &SecretKey,
    secrets: &Secrets,
) -> Result<Confidential, ConfidentialError> {
    let counties = tree.targeted(targets)?;
    if counties.is_empty() {
        return Err(ConfidentialError::NobodyTargeted);
    }
    let cover = tree.cover(&counties);
    if cover.len() > CONTENT_WRAPS_MAX {
        return Err(ConfidentialError::TooManyWraps(cover.len()));
    }
    let wraps = tree.seal_for(rng, Wrapped::Content { object_id }, key, &cover)?;
    Ok(Confidential { wraps, sealed_secrets: seal_secrets(key, object_id, secrets) })
}

/// What a county needs to decrypt a sealed object it opened: the content key and the
/// secrets (what the plaintext is and how it is coded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    /// The content key.
    pub key: SecretKey,
    /// The sealed secrets, opened.
    pub secrets: Secrets,
}

/// What a county makes of a confidential section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// The content key and the secrets.
    Readable(SecretKey, Box<Secrets>),
    /// Targeted, but a group key of a newer epoch has not arrived yet.
    Pending,
    /// Not for this county.
    NotTargeted,
}

/// Opens the section with a county's key ring.
pub fn open_section(ring: &KeyRing, object_id: u64, section: &Confidential) -> Result<Opened, ConfidentialError> {
    if section.wraps.len() > CONTENT_WRAPS_MAX {
        return Err(ConfidentialError::TooManyWraps(section.wraps.len()));
    }
    match ring.content_key(object_id, &section.wraps) {
        crate::key_tree::Access::Key(key) => {
            let secrets = open_secrets(&key, object_id, &section.sealed_secrets)?;
            Ok(Opened::Readable(key, Box::new(secrets)))
        }
        crate::key_tree::Access::Pending => Ok(Opened::Pending),
        crate::key_tree::Access::NotTargeted => Ok(Opened::NotTargeted),
    }
}

/// Whether `node` is named by any wrap of the section (for operators' listings).
pub fn names(section: &Confidential, node: &Node) -> bool {
    section.wraps.iter().any(|w| w.under == *node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn blocks_open_one_by_one_and_not_elsewhere() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let key = SecretKey::generate(&mut rng);
        let plain: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let oti = sealed_oti(plain.len() as u64, 1024, 64 * 1024).expect("layout");
        assert!(oti.source_blocks > 3);
        assert_eq!(oti.transfer_length % 1024, 0, "whole symbols only");
        let sealed = seal_object(&key, 9, &oti, &plain).expect("seals");
        assert_eq!(sealed.len() as u64, oti.transfer_length);
        let mut opened = Vec::new();
        for block in crate::fec::blocks(&oti) {
            let mut bytes = sealed[block.offset as usize..(block.offset + block.len) as usize].to_vec();
            // Another object id, another block number: refused.
            assert!(open_block(&key, 10, &oti, block.sbn, &mut bytes.clone()).is_err());
            assert!(open_block(&key, 9, &oti, block.sbn.wrapping_add(1), &mut bytes.clone()).is_err());
            open_block(&key, 9, &oti, block.sbn, &mut bytes).expect("opens");
            opened.extend_from_slice(&bytes);
        }
        assert!(opened.len() >= plain.len());
        assert_eq!(&opened[..plain.len()], &plain[..]);
        assert!(opened[plain.len()..].iter().all(|b| *b == 0));
    }

    #[test]
    fn the_documented_bounds_hold() {
        // docs/protocol.md sections 7.4, 8.5 and 11 quote these.
        assert_eq!(SEALED_SECRETS_BYTES_MAX, 380);
        assert_eq!(CONFIDENTIAL_BYTES_MAX, 6604);
        assert_eq!(crate::key_tree::SIGNED_KEY_WRAPS_BYTES_MAX, 10_912);
        assert_eq!(crate::key_tree::wraps_per_datagram(1472), 11);
        let longest = Secrets {
            name: "n".repeat(NAME_BYTES_MAX),
            plain_size: u64::MAX,
            plain_hash: [9; 32],
            compression: Compression::ZstdPatch {
                base_hash: [1; 32],
                delivered: crate::manifest::Delivered { size_bytes: 1, hash: [2; 32] },
            },
        };
        assert_eq!(seal_secrets(&SecretKey([1; 32]), 1, &longest).len(), SEALED_SECRETS_BYTES_MAX);
    }

    #[test]
    fn small_objects_fit_one_symbol() {
        for len in [0u64, 1, 15, 16, 17, 1000, 1420, 1421, 5000] {
            let oti = sealed_oti(len, 1436, 16 << 20).expect("layout");
            let blocks = crate::fec::blocks(&oti);
            let room: u64 = blocks.iter().map(|b| b.len - TAG_LEN as u64).sum();
            assert!(room >= len, "{len}");
            assert!(oti.transfer_length - len < 16 + u64::from(oti.symbol_size) + 4, "{len}: {}", oti.transfer_length);
        }
    }

    #[test]
    fn secrets_open_only_under_their_key_and_object() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(8);
        let key = SecretKey::generate(&mut rng);
        let secrets = Secrets { name: "低保名册.xlsx".into(), plain_size: 5, plain_hash: [3; 32], compression: Compression::None };
        let sealed = seal_secrets(&key, 4, &secrets);
        assert_eq!(open_secrets(&key, 4, &sealed).expect("opens"), secrets);
        assert!(open_secrets(&key, 5, &sealed).is_err());
        assert!(open_secrets(&SecretKey::generate(&mut rng), 4, &sealed).is_err());
        assert!(!sealed.windows(6).any(|w| w == "低保".as_bytes()));
    }

    #[test]
    fn pseudonyms_are_stable_keyed_and_valid_names() {
        let key = SecretKey([1; 32]);
        let a = pseudonym(&key, Kind::Policy, "draft.pdf");
        assert_eq!(a, pseudonym(&key, Kind::Policy, "draft.pdf"));
        assert_ne!(a, pseudonym(&key, Kind::Policy, "draft2.pdf"));
        assert_ne!(a, pseudonym(&SecretKey([2; 32]), Kind::Policy, "draft.pdf"));
        crate::manifest::validate_name(&a).expect("a safe name");
    }
}
