//! `/metrics` and `/health` of both daemons, read as Prometheus reads them (a text-format
//! parser), against what the daemons' own status commands say.

use std::collections::BTreeMap;
use std::time::Duration;

use satcast::{Cluster, ClusterOptions, run, section_listen, seed, wait_until};
use satcast_daemon::http::HTTP_CONNECTIONS_MAX;
use satcast_sim::relay::LossModel;

/// An HTTP answer: status and body.
fn http_get(url: &str, bearer: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).http_status_as_error(false).build().into();
    let mut request = agent.get(url);
    if let Some(token) = bearer {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request.call().expect("the daemon answers");
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().expect("body"))
}

/// Every sample of a scrape, by name and labels ("name{label=value,...}"), parsed with a
/// Prometheus text-format parser.
fn scrape(text: &str) -> BTreeMap<String, f64> {
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    assert!(!scrape.samples.is_empty(), "no samples in:\n{text}");
    scrape
        .samples
        .into_iter()
        .map(|sample| {
            let value = match sample.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                other => panic!("unexpected sample {other:?}"),
            };
            let mut labels: Vec<String> = sample.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let key = if labels.is_empty() { sample.metric } else { format!("{}{{{}}}", sample.metric, labels.join(",")) };
            (key, value)
        })
        .collect()
}

fn value(samples: &BTreeMap<String, f64>, key: &str) -> u64 {
    match samples.get(key) {
        Some(v) => *v as u64,
        None => panic!("no sample {key} in {:#?}", samples.keys().collect::<Vec<_>>()),
    }
}

