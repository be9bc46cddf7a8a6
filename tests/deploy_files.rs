//! The deployment and operations files agree with the code: every
//! configuration under `deploy/config/` is one its service accepts; the
//! compose file, the Kubernetes manifests and the Prometheus files parse and
//! name the services' real ports, endpoints, variables and binaries; the
//! alerts and dashboards ask only for metrics the code exports and tables the
//! schema creates; every alert has its section in the runbook. What operators
//! start from cannot rot unnoticed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml_ng::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn deploy(file: &str) -> PathBuf {
    root().join("deploy").join(file)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

/// Every document of a YAML file, with `<<` merge keys applied.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    let mut documents = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let mut value = Value::deserialize(document)
            .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
        value
            .apply_merge()
            .unwrap_or_else(|e| panic!("{}: bad merge key: {e}", path.display()));
        if !value.is_null() {
            documents.push(value);
        }
    }
    documents
}

fn yaml(path: &Path) -> Value {
    let mut documents = yaml_documents(path);
    assert_eq!(documents.len(), 1, "{} holds one document", path.display());
    documents.remove(0)
}

/// Files under `dir` (recursively) whose name ends with one of `endings`.
fn files_under(dir: &Path, endings: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if endings
                .iter()
                .any(|end| path.to_string_lossy().ends_with(end))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn str_of<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value:?}"))
}

fn seq<'a>(value: &'a Value, what: &str) -> &'a [Value] {
    value
        .as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{what} is not a list: {value:?}"))
}

fn port_of(value: &Value, what: &str) -> u16 {
    value
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("{what} is not a port number: {value:?}"))
}

/// A value given as `${NAME:-default}` in the compose file, as compose
/// resolves it with nothing set.
fn compose_default(raw: &str) -> String {
    match raw.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        Some(inner) => inner
            .split_once(":-")
            .map_or(String::new(), |(_, default)| default.to_string()),
        None => raw.to_string(),
    }
}

// ---- the code's side: metrics, binaries, tables, secrets -------------------

/// How a metric is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetricKind {
    Counter,
    Gauge,
    /// Rendered as a summary: `{quantile=...}`, `_sum`, `_count`.
    Histogram,
}

/// Every metric the services record, found in their sources: the first
/// argument of each `counter!`, `gauge!` and `histogram!`, a string literal
/// or a constant defined as one.
fn exported_metrics() -> BTreeMap<String, MetricKind> {
    let sources = files_under(&root().join("crates"), &[".rs"]);
    let sources: Vec<String> = sources
        .iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == "src"))
        .map(|p| read(p))
        .collect();
    let mut constants = HashMap::new();
    for text in &sources {
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line
                .strip_prefix("pub const ")
                .or_else(|| line.strip_prefix("const "))
            else {
                continue;
            };
            if let Some((name, value)) = rest.split_once(": &str = \"") {
                if let Some(value) = value.strip_suffix("\";") {
                    constants.insert(name.trim().to_string(), value.to_string());
                }
            }
        }
    }
    let mut metrics = BTreeMap::new();
    for text in &sources {
        for (mac, kind) in [
            ("counter!(", MetricKind::Counter),
            ("gauge!(", MetricKind::Gauge),
            ("histogram!(", MetricKind::Histogram),
        ] {
            for (at, _) in text.match_indices(mac) {
                let args = text[at + mac.len()..].trim_start();
                let name = if let Some(literal) = args.strip_prefix('"') {
                    literal.split('"').next().unwrap_or_default().to_string()
                } else {
                    let path: String = args
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                        .collect();
                    let constant = path.rsplit("::").next().unwrap_or_default();
                    match constants.get(constant) {
                        Some(value) => value.clone(),
                        None => panic!("metric name {path} is not a string constant"),
                    }
                };
                if let Some(previous) = metrics.insert(name.clone(), kind) {
                    assert_eq!(previous, kind, "{name} is recorded as two kinds");
                }
            }
        }
    }
    metrics
}

const SERVICE_PREFIXES: [&str; 4] = ["ingest_", "dispatcher_", "status_", "analytics_"];

/// The metrics a PromQL expression reads, each with the function applied
/// to it (`rate`, `increase`, ...) when it is the function's first argument.
fn promql_metrics(expr: &str) -> Vec<(String, Option<String>)> {
    // Label values and strings are not metric names.
    let mut unquoted = String::with_capacity(expr.len());
    let mut in_string = false;
    for c in expr.chars() {
        if c == '"' {
            in_string = !in_string;
            unquoted.push(' ');
        } else if !in_string {
            unquoted.push(c);
        }
    }
    let chars: Vec<char> = unquoted.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    let mut previous_word = String::new();
    while i < chars.len() {
        if chars[i].is_ascii_alphabetic() || chars[i] == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if SERVICE_PREFIXES.iter().any(|p| word.starts_with(p)) {
                // The function whose first argument this is: the word
                // right before an opening parenthesis just before it.
                let before: String = chars[..start].iter().collect();
                let applied = before
                    .trim_end()
                    .strip_suffix('(')
                    .map(|_| previous_word.clone())
                    .filter(|f| !f.is_empty());
                found.push((word.clone(), applied));
            }
            previous_word = word;
        } else {
            if !chars[i].is_whitespace() && chars[i] != '(' {
                previous_word.clear();
            }
            i += 1;
        }
    }
    found
}

