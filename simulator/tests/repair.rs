//! The broadcast and reception machines together in virtual time: feedback-driven repair,
//! bursts, priorities, deadlines, pacing and determinism.

use std::time::Duration;

use satcast_protocol::broadcast::{BroadcastEvent, Priority};
use satcast_sim::bound::lower_bound_symbols;
use satcast_sim::divisions;
use satcast_sim::harness::{Harness, HarnessOptions};
use satcast_sim::loss::LossModel;

const MB: usize = 1_000_000;

fn seed(test: &str) -> u64 {
    let seed = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("seed {seed}; replay with SIM_SEED={seed} cargo test -p satcast-sim --test repair {test}");
    seed
}

/// `n` counties spread over the national table.
fn counties(n: usize, loss: LossModel) -> Vec<(String, LossModel)> {
    let table = divisions::counties();
    let step = (table.len() / n.max(1)).max(1);
    table.iter().step_by(step).take(n).map(|c| (c.code.clone(), loss)).collect()
}

fn assert_everyone_exact(h: &Harness, object_id: u64) {
    let object = &h.objects[&object_id];
    for r in h.receivers.iter().filter(|r| object.targets.contains(&r.code)) {
        assert!(r.corrupt.is_empty(), "{} assembled corrupt bytes", r.code);
        assert!(r.completed.contains_key(&object_id), "{} did not complete (stats {:?})", r.code, r.node.stats());
    }
}

#[test]
fn two_hundred_receivers_at_ten_percent_loss_within_ten_percent_of_the_bound() {
    let seed = seed("two_hundred");
    let mut h = Harness::new(HarnessOptions::new(seed, counties(200, LossModel::Bernoulli(0.10))));
    let payload = h.random_payload(5 * MB);
    let id = h.add_object(payload, &[""], Priority::Normal, None, true);
    let uplink_saw_it = |h: &Harness| h.has_event(id, |e| matches!(e, BroadcastEvent::Completed { .. }));
    let done = h.run_until(Duration::from_secs(600), 5_000_000, |h| h.all_complete(id) && uplink_saw_it(h));
    assert!(done, "not everyone completed within 10 virtual minutes");
    assert_everyone_exact(&h, id);
    let object = &h.objects[&id];
    let bound = lower_bound_symbols(&object.source_symbols, 0.10, 200);
    let efficiency = object.symbols_sent as f64 / bound;
    let rounds = object.events.iter().filter(|(_, e)| matches!(e, BroadcastEvent::RoundStarted { .. })).count();
    println!(
        "200 receivers, 10% loss, 5 MB: {} symbols sent, lower bound {bound:.0}, efficiency {efficiency:.4}, {rounds} rounds, {:.1} s virtual",
        object.symbols_sent,
        h.elapsed().as_secs_f64()
    );
    assert!(efficiency <= 1.10, "efficiency {efficiency} above 1.10");
}

#[test]
fn gilbert_elliott_bursts_all_complete() {
    let seed = seed("gilbert_elliott");
    let loss = LossModel::GilbertElliott { mean_loss: 0.05, mean_burst: 20.0 };
    let mut h = Harness::new(HarnessOptions::new(seed, counties(100, loss)));
    let payload = h.random_payload(3 * MB);
    let id = h.add_object(payload, &[""], Priority::Normal, None, true);
    let done = h.run_until(Duration::from_secs(600), 5_000_000, |h| h.all_complete(id));
    assert!(done, "not everyone completed under bursts");
    assert_everyone_exact(&h, id);
    let object = &h.objects[&id];
    let bound = lower_bound_symbols(&object.source_symbols, 0.05, 100);
    println!("bursts: efficiency {:.4}", object.symbols_sent as f64 / bound);
}

#[test]
fn the_pacer_holds_the_link_rate_within_one_percent_over_ten_seconds() {
    let seed = seed("pacer");
    let mut options = HarnessOptions::new(seed, counties(2, LossModel::None));
    options.broadcast.link_rate_bits_per_sec = 8_000_000;
    let mut h = Harness::new(options);
    // 20 MB at 8 Mbit/s is 20 s of air time: the carrier stays busy for the whole window.
    let payload = h.random_payload(20 * MB);
    h.add_object(payload, &[""], Priority::Bulk, None, true);
    h.run_until(Duration::from_secs(2), 10_000_000, |_| false);
    let before = h.uplink.stats().bytes_on_air;
    h.run_until(Duration::from_secs(10), 10_000_000, |_| false);
    let bits = (h.uplink.stats().bytes_on_air - before) as f64 * 8.0;
    let rate = bits / 10.0;
    println!("measured {rate:.0} bit/s against 8000000");
    assert!((rate / 8_000_000.0 - 1.0).abs() <= 0.01, "rate {rate} is not within 1% of 8 Mbit/s");
}

