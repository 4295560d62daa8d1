//! The receiver node: everything a county receiver decides, around the [`Reception`]
//! machine, with no I/O. It owns the delivery transaction (hook record, commit, version
//! record, then the acknowledgement), retries what storage could not do yet, and summarises
//! storage failures; the receiver daemon and the simulator execute its requests.
//!
//! Call order, for an executor:
//! 1. [`ReceiverNode::set_delivered`] and [`ReceiverNode::set_revocations`] from durable
//!    trust state, [`ReceiverNode::set_cached`] for every object in the cache, then
//!    [`ReceiverNode::resume`] for every partial object storage kept;
//! 2. [`ReceiverNode::handle_datagram`] for each datagram, [`ReceiverNode::handle_timeout`]
//!    when [`ReceiverNode::poll_timeout`] comes due, [`ReceiverNode::handle_tick`] about
//!    once a second;
//! 3. after each of those calls, [`ReceiverNode::poll_request`] until `None`, carrying the
//!    requests out in that order, and [`ReceiverNode::poll_event`] until `None`, for logs;
//! 4. [`ReceiverNode::handle_completion`] for each completion, whenever it comes back.
//!
//! The rule it keeps: a delivery is acknowledged (its Complete queued for the uplink, its
//! hook released) only after the requests that made it durable have completed: the hook
//! recorded as due, the object committed to the cache and delivered, its version recorded.
//! Each of those requests is idempotent, so an executor that crashed part-way simply gets
//! them again after a restart.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use crate::feedback::{Feedback, FeedbackMessage};
use crate::manifest::{Kind, Manifest};
use crate::object_id::ObjectId;
use crate::reception::{Progress, Reception, ReceptionConfig, ReceptionEvent, ReceptionStats, Stuck};
use crate::storage::{Held, StoreCompletion, StoreRequest};
use crate::trust::Accepted;

/// Settings for one receiver node.
#[derive(Debug, Clone)]
pub struct ReceiverNodeConfig {
    /// The reception machine's settings.
    pub reception: ReceptionConfig,
    /// Kinds that have a post-receive hook: their deliveries are recorded as due first.
    pub hook_kinds: Vec<Kind>,
}

/// Work the node needs done by its executor, in the order it must be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Symbol and block storage for the reception machine.
    Store(StoreRequest),
    /// Record the object's post-receive hook as due, before it is delivered, so a crash
    /// cannot lose the hook. Completed by [`Completion::HookRecorded`].
    RecordHookDue {
        /// The object to be delivered.
        manifest: Box<Manifest>,
    },
    /// Move the verified object into the content-addressed cache and deliver it by atomic
    /// rename; idempotent (an object already in the cache is delivered from there).
    /// Completed by [`Completion::Committed`].
    Commit {
        /// The object.
        manifest: Box<Manifest>,
    },
    /// Record the delivered version of (kind, name) durably (rollback protection).
    /// Completed by [`Completion::VersionRecorded`].
    RecordVersion {
        /// The delivered object.
        manifest: Box<Manifest>,
    },
    /// Release a delivered object's hook to the hook runner. Completed by
    /// [`Completion::HookReleased`].
    ReleaseHook {
        /// The object.
        object_id: u64,
    },
    /// Record a root-signed revocation list durably. Completed only on failure.
    RecordRevocations {
        /// The list's sequence.
        sequence: u64,
        /// Every revoked serial.
        revoked_serials: Vec<u64>,
    },
    /// Queue feedback for the uplink durably. Completed only on failure.
    PushOutbox {
        /// The message.
        feedback: Feedback,
    },
}

/// Whether a hook was recorded as due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookRecord {
    /// Recorded: release it once delivered.
    Due,
    /// It ran (or was settled) before: nothing to release.
    AlreadyHandled,
}

/// A finished [`Request`], handed back to the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// A storage request finished.
    Store(StoreCompletion),
    /// [`Request::RecordHookDue`] finished.
    HookRecorded {
        /// The object.
        object_id: u64,
        /// How, or the error as text.
        result: Result<HookRecord, String>,
    },
    /// [`Request::Commit`] finished.
    Committed {
        /// The object.
        object_id: u64,
        /// The error as text, if it failed.
        result: Result<(), String>,
    },
    /// [`Request::RecordVersion`] finished.
    VersionRecorded {
        /// The object.
        object_id: u64,
        /// The error as text, if it failed.
        result: Result<(), String>,
    },
    /// [`Request::ReleaseHook`] finished.
    HookReleased {
        /// The object.
        object_id: u64,
        /// The error as text, if it failed.
        result: Result<(), String>,
    },
    /// [`Request::RecordRevocations`] failed: the machine enforces the list until the next
    /// restart, after which the carousel's copy is accepted and recorded again.
    RevocationsNotRecorded {
        /// The error, as text.
        error: String,
    },
    /// [`Request::PushOutbox`] failed. A completion or refusal is queued again at the next
    /// tick (the uplink may wait for it with nothing more to ask); a progress report is
    /// dropped (the next one replaces it).
    OutboxFailed {
        /// The message.
        feedback: Feedback,
        /// The error, as text.
        error: String,
    },
}

