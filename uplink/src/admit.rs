//! Admission: the one place the daemon decides whether a job may air. The control API
//! checks a new job here before it queues it (so `send` is refused at once, with the
//! reason, and nothing is queued), and the queue watcher checks every job file that appears
//! (a job queued by an older build that wrote the folder directly, or by hand), refusing it
//! with the same reason instead of airing it to nobody.

use satcast_protocol::manifest::{ECHO_CHARS_MAX, parse_targets, validate_name};
use thiserror::Error;

use crate::divisions;
use crate::queue::Job;

/// Why a job may not air: one line, shown to the operator as it is.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// Operator input shortened for an error line.
pub fn echo(text: &str) -> String {
    text.chars().take(ECHO_CHARS_MAX).collect()
}

/// `--to`'s text ("41,4201", "all") as prefixes, each with a county under it in the national
/// division table.
pub fn targets(to: &str) -> Result<Vec<String>, Refusal> {
    let targets = parse_targets(to).map_err(|e| Refusal(format!("--to {:?}: {e}", echo(to))))?;
    match targets.iter().find(|target| !divisions::has_county_under(target)) {
        Some(target) => Err(Refusal(format!("--to {target}: no county in the national division table has a code starting with {target}"))),
        None => Ok(targets),
    }
}

/// What a job says about itself, whenever it is checked: a name counties deliver under, a
/// known kind and priority, targets with counties under them, and a deadline after the
/// not-before time. Versions are the queue's to check (under its lock); the clock is
/// [`check_new`]'s.
pub fn check(job: &Job) -> Result<(), Refusal> {
    job.object_id().map_err(|e| Refusal(format!("broadcast id {:?}: {e}", echo(&job.object_id))))?;
    job.kind().map_err(|_| Refusal(format!("unknown kind {:?} (policy, software or codetable)", echo(&job.kind))))?;
    job.priority().map_err(|_| Refusal(format!("unknown priority {:?} (emergency, high, normal or bulk)", echo(&job.priority))))?;
    validate_name(&job.name).map_err(|e| Refusal(format!("cannot deliver under this name: {e}")))?;
    if job.targets.is_empty() {
        return Err(Refusal("no target: use --to with division-code prefixes or all".into()));
    }
    // Job files keep the nation as "": "all" is how --to says it.
    let to: Vec<&str> = job.targets.iter().map(|t| if t.is_empty() { "all" } else { t.as_str() }).collect();
    targets(&to.join(","))?;
    if let (Some(not_before), Some(deadline)) = (job.not_before_unix_secs, job.deadline_unix_secs) {
        if deadline <= not_before {
            return Err(Refusal(format!("the deadline ({deadline}) is not after the not-before time ({not_before})")));
        }
    }
    Ok(())
}

/// [`check`] for a job about to be queued at `now_unix_secs`: its deadline must also still
/// be ahead (a job that could only end "deadline" is refused instead).
pub fn check_new(job: &Job, now_unix_secs: u64) -> Result<(), Refusal> {
    check(job)?;
    match job.deadline_unix_secs {
        Some(deadline) if deadline <= now_unix_secs => {
            Err(Refusal(format!("the deadline ({deadline}) has passed (now {now_unix_secs}, unix seconds)")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            object_id: "00000000000000a1".into(),
            kind: "policy".into(),
            name: "通知 2026.txt".into(),
            version: 1,
            targets: vec!["41".into()],
            queued_unix_secs: 1_800_000_000,
            feedback: true,
            priority: "normal".into(),
            not_before_unix_secs: None,
            deadline_unix_secs: None,
            confidential: None,
        }
    }

    #[test]
    fn a_job_no_county_would_take_is_refused_with_its_reason() {
        assert_eq!(check(&job()), Ok(()));
        assert_eq!(check(&Job { targets: vec![String::new()], ..job() }), Ok(()), "the nation");
        let refused = |job: Job| check(&job).expect_err("refused").0;
        assert!(refused(Job { targets: vec!["99".into()], ..job() }).contains("no county"));
        assert!(refused(Job { targets: vec!["41".into(), "419999".into()], ..job() }).contains("419999"));
        assert!(refused(Job { targets: Vec::new(), ..job() }).contains("no target"));
        assert!(refused(Job { name: "../x".into(), ..job() }).contains("name"));
        assert!(refused(Job { kind: "poem".into(), ..job() }).contains("kind"));
        let dates = Job { not_before_unix_secs: Some(2_000), deadline_unix_secs: Some(2_000), ..job() };
        assert!(refused(dates).contains("deadline"));
        let past = Job { deadline_unix_secs: Some(1_000), ..job() };
        assert_eq!(check(&past), Ok(()), "a queued job may have missed its deadline meanwhile");
        assert!(check_new(&past, 1_001).expect_err("past").0.contains("passed"));
    }
}
