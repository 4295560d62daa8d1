//! The uplink node: everything the uplink decides, around the [`Broadcaster`], with no I/O.
//! It takes queued jobs up (which to prepare next, on how many workers), targets them
//! (division-code prefixes against the enrolled registry: feedback targets or a carousel),
//! resumes interrupted broadcasts and re-airs finished ones, cancels, records outcomes and
//! checkpoints, and decides what each county's feedback does to the ledger. The uplink
//! daemon and the simulator execute its requests.
//!
//! Call order, for an executor:
//! 1. [`UplinkNode::load_broadcast`] for every stored broadcast record and
//!    [`UplinkNode::set_enrolled`] with the counties that have ever reported;
//! 2. [`UplinkNode::handle_queued`], [`UplinkNode::handle_feedback`],
//!    [`UplinkNode::handle_cancel`], [`UplinkNode::handle_reair`] as they happen,
//!    [`UplinkNode::handle_timeout`] when [`UplinkNode::poll_timeout`] comes due, and
//!    [`UplinkNode::poll_transmit`] until it returns `false`, sending each datagram;
//! 3. after each of those calls, [`UplinkNode::poll_request`] until `None`, carrying the
//!    requests out in that order (requests on the same store one after another, so an
//!    [`Request::Answer`] follows the writes before it), and [`UplinkNode::poll_event`]
//!    until `None`, for logs;
//! 4. [`UplinkNode::handle_completion`] for each completion, whenever it comes back.
//!
//! The rules it keeps: an object goes on the air only after its broadcast record is
//! durable ([`Request::RecordBroadcast`] completed), so a restart continues the same
//! broadcast with the same signature; a county's feedback is answered ([`Request::Reply`])
//! only after the [`Request::RecordFeedback`] that made it durable has completed, and the
//! broadcast machine hears of it only then; a completion with the wrong hash, or a report
//! about a broadcast this uplink never recorded, changes no ledger.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::broadcast::{AirPlan, AirStats, BroadcastConfig, BroadcastEvent, Broadcaster, Checkpoint, Delivery, NewObject, Priority};
use crate::feedback::{AckReply, Feedback, FeedbackMessage, Refusal, RefusalCode};
use crate::manifest::Manifest;
use crate::trust::SigningKey;
use crate::wire::NetworkKey;

/// How often where each airing broadcast stands is written down for a restart.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Feedback messages taken and not answered yet; beyond it a message is answered
/// [`AckReply::Busy`] at once (the county sends it again).
pub const FEEDBACK_IN_FLIGHT_MAX: usize = 4096;
/// The most jobs waiting for a preparation slot (far above the queue listing's bound).
pub const WAITING_JOBS_MAX: usize = 100_000;
/// The most node events held for the executor; beyond it the oldest are dropped.
pub const UPLINK_EVENTS_MAX: usize = 4096;
/// The refusal recorded for a county revoked while a broadcast waited for it.
pub const REVOKED_REASON: &str = "revoked: every certificate of this county is revoked";

/// Settings for the uplink node.
#[derive(Debug, Clone)]
pub struct UplinkNodeConfig {
    /// The broadcast machine's settings.
    pub broadcast: BroadcastConfig,
    /// How a carousel is aired.
    pub plan: AirPlan,
    /// Whether counties can report (an acknowledgement server runs): without it every
    /// broadcast is a carousel.
    pub acks: bool,
    /// Preparations run at once. The last free one is kept for emergency jobs, so an
    /// emergency notice never waits behind the hashing of a large file.
    pub preparations_max: usize,
}

/// What the node needs to know of one queued job (the executor keeps the rest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkJob {
    /// The broadcast.
    pub object_id: u64,
    /// Division-code prefixes it is for ("" is the nation).
    pub prefixes: Vec<String>,
    /// Feedback-driven repair (true) or a carousel.
    pub feedback: bool,
    /// Scheduling class.
    pub priority: Priority,
    /// When it was queued, seconds since the Unix epoch (older first within a class).
    pub queued_unix_secs: u64,
    /// Do not air before this time, milliseconds since the Unix epoch.
    pub not_before_unix_ms: Option<u64>,
    /// Stop airing at this time, milliseconds since the Unix epoch.
    pub deadline_unix_ms: Option<u64>,
}

/// What the node knows of one stored broadcast record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KnownBroadcast {
    /// The object's BLAKE3 from its stored manifest (None if that cannot be read back).
    pub object_hash: Option<[u8; 32]>,
    /// The counties it waits for (empty for a carousel).
    pub targets: Vec<String>,
    /// How it ended, if it did.
    pub outcome: Option<Outcome>,
}

/// How a broadcast ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every targeted county completed or refused.
    Completed,
    /// The deadline passed first.
    Deadline,
    /// A carousel aired all its passes.
    Aired,
    /// An operator cancelled it.
    Cancelled,
}

