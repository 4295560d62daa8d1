//! Trust: the offline Ed25519 root key, the certificates it issues for online signing keys,
//! signed manifests and signed heartbeats, their verification on receivers, and the
//! one-line text files keys are kept in.
//!
//! The chain is short on purpose (a one-way link cannot negotiate): every signed message
//! carries the certificate of the key that signed it, so a receiver that pins only the
//! root public key can check any message on its own.
//!
//! Every signature covers a distinct context string followed by canonical bytes
//! ([`CERTIFICATE_CONTEXT`], [`MANIFEST_CONTEXT`], [`HEARTBEAT_CONTEXT`]), so a signature
//! over one kind of message can never be replayed as another. Verification uses
//! Ed25519 `verify_strict` (no small-order keys, no malleable signatures).

use std::fmt;

use bincode::{Decode, Encode};
use ed25519_dalek::Signer as _;

use crate::manifest::{CanonicalError, Kind, MANIFEST_BYTES_MAX, Manifest, ManifestError, decode_canonical, encode_canonical};

/// Signature context of a [`CertificateBody`].
pub const CERTIFICATE_CONTEXT: &[u8] = b"satcast/v1/certificate\0";
/// Signature context of a canonical [`Manifest`].
pub const MANIFEST_CONTEXT: &[u8] = b"satcast/v1/manifest\0";
/// Signature context of a [`Heartbeat`].
pub const HEARTBEAT_CONTEXT: &[u8] = b"satcast/v1/heartbeat\0";
/// Signature context of a revocation list (signed by the root key).
pub const REVOCATION_CONTEXT: &[u8] = b"satcast/v1/revocation\0";
/// Signature context of a SYMBOL LIST (wire type 7): the context, the object id (8 bytes,
/// big endian), then the list body before its signature.
pub const SYMBOL_LIST_CONTEXT: &[u8] = b"satcast/v1/symbol-list\0";
/// The most signing-key serials one revocation list names; it must fit one datagram.
pub const REVOKED_SERIALS_MAX: usize = 128;
/// The largest encoded signed revocation list.
pub const SIGNED_REVOCATION_BYTES_MAX: usize = 8 + 8 + 8 + REVOKED_SERIALS_MAX * 8 + 64 + 16;

/// How far a receiver's clock may lag the uplink's: a manifest created, or a key valid
/// from, at most this many seconds after the receiver's `now` is still accepted.
pub const CLOCK_SKEW_MAX_SECS: u64 = 300;
/// Largest canonical [`KeyCertificate`] (it is 120 bytes; the margin costs nothing).
pub const CERTIFICATE_BYTES_MAX: usize = 256;
/// Largest canonical [`SignedManifest`]: the manifest, its length prefix, a certificate
/// and a signature.
pub const SIGNED_MANIFEST_BYTES_MAX: usize = MANIFEST_BYTES_MAX + 8 + CERTIFICATE_BYTES_MAX + 64;
/// The most object ids one heartbeat lists as live; with more airing at once the list is
/// marked incomplete and receivers judge no partial object by it.
pub const LIVE_OBJECTS_MAX: usize = 64;
/// The most (kind, name) entries of one heartbeat's latest-version statement.
pub const LATEST_VERSIONS_MAX: usize = 32;
/// Largest canonical [`SignedHeartbeat`]: 217 bytes with empty lists, plus 8 bytes per
/// live object and 16 per latest version (the margin costs nothing).
pub const SIGNED_HEARTBEAT_BYTES_MAX: usize = 512 + LIVE_OBJECTS_MAX * 8 + LATEST_VERSIONS_MAX * 16;
/// What signing adds to a canonical [`Heartbeat`]: the certificate and the signature.
pub const SIGNED_HEARTBEAT_OVERHEAD_BYTES: usize = 120 + 64;
/// Longest key text accepted by the `from_text` parsers, in bytes, checked before any
/// decoding (a certificate line is about 280 bytes).
pub const KEY_TEXT_BYTES_MAX: usize = 1024;

/// Label of the root secret key text.
pub const ROOT_SECRET_LABEL: &str = "satcast-root-secret-v1";
/// Label of the root public key text.
pub const ROOT_PUBLIC_LABEL: &str = "satcast-root-public-v1";
/// Label of the signing secret key text.
pub const SIGNING_SECRET_LABEL: &str = "satcast-signing-secret-v1";
/// Label of the key certificate text.
pub const CERTIFICATE_LABEL: &str = "satcast-certificate-v1";
/// Label of the network key text.
pub const NETWORK_KEY_LABEL: &str = "satcast-network-key-v1";

