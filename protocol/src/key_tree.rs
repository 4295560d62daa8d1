//! The key tree of confidential broadcasts: a logical key hierarchy (RFC 2627) that follows
//! the division codes, nation -> province (2 digits) -> prefecture (4) -> county (6).
//!
//! Every county holds its own X25519 key pair (the secret in its bundle, the public key at the
//! uplink). Every inner node with at least one enrolled county below it has a 32-byte group
//! key with an epoch. The uplink airs, on the carousel, each group key wrapped under each of
//! its children's keys: a child group key (XChaCha20-Poly1305) or, at the leaves, the county's
//! public key (X25519, HKDF-SHA256, XChaCha20-Poly1305). A county therefore learns the group
//! keys of its own path (prefecture, province, nation) and no other; the wraps it needs are
//! three, whatever the size of the tree.
//!
//! A content key is wrapped under the fewest keys that cover exactly the targeted counties:
//! a whole subtree whose every enrolled county is targeted is covered by its group key, the
//! rest county by county ([`KeyTree::cover`]).
//!
//! Enrolling or revoking a county gives every group on its path a fresh key and a higher
//! epoch: a revoked county holds only old keys, and nothing aired afterwards is wrapped under
//! them; a new county cannot read what was aired before it joined. A county that was offline
//! through any number of re-keys needs only the current wraps, which the carousel keeps
//! airing.
//!
//! Nothing here draws randomness on its own: keys, nonces and ephemeral keys come from the
//! caller's CSPRNG.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use bincode::{Decode, Encode};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::manifest::{CanonicalError, decode_canonical, encode_canonical};
use crate::trust::{KeyCertificate, RootPublicKey, SigningKey, TrustError};

/// Bytes of a group key, a content key and an X25519 key.
pub const KEY_LEN: usize = 32;
/// Bytes of a wrapped key: the key and the AEAD tag.
pub const SEALED_KEY_LEN: usize = KEY_LEN + 16;
/// Bytes of an XChaCha20-Poly1305 nonce.
pub const NONCE_LEN: usize = 24;
/// Levels below the nation: province, prefecture, county.
pub const LEVELS: u8 = 3;
/// Counties one tree holds: above the ~2900 county-level divisions of the country.
pub const COUNTIES_MAX: usize = 8192;
/// Wraps in one signed key-wrap message (one KEY_WRAP datagram). 96 wraps of at most
/// [`EDGE_WRAP_BYTES_MAX`] fit [`SIGNED_KEY_WRAPS_BYTES_MAX`].
pub const WRAPS_PER_MESSAGE_MAX: usize = 96;
/// Largest canonical encoding of one [`Sealed`]: node, epoch, sealing, key and tag.
pub const SEALED_BYTES_MAX: usize = 5 + 8 + 4 + KEY_LEN + SEALED_KEY_LEN;
/// Largest canonical encoding of one [`EdgeWrap`].
pub const EDGE_WRAP_BYTES_MAX: usize = 5 + 8 + SEALED_BYTES_MAX;
/// Largest canonical signed key-wrap message: fits one UDP datagram with room to spare.
pub const SIGNED_KEY_WRAPS_BYTES_MAX: usize = 8 + 8 + 8 + WRAPS_PER_MESSAGE_MAX * EDGE_WRAP_BYTES_MAX + 8 + 256 + 64;
/// Bytes of a signed key-wrap message besides its wraps: the lengths, sequence and time, the
/// certificate (120) and the signature (64).
pub const SIGNED_KEY_WRAPS_OVERHEAD_BYTES: usize = 8 + 8 + 8 + 8 + 120 + 64;

/// How many wraps one KEY_WRAP datagram of at most `datagram_bytes_max` bytes (UDP payload)
/// holds: 11 at a 1500-byte MTU (1472).
pub fn wraps_per_datagram(datagram_bytes_max: usize) -> usize {
    let room = datagram_bytes_max.saturating_sub(crate::wire::HEADER_LEN + crate::wire::TAG_LEN + SIGNED_KEY_WRAPS_OVERHEAD_BYTES);
    (room / EDGE_WRAP_BYTES_MAX).clamp(1, WRAPS_PER_MESSAGE_MAX)
}

/// Context of the signature over a key-wrap message.
pub const KEY_WRAP_CONTEXT: &[u8] = b"satcast/v1/key-wrap\0";
/// Label of a county's secret in its bundle.
pub const COUNTY_SECRET_LABEL: &str = "satcast-county-secret-v1";
/// Label of a county's public key at the uplink.
pub const COUNTY_PUBLIC_LABEL: &str = "satcast-county-public-v1";

const GROUP_WRAP_AAD: &[u8] = b"satcast/v1/group-wrap\0";
const COUNTY_WRAP_INFO: &[u8] = b"satcast/v1/county-wrap\0";