impl Outcome {
    /// The word the index and the operators see.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Deadline => "deadline",
            Outcome::Aired => "aired",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// The outcome a stored word stands for (any other word: ended, how is unknown, which
    /// the node treats like `aired`).
    pub fn parse(word: &str) -> Outcome {
        match word {
            "completed" => Outcome::Completed,
            "deadline" => Outcome::Deadline,
            "cancelled" => Outcome::Cancelled,
            _ => Outcome::Aired,
        }
    }
}

/// How a preparation opens a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Never recorded: read, hash and sign it anew.
    Fresh,
    /// Recorded and not ended (the uplink restarted mid-broadcast): the stored signed
    /// manifest and checkpoint, so counties keep what they have.
    Continue,
    /// Ended, and an operator asked to air it again: the stored manifest signed again with
    /// a fresh lifetime, and the stored checkpoint.
    Reair,
}

/// What the ledger records for one feedback message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerDecision {
    /// Nothing (a hello, a report about an unknown broadcast, a completion with the wrong
    /// hash): only the county's registry entry.
    Nothing,
    /// The county still needs this many symbols.
    InProgress {
        /// The broadcast.
        object_id: u64,
        /// Symbols needed, summed over blocks.
        needed: u64,
    },
    /// The county delivered the object.
    Delivered {
        /// The broadcast.
        object_id: u64,
        /// The hash it reported (the right one).
        hash: [u8; 32],
    },
    /// The county refused the manifest, or cannot take the object now.
    Refused {
        /// The broadcast.
        object_id: u64,
        /// Why (an older receiver's text reason as [`RefusalCode::Other`]).
        refusal: Refusal,
    },
    /// The county's post-receive hook ran.
    Hook {
        /// The broadcast.
        object_id: u64,
        /// Whether it succeeded.
        success: bool,
        /// What it said.
        detail: String,
    },
}

/// An operator command's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandAnswer {
    /// The broadcast was cancelled.
    Cancelled {
        /// The broadcast.
        object_id: u64,
    },
    /// The broadcast is queued again for this many counties.
    Reaired {
        /// The broadcast.
        object_id: u64,
        /// Counties targeted.
        targets: usize,
    },
}

/// Why an operator command was refused: an HTTP status and a one-line message.
pub type CommandRefusal = (u16, String);

/// Work the node needs done by its executor, in the order it must be done.
#[derive(Debug)]
pub enum Request {
    /// Make a job ready to air: hash and sign it, or reopen its stored record. Completed
    /// by [`Completion::Prepared`].
    Prepare {
        /// The job.
        job: UplinkJob,
        /// Feedback targets or a carousel.
        delivery: Delivery,
        /// How to open it.
        resume: Resume,
    },
    /// Stop a running preparation early: the job was cancelled. Not completed (its
    /// [`Completion::Prepared`] still comes).
    CancelPreparation {
        /// The broadcast.
        object_id: u64,
    },
    /// Write the broadcast record (a new one, or the stored one with this manifest and
    /// these targets, not ended) and make it durable, before the object airs. Completed by
    /// [`Completion::BroadcastRecorded`].
    RecordBroadcast {
        /// The broadcast.
        object_id: u64,
        /// The signed manifest as it will air.
        signed_manifest: Vec<u8>,
        /// Payload bytes.
        size_bytes: u64,
        /// Scheduling class.
        priority: Priority,
        /// The counties it waits for (empty for a carousel).
        targets: Vec<String>,
    },
    /// Record one county's feedback durably: its registry entry (last seen, and a hello's
    /// details), then the ledger as decided. Completed by [`Completion::FeedbackRecorded`].
    RecordFeedback {
        /// The message.
        feedback: Feedback,
        /// What the ledger records.
        ledger: LedgerDecision,
        /// The executor's token for the county's reply.
        token: u64,
    },
    /// Answer a county's feedback message: only ever after its record completed.
    Reply {
        /// The executor's token.
        token: u64,
        /// The answer.
        reply: AckReply,
    },
    /// Record how a broadcast ended, durably. Not completed.
    RecordOutcome {
        /// The broadcast.
        object_id: u64,
        /// How.
        outcome: Outcome,
    },
    /// Move a finished job out of the queue. Not completed.
    FinishJob {
        /// The broadcast.
        object_id: u64,
    },
    /// Write down where an airing broadcast stands. Not completed; the last of a round of
    /// checkpoints is followed by nothing else, so an executor flushes once per batch.
    RecordCheckpoint {
        /// The broadcast.
        object_id: u64,
        /// Where it stands.
        checkpoint: Checkpoint,
    },
    /// Re-air: record these targets durably, then put the job back in the queue with this
    /// deadline written into its job file (so a restart keeps it). Completed by
    /// [`Completion::Requeued`].
    Requeue {
        /// The broadcast.
        object_id: u64,
        /// The counties it waits for now.
        targets: Vec<String>,
        /// The re-air's own deadline, milliseconds since the Unix epoch (None: none).
        deadline_unix_ms: Option<u64>,
    },
    /// Answer an operator's command (after the requests before it were carried out).
    Answer {
        /// The executor's token.
        token: u64,
        /// The answer.
        answer: Result<CommandAnswer, CommandRefusal>,
    },
}