/// Why a signed message was not accepted. Each variant is a distinct failure a test
/// produces; receivers log it and drop the message.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The bytes are not a canonical signed message.
    #[error("malformed signed message: {0}")]
    Malformed(#[from] CanonicalError),
    /// The signature verifies but the manifest inside breaks the manifest rules (an
    /// uplink bug, or a compromised signing key).
    #[error("signed manifest is invalid: {0}")]
    InvalidManifest(#[from] ManifestError),
    /// The signing key's certificate is not signed by the pinned root (an unknown key).
    #[error("signing key certificate is not signed by the pinned root key")]
    BadCertificateSignature,
    /// The signing key is not valid yet, even allowing [`CLOCK_SKEW_MAX_SECS`].
    #[error("signing key is valid from {not_before_unix_secs}, now is {now_unix_secs}")]
    KeyNotYetValid {
        /// Start of the key's validity, seconds since the Unix epoch.
        not_before_unix_secs: u64,
        /// The receiver's clock.
        now_unix_secs: u64,
    },
    /// The signing key's validity has ended.
    #[error("signing key expired at {not_after_unix_secs}, now is {now_unix_secs}")]
    KeyExpired {
        /// End of the key's validity, seconds since the Unix epoch.
        not_after_unix_secs: u64,
        /// The receiver's clock.
        now_unix_secs: u64,
    },
    /// The message signature does not verify under the certified key (forged, or the
    /// signature was moved from another message).
    #[error("signature does not verify under the certified signing key")]
    BadSignature,
    /// A revocation list names more serials than fit one datagram.
    #[error("revocation list of {count} serials exceeds {max}", max = REVOKED_SERIALS_MAX)]
    TooManyRevoked {
        /// How many it names.
        count: usize,
    },
    /// The signing key was revoked by the root (its serial is on the revocation list).
    #[error("signing key serial {serial} is revoked")]
    KeyRevoked {
        /// The revoked serial.
        serial: u64,
    },
    /// The manifest has expired.
    #[error("manifest expired at {expires_unix_secs}, now is {now_unix_secs}")]
    ManifestExpired {
        /// The manifest's expiry, seconds since the Unix epoch.
        expires_unix_secs: u64,
        /// The receiver's clock.
        now_unix_secs: u64,
    },
    /// The manifest was created more than [`CLOCK_SKEW_MAX_SECS`] in the future.
    #[error("manifest created at {created_unix_secs}, in the future of now {now_unix_secs}")]
    ManifestFromFuture {
        /// The manifest's creation time, seconds since the Unix epoch.
        created_unix_secs: u64,
        /// The receiver's clock.
        now_unix_secs: u64,
    },
    /// The heartbeat was sent more than [`CLOCK_SKEW_MAX_SECS`] in the future: believing it
    /// would make every genuine heartbeat until then look like a replay.
    #[error("heartbeat sent at {sent_unix_ms} ms, in the future of now {now_unix_secs} s")]
    HeartbeatFromFuture {
        /// The heartbeat's time, milliseconds since the Unix epoch.
        sent_unix_ms: u64,
        /// The receiver's clock.
        now_unix_secs: u64,
    },
    /// The manifest does not target this receiver's division code.
    #[error("manifest does not target this county")]
    NotTargeted,
    /// The manifest is older than the version already accepted for its (kind, name), or
    /// the same version with a different object id (equivocation).
    #[error("rollback: offered version {offered_version}, accepted version {accepted_version}")]
    Rollback {
        /// The version accepted before.
        accepted_version: u64,
        /// The version offered now.
        offered_version: u64,
    },
    /// The uplink's signed heartbeat names a newer version of the manifest's (kind, name):
    /// an older one aired again (by an insider, or an operator who sent the next version
    /// while this one aired) is refused before it is delivered.
    #[error("superseded: offered version {offered_version}, the uplink's latest is version {latest_version}")]
    Superseded {
        /// The newest version the uplink states.
        latest_version: u64,
        /// The version offered.
        offered_version: u64,
    },
}

/// Why a key text line could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum KeyTextError {
    /// The text is longer than [`KEY_TEXT_BYTES_MAX`].
    #[error("key text is {len} bytes, more than {KEY_TEXT_BYTES_MAX}")]
    TooLong {
        /// Length of the text in bytes.
        len: usize,
    },
    /// The text is not one line `<label> <hex>` with the expected label.
    #[error("expected one line \"{expected} <hex>\"")]
    Label {
        /// The label this parser expects.
        expected: &'static str,
    },
    /// The part after the label is not hex.
    #[error("invalid hex: {0}")]
    Hex(#[from] hex::FromHexError),
    /// The decoded key has the wrong length.
    #[error("key is {actual} bytes, expected {expected}")]
    Length {
        /// Expected length in bytes.
        expected: usize,
        /// Decoded length in bytes.
        actual: usize,
    },
    /// The public key is not a usable Ed25519 point.
    #[error("not a valid ed25519 public key")]
    PublicKey,
    /// The certificate bytes are not canonical.
    #[error("certificate: {0}")]
    Certificate(#[from] CanonicalError),
    /// The signing secret does not belong to the key the certificate names.
    #[error("signing secret does not match the certificate's public key")]
    KeyMismatch,
}

/// The offline root key. Its public half is pinned in every receiver's configuration.
pub struct RootKey {
    key: ed25519_dalek::SigningKey,
}

/// The root public key receivers pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub struct RootPublicKey(pub [u8; 32]);

/// What the root key signs about a signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub struct CertificateBody {
    /// The signing key's Ed25519 public key.
    pub public_key: [u8; 32],
    /// Serial number, for rotation and revocation notices.
    pub serial: u64,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before_unix_secs: u64,
    /// End of validity (inclusive), seconds since the Unix epoch.
    pub not_after_unix_secs: u64,
}

/// A signing key's certificate: its body signed by the root key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub struct KeyCertificate {
    /// What is certified.
    pub body: CertificateBody,
    /// Root signature over [`CERTIFICATE_CONTEXT`] followed by the canonical body.
    pub root_signature: [u8; 64],
}