/// Why a key-tree operation or message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyTreeError {
    /// Not "", or 2, 4 or 6 ASCII digits.
    #[error("{0:?} is not a division-code prefix (\"\", or 2, 4 or 6 digits)")]
    Prefix(String),
    /// A county operation named a prefix shorter than 6 digits.
    #[error("{0} is not a county (6 digits)")]
    NotACounty(String),
    /// The county is not enrolled.
    #[error("county {0} is not enrolled")]
    NotEnrolled(String),
    /// The tree already holds [`COUNTIES_MAX`] counties.
    #[error("the key tree holds {COUNTIES_MAX} counties already")]
    Full,
    /// An X25519 public key that is the identity or of small order: every shared secret with
    /// it would be predictable.
    #[error("the X25519 public key is of small order")]
    WeakPublicKey,
    /// A message with more than [`WRAPS_PER_MESSAGE_MAX`] wraps.
    #[error("{0} wraps in one message, more than {WRAPS_PER_MESSAGE_MAX}")]
    TooManyWraps(usize),
    /// Bytes that are not a canonical encoding.
    #[error("key-wrap bytes: {0}")]
    Encoding(String),
    /// The signature or certificate does not verify.
    #[error("key-wrap signature: {0}")]
    Trust(String),
    /// Key text that is not `<label> <64 hex digits>`.
    #[error("key text is not \"{label} <64 hex digits>\"")]
    KeyText {
        /// The label expected.
        label: &'static str,
    },
}

impl From<TrustError> for KeyTreeError {
    fn from(error: TrustError) -> Self {
        KeyTreeError::Trust(error.to_string())
    }
}

impl From<CanonicalError> for KeyTreeError {
    fn from(error: CanonicalError) -> Self {
        KeyTreeError::Encoding(error.to_string())
    }
}

/// A node of the tree: the nation (level 0), a province (1), a prefecture (2) or a county (3),
/// named by the digits of its division-code prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub struct Node {
    /// 0 nation, 1 province, 2 prefecture, 3 county.
    pub level: u8,
    /// The prefix's digits as a number (0 for the nation).
    pub code: u32,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Node({:?})", self.prefix())
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.level == 0 { f.write_str("nation") } else { f.write_str(&self.prefix()) }
    }
}

impl Node {
    /// The root of the tree.
    pub const NATION: Node = Node { level: 0, code: 0 };

    /// Parses a target prefix: "" (the nation) or 2, 4 or 6 ASCII digits.
    pub fn from_prefix(prefix: &str) -> Result<Node, KeyTreeError> {
        let digits = prefix.len();
        if digits > 6 || digits % 2 != 0 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(KeyTreeError::Prefix(crate::manifest::echo(prefix)));
        }
        let code = prefix.bytes().fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'));
        Ok(Node { level: (digits / 2) as u8, code })
    }

    /// Parses a county's 6-digit division code.
    pub fn county(code: &str) -> Result<Node, KeyTreeError> {
        let node = Node::from_prefix(code)?;
        if node.level != LEVELS {
            return Err(KeyTreeError::NotACounty(crate::manifest::echo(code)));
        }
        Ok(node)
    }

    /// The digits of the prefix, zero-padded ("" for the nation).
    pub fn prefix(&self) -> String {
        match self.level {
            0 => String::new(),
            level => format!("{:0width$}", self.code, width = usize::from(level) * 2),
        }
    }

    /// Whether this is a well-formed node (decoded bytes may not be).
    pub fn is_valid(&self) -> bool {
        self.level <= LEVELS && u64::from(self.code) < 100u64.pow(u32::from(self.level))
    }

    /// The node one level up; None for the nation.
    pub fn parent(&self) -> Option<Node> {
        (self.level > 0).then(|| Node { level: self.level - 1, code: self.code / 100 })
    }

    /// The node `self` lies under at `level` (itself at its own level); None above it.
    pub fn ancestor_at(&self, level: u8) -> Option<Node> {
        (level <= self.level).then(|| Node { level, code: self.code / 100u32.pow(u32::from(self.level - level)) })
    }

    /// Whether `other` is this node or lies under it.
    pub fn contains(&self, other: &Node) -> bool {
        other.ancestor_at(self.level) == Some(*self)
    }

    /// The groups above a county, nearest first: prefecture, province, nation.
    pub fn path(&self) -> impl Iterator<Item = Node> + '_ {
        (0..self.level).rev().filter_map(|level| self.ancestor_at(level))
    }
}

/// A secret 32-byte key: a group key or a content key. Its Debug never prints it.
#[derive(Clone, PartialEq, Eq, Encode, Decode)]
pub struct SecretKey(pub [u8; KEY_LEN]);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// A fresh key from the caller's CSPRNG.
    pub fn generate(rng: &mut impl rand::CryptoRng) -> SecretKey {
        let mut key = [0u8; KEY_LEN];
        rng.fill_bytes(&mut key);
        SecretKey(key)
    }
}

/// A group key and the epoch it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct GroupKey {
    /// Grows by one at every re-key of the group.
    pub epoch: u64,
    /// The key.
    pub key: SecretKey,
}