/// Why a preparation produced nothing to air.
#[derive(Debug)]
pub enum PrepareFailure {
    /// The job left the queue before it was prepared (finished or cancelled meanwhile).
    Gone,
    /// The preparation stopped because it was cancelled.
    Cancelled,
    /// It cannot be aired: the error, as text.
    Failed(String),
}

/// A finished [`Request`], handed back to the node.
#[derive(Debug)]
pub enum Completion {
    /// [`Request::Prepare`] finished (the object's priority and schedule are the node's to
    /// set).
    Prepared {
        /// The broadcast.
        object_id: u64,
        /// The object, or why there is none.
        result: Result<Box<NewObject>, PrepareFailure>,
    },
    /// [`Request::RecordBroadcast`] finished.
    BroadcastRecorded {
        /// The broadcast.
        object_id: u64,
        /// The error as text, if it failed.
        result: Result<(), String>,
    },
    /// [`Request::RecordFeedback`] finished.
    FeedbackRecorded {
        /// The executor's token.
        token: u64,
        /// The error as text, if it failed.
        result: Result<(), String>,
    },
    /// [`Request::Requeue`] finished.
    Requeued {
        /// The broadcast.
        object_id: u64,
        /// The error as text, if it failed.
        result: Result<(), String>,
    },
}

/// What the node reports to its executor, for logs and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UplinkEvent {
    /// A job went to a preparation worker.
    Preparing {
        /// The broadcast.
        object_id: u64,
    },
    /// A preparation answered (whatever the answer).
    PreparationEnded {
        /// The broadcast.
        object_id: u64,
    },
    /// A preparation was cancelled; nothing airs.
    PreparationCancelled {
        /// The broadcast.
        object_id: u64,
    },
    /// No enrolled county matches a feedback job's prefixes: it airs as a carousel.
    NoEnrolledTarget {
        /// The broadcast.
        object_id: u64,
    },
    /// A broadcast went on the air.
    Airing {
        /// The broadcast.
        object_id: u64,
    },
    /// A job cannot be aired; it stays in the queue, untouched until re-aired or restarted.
    CannotAir {
        /// The broadcast.
        object_id: u64,
        /// Why.
        error: String,
    },
    /// An event of the broadcast machine, as it came (rounds, idling, a source that
    /// failed; the end of a broadcast is followed by [`UplinkEvent::Finished`]).
    Broadcast(BroadcastEvent),
    /// A broadcast ended.
    Finished {
        /// The broadcast.
        object_id: u64,
        /// How.
        outcome: Outcome,
        /// What has gone on the air so far.
        stats: AirStats,
    },
    /// An operator cancelled a broadcast.
    Cancelled {
        /// The broadcast.
        object_id: u64,
    },
    /// An operator queued a broadcast again.
    ReairRequested {
        /// The broadcast.
        object_id: u64,
        /// Counties targeted.
        counties: usize,
    },
    /// A report about a broadcast this uplink never recorded: not recorded in the ledger.
    UnknownBroadcast {
        /// The broadcast named.
        object_id: u64,
        /// The county.
        county: String,
    },
    /// A completion with a hash other than the manifest's: not recorded in the ledger.
    WrongHash {
        /// The broadcast.
        object_id: u64,
        /// The county.
        county: String,
    },
    /// A feedback message could not be recorded; the county was answered busy.
    FeedbackNotRecorded {
        /// The error.
        error: String,
    },
    /// More feedback than [`FEEDBACK_IN_FLIGHT_MAX`] waits for the store: answered busy.
    FeedbackBusy,
}

/// A job waiting for a preparation slot or being prepared.
struct Preparing {
    job: UplinkJob,
    targets: Vec<String>,
    cancelled: bool,
}

/// A prepared object whose record is being made durable.
struct Recording {
    job: UplinkJob,
    object: Box<NewObject>,
    targets: Vec<String>,
    cancelled: bool,
}

/// A re-air whose targets are being recorded.
struct Reairing {
    job: UplinkJob,
    targets: Vec<String>,
    token: u64,
}