/// The online signing key and its certificate.
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    certificate: KeyCertificate,
}

/// A manifest as broadcast: canonical manifest bytes, the signer's certificate, and the
/// signature.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SignedManifest {
    /// Canonical [`Manifest`] bytes, kept as bytes so the signature covers exactly them.
    pub manifest: Vec<u8>,
    /// Certificate of the signing key.
    pub certificate: KeyCertificate,
    /// Signature over [`MANIFEST_CONTEXT`] followed by `manifest`.
    pub signature: [u8; 64],
}

/// The uplink's periodic statement that it is alive, so a receiver can tell a quiet link
/// from a jammed, frozen or replayed one, and of what it airs now (TUF's timestamp and
/// snapshot roles in one signature): a replayed manifest of a broadcast that ended cannot
/// hold a receiver's partial-object slot, and a superseded version cannot be delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Heartbeat {
    /// Increases by one per heartbeat.
    pub sequence: u64,
    /// The uplink's clock when it sent the heartbeat, milliseconds since the Unix epoch.
    pub uplink_time_unix_ms: u64,
    /// Objects the uplink airs (or holds scheduled) now, at most [`LIVE_OBJECTS_MAX`].
    pub live: Vec<u64>,
    /// `live` names every such object: only then may a receiver conclude that an object
    /// missing from it has ended.
    pub live_complete: bool,
    /// The newest version of every (kind, name) whose older versions' manifests may still
    /// be unexpired, at most [`LATEST_VERSIONS_MAX`]: receivers refuse those older versions.
    pub latest: Vec<LatestVersion>,
}

/// "The newest version of (kind, name) is `version`", in a [`Heartbeat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub struct LatestVersion {
    /// [`name_digest`] of the (kind, name).
    pub name: [u8; 8],
    /// Its newest version.
    pub version: u64,
}

/// Signature context of [`name_digest`] (a hash domain, not a signature).
const NAME_DIGEST_CONTEXT: &[u8] = b"satcast/v1/name\0";

/// Eight bytes naming a (kind, name) in a [`LatestVersion`]: BLAKE3 of a context, the
/// kind's word, a zero byte and the name. Names are the ministry's, not an attacker's, so
/// 64 bits keep collisions out of reach while the list stays small.
pub fn name_digest(kind: Kind, name: &str) -> [u8; 8] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(NAME_DIGEST_CONTEXT);
    hasher.update(kind.as_str().as_bytes());
    hasher.update(&[0]);
    hasher.update(name.as_bytes());
    let mut digest = [0u8; 8];
    digest.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    digest
}

/// A heartbeat with the signer's certificate and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SignedHeartbeat {
    /// What is signed.
    pub heartbeat: Heartbeat,
    /// Certificate of the signing key.
    pub certificate: KeyCertificate,
    /// Signature over [`HEARTBEAT_CONTEXT`] followed by the canonical heartbeat.
    pub signature: [u8; 64],
}

