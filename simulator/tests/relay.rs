//! The impairment relay forwards to every destination and drops about the configured share.

use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::time::Duration;

use satcast_sim::relay::{Destination, LossModel, Relay};

#[test]
fn fans_out_and_drops_the_configured_share() {
    let seed = std::env::var("RELAY_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7u64);
    println!("seed {seed}; replay with RELAY_SEED={seed} cargo test -p satcast-sim --test relay");
    let clean = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let lossy = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for socket in [&clean, &lossy] {
        socket.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    }
    let relay = Relay::start(
        "127.0.0.1:0".parse().expect("addr"),
        vec![
            Destination { addr: clean.local_addr().expect("addr"), loss: LossModel::None },
            Destination { addr: lossy.local_addr().expect("addr"), loss: LossModel::Bernoulli(0.3) },
        ],
        seed,
    )
    .expect("relay");
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let count = 2000;
    let mut received = [0usize; 2];
    for i in 0..count {
        sender.send_to(&(i as u32).to_be_bytes(), relay.listen).expect("send");
        // Drain as we go so no kernel buffer overflows skew the count.
        for (n, socket) in [&clean, &lossy].iter().enumerate() {
            socket.set_nonblocking(true).expect("nonblocking");
            let mut buf = [0u8; 16];
            while socket.recv(&mut buf).is_ok() {
                received[n] += 1;
            }
        }
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    for (n, socket) in [&clean, &lossy].iter().enumerate() {
        let mut buf = [0u8; 16];
        while socket.recv(&mut buf).is_ok() {
            received[n] += 1;
        }
    }
    assert_eq!(relay.stats.received.load(Ordering::Relaxed), count as u64);
    assert_eq!(received[0], count, "the clean destination gets everything");
    let share = 1.0 - received[1] as f64 / count as f64;
    assert!((0.25..0.35).contains(&share), "lossy destination lost {share}");
}