/// The uplink node. See the module documentation for the call order.
pub struct UplinkNode {
    broadcaster: Broadcaster,
    plan: AirPlan,
    acks: bool,
    preparations_max: usize,
    broadcasts: BTreeMap<u64, KnownBroadcast>,
    enrolled: BTreeSet<String>,
    /// Counties whose every certificate is revoked: never targeted, never waited for.
    revoked: BTreeSet<String>,
    waiting: BTreeMap<u64, UplinkJob>,
    preparing: BTreeMap<u64, Preparing>,
    recording: BTreeMap<u64, Recording>,
    reairing: BTreeMap<u64, Reairing>,
    airing: BTreeSet<u64>,
    failed: BTreeSet<u64>,
    /// Feedback being recorded, by token: the message, if the machine hears of it once
    /// recorded.
    feedback: BTreeMap<u64, (String, Option<Feedback>)>,
    /// Set when waiting jobs or free slots changed: jobs are handed out at the next
    /// [`UplinkNode::poll_request`], once per batch of inputs, so a batch is ranked whole.
    dispatch_due: bool,
    next_checkpoint: Instant,
    requests: VecDeque<Request>,
    events: VecDeque<UplinkEvent>,
    events_lost: u64,
}

impl std::fmt::Debug for UplinkNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UplinkNode")
            .field("broadcaster", &self.broadcaster)
            .field("waiting", &self.waiting.len())
            .field("preparing", &self.preparing.len())
            .field("airing", &self.airing.len())
            .finish()
    }
}

/// The instant a wall-clock time stands for, given both clocks now (in the past: now).
fn instant_at(now: Instant, wall_unix_ms: u64, at_unix_ms: u64) -> Instant {
    now + Duration::from_millis(at_unix_ms.saturating_sub(wall_unix_ms))
}

impl UplinkNode {
    /// A node with nothing queued; it airs heartbeats from `now` on.
    pub fn new(now: Instant, config: UplinkNodeConfig, network_key: NetworkKey, signing_key: SigningKey) -> Self {
        UplinkNode {
            broadcaster: Broadcaster::new(now, config.broadcast, network_key, signing_key),
            plan: config.plan,
            acks: config.acks,
            preparations_max: config.preparations_max.max(1),
            broadcasts: BTreeMap::new(),
            enrolled: BTreeSet::new(),
            revoked: BTreeSet::new(),
            waiting: BTreeMap::new(),
            preparing: BTreeMap::new(),
            recording: BTreeMap::new(),
            reairing: BTreeMap::new(),
            airing: BTreeSet::new(),
            failed: BTreeSet::new(),
            feedback: BTreeMap::new(),
            dispatch_due: false,
            next_checkpoint: now + CHECKPOINT_INTERVAL,
            requests: VecDeque::new(),
            events: VecDeque::new(),
            events_lost: 0,
        }
    }

    /// A broadcast record kept from before (a restart).
    pub fn load_broadcast(&mut self, object_id: u64, known: KnownBroadcast) {
        self.broadcasts.insert(object_id, known);
    }

    /// A manifest aired before this start (a stored broadcast's): while an older version's
    /// manifest may be unexpired, heartbeats state the newest version of its (kind, name).
    pub fn note_aired(&mut self, manifest: &Manifest) {
        self.broadcaster.note_aired(manifest.kind, &manifest.name, manifest.version, manifest.expires_unix_secs);
    }

    /// The counties that have ever reported (the enrolled registry).
    pub fn set_enrolled(&mut self, counties: impl IntoIterator<Item = String>) {
        self.enrolled = counties.into_iter().filter(|c| !self.revoked.contains(c)).collect();
    }

    /// The counties whose every certificate is revoked (`keys revoke-receiver`): no longer
    /// targeted by new broadcasts, and no longer waited for by those airing, which record
    /// them as refused ([`REVOKED_REASON`]). A county given a new bundle leaves the set and
    /// is enrolled again when it next reports.
    pub fn set_revoked(&mut self, now: Instant, counties: BTreeSet<String>) {
        for county in counties.difference(&self.revoked) {
            self.enrolled.remove(county);
            self.broadcaster.withdraw(now, county, REVOKED_REASON);
        }
        self.revoked = counties;
        self.collect();
    }

    /// Airs this signed next network key after every heartbeat, or stops (None).
    pub fn set_next_network_key(&mut self, signed_next_network_key: Option<Vec<u8>>) {
        self.broadcaster.set_next_network_key(signed_next_network_key);
    }

    /// Tags every datagram with `key` from now on (a rotation's activation).
    pub fn set_network_key(&mut self, key: NetworkKey) {
        self.broadcaster.set_network_key(key);
    }

    /// After a switch: also airs the current key's announcement and the key wraps under the
    /// previous key, for counties that missed the switch (see
    /// [`Broadcaster::set_network_key_handover`]); or stops (None).
    pub fn set_network_key_handover(&mut self, handover: Option<(NetworkKey, Vec<u8>)>) {
        self.broadcaster.set_network_key_handover(handover);
    }

    /// Signs heartbeats with a new key from now on (after a rotation).
    pub fn set_signing_key(&mut self, signing_key: SigningKey) {
        self.broadcaster.set_signing_key(signing_key);
    }

