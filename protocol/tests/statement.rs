//! What the signed heartbeat states beside the time: the objects the uplink airs now and
//! the latest version of each (kind, name) whose older manifests may still be replayed.
//! The broadcast machine says it; the reception machine acts on it.

use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use satcast_protocol::broadcast::{AirPlan, BlockSource, BroadcastConfig, Broadcaster, Delivery, NewObject, Priority};
use satcast_protocol::fec::Oti;
use satcast_protocol::feedback::{FeedbackMessage, RefusalCode};
use satcast_protocol::manifest::{Compression, Kind, Manifest};
use satcast_protocol::reception::{MemoryStore, Reception, ReceptionConfig, ReceptionEvent};
use satcast_protocol::trust::{self, Heartbeat, LatestVersion, NetworkKey, RootKey, SigningKey};
use satcast_protocol::wire::{self, Body};

const NOW: u64 = 1_795_000_000;
const DAY: u64 = 86_400;

struct World {
    network_key: NetworkKey,
    signer: SigningKey,
    county: Reception,
    store: MemoryStore,
    now: Instant,
    heartbeat_ms: u64,
}

fn world() -> World {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let root = RootKey::generate(&mut rng);
    let network_key = NetworkKey::generate(&mut rng);
    let signer = SigningKey::generate(&mut rng, &root, 1, NOW - DAY, NOW + DAY);
    let county = Reception::new(ReceptionConfig::new("410102".into(), root.public(), network_key.clone()));
    World { network_key, signer, county, store: MemoryStore::default(), now: Instant::now(), heartbeat_ms: NOW * 1000 }
}

fn manifest(object_id: u64, name: &str, version: u64) -> Manifest {
    let oti = Oti::new_for_object(10_000, 1436, 1 << 20).expect("oti");
    Manifest {
        object_id,
        kind: Kind::Software,
        name: name.into(),
        version,
        size_bytes: 10_000,
        compression: Compression::None,
        oti: oti.encode(),
        object_hash: [1; 32],
        block_hashes: vec![[2; 32]],
        targets: vec!["41".into()],
        created_unix_secs: NOW,
        expires_unix_secs: NOW + 7 * DAY,
    }
}

impl World {
    /// Time passes between datagrams, so "accepted before the heartbeat" is meaningful.
    fn tick(&mut self) {
        self.now += Duration::from_millis(100);
        self.heartbeat_ms += 100;
    }

    fn air_manifest(&mut self, manifest: &Manifest) -> Vec<ReceptionEvent> {
        self.tick();
        let signed = self.signer.sign_manifest(manifest).expect("sign").to_bytes();
        let mut buf = Vec::new();
        for fragment in wire::manifest_fragments(&signed, 1472) {
            wire::write_manifest_fragment(&mut buf, &self.network_key, manifest.object_id, &fragment);
            self.county.handle_datagram(self.now, NOW, &buf);
            satcast_protocol::storage::drain(&mut self.county, &mut self.store);
        }
        self.events()
    }

    fn air_heartbeat(&mut self, live: &[u64], live_complete: bool, latest: &[(&str, u64)]) -> Vec<ReceptionEvent> {
        self.tick();
        let heartbeat = Heartbeat {
            sequence: 1,
            uplink_time_unix_ms: self.heartbeat_ms,
            live: live.to_vec(),
            live_complete,
            latest: latest
                .iter()
                .map(|(name, version)| LatestVersion { name: trust::name_digest(Kind::Software, name), version: *version })
                .collect(),
        };
        let signed = self.signer.sign_heartbeat(heartbeat).to_bytes();
        let mut buf = Vec::new();
        wire::write_heartbeat(&mut buf, &self.network_key, &signed);
        self.county.handle_datagram(self.now, NOW, &buf);
        satcast_protocol::storage::drain(&mut self.county, &mut self.store);
        self.events()
    }

    fn events(&mut self) -> Vec<ReceptionEvent> {
        std::iter::from_fn(|| self.county.poll_event()).collect()
    }

