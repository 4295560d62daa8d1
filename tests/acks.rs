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
    let seed = seed("ACKS_SEED");
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), &options(seed, &["410102", "410103"])).expect("cluster");
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
    let completed = wait_until(Duration::from_secs(90), || {
        uplink_log(&cluster).contains("outcome=\"completed\"") || uplink_log(&cluster).contains("outcome=completed")
    });
    let log = uplink_log(&cluster);
    assert!(completed, "the uplink must see every county complete once the WAN is back:\n{log}");
    for county in ["410102", "410103"] {
        let acks = log.lines().filter(|l| l.contains("county complete") && l.contains(county) && l.contains(&object_id)).count();
        assert_eq!(acks, 1, "{county}'s completion must be recorded exactly once:\n{log}");
    }
}

#[test]
fn a_county_certificate_cannot_report_about_another_county() {
    let seed = seed("ACKS_SEED");
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
            let feedback =
                Feedback { county_code: county.into(), message: FeedbackMessage::Complete { object_id: 42, object_hash: [7; 32] } };
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

/// Connects to the cluster's acknowledgement server with `tls` and sends one Hello;
/// returns the reply or the error text.
fn try_hello(cluster: &Cluster, tls: quinn::ClientConfig, county: &str) -> Result<AckReply, String> {
    let config = ReceiverConfig::load(&cluster.counties[0].config).map_err(|e| e.to_string())?;
    let ack = config.ack.ok_or("no ack section")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let county = county.to_owned();
    runtime.block_on(async move {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().map_err(|_| "addr")?).map_err(|e| e.to_string())?;
        endpoint.set_default_client_config(tls);
        let addr = ack.uplink.parse().map_err(|_| "uplink address")?;
        let exchange = async {
            let connection = endpoint.connect(addr, &ack.server_name).map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
            let hello = Feedback {
                county_code: county,
                message: FeedbackMessage::Hello { software_version: "test".into(), free_disk_bytes: 1, heartbeat_age_ms: None },
            };
            let (mut tx, mut rx) = connection.open_bi().await.map_err(|e| e.to_string())?;
            tx.write_all(&hello.to_bytes()).await.map_err(|e| e.to_string())?;
            tx.finish().map_err(|e| e.to_string())?;
            let reply = rx.read_to_end(16).await.map_err(|e| e.to_string())?;
            reply.first().map(|b| AckReply::from_byte(*b)).ok_or_else(|| "empty reply".to_string())
        };
        tokio::time::timeout(Duration::from_secs(10), exchange).await.map_err(|_| "timed out".to_string())?
    })
}

fn client_tls(ca: &std::path::Path, cert_and_key: Option<(&std::path::Path, &std::path::Path)>) -> quinn::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(ca).expect("ca")).expect("root");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots);
    let mut tls = match cert_and_key {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(cert).expect("cert")],
                PrivateKeyDer::from_pem_file(key).expect("key"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![satcast_protocol::feedback::ACK_ALPN.to_vec()];
    quinn::ClientConfig::new(std::sync::Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic")))
}

#[test]
fn the_ack_channel_refuses_no_certificate_another_ca_and_a_revoked_certificate() {
    let seed = seed("ACKS_SEED");
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), &options(seed, &["410102"])).expect("cluster");
    let bundle = &cluster.counties[0].dir;
    let ca = bundle.join("ca.cert.pem");
    let (cert, key) = (bundle.join("client.cert.pem"), bundle.join("client.key.pem"));
    assert_eq!(try_hello(&cluster, client_tls(&ca, Some((&cert, &key))), "410102"), Ok(AckReply::Recorded), "the genuine county gets in");

    let no_cert = try_hello(&cluster, client_tls(&ca, None), "410102");
    assert!(no_cert.is_err(), "no client certificate must be refused: {no_cert:?}");

    // A whole other key hierarchy: its CA never signed anything this uplink trusts.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    satcast::run("satcast-uplink", &["keys", "init", "--dir", "keys"], &other).expect("other keys");
    satcast::run("satcast-uplink", &["keys", "receiver", "--dir", "keys", "--id", "410102", "--out", "bundle"], &other)
        .expect("other bundle");
    let foreign =
        try_hello(&cluster, client_tls(&ca, Some((&other.join("bundle/client.cert.pem"), &other.join("bundle/client.key.pem")))), "410102");
    assert!(foreign.is_err(), "a certificate from another CA must be refused: {foreign:?}");

    // The county PC was stolen: its certificate is revoked.
    satcast::run("satcast-uplink", &["keys", "revoke-receiver", "--dir", "keys", "--id", "410102"], dir.path()).expect("revoke");
    let revoked = try_hello(&cluster, client_tls(&ca, Some((&cert, &key))), "410102");
    assert!(revoked.is_err(), "a revoked certificate must be refused: {revoked:?}");
    let log = cluster.uplink.as_ref().map(|d| d.log_text()).unwrap_or_default();
    assert!(log.contains("client certificate is revoked"), "{log}");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[test]