/// A county's own X25519 key pair, kept in its bundle.
#[derive(Clone)]
pub struct CountySecret(x25519_dalek::StaticSecret);

impl fmt::Debug for CountySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CountySecret(..)")
    }
}

impl CountySecret {
    /// A fresh key pair from the caller's CSPRNG.
    pub fn generate(rng: &mut impl rand::CryptoRng) -> CountySecret {
        let mut bytes = [0u8; KEY_LEN];
        rng.fill_bytes(&mut bytes);
        CountySecret(x25519_dalek::StaticSecret::from(bytes))
    }

    /// The public half, for the uplink.
    pub fn public(&self) -> [u8; KEY_LEN] {
        x25519_dalek::PublicKey::from(&self.0).to_bytes()
    }

    /// `satcast-county-secret-v1 <64 hex digits>`.
    pub fn to_text(&self) -> String {
        format!("{COUNTY_SECRET_LABEL} {}", hex::encode(self.0.to_bytes()))
    }

    /// Parses [`CountySecret::to_text`].
    pub fn from_text(text: &str) -> Result<CountySecret, KeyTreeError> {
        Ok(CountySecret(x25519_dalek::StaticSecret::from(parse_key_text(COUNTY_SECRET_LABEL, text)?)))
    }
}

/// `satcast-county-public-v1 <64 hex digits>`.
pub fn county_public_to_text(public: &[u8; KEY_LEN]) -> String {
    format!("{COUNTY_PUBLIC_LABEL} {}", hex::encode(public))
}

/// Parses [`county_public_to_text`].
pub fn county_public_from_text(text: &str) -> Result<[u8; KEY_LEN], KeyTreeError> {
    parse_key_text(COUNTY_PUBLIC_LABEL, text)
}

fn parse_key_text(label: &'static str, text: &str) -> Result<[u8; KEY_LEN], KeyTreeError> {
    let error = KeyTreeError::KeyText { label };
    let mut words = text.split_whitespace();
    if words.next() != Some(label) {
        return Err(error);
    }
    let (Some(digits), None) = (words.next(), words.next()) else { return Err(error) };
    let mut key = [0u8; KEY_LEN];
    hex::decode_to_slice(digits, &mut key).map_err(|_| error)?;
    Ok(key)
}

/// How a key is sealed: under a group key, or to a county's public key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Encode, Decode)]
pub enum Sealing {
    /// XChaCha20-Poly1305 under the group key of `under`, with a random nonce.
    Group {
        /// The nonce.
        nonce: [u8; NONCE_LEN],
    },
    /// X25519 with a fresh ephemeral key, HKDF-SHA256 to a one-time key and nonce,
    /// XChaCha20-Poly1305 (the ECIES construction of RFC 9180's base mode, without its
    /// export interface).
    County {
        /// The ephemeral X25519 public key.
        ephemeral: [u8; KEY_LEN],
    },
}

/// One key sealed under another: `sealed` holds the key and its AEAD tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Sealed {
    /// The key it is sealed under: a group (at `under_epoch`) or a county (epoch 0).
    pub under: Node,
    /// The epoch of `under`'s group key; 0 for a county.
    pub under_epoch: u64,
    /// How.
    pub sealing: Sealing,
    /// The key and its tag.
    pub sealed: [u8; SEALED_KEY_LEN],
}

/// One edge of the tree as aired on the carousel: the group key of `node` at `epoch`,
/// sealed under one of its children's keys.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct EdgeWrap {
    /// The group whose key this is.
    pub node: Node,
    /// Its epoch.
    pub epoch: u64,
    /// The key, sealed under a child of `node`.
    pub wrap: Sealed,
}

/// What a sealed key is bound to (the AEAD's associated data): a group key at an epoch, or
/// the content key of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrapped {
    /// The group key of `node` at `epoch`.
    Group {
        /// The group.
        node: Node,
        /// Its epoch.
        epoch: u64,
    },
    /// The content key of `object_id`.
    Content {
        /// The object.
        object_id: u64,
    },
    /// The network key that the uplink tags datagrams with from `activates_unix_secs` on.
    NetworkKey {
        /// When it takes over, which also names the rotation.
        activates_unix_secs: u64,
    },
}

fn associated_data(what: Wrapped, under: Node, under_epoch: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    aad.extend_from_slice(GROUP_WRAP_AAD);
    match what {
        Wrapped::Group { node, epoch } => {
            aad.push(0);
            aad.push(node.level);
            aad.extend_from_slice(&node.code.to_be_bytes());
            aad.extend_from_slice(&epoch.to_be_bytes());
        }
        Wrapped::Content { object_id } => {
            aad.push(1);
            aad.extend_from_slice(&object_id.to_be_bytes());
        }
        Wrapped::NetworkKey { activates_unix_secs } => {
            aad.push(2);
            aad.extend_from_slice(&activates_unix_secs.to_be_bytes());
        }
    }
    aad.push(under.level);
    aad.extend_from_slice(&under.code.to_be_bytes());
    aad.extend_from_slice(&under_epoch.to_be_bytes());
    aad
}