#[test]
fn an_emergency_preempts_a_bulk_broadcast_which_still_completes() {
    let seed = seed("emergency");
    let mut options = HarnessOptions::new(seed, counties(20, LossModel::Bernoulli(0.05)));
    options.broadcast.link_rate_bits_per_sec = 10_000_000;
    let mut h = Harness::new(options);
    let bulk_payload = h.random_payload(4 * MB);
    let bulk = h.add_object(bulk_payload, &[""], Priority::Bulk, None, true);
    h.run_until(Duration::from_secs(1), 1_000_000, |_| false);
    let emergency_payload = h.random_payload(200_000);
    let emergency = h.add_object(emergency_payload, &[""], Priority::Emergency, None, true);
    let done = h.run_until(Duration::from_secs(600), 5_000_000, |h| h.all_complete(bulk) && h.all_complete(emergency));
    assert!(done, "both objects must complete");
    assert_everyone_exact(&h, bulk);
    assert_everyone_exact(&h, emergency);
    let e = &h.objects[&emergency];
    let b = &h.objects[&bulk];
    let on_air_after = e.first_data_at.expect("emergency aired") - e.added_at;
    println!("emergency on the air {on_air_after:?} after it was queued");
    assert!(on_air_after <= Duration::from_secs(1), "emergency waited {on_air_after:?}");
    let last_emergency = h.receivers.iter().filter_map(|r| r.completed.get(&emergency)).max().copied().expect("completed");
    let last_bulk = h.receivers.iter().filter_map(|r| r.completed.get(&bulk)).max().copied().expect("completed");
    assert!(last_emergency < last_bulk, "the emergency must finish first ({last_emergency:?} vs {last_bulk:?})");
    assert!(b.last_data_at > e.last_data_at, "bulk goes on after the emergency");
}

#[test]
fn a_passing_deadline_stops_airing_and_names_who_missed_it() {
    let seed = seed("deadline");
    let mut h = Harness::new(HarnessOptions::new(seed, counties(10, LossModel::Bernoulli(0.02))));
    h.receivers[3].offline = true;
    let missing = h.receivers[3].code.clone();
    let payload = h.random_payload(MB);
    let id = h.add_object(payload, &[""], Priority::Normal, Some(Duration::from_secs(30)), true);
    h.run_until(Duration::from_secs(60), 5_000_000, |_| false);
    let object = &h.objects[&id];
    let deadline_event = object.events.iter().find_map(|(at, e)| match e {
        BroadcastEvent::DeadlinePassed { incomplete, .. } => Some((*at, incomplete.clone())),
        _ => None,
    });
    let (at, incomplete) = deadline_event.expect("a DeadlinePassed event");
    assert_eq!(incomplete, vec![missing], "exactly the offline county is named");
    assert!(at <= Duration::from_secs(31), "deadline noticed at {at:?}");
    assert!(object.last_data_at.expect("aired") <= at, "nothing aired after the deadline");
    for r in h.receivers.iter().filter(|r| !r.offline) {
        assert!(r.completed.contains_key(&id), "{} should have completed", r.code);
    }
}

#[test]
fn the_same_seed_gives_the_same_run_bit_for_bit() {
    let seed = seed("same_seed");
    let run = || {
        let mut h = Harness::new(HarnessOptions::new(seed, counties(30, LossModel::GilbertElliott { mean_loss: 0.08, mean_burst: 5.0 })));
        let payload = h.random_payload(MB);
        let id = h.add_object(payload, &["11", "41", "65"], Priority::Normal, None, true);
        h.run_until(Duration::from_secs(300), 2_000_000, |h| h.all_complete(id));
        (h.digest(), h.steps, h.objects[&id].symbols_sent)
    };
    let first = run();
    let second = run();
    println!("digest {} after {} steps, {} symbols", first.0, first.1, first.2);
    assert_eq!(first, second);
}

#[test]
fn a_wan_outage_idles_the_object_and_its_return_resumes_repair() {
    let seed = seed("wan_outage");
    let mut h = Harness::new(HarnessOptions::new(seed, counties(20, LossModel::Bernoulli(0.2))));
    h.wan_up = false;
    let payload = h.random_payload(MB);
    let id = h.add_object(payload, &[""], Priority::Normal, None, true);
    let idled = h.run_until(Duration::from_secs(120), 5_000_000, |h| h.has_event(id, |e| matches!(e, BroadcastEvent::Idle { .. })));
    assert!(idled, "with no feedback the object must idle after its blind rounds");
    h.wan_up = true;
    let done = h.run_until(Duration::from_secs(300), 5_000_000, |h| {
        h.all_complete(id) && h.has_event(id, |e| matches!(e, BroadcastEvent::Completed { .. }))
    });
    assert!(done, "once the WAN is back, quiet reports wake the object and everyone completes");
    assert_everyone_exact(&h, id);
}