    fn told(&mut self) -> Vec<(u64, RefusalCode)> {
        std::iter::from_fn(|| self.county.poll_feedback())
            .filter_map(|f| match f.message {
                FeedbackMessage::Refused { object_id, refusal } => Some((object_id, refusal.code)),
                _ => None,
            })
            .collect()
    }
}

fn accepted(events: &[ReceptionEvent]) -> bool {
    events.iter().any(|e| matches!(e, ReceptionEvent::Accepted { .. }))
}

/// Eight manifests of broadcasts that ended (cancelled, say), replayed by an outsider, fill
/// every partial-object slot. Before the statement the county had to refuse every new
/// object until they expired (seven days); now a heartbeat that does not list them frees a
/// slot as soon as a new object needs one, and their manifests then cost a lookup.
#[test]
fn manifests_of_ended_broadcasts_cannot_hold_the_partial_object_slots() {
    let mut w = world();
    let old: Vec<Manifest> = (1..=8).map(|i| manifest(i, &format!("old-{i}.bin"), 1)).collect();
    for m in &old {
        assert!(accepted(&w.air_manifest(m)), "slot for {}", m.object_id);
    }
    let new = manifest(100, "new.bin", 1);
    assert!(!accepted(&w.air_manifest(&new)), "every slot is taken and nothing says they ended");
    assert_eq!(w.told(), vec![(100, RefusalCode::TooManyPartial)], "the uplink hears why");

    // An incomplete live list proves nothing about what it leaves out.
    w.air_heartbeat(&[100], false, &[]);
    assert!(!accepted(&w.air_manifest(&new)));

    // The uplink's heartbeat names only the new object, as it does the moment it starts it.
    w.air_heartbeat(&[100], true, &[]);
    let events = w.air_manifest(&new);
    assert!(accepted(&events), "{events:?}");
    assert!(events.iter().any(|e| matches!(e, ReceptionEvent::Ended { .. })), "{events:?}");
    assert_eq!(w.county.stats().partials_ended, 1);
    let ended = old.iter().find(|m| w.county.progress().iter().all(|p| p.object_id != m.object_id)).expect("one dropped").clone();

    // Its manifest replayed: dropped before assembly, a counter, no event.
    let checked = w.county.stats().signatures_checked;
    for _ in 0..100 {
        assert!(w.air_manifest(&ended).is_empty());
    }
    assert_eq!(w.county.stats().manifests_ended, 100);
    assert_eq!(w.county.stats().signatures_checked, checked, "replays cost no signature");

    // Re-aired (the heartbeat lists it again): taken again, in the slot of another ended one.
    w.air_heartbeat(&[100, ended.object_id], true, &[]);
    let events = w.air_manifest(&ended);
    assert!(accepted(&events), "{events:?}");
    assert_eq!(w.county.stats().partials_ended, 2);
}

/// Partial objects of live broadcasts are never dropped, whatever comes.
#[test]
fn partial_objects_of_live_broadcasts_are_kept() {
    let mut w = world();
    let live: Vec<Manifest> = (1..=8).map(|i| manifest(i, &format!("live-{i}.bin"), 1)).collect();
    for m in &live {
        assert!(accepted(&w.air_manifest(m)));
    }
    w.air_heartbeat(&(1..=8).collect::<Vec<_>>(), true, &[]);
    assert!(!accepted(&w.air_manifest(&manifest(100, "new.bin", 1))));
    assert_eq!(w.county.progress().len(), 8);
    assert_eq!(w.county.stats().partials_ended, 0);
}

/// A newer version stated by the uplink's heartbeat: an older one in progress is dropped, an
/// older one aired again is refused, and the uplink is told each time; the stated version
/// and newer ones are taken. This holds for a county that never received the newer one.
#[test]
fn a_stated_latest_version_refuses_older_versions() {
    let mut w = world();
    assert!(accepted(&w.air_manifest(&manifest(2, "agent.bin", 2))));
    w.air_heartbeat(&[3], true, &[("agent.bin", 3)]);
    assert!(w.county.progress().is_empty(), "the older version in progress is dropped");
    assert_eq!(w.told(), vec![(2, RefusalCode::Superseded)]);
    assert!(!accepted(&w.air_manifest(&manifest(1, "agent.bin", 1))));
    assert_eq!(w.told(), vec![(1, RefusalCode::Superseded)]);
    assert!(accepted(&w.air_manifest(&manifest(3, "agent.bin", 3))));
    assert!(accepted(&w.air_manifest(&manifest(4, "other.bin", 1))), "other names are untouched");
}