fn county_key_and_nonce(
    shared: &[u8; KEY_LEN],
    ephemeral: &[u8; KEY_LEN],
    recipient: &[u8; KEY_LEN],
    aad: &[u8],
) -> ([u8; KEY_LEN], [u8; NONCE_LEN]) {
    let mut salt = [0u8; 2 * KEY_LEN];
    salt[..KEY_LEN].copy_from_slice(ephemeral);
    salt[KEY_LEN..].copy_from_slice(recipient);
    let hkdf = Hkdf::<Sha256>::new(Some(&salt), shared);
    let mut info = Vec::with_capacity(COUNTY_WRAP_INFO.len() + aad.len());
    info.extend_from_slice(COUNTY_WRAP_INFO);
    info.extend_from_slice(aad);
    let mut okm = [0u8; KEY_LEN + NONCE_LEN];
    // 56 bytes is far below HKDF-SHA256's limit of 8160: expand cannot fail.
    let _ = hkdf.expand(&info, &mut okm);
    let mut key = [0u8; KEY_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    key.copy_from_slice(&okm[..KEY_LEN]);
    nonce.copy_from_slice(&okm[KEY_LEN..]);
    (key, nonce)
}

fn aead_seal(key: &[u8; KEY_LEN], nonce: &[u8; NONCE_LEN], aad: &[u8], plain: &[u8; KEY_LEN]) -> [u8; SEALED_KEY_LEN] {
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut out = [0u8; SEALED_KEY_LEN];
    // Encryption of 32 bytes into a Vec cannot fail (the length limit is 256 GiB).
    if let Ok(sealed) = cipher.encrypt(XNonce::from_slice(nonce), Payload { msg: plain, aad }) {
        out.copy_from_slice(&sealed);
    }
    out
}

fn aead_open(key: &[u8; KEY_LEN], nonce: &[u8; NONCE_LEN], aad: &[u8], sealed: &[u8; SEALED_KEY_LEN]) -> Option<SecretKey> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let plain = cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad }).ok()?;
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&plain);
    Some(SecretKey(key))
}

/// Seals `key` (bound to `what`) under the group key of `under`.
pub fn seal_under_group(rng: &mut impl rand::CryptoRng, what: Wrapped, key: &SecretKey, under: Node, group: &GroupKey) -> Sealed {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    seal_under_group_with_nonce(nonce, what, key, under, group)
}

/// [`seal_under_group`] with a given nonce, for test vectors: a nonce must never repeat
/// under one group key, so everything else draws it from a CSPRNG.
pub fn seal_under_group_with_nonce(nonce: [u8; NONCE_LEN], what: Wrapped, key: &SecretKey, under: Node, group: &GroupKey) -> Sealed {
    let aad = associated_data(what, under, group.epoch);
    let sealed = aead_seal(&group.key.0, &nonce, &aad, &key.0);
    Sealed { under, under_epoch: group.epoch, sealing: Sealing::Group { nonce }, sealed }
}

/// Seals `key` (bound to `what`) to the county `county` whose public key is `public`.
pub fn seal_to_county(
    rng: &mut impl rand::CryptoRng,
    what: Wrapped,
    key: &SecretKey,
    county: Node,
    public: &[u8; KEY_LEN],
) -> Result<Sealed, KeyTreeError> {
    let mut ephemeral_secret = [0u8; KEY_LEN];
    rng.fill_bytes(&mut ephemeral_secret);
    seal_to_county_with_ephemeral(ephemeral_secret, what, key, county, public)
}

/// [`seal_to_county`] with a given ephemeral secret, for test vectors: it must be fresh for
/// every wrap, so everything else draws it from a CSPRNG.
pub fn seal_to_county_with_ephemeral(
    ephemeral_secret: [u8; KEY_LEN],
    what: Wrapped,
    key: &SecretKey,
    county: Node,
    public: &[u8; KEY_LEN],
) -> Result<Sealed, KeyTreeError> {
    let ephemeral_secret = x25519_dalek::StaticSecret::from(ephemeral_secret);
    let ephemeral = x25519_dalek::PublicKey::from(&ephemeral_secret).to_bytes();
    let shared = ephemeral_secret.diffie_hellman(&x25519_dalek::PublicKey::from(*public));
    if !shared.was_contributory() {
        return Err(KeyTreeError::WeakPublicKey);
    }
    let aad = associated_data(what, county, 0);
    let (wrap_key, nonce) = county_key_and_nonce(shared.as_bytes(), &ephemeral, public, &aad);
    let sealed = aead_seal(&wrap_key, &nonce, &aad, &key.0);
    Ok(Sealed { under: county, under_epoch: 0, sealing: Sealing::County { ephemeral }, sealed })
}