/// The last manifest a receiver accepted for one (kind, name), for rollback protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Accepted {
    /// Its version.
    pub version: u64,
    /// Its object id.
    pub object_id: u64,
}

/// The 32-byte key of the keyed-BLAKE3 tag on every datagram.
#[derive(Clone, PartialEq, Eq)]
pub struct NetworkKey(pub [u8; 32]);

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootKey").field("public", &self.public()).finish_non_exhaustive()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("certificate", &self.certificate).finish_non_exhaustive()
    }
}

impl fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NetworkKey(..)")
    }
}

/// Draws 32 bytes of key material. ed25519-dalek 2 speaks rand_core 0.6, this crate rand
/// 0.9, so keys are made from bytes rather than with dalek's `generate`.
fn secret_bytes(rng: &mut impl rand::CryptoRng) -> [u8; 32] {
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    secret
}

fn signed_message(context: &[u8], body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(context.len() + body.len());
    message.extend_from_slice(context);
    message.extend_from_slice(body);
    message
}

/// Checks `signature` by the certified key over `context` followed by `body`, after the
/// certificate chain to `root` and the key's validity at `now_unix_secs`.
pub(crate) fn verify_context(
    certificate: &KeyCertificate,
    root: &RootPublicKey,
    now_unix_secs: u64,
    context: &[u8],
    body: &[u8],
    signature: &[u8; 64],
) -> Result<(), TrustError> {
    certificate.verify(root, now_unix_secs)?;
    if !verify(&certificate.body.public_key, &signed_message(context, body), signature) {
        return Err(TrustError::BadSignature);
    }
    Ok(())
}

fn verify(public_key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(public_key) else {
        return false;
    };
    key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature)).is_ok()
}

impl RootKey {
    /// Generates a root key. Do this on the offline machine.
    pub fn generate(rng: &mut impl rand::CryptoRng) -> RootKey {
        RootKey { key: ed25519_dalek::SigningKey::from_bytes(&secret_bytes(rng)) }
    }

    /// The public key receivers pin.
    pub fn public(&self) -> RootPublicKey {
        RootPublicKey(self.key.verifying_key().to_bytes())
    }

    /// Certifies `public_key` as a signing key valid from `not_before_unix_secs` to
    /// `not_after_unix_secs` inclusive.
    pub fn issue(&self, public_key: [u8; 32], serial: u64, not_before_unix_secs: u64, not_after_unix_secs: u64) -> KeyCertificate {
        let body = CertificateBody { public_key, serial, not_before_unix_secs, not_after_unix_secs };
        let message = signed_message(CERTIFICATE_CONTEXT, &body.to_bytes());
        KeyCertificate { body, root_signature: self.key.sign(&message).to_bytes() }
    }

    /// The text form: `satcast-root-secret-v1 <64 hex digits>`.
    pub fn to_text(&self) -> String {
        key_text(ROOT_SECRET_LABEL, &self.key.to_bytes())
    }

    /// Parses [`RootKey::to_text`] output.
    pub fn from_text(text: &str) -> Result<RootKey, KeyTextError> {
        let secret = parse_key_text::<32>(ROOT_SECRET_LABEL, text)?;
        Ok(RootKey { key: ed25519_dalek::SigningKey::from_bytes(&secret) })
    }
}

impl RootPublicKey {
    /// The text form: `satcast-root-public-v1 <64 hex digits>`.
    pub fn to_text(&self) -> String {
        key_text(ROOT_PUBLIC_LABEL, &self.0)
    }

    /// Parses [`RootPublicKey::to_text`] output; rejects bytes that are not a usable key.
    pub fn from_text(text: &str) -> Result<RootPublicKey, KeyTextError> {
        let bytes = parse_key_text::<32>(ROOT_PUBLIC_LABEL, text)?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| KeyTextError::PublicKey)?;
        Ok(RootPublicKey(bytes))
    }
}

impl CertificateBody {
    /// The canonical encoding, as signed by the root.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_canonical::<Self, CERTIFICATE_BYTES_MAX>(self)
    }
}