/// A statement captured long ago and replayed (after a restart, when the receiver has
/// forgotten the last heartbeat) says nothing about now.
#[test]
fn an_old_heartbeat_states_nothing() {
    let mut w = world();
    w.heartbeat_ms = (NOW - 3600) * 1000;
    assert!(accepted(&w.air_manifest(&manifest(2, "agent.bin", 2))));
    let events = w.air_heartbeat(&[], true, &[("agent.bin", 3)]);
    assert!(events.iter().any(|e| matches!(e, ReceptionEvent::Heartbeat { .. })), "accepted as a heartbeat: {events:?}");
    assert_eq!(w.county.progress().len(), 1, "but its statement is not acted on");
}

struct Bytes(Vec<u8>);
impl BlockSource for Bytes {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = offset as usize;
        buf.copy_from_slice(&self.0[start..start + buf.len()]);
        Ok(())
    }
}

/// The broadcast machine's heartbeats: one at once when an object starts or stops, before
/// its first manifest; the live list; the latest version while an older one's manifest is
/// unexpired; always later than the last.
#[test]
fn the_uplink_states_what_it_airs_as_soon_as_it_changes() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let root = RootKey::generate(&mut rng);
    let network_key = NetworkKey::generate(&mut rng);
    let new_signer = || SigningKey::generate(&mut ChaCha8Rng::seed_from_u64(10), &root, 1, NOW - DAY, NOW + DAY);
    let signer = new_signer();
    let start = Instant::now();
    let config = BroadcastConfig {
        link_rate_bits_per_sec: 10_000_000,
        datagram_bytes_max: 1472,
        heartbeat_interval: Duration::from_secs(5),
        ..BroadcastConfig::default()
    };
    let mut uplink = Broadcaster::new(start, config, network_key.clone(), new_signer());
    let object = |id: u64, version: u64| {
        let payload = vec![7u8; 10_000];
        let oti = Oti::new_for_object(10_000, 1436, 1 << 20).expect("oti");
        let mut m = manifest(id, "agent.bin", version);
        m.oti = oti.encode();
        m.object_hash = *blake3::hash(&payload).as_bytes();
        m.block_hashes = satcast_protocol::fec::blocks(&oti).iter().map(|_| satcast_protocol::fec::block_hash(&payload)).collect();
        NewObject {
            signed_manifest: signer.sign_manifest(&m).expect("sign").to_bytes(),
            manifest: m,
            source: Box::new(Bytes(payload)),
            priority: Priority::Normal,
            not_before: None,
            deadline: None,
            delivery: Delivery::Carousel(AirPlan { target_loss: 0.1, passes: 1 }),
            resume: None,
        }
    };
    let mut buf = Vec::new();
    let mut next = |uplink: &mut Broadcaster, now: Instant, wall_ms: u64| {
        assert!(uplink.poll_transmit(now, wall_ms, &mut buf), "a datagram is due");
        let datagram = wire::parse(&buf, &network_key).expect("parses");
        match datagram.body {
            Body::Heartbeat(body) => Some(trust::verify_heartbeat(body, &root.public(), NOW).expect("verifies")),
            _ => None,
        }
    };
    let wall = NOW * 1000;
    let first = next(&mut uplink, start, wall).expect("a heartbeat first");
    assert!(first.live.is_empty() && first.live_complete && first.latest.is_empty(), "{first:?}");

    uplink.add_object(start, object(1, 1)).expect("add");
    let beat = next(&mut uplink, start, wall).expect("a heartbeat before the new object's manifest");
    assert_eq!((beat.live.clone(), beat.live_complete), (vec![1], true));
    assert!(beat.uplink_time_unix_ms > first.uplink_time_unix_ms, "later than the last, in the same millisecond");
    assert!(beat.latest.is_empty(), "one version of agent.bin: nothing older to refuse");
    assert!(next(&mut uplink, start, wall).is_none(), "then the manifest");

    uplink.add_object(start, object(2, 2)).expect("add");
    let beat = next(&mut uplink, start, wall).expect("a heartbeat");
    assert_eq!(beat.live, vec![1, 2]);
    let digest = trust::name_digest(Kind::Software, "agent.bin");
    assert_eq!(beat.latest, vec![LatestVersion { name: digest, version: 2 }], "version 1's manifest is unexpired");

    assert!(uplink.cancel(1));
    let beat = next(&mut uplink, start, wall).expect("a heartbeat when an object stops");
    assert_eq!(beat.live, vec![2]);
    assert_eq!(beat.latest, vec![LatestVersion { name: digest, version: 2 }], "still stated after the cancel");

    // After a restart the uplink notes its stored broadcasts: stated while version 1's
    // manifest is unexpired, not after.
    let mut uplink_later = Broadcaster::new(start, BroadcastConfig::default(), network_key.clone(), new_signer());
    uplink_later.note_aired(Kind::Software, "agent.bin", 1, NOW + 7 * DAY);
    uplink_later.note_aired(Kind::Software, "agent.bin", 2, NOW + 7 * DAY);
    let mut buf = Vec::new();
    assert!(uplink_later.poll_transmit(start, (NOW + 6 * DAY) * 1000, &mut buf));
    let Body::Heartbeat(body) = wire::parse(&buf, &network_key).expect("parses").body else { panic!("not a heartbeat") };
    let stated = trust::SignedHeartbeat::from_bytes(body).expect("decodes").heartbeat;
    assert_eq!(stated.latest, vec![LatestVersion { name: digest, version: 2 }], "noted at start, stated");
    let mut uplink_expired = Broadcaster::new(start, BroadcastConfig::default(), network_key.clone(), signer);
    uplink_expired.note_aired(Kind::Software, "agent.bin", 1, NOW + 7 * DAY);
    uplink_expired.note_aired(Kind::Software, "agent.bin", 2, NOW + 14 * DAY);
    assert!(uplink_expired.poll_transmit(start, (NOW + 8 * DAY) * 1000, &mut buf));
    let Body::Heartbeat(body) = wire::parse(&buf, &network_key).expect("parses").body else { panic!("not a heartbeat") };
    let stated = trust::SignedHeartbeat::from_bytes(body).expect("decodes").heartbeat;
    assert!(stated.latest.is_empty(), "version 1 expired: {stated:?}");
}

