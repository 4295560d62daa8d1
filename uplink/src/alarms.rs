//! Alarms: what an operator must act on without staring at a table. Each is raised once
//! (one log line, and the configured command run once), stands while its condition holds
//! (a county silent, a disk nearly full, the signing key near its end) or for an hour (a
//! hook failure, a missed deadline: events), and is cleared with one info line. The
//! dashboard lists the standing ones.
//!
//! Conditions are looked at every few seconds by the control runtime (`crate::dashboard`);
//! events come from the storage worker and the pacing loop through [`Alarms::event`].
//! Alarms live in memory: after a restart, a condition still true is raised again, and an
//! event from before it is not.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use tracing::{info, warn};

use crate::config::AlarmsConfig;

/// Standing alarms kept; beyond it the oldest events go first (conditions stay).
pub const ALARMS_MAX: usize = 4096;
/// Alarm log lines written per check; more are summarised in one line.
pub const ALARM_LINES_PER_CHECK_MAX: usize = 20;
/// Alarm commands running at once.
pub const ALARM_COMMANDS_RUNNING_MAX: usize = 4;
/// Alarm commands waiting to run; beyond it they are dropped and counted in one line.
pub const ALARM_COMMANDS_QUEUED_MAX: usize = 1024;
/// How long an alarm command may run before it is killed.
pub const ALARM_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an event alarm (hook failure, missed deadline) stands.
pub const EVENT_STANDS_SECS: u64 = 3600;
/// Events waiting to be raised.
pub const EVENTS_PENDING_MAX: usize = 1024;

/// What an alarm is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    /// An enrolled county not heard from for longer than `alarms.county_silent_after_secs`.
    CountySilent,
    /// A county whose last hello says it has had no heartbeat for longer than
    /// `alarms.county_heartbeat_age_max_secs`.
    CountyNoHeartbeat,
    /// A county whose state disk has less free than `alarms.county_free_disk_bytes_min`.
    CountyDiskLow,
    /// A broadcast ended at its deadline before every county had it.
    DeadlineMissed,
    /// A county's post-receive hook failed.
    HookFailed,
    /// The active signing key ends within `alarms.key_expiry_warn_days`.
    SigningKeyExpiring,
}

impl AlarmKind {
    /// The name in logs, JSON and the command's environment.
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmKind::CountySilent => "county_silent",
            AlarmKind::CountyNoHeartbeat => "county_no_heartbeat",
            AlarmKind::CountyDiskLow => "county_disk_low",
            AlarmKind::DeadlineMissed => "deadline_missed",
            AlarmKind::HookFailed => "hook_failed",
            AlarmKind::SigningKeyExpiring => "signing_key_expiring",
        }
    }

    fn is_event(self) -> bool {
        matches!(self, AlarmKind::DeadlineMissed | AlarmKind::HookFailed)
    }
}

/// One alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alarm {
    /// What it is about.
    pub kind: AlarmKind,
    /// Whom: a county code, a broadcast id, `broadcast/county`, a key serial.
    pub subject: String,
    /// One line for a person.
    pub text: String,
    /// When it was raised, unix seconds.
    pub raised_unix_secs: u64,
}

/// The standing alarms and what raises them.
#[derive(Debug)]
pub struct Alarms {
    standing: BTreeMap<(AlarmKind, String), Alarm>,
    events: VecDeque<Alarm>,
    events_dropped: u64,
    commands: Option<Commands>,
}

/// The configured command and its bounds.
#[derive(Debug)]
struct Commands {
    command: Vec<String>,
    running: Arc<AtomicUsize>,
    queue: std::sync::mpsc::SyncSender<Alarm>,
}

impl Alarms {
    /// Alarms that run `config.command` (if any) once per alarm.
    pub fn new(config: &AlarmsConfig) -> Alarms {
        let commands = config.command.clone().filter(|c| !c.is_empty()).and_then(|command| Commands::start(command, config.base.clone()));
        Alarms { standing: BTreeMap::new(), events: VecDeque::new(), events_dropped: 0, commands }
    }

    /// The standing alarms, newest first.
    pub fn standing(&self) -> Vec<Alarm> {
        let mut list: Vec<Alarm> = self.standing.values().cloned().collect();
        list.sort_by(|a, b| b.raised_unix_secs.cmp(&a.raised_unix_secs).then(a.subject.cmp(&b.subject)));
        list
    }