/// A step of the delivery transaction, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStep {
    /// Recording the hook as due.
    RecordHook,
    /// Committing to the cache and delivering.
    Commit,
    /// Recording the version.
    RecordVersion,
}

impl std::fmt::Display for DeliveryStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeliveryStep::RecordHook => "recording the post-receive hook",
            DeliveryStep::Commit => "committing to the cache",
            DeliveryStep::RecordVersion => "recording the delivered version",
        })
    }
}

/// An object not delivered yet, and why, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeStuck {
    /// Waiting for symbols, refused, or storage failing.
    Reception(Stuck),
    /// Complete, but a delivery step keeps failing (retried every tick).
    Delivery {
        /// The object.
        object_id: u64,
        /// kind/name.
        name: String,
        /// The step.
        step: DeliveryStep,
        /// Its last error.
        error: String,
    },
}

/// What the node reports to its executor, for logs and status.
#[derive(Debug)]
pub enum NodeEvent {
    /// An event of the reception machine (not its storage failures or completions, which
    /// the node handles and summarises).
    Reception(ReceptionEvent),
    /// An object was delivered and its version recorded; its Complete is queued.
    Delivered {
        /// The object.
        manifest: Box<Manifest>,
    },
    /// A delivery step failed; it is retried every tick. Said once per delivery and step.
    DeliveryWaiting {
        /// The object.
        object_id: u64,
        /// The step.
        step: DeliveryStep,
        /// The error, as text.
        error: String,
    },
    /// Storage failures since the last summary (at most one summary per tick).
    StoreFailures {
        /// How many.
        failures: u64,
        /// The last one's error.
        last_error: String,
    },
    /// A revocation list or feedback message could not be recorded.
    RecordFailed {
        /// What and why, as text.
        error: String,
    },
}

struct Delivery {
    manifest: Box<Manifest>,
    step: DeliveryStep,
    hook_due: bool,
    in_flight: bool,
    /// The step that last failed, so a retry that fails the same way is not said again.
    warned: Option<DeliveryStep>,
    /// The last failure, until the step succeeds: for status.
    error: Option<String>,
}

/// The receiver node. See the module documentation for the call order.
pub struct ReceiverNode {
    reception: Reception,
    hook_kinds: Vec<Kind>,
    deliveries: BTreeMap<u64, Delivery>,
    /// Delivered objects whose hook could not be released yet.
    unreleased_hooks: Vec<u64>,
    /// Completions and refusals the outbox could not take, queued again every tick.
    unqueued: Vec<Feedback>,
    requests: VecDeque<Request>,
    events: VecDeque<NodeEvent>,
    store_failures: (u64, String),
    events_lost: u64,
}

/// The most completions and refusals held for a retry while the outbox fails (one per
/// object: far above what a county completes while its disk is full).
pub const UNQUEUED_FEEDBACK_MAX: usize = 4096;
/// The most node events held for the executor; beyond it the oldest are dropped.
pub const NODE_EVENTS_MAX: usize = 4096;

impl std::fmt::Debug for ReceiverNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverNode").field("reception", &self.reception).field("deliveries", &self.deliveries.len()).finish()
    }
}

impl ReceiverNode {
    /// A node that knows nothing yet.
    pub fn new(config: ReceiverNodeConfig) -> Self {
        ReceiverNode {
            reception: Reception::new(config.reception),
            hook_kinds: config.hook_kinds,
            deliveries: BTreeMap::new(),
            unreleased_hooks: Vec::new(),
            unqueued: Vec::new(),
            requests: VecDeque::new(),
            events: VecDeque::new(),
            store_failures: (0, String::new()),
            events_lost: 0,
        }
    }

    /// The last version delivered for a (kind, name), from durable trust state.
    pub fn set_delivered(&mut self, kind: Kind, name: &str, accepted: Accepted) {
        self.reception.set_delivered(kind, name, accepted);
    }

    /// An object in the cache, at start: a version committed there is never rolled back,
    /// even if its delivery record was lost (a stop between the commit and the record, or
    /// a trust-state write that failed).
    pub fn set_cached(&mut self, kind: Kind, name: &str, accepted: Accepted) {
        self.reception.set_cached(kind, name, accepted);
    }

    /// How many (kind, name) have a cached version above their recorded delivery.
    pub fn unrecorded_versions(&self) -> usize {
        self.reception.unrecorded_versions()
    }