impl KeyCertificate {
    /// The canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_canonical::<Self, CERTIFICATE_BYTES_MAX>(self)
    }

    /// Decodes a canonical encoding. Never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<KeyCertificate, CanonicalError> {
        decode_canonical::<Self, CERTIFICATE_BYTES_MAX>(bytes)
    }

    /// The text form: `satcast-certificate-v1 <hex of the canonical encoding>`.
    pub fn to_text(&self) -> String {
        key_text(CERTIFICATE_LABEL, &self.to_bytes())
    }

    /// Parses [`KeyCertificate::to_text`] output. Does not verify the signature.
    pub fn from_text(text: &str) -> Result<KeyCertificate, KeyTextError> {
        let bytes = parse_hex_text(CERTIFICATE_LABEL, text)?;
        Ok(KeyCertificate::from_bytes(&bytes)?)
    }

    /// Checks that `root` signed this certificate and that it is valid at `now_unix_secs`
    /// (a not-before up to [`CLOCK_SKEW_MAX_SECS`] ahead is tolerated; not-after is not).
    pub fn verify(&self, root: &RootPublicKey, now_unix_secs: u64) -> Result<(), TrustError> {
        let message = signed_message(CERTIFICATE_CONTEXT, &self.body.to_bytes());
        if !verify(&root.0, &message, &self.root_signature) {
            return Err(TrustError::BadCertificateSignature);
        }
        let CertificateBody { not_before_unix_secs, not_after_unix_secs, .. } = self.body;
        if not_before_unix_secs > now_unix_secs.saturating_add(CLOCK_SKEW_MAX_SECS) {
            return Err(TrustError::KeyNotYetValid { not_before_unix_secs, now_unix_secs });
        }
        if now_unix_secs > not_after_unix_secs {
            return Err(TrustError::KeyExpired { not_after_unix_secs, now_unix_secs });
        }
        Ok(())
    }
}

impl SigningKey {
    /// Generates a signing key and has `root` certify it.
    pub fn generate(
        rng: &mut impl rand::CryptoRng,
        root: &RootKey,
        serial: u64,
        not_before_unix_secs: u64,
        not_after_unix_secs: u64,
    ) -> SigningKey {
        let key = ed25519_dalek::SigningKey::from_bytes(&secret_bytes(rng));
        let certificate = root.issue(key.verifying_key().to_bytes(), serial, not_before_unix_secs, not_after_unix_secs);
        SigningKey { key, certificate }
    }

    /// This key's certificate.
    pub fn certificate(&self) -> &KeyCertificate {
        &self.certificate
    }

    /// This key's Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Validates and signs `manifest`. Refuses an invalid manifest, since no receiver would
    /// accept it and the carousel would air it for nothing.
    pub fn sign_manifest(&self, manifest: &Manifest) -> Result<SignedManifest, ManifestError> {
        manifest.validate()?;
        let bytes = manifest.to_bytes();
        let signature = self.key.sign(&signed_message(MANIFEST_CONTEXT, &bytes)).to_bytes();
        Ok(SignedManifest { manifest: bytes, certificate: self.certificate, signature })
    }

    /// Signs `body` under `context` (a context string of its own, such as
    /// [`crate::key_tree::KEY_WRAP_CONTEXT`]), for the signed messages of other modules.
    pub(crate) fn sign_context(&self, context: &[u8], body: &[u8]) -> [u8; 64] {
        self.key.sign(&signed_message(context, body)).to_bytes()
    }

    /// Signs a symbol list of `object_id`: `signed_part` is its body before the signature
    /// ([`crate::wire::symbol_list_signed_part`]).
    pub fn sign_symbol_list(&self, object_id: u64, signed_part: &[u8]) -> [u8; 64] {
        self.key.sign(&symbol_list_message(object_id, signed_part)).to_bytes()
    }

    /// This key's serial (from its certificate): symbol lists name their signer by it.
    pub fn serial(&self) -> u64 {
        self.certificate.body.serial
    }

    /// Signs a heartbeat.
    pub fn sign_heartbeat(&self, heartbeat: Heartbeat) -> SignedHeartbeat {
        let message = signed_message(HEARTBEAT_CONTEXT, &heartbeat.to_bytes());
        let signature = self.key.sign(&message).to_bytes();
        SignedHeartbeat { heartbeat, certificate: self.certificate, signature }
    }

    /// The secret's text form: `satcast-signing-secret-v1 <64 hex digits>`. The
    /// certificate is kept separately ([`KeyCertificate::to_text`]).
    pub fn secret_to_text(&self) -> String {
        key_text(SIGNING_SECRET_LABEL, &self.key.to_bytes())
    }

