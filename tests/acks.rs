//! The acknowledgement channel between real daemons: QUIC with mutual TLS over a WAN that
//! can be cut.

use std::time::Duration;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use satcast::{Cluster, ClusterOptions, seed, wait_until};
use satcast_protocol::feedback::{AckReply, Feedback, FeedbackMessage};
use satcast_receiver::config::ReceiverConfig;
use satcast_sim::relay::LossModel;

fn options(seed: u64, counties: &[&str]) -> ClusterOptions {
    ClusterOptions {
        counties: counties.iter().map(|c| c.to_string()).collect(),
        loss: vec![LossModel::Bernoulli(0.03)],
        link_rate_bits_per_sec: 20_000_000,
        passes: 3,
        seed,
        extra_uplink_config: String::new(),
        acks: true,
    }
}

#[test]
fn acknowledgements_held_through_a_wan_outage_all_arrive_once_it_returns() {
    let seed = seed("ACKS_SEED", "acks");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), &options(seed, &["410102", "410103"])).expect("cluster");
    let uplink_log = |c: &Cluster| c.uplink.as_ref().map(|d| d.log_text()).unwrap_or_default();
    // Both counties said hello, so both are enrolled and targeted.
    let wan = cluster.wan.as_ref().expect("wan");
    wan.set_up(false);

    let mut payload = vec![0u8; 1_500_000];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut payload);
    let path = dir.path().join("notice.pdf");
    std::fs::write(&path, &payload).expect("payload");
    let object_id = cluster.send(&path, "policy", "4101", 9).expect("send");
    for county in &cluster.counties {
        let delivered = county.delivered_path("policy", "notice.pdf");
        assert!(wait_until(Duration::from_secs(60), || delivered.exists()), "{} did not get it over the air", county.code);
        assert_eq!(std::fs::read(&delivered).expect("read"), payload);
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(!uplink_log(&cluster).contains("county complete"), "nothing can be acknowledged while the WAN is down");

    cluster.wan.as_ref().expect("wan").set_up(true);
    let completed = wait_until(Duration::from_secs(90), || uplink_log(&cluster).contains("outcome=\"completed\"") || uplink_log(&cluster).contains("outcome=completed"));
    let log = uplink_log(&cluster);
    assert!(completed, "the uplink must see every county complete once the WAN is back:\n{log}");
    for county in ["410102", "410103"] {
        let acks = log.lines().filter(|l| l.contains("county complete") && l.contains(county) && l.contains(&object_id)).count();
        assert_eq!(acks, 1, "{county}'s completion must be recorded exactly once:\n{log}");
    }
}

#[test]
fn a_county_certificate_cannot_report_about_another_county() {
    let seed = seed("ACKS_SEED", "acks");
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), &options(seed, &["410102"])).expect("cluster");
    let config = ReceiverConfig::load(&cluster.counties[0].config).expect("county config");
    let ack = config.ack.clone().expect("ack section");
    let tls = satcast_receiver::acks::client_config(&config.keys).expect("tls");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let replies = runtime.block_on(async move {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
        endpoint.set_default_client_config(tls);
        let addr = ack.uplink.parse().expect("uplink address");
        let connection = endpoint.connect(addr, &ack.server_name).expect("connect").await.expect("handshake");
        let mut replies = Vec::new();
        for county in ["410103", "410102"] {
            let feedback = Feedback { county_code: county.into(), message: FeedbackMessage::Complete { object_id: 42, object_hash: [7; 32] } };
            let (mut tx, mut rx) = connection.open_bi().await.expect("stream");
            tx.write_all(&feedback.to_bytes()).await.expect("write");
            tx.finish().expect("finish");
            let reply = rx.read_to_end(16).await.expect("reply");
            replies.push(AckReply::from_byte(reply[0]));
        }
        replies
    });
    assert_eq!(replies, vec![AckReply::Refused, AckReply::Recorded], "410102's certificate may speak for 410102 only");
    let log = cluster.uplink.as_ref().map(|d| d.log_text()).unwrap_or_default();
    assert!(log.contains("does not name: refused") && log.contains("410103"), "the refusal is logged:\n{log}");
}