    /// An event to raise at the next check (a hook failure, a missed deadline).
    pub fn event(&mut self, kind: AlarmKind, subject: String, text: String, now_unix_secs: u64) {
        if self.events.len() >= EVENTS_PENDING_MAX {
            self.events_dropped += 1;
            return;
        }
        self.events.push_back(Alarm { kind, subject, text, raised_unix_secs: now_unix_secs });
    }

    /// Takes the conditions true now (kind, subject, text): raises those that are new,
    /// clears those no longer true, raises pending events and expires old ones. Returns
    /// the kinds of those raised.
    pub fn check(&mut self, conditions: Vec<(AlarmKind, String, String)>, now_unix_secs: u64) -> Vec<AlarmKind> {
        let mut raised = Vec::new();
        let mut now_true = std::collections::BTreeSet::new();
        for (kind, subject, text) in conditions {
            let key = (kind, subject.clone());
            now_true.insert(key.clone());
            if !self.standing.contains_key(&key) {
                raised.push(Alarm { kind, subject, text, raised_unix_secs: now_unix_secs });
            }
        }
        let mut cleared = Vec::new();
        self.standing.retain(|key, alarm| {
            let stands = if key.0.is_event() {
                now_unix_secs.saturating_sub(alarm.raised_unix_secs) < EVENT_STANDS_SECS
            } else {
                now_true.contains(key)
            };
            if !stands && !key.0.is_event() {
                cleared.push(alarm.clone());
            }
            stands
        });
        for event in std::mem::take(&mut self.events) {
            if !self.standing.contains_key(&(event.kind, event.subject.clone())) {
                raised.push(event);
            }
        }
        if self.events_dropped > 0 {
            warn!(dropped = std::mem::take(&mut self.events_dropped), "alarm events dropped: too many at once");
        }
        for alarm in cleared.iter().take(ALARM_LINES_PER_CHECK_MAX) {
            info!(kind = alarm.kind.as_str(), subject = %alarm.subject, "alarm cleared");
        }
        if cleared.len() > ALARM_LINES_PER_CHECK_MAX {
            info!(more = cleared.len() - ALARM_LINES_PER_CHECK_MAX, "more alarms cleared");
        }
        for (i, alarm) in raised.iter().enumerate() {
            if i < ALARM_LINES_PER_CHECK_MAX {
                warn!(kind = alarm.kind.as_str(), subject = %alarm.subject, text = %alarm.text, "alarm");
            }
            if let Some(commands) = &mut self.commands {
                commands.run(alarm.clone());
            }
            self.standing.insert((alarm.kind, alarm.subject.clone()), alarm.clone());
        }
        if raised.len() > ALARM_LINES_PER_CHECK_MAX {
            let by_kind = raised.iter().skip(ALARM_LINES_PER_CHECK_MAX).fold(BTreeMap::<&str, usize>::new(), |mut m, a| {
                *m.entry(a.kind.as_str()).or_default() += 1;
                m
            });
            warn!(more = raised.len() - ALARM_LINES_PER_CHECK_MAX, ?by_kind, "more alarms raised (see the dashboard or /metrics)");
        }
        while self.standing.len() > ALARMS_MAX {
            let oldest_event =
                self.standing.iter().filter(|(k, _)| k.0.is_event()).min_by_key(|(_, a)| a.raised_unix_secs).map(|(k, _)| k.clone());
            match oldest_event.or_else(|| self.standing.keys().next_back().cloned()) {
                Some(key) => {
                    self.standing.remove(&key);
                }
                None => break,
            }
        }
        raised.iter().map(|a| a.kind).collect()
    }
}