/// Checks that `expr` reads at least one of the services' metrics and only
/// ones they export, each in a way its kind allows.
fn check_promql(expr: &str, metrics: &BTreeMap<String, MetricKind>, context: &str) {
    let used = promql_metrics(expr);
    // Prometheus's own `up` series, for the targets of the services' jobs.
    let reads_up = expr.trim_start().starts_with("up{job=");
    assert!(
        !used.is_empty() || reads_up,
        "{context}: `{expr}` reads no metric of the services"
    );
    for (name, applied) in used {
        let (base, suffix) = match name
            .strip_suffix("_sum")
            .map(|b| (b, "_sum"))
            .or_else(|| name.strip_suffix("_count").map(|b| (b, "_count")))
        {
            Some((base, suffix)) if metrics.get(base) == Some(&MetricKind::Histogram) => {
                (base.to_string(), suffix)
            }
            _ => (name.clone(), ""),
        };
        let kind = metrics.get(&base).unwrap_or_else(|| {
            panic!("{context}: `{name}` is not a metric the code exports (in `{expr}`)")
        });
        let counting = matches!(applied.as_deref(), Some("rate" | "increase" | "irate"));
        if counting {
            assert!(
                *kind == MetricKind::Counter || !suffix.is_empty(),
                "{context}: {}() over `{name}`, which is a {kind:?}",
                applied.unwrap_or_default()
            );
        } else {
            assert!(
                *kind != MetricKind::Counter,
                "{context}: counter `{name}` read raw; use rate() or increase()"
            );
        }
        if *kind == MetricKind::Histogram && suffix.is_empty() {
            assert!(
                expr.contains(&format!("{name}{{quantile=")),
                "{context}: summary `{name}` read without a quantile"
            );
        }
    }
}

/// Binaries the workspace builds: `[[bin]]` names, a package's own name for
/// `src/main.rs`, and `src/bin/*.rs`.
fn workspace_binaries() -> BTreeSet<String> {
    let mut binaries = BTreeSet::new();
    for manifest in files_under(&root().join("crates"), &["Cargo.toml"]) {
        let dir = manifest.parent().expect("crate dir");
        let table: toml::Table = toml::from_str(&read(&manifest)).expect("Cargo.toml parses");
        let Some(name) = table
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
        else {
            continue;
        };
        if dir.join("src/main.rs").exists() {
            binaries.insert(name.to_string());
        }
        if let Some(bins) = table.get("bin").and_then(|b| b.as_array()) {
            for bin in bins {
                if let Some(name) = bin.get("name").and_then(|n| n.as_str()) {
                    binaries.insert(name.to_string());
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(dir.join("src/bin")) {
            for entry in entries {
                let path = entry.expect("entry").path();
                if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                    binaries.insert(stem.to_string());
                }
            }
        }
    }
    binaries
}

/// The binaries the image carries: the Dockerfile's `for bin in ...` list.
fn image_binaries() -> BTreeSet<String> {
    let dockerfile = read(&deploy("Dockerfile"));
    let list = dockerfile
        .split("for bin in ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .expect("the Dockerfile copies binaries with `for bin in ...;`");
    list.split_whitespace().map(str::to_string).collect()
}

/// Tables the ClickHouse migrations create, with their columns.
fn schema_tables() -> BTreeMap<String, BTreeSet<String>> {
    let mut tables = BTreeMap::new();
    for file in files_under(&root().join("schemas/clickhouse"), &[".sql"]) {
        let text = read(&file);
        for statement in text.split("CREATE TABLE IF NOT EXISTS ").skip(1) {
            let name = statement
                .split_whitespace()
                .next()
                .expect("table name")
                .to_string();
            let mut columns = BTreeSet::new();
            let body = statement.split_once('(').map_or("", |(_, b)| b);
            for line in body.lines() {
                let line = line.trim();
                if line.starts_with(')') {
                    break;
                }
                if let Some(column) = line.split_whitespace().next() {
                    if column.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                        columns.insert(column.to_string());
                    }
                }
            }
            tables.insert(name, columns);
        }
    }
    assert!(tables.contains_key("sms_daily") && tables.contains_key("sms_events"));
    tables
}

/// The tables a query reads (`FROM sms.x`, `JOIN sms.x`).
fn sql_tables(sql: &str) -> Vec<String> {
    let words: Vec<&str> = sql.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0].eq_ignore_ascii_case("FROM") || w[0].eq_ignore_ascii_case("JOIN"))
        .filter(|w| !w[1].starts_with('('))
        .map(|w| {
            w[1].trim_end_matches(|c: char| !c.is_alphanumeric() && c != '_')
                .to_string()
        })
        .collect()
}

/// Stand-ins for values the cluster fills in: secrets and pod fields.
fn cluster_value(entry: &Value) -> Option<String> {
    if let Some(value) = entry["value"].as_str() {
        return Some(value.to_string());
    }
    if !entry["valueFrom"]["secretKeyRef"].is_null() {
        return Some("secret-from-the-cluster".into());
    }
    if let Some(field) = entry["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
        return Some(match field {
            "metadata.name" => "pod-0".into(),
            other => format!("field-{other}"),
        });
    }
    None
}

// ---- the example configurations ------------------------------------------

#[test]
fn every_service_accepts_its_example_configuration() {
    let status = status::config::Config::load(Some(&deploy("config/status.toml")), no_env())
        .expect("status.toml");
    assert_eq!(status.receiver.listen.port(), 8802);
    let ingest =
        ingest::Config::load(Some(&deploy("config/ingest.toml")), no_env()).expect("ingest.toml");
    assert_eq!(ingest.clients.len(), 1);
    let dispatcher =
        dispatcher::config::Config::load(Some(&deploy("config/dispatcher.toml")), no_env())
            .expect("dispatcher.toml");
    assert_eq!(dispatcher.gateway.sp_number, "121231100");
    let path = deploy("config/analytics.toml");
    let analytics = analytics::config::AnalyticsConfig::load(Some(&path.to_string_lossy()))
        .expect("analytics.toml");
    assert!(analytics.ttl_months >= 6);
    let text = std::fs::read_to_string(deploy("config/smsc-sim.toml")).expect("smsc-sim.toml");
    let sim: smsc_sim::SimConfig = toml::from_str(&text).expect("smsc-sim.toml parses");
    sim.validate().expect("smsc-sim.toml is valid");
}

#[test]
fn the_simulator_and_the_services_agree_on_addresses_and_credentials() {
    let status = status::config::Config::load(Some(&deploy("config/status.toml")), no_env())
        .expect("status.toml");
    let dispatcher =
        dispatcher::config::Config::load(Some(&deploy("config/dispatcher.toml")), no_env())
            .expect("dispatcher.toml");
    let sim: smsc_sim::SimConfig =
        toml::from_str(&std::fs::read_to_string(deploy("config/smsc-sim.toml")).expect("read"))
            .expect("parses");
    let sp = sim.sp.expect("the simulator reports to the status service");
    assert_eq!(sp.addr, status.receiver.listen.to_string());
    assert_eq!(sp.login_name, status.receiver.login_name);
    assert_eq!(dispatcher.gateway.addr, sim.submit_addr.to_string());
    assert_eq!(dispatcher.gateway.login_name, sim.account.login_name);
}