    /// This county's own key for confidential broadcasts, from its bundle.
    pub fn set_county_secret(&mut self, secret: crate::key_tree::CountySecret) -> Result<(), crate::key_tree::KeyTreeError> {
        self.reception.set_county_secret(secret)
    }

    /// The group keys of this county's path it holds: (prefix, epoch), prefecture first.
    pub fn group_epochs(&self) -> Vec<(String, u64)> {
        self.reception.group_epochs()
    }

    /// The revocation list kept in durable trust state.
    pub fn set_revocations(&mut self, sequence: u64, revoked_serials: &[u64]) {
        self.reception.set_revocations(sequence, revoked_serials);
    }

    /// A partial object storage kept from before a restart, with what storage `held` of
    /// it (an object already verified into the cache is delivered from there).
    pub fn resume(&mut self, now: Instant, wall_unix_secs: u64, object_id: u64, signed_manifest: &[u8], held: &Held) {
        self.reception.resume(now, wall_unix_secs, object_id, signed_manifest, held);
        self.collect();
    }

    /// One received datagram.
    pub fn handle_datagram(&mut self, now: Instant, wall_unix_secs: u64, bytes: &[u8]) {
        self.reception.handle_datagram(now, wall_unix_secs, bytes);
        self.collect();
    }

    /// One datagram already parsed and authenticated (the simulator checks a tag once for
    /// all its receivers).
    pub fn handle_parsed(&mut self, now: Instant, wall_unix_secs: u64, datagram: &crate::wire::Datagram<'_>) {
        self.reception.handle_parsed(now, wall_unix_secs, datagram);
        self.collect();
    }

