//! `/metrics`, `/healthz` and `/readyz` through the real broker binary, with
//! the real producer and worker libraries on its sockets: the scrape passes
//! `promtool check metrics` (Debian's `prometheus` package, installed by
//! scripts/setup.sh), its histograms count what flowed, and `/readyz`
//! names the check that fails.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orderly_test_support::{group_member_command, promtool_check};
use support::{ep, free_port, start_broker, wait_started, Broker, BROKER};

mod support;

/// How long orders may take to be confirmed, or acknowledged.
const ORDERS_WAIT: Duration = Duration::from_secs(30);

/// `GET path`: (status, head, body); status 0 if the connection failed.
fn get_with_head(broker: &Broker, path: &str) -> (u16, String, String) {
    orderly_test_support::get_with_head(&broker.admin, path)
}

fn get(broker: &Broker, path: &str) -> (u16, String) {
    let (status, _, body) = get_with_head(broker, path);
    (status, body)
}

/// One of `/status`'s counters.
fn counter(broker: &Broker, key: &str) -> u64 {
    let (status, body) = get(broker, "/status");
    assert_eq!(status, 200, "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    value["counters"][key].as_u64().unwrap_or_else(|| panic!("{key}: {body}"))
}

/// A worker thread (the real library) with a sink handler; stopped by the
/// returned flag.
struct Worker {
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<orderly_worker::io::Exit, orderly_worker::io::IoError>>>,
}

impl Worker {
    fn start(broker: &Broker, id: &str) -> Worker {
        let sink = broker.dir.join(format!("sink-{id}"));
        std::fs::create_dir_all(&sink).unwrap(); // the worker CLI does this (`Handler::prepare`)
        let config = orderly_worker::io::Config {
            worker: id.into(),
            incarnation: 7,
            fanout: ep(&broker.dir, "fanout").parse().unwrap(),
            control: ep(&broker.dir, "control").parse().unwrap(),
            concurrency: 4,
            handler: Arc::new(orderly_worker::handler::Sink { dir: sink }),
            heartbeat_interval_ms: 200,
            heartbeat_liveness: 5,
            drain_timeout_ms: 1000,
            dispatches_max: orderly_common::limits::WORKER_DISPATCHES_MAX_DEFAULT,
            curve: None,
        };
        let shutdown = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&shutdown);
        let thread = std::thread::spawn(move || orderly_worker::io::run(config, &flag));
        Worker { shutdown, thread: Some(thread) }
    }
}