    /// Airs these signed key-wrap messages, in turn, after every heartbeat from now on.
    pub fn set_key_wraps(&mut self, signed_key_wraps: Vec<Vec<u8>>) {
        self.broadcaster.set_key_wraps(signed_key_wraps);
    }

    /// Airs this root-signed revocation list after every heartbeat from now on.
    pub fn set_revocation(&mut self, signed_revocation: Option<Vec<u8>>) {
        self.broadcaster.set_revocation(signed_revocation);
    }

    /// A job found in the queue. Jobs airing, being prepared or that could not be aired
    /// are not taken up again.
    pub fn handle_queued(&mut self, job: UplinkJob) {
        let id = job.object_id;
        let busy = self.airing.contains(&id)
            || self.failed.contains(&id)
            || self.preparing.contains_key(&id)
            || self.recording.contains_key(&id)
            || self.reairing.contains_key(&id);
        if !busy && (self.waiting.len() < WAITING_JOBS_MAX || self.waiting.contains_key(&id)) {
            self.waiting.insert(id, job);
            self.dispatch_due = true;
        }
    }

    /// One authenticated feedback message (the transport checked its county), with the
    /// executor's token for its reply.
    pub fn handle_feedback(&mut self, feedback: Feedback, token: u64) {
        if self.feedback.len() >= FEEDBACK_IN_FLIGHT_MAX {
            self.push(UplinkEvent::FeedbackBusy);
            self.requests.push_back(Request::Reply { token, reply: AckReply::Busy });
            return;
        }
        let county = feedback.county_code.clone();
        let about = match &feedback.message {
            FeedbackMessage::Hello { .. } => None,
            FeedbackMessage::Progress { object_id, .. }
            | FeedbackMessage::PassProgress { object_id, .. }
            | FeedbackMessage::Complete { object_id, .. }
            | FeedbackMessage::Rejected { object_id, .. }
            | FeedbackMessage::Refused { object_id, .. }
            | FeedbackMessage::HookResult { object_id, .. } => Some(*object_id),
        };
        // Reports about broadcasts this uplink never recorded do not grow the ledger.
        let known = about.map(|id| self.broadcasts.get(&id));
        let about_a_known_broadcast = matches!(known, Some(Some(_)));
        let ledger = match (&feedback.message, known) {
            (FeedbackMessage::Hello { .. }, _) => LedgerDecision::Nothing,
            (_, Some(None)) => {
                let object_id = about.unwrap_or_default();
                self.push(UplinkEvent::UnknownBroadcast { object_id, county: county.clone() });
                LedgerDecision::Nothing
            }
            // Mid-pass reports steer the airing only; the ledger hears the county's need
            // from its report after the round's marker, and 2000 counties a second need
            // not cost 2000 writes.
            (FeedbackMessage::PassProgress { .. }, _) => LedgerDecision::Nothing,
            (FeedbackMessage::Progress { object_id, needs, .. }, _) => {
                LedgerDecision::InProgress { object_id: *object_id, needed: needs.iter().map(|n| u64::from(*n)).sum() }
            }
            (FeedbackMessage::Complete { object_id, object_hash }, Some(Some(known))) => {
                if known.object_hash.is_some_and(|hash| hash != *object_hash) {
                    self.push(UplinkEvent::WrongHash { object_id: *object_id, county: county.clone() });
                    LedgerDecision::Nothing
                } else {
                    LedgerDecision::Delivered { object_id: *object_id, hash: *object_hash }
                }
            }
            (FeedbackMessage::Complete { .. }, None) => LedgerDecision::Nothing,
            (FeedbackMessage::Rejected { object_id, reason }, _) => {
                LedgerDecision::Refused { object_id: *object_id, refusal: Refusal::new(RefusalCode::Other(0), reason.clone()) }
            }
            (FeedbackMessage::Refused { object_id, refusal }, _) => {
                LedgerDecision::Refused { object_id: *object_id, refusal: refusal.clone() }
            }
            (FeedbackMessage::HookResult { object_id, success, detail }, _) => {
                LedgerDecision::Hook { object_id: *object_id, success: *success, detail: detail.clone() }
            }
        };
        // The machine hears only of what it may act on: never of an unknown broadcast or
        // a completion the ledger refused.
        let tell = matches!(feedback.message, FeedbackMessage::Hello { .. })
            || (matches!(feedback.message, FeedbackMessage::PassProgress { .. }) && about_a_known_broadcast)
            || ledger != LedgerDecision::Nothing;
        self.feedback.insert(token, (county, tell.then(|| feedback.clone())));
        self.requests.push_back(Request::RecordFeedback { feedback, ledger, token });
    }