/// The uplink's key tree: every enrolled county's public key and every group's current key.
/// Kept durably by the uplink ([`KeyTree::to_bytes`]); it holds secrets.
#[derive(Clone, PartialEq, Eq, Encode, Decode)]
pub struct KeyTree {
    /// Grows with every change of the tree: key-wrap messages carry it.
    pub sequence: u64,
    /// The key of the public pseudonyms of confidential names
    /// ([`crate::confidential::pseudonym`]).
    name_key: SecretKey,
    counties: BTreeMap<Node, [u8; KEY_LEN]>,
    groups: BTreeMap<Node, GroupKey>,
    /// Epochs of groups that emptied, so a group that fills again never reuses an epoch.
    retired: BTreeMap<Node, u64>,
}

impl fmt::Debug for KeyTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyTree")
            .field("sequence", &self.sequence)
            .field("counties", &self.counties.len())
            .field("groups", &self.groups.len())
            .finish()
    }
}

/// Largest canonical encoding of a [`KeyTree`].
pub const KEY_TREE_BYTES_MAX: usize = 64 + KEY_LEN + COUNTIES_MAX * (5 + KEY_LEN) + 3 * COUNTIES_MAX * (5 + 8 + KEY_LEN) + 8;

impl KeyTree {
    /// An empty tree with a fresh pseudonym key.
    pub fn new(rng: &mut impl rand::CryptoRng) -> KeyTree {
        KeyTree {
            sequence: 0,
            name_key: SecretKey::generate(rng),
            counties: BTreeMap::new(),
            groups: BTreeMap::new(),
            retired: BTreeMap::new(),
        }
    }

    /// The key of the public pseudonyms of confidential names.
    pub fn name_key(&self) -> &SecretKey {
        &self.name_key
    }

    /// Whether `county` is enrolled.
    pub fn is_enrolled(&self, county: &Node) -> bool {
        self.counties.contains_key(county)
    }