impl Commands {
    /// Starts the thread that runs the command for each alarm, at most
    /// [`ALARM_COMMANDS_RUNNING_MAX`] at once.
    fn start(command: Vec<String>, base: Option<PathBuf>) -> Option<Commands> {
        let (queue, incoming) = std::sync::mpsc::sync_channel::<Alarm>(ALARM_COMMANDS_QUEUED_MAX);
        let running = Arc::new(AtomicUsize::new(0));
        let counting = running.clone();
        let program = command.clone();
        let spawned = std::thread::Builder::new().name("alarm-commands".into()).spawn(move || {
            while let Ok(alarm) = incoming.recv() {
                while counting.load(Ordering::SeqCst) >= ALARM_COMMANDS_RUNNING_MAX {
                    std::thread::sleep(Duration::from_millis(50));
                }
                counting.fetch_add(1, Ordering::SeqCst);
                let done = counting.clone();
                let program = program.clone();
                let base = base.clone();
                let started = std::thread::Builder::new().name("alarm-command".into()).spawn(move || {
                    run_command(&program, base.as_deref(), &alarm);
                    done.fetch_sub(1, Ordering::SeqCst);
                });
                if let Err(error) = started {
                    counting.fetch_sub(1, Ordering::SeqCst);
                    warn!(%error, "cannot start a thread for an alarm command");
                }
            }
        });
        match spawned {
            Ok(_) => Some(Commands { command, running, queue }),
            Err(error) => {
                warn!(%error, "cannot start the alarm command thread: alarms are logged only");
                None
            }
        }
    }

    fn run(&mut self, alarm: Alarm) {
        if self.queue.try_send(alarm).is_err() {
            warn!(command = ?self.command, running = self.running.load(Ordering::Relaxed), "alarm command queue full: a command was not run");
        }
    }
}

/// Runs the alarm command once, without a shell, with the alarm in its environment
/// (`SATCAST_ALARM_KIND`, `SATCAST_ALARM_SUBJECT`, `SATCAST_ALARM_TEXT`) and the text as its
/// last argument; kills it after [`ALARM_COMMAND_TIMEOUT`].
fn run_command(command: &[String], base: Option<&std::path::Path>, alarm: &Alarm) {
    let Some((program, args)) = command.split_first() else { return };
    let mut process = std::process::Command::new(program);
    process
        .args(args)
        .arg(&alarm.text)
        .env("SATCAST_ALARM_KIND", alarm.kind.as_str())
        .env("SATCAST_ALARM_SUBJECT", &alarm.subject)
        .env("SATCAST_ALARM_TEXT", &alarm.text)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(base) = base {
        process.current_dir(base);
    }
    let mut child = match process.spawn() {
        Ok(child) => child,
        Err(error) => return warn!(%program, %error, kind = alarm.kind.as_str(), "cannot run the alarm command"),
    };
    let deadline = std::time::Instant::now() + ALARM_COMMAND_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return,
            Ok(Some(status)) => {
                let mut tail = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    use std::io::Read;
                    let _ = (&mut stderr).take(512).read_to_string(&mut tail);
                }
                return warn!(%program, %status, stderr = %tail.trim(), kind = alarm.kind.as_str(), "the alarm command failed");
            }
            Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return warn!(%program, timeout_secs = ALARM_COMMAND_TIMEOUT.as_secs(), "the alarm command timed out and was killed");
            }
            Err(error) => return warn!(%program, %error, "cannot wait for the alarm command"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silent(code: &str) -> (AlarmKind, String, String) {
        (AlarmKind::CountySilent, code.to_owned(), format!("county {code} silent"))
    }

    #[test]
    fn a_condition_is_raised_once_while_it_holds_and_again_only_after_it_cleared() {
        let mut alarms = Alarms::new(&AlarmsConfig::default());
        assert_eq!(alarms.check(vec![silent("410102")], 100).len(), 1);
        assert_eq!(alarms.check(vec![silent("410102")], 105).len(), 0, "still standing: not raised again");
        assert_eq!(alarms.standing().len(), 1);
        assert_eq!(alarms.check(vec![], 110).len(), 0);
        assert!(alarms.standing().is_empty(), "cleared");
        assert_eq!(alarms.check(vec![silent("410102")], 115).len(), 1, "a new silence is a new alarm");
    }

    #[test]
    fn an_event_stands_for_an_hour_and_a_repeat_while_it_stands_is_not_raised() {
        let mut alarms = Alarms::new(&AlarmsConfig::default());
        alarms.event(AlarmKind::HookFailed, "abc/410102".into(), "hook failed".into(), 100);
        assert_eq!(alarms.check(vec![], 100).len(), 1);
        alarms.event(AlarmKind::HookFailed, "abc/410102".into(), "hook failed".into(), 200);
        assert_eq!(alarms.check(vec![], 200).len(), 0);
        assert_eq!(alarms.check(vec![], 100 + EVENT_STANDS_SECS).len(), 0);
        assert!(alarms.standing().is_empty());
    }
}
