//! Rotating the network key over the air (docs/protocol.md 8.6).
//!
//! Every county's bundle holds the same network key, which tags every aired datagram: one
//! leaked bundle makes its holder an insider. The uplink can replace it without touching a
//! county: it seals the next key under the key tree's cover of every enrolled county (the
//! nation's group key, as a rule) and airs it, signed, after every heartbeat until the key
//! takes over at `activates_unix_secs`. A county that holds its path's keys opens it and
//! keeps it durably; a revoked county, out of the tree, cannot. From the activation on, the
//! uplink tags with the next key; a county switches when it first hears a heartbeat tagged
//! with it whose signature verifies, so a county whose clock is off switches on time, and
//! an insider who knows the next key cannot switch counties early by forging a tag.

use bincode::{Decode, Encode};

use crate::key_tree::{Access, KeyRing, KeyTree, KeyTreeError, Sealed, SecretKey, Wrapped};
use crate::manifest::{decode_canonical, encode_canonical};
use crate::trust::{KeyCertificate, NetworkKey, RootPublicKey, SigningKey};

/// Signature context of a next network key announcement.
pub const NEXT_NETWORK_KEY_CONTEXT: &[u8] = b"satcast/v1/next-network-key\0";
/// The most wraps of the next key: the cover of every enrolled county is one node unless
/// some counties hold old bundles without a key of their own (they are not in the tree).
pub const NEXT_NETWORK_KEY_WRAPS_MAX: usize = 8;
/// The largest encoded announcement, signed: it fits one datagram at a 1500-byte MTU.
pub const SIGNED_NEXT_NETWORK_KEY_BYTES_MAX: usize =
    8 + 8 + 8 + NEXT_NETWORK_KEY_WRAPS_MAX * crate::key_tree::SEALED_BYTES_MAX + 8 + 256 + 64;

/// The next network key, sealed for every enrolled county.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct NextNetworkKey {
    /// When the uplink starts tagging with it, seconds since the Unix epoch; it also names
    /// the rotation (a later one has a later activation).
    pub activates_unix_secs: u64,
    /// When it was sealed and signed.
    pub created_unix_secs: u64,
    /// The key, sealed under the cover of every enrolled county.
    pub wraps: Vec<Sealed>,
}

/// A [`NextNetworkKey`] as aired: its canonical bytes, the signer's certificate and the
/// signature over [`NEXT_NETWORK_KEY_CONTEXT`] followed by those bytes.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SignedNextNetworkKey {
    /// Canonical [`NextNetworkKey`] bytes.
    pub message: Vec<u8>,
    /// Certificate of the signing key.
    pub certificate: KeyCertificate,
    /// The signature.
    pub signature: [u8; 64],
}

/// What a county makes of an announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextKeyAccess {
    /// It opened the key.
    Key(NetworkKey),
    /// It is in the tree but lacks the group key the next key is sealed under: a later
    /// carousel teaches it, and a later repeat opens it.
    Pending,
    /// Not sealed for it (revoked, or enrolled after it was sealed).
    NotTargeted,
}

impl NextNetworkKey {
    /// Seals `next` for every county enrolled in `tree`.
    pub fn seal(
        rng: &mut impl rand::CryptoRng,
        tree: &KeyTree,
        next: &NetworkKey,
        activates_unix_secs: u64,
        created_unix_secs: u64,
    ) -> Result<NextNetworkKey, KeyTreeError> {
        let counties = tree.counties().map(|(node, _)| *node).collect();
        let cover = tree.cover(&counties);
        if cover.is_empty() {
            return Err(KeyTreeError::NotEnrolled("any county".into()));
        }
        if cover.len() > NEXT_NETWORK_KEY_WRAPS_MAX {
            return Err(KeyTreeError::TooManyWraps(cover.len()));
        }
        let wraps = tree.seal_for(rng, Wrapped::NetworkKey { activates_unix_secs }, &SecretKey(next.0), &cover)?;
        Ok(NextNetworkKey { activates_unix_secs, created_unix_secs, wraps })
    }

    /// Signs the announcement.
    pub fn sign(&self, key: &SigningKey) -> Result<SignedNextNetworkKey, KeyTreeError> {
        if self.wraps.len() > NEXT_NETWORK_KEY_WRAPS_MAX {
            return Err(KeyTreeError::TooManyWraps(self.wraps.len()));
        }
        let message = encode_canonical::<Self, SIGNED_NEXT_NETWORK_KEY_BYTES_MAX>(self);
        let signature = key.sign_context(NEXT_NETWORK_KEY_CONTEXT, &message);
        Ok(SignedNextNetworkKey { message, certificate: *key.certificate(), signature })
    }

    /// Opens the next key with a county's ring.
    pub fn open(&self, ring: &KeyRing) -> NextKeyAccess {
        match ring.open(Wrapped::NetworkKey { activates_unix_secs: self.activates_unix_secs }, &self.wraps) {
            Access::Key(key) => NextKeyAccess::Key(NetworkKey(key.0)),
            Access::Pending => NextKeyAccess::Pending,
            Access::NotTargeted => NextKeyAccess::NotTargeted,
        }
    }
}

impl SignedNextNetworkKey {
    /// The canonical encoding, as aired in a NETWORK KEY datagram.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_canonical::<Self, SIGNED_NEXT_NETWORK_KEY_BYTES_MAX>(self)
    }

    /// Decodes a canonical encoding and the message inside without verifying anything: the
    /// cheap checks (a rotation already known) come before the signature.
    pub fn decode(bytes: &[u8]) -> Result<(SignedNextNetworkKey, NextNetworkKey), KeyTreeError> {
        let signed: SignedNextNetworkKey = decode_canonical::<Self, SIGNED_NEXT_NETWORK_KEY_BYTES_MAX>(bytes)?;
        let message: NextNetworkKey = decode_canonical::<NextNetworkKey, SIGNED_NEXT_NETWORK_KEY_BYTES_MAX>(&signed.message)?;
        if message.wraps.len() > NEXT_NETWORK_KEY_WRAPS_MAX {
            return Err(KeyTreeError::TooManyWraps(message.wraps.len()));
        }
        Ok((signed, message))
    }

    /// Checks the certificate chain and the signature.
    pub fn verify(&self, root: &RootPublicKey, now_unix_secs: u64) -> Result<(), KeyTreeError> {
        crate::trust::verify_context(&self.certificate, root, now_unix_secs, NEXT_NETWORK_KEY_CONTEXT, &self.message, &self.signature)?;
        Ok(())
    }
}
