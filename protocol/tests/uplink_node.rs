//! The uplink node driven by hand, as an executor would: a county is answered only after
//! its feedback was recorded, a completion with the wrong hash and a report about an
//! unknown broadcast change no ledger, a re-air leaves out the counties that have the
//! object, and nothing airs before its broadcast record is durable.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use satcast_protocol::broadcast::{AirPlan, BlockSource, BroadcastConfig, Delivery, NewObject, Priority};
use satcast_protocol::fec::{self, Oti};
use satcast_protocol::feedback::{AckReply, Feedback, FeedbackMessage};
use satcast_protocol::manifest::{Compression, Kind, Manifest};
use satcast_protocol::trust::{NetworkKey, RootKey, SigningKey};
use satcast_protocol::uplink_node::{
    CommandAnswer, Completion, KnownBroadcast, LedgerDecision, Outcome, Request, Resume, UplinkEvent, UplinkJob, UplinkNode,
    UplinkNodeConfig,
};

const NOW: u64 = 1_795_000_000;
const OBJECT: u64 = 7;
const HASH: [u8; 32] = [7; 32];

struct Bytes(Vec<u8>);

impl BlockSource for Bytes {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        let bytes = self.0.get(start..start + buf.len()).ok_or_else(|| std::io::Error::other("past the end"))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

struct Rig {
    node: UplinkNode,
    signer: SigningKey,
    now: Instant,
}

fn rig(acks: bool) -> Rig {
    let seed = 11;
    println!("seed {seed}; replay: cargo test -p satcast-protocol --test uplink_node (the seed is fixed)");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let root = RootKey::generate(&mut rng);
    let network_key = NetworkKey::generate(&mut rng);
    let heartbeats = SigningKey::generate(&mut rng, &root, 1, NOW - 100, NOW + 86_400);
    let signer = SigningKey::generate(&mut rng, &root, 2, NOW - 100, NOW + 86_400);
    let config = UplinkNodeConfig {
        broadcast: BroadcastConfig::default(),
        plan: AirPlan { target_loss: 0.1, passes: 1 },
        acks,
        preparations_max: 2,
    };
    let now = Instant::now();
    Rig { node: UplinkNode::new(now, config, network_key, heartbeats), signer, now }
}

fn job(prefixes: &[&str]) -> UplinkJob {
    UplinkJob {
        object_id: OBJECT,
        prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
        feedback: true,
        priority: Priority::Normal,
        queued_unix_secs: NOW,
        not_before_unix_ms: None,
        deadline_unix_ms: None,
    }
}

fn requests(node: &mut UplinkNode) -> Vec<Request> {
    std::iter::from_fn(|| node.poll_request()).collect()
}

fn events(node: &mut UplinkNode) -> Vec<UplinkEvent> {
    std::iter::from_fn(|| node.poll_event()).collect()
}

fn complete(county: &str, object_id: u64, object_hash: [u8; 32]) -> Feedback {
    Feedback { county_code: county.into(), message: FeedbackMessage::Complete { object_id, object_hash } }
}

fn codes(list: &[&str]) -> Vec<String> {
    list.iter().map(|c| (*c).to_owned()).collect()
}

/// A small object, signed, as a preparation worker would hand it back.
fn object(signer: &SigningKey, delivery: Delivery) -> Box<NewObject> {
    let mut payload = vec![0u8; 20_000];
    ChaCha8Rng::seed_from_u64(3).fill_bytes(&mut payload);
    let oti = Oti::new_for_object(payload.len() as u64, 1024, 1 << 20).expect("oti");
    let block_hashes = fec::blocks(&oti).iter().map(|b| fec::block_hash(&payload[b.offset as usize..][..b.len as usize])).collect();
    let manifest = Manifest {
        object_id: OBJECT,
        kind: Kind::Policy,
        name: "notice.txt".into(),
        version: 1,
        size_bytes: payload.len() as u64,
        compression: Compression::None,
        oti: oti.encode(),
        object_hash: *blake3::hash(&payload).as_bytes(),
        block_hashes,
        targets: vec!["41".into()],
        created_unix_secs: NOW - 10,
        expires_unix_secs: NOW + 86_400,
    };
    let signed_manifest = signer.sign_manifest(&manifest).expect("sign").to_bytes();
    Box::new(NewObject {
        manifest,
        signed_manifest,
        source: Box::new(Bytes(payload)),
        priority: Priority::Normal,
        not_before: None,
        deadline: None,
        delivery,
        resume: None,
    })
}

/// Runs the carrier for `seconds` of virtual time; returns the datagrams sent.
fn air(rig: &mut Rig, seconds: u64) -> u64 {
    let mut buf = Vec::new();
    let mut sent = 0;
    let end = rig.now + Duration::from_secs(seconds);
    while rig.now < end {
        while rig.node.poll_transmit(rig.now, NOW * 1000, &mut buf) {
            sent += 1;
        }
        rig.now += Duration::from_millis(5);
    }
    sent
}

#[test]
fn feedback_is_answered_only_after_its_record_completed() {
    let mut rig = rig(true);
    rig.node.load_broadcast(OBJECT, KnownBroadcast { object_hash: Some(HASH), targets: codes(&["410102"]), outcome: None });
    rig.node.handle_feedback(complete("410102", OBJECT, HASH), 1);
    let asked = requests(&mut rig.node);
    assert!(
        matches!(
            &asked[..],
            [Request::RecordFeedback { ledger: LedgerDecision::Delivered { object_id: OBJECT, hash: HASH }, token: 1, .. }]
        ),
        "only the record is asked for, no reply yet: {asked:?}"
    );
    assert_eq!(rig.node.feedback_in_flight(), 1);
    rig.node.handle_completion(rig.now, NOW * 1000, Completion::FeedbackRecorded { token: 1, result: Ok(()) });
    let asked = requests(&mut rig.node);
    assert!(matches!(&asked[..], [Request::Reply { token: 1, reply: AckReply::Recorded }]), "{asked:?}");

    // A record that failed is answered busy: the county sends it again.
    rig.node.handle_feedback(complete("410102", OBJECT, HASH), 2);
    assert!(matches!(&requests(&mut rig.node)[..], [Request::RecordFeedback { token: 2, .. }]));
    rig.node.handle_completion(rig.now, NOW * 1000, Completion::FeedbackRecorded { token: 2, result: Err("disk full".into()) });
    let asked = requests(&mut rig.node);
    assert!(matches!(&asked[..], [Request::Reply { token: 2, reply: AckReply::Busy }]), "{asked:?}");
    assert!(events(&mut rig.node).iter().any(|e| matches!(e, UplinkEvent::FeedbackNotRecorded { .. })));
}

#[test]
fn a_completion_with_the_wrong_hash_is_not_recorded() {
    let mut rig = rig(true);
    rig.node.load_broadcast(OBJECT, KnownBroadcast { object_hash: Some(HASH), targets: codes(&["410102"]), outcome: None });
    rig.node.handle_feedback(complete("410102", OBJECT, [9; 32]), 1);
    let asked = requests(&mut rig.node);
    // The county's registry entry is still kept (it was heard from), the ledger is not.
    assert!(matches!(&asked[..], [Request::RecordFeedback { ledger: LedgerDecision::Nothing, token: 1, .. }]), "{asked:?}");
    assert_eq!(events(&mut rig.node), [UplinkEvent::WrongHash { object_id: OBJECT, county: "410102".into() }]);
}

#[test]
fn feedback_about_an_unknown_broadcast_is_not_recorded() {
    let mut rig = rig(true);
    let progress = Feedback {
        county_code: "410102".into(),
        message: FeedbackMessage::Progress { object_id: 99, round: 0, needs: vec![5], symbols_received: 3 },
    };
    let refusal = Feedback { county_code: "410102".into(), message: FeedbackMessage::Rejected { object_id: 99, reason: "x".into() } };
    for (token, feedback) in [(1, complete("410102", 99, HASH)), (2, progress), (3, refusal)] {
        rig.node.handle_feedback(feedback, token);
        let asked = requests(&mut rig.node);
        assert!(matches!(&asked[..], [Request::RecordFeedback { ledger: LedgerDecision::Nothing, .. }]), "{asked:?}");
        assert_eq!(events(&mut rig.node), [UplinkEvent::UnknownBroadcast { object_id: 99, county: "410102".into() }]);
    }
}

#[test]
fn a_reair_targets_only_the_counties_that_lack_the_object() {
    let mut rig = rig(true);
    let targets = codes(&["410102", "410103", "420101"]);
    rig.node.load_broadcast(OBJECT, KnownBroadcast { object_hash: Some(HASH), targets, outcome: Some(Outcome::Completed) });
    let delivered: BTreeSet<String> = codes(&["410102"]).into_iter().collect();

    // Under a prefix: only what lacks it there.
    rig.node.handle_reair(OBJECT, Some(codes(&["41"])), None, Some(job(&["41", "42"])), Ok(delivered.clone()), 1);
    let asked = requests(&mut rig.node);
    assert!(matches!(&asked[..], [Request::Requeue { object_id: OBJECT, targets, .. }] if *targets == codes(&["410103"])), "{asked:?}");
    rig.node.handle_completion(rig.now, NOW * 1000, Completion::Requeued { object_id: OBJECT, result: Ok(()) });
    let asked = requests(&mut rig.node);
    assert!(
        matches!(&asked[0], Request::Answer { token: 1, answer: Ok(CommandAnswer::Reaired { object_id: OBJECT, targets: 1 }) }),
        "{asked:?}"
    );
    // Prepared again: the stored manifest re-signed, for the new targets.
    assert!(
        matches!(&asked[1], Request::Prepare { resume: Resume::Reair, delivery: Delivery::Feedback { targets }, .. } if *targets == codes(&["410103"])),
        "{asked:?}"
    );

    // Everywhere: every county that lacks it.
    let mut rig = self::rig(true);
    let targets = codes(&["410102", "410103", "420101"]);
    rig.node.load_broadcast(OBJECT, KnownBroadcast { object_hash: Some(HASH), targets, outcome: Some(Outcome::Deadline) });
    rig.node.handle_reair(OBJECT, None, None, Some(job(&["41", "42"])), Ok(delivered), 2);
    let asked = requests(&mut rig.node);
    assert!(matches!(&asked[..], [Request::Requeue { targets, .. }] if *targets == codes(&["410103", "420101"])), "{asked:?}");

    // Nobody lacks it: refused, nothing queued.
    let mut rig = self::rig(true);
    let targets = codes(&["410102"]);
    rig.node.load_broadcast(OBJECT, KnownBroadcast { object_hash: Some(HASH), targets, outcome: Some(Outcome::Completed) });
    rig.node.handle_reair(OBJECT, None, None, Some(job(&["41"])), Ok(codes(&["410102"]).into_iter().collect()), 3);
    let asked = requests(&mut rig.node);
    assert!(matches!(&asked[..], [Request::Answer { token: 3, answer: Err((409, _)) }]), "{asked:?}");
}

/// A county that enrolled after the broadcast's targets were fixed was never waited for; a
/// re-air for the counties that lack the object includes it.
#[test]
fn a_reair_includes_counties_that_enrolled_after_the_broadcast_was_targeted() {
    let mut rig = rig(true);
    rig.node.set_enrolled(codes(&["410102", "410103", "410104", "420101"]));
    let targets = codes(&["410102", "410103"]);
    rig.node.load_broadcast(OBJECT, KnownBroadcast { object_hash: Some(HASH), targets, outcome: Some(Outcome::Completed) });
    let delivered: BTreeSet<String> = codes(&["410102"]).into_iter().collect();
    rig.node.handle_reair(OBJECT, None, None, Some(job(&["41"])), Ok(delivered), 1);
    let asked = requests(&mut rig.node);
    assert!(matches!(&asked[..], [Request::Requeue { targets, .. }] if *targets == codes(&["410103", "410104"])), "{asked:?}");
}

#[test]
fn a_reair_runs_with_its_own_deadline_or_none_never_the_one_that_ended_it() {
    let deadline_passed = NOW * 1000;
    let later = (NOW + 3600) * 1000;
    for (token, asked_deadline) in [(1, None), (2, Some(later))] {
        let mut rig = rig(true);
        let targets = codes(&["410102"]);
        rig.node.load_broadcast(OBJECT, KnownBroadcast { object_hash: Some(HASH), targets, outcome: Some(Outcome::Deadline) });
        let first = UplinkJob { deadline_unix_ms: Some(deadline_passed), ..job(&["41"]) };
        rig.node.handle_reair(OBJECT, None, asked_deadline, Some(first), Ok(BTreeSet::new()), token);
        let asked = requests(&mut rig.node);
        assert!(
            matches!(&asked[..], [Request::Requeue { deadline_unix_ms, .. }] if *deadline_unix_ms == asked_deadline),
            "the job file must get the re-air's deadline: {asked:?}"
        );
        rig.node.handle_completion(rig.now, NOW * 1000, Completion::Requeued { object_id: OBJECT, result: Ok(()) });
        let asked = requests(&mut rig.node);
        assert!(
            matches!(&asked[..], [Request::Answer { .. }, Request::Prepare { job, resume: Resume::Reair, .. }] if job.deadline_unix_ms == asked_deadline),
            "{asked:?}"
        );
    }
}

#[test]
fn nothing_airs_before_its_broadcast_record_completed() {
    let mut rig = rig(true);
    rig.node.set_enrolled(codes(&["410102", "420101"]));
    rig.node.handle_queued(job(&["41"]));
    let asked = requests(&mut rig.node);
    let [Request::Prepare { job: asked_job, delivery, resume: Resume::Fresh }] = &asked[..] else { panic!("{asked:?}") };
    assert_eq!(asked_job.object_id, OBJECT);
    assert_eq!(*delivery, Delivery::Feedback { targets: codes(&["410102"]) }, "the enrolled counties under the prefix");
    let delivery = delivery.clone();

    let prepared = object(&rig.signer, delivery.clone());
    rig.node.handle_completion(rig.now, NOW * 1000, Completion::Prepared { object_id: OBJECT, result: Ok(prepared) });
    let asked = requests(&mut rig.node);
    assert!(
        matches!(&asked[..], [Request::RecordBroadcast { object_id: OBJECT, targets, .. }] if *targets == codes(&["410102"])),
        "{asked:?}"
    );
    air(&mut rig, 2);
    let stats = rig.node.stats();
    assert_eq!((stats.manifest_datagrams, stats.data_datagrams), (0, 0), "nothing of the object aired before its record");
    assert!(stats.heartbeat_datagrams > 0, "the carrier runs meanwhile");
    assert!(!rig.node.is_airing(OBJECT));

    rig.node.handle_completion(rig.now, NOW * 1000, Completion::BroadcastRecorded { object_id: OBJECT, result: Ok(()) });
    air(&mut rig, 1);
    let stats = rig.node.stats();
    assert!(stats.manifest_datagrams > 0 && stats.data_datagrams > 0, "it airs once recorded: {stats:?}");
    assert!(rig.node.is_airing(OBJECT));

    // A record that cannot be written: never aired.
    let mut rig = self::rig(true);
    rig.node.set_enrolled(codes(&["410102"]));
    rig.node.handle_queued(job(&["41"]));
    requests(&mut rig.node);
    let prepared = object(&rig.signer, delivery);
    rig.node.handle_completion(rig.now, NOW * 1000, Completion::Prepared { object_id: OBJECT, result: Ok(prepared) });
    requests(&mut rig.node);
    rig.node.handle_completion(rig.now, NOW * 1000, Completion::BroadcastRecorded { object_id: OBJECT, result: Err("disk full".into()) });
    air(&mut rig, 1);
    assert_eq!(rig.node.stats().data_datagrams, 0);
    assert!(events(&mut rig.node).iter().any(|e| matches!(e, UplinkEvent::CannotAir { object_id: OBJECT, .. })));
}

#[test]
fn a_job_cancelled_while_its_record_is_written_never_airs_and_is_recorded_cancelled() {
    let mut rig = rig(false);
    rig.node.handle_queued(job(&["41"]));
    let asked = requests(&mut rig.node);
    assert!(matches!(&asked[..], [Request::Prepare { delivery: Delivery::Carousel(_), .. }]), "no acks: a carousel: {asked:?}");
    let prepared = object(&rig.signer, Delivery::Carousel(AirPlan { target_loss: 0.1, passes: 1 }));
    rig.node.handle_completion(rig.now, NOW * 1000, Completion::Prepared { object_id: OBJECT, result: Ok(prepared) });
    requests(&mut rig.node);
    rig.node.handle_cancel(OBJECT, true, 5);
    let asked = requests(&mut rig.node);
    assert!(matches!(&asked[..], [Request::FinishJob { object_id: OBJECT }, Request::Answer { token: 5, answer: Ok(_) }]), "{asked:?}");
    rig.node.handle_completion(rig.now, NOW * 1000, Completion::BroadcastRecorded { object_id: OBJECT, result: Ok(()) });
    let asked = requests(&mut rig.node);
    assert!(matches!(&asked[..], [Request::RecordOutcome { object_id: OBJECT, outcome: Outcome::Cancelled }]), "{asked:?}");
    air(&mut rig, 1);
    assert_eq!(rig.node.stats().data_datagrams, 0);
}

#[test]
fn a_refusal_is_recorded_typed_and_an_older_receivers_text_reason_still_is() {
    use satcast_protocol::feedback::{Refusal, RefusalCode};
    let mut rig = rig(true);
    rig.node.load_broadcast(OBJECT, KnownBroadcast { object_hash: Some(HASH), targets: codes(&["410102", "410103"]), outcome: None });
    let typed = Refusal::new(RefusalCode::StorageFull, "needs 40.0 MiB, 12.0 MiB free");
    let new = Feedback { county_code: "410102".into(), message: FeedbackMessage::Refused { object_id: OBJECT, refusal: typed.clone() } };
    let old = Feedback {
        county_code: "410103".into(),
        message: FeedbackMessage::Rejected { object_id: OBJECT, reason: "rollback: offered version 1, accepted version 2".into() },
    };
    rig.node.handle_feedback(new, 1);
    let asked = requests(&mut rig.node);
    assert!(
        matches!(&asked[..], [Request::RecordFeedback { ledger: LedgerDecision::Refused { refusal, .. }, .. }] if *refusal == typed),
        "{asked:?}"
    );
    rig.node.handle_feedback(old, 2);
    let asked = requests(&mut rig.node);
    let [Request::RecordFeedback { ledger: LedgerDecision::Refused { refusal, .. }, .. }] = &asked[..] else { panic!("{asked:?}") };
    assert_eq!(refusal.code, RefusalCode::Other(0));
    assert_eq!(refusal.to_string(), "rollback: offered version 1, accepted version 2");
}

/// A county revoked (`keys revoke-receiver`) can neither read what is sealed nor report
/// (its certificates are refused): a broadcast airing for it completes once every other
/// county has it, recording it refused as revoked, and new broadcasts and re-airs leave it
/// out. Before, every broadcast to its prefix waited for it until its deadline.
#[test]
fn a_revoked_county_is_no_longer_waited_for_or_targeted() {
    let mut rig = rig(true);
    rig.node.set_enrolled(codes(&["410102", "410103"]));
    rig.node.handle_queued(job(&["41"]));
    let asked = requests(&mut rig.node);
    let [Request::Prepare { delivery, .. }] = &asked[..] else { panic!("{asked:?}") };
    assert_eq!(*delivery, Delivery::Feedback { targets: codes(&["410102", "410103"]) });
    let prepared = object(&rig.signer, delivery.clone());
    rig.node.handle_completion(rig.now, NOW * 1000, Completion::Prepared { object_id: OBJECT, result: Ok(prepared) });
    requests(&mut rig.node);
    rig.node.handle_completion(rig.now, NOW * 1000, Completion::BroadcastRecorded { object_id: OBJECT, result: Ok(()) });
    air(&mut rig, 2);
    let hash = *blake3::hash(&{
        let mut payload = vec![0u8; 20_000];
        ChaCha8Rng::seed_from_u64(3).fill_bytes(&mut payload);
        payload
    })
    .as_bytes();
    rig.node.handle_feedback(complete("410102", OBJECT, hash), 1);
    requests(&mut rig.node);
    rig.node.handle_completion(rig.now, NOW * 1000, Completion::FeedbackRecorded { token: 1, result: Ok(()) });
    air(&mut rig, 1);
    assert!(rig.node.is_airing(OBJECT), "410103 is still waited for");

    rig.node.set_revoked(rig.now, codes(&["410103"]).into_iter().collect());
    air(&mut rig, 1);
    assert!(!rig.node.is_airing(OBJECT), "the revoked county was still waited for");
    assert!(
        events(&mut rig.node).iter().any(|e| matches!(e, UplinkEvent::Finished { object_id: OBJECT, outcome: Outcome::Completed, .. })),
        "completed once only revoked counties lacked it"
    );

    // The next broadcast to the prefix, and a re-air, leave it out.
    rig.node.handle_queued(UplinkJob { object_id: OBJECT + 1, ..job(&["41"]) });
    let asked = requests(&mut rig.node);
    assert!(
        asked
            .iter()
            .any(|r| matches!(r, Request::Prepare { delivery: Delivery::Feedback { targets }, .. } if *targets == codes(&["410102"]))),
        "{asked:?}"
    );
    rig.node.handle_reair(OBJECT, None, None, Some(job(&["41"])), Ok(codes(&["410102"]).into_iter().collect()), 2);
    let asked = requests(&mut rig.node);
    assert!(
        matches!(&asked[..], [Request::Answer { token: 2, answer: Err((409, _)) }]),
        "nobody but the revoked county lacks it: {asked:?}"
    );
}