// ---- the services as the deployments configure them -----------------------

/// What a deployment must get right about one service, from its real
/// configuration after the deployment's variables are applied.
#[derive(Debug)]
struct Effective {
    /// The address serving the health and metrics endpoints.
    health: SocketAddr,
    /// Paths that endpoint really serves.
    paths: &'static [&'static str],
    /// Other ports the service listens on.
    other_ports: Vec<u16>,
    /// Variables that must carry a secret: the names the configuration
    /// points at, and the SASL password override.
    secret_variables: Vec<String>,
    kafka: sms_core::kafka::KafkaSettings,
}

const SERVICES: [&str; 4] = ["ingest", "dispatcher", "status", "analytics"];

fn effective(service: &str, env: Vec<(String, String)>) -> Effective {
    let file = deploy(&format!("config/{service}.toml"));
    let sasl = |prefix: &str| format!("{prefix}KAFKA__SASL__PASSWORD");
    match service {
        "ingest" => {
            let config = ingest::Config::load(Some(&file), env).expect("ingest config");
            let mut secrets: Vec<String> = config
                .clients
                .iter()
                .filter_map(|c| c.secret_env.clone())
                .collect();
            secrets.push(sasl("INGEST_"));
            Effective {
                health: config.listen,
                paths: &["/healthz", "/readyz", "/metrics"],
                other_ports: Vec::new(),
                secret_variables: secrets,
                kafka: config.kafka,
            }
        }
        "dispatcher" => {
            let config =
                dispatcher::config::Config::load(Some(&file), env).expect("dispatcher config");
            Effective {
                health: config.metrics_listen,
                paths: &["/healthz", "/metrics"],
                other_ports: Vec::new(),
                secret_variables: vec![config.gateway.login_password_env, sasl("DISPATCHER_")],
                kafka: config.kafka,
            }
        }
        "status" => {
            let config = status::config::Config::load(Some(&file), env).expect("status config");
            Effective {
                health: config.metrics_listen,
                paths: &["/healthz", "/metrics"],
                other_ports: vec![config.receiver.listen.port()],
                secret_variables: vec![config.receiver.login_password_env, sasl("STATUS_")],
                kafka: config.kafka,
            }
        }
        "analytics" => {
            let config = analytics::config::AnalyticsConfig::from_sources(&read(&file), env)
                .expect("analytics config");
            assert!(
                !config.clickhouse.password.is_empty(),
                "analytics gets a ClickHouse password"
            );
            Effective {
                health: config.metrics_address,
                paths: &["/healthz", "/metrics"],
                other_ports: Vec::new(),
                secret_variables: vec!["ANALYTICS_CLICKHOUSE__PASSWORD".into(), sasl("ANALYTICS_")],
                kafka: config.kafka,
            }
        }
        other => panic!("no service {other}"),
    }
}

/// Every document under deploy/k8s, by file.
fn k8s_documents() -> Vec<(PathBuf, Value)> {
    let files = files_under(&deploy("k8s"), &[".yaml", ".yml"]);
    assert!(files.len() >= 8, "the manifests are there: {files:?}");
    let mut all = Vec::new();
    for file in files {
        for doc in yaml_documents(&file) {
            all.push((file.clone(), doc));
        }
    }
    all
}

fn find<'a>(docs: &'a [(PathBuf, Value)], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} under deploy/k8s"))
}

fn workload<'a>(docs: &'a [(PathBuf, Value)], name: &str) -> &'a Value {
    docs.iter()
        .map(|(_, d)| d)
        .find(|d| {
            matches!(d["kind"].as_str(), Some("Deployment" | "StatefulSet"))
                && d["metadata"]["name"].as_str() == Some(name)
        })
        .unwrap_or_else(|| panic!("no Deployment or StatefulSet {name}"))
}

#[test]
fn every_manifest_parses_and_says_what_it_is() {
    for (file, doc) in k8s_documents() {
        if file.ends_with("kustomization.yaml") {
            assert_eq!(doc["kind"].as_str(), Some("Kustomization"));
            continue;
        }
        for key in ["apiVersion", "kind"] {
            assert!(
                doc[key].as_str().is_some_and(|v| !v.is_empty()),
                "{}: a document without {key}",
                file.display()
            );
        }
        assert!(
            doc["metadata"]["name"].as_str().is_some(),
            "{}: a {} without a name",
            file.display(),
            str_of(&doc["kind"], "kind")
        );
        let kind = str_of(&doc["kind"], "kind");
        if matches!(kind, "Deployment" | "StatefulSet" | "Job") {
            let template = &doc["spec"]["template"];
            for container in seq(&template["spec"]["containers"], "containers") {
                let image = str_of(&container["image"], "image");
                assert!(
                    image.contains(':') && !image.ends_with(":latest"),
                    "{}: image {image} has no pinned tag",
                    file.display()
                );
            }
            if kind != "Job" {
                let selector = &doc["spec"]["selector"]["matchLabels"];
                let labels = &template["metadata"]["labels"];
                for (k, v) in selector.as_mapping().expect("matchLabels") {
                    assert_eq!(
                        &labels[k],
                        v,
                        "{}: the selector matches the pods",
                        file.display()
                    );
                }
            }
        }
    }
}

#[test]
fn every_workload_has_probes_and_resource_limits() {
    let docs = k8s_documents();
    let mut seen = 0;
    for (file, doc) in &docs {
        if !matches!(doc["kind"].as_str(), Some("Deployment" | "StatefulSet")) {
            continue;
        }
        let name = str_of(&doc["metadata"]["name"], "name");
        for container in seq(&doc["spec"]["template"]["spec"]["containers"], "containers") {
            for probe in ["livenessProbe", "readinessProbe"] {
                let p = &container[probe];
                assert!(
                    !p["httpGet"].is_null() || !p["tcpSocket"].is_null() || !p["exec"].is_null(),
                    "{}: {name} has no {probe}",
                    file.display()
                );
            }
            for bound in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    assert!(
                        !container["resources"][bound][resource].is_null(),
                        "{}: {name} has no {bound}.{resource}",
                        file.display()
                    );
                }
            }
        }
        seen += 1;
    }
    assert!(
        seen >= 8,
        "every service, Kafka, ClickHouse and Keeper: {seen}"
    );
}