/// With a small MTU the statement is cut to fit one datagram (latest versions first, then
/// live ids, the list then marked incomplete), and the heartbeat still goes.
#[test]
fn a_small_mtu_cuts_the_statement_to_fit_one_datagram() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let root = RootKey::generate(&mut rng);
    let network_key = NetworkKey::generate(&mut rng);
    let signer = SigningKey::generate(&mut rng, &root, 1, NOW - DAY, NOW + DAY);
    let start = Instant::now();
    let config = BroadcastConfig { datagram_bytes_max: 300, ..BroadcastConfig::default() };
    let mut uplink = Broadcaster::new(start, config, network_key.clone(), signer);
    for i in 0..40u64 {
        // Two versions of each name, so each has an entry in the latest-version statement.
        uplink.note_aired(Kind::Policy, &format!("notice-{i}.txt"), 1, NOW + DAY);
        uplink.note_aired(Kind::Policy, &format!("notice-{i}.txt"), 2, NOW + DAY);
    }
    let mut buf = Vec::new();
    assert!(uplink.poll_transmit(start, NOW * 1000, &mut buf));
    assert!(buf.len() <= 300, "{} bytes", buf.len());
    let Body::Heartbeat(body) = wire::parse(&buf, &network_key).expect("parses").body else { panic!("not a heartbeat") };
    let stated = trust::verify_heartbeat(body, &root.public(), NOW).expect("verifies");
    assert!(!stated.latest.is_empty() && stated.latest.len() < 40, "cut, not emptied: {}", stated.latest.len());
    assert!(buf.len() > 300 - 16, "cut no further than needed: {} bytes", buf.len());
}