    /// The canonical encoding, secrets included.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_canonical::<Self, KEY_TREE_BYTES_MAX>(self)
    }

    /// Decodes [`KeyTree::to_bytes`], checking that every node is well formed and every
    /// group has a county below it.
    pub fn from_bytes(bytes: &[u8]) -> Result<KeyTree, KeyTreeError> {
        let tree: KeyTree = decode_canonical::<Self, KEY_TREE_BYTES_MAX>(bytes)?;
        let counties_ok = tree.counties.keys().all(|c| c.is_valid() && c.level == LEVELS);
        let groups_ok = tree.groups.keys().all(|g| g.is_valid() && g.level < LEVELS && tree.counties.keys().any(|c| g.contains(c)));
        if !counties_ok || !groups_ok || tree.counties.len() > COUNTIES_MAX {
            return Err(KeyTreeError::Encoding("inconsistent key tree".into()));
        }
        Ok(tree)
    }

    /// Enrolled counties and their public keys.
    pub fn counties(&self) -> impl Iterator<Item = (&Node, &[u8; KEY_LEN])> {
        self.counties.iter()
    }

    /// The current key of a group, if it has members.
    pub fn group(&self, node: &Node) -> Option<&GroupKey> {
        self.groups.get(node)
    }

    /// Enrols (or re-enrols with a new key) a county and re-keys its path, so it cannot read
    /// what was aired before.
    pub fn enroll(&mut self, rng: &mut impl rand::CryptoRng, county: Node, public: [u8; KEY_LEN]) -> Result<(), KeyTreeError> {
        if county.level != LEVELS || !county.is_valid() {
            return Err(KeyTreeError::NotACounty(county.prefix()));
        }
        if !self.counties.contains_key(&county) && self.counties.len() >= COUNTIES_MAX {
            return Err(KeyTreeError::Full);
        }
        // A small-order point would make every wrap to it readable by anyone.
        let probe = x25519_dalek::StaticSecret::from([1u8; KEY_LEN]).diffie_hellman(&x25519_dalek::PublicKey::from(public));
        if !probe.was_contributory() {
            return Err(KeyTreeError::WeakPublicKey);
        }
        self.counties.insert(county, public);
        self.rekey_path(rng, county);
        Ok(())
    }

    /// Removes a county and re-keys every group on its path: it cannot read anything aired
    /// from now on. Groups left empty are dropped.
    pub fn revoke(&mut self, rng: &mut impl rand::CryptoRng, county: Node) -> Result<(), KeyTreeError> {
        if self.counties.remove(&county).is_none() {
            return Err(KeyTreeError::NotEnrolled(county.prefix()));
        }
        self.rekey_path(rng, county);
        Ok(())
    }

    fn rekey_path(&mut self, rng: &mut impl rand::CryptoRng, county: Node) {
        self.sequence += 1;
        for node in county.path() {
            let occupied = self.counties.keys().any(|c| node.contains(c));
            let last = self.groups.get(&node).map(|g| g.epoch).or_else(|| self.retired.get(&node).copied()).unwrap_or(0);
            if occupied {
                self.groups.insert(node, GroupKey { epoch: last + 1, key: SecretKey::generate(rng) });
                self.retired.remove(&node);
            } else if self.groups.remove(&node).is_some() {
                self.retired.insert(node, last);
            }
        }
    }

    /// Enrolled counties under any of `targets` (division-code prefixes, "" for all).
    pub fn targeted(&self, targets: &[String]) -> Result<BTreeSet<Node>, KeyTreeError> {
        let nodes = targets.iter().map(|t| Node::from_prefix(t)).collect::<Result<Vec<_>, _>>()?;
        Ok(self.counties.keys().filter(|c| nodes.iter().any(|n| n.contains(c))).copied().collect())
    }

    /// The fewest nodes whose enrolled counties are exactly `counties` (those enrolled):
    /// every group all of whose counties are in the set stands for them, highest first; the
    /// counties left are named one by one.
    pub fn cover(&self, counties: &BTreeSet<Node>) -> Vec<Node> {
        let mut cover = Vec::new();
        self.cover_under(Node::NATION, counties, &mut cover);
        cover
    }

    fn cover_under(&self, node: Node, set: &BTreeSet<Node>, cover: &mut Vec<Node>) {
        let members: Vec<&Node> = self.counties.keys().filter(|c| node.contains(c)).collect();
        if members.is_empty() || !members.iter().any(|c| set.contains(c)) {
            return;
        }
        if members.iter().all(|c| set.contains(c)) {
            cover.push(node);
            return;
        }
        let children: BTreeSet<Node> = members.iter().filter_map(|c| c.ancestor_at(node.level + 1)).collect();
        for child in children {
            self.cover_under(child, set, cover);
        }
    }

    /// Seals `key` (bound to `what`) under each node of `cover`: a group's current key, or a
    /// county's public key.
    pub fn seal_for(
        &self,
        rng: &mut impl rand::CryptoRng,
        what: Wrapped,
        key: &SecretKey,
        cover: &[Node],
    ) -> Result<Vec<Sealed>, KeyTreeError> {
        cover
            .iter()
            .map(|node| {
                if node.level == LEVELS {
                    let public = self.counties.get(node).ok_or_else(|| KeyTreeError::NotEnrolled(node.prefix()))?;
                    seal_to_county(rng, what, key, *node, public)
                } else {
                    let group = self.groups.get(node).ok_or_else(|| KeyTreeError::NotEnrolled(node.prefix()))?;
                    Ok(seal_under_group(rng, what, key, *node, group))
                }
            })
            .collect()
    }

    /// Every edge of the tree: each group's current key sealed under each child's key, the
    /// counties' edges first in code order, then the prefectures', then the provinces'.
    pub fn edge_wraps(&self, rng: &mut impl rand::CryptoRng) -> Result<Vec<EdgeWrap>, KeyTreeError> {
        let mut wraps = Vec::new();
        for level in 0..LEVELS {
            for (node, group) in self.groups.iter().filter(|(n, _)| n.level == level) {
                let what = Wrapped::Group { node: *node, epoch: group.epoch };
                let children: BTreeSet<Node> =
                    self.counties.keys().filter(|c| node.contains(c)).filter_map(|c| c.ancestor_at(level + 1)).collect();
                for child in children {
                    let wrap = self.seal_for(rng, what, &group.key, &[child])?.remove(0);
                    wraps.push(EdgeWrap { node: *node, epoch: group.epoch, wrap });
                }
            }
        }
        // Bottom up: a county hears its leaf wrap (the prefecture key) before the wraps under
        // the prefecture key (the province key) and so on, so one pass of the carousel
        // teaches it its whole path.
        wraps.sort_by_key(|w| (std::cmp::Reverse(w.wrap.under.level), w.wrap.under.code));
        Ok(wraps)
    }
}

/// The carousel's key-wrap message: a slice of the tree's edges at one tree sequence, signed
/// by the uplink's signing key.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct KeyWraps {
    /// The tree's sequence when the wraps were made.
    pub sequence: u64,
    /// When they were signed, seconds since the Unix epoch.
    pub created_unix_secs: u64,
    /// At most [`WRAPS_PER_MESSAGE_MAX`] edges.
    pub wraps: Vec<EdgeWrap>,
}

/// A [`KeyWraps`] as aired: its canonical bytes, the signer's certificate and the signature
/// over [`KEY_WRAP_CONTEXT`] followed by those bytes.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SignedKeyWraps {
    /// Canonical [`KeyWraps`] bytes.
    pub message: Vec<u8>,
    /// Certificate of the signing key.
    pub certificate: KeyCertificate,
    /// The signature.
    pub signature: [u8; 64],
}

impl KeyWraps {
    /// Signs the message. Refuses more than [`WRAPS_PER_MESSAGE_MAX`] wraps.
    pub fn sign(&self, key: &SigningKey) -> Result<SignedKeyWraps, KeyTreeError> {
        if self.wraps.len() > WRAPS_PER_MESSAGE_MAX {
            return Err(KeyTreeError::TooManyWraps(self.wraps.len()));
        }
        let message = encode_canonical::<Self, SIGNED_KEY_WRAPS_BYTES_MAX>(self);
        let signature = key.sign_context(KEY_WRAP_CONTEXT, &message);
        Ok(SignedKeyWraps { message, certificate: *key.certificate(), signature })
    }