#[test]
fn service_probes_and_ports_are_the_ones_the_configuration_opens() {
    let docs = k8s_documents();
    let kustomization = yaml(&deploy("k8s/kustomization.yaml"));
    for service in SERVICES {
        let work = workload(&docs, service);
        let pod = &work["spec"]["template"];
        let container = &seq(&pod["spec"]["containers"], "containers")[0];
        let env: Vec<(String, String)> = seq(&container["env"], "env")
            .iter()
            .filter_map(|e| {
                Some((
                    str_of(&e["name"], "env name").to_string(),
                    cluster_value(e)?,
                ))
            })
            .collect();
        let config = effective(service, env);

        // The endpoint listens on every interface, so the kubelet reaches it.
        assert!(
            config.health.ip().is_unspecified(),
            "{service} must listen on 0.0.0.0 in the cluster, not {}",
            config.health
        );
        let port = config.health.port();
        for probe in ["livenessProbe", "readinessProbe"] {
            let get = &container[probe]["httpGet"];
            assert_eq!(port_of(&get["port"], probe), port, "{service} {probe} port");
            let path = str_of(&get["path"], "probe path");
            assert!(
                config.paths.contains(&path),
                "{service} {probe} asks {path}, which it does not serve"
            );
        }
        let container_ports: BTreeSet<u16> = seq(&container["ports"], "ports")
            .iter()
            .map(|p| port_of(&p["containerPort"], "containerPort"))
            .collect();
        assert!(container_ports.contains(&port), "{service} exposes {port}");
        for other in &config.other_ports {
            assert!(container_ports.contains(other), "{service} exposes {other}");
        }
        let annotations = &pod["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
        assert_eq!(
            annotations["prometheus.io/port"].as_str(),
            Some(port.to_string().as_str()),
            "{service} is scraped where it serves /metrics"
        );

        // Kafka: the client listener, with the service's own SCRAM user.
        assert_eq!(config.kafka.bootstrap, "kafka:9092", "{service} bootstrap");
        assert_eq!(
            config.kafka.security_protocol,
            sms_core::kafka::SecurityProtocol::SaslPlaintext,
            "{service} authenticates to Kafka"
        );
        let sasl = config.kafka.sasl.as_ref().expect("SASL settings");
        assert_eq!(sasl.mechanism, sms_core::kafka::SaslMechanism::ScramSha512);
        assert_eq!(sasl.username, service, "{service} has its own Kafka user");
        assert!(!sasl.password.is_empty(), "{service} has a Kafka password");
        config
            .kafka
            .check("kafka")
            .unwrap_or_else(|e| panic!("{service}: {e}"));
        let users = find(&docs, "Job", "kafka-users");
        let job = &seq(&users["spec"]["template"]["spec"]["containers"], "c")[0];
        let script = str_of(&seq(&job["args"], "args")[0], "script");
        let listed = script
            .split("for user in ")
            .nth(1)
            .and_then(|r| r.split(';').next())
            .expect("the users the Job creates");
        assert!(
            listed.split_whitespace().any(|u| u == service),
            "the kafka-users Job creates {service}"
        );
        let own = seq(&job["env"], "env")
            .iter()
            .find(|e| {
                e["name"].as_str() == Some(&format!("KAFKA_PASSWORD_{}", service.to_uppercase()))
            })
            .unwrap_or_else(|| panic!("the kafka-users Job has {service}'s password"));
        let service_password = seq(&container["env"], "env")
            .iter()
            .find(|e| {
                e["name"].as_str()
                    == Some(&format!("{}_KAFKA__SASL__PASSWORD", service.to_uppercase()))
            })
            .expect("the service's Kafka password");
        assert_eq!(
            own["valueFrom"]["secretKeyRef"], service_password["valueFrom"]["secretKeyRef"],
            "{service}: the broker's user and the service use the same secret"
        );

        // Secrets come from the Secret, under the names the code reads.
        for variable in &config.secret_variables {
            let entry = seq(&container["env"], "env")
                .iter()
                .find(|e| e["name"].as_str() == Some(variable.as_str()))
                .unwrap_or_else(|| panic!("{service} does not set {variable}"));
            assert_eq!(
                entry["valueFrom"]["secretKeyRef"]["name"].as_str(),
                Some("industry-sms-secrets"),
                "{service}: {variable} comes from the Secret"
            );
        }

        // The configuration file is the generated ConfigMap of deploy/config.
        let command: Vec<&str> = seq(&container["command"], "command")
            .iter()
            .map(|c| str_of(c, "command"))
            .collect();
        let file = format!("/etc/industry-sms/{service}.toml");
        assert_eq!(command, vec![service, "--config", file.as_str()]);
        let volume = seq(&pod["spec"]["volumes"], "volumes")
            .iter()
            .find(|v| !v["configMap"].is_null())
            .expect("a configuration volume");
        let map_name = str_of(&volume["configMap"]["name"], "configMap name");
        let generator = seq(&kustomization["configMapGenerator"], "configMapGenerator")
            .iter()
            .find(|g| g["name"].as_str() == Some(map_name))
            .unwrap_or_else(|| panic!("{map_name} is not generated"));
        let files: Vec<&str> = seq(&generator["files"], "files")
            .iter()
            .map(|f| str_of(f, "file"))
            .collect();
        assert_eq!(
            files,
            vec![format!("{service}.toml=../config/{service}.toml")]
        );
    }
}

#[test]
fn every_secret_a_manifest_names_is_in_the_example_secret() {
    let docs = k8s_documents();
    let secret = find(&docs, "Secret", "industry-sms-secrets");
    let keys: BTreeSet<&str> = secret["stringData"]
        .as_mapping()
        .expect("stringData")
        .keys()
        .map(|k| str_of(k, "key"))
        .collect();
    let mut used = BTreeSet::new();
    for (file, doc) in &docs {
        let Some(containers) = doc["spec"]["template"]["spec"]["containers"].as_sequence() else {
            continue;
        };
        for container in containers {
            for entry in container["env"].as_sequence().into_iter().flatten() {
                let reference = &entry["valueFrom"]["secretKeyRef"];
                if reference.is_null() {
                    continue;
                }
                assert_eq!(reference["name"].as_str(), Some("industry-sms-secrets"));
                let key = str_of(&reference["key"], "secret key");
                assert!(
                    keys.contains(key),
                    "{}: secret key {key} is not in secrets.example.yaml",
                    file.display()
                );
                used.insert(key);
            }
        }
    }
    assert_eq!(used, keys, "every example secret is used, and no other");
}

#[test]
fn the_gateway_connections_shared_by_partitions_stay_within_the_allowance() {
    let docs = k8s_documents();
    let topics = find(&docs, "Job", "topics");
    let args: Vec<&str> = seq(
        &seq(
            &topics["spec"]["template"]["spec"]["containers"],
            "containers",
        )[0]["command"],
        "command",
    )
    .iter()
    .map(|a| str_of(a, "arg"))
    .collect();
    let flag = |name: &str| -> usize {
        let at = args.iter().position(|a| *a == name).expect(name);
        args[at + 1].parse().expect("a number")
    };
    let partitions = flag("--partitions");
    assert_eq!(
        flag("--replication"),
        3,
        "topics replicated on every broker"
    );

    let dispatcher = workload(&docs, "dispatcher");
    assert_eq!(dispatcher["kind"].as_str(), Some("StatefulSet"));
    let replicas = dispatcher["spec"]["replicas"].as_u64().expect("replicas") as usize;
    let allowance: usize = str_of(
        &dispatcher["metadata"]["annotations"]["industry-sms/gateway-connection-allowance"],
        "allowance",
    )
    .parse()
    .expect("a number");
    let container = &seq(&dispatcher["spec"]["template"]["spec"]["containers"], "c")[0];
    let env: Vec<(String, String)> = seq(&container["env"], "env")
        .iter()
        .filter_map(|e| {
            Some((
                str_of(&e["name"], "env name").to_string(),
                cluster_value(e)?,
            ))
        })
        .collect();
    let config = dispatcher::config::Config::load(Some(&deploy("config/dispatcher.toml")), env)
        .expect("dispatcher config");

    // The instance name is the pod's: unique and stable per replica.
    let instance = seq(&container["env"], "env")
        .iter()
        .find(|e| e["name"].as_str() == Some("DISPATCHER_CONSUMER__INSTANCE"))
        .expect("DISPATCHER_CONSUMER__INSTANCE");
    assert_eq!(
        instance["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("metadata.name")
    );

    // Partitions spread evenly, as the cooperative-sticky assignor does.
    let held: Vec<usize> = (0..replicas)
        .map(|r| partitions / replicas + usize::from(r < partitions % replicas))
        .collect();
    let shares: Vec<_> = held
        .iter()
        .map(|k| config.gateway.share(*k, partitions))
        .collect();
    let total: usize = shares.iter().map(|s| s.connections).sum();
    let largest = shares.iter().map(|s| s.connections).max().unwrap_or(0);
    assert!(
        total <= config.gateway.connections,
        "{replicas} replicas open {total} connections, over gateway.connections = {}",
        config.gateway.connections
    );
    assert!(
        config.gateway.connections + largest <= allowance,
        "a rebalance needs {} + {largest} connections; the carrier allows {allowance}",
        config.gateway.connections
    );
    let rate: u32 = shares.iter().map(|s| s.rate_limit_per_sec).sum();
    assert!(config.gateway.rate_limit_per_sec == 0 || rate <= config.gateway.rate_limit_per_sec);
}

#[test]
fn the_clusters_are_replicated_and_the_kustomization_is_complete() {
    let docs = k8s_documents();
    let kafka = workload(&docs, "kafka");
    assert_eq!(kafka["spec"]["replicas"].as_u64(), Some(3));
    let broker = &seq(&kafka["spec"]["template"]["spec"]["containers"], "c")[0];
    assert!(str_of(&broker["image"], "image").starts_with("apache/kafka:"));
    let env = |name: &str| -> String {
        seq(&broker["env"], "env")
            .iter()
            .find(|e| e["name"].as_str() == Some(name))
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("kafka sets {name}"))
            .to_string()
    };
    assert_eq!(env("KAFKA_PROCESS_ROLES"), "broker,controller");
    assert_eq!(env("KAFKA_CONTROLLER_QUORUM_VOTERS").split(',').count(), 3);
    assert_eq!(env("KAFKA_MIN_INSYNC_REPLICAS"), "2");

    let clickhouse = workload(&docs, "clickhouse");
    assert!(clickhouse["spec"]["replicas"].as_u64() >= Some(2));
    let keeper = workload(&docs, "clickhouse-keeper");
    let voters = keeper["spec"]["replicas"].as_u64().expect("replicas");
    assert!(voters >= 3 && voters % 2 == 1, "an odd Keeper quorum");
    let database = read(&deploy("k8s/clickhouse/01-database.sql"));
    assert!(database.contains("CREATE DATABASE IF NOT EXISTS sms"));
    assert!(database.contains("ENGINE = Replicated("));

    let status = workload(&docs, "status");
    assert_eq!(status["spec"]["replicas"].as_u64(), Some(1));
    assert_eq!(
        status["spec"]["strategy"]["type"].as_str(),
        Some("Recreate")
    );

    // Every manifest but the example secret is in the kustomization, and
    // every generated file exists.
    let kustomization = yaml(&deploy("k8s/kustomization.yaml"));
    let listed: BTreeSet<String> = seq(&kustomization["resources"], "resources")
        .iter()
        .map(|r| str_of(r, "resource").to_string())
        .collect();
    for file in files_under(&deploy("k8s"), &[".yaml"]) {
        let name = file.file_name().and_then(|n| n.to_str()).expect("name");
        if name == "kustomization.yaml" || name == "secrets.example.yaml" {
            continue;
        }
        assert!(listed.contains(name), "{name} is not in the kustomization");
    }
    for resource in &listed {
        assert!(deploy("k8s").join(resource).exists(), "{resource} exists");
    }
    let mut generated = BTreeSet::new();
    for generator in seq(&kustomization["configMapGenerator"], "configMapGenerator") {
        generated.insert(str_of(&generator["name"], "name").to_string());
        for file in seq(&generator["files"], "files") {
            let source = str_of(file, "file")
                .split_once('=')
                .map_or("", |(_, s)| s)
                .to_string();
            assert!(deploy("k8s").join(&source).exists(), "{source} exists");
        }
    }
    let defined: BTreeSet<String> = docs
        .iter()
        .filter(|(_, d)| d["kind"].as_str() == Some("ConfigMap"))
        .map(|(_, d)| str_of(&d["metadata"]["name"], "name").to_string())
        .collect();
    for (file, doc) in &docs {
        for volume in doc["spec"]["template"]["spec"]["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            if let Some(name) = volume["configMap"]["name"].as_str() {
                assert!(
                    generated.contains(name) || defined.contains(name),
                    "{}: ConfigMap {name} is neither generated nor defined",
                    file.display()
                );
            }
        }
    }
}