fn a_flood_of_quic_initials_keeps_the_uplink_memory_bounded() {
    let seed = seed("ACKS_SEED");
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), &options(seed, &["410102"])).expect("cluster");
    let config = ReceiverConfig::load(&cluster.counties[0].config).expect("config");
    let server: std::net::SocketAddr = config.ack.expect("ack").uplink.parse().expect("addr");
    let pid = cluster.uplink.as_ref().expect("uplink").pid();
    let before = rss_kib(pid);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let sockets: Vec<std::net::UdpSocket> = (0..64).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind")).collect();
    let mut datagram = vec![0u8; 1200];
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_secs(5) && sent < 300_000 {
        rng.fill_bytes(&mut datagram);
        // Long header, Initial packet type, QUIC version 1, random connection ids.
        datagram[0] = 0xC0 | (datagram[0] & 0x0F);
        datagram[1..5].copy_from_slice(&1u32.to_be_bytes());
        datagram[5] = 8;
        datagram[14] = 8;
        let _ = sockets[(sent % 64) as usize].send_to(&datagram, server);
        sent += 1;
    }
    let after = rss_kib(pid);
    println!("{sent} forged Initials: uplink RSS {before} KiB before, {after} KiB after");
    assert!(after < before + 64 * 1024, "the flood grew the uplink by {} KiB", after - before);
    // And the genuine county still gets through.
    let bundle = &cluster.counties[0].dir;
    let tls = client_tls(&bundle.join("ca.cert.pem"), Some((&bundle.join("client.cert.pem"), &bundle.join("client.key.pem"))));
    assert_eq!(try_hello(&cluster, tls, "410102"), Ok(AckReply::Recorded));
}

#[test]
fn a_county_flooding_feedback_is_told_to_come_back_later() {
    let seed = seed("ACKS_SEED");
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), &options(seed, &["410102"])).expect("cluster");
    let config = ReceiverConfig::load(&cluster.counties[0].config).expect("config");
    let ack = config.ack.clone().expect("ack");
    let tls = satcast_receiver::acks::client_config(&config.keys).expect("tls");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let replies = runtime.block_on(async move {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
        endpoint.set_default_client_config(tls);
        let connection = endpoint.connect(ack.uplink.parse().expect("addr"), &ack.server_name).expect("connect").await.expect("handshake");
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let connection = connection.clone();
            tasks.push(tokio::spawn(async move {
                let mut replies = Vec::new();
                for _ in 0..30 {
                    let hello = Feedback {
                        county_code: "410102".into(),
                        message: FeedbackMessage::Hello { software_version: "flood".into(), free_disk_bytes: 1, heartbeat_age_ms: None },
                    };
                    let Ok((mut tx, mut rx)) = connection.open_bi().await else { break };
                    if tx.write_all(&hello.to_bytes()).await.is_err() || tx.finish().is_err() {
                        break;
                    }
                    if let Ok(reply) = rx.read_to_end(16).await {
                        replies.extend(reply.first().map(|b| AckReply::from_byte(*b)));
                    }
                }
                replies
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap_or_default());
        }
        all
    });
    let busy = replies.iter().filter(|r| **r == AckReply::Busy).count();
    let recorded = replies.iter().filter(|r| **r == AckReply::Recorded).count();
    println!("{} messages: {recorded} recorded, {busy} told to come back later", replies.len());
    assert!(busy > 0, "a county sending {} messages at once must hit the rate limit", replies.len());
    assert!(recorded >= 150, "the burst allowance lets a normal backlog through ({recorded} recorded)");
}

/// Handshakes that fail (no client certificate) at the rate a script can make them: the
/// uplink logs the first and then one summary line per reason every 10 s, so nobody can
/// buy its log (and disk) with connection attempts. The old server logged each one.
#[test]
fn failed_handshakes_are_logged_once_and_summarised() {
    const ATTEMPTS: usize = 100;
    let seed = seed("ACKS_SEED");
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), &options(seed, &["410102"])).expect("cluster");
    let ca = cluster.counties[0].dir.join("ca.cert.pem");
    let log = || cluster.uplink.as_ref().map(|d| d.log_text()).unwrap_or_default();
    let lines_before = log().lines().count();
    for _ in 0..ATTEMPTS {
        assert!(try_hello(&cluster, client_tls(&ca, None), "410102").is_err(), "no client certificate must be refused");
    }
    let summarised = wait_until(Duration::from_secs(15), || log().contains("acknowledgement connections refused"));
    let text = log();
    let refused_lines = text.lines().skip(lines_before).filter(|l| l.contains("acknowledgement connection")).count();
    assert!(summarised, "no summary line:\n{text}");
    assert!(refused_lines <= 3, "{refused_lines} lines for {ATTEMPTS} failed handshakes:\n{text}");
    let summary = text.lines().find(|l| l.contains("acknowledgement connections refused")).unwrap_or_default();
    assert!(summary.contains("count="), "the summary counts them: {summary}");
}