impl Drop for Worker {
    /// Stops the worker (its drain is bounded by `drain_timeout_ms`).
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sends `count` orders `prefix-N` of one JSON item with the real producer
/// library; every one must be confirmed.
fn send_orders(broker: &Broker, prefix: &str, count: usize) {
    let config = orderly_producer::ProducerConfig::new(
        "shop",
        ep(&broker.dir, "intake").parse().unwrap(),
        ep(&broker.dir, "fanout").parse().unwrap(),
    );
    let mut producer = orderly_producer::Producer::connect(config).expect("the producer connects");
    let mut receipts = Vec::new();
    for n in 0..count {
        let id = format!("{prefix}-{n}");
        let order = orderly_producer::Order::new(id.clone(), vec![format!("{{\"n\":{n}}}").into_bytes()]);
        receipts.push((id, producer.send(order).expect("the outbox takes the order")));
    }
    for (id, receipt) in receipts {
        let outcome = receipt.wait(&mut producer, ORDERS_WAIT).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert!(outcome.is_confirmed(), "{id}: {outcome:?}");
    }
}

/// `promtool ARGS` in deploy/ (the dashboard and the rules), with `input`
/// on its stdin: its exit status and what it said.
fn promtool(args: &[&str], input: Option<&str>) -> (bool, String) {
    orderly_test_support::promtool(args, input, &deploy_dir())
}

/// The repository's deploy/ directory (the dashboard and the rules).
fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The monitoring files whose `orderly_*` names must exist in a scrape.
const MONITORING_FILES: [&str; 3] = ["grafana-dashboard.json", "prometheus-alerts.yml", "prometheus-alerts.test.yml"];

/// Every `orderly_*` metric name in the monitoring files (the text of the
/// dashboard's queries and the rules' expressions), with the file it is in.
fn monitoring_names() -> BTreeSet<(String, &'static str)> {
    let mut names = BTreeSet::new();
    for file in MONITORING_FILES {
        let text = std::fs::read_to_string(deploy_dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        for (at, _) in text.match_indices("orderly_") {
            let name: String =
                text[at..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
            // "orderly_*" in a comment is no name.
            if name != "orderly_" {
                names.insert((name, file));
            }
        }
    }
    names
}

/// The families a scrape declares (`# TYPE NAME KIND`).
fn families(scrape: &str) -> BTreeSet<&str> {
    scrape.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.split(' ').next()).collect()
}

/// The names of `names` that no family of `scrape` serves (a histogram's
/// `_bucket`, `_sum` and `_count` are its family's).
fn unserved<'a>(names: impl Iterator<Item = &'a (String, &'static str)>, scrape: &str) -> Vec<String> {
    let families = families(scrape);
    let served = |name: &str| {
        families.contains(name)
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| name.strip_suffix(suffix).is_some_and(|family| families.contains(family)))
    };
    names.filter(|(name, _)| !served(name)).map(|(name, file)| format!("{name} (in deploy/{file})")).collect()
}

/// The value of the sample line `series` (name and labels, exactly).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn a_scrape_after_orders_flowed_passes_promtool_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]);
    let worker = Worker::start(&broker, "w1");
    let unix_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let last_ack = || {
        let (_, body) = get(&broker, "/status");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["last_ack_unix_ms"].as_u64()
    };
    assert_eq!(last_ack(), None, "no ack yet");
    let sent_unix_ms = unix_ms();
    send_orders(&broker, "o", 20);
    let deadline = Instant::now() + ORDERS_WAIT;
    while counter(&broker, "orders_acked") < 20 {
        assert!(Instant::now() < deadline, "the worker did not acknowledge the orders");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Benchmarks end a run at it (bench/run.sh).
    let acked_unix_ms = last_ack().expect("last_ack_unix_ms after acks");
    assert!((sent_unix_ms..=unix_ms()).contains(&acked_unix_ms), "{acked_unix_ms} is not within the run");

    let (status, head, text) = get_with_head(&broker, "/metrics");
    assert_eq!(status, 200, "{text}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    let (ok, said) = promtool_check(&text);
    assert!(ok, "promtool check metrics failed:\n{said}\n--- the scrape:\n{text}");

    for histogram in [
        "orderly_confirm_latency_seconds",
        "orderly_queue_wait_seconds",
        "orderly_handler_duration_seconds",
        "orderly_journal_commit_seconds",
    ] {
        let count = sample(&text, &format!("{histogram}_count")).unwrap_or_else(|| panic!("{histogram}:\n{text}"));
        assert!(count > 0.0, "{histogram} counted nothing:\n{text}");
        let inf = sample(&text, &format!("{histogram}_bucket{{le=\"+Inf\"}}")).unwrap();
        assert_eq!(inf, count, "{histogram}");
    }
    assert_eq!(sample(&text, "orderly_confirm_latency_seconds_count"), Some(20.0), "{text}");
    assert_eq!(sample(&text, "orderly_handler_duration_seconds_count"), Some(20.0), "{text}");
    assert_eq!(sample(&text, "orderly_orders_acked_total"), Some(20.0), "{text}");
    assert_eq!(sample(&text, "orderly_worker_in_flight{worker=\"w1\"}"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "orderly_worker_credits{worker=\"w1\"}"), Some(4.0), "{text}");
    assert_eq!(sample(&text, "orderly_worker_broken{worker=\"w1\"}"), Some(0.0), "{text}");
    let heartbeat_age = sample(&text, "orderly_worker_heartbeat_age_seconds{worker=\"w1\"}").unwrap();
    assert!((0.0..5.0).contains(&heartbeat_age), "{text}");
    assert_eq!(sample(&text, "orderly_oldest_pending_age_seconds"), Some(0.0), "nothing is pending:\n{text}");
    let version = env!("CARGO_PKG_VERSION");
    assert!(text
        .lines()
        .any(|l| l.starts_with(&format!("orderly_build_info{{version=\"{version}\"")) && l.ends_with(" 1")));
    assert!(sample(&text, "process_resident_memory_bytes").is_some_and(|rss| rss > 0.0), "{text}");

    // A worker that leaves (its Bye) disappears from the scrape.
    drop(worker);
    let deadline = Instant::now() + ORDERS_WAIT;
    while get(&broker, "/metrics").1.contains("worker=\"w1\"") {
        assert!(Instant::now() < deadline, "w1 left but is still scraped");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn readyz_names_the_check_that_fails_and_healthz_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &["--pending-orders-max", "1"]);
    assert_eq!(get(&broker, "/readyz"), (200, "ok\n".to_owned()));

    // One order and no worker: the pending bound closes intake.
    send_orders(&broker, "held", 1);
    let deadline = Instant::now() + ORDERS_WAIT;
    let (status, body) = loop {
        let (status, body) = get(&broker, "/readyz");
        if status != 200 || Instant::now() >= deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status, 503, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["ready"], false, "{body}");
    assert_eq!(answer["check"], "intake", "{body}");
    assert!(answer["detail"].as_str().unwrap().contains("pending_orders"), "{body}");
    assert_eq!(get(&broker, "/healthz"), (200, "ok\n".to_owned()), "alive while not ready");
    let metrics = get(&broker, "/metrics").1;
    assert_eq!(sample(&metrics, "orderly_intake_open"), Some(0.0), "{metrics}");
    // The held order ages.
    let deadline = Instant::now() + ORDERS_WAIT;
    while sample(&get(&broker, "/metrics").1, "orderly_oldest_pending_age_seconds").unwrap() < 0.05 {
        assert!(Instant::now() < deadline, "the oldest pending order does not age");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A worker takes the order: ready again.
    let worker = Worker::start(&broker, "w1");
    let deadline = Instant::now() + ORDERS_WAIT;
    while get(&broker, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "not ready again: {}", get(&broker, "/readyz").1);
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(worker);
}

/// A group file of three members in `dir`: their admin addresses, by id.
fn write_group(dir: &Path) -> (PathBuf, Vec<String>) {
    let mut text = String::new();
    let mut admins = Vec::new();
    for id in 1..=3u64 {
        let admin = format!("127.0.0.1:{}", free_port());
        text.push_str(&format!(
            "[[member]]\nid = {id}\nintake = \"{}\"\nfanout = \"{}\"\ncontrol = \"{}\"\npeer = \"{}\"\nadmin = \"{admin}\"\n\n",
            ep(dir, &format!("intake-{id}")),
            ep(dir, &format!("fanout-{id}")),
            ep(dir, &format!("control-{id}")),
            ep(dir, &format!("peer-{id}")),
        ));
        admins.push(admin);
    }
    let path = dir.join("group.toml");
    std::fs::write(&path, text).unwrap();
    (path, admins)
}

/// Member `id` of the group in `group`, killed on drop.
fn start_member(dir: &Path, group: &Path, id: u64, admin: &str) -> Broker {
    let child = group_member_command(Path::new(BROKER), dir, group, id).spawn().unwrap();
    let member = Broker { child, dir: dir.to_path_buf(), admin: admin.to_owned(), public: [0; 32] };
    wait_started(&member);
    member
}

/// Polls `/readyz` until its status is `want`; the last answer.
fn wait_readyz(broker: &Broker, want: u16) -> (u16, String) {
    let deadline = Instant::now() + ORDERS_WAIT;
    loop {
        let (status, body) = get(broker, "/readyz");
        if status == want || Instant::now() >= deadline {
            return (status, body);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_member_without_a_majority_is_not_ready_and_a_group_s_scrape_passes_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let (group, admins) = write_group(dir.path());
    let first = start_member(dir.path(), &group, 1, &admins[0]);
    // Alone of three, it can elect no one.
    std::thread::sleep(Duration::from_secs(1));
    let (status, body) = get(&first, "/readyz");
    assert_eq!(status, 503, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["check"], "group", "{body}");
    assert_eq!(get(&first, "/healthz").0, 200, "alive while not ready");

    // A second member makes a majority: both are ready, leader and follower.
    let second = start_member(dir.path(), &group, 2, &admins[1]);
    for member in [&first, &second] {
        let (status, body) = wait_readyz(member, 200);
        assert_eq!(status, 200, "{body}");
    }
    for member in [&first, &second] {
        let text = get(member, "/metrics").1;
        let (ok, said) = promtool_check(&text);
        assert!(ok, "promtool check metrics failed:\n{said}\n--- the scrape:\n{text}");
        let roles: f64 = ["leader", "follower"]
            .iter()
            .filter_map(|role| sample(&text, &format!("orderly_group_role{{role=\"{role}\"}}")))
            .sum();
        assert_eq!(roles, 1.0, "one role each:\n{text}");
        assert!(sample(&text, "orderly_group_term").is_some_and(|term| term >= 1.0), "{text}");
        assert!(sample(&text, "orderly_group_commit_index").is_some(), "{text}");
        assert!(sample(&text, "orderly_group_applied_index").is_some(), "{text}");
        // The dashboard's and the rules' group families are served.
        let names = monitoring_names();
        let missing = unserved(names.iter().filter(|(name, _)| name.starts_with("orderly_group_")), &text);
        assert!(missing.is_empty(), "names no group member serves: {missing:?}\n--- the scrape:\n{text}");
    }
    // The leader's /status lists every member's progress (the dashboard's
    // members table): three voters, two of them up; a follower lists none.
    let reports: Vec<serde_json::Value> = [&first, &second]
        .iter()
        .map(|member| serde_json::from_str::<serde_json::Value>(&get(member, "/status").1).unwrap()["group"].clone())
        .collect();
    let leader = reports.iter().find(|group| group["role"] == "leader").expect("one member leads");
    let members = leader["members"].as_array().expect("the leader lists its members");
    let ids: Vec<u64> = members.iter().map(|member| member["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3], "{leader}");
    let leading = members.iter().filter(|member| member["role"] == "leader").count();
    assert_eq!(leading, 1, "{leader}");
    let third = &members[2];
    assert_eq!((third["role"].as_str(), third["active"].as_bool()), (Some("voter"), Some(false)), "{leader}");
    let follower = reports.iter().find(|group| group["role"] == "follower").expect("one member follows");
    assert_eq!(follower["members"], serde_json::json!([]), "{follower}");
}

/// deploy/prometheus-alerts.yml is valid, and its unit tests
/// (deploy/prometheus-alerts.test.yml: the no-worker, oldest-pending,
/// dead-letter, disk-full, broker-down and leaderless alerts on synthetic
/// series) pass.
#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let (ok, said) = promtool(&["check", "rules", "prometheus-alerts.yml"], None);
    assert!(ok, "promtool check rules deploy/prometheus-alerts.yml failed:\n{said}");
    let (ok, said) = promtool(&["test", "rules", "prometheus-alerts.test.yml"], None);
    assert!(ok, "promtool test rules deploy/prometheus-alerts.test.yml failed:\n{said}");
    let tests = std::fs::read_to_string(deploy_dir().join("prometheus-alerts.test.yml")).unwrap();
    for alert in ["OrderlyNoWorkerReady", "OrderlyOldestPendingOrderOld"] {
        assert!(tests.contains(&format!("alertname: {alert}")), "no unit test of {alert}");
    }
}

/// The Grafana dashboard parses, takes its data source as an input, and
/// it and the alert rules name only families a real broker (with a worker,
/// so the per-worker families exist) serves: a renamed metric fails here.
/// The group families are checked by the group test above.
#[test]
fn dashboard_and_alert_rules_name_only_families_a_broker_serves() {
    let text = std::fs::read_to_string(deploy_dir().join("grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("deploy/grafana-dashboard.json parses");
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion: {}",
        dashboard["schemaVersion"]
    );
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    let panels = dashboard["panels"].as_array().expect("panels");
    let queries: Vec<&serde_json::Value> = panels.iter().filter_map(|p| p["targets"].as_array()).flatten().collect();
    assert!(queries.len() >= 20, "{} queries", queries.len());
    for query in &queries {
        assert_eq!(query["datasource"]["uid"], "${DS_PROMETHEUS}", "{query}");
        assert!(query["expr"].as_str().is_some_and(|e| e.contains("orderly_")), "{query}");
    }

    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]);
    let _worker = Worker::start(&broker, "w1");
    let deadline = Instant::now() + ORDERS_WAIT;
    let scrape = loop {
        let (status, scrape) = get(&broker, "/metrics");
        if status == 200 && scrape.contains("\norderly_worker_in_flight{worker=\"w1\"}") {
            break scrape;
        }
        assert!(Instant::now() < deadline, "no per-worker series within {ORDERS_WAIT:?}:\n{scrape}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let names = monitoring_names();
    assert!(names.len() >= 20, "too few names found: {names:?}");
    // Group names are checked against a group member's scrape, the relay's
    // against a relay's (producer-cli/tests/relay_retention.rs).
    let missing = unserved(
        names.iter().filter(|(name, _)| !name.starts_with("orderly_group_") && !name.starts_with("orderly_relay_")),
        &scrape,
    );
    assert!(missing.is_empty(), "names the broker does not serve: {missing:?}\n--- the scrape:\n{scrape}");
}