#[test]
fn both_daemons_metrics_parse_and_agree_with_their_status() {
    let seed = seed("METRICS_SEED");
    let dir = tempfile::tempdir().expect("tempdir");
    let options = ClusterOptions {
        counties: vec!["410102".into(), "420102".into()],
        loss: vec![LossModel::Bernoulli(0.02)],
        link_rate_bits_per_sec: 20_000_000,
        passes: 2,
        seed,
        extra_uplink_config: String::new(),
        acks: true,
    };
    let cluster = Cluster::start(dir.path(), &options).expect("cluster");
    let payload = dir.path().join("notice.txt");
    std::fs::write(&payload, vec![7u8; 300_000]).expect("payload");
    let id = cluster.send(&payload, "policy", "41,42", 1).expect("send");
    let status =
        || -> serde_json::Value { serde_json::from_str(&cluster.uplink_cli(&["status", &id, "--json"]).expect("status")).expect("json") };
    assert!(wait_until(Duration::from_secs(60), || status()["summary"]["state"] == "completed"), "not completed: {:#}", status());

    let config = std::fs::read_to_string(&cluster.uplink_config).expect("config");
    let control = section_listen(&config, "[control]").expect("control address");
    let dashboard = section_listen(&config, "[dashboard]").expect("dashboard address");
    let viewer = std::fs::read_to_string(dir.path().join("state/viewer.token")).expect("viewer token");
    let viewer = viewer.trim();

    // The uplink: loopback /metrics without a credential; the dashboard's only with the viewer's.
    assert_eq!(http_get(&format!("http://{control}/health"), None).0, 200);
    assert_eq!(http_get(&format!("http://{dashboard}/health"), None).0, 200);
    assert_eq!(http_get(&format!("http://{dashboard}/metrics"), None).0, 401);
    let report = status();
    let delivered = report["summary"]["delivered"].as_u64().expect("delivered");
    let uplink = |url: String, bearer: Option<&str>| {
        let (code, text) = http_get(&url, bearer);
        assert_eq!(code, 200, "{text}");
        scrape(&text)
    };
    // The finished count is taken as the loop sees the end; status once the store has it.
    assert!(
        wait_until(Duration::from_secs(10), || {
            let m = uplink(format!("http://{control}/metrics"), None);
            m.get("satcast_uplink_broadcasts_finished_total{outcome=completed}") == Some(&1.0)
        }),
        "the finished broadcast is never counted"
    );
    for samples in [uplink(format!("http://{control}/metrics"), None), uplink(format!("http://{dashboard}/metrics"), Some(viewer))] {
        assert_eq!(value(&samples, "satcast_uplink_deliveries_total"), delivered, "deliveries against status --json");
        assert_eq!(delivered, 2);
        // A county may say it again (a resend after a lost reply): recorded once.
        assert!(value(&samples, "satcast_uplink_feedback_messages_total{type=complete}") >= delivered);
        assert_eq!(value(&samples, "satcast_uplink_broadcasts_finished_total{outcome=completed}"), 1);
        let data = value(&samples, "satcast_uplink_datagrams_aired_total{type=data}");
        assert_eq!(data, value(&samples, "satcast_uplink_symbols_aired_total"));
        let size = report["summary"]["size_bytes"].as_u64().expect("size");
        let aired = report["summary"]["bytes_aired"].as_u64().expect("bytes aired");
        assert!(aired >= size, "status: {aired} bytes aired of {size}");
        // Every symbol aired, and a datagram's headers beside it, went under the normal class.
        assert!(value(&samples, "satcast_uplink_air_bytes_total{priority=normal}") > aired, "{samples:#?}");
        assert!(value(&samples, "satcast_uplink_air_bytes_total{priority=control}") > 0, "heartbeats");
        assert!(value(&samples, "satcast_uplink_datagrams_aired_total{type=heartbeat}") > 0);
        assert!(value(&samples, "satcast_uplink_rounds_started_total") >= 1);
        assert_eq!(value(&samples, "satcast_uplink_receivers{state=heard}"), 2);
    }

    // Each county: its /metrics against `satcast-receiver status --json`, read just before
    // (datagrams keep arriving: heartbeats), and /health.
    for county in &cluster.counties {
        let county_config = std::fs::read_to_string(&county.config).expect("county config");
        let metrics = section_listen(&county_config, "[metrics]").expect("county metrics address");
        let config_arg = county.config.to_string_lossy().into_owned();
        let read_status = || -> serde_json::Value {
            serde_json::from_str(&run("satcast-receiver", &["status", "--config", &config_arg, "--json"], &county.dir).expect("status"))
                .expect("json")
        };
        // The status is rewritten every second: wait for the one written after the delivery.
        let mut status = read_status();
        assert!(
            wait_until(Duration::from_secs(10), || {
                status = read_status();
                // Cached first, then delivered: wait for both.
                let daemon = if status["daemon"].is_null() { &status } else { &status["daemon"] };
                status["cached_total"] == 1 && daemon["cached"].as_array().is_some_and(|c| c.iter().any(|o| o["delivered"] == true))
            }),
            "the delivery never shows in status: {status:#}"
        );
        let (code, text) = http_get(&format!("http://{metrics}/metrics"), None);
        assert_eq!(code, 200, "{text}");
        let samples = scrape(&text);
        let daemon = &status["daemon"];
        let daemon = if daemon.is_null() { &status } else { daemon };
        let number = |path: &[&str]| -> u64 {
            let mut v = daemon;
            for key in path {
                v = &v[*key];
            }
            v.as_u64().unwrap_or_else(|| panic!("no {path:?} in {status:#}"))
        };
        assert_eq!(value(&samples, "satcast_receiver_objects_cached"), number(&["cached_total"]), "{}", county.code);
        let delivered = daemon["cached"].as_array().map_or(0, |c| c.iter().filter(|o| o["delivered"] == true).count()) as u64;
        assert_eq!(value(&samples, "satcast_receiver_objects_delivered"), delivered, "{}: {status:#}", county.code);
        assert_eq!(delivered, 1, "{}: {status:#}", county.code);
        assert_eq!(value(&samples, "satcast_receiver_cache_bytes"), number(&["disk", "cache_bytes"]));
        assert_eq!(value(&samples, "satcast_receiver_symbols_total{verdict=kept}"), number(&["reception", "symbols_kept"]));
        for (event, field) in [("announced", "network_key_announcements"), ("learned", "network_keys_learned")] {
            let sample = format!("satcast_receiver_network_key_rotations_total{{event={event}}}");
            assert_eq!(value(&samples, &sample), number(&["reception", field]), "{sample}");
        }
        let datagrams = value(&samples, "satcast_receiver_datagrams_total{verdict=accepted}")
            + value(&samples, "satcast_receiver_datagrams_total{verdict=dropped}");
        assert!(datagrams >= number(&["reception", "datagrams"]), "{datagrams} datagrams in /metrics, fewer than status");
        assert_eq!(value(&samples, "satcast_receiver_heartbeat_stale"), 0);
        let (code, health) = http_get(&format!("http://{metrics}/health"), None);
        assert_eq!(code, 200, "{health}");
    }

    // Someone on the county's LAN opens connections to /metrics and sends nothing: the
    // daemon holds at most HTTP_CONNECTIONS_MAX of them (it held every one, each a file
    // descriptor, for ever), and answers again once they go.
    let county = &cluster.counties[0];
    let county_config = std::fs::read_to_string(&county.config).expect("county config");
    let metrics = section_listen(&county_config, "[metrics]").expect("county metrics address");
    let pid = county.daemon.as_ref().expect("running").pid();
    let descriptors = || std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let before = descriptors();
    let silent: Vec<_> = (0..HTTP_CONNECTIONS_MAX * 4).filter_map(|_| std::net::TcpStream::connect(metrics).ok()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let held = descriptors().saturating_sub(before);
    assert!(held <= HTTP_CONNECTIONS_MAX + 8, "{} silent connections made the daemon hold {held} more descriptors", silent.len());
    drop(silent);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(2))).build().into();
            agent.get(&format!("http://{metrics}/health")).call().is_ok_and(|r| r.status() == 200)
        }),
        "/health does not answer once the silent connections closed"
    );
}