    /// An operator's cancel. `queued` says whether the executor found the job's file in the
    /// queue (a job the node has not been handed yet can still be cancelled).
    pub fn handle_cancel(&mut self, object_id: u64, queued: bool, token: u64) {
        let recorded = self.broadcasts.contains_key(&object_id);
        let mut held = false;
        if let Some(preparing) = self.preparing.get_mut(&object_id) {
            // The worker stops at its next block; what it hands back is dropped.
            preparing.cancelled = true;
            self.requests.push_back(Request::CancelPreparation { object_id });
            held = true;
        }
        if let Some(recording) = self.recording.get_mut(&object_id) {
            recording.cancelled = true;
            held = true;
        }
        let answer = if self.broadcaster.cancel(object_id)
            || held
            || self.waiting.remove(&object_id).is_some()
            || (queued && !self.airing.contains(&object_id) && !recorded)
        {
            self.airing.remove(&object_id);
            if recorded {
                self.set_outcome(object_id, Outcome::Cancelled);
            }
            self.requests.push_back(Request::FinishJob { object_id });
            self.push(UplinkEvent::Cancelled { object_id });
            Ok(CommandAnswer::Cancelled { object_id })
        } else if recorded {
            Err((409, format!("broadcast {object_id:016x} is not airing")))
        } else {
            Err((404, format!("unknown broadcast {object_id:016x}")))
        };
        self.requests.push_back(Request::Answer { token, answer });
    }

    /// An operator's re-air of a finished broadcast, for the counties (under `prefixes`)
    /// that lack it. The executor hands over the job file (None if it is gone) and the
    /// counties the ledger has as delivered (or why it could not read them). The re-air
    /// runs until `deadline_unix_ms`, or with no deadline: never the first airing's, which
    /// may well be what ended it.
    pub fn handle_reair(
        &mut self,
        object_id: u64,
        prefixes: Option<Vec<String>>,
        deadline_unix_ms: Option<u64>,
        job: Option<UplinkJob>,
        delivered: Result<BTreeSet<String>, String>,
        token: u64,
    ) {
        match self.reair(object_id, prefixes, job, delivered) {
            Ok((mut job, targets)) => {
                job.deadline_unix_ms = deadline_unix_ms;
                self.requests.push_back(Request::Requeue { object_id, targets: targets.clone(), deadline_unix_ms });
                self.reairing.insert(object_id, Reairing { job, targets, token });
            }
            Err(refusal) => self.requests.push_back(Request::Answer { token, answer: Err(refusal) }),
        }
    }

    fn reair(
        &mut self,
        object_id: u64,
        prefixes: Option<Vec<String>>,
        job: Option<UplinkJob>,
        delivered: Result<BTreeSet<String>, String>,
    ) -> Result<(UplinkJob, Vec<String>), CommandRefusal> {
        let id = format!("{object_id:016x}");
        let Some(known) = self.broadcasts.get(&object_id) else { return Err((404, format!("unknown broadcast {id}"))) };
        if known.outcome.is_none() || self.reairing.contains_key(&object_id) {
            return Err((409, format!("broadcast {id} is still airing")));
        }
        let Some(job) = job else { return Err((404, format!("the job file of {id} is gone"))) };
        let delivered = delivered.map_err(|e| (503, e))?;
        // Those it was aired for, and counties under its prefixes that enrolled since (a new
        // PC, a county back from a long outage): the broadcast never waited for them.
        let mut candidates: BTreeSet<String> = known.targets.iter().cloned().collect();
        candidates.extend(self.enrolled_under(&job.prefixes));
        let targets: Vec<String> = candidates
            .into_iter()
            .filter(|c| !self.revoked.contains(c))
            .filter(|c| !delivered.contains(c))
            .filter(|c| prefixes.as_ref().is_none_or(|p| p.iter().any(|p| c.starts_with(p.as_str()))))
            .collect();
        if targets.is_empty() {
            return Err((409, format!("every targeted county under those prefixes already has {id}")));
        }
        Ok((job, targets))
    }

    /// Takes back the result of a request.
    pub fn handle_completion(&mut self, now: Instant, wall_unix_ms: u64, completion: Completion) {
        match completion {
            Completion::Prepared { object_id, result } => self.prepared(object_id, result),
            Completion::BroadcastRecorded { object_id, result } => self.recorded(now, wall_unix_ms, object_id, result),
            Completion::FeedbackRecorded { token, result } => {
                let Some((county, feedback)) = self.feedback.remove(&token) else { return };
                let reply = match result {
                    Ok(()) => {
                        if !self.revoked.contains(&county) {
                            self.enrolled.insert(county);
                        }
                        if let Some(feedback) = feedback {
                            self.broadcaster.handle_feedback(now, &feedback);
                        }
                        AckReply::Recorded
                    }
                    Err(error) => {
                        self.push(UplinkEvent::FeedbackNotRecorded { error });
                        AckReply::Busy
                    }
                };
                self.requests.push_back(Request::Reply { token, reply });
            }
            Completion::Requeued { object_id, result } => {
                let Some(Reairing { job, targets, token }) = self.reairing.remove(&object_id) else { return };
                let answer = match result {
                    Ok(()) => {
                        if let Some(known) = self.broadcasts.get_mut(&object_id) {
                            known.targets = targets.clone();
                        }
                        self.failed.remove(&object_id);
                        self.push(UplinkEvent::ReairRequested { object_id, counties: targets.len() });
                        self.waiting.insert(object_id, job);
                        Ok(CommandAnswer::Reaired { object_id, targets: targets.len() })
                    }
                    Err(error) => Err((503, error)),
                };
                self.requests.push_back(Request::Answer { token, answer });
                self.dispatch_due = true;
            }
        }
        self.collect();
    }

