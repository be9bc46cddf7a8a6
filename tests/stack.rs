//! A whole system for one end-to-end test: every service as a real process on
//! free ports, against the local Kafka (the test's own topics), ClickHouse
//! (the test's own database) and the carrier simulator. Shared by several
//! test binaries, each of which uses a part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use sms_core::kafka::KafkaSettings;
use tokio::process::{Child, Command};

/// The services of the system, in start order.
pub const SERVICES: [&str; 5] = ["analytics", "status", "smsc-sim", "dispatcher", "ingest"];

/// The bearer token the test's platform client uses.
pub const TOKEN: &str = "e2e-platform-token";

/// What a test changes about the system it starts.
#[derive(Default)]
pub struct Options {
    /// TOML appended to the simulator's configuration (`[faults]`, `[submit]`).
    pub sim_extra: String,
    /// The simulator's `[reports]` section instead of the default (50 ms, 99% delivered).
    pub reports: Option<String>,
    /// Put the analytics sink's ClickHouse behind a proxy the test can cut.
    pub clickhouse_proxy: bool,
    /// Extra environment variables, by service.
    pub env: Vec<(&'static str, String, String)>,
    /// `RUST_LOG` of every service; `info` when empty.
    pub log: &'static str,
    /// Extra lines for ingest's file (its `[[clients]]` table is last, so
    /// they belong to the platform client, e.g. `rate_per_second = 100000`).
    pub ingest_client_extra: String,
}

/// A running system.
pub struct Stack {
    pub kafka: KafkaSettings,
    pub clickhouse: clickhouse::Client,
    /// The test's own database on `clickhouse`.
    pub database: String,
    pub ingest_url: String,
    pub sim_url: String,
    receiver: u16,
    bins: PathBuf,
    dir: PathBuf,
    log: &'static str,
    env: BTreeMap<&'static str, Vec<(String, String)>>,
    children: BTreeMap<&'static str, Child>,
    http: reqwest::Client,
    /// Between the analytics sink and ClickHouse, when asked for.
    pub clickhouse_proxy: Option<std::sync::Arc<sms_harness::TcpProxy>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// The directory the workspace's debug binaries are in: next to this test's own.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/debug/deps/e2e-… → target/debug
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Builds the service binaries when they are missing (`cargo test` builds
/// them for the crates' own integration tests; a lone `-p sms-tests` does not).
fn ensure_binaries(bins: &Path) {
    let names = ["analytics", "status", "smsc-sim", "dispatcher", "ingest"];
    if names.iter().all(|n| bins.join(n).exists()) {
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    if bins.ends_with("release") {
        command.arg("--release");
    }
    let status = command
        .args([
            "build",
            "--bins",
            "-p",
            "analytics",
            "-p",
            "status",
            "-p",
            "smsc-sim",
            "-p",
            "dispatcher",
            "-p",
            "ingest",
        ])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the service binaries failed");
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

impl Stack {
    /// Starts every service on its own topics, database and ports.
    /// `sim_extra` is TOML appended to the simulator's configuration.
    pub async fn start(label: &str, sim_extra: &str) -> Stack {
        let options = Options {
            sim_extra: sim_extra.to_string(),
            ..Options::default()
        };
        Stack::start_with(label, options).await
    }

    /// Starts every service as `options` say.
    pub async fn start_with(label: &str, options: Options) -> Stack {
        let kafka = sms_harness::kafka_for_test(label, 3).await.expect("kafka");
        let (clickhouse, database) = sms_harness::clickhouse_for_test(label)
            .await
            .expect("clickhouse");
        let services = sms_harness::services().await.expect("services");
        let bins = bin_dir();
        ensure_binaries(&bins);
        let dir = std::env::temp_dir().join(sms_harness::unique_name(label));
        std::fs::create_dir_all(&dir).expect("temp dir");

        let ingest = free_port();
        let (sgip_submit, sim_http, receiver) = (free_port(), free_port(), free_port());
        let (status_metrics, dispatcher_metrics, analytics_metrics) =
            (free_port(), free_port(), free_port());
        let prefix = kafka.topic_prefix.clone();
        let bootstrap = services.kafka_bootstrap.clone();
        let pair = |k: &str, v: String| (k.to_string(), v);

        let reports = options.reports.clone().unwrap_or_else(|| {
            "[reports]\ndelay = { kind = \"fixed\", delay_ms = 50 }\n\
             outcomes = [{ state = 0, error_code = 0, weight = 99 }, { state = 2, error_code = 29, weight = 1 }]\n"
                .to_string()
        });
        let sim_config = format!(
            "submit_addr = \"127.0.0.1:{sgip_submit}\"\nhttp_addr = \"127.0.0.1:{sim_http}\"\n\
             {reports}\n[sp]\naddr = \"127.0.0.1:{receiver}\"\nresend_after_ms = 1000\n{}\n",
            options.sim_extra
        );
        let sim_file = dir.join("smsc-sim.toml");
        std::fs::write(&sim_file, sim_config).expect("simulator config");

        let clickhouse_proxy = if options.clickhouse_proxy {
            let upstream = services
                .clickhouse_url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .parse()
                .expect("the ClickHouse URL is http://host:port");
            Some(
                sms_harness::TcpProxy::start(upstream)
                    .await
                    .expect("proxy starts"),
            )
        } else {
            None
        };
        let sink_clickhouse = clickhouse_proxy.as_ref().map_or_else(
            || services.clickhouse_url.clone(),
            |p| format!("http://{}", p.address),
        );

        let mut env = BTreeMap::new();
        env.insert(
            "analytics",
            vec![
                pair("ANALYTICS_KAFKA__BOOTSTRAP", bootstrap.clone()),
                pair("ANALYTICS_KAFKA__TOPIC_PREFIX", prefix.clone()),
                pair("ANALYTICS_CLICKHOUSE__URL", sink_clickhouse),
                pair("ANALYTICS_CLICKHOUSE__DATABASE", database.clone()),
                pair(
                    "ANALYTICS_METRICS_ADDRESS",
                    format!("127.0.0.1:{analytics_metrics}"),
                ),
                pair("ANALYTICS_BATCH_MAX_MS", "300".into()),
                pair("ANALYTICS_GROUP_ID", format!("{prefix}analytics")),
            ],
        );
        env.insert(
            "status",
            vec![
                pair("STATUS_KAFKA__BOOTSTRAP", bootstrap.clone()),
                pair("STATUS_KAFKA__TOPIC_PREFIX", prefix.clone()),
                pair("STATUS_RECEIVER__LISTEN", format!("127.0.0.1:{receiver}")),
                pair(
                    "STATUS_METRICS_LISTEN",
                    format!("127.0.0.1:{status_metrics}"),
                ),
                pair("STATUS_GATEWAY_PASSWORD", "secret".into()),
                pair("STATUS_CORRELATION__GROUP_ID", format!("{prefix}status")),
                pair("STATUS_UPLINK__GROUP_ID", format!("{prefix}status-uplink")),
            ],
        );
        env.insert("smsc-sim", Vec::new());
        env.insert(
            "dispatcher",
            vec![
                pair("DISPATCHER_KAFKA__BOOTSTRAP", bootstrap.clone()),
                pair("DISPATCHER_KAFKA__TOPIC_PREFIX", prefix.clone()),
                pair(
                    "DISPATCHER_GATEWAY__ADDR",
                    format!("127.0.0.1:{sgip_submit}"),
                ),
                pair("DISPATCHER_GATEWAY_PASSWORD", "secret".into()),
                pair(
                    "DISPATCHER_CONSUMER__GROUP_ID",
                    format!("{prefix}dispatcher"),
                ),
                pair(
                    "DISPATCHER_METRICS_LISTEN",
                    format!("127.0.0.1:{dispatcher_metrics}"),
                ),
            ],
        );
        // Clients are configured in the file only (their secrets never in variables).
        let ingest_file = dir.join("ingest.toml");
        std::fs::write(
            &ingest_file,
            format!(
                "listen = \"127.0.0.1:{ingest}\"\n[kafka]\nbootstrap = \"{bootstrap}\"\ntopic_prefix = \"{prefix}\"\n\
                 [bridge]\ngroup_id = \"{prefix}ingest-bridge\"\n[[clients]]\nid = \"platform\"\nbearer_sha256 = [\"{}\"]\n{}\n",
                sha256_hex(TOKEN),
                options.ingest_client_extra
            ),
        )
        .expect("ingest config");
        env.insert("ingest", Vec::new());
        for (service, key, value) in options.env {
            env.entry(service).or_default().push((key, value));
        }

        let mut stack = Stack {
            kafka,
            clickhouse,
            database: database.clone(),
            ingest_url: format!("http://127.0.0.1:{ingest}"),
            sim_url: format!("http://127.0.0.1:{sim_http}"),
            receiver,
            bins,
            dir,
            log: if options.log.is_empty() {
                "info"
            } else {
                options.log
            },
            env,
            children: BTreeMap::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            clickhouse_proxy,
        };
        stack.extra_args("smsc-sim", &["--config", &sim_file.to_string_lossy()]);
        stack.extra_args("ingest", &["--config", &ingest_file.to_string_lossy()]);
        for service in SERVICES {
            stack.spawn(service);
        }
        stack
            .wait_ready(&format!("http://127.0.0.1:{analytics_metrics}/healthz"))
            .await;
        stack
            .wait_ready(&format!("http://127.0.0.1:{status_metrics}/healthz"))
            .await;
        stack.wait_ready(&format!("{}/health", stack.sim_url)).await;
        stack
            .wait_ready(&format!("http://127.0.0.1:{dispatcher_metrics}/healthz"))
            .await;
        stack
            .wait_ready(&format!("{}/readyz", stack.ingest_url))
            .await;
        stack
    }

    fn extra_args(&mut self, service: &'static str, args: &[&str]) {
        let list = self.env.entry(service).or_default();
        for (n, arg) in args.iter().enumerate() {
            list.push((format!("__ARG{n}"), (*arg).to_string()));
        }
    }

    /// Starts (or starts again) one service.
    pub fn spawn(&mut self, service: &'static str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{service}.log")))
            .expect("log file");
        let mut command = Command::new(self.bins.join(service));
        let mut args = Vec::new();
        for (key, value) in self.env.get(service).into_iter().flatten() {
            if key.starts_with("__ARG") {
                args.push(value.clone());
            } else {
                command.env(key, value);
            }
        }
        command
            .args(args)
            .env("RUST_LOG", self.log)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {service}: {e}"));
        self.children.insert(service, child);
    }

    /// Kills one service with SIGKILL: no shutdown, nothing flushed.
    pub async fn kill9(&mut self, service: &'static str) {
        if let Some(mut child) = self.children.remove(service) {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Stops one service with SIGTERM and waits for it.
    pub async fn terminate(&mut self, service: &'static str) {
        if let Some(mut child) = self.children.remove(service) {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .arg(pid.to_string())
                    .status();
            }
            if tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
    }

    async fn wait_ready(&self, url: &str) {
        for _ in 0..240 {
            if self
                .http
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "{url} did not answer within 60 s; logs in {}",
            self.dir.display()
        );
    }

    /// Registers `phones` for every kind.
    pub async fn subscribe(&self, phones: &[String]) {
        for phone in phones {
            let answer = self
                .http
                .post(format!("{}/v1/subscriptions", self.ingest_url))
                .bearer_auth(TOKEN)
                .json(&json!({ "phone": phone }))
                .send()
                .await
                .expect("ingest answers");
            assert!(
                answer.status().is_success(),
                "registering {phone}: {}",
                answer.status()
            );
        }
    }

    /// Sends a batch; returns the answer. Retries on 503 (Kafka busy or down)
    /// with the same request ids, for up to two minutes, as the platform would.
    pub async fn send_batch(&self, messages: &[Value]) -> Value {
        for _ in 0..240 {
            match self
                .http
                .post(format!("{}/v1/messages/batch", self.ingest_url))
                .bearer_auth(TOKEN)
                .json(&json!({ "messages": messages }))
                .send()
                .await
            {
                Ok(answer) if answer.status().is_success() => {
                    return answer.json().await.expect("json")
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        panic!("ingest did not take the batch");
    }

    /// Sends `messages` in batches of `per_batch`; returns the ids of the
    /// messages ingest accepted.
    pub async fn send_all(&self, messages: &[Value], per_batch: usize) -> HashSet<String> {
        let mut accepted = HashSet::new();
        for chunk in messages.chunks(per_batch.max(1)) {
            let answer = self.send_batch(chunk).await;
            for item in answer["results"].as_array().into_iter().flatten() {
                if let Some(id) = item["message_id"].as_str() {
                    accepted.insert(id.to_string());
                }
            }
        }
        accepted
    }

    /// The simulator's counts.
    pub async fn counts(&self) -> smsc_sim::Counts {
        self.http
            .get(format!("{}/counts", self.sim_url))
            .send()
            .await
            .expect("simulator answers")
            .json()
            .await
            .expect("counts")
    }

    /// Puts `faults` (the simulator's `[faults]` as JSON) in force at once.
    pub async fn set_faults(&self, faults: Value) {
        let answer = self
            .http
            .put(format!("{}/faults", self.sim_url))
            .json(&faults)
            .send()
            .await
            .expect("simulator answers");
        assert!(
            answer.status().is_success(),
            "faults {faults}: {}",
            answer.status()
        );
    }

    /// Makes the simulator drop every SGIP connection it holds.
    pub async fn drop_connections(&self) {
        let answer = self
            .http
            .post(format!("{}/drop", self.sim_url))
            .send()
            .await
            .expect("simulator answers");
        assert!(answer.status().is_success());
    }

    /// The status service's SGIP receiver.
    pub fn receiver_addr(&self) -> String {
        format!("127.0.0.1:{}", self.receiver)
    }

    /// The process id of each running service.
    pub fn pids(&self) -> BTreeMap<&'static str, u32> {
        self.children
            .iter()
            .filter_map(|(name, child)| child.id().map(|pid| (*name, pid)))
            .collect()
    }

    /// Where the services' logs are.
    pub fn logs(&self) -> &Path {
        &self.dir
    }

    /// Stops every service with SIGTERM.
    pub async fn stop(mut self) {
        for service in SERVICES.iter().rev() {
            self.terminate(service).await;
        }
    }
}

/// Waits until every id in `ids` is final in the per-message table.
pub async fn wait_final(
    stack: &Stack,
    ids: &HashSet<String>,
    within: Duration,
) -> HashMap<String, String> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Row {
        message_id: String,
        state: String,
    }
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let rows = stack
            .clickhouse
            .query(
                "SELECT message_id, argMax(state, version) AS state \
                 FROM sms_messages WHERE is_final = 1 GROUP BY message_id",
            )
            .fetch_all::<Row>()
            .await
            .unwrap_or_default();
        let finals: HashMap<String, String> =
            rows.into_iter().map(|r| (r.message_id, r.state)).collect();
        if ids.iter().all(|id| finals.contains_key(id)) || tokio::time::Instant::now() > deadline {
            return finals;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