// ---- the compose file and the image ---------------------------------------

#[test]
fn the_compose_file_runs_every_service_on_its_configured_ports() {
    let compose = yaml(&deploy("docker-compose.yml"));
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().map(|k| str_of(k, "service")).collect();
    for needed in [
        "kafka",
        "clickhouse",
        "topics",
        "smsc-sim",
        "ingest",
        "dispatcher",
        "status",
        "analytics",
        "prometheus",
        "grafana",
    ] {
        assert!(names.contains(needed), "the compose file runs {needed}");
    }
    let published = |service: &str| -> BTreeSet<u16> {
        seq(&compose["services"][service]["ports"], "ports")
            .iter()
            .map(|p| {
                let text = str_of(p, "port");
                let (host, container) = text.split_once(':').expect("host:container");
                assert_eq!(
                    host, container,
                    "{service} publishes {text} on the same port"
                );
                container.parse().expect("a port")
            })
            .collect()
    };
    for service in SERVICES {
        let entry = &compose["services"][service];
        let env: Vec<(String, String)> = entry["environment"]
            .as_mapping()
            .unwrap_or_else(|| panic!("{service} has an environment"))
            .iter()
            .map(|(k, v)| {
                let raw = v.as_str().map_or_else(
                    || {
                        serde_yaml_ng::to_string(v)
                            .expect("scalar")
                            .trim()
                            .to_string()
                    },
                    str::to_string,
                );
                (str_of(k, "name").to_string(), compose_default(&raw))
            })
            .collect();
        let command: Vec<&str> = seq(&entry["command"], "command")
            .iter()
            .map(|c| str_of(c, "command"))
            .collect();
        assert_eq!(command[0], service);
        assert_eq!(
            command[2],
            format!("/etc/industry-sms/{service}.toml"),
            "{service} reads its file from deploy/config"
        );
        let config = effective(service, env);
        assert!(
            config.health.ip().is_unspecified(),
            "{service} listens on every interface in its container"
        );
        assert_eq!(
            config.kafka.bootstrap, "kafka:9092",
            "{service} reaches Kafka"
        );
        let ports = published(service);
        for port in std::iter::once(config.health.port()).chain(config.other_ports) {
            assert!(ports.contains(&port), "{service} publishes {port}");
        }
    }
    // The dispatcher submits to the simulator's port, which reports to the
    // status receiver's.
    let sim_text = read(&deploy("config/smsc-sim.toml"));
    let sim: smsc_sim::SimConfig = toml::from_str(&sim_text).expect("smsc-sim.toml");
    let gateway = compose_default(str_of(
        &compose["services"]["dispatcher"]["environment"]["DISPATCHER_GATEWAY__ADDR"],
        "gateway address",
    ));
    assert_eq!(gateway, format!("smsc-sim:{}", sim.submit_addr.port()));
    let sim_command: Vec<&str> = seq(&compose["services"]["smsc-sim"]["command"], "command")
        .iter()
        .map(|c| str_of(c, "arg"))
        .collect();
    let report = sim_command
        .iter()
        .position(|a| *a == "--report-addr")
        .map(|at| sim_command[at + 1])
        .expect("--report-addr");
    assert_eq!(report, "status:8802");
    assert!(published("smsc-sim").contains(&sim.http_addr.port()));
}