    /// When [`UplinkNode::handle_timeout`] or [`UplinkNode::poll_transmit`] should next be
    /// called.
    pub fn poll_timeout(&self) -> Instant {
        self.broadcaster.poll_timeout().map_or(self.next_checkpoint, |t| t.min(self.next_checkpoint))
    }

    /// Checkpoints that came due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_checkpoint {
            self.next_checkpoint = now + CHECKPOINT_INTERVAL;
            self.checkpoint_all();
        }
    }

    /// Asks for a checkpoint of every airing broadcast now (before a stop).
    pub fn checkpoint_all(&mut self) {
        for object_id in self.broadcaster.airing() {
            if let Some(checkpoint) = self.broadcaster.checkpoint(object_id) {
                self.requests.push_back(Request::RecordCheckpoint { object_id, checkpoint });
            }
        }
    }

    /// The next datagram to send, if the pacer allows one now.
    pub fn poll_transmit(&mut self, now: Instant, wall_unix_ms: u64, out: &mut Vec<u8>) -> bool {
        let sent = self.broadcaster.poll_transmit(now, wall_unix_ms, out);
        self.collect();
        sent
    }

    /// The next request, in the order they must be carried out.
    pub fn poll_request(&mut self) -> Option<Request> {
        if std::mem::take(&mut self.dispatch_due) {
            self.dispatch();
        }
        self.requests.pop_front()
    }

    /// The next event, for logs.
    pub fn poll_event(&mut self) -> Option<UplinkEvent> {
        self.events.pop_front()
    }

    /// What has gone on the air so far.
    pub fn stats(&self) -> AirStats {
        self.broadcaster.stats()
    }

    /// Events dropped because the executor did not take them.
    pub fn events_lost(&self) -> u64 {
        self.events_lost
    }

    /// The broadcast machine (read-only: for counters and the simulator's views).
    pub fn broadcaster(&self) -> &Broadcaster {
        &self.broadcaster
    }

    /// Feedback messages taken and not answered yet.
    pub fn feedback_in_flight(&self) -> usize {
        self.feedback.len()
    }

    /// Whether a broadcast is on the air.
    pub fn is_airing(&self, object_id: u64) -> bool {
        self.airing.contains(&object_id)
    }

    /// The enrolled counties under any of `prefixes`.
    fn enrolled_under(&self, prefixes: &[String]) -> Vec<String> {
        self.enrolled.iter().filter(|code| prefixes.iter().any(|p| code.starts_with(p.as_str()))).cloned().collect()
    }

    /// Feedback-driven repair for the enrolled counties the job targets (or `only`, the
    /// targets of its record), or a carousel when nobody can report, the job asks for none,
    /// or no targeted county is enrolled yet.
    fn delivery_for(&mut self, job: &UplinkJob, only: Option<&[String]>) -> (Delivery, Vec<String>) {
        if !self.acks || !job.feedback {
            return (Delivery::Carousel(self.plan), Vec::new());
        }
        let targets = match only {
            Some(only) => only.iter().filter(|c| !self.revoked.contains(*c)).cloned().collect(),
            None => self.enrolled_under(&job.prefixes),
        };
        if targets.is_empty() {
            self.push(UplinkEvent::NoEnrolledTarget { object_id: job.object_id });
            return (Delivery::Carousel(self.plan), Vec::new());
        }
        (Delivery::Feedback { targets: targets.clone() }, targets)
    }

    /// Hands waiting jobs to free preparation slots: emergencies first, then by class,
    /// then oldest first. A job that is not an emergency never takes the last free slot.
    fn dispatch(&mut self) {
        loop {
            let Some(job) = self.waiting.values().min_by_key(|job| (job.priority, job.queued_unix_secs)) else { return };
            let free = self.preparations_max.saturating_sub(self.preparing.len());
            if free == 0 || (free == 1 && job.priority != Priority::Emergency) {
                return;
            }
            let object_id = job.object_id;
            let Some(job) = self.waiting.remove(&object_id) else { return };
            let known = self.broadcasts.get(&object_id).cloned();
            let resume = match &known {
                None => Resume::Fresh,
                Some(known) if known.outcome.is_some() => Resume::Reair,
                Some(_) => Resume::Continue,
            };
            let only = known.filter(|k| !k.targets.is_empty()).map(|k| k.targets);
            let (delivery, targets) = self.delivery_for(&job, only.as_deref());
            self.push(UplinkEvent::Preparing { object_id });
            self.requests.push_back(Request::Prepare { job: job.clone(), delivery, resume });
            self.preparing.insert(object_id, Preparing { job, targets, cancelled: false });
        }
    }

    /// A preparation answered: record the object before it airs, or say why not.
    fn prepared(&mut self, object_id: u64, result: Result<Box<NewObject>, PrepareFailure>) {
        let Some(Preparing { job, targets, cancelled }) = self.preparing.remove(&object_id) else { return };
        self.push(UplinkEvent::PreparationEnded { object_id });
        match result {
            _ if cancelled => self.push(UplinkEvent::PreparationCancelled { object_id }),
            // It left the queue (finished, cancelled) before a worker took it up.
            Err(PrepareFailure::Gone) => {}
            Err(PrepareFailure::Cancelled) => self.push(UplinkEvent::PreparationCancelled { object_id }),
            Err(PrepareFailure::Failed(error)) => self.cannot_air(object_id, error),
            Ok(object) => {
                self.requests.push_back(Request::RecordBroadcast {
                    object_id,
                    signed_manifest: object.signed_manifest.clone(),
                    size_bytes: object.manifest.size_bytes,
                    priority: job.priority,
                    targets: targets.clone(),
                });
                self.recording.insert(object_id, Recording { job, object, targets, cancelled: false });
            }
        }
        self.dispatch_due = true;
    }

    /// The record is durable: the object goes on the air.
    fn recorded(&mut self, now: Instant, wall_unix_ms: u64, object_id: u64, result: Result<(), String>) {
        let Some(Recording { job, mut object, targets, cancelled }) = self.recording.remove(&object_id) else { return };
        if let Err(error) = result {
            self.cannot_air(object_id, error);
            return;
        }
        self.broadcasts.insert(object_id, KnownBroadcast { object_hash: Some(object.manifest.delivered_hash()), targets, outcome: None });
        if cancelled {
            // Cancelled while its record was written: the record says so.
            self.set_outcome(object_id, Outcome::Cancelled);
            return;
        }
        object.priority = job.priority;
        object.not_before = job.not_before_unix_ms.map(|at| instant_at(now, wall_unix_ms, at));
        object.deadline = job.deadline_unix_ms.map(|at| instant_at(now, wall_unix_ms, at));
        match self.broadcaster.add_object(now, *object) {
            Ok(()) => {
                self.airing.insert(object_id);
                self.push(UplinkEvent::Airing { object_id });
            }
            Err(error) => self.cannot_air(object_id, error.to_string()),
        }
    }

    fn cannot_air(&mut self, object_id: u64, error: String) {
        self.failed.insert(object_id);
        self.push(UplinkEvent::CannotAir { object_id, error });
    }

    fn set_outcome(&mut self, object_id: u64, outcome: Outcome) {
        if let Some(known) = self.broadcasts.get_mut(&object_id) {
            known.outcome = Some(outcome);
            self.requests.push_back(Request::RecordOutcome { object_id, outcome });
        }
    }

    /// Moves the machine's events into the node's decisions and events.
    fn collect(&mut self) {
        while let Some(event) = self.broadcaster.poll_event() {
            let finished = match &event {
                BroadcastEvent::Completed { object_id, .. } => Some((*object_id, Outcome::Completed)),
                BroadcastEvent::DeadlinePassed { object_id, .. } => Some((*object_id, Outcome::Deadline)),
                BroadcastEvent::CarouselFinished { object_id } => Some((*object_id, Outcome::Aired)),
                BroadcastEvent::SourceFailed { object_id, .. } => {
                    self.airing.remove(object_id);
                    self.failed.insert(*object_id);
                    None
                }
                BroadcastEvent::RoundStarted { .. } | BroadcastEvent::RoundEnded { .. } | BroadcastEvent::Idle { .. } => None,
            };
            self.push(UplinkEvent::Broadcast(event));
            if let Some((object_id, outcome)) = finished {
                self.push(UplinkEvent::Finished { object_id, outcome, stats: self.broadcaster.stats() });
                self.set_outcome(object_id, outcome);
                self.airing.remove(&object_id);
                self.requests.push_back(Request::FinishJob { object_id });
            }
        }
    }

    fn push(&mut self, event: UplinkEvent) {
        if self.events.len() >= UPLINK_EVENTS_MAX {
            self.events.pop_front();
            self.events_lost += 1;
        }
        self.events.push_back(event);
    }
}