    /// Cuts `wraps` into signed messages of at most `per_message` wraps each.
    pub fn sign_all(
        key: &SigningKey,
        sequence: u64,
        created_unix_secs: u64,
        wraps: &[EdgeWrap],
        per_message: usize,
    ) -> Result<Vec<SignedKeyWraps>, KeyTreeError> {
        let per_message = per_message.clamp(1, WRAPS_PER_MESSAGE_MAX);
        wraps.chunks(per_message).map(|chunk| KeyWraps { sequence, created_unix_secs, wraps: chunk.to_vec() }.sign(key)).collect()
    }
}

impl SignedKeyWraps {
    /// The canonical encoding, as aired in a KEY_WRAP datagram.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_canonical::<Self, SIGNED_KEY_WRAPS_BYTES_MAX>(self)
    }

    /// Decodes a canonical encoding and the message inside without verifying anything: the
    /// cheap checks ([`KeyRing::wants_any`]) come before the signature.
    pub fn decode(bytes: &[u8]) -> Result<(SignedKeyWraps, KeyWraps), KeyTreeError> {
        let signed: SignedKeyWraps = decode_canonical::<Self, SIGNED_KEY_WRAPS_BYTES_MAX>(bytes)?;
        let message: KeyWraps = decode_canonical::<KeyWraps, SIGNED_KEY_WRAPS_BYTES_MAX>(&signed.message)?;
        if message.wraps.len() > WRAPS_PER_MESSAGE_MAX {
            return Err(KeyTreeError::TooManyWraps(message.wraps.len()));
        }
        Ok((signed, message))
    }

    /// Checks the certificate chain and the signature.
    pub fn verify(&self, root: &RootPublicKey, now_unix_secs: u64) -> Result<(), KeyTreeError> {
        crate::trust::verify_context(&self.certificate, root, now_unix_secs, KEY_WRAP_CONTEXT, &self.message, &self.signature)?;
        Ok(())
    }
}

/// A county's keys: its own secret and the group keys of its path it has learned.
#[derive(Debug, Clone)]
pub struct KeyRing {
    county: Node,
    secret: CountySecret,
    public: [u8; KEY_LEN],
    /// At most [`LEVELS`] entries: the county's own path.
    groups: BTreeMap<Node, GroupKey>,
}

/// Whether a county can read an object, from the object's content-key wraps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The content key.
    Key(SecretKey),
    /// A wrap names this county's path, at an epoch of a group key it has not learned yet
    /// (it was offline through a re-key): the carousel will bring it.
    Pending,
    /// No wrap names this county or a group above it: it is not targeted.
    NotTargeted,
}

impl KeyRing {
    /// A key ring for `county` holding only its own key.
    pub fn new(county: Node, secret: CountySecret) -> KeyRing {
        let public = secret.public();
        KeyRing { county, secret, public, groups: BTreeMap::new() }
    }

    /// The county.
    pub fn county(&self) -> Node {
        self.county
    }

    /// The group key of `node` this county holds, if any.
    pub fn group(&self, node: &Node) -> Option<&GroupKey> {
        self.groups.get(node)
    }

    /// Whether `wrap` would teach this county something: a newer key of a group on its path,
    /// sealed under its own key or under a group it holds at that epoch (or will hold).
    /// Cheap: no cryptography, so a replayed or foreign message costs a lookup.
    pub fn wants(&self, wrap: &EdgeWrap) -> bool {
        let on_path = wrap.node.contains(&self.county) && wrap.node.level < LEVELS;
        let newer = self.groups.get(&wrap.node).is_none_or(|held| wrap.epoch > held.epoch);
        let under_path = wrap.wrap.under.contains(&self.county) && wrap.wrap.under.parent() == Some(wrap.node);
        on_path && newer && under_path
    }

    /// Whether any wrap of `message` is wanted.
    pub fn wants_any(&self, message: &KeyWraps) -> bool {
        message.wraps.iter().any(|w| self.wants(w))
    }

    fn unseal(&self, what: Wrapped, sealed: &Sealed) -> Option<SecretKey> {
        let aad = associated_data(what, sealed.under, sealed.under_epoch);
        match &sealed.sealing {
            Sealing::County { ephemeral } => {
                if sealed.under != self.county || sealed.under_epoch != 0 {
                    return None;
                }
                let shared = self.secret.0.diffie_hellman(&x25519_dalek::PublicKey::from(*ephemeral));
                if !shared.was_contributory() {
                    return None;
                }
                let (key, nonce) = county_key_and_nonce(shared.as_bytes(), ephemeral, &self.public, &aad);
                aead_open(&key, &nonce, &aad, &sealed.sealed)
            }
            Sealing::Group { nonce } => {
                let group = self.groups.get(&sealed.under).filter(|g| g.epoch == sealed.under_epoch)?;
                aead_open(&group.key.0, nonce, &aad, &sealed.sealed)
            }
        }
    }