#[test]
fn the_image_carries_every_binary_the_deployments_run() {
    let workspace = workspace_binaries();
    let image = image_binaries();
    for binary in &image {
        assert!(
            workspace.contains(binary),
            "the Dockerfile copies {binary}, which no crate builds"
        );
    }
    for service in [
        "ingest",
        "dispatcher",
        "status",
        "analytics",
        "smsctl",
        "smsc-sim",
    ] {
        assert!(image.contains(service), "the image carries {service}");
    }
    let mut commands = Vec::new();
    let compose = yaml(&deploy("docker-compose.yml"));
    for (name, service) in compose["services"].as_mapping().expect("services") {
        if service["image"].as_str() == Some("industry-sms:local") {
            let command = seq(&service["command"], "command");
            commands.push((
                str_of(name, "name").to_string(),
                str_of(&command[0], "binary").to_string(),
            ));
        }
    }
    for (file, doc) in k8s_documents() {
        let Some(containers) = doc["spec"]["template"]["spec"]["containers"].as_sequence() else {
            continue;
        };
        for container in containers {
            if str_of(&container["image"], "image").starts_with("industry-sms:") {
                let command = seq(&container["command"], "command");
                commands.push((
                    file.display().to_string(),
                    str_of(&command[0], "binary").to_string(),
                ));
            }
        }
    }
    assert!(commands.len() >= 12, "{commands:?}");
    for (place, binary) in commands {
        assert!(
            image.contains(&binary) || binary == "sleep",
            "{place} runs {binary}, which the image does not carry"
        );
    }
}

// ---- Prometheus, alerts and dashboards ------------------------------------