    /// Rebuilds a signing key from its secret text and certificate text, checking that
    /// they belong together. Does not check the root signature or validity period.
    pub fn from_text(secret_text: &str, certificate_text: &str) -> Result<SigningKey, KeyTextError> {
        let secret = parse_key_text::<32>(SIGNING_SECRET_LABEL, secret_text)?;
        let certificate = KeyCertificate::from_text(certificate_text)?;
        let key = ed25519_dalek::SigningKey::from_bytes(&secret);
        if key.verifying_key().to_bytes() != certificate.body.public_key {
            return Err(KeyTextError::KeyMismatch);
        }
        Ok(SigningKey { key, certificate })
    }
}

impl SignedManifest {
    /// The canonical encoding, as broadcast.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_canonical::<Self, SIGNED_MANIFEST_BYTES_MAX>(self)
    }

    /// Decodes a canonical encoding without verifying anything. Never panics, allocates
    /// at most about [`SIGNED_MANIFEST_BYTES_MAX`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedManifest, CanonicalError> {
        decode_canonical::<Self, SIGNED_MANIFEST_BYTES_MAX>(bytes)
    }

    /// Checks the certificate chain to `root` and the key's validity at `now_unix_secs`,
    /// then the signature, and only then decodes and validates the manifest.
    pub fn verify(&self, root: &RootPublicKey, now_unix_secs: u64) -> Result<Manifest, TrustError> {
        self.certificate.verify(root, now_unix_secs)?;
        let message = signed_message(MANIFEST_CONTEXT, &self.manifest);
        if !verify(&self.certificate.body.public_key, &message, &self.signature) {
            return Err(TrustError::BadSignature);
        }
        Ok(Manifest::from_bytes(&self.manifest)?)
    }
}

/// The root's list of revoked signing keys, cumulative: each new list names every serial
/// revoked so far, with a higher sequence, so a receiver that missed earlier ones catches
/// up from the latest alone.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Revocation {
    /// Grows with every new list; a receiver ignores a list not newer than its own.
    pub sequence: u64,
    /// When the root signed it, seconds since the Unix epoch.
    pub issued_unix_secs: u64,
    /// Revoked signing-key serials.
    pub revoked_serials: Vec<u64>,
}

/// A revocation list signed by the root key (offline), aired on the carousel.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SignedRevocation {
    /// The list.
    pub revocation: Revocation,
    /// Root signature over [`REVOCATION_CONTEXT`] followed by the canonical list.
    pub root_signature: [u8; 64],
}

impl Revocation {
    /// The canonical encoding, as signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_canonical::<Self, SIGNED_REVOCATION_BYTES_MAX>(self)
    }
}

impl RootKey {
    /// Signs a revocation list. More than [`REVOKED_SERIALS_MAX`] serials is an error: the
    /// list must fit one datagram (rotate the root before that many keys are revoked).
    pub fn sign_revocation(&self, revocation: Revocation) -> Result<SignedRevocation, TrustError> {
        if revocation.revoked_serials.len() > REVOKED_SERIALS_MAX {
            return Err(TrustError::TooManyRevoked { count: revocation.revoked_serials.len() });
        }
        let message = signed_message(REVOCATION_CONTEXT, &revocation.to_bytes());
        Ok(SignedRevocation { root_signature: self.key.sign(&message).to_bytes(), revocation })
    }
}

impl SignedRevocation {
    /// The canonical encoding, as broadcast.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_canonical::<Self, SIGNED_REVOCATION_BYTES_MAX>(self)
    }

    /// Decodes a canonical encoding without verifying anything. Never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedRevocation, CanonicalError> {
        decode_canonical::<Self, SIGNED_REVOCATION_BYTES_MAX>(bytes)
    }

    /// Checks the root's signature and the bound on serials.
    pub fn verify(&self, root: &RootPublicKey) -> Result<Revocation, TrustError> {
        if self.revocation.revoked_serials.len() > REVOKED_SERIALS_MAX {
            return Err(TrustError::TooManyRevoked { count: self.revocation.revoked_serials.len() });
        }
        let message = signed_message(REVOCATION_CONTEXT, &self.revocation.to_bytes());
        if !verify(&root.0, &message, &self.root_signature) {
            return Err(TrustError::BadCertificateSignature);
        }
        Ok(self.revocation.clone())
    }
}

/// Decodes and verifies a signed revocation list.
pub fn verify_revocation(bytes: &[u8], root: &RootPublicKey) -> Result<Revocation, TrustError> {
    SignedRevocation::from_bytes(bytes)?.verify(root)
}

/// The serial of the key that signed these signed-manifest bytes, if they decode.
pub fn manifest_signer_serial(bytes: &[u8]) -> Option<u64> {
    SignedManifest::from_bytes(bytes).ok().map(|s| s.certificate.body.serial)
}