    /// Learns what it can from verified wraps, bottom up (a province key sealed under a
    /// prefecture key it learns from the same batch is taken too). Returns how many group keys
    /// it learned. Wraps that fail to open are ignored: they cost one AEAD each and only come
    /// from messages whose signature verified.
    pub fn learn(&mut self, wraps: &[EdgeWrap]) -> usize {
        let mut learned = 0;
        // The path has LEVELS groups: each pass learns at least one or stops.
        for _ in 0..LEVELS {
            let mut progress = false;
            for wrap in wraps {
                if !self.wants(wrap) {
                    continue;
                }
                if let Some(key) = self.unseal(Wrapped::Group { node: wrap.node, epoch: wrap.epoch }, &wrap.wrap) {
                    self.groups.insert(wrap.node, GroupKey { epoch: wrap.epoch, key });
                    learned += 1;
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        learned
    }

    /// The content key of `object_id` from its wraps, if this county can open one; otherwise
    /// whether it is targeted but lacks a group key ([`Access::Pending`]) or not targeted.
    pub fn content_key(&self, object_id: u64, wraps: &[Sealed]) -> Access {
        self.open(Wrapped::Content { object_id }, wraps)
    }

    /// The key bound to `what` from its wraps, if this county can open one; otherwise
    /// whether it is targeted but lacks a group key ([`Access::Pending`]) or not targeted.
    pub fn open(&self, what: Wrapped, wraps: &[Sealed]) -> Access {
        let mut pending = false;
        for sealed in wraps.iter().filter(|s| s.under.contains(&self.county)) {
            if let Some(key) = self.unseal(what, sealed) {
                return Access::Key(key);
            }
            // A group on its path at an epoch it does not hold yet: a newer one will come.
            let held = self.groups.get(&sealed.under).map(|g| g.epoch);
            pending |= matches!(sealed.sealing, Sealing::Group { .. }) && held.is_none_or(|e| e < sealed.under_epoch);
        }
        if pending { Access::Pending } else { Access::NotTargeted }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn prefixes_parse_and_print() {
        for prefix in ["", "41", "4101", "410102", "01", "000001"] {
            assert_eq!(Node::from_prefix(prefix).expect("valid").prefix(), prefix);
        }
        for bad in ["4", "41a1", "4101021", "x"] {
            assert!(Node::from_prefix(bad).is_err(), "{bad}");
        }
        let county = Node::county("410102").expect("county");
        let path: Vec<String> = county.path().map(|n| n.prefix()).collect();
        assert_eq!(path, ["4101", "41", ""]);
        assert!(Node::from_prefix("41").expect("p").contains(&county));
        assert!(!Node::from_prefix("42").expect("p").contains(&county));
        assert!(Node::county("41").is_err());
    }

    #[test]
    fn weak_public_keys_are_refused() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let mut tree = KeyTree::new(&mut rng);
        let county = Node::county("410102").expect("county");
        assert_eq!(tree.enroll(&mut rng, county, [0u8; 32]), Err(KeyTreeError::WeakPublicKey));
    }

    #[test]
    fn the_tree_survives_its_encoding_and_refuses_an_inconsistent_one() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let mut tree = KeyTree::new(&mut rng);
        for code in ["410102", "410103", "420101"] {
            let public = CountySecret::generate(&mut rng).public();
            tree.enroll(&mut rng, Node::county(code).expect("code"), public).expect("enrols");
        }
        tree.revoke(&mut rng, Node::county("420101").expect("code")).expect("revokes");
        let bytes = tree.to_bytes();
        assert_eq!(KeyTree::from_bytes(&bytes).expect("decodes"), tree);
        assert!(KeyTree::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        // A group with no county below it.
        let mut bad = tree.clone();
        bad.groups.insert(Node::from_prefix("42").expect("p"), GroupKey { epoch: 9, key: SecretKey([0; 32]) });
        assert!(KeyTree::from_bytes(&bad.to_bytes()).is_err());
        // Province 42 emptied at epoch 1; refilled, it continues at 2, never reusing an epoch.
        let public = CountySecret::generate(&mut rng).public();
        tree.enroll(&mut rng, Node::county("420102").expect("code"), public).expect("enrols");
        assert_eq!(tree.group(&Node::from_prefix("42").expect("p")).map(|g| g.epoch), Some(2));
    }

    #[test]
    fn key_text_roundtrips() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let secret = CountySecret::generate(&mut rng);
        let back = CountySecret::from_text(&secret.to_text()).expect("parses");
        assert_eq!(back.public(), secret.public());
        assert_eq!(county_public_from_text(&county_public_to_text(&secret.public())).expect("parses"), secret.public());
        assert!(CountySecret::from_text("satcast-county-secret-v1 00").is_err());
        assert!(!format!("{secret:?}").contains(&hex::encode(secret.0.to_bytes())));
    }
}