#[test]
fn prometheus_scrapes_every_service_where_it_serves_metrics() {
    let config = yaml(&deploy("prometheus/prometheus.yml"));
    for rule_file in seq(&config["rule_files"], "rule_files") {
        let path = deploy("prometheus").join(str_of(rule_file, "rule file"));
        assert!(path.exists(), "{} exists", path.display());
    }
    let compose = yaml(&deploy("docker-compose.yml"));
    let mut jobs = BTreeSet::new();
    for job in seq(&config["scrape_configs"], "scrape_configs") {
        let name = str_of(&job["job_name"], "job_name");
        assert!(SERVICES.contains(&name), "job {name} is a service");
        jobs.insert(name);
        let target = str_of(
            &seq(
                &seq(&job["static_configs"], "static_configs")[0]["targets"],
                "t",
            )[0],
            "target",
        );
        let env: Vec<(String, String)> = compose["services"][name]["environment"]
            .as_mapping()
            .expect("environment")
            .iter()
            .map(|(k, v)| {
                (
                    str_of(k, "name").to_string(),
                    compose_default(v.as_str().unwrap_or_default()),
                )
            })
            .collect();
        let port = effective(name, env).health.port();
        assert_eq!(target, format!("{name}:{port}"), "job {name} target");
    }
    assert_eq!(jobs.len(), SERVICES.len(), "every service is scraped");

    // In the cluster, pods are found by the annotations the manifests set.
    let cluster = yaml(&deploy("prometheus/prometheus-k8s.yml"));
    let job = &seq(&cluster["scrape_configs"], "scrape_configs")[0];
    let namespaces = &job["kubernetes_sd_configs"][0]["namespaces"]["names"];
    assert_eq!(namespaces[0].as_str(), Some("industry-sms"));
    let relabels = serde_yaml_ng::to_string(&job["relabel_configs"]).expect("relabels");
    assert!(relabels.contains("__meta_kubernetes_pod_annotation_prometheus_io_scrape"));
    assert!(relabels.contains("__meta_kubernetes_pod_annotation_prometheus_io_port"));
}

fn runbook_anchors() -> BTreeSet<String> {
    read(&root().join("docs/runbook.md"))
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

fn is_duration(text: &str) -> bool {
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    !digits.is_empty() && matches!(&text[digits.len()..], "s" | "m" | "h" | "d")
}

#[test]
fn every_alert_is_complete_reads_real_metrics_and_has_a_runbook_section() {
    let metrics = exported_metrics();
    for needed in [
        "status_final_total",
        "status_within_seven_seconds_total",
        "dispatcher_gateway_connections",
        "dispatcher_budget_used_ratio",
        "dispatcher_lag_records",
        "analytics_consumer_lag",
    ] {
        assert!(metrics.contains_key(needed), "the code exports {needed}");
    }
    let anchors = runbook_anchors();
    let rules = yaml(&deploy("prometheus/alerts.yml"));
    let mut names = BTreeSet::new();
    let mut expressions = String::new();
    for group in seq(&rules["groups"], "groups") {
        str_of(&group["name"], "group name");
        for rule in seq(&group["rules"], "rules") {
            let name = str_of(&rule["alert"], "alert").to_string();
            assert!(names.insert(name.clone()), "alert {name} is defined twice");
            let expr = str_of(&rule["expr"], "expr");
            check_promql(expr, &metrics, &name);
            expressions.push_str(expr);
            let wait = str_of(&rule["for"], "for");
            assert!(is_duration(wait), "{name}: for: {wait} is not a duration");
            let severity = str_of(&rule["labels"]["severity"], "severity");
            assert!(
                matches!(severity, "warning" | "critical"),
                "{name}: severity {severity}"
            );
            for key in ["summary", "description", "runbook"] {
                assert!(
                    rule["annotations"][key]
                        .as_str()
                        .is_some_and(|v| !v.is_empty()),
                    "{name} has no {key} annotation"
                );
            }
            let runbook = str_of(&rule["annotations"]["runbook"], "runbook");
            let anchor = runbook
                .strip_prefix("docs/runbook.md#")
                .unwrap_or_else(|| panic!("{name}: runbook {runbook}"));
            assert_eq!(anchor, name.to_lowercase(), "{name}: its own section");
            assert!(
                anchors.contains(anchor),
                "{name}: docs/runbook.md has no section {anchor}"
            );
        }
    }
    // What costs money under the contract is watched.
    for line in ["< 0.99", "< 0.98"] {
        assert!(expressions.contains(line), "an alert on the {line} line");
    }
    for metric in [
        "dispatcher_lag_records",
        "analytics_consumer_lag",
        "dispatcher_gateway_connections",
        "dispatcher_budget_used_ratio",
    ] {
        assert!(expressions.contains(metric), "an alert reads {metric}");
    }
}

/// Every panel of a dashboard, rows' nested panels included.
fn panels(dashboard: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            all.extend(nested);
        }
    }
    all
}