/// The serial of the key that signed these signed-heartbeat bytes, if they decode.
pub fn heartbeat_signer_serial(bytes: &[u8]) -> Option<u64> {
    SignedHeartbeat::from_bytes(bytes).ok().map(|s| s.certificate.body.serial)
}

impl Heartbeat {
    /// The canonical encoding, as signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_canonical::<Self, SIGNED_HEARTBEAT_BYTES_MAX>(self)
    }
}

impl SignedHeartbeat {
    /// The canonical encoding, as broadcast.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_canonical::<Self, SIGNED_HEARTBEAT_BYTES_MAX>(self)
    }

    /// Decodes a canonical encoding without verifying anything. Never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedHeartbeat, CanonicalError> {
        decode_canonical::<Self, SIGNED_HEARTBEAT_BYTES_MAX>(bytes)
    }

    /// Checks the heartbeat's time against `now_unix_secs` ([`check_heartbeat_time`], before
    /// any signature), then the certificate chain to `root`, the key's validity and the
    /// signature. Freshness against earlier heartbeats is the receiver's business.
    pub fn verify(&self, root: &RootPublicKey, now_unix_secs: u64) -> Result<Heartbeat, TrustError> {
        check_heartbeat_time(&self.heartbeat, now_unix_secs)?;
        self.certificate.verify(root, now_unix_secs)?;
        let message = signed_message(HEARTBEAT_CONTEXT, &self.heartbeat.to_bytes());
        if !verify(&self.certificate.body.public_key, &message, &self.signature) {
            return Err(TrustError::BadSignature);
        }
        Ok(self.heartbeat.clone())
    }
}

impl NetworkKey {
    /// Draws a fresh network key.
    pub fn generate(rng: &mut impl rand::CryptoRng) -> NetworkKey {
        NetworkKey(secret_bytes(rng))
    }

    /// The text form: `satcast-network-key-v1 <64 hex digits>`.
    pub fn to_text(&self) -> String {
        key_text(NETWORK_KEY_LABEL, &self.0)
    }

    /// Parses [`NetworkKey::to_text`] output.
    pub fn from_text(text: &str) -> Result<NetworkKey, KeyTextError> {
        Ok(NetworkKey(parse_key_text::<32>(NETWORK_KEY_LABEL, text)?))
    }
}

/// Step one of accepting a manifest: decode `bytes` as a [`SignedManifest`] and verify it
/// against the pinned `root` at `now_unix_secs` ([`SignedManifest::verify`]). The result is
/// authentic but not yet accepted: look up the [`Accepted`] state for its (kind, name) and
/// call [`check_acceptance`].
pub fn verify_signed(bytes: &[u8], root: &RootPublicKey, now_unix_secs: u64) -> Result<Manifest, TrustError> {
    SignedManifest::from_bytes(bytes)?.verify(root, now_unix_secs)
}

fn symbol_list_message(object_id: u64, signed_part: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SYMBOL_LIST_CONTEXT.len() + 8 + signed_part.len());
    message.extend_from_slice(SYMBOL_LIST_CONTEXT);
    message.extend_from_slice(&object_id.to_be_bytes());
    message.extend_from_slice(signed_part);
    message
}

/// Whether `signature` is the signature of `public_key` over a symbol list of `object_id`
/// whose body before the signature is `signed_part`. The caller took `public_key` from a
/// certificate it verified under the pinned root (a manifest's or a heartbeat's) and checks
/// revocation and validity itself.
pub fn verify_symbol_list(public_key: &[u8; 32], object_id: u64, signed_part: &[u8], signature: &[u8]) -> bool {
    let Ok(signature) = <[u8; 64]>::try_from(signature) else { return false };
    verify(public_key, &symbol_list_message(object_id, signed_part), &signature)
}

/// Whether `bytes` are a manifest the pinned `root`'s chain signed, whatever the time and
/// the revocation list say. Never a reason to accept: only to tell the uplink why a genuine
/// manifest for this county was refused (a revoked key, a key out of its validity by this
/// county's clock), where a forgery deserves no answer.
pub fn verify_genuine(bytes: &[u8], root: &RootPublicKey) -> Result<Manifest, TrustError> {
    let signed = SignedManifest::from_bytes(bytes)?;
    let message = signed_message(CERTIFICATE_CONTEXT, &signed.certificate.body.to_bytes());
    if !verify(&root.0, &message, &signed.certificate.root_signature) {
        return Err(TrustError::BadCertificateSignature);
    }
    let message = signed_message(MANIFEST_CONTEXT, &signed.manifest);
    if !verify(&signed.certificate.body.public_key, &message, &signed.signature) {
        return Err(TrustError::BadSignature);
    }
    Ok(Manifest::from_bytes(&signed.manifest)?)
}