    /// When [`ReceiverNode::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.reception.poll_timeout()
    }

    /// Progress reports that came due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.reception.handle_timeout(now);
        self.collect();
    }

    /// About once a second: expiry, retries of waiting deliveries and hooks, and the
    /// summary of storage failures.
    pub fn handle_tick(&mut self, wall_unix_secs: u64) {
        self.reception.handle_tick(wall_unix_secs);
        let waiting: Vec<u64> = self.deliveries.iter().filter(|(_, d)| !d.in_flight).map(|(id, _)| *id).collect();
        for object_id in waiting {
            self.issue(object_id);
        }
        for object_id in std::mem::take(&mut self.unreleased_hooks) {
            self.requests.push_back(Request::ReleaseHook { object_id });
        }
        for feedback in std::mem::take(&mut self.unqueued) {
            self.requests.push_back(Request::PushOutbox { feedback });
        }
        self.collect();
        let (failures, last_error) = std::mem::take(&mut self.store_failures);
        if failures > 0 {
            self.push(NodeEvent::StoreFailures { failures, last_error });
        }
    }

    /// Takes back the result of a request.
    pub fn handle_completion(&mut self, completion: Completion) {
        match completion {
            Completion::Store(completion) => self.reception.handle_completion(completion),
            Completion::HookRecorded { object_id, result } => {
                let next = result.map(|record| record == HookRecord::Due);
                self.step_done(object_id, next.map(|hook_due| (DeliveryStep::Commit, Some(hook_due))));
            }
            Completion::Committed { object_id, result } => self.step_done(object_id, result.map(|()| (DeliveryStep::RecordVersion, None))),
            Completion::VersionRecorded { object_id, result } => match result {
                Ok(()) => self.delivered(object_id),
                Err(error) => self.step_done(object_id, Err(error)),
            },
            Completion::HookReleased { object_id, result } => {
                if let Err(error) = result {
                    self.push(NodeEvent::RecordFailed { error: format!("cannot release the hook of {}: {error}", ObjectId(object_id)) });
                    self.unreleased_hooks.push(object_id);
                }
            }
            Completion::RevocationsNotRecorded { error } => {
                self.push(NodeEvent::RecordFailed { error: format!("cannot record the revocation list: {error}") })
            }
            Completion::OutboxFailed { feedback, error } => {
                self.note_store_failure(format!("cannot queue feedback: {error}"));
                if !matches!(feedback.message, FeedbackMessage::Progress { .. }) && self.unqueued.len() < UNQUEUED_FEEDBACK_MAX {
                    self.unqueued.push(feedback);
                }
            }
        }
        self.collect();
    }

    /// The next request, in the order they must be carried out.
    pub fn poll_request(&mut self) -> Option<Request> {
        self.requests.pop_front()
    }

    /// The next event, for logs.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// Counters of the reception machine.
    pub fn stats(&self) -> ReceptionStats {
        let mut stats = self.reception.stats();
        stats.events_lost += self.events_lost;
        stats
    }

    /// Progress of every partial object.
    pub fn progress(&self) -> Vec<Progress> {
        self.reception.progress()
    }

    /// Symbols kept and blocks verified for a partial object.
    pub fn held(&self, object_id: u64) -> Option<(u64, usize)> {
        self.reception.held(object_id)
    }

    /// The network keys as they stand (see [`Reception::network_keys`]).
    pub fn network_keys(&self) -> ((u64, &crate::trust::NetworkKey), Option<&(u64, crate::trust::NetworkKey)>) {
        self.reception.network_keys()
    }

    /// How long since the last valid heartbeat.
    pub fn heartbeat_age(&self, now: Instant) -> Option<std::time::Duration> {
        self.reception.heartbeat_age(now)
    }

    /// Completed objects whose delivery waits on storage.
    pub fn deliveries_waiting(&self) -> usize {
        self.deliveries.len()
    }

    /// Every object addressed to this county and not delivered yet, and why, at most
    /// `max`: deliveries waiting on a failed step first, then the reception machine's.
    pub fn stuck(&self, now: Instant, max: usize) -> Vec<NodeStuck> {
        let deliveries = self.deliveries.iter().filter_map(|(id, d)| {
            let error = d.error.clone()?;
            Some(NodeStuck::Delivery { object_id: *id, name: format!("{}/{}", d.manifest.kind, d.manifest.name), step: d.step, error })
        });
        deliveries.chain(self.reception.stuck(now).into_iter().map(NodeStuck::Reception)).take(max).collect()
    }

    /// Moves the machine's requests, feedback and events into the node's queues.
    fn collect(&mut self) {
        while let Some(request) = self.reception.poll_request() {
            self.requests.push_back(Request::Store(request));
        }
        while let Some(event) = self.reception.poll_event() {
            match event {
                ReceptionEvent::Complete { manifest } => self.begin_delivery(manifest),
                ReceptionEvent::StoreFailed { object_id, error } => {
                    self.note_store_failure(format!("object {}: {error}", ObjectId(object_id)))
                }
                ReceptionEvent::RevocationsUpdated { sequence, ref revoked_serials } => {
                    self.requests.push_back(Request::RecordRevocations { sequence, revoked_serials: revoked_serials.clone() });
                    self.push(NodeEvent::Reception(event));
                }
                event => self.push(NodeEvent::Reception(event)),
            }
        }
        while let Some(feedback) = self.reception.poll_feedback() {
            self.requests.push_back(Request::PushOutbox { feedback });
        }
    }

    fn note_store_failure(&mut self, error: String) {
        self.store_failures.0 += 1;
        self.store_failures.1 = error;
    }

    fn push(&mut self, event: NodeEvent) {
        if self.events.len() >= NODE_EVENTS_MAX {
            self.events.pop_front();
            self.events_lost += 1;
        }
        self.events.push_back(event);
    }

    fn begin_delivery(&mut self, manifest: Box<Manifest>) {
        let object_id = manifest.object_id;
        let step = if self.hook_kinds.contains(&manifest.kind) { DeliveryStep::RecordHook } else { DeliveryStep::Commit };
        self.deliveries.insert(object_id, Delivery { manifest, step, hook_due: false, in_flight: false, warned: None, error: None });
        self.issue(object_id);
    }

    /// Sends the request for a delivery's current step.
    fn issue(&mut self, object_id: u64) {
        let Some(delivery) = self.deliveries.get_mut(&object_id) else { return };
        delivery.in_flight = true;
        let manifest = delivery.manifest.clone();
        self.requests.push_back(match delivery.step {
            DeliveryStep::RecordHook => Request::RecordHookDue { manifest },
            DeliveryStep::Commit => Request::Commit { manifest },
            DeliveryStep::RecordVersion => Request::RecordVersion { manifest },
        });
    }

    /// A step finished: on to `next` (and whether the hook is due, once known), or wait
    /// for the next tick's retry.
    fn step_done(&mut self, object_id: u64, next: Result<(DeliveryStep, Option<bool>), String>) {
        let Some(delivery) = self.deliveries.get_mut(&object_id) else { return };
        delivery.in_flight = false;
        match next {
            Ok((step, hook_due)) => {
                delivery.step = step;
                delivery.error = None;
                if let Some(hook_due) = hook_due {
                    delivery.hook_due = hook_due;
                }
                self.issue(object_id);
            }
            Err(error) => {
                delivery.error = Some(error.clone());
                if delivery.warned != Some(delivery.step) {
                    delivery.warned = Some(delivery.step);
                    let step = delivery.step;
                    self.push(NodeEvent::DeliveryWaiting { object_id, step, error });
                }
            }
        }
    }

    /// The last step is durable: acknowledge the delivery, release its hook.
    fn delivered(&mut self, object_id: u64) {
        let Some(delivery) = self.deliveries.remove(&object_id) else { return };
        self.reception.mark_delivered(&delivery.manifest);
        if delivery.hook_due {
            self.requests.push_back(Request::ReleaseHook { object_id });
        }
        self.push(NodeEvent::Delivered { manifest: delivery.manifest });
    }
}