#[test]
fn every_dashboard_reads_real_metrics_and_real_tables() {
    let metrics = exported_metrics();
    let tables = schema_tables();
    let sources = yaml(&deploy(
        "grafana/provisioning/datasources/industry-sms.yaml",
    ));
    let uids: BTreeMap<&str, &str> = seq(&sources["datasources"], "datasources")
        .iter()
        .map(|d| (str_of(&d["uid"], "uid"), str_of(&d["type"], "type")))
        .collect();
    yaml(&deploy("grafana/provisioning/dashboards/industry-sms.yaml"));

    let files = files_under(&deploy("grafana"), &[".json"]);
    assert!(files.len() >= 2, "{files:?}");
    let (mut promql, mut sql) = (0, 0);
    let mut read_tables = BTreeSet::new();
    let mut contract_lines = BTreeSet::new();
    for file in files {
        let dashboard: serde_json::Value = serde_json::from_str(&read(&file))
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", file.display()));
        for key in ["uid", "title"] {
            assert!(
                dashboard[key].as_str().is_some(),
                "{}: no {key}",
                file.display()
            );
        }
        for panel in panels(&dashboard) {
            let title = panel["title"].as_str().unwrap_or_default();
            if panel["type"] == "row" {
                continue;
            }
            for step in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(value) = step["value"].as_f64() {
                    contract_lines.insert((value * 100.0).round() as i64);
                }
            }
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{title}: no query");
            for target in targets {
                let uid = target["datasource"]["uid"]
                    .as_str()
                    .expect("datasource uid");
                let kind = uids
                    .get(uid)
                    .unwrap_or_else(|| panic!("{title}: data source {uid} is not provisioned"));
                assert_eq!(target["datasource"]["type"].as_str(), Some(*kind));
                if let Some(expr) = target["expr"].as_str() {
                    check_promql(expr, &metrics, title);
                    promql += 1;
                } else {
                    let query = target["rawSql"].as_str().expect("a PromQL or SQL query");
                    let used = sql_tables(query);
                    assert!(!used.is_empty(), "{title}: reads no table");
                    for table in used {
                        let bare = table.strip_prefix("sms.").unwrap_or_else(|| {
                            panic!("{title}: {table} is not in the sms database")
                        });
                        assert!(tables.contains_key(bare), "{title}: no table {bare}");
                        read_tables.insert(bare.to_string());
                    }
                    // The analyst user is not granted phone numbers or texts.
                    let words: BTreeSet<&str> = query
                        .split(|c: char| !c.is_alphanumeric() && c != '_')
                        .collect();
                    assert!(
                        !words.contains("phone") && !words.contains("text"),
                        "{title}: reads a column the analyst user cannot"
                    );
                    sql += 1;
                }
            }
        }
    }
    assert!(
        promql >= 20 && sql >= 10,
        "{promql} PromQL and {sql} SQL queries"
    );
    for table in [
        "sms_daily",
        "sms_monthly",
        "sms_events",
        "carrier_error_codes",
    ] {
        assert!(read_tables.contains(table), "a panel reads {table}");
    }
    assert!(
        contract_lines.contains(&99) && contract_lines.contains(&98),
        "the 99% and 98% lines are drawn: {contract_lines:?}"
    );
}

#[test]
fn promql_scanning_finds_metrics_and_their_functions() {
    let found = promql_metrics(
        r#"sum(rate(status_final_total{status="Delivered"}[5m])) / max(dispatcher_in_flight)"#,
    );
    assert_eq!(
        found,
        vec![
            ("status_final_total".to_string(), Some("rate".to_string())),
            ("dispatcher_in_flight".to_string(), Some("max".to_string())),
        ]
    );
    let mut metrics = BTreeMap::new();
    metrics.insert("status_final_total".to_string(), MetricKind::Counter);
    metrics.insert(
        "ingest_http_request_seconds".to_string(),
        MetricKind::Histogram,
    );
    check_promql("sum(rate(status_final_total[5m]))", &metrics, "ok");
    check_promql(
        "rate(ingest_http_request_seconds_sum[5m]) / rate(ingest_http_request_seconds_count[5m])",
        &metrics,
        "ok",
    );
    let typo = std::panic::catch_unwind(|| {
        check_promql("sum(rate(status_finals_total[5m]))", &metrics, "typo")
    });
    assert!(typo.is_err(), "a name the code does not export is refused");
    let raw_counter =
        std::panic::catch_unwind(|| check_promql("sum(status_final_total)", &metrics, "raw"));
    assert!(
        raw_counter.is_err(),
        "a counter read without rate is refused"
    );
    assert_eq!(
        sql_tables("SELECT a FROM sms.sms_daily AS d LEFT JOIN (SELECT 1 FROM sms.carrier_error_codes FINAL) AS c ON 1"),
        vec!["sms.sms_daily".to_string(), "sms.carrier_error_codes".to_string()]
    );
}

/// Grafana's ClickHouse macros, expanded as the plugin would for a fixed
/// window: `$__dateFilter(c)`, `$__timeFilter(c)`, `$__timeInterval(c)`.
fn expand_grafana_macros(sql: &str) -> String {
    let mut out = sql.to_string();
    for (name, expansion) in [
        (
            "$__dateFilter(",
            "{c} >= toDate('2026-10-01') AND {c} <= toDate('2026-12-31')",
        ),
        (
            "$__timeFilter(",
            "{c} >= toDateTime('2026-10-01 00:00:00') AND {c} <= toDateTime('2026-12-31 00:00:00')",
        ),
        (
            "$__timeInterval(",
            "toStartOfInterval({c}, INTERVAL 60 second)",
        ),
    ] {
        while let Some(at) = out.find(name) {
            let rest = &out[at + name.len()..];
            let close = rest.find(')').expect("a closed macro");
            let column = rest[..close].to_string();
            let replaced = expansion.replace("{c}", &column);
            out.replace_range(at..at + name.len() + close + 1, &replaced);
        }
    }
    assert!(!out.contains("$__"), "a macro left unexpanded: {out}");
    out
}

#[tokio::test]
async fn every_clickhouse_panel_runs_on_the_migrated_schema() {
    let services = sms_harness::services().await.expect("a ClickHouse");
    let (client, database) = sms_harness::clickhouse_for_test("dashboards")
        .await
        .expect("a test database");
    let settings = analytics::config::ClickHouseSettings {
        url: services.clickhouse_url.clone(),
        database: database.clone(),
        ..Default::default()
    };
    analytics::schema::migrate(&settings, 13)
        .await
        .expect("the sink's migrations");

    let mut ran = 0;
    for file in files_under(&deploy("grafana"), &[".json"]) {
        let dashboard: serde_json::Value = serde_json::from_str(&read(&file)).expect("JSON");
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let Some(sql) = target["rawSql"].as_str() else {
                    continue;
                };
                let query = expand_grafana_macros(&sql.replace("sms.", &format!("`{database}`.")));
                client.query(&query).execute().await.unwrap_or_else(|e| {
                    panic!(
                        "{}: panel {:?} does not run: {e}\n{query}",
                        file.display(),
                        panel["title"]
                    )
                });
                ran += 1;
            }
        }
    }
    assert!(ran >= 10, "{ran} ClickHouse panels ran");
    let _ = client
        .query(&format!("DROP DATABASE IF EXISTS `{database}`"))
        .execute()
        .await;
}