/// Step two of accepting a manifest: it is within its lifetime at `now_unix_secs` (created
/// at most [`CLOCK_SKEW_MAX_SECS`] ahead, not yet expired), it targets `county_code`, and
/// it is not older than `accepted`, the last manifest accepted for its (kind, name). The
/// same version with the same object id passes: the carousel repeats broadcasts.
pub fn check_acceptance(manifest: &Manifest, county_code: &str, now_unix_secs: u64, accepted: Option<Accepted>) -> Result<(), TrustError> {
    if now_unix_secs >= manifest.expires_unix_secs {
        return Err(TrustError::ManifestExpired { expires_unix_secs: manifest.expires_unix_secs, now_unix_secs });
    }
    if manifest.created_unix_secs > now_unix_secs.saturating_add(CLOCK_SKEW_MAX_SECS) {
        return Err(TrustError::ManifestFromFuture { created_unix_secs: manifest.created_unix_secs, now_unix_secs });
    }
    if !manifest.targets_code(county_code) {
        return Err(TrustError::NotTargeted);
    }
    if let Some(accepted) = accepted {
        let older = manifest.version < accepted.version;
        let equivocation = manifest.version == accepted.version && manifest.object_id != accepted.object_id;
        if older || equivocation {
            return Err(TrustError::Rollback { accepted_version: accepted.version, offered_version: manifest.version });
        }
    }
    Ok(())
}

/// Both steps: [`verify_signed`] then [`check_acceptance`]. Use the two steps when the
/// [`Accepted`] state must be looked up by the manifest's (kind, name).
pub fn verify_manifest(
    bytes: &[u8],
    root: &RootPublicKey,
    county_code: &str,
    now_unix_secs: u64,
    accepted: Option<Accepted>,
) -> Result<Manifest, TrustError> {
    let manifest = verify_signed(bytes, root, now_unix_secs)?;
    check_acceptance(&manifest, county_code, now_unix_secs, accepted)?;
    Ok(manifest)
}

/// A heartbeat may be dated at most [`CLOCK_SKEW_MAX_SECS`] after the receiver's clock, as a
/// manifest may be created: one dated further ahead (a signing key misused, an uplink clock
/// set wrong) is refused, so it cannot make the genuine heartbeats that follow look old.
/// Costs no signature check.
pub fn check_heartbeat_time(heartbeat: &Heartbeat, now_unix_secs: u64) -> Result<(), TrustError> {
    let limit_ms = now_unix_secs.saturating_add(CLOCK_SKEW_MAX_SECS).saturating_mul(1000);
    if heartbeat.uplink_time_unix_ms > limit_ms {
        return Err(TrustError::HeartbeatFromFuture { sent_unix_ms: heartbeat.uplink_time_unix_ms, now_unix_secs });
    }
    Ok(())
}

/// Decodes and verifies a [`SignedHeartbeat`] against the pinned `root` at `now_unix_secs`.
pub fn verify_heartbeat(bytes: &[u8], root: &RootPublicKey, now_unix_secs: u64) -> Result<Heartbeat, TrustError> {
    SignedHeartbeat::from_bytes(bytes)?.verify(root, now_unix_secs)
}

fn key_text(label: &str, bytes: &[u8]) -> String {
    format!("{label} {}\n", hex::encode(bytes))
}

/// The hex after `label` in a one-line text (surrounding whitespace, such as the final
/// newline or a CRLF, is ignored).
fn parse_hex_text(label: &'static str, text: &str) -> Result<Vec<u8>, KeyTextError> {
    if text.len() > KEY_TEXT_BYTES_MAX {
        return Err(KeyTextError::TooLong { len: text.len() });
    }
    let hex_part =
        text.trim().strip_prefix(label).and_then(|rest| rest.strip_prefix(' ')).ok_or(KeyTextError::Label { expected: label })?;
    Ok(hex::decode(hex_part)?)
}

fn parse_key_text<const N: usize>(label: &'static str, text: &str) -> Result<[u8; N], KeyTextError> {
    let bytes = parse_hex_text(label, text)?;
    let actual = bytes.len();
    bytes.try_into().map_err(|_| KeyTextError::Length { expected: N, actual })
}
