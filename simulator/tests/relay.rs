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
            Destination::lossy(clean.local_addr().expect("addr"), LossModel::None),
            Destination::lossy(lossy.local_addr().expect("addr"), LossModel::Bernoulli(0.3)),
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
        // Paced, so a relay thread starved by a loaded machine does not overflow its socket.
        if i % 20 == 0 {
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

#[test]
fn delays_and_rate_limits_each_destination() {
    let slow = UdpSocket::bind("127.0.0.1:0").expect("bind");
    slow.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let relay = Relay::start(
        "127.0.0.1:0".parse().expect("addr"),
        vec![Destination {
            addr: slow.local_addr().expect("addr"),
            loss: LossModel::None,
            delay: Duration::from_millis(300),
            rate_bits_per_sec: Some(800_000),
        }],
        1,
    )
    .expect("relay");
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let sent_at = std::time::Instant::now();
    // 100 datagrams of 972 bytes (8000 bits on the wire each) at 800 kbit/s take about 1 s.
    for i in 0..100u32 {
        let mut datagram = vec![0u8; 972];
        datagram[..4].copy_from_slice(&i.to_be_bytes());
        sender.send_to(&datagram, relay.listen).expect("send");
        // Not faster than the relay reads: a burst beyond the kernel's socket buffer would
        // be lost before the relay sees it.
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let mut buf = [0u8; 2048];
    slow.recv(&mut buf).expect("first datagram");
    let first = sent_at.elapsed();
    for _ in 1..100 {
        slow.recv(&mut buf).expect("datagram");
    }
    let last = sent_at.elapsed();
    println!("first after {first:?}, last after {last:?}");
    assert!(first >= Duration::from_millis(290), "the delay holds: first after {first:?}");
    assert!(last >= Duration::from_millis(1150) && last < Duration::from_millis(2500), "the rate holds: last after {last:?}");
}
