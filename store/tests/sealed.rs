//! Confidential objects (issue 14) through the real store: the ciphertext is kept and checked
//! against the signed hashes like any object, then decrypted block by block with the content
//! key the county opened, checked against the sealed plaintext hash, and delivered under the
//! real name. Without the key, or with another one, it is refused and nothing is delivered.

mod common;

use common::{NOW, manifest, signer, write_blocks};
use satcast_protocol::confidential::{self, Confidential, Opening, Secrets};
use satcast_protocol::fec::{self, Oti};
use satcast_protocol::feedback::RefusalCode;
use satcast_protocol::key_tree::{self, GroupKey, Node, SecretKey, Wrapped};
use satcast_protocol::manifest::{Compression, Manifest};
use satcast_protocol::storage::{self, StoreCompletion, StoreRequest, VerifyOutcome};
use satcast_store::{ReceiverLimits, ReceiverStore};

const NAME: &str = "低保名册.csv";

/// A sealed object of `plain` as a county that opened it sees it (its real name), the
/// ciphertext aired, and what opens it.
fn sealed(object_id: u64, plain: &[u8]) -> (Manifest, Vec<u8>, Opening) {
    let key = SecretKey([7; 32]);
    let oti = confidential::sealed_oti(plain.len() as u64, 1024, 64 * 1024).expect("layout");
    let aired = confidential::seal_object(&key, object_id, &oti, plain).expect("seals");
    let secrets = Secrets {
        name: NAME.into(),
        plain_size: plain.len() as u64,
        plain_hash: *blake3::hash(plain).as_bytes(),
        compression: Compression::None,
    };
    let province = GroupKey { epoch: 1, key: SecretKey([9; 32]) };
    let wrap = key_tree::seal_under_group_with_nonce(
        [3; 24],
        Wrapped::Content { object_id },
        &key,
        Node::from_prefix("41").expect("node"),
        &province,
    );
    let section = Confidential { wraps: vec![wrap], sealed_secrets: confidential::seal_secrets(&key, object_id, &secrets) };
    let blocks = fec::blocks(&oti);
    let manifest = Manifest {
        size_bytes: aired.len() as u64,
        compression: Compression::Sealed(Box::new(section)),
        oti: oti.encode(),
        object_hash: *blake3::hash(&aired).as_bytes(),
        block_hashes: blocks.iter().map(|b| fec::block_hash(&aired[b.offset as usize..(b.offset + b.len) as usize])).collect(),
        ..manifest(object_id, NAME, 1, &aired)
    };
    (manifest, aired, Opening { key, secrets })
}

fn receive(store: &mut ReceiverStore, manifest: &Manifest, aired: &[u8], opened: Option<Opening>) -> Option<StoreCompletion> {
    let signed = signer().sign_manifest(manifest).expect("sign").to_bytes();
    let begun = storage::execute(StoreRequest::BeginObject { manifest: Box::new(manifest.clone()), signed_manifest: signed }, store);
    assert!(matches!(begun, Some(StoreCompletion::Begun { .. })), "{begun:?}");
    write_blocks(store, manifest, aired).expect("blocks");
    let verify = StoreRequest::VerifyObject {
        object_id: manifest.object_id,
        size_bytes: manifest.size_bytes,
        expected_hash: manifest.object_hash,
        compression: manifest.compression.clone(),
        opened: opened.map(Box::new),
    };
    storage::execute(verify, store)
}

fn open(dir: &std::path::Path) -> ReceiverStore {
    ReceiverStore::open(&dir.join("state"), &dir.join("deliver"), ReceiverLimits::default(), NOW).expect("open").0
}

fn refused(completion: &Option<StoreCompletion>) -> Option<RefusalCode> {
    match completion {
        Some(StoreCompletion::ObjectVerified { outcome: VerifyOutcome::Refused(refusal), .. }) => Some(refusal.code),
        _ => None,
    }
}

#[test]
fn a_sealed_object_is_decrypted_and_delivered_under_its_real_name_and_only_with_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = open(dir.path());
    let plain: Vec<u8> = (0..8_000u32).flat_map(|i| format!("4101{i:06},户主{i}\n").into_bytes()).collect();

    let (m1, aired, opening) = sealed(1, &plain);
    assert!(Oti::decode(&m1.oti).expect("oti").source_blocks > 1, "several blocks, each opened on its own");
    let verified = receive(&mut store, &m1, &aired, Some(opening));
    assert!(matches!(verified, Some(StoreCompletion::ObjectVerified { outcome: VerifyOutcome::Verified, .. })), "{verified:?}");
    let path = store.commit(&m1).expect("commit");
    assert!(path.ends_with(NAME), "{}", path.display());
    assert_eq!(std::fs::read(&path).expect("delivered"), plain, "byte-exact");

    // Without the content key, or with another, nothing is delivered.
    let (m2, aired, _) = sealed(2, &plain);
    assert_eq!(refused(&receive(&mut store, &m2, &aired, None)), Some(RefusalCode::Undecodable));
    let (m3, aired, opening) = sealed(3, &plain);
    let wrong = Opening { key: SecretKey([8; 32]), ..opening };
    assert_eq!(refused(&receive(&mut store, &m3, &aired, Some(wrong))), Some(RefusalCode::Undecodable));
    // Secrets that do not describe the plaintext (a hash of other bytes) deliver nothing either.
    let (m4, aired, opening) = sealed(4, &plain);
    let other = Opening { secrets: Secrets { plain_hash: [0; 32], ..opening.secrets.clone() }, ..opening };
    assert_eq!(refused(&receive(&mut store, &m4, &aired, Some(other))), Some(RefusalCode::Undecodable));
}
