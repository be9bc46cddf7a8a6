//! The whole pipeline under a sustained load: every service as a release
//! process against the local Kafka, ClickHouse and the carrier simulator
//! (answering at once), traffic through ingest's batch API at a target rate,
//! and the acceptance-to-final-status time of every message read from
//! `sms.status`. Then Kafka's own producer and consumer benchmarks on the same
//! broker, so the pipeline's rate can be set against the broker's.
//!
//! `BENCH_RATE` (messages/s, default 5000), `BENCH_SECONDS` (default 600),
//! `BENCH_BATCH` (per call, default 100), `BENCH_CONNECTIONS` and
//! `BENCH_WINDOW` (the dispatcher's gateway connections and window per
//! connection, default 8 and 128), `BENCH_COMMIT_MS` (the dispatcher's
//! transaction interval, default 100), `BENCH_SINK_BATCH_MS` (the analytics
//! sink's batch time, default 1000), `BENCH_REPORT_WINDOW` (the simulator's
//! unanswered reports to the status service, default 128), `BENCH_OUT` (default
//! `var/bench/pipeline.json`). The processor time of every service, the
//! broker and the ClickHouse front during the run is in the output. Run by
//! `deploy/bench.sh pipeline`.

#[path = "../stack.rs"]
mod stack;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use serde_json::{json, Value};
use sms_core::events::FinalStatus;
use stack::{Options, Stack};
use tokio::sync::Semaphore;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Unicom numbers: notices spread over 100,000 recipients (at most 30 each in
/// a 10-minute run, under the daily cap of 50), verification codes over a
/// million (a recipient gets one about every half hour, under the caps).
fn instruction(n: u64) -> Value {
    let prefixes = ["130", "131", "132", "155", "156", "185", "186", "176"];
    let prefix = prefixes[(n % prefixes.len() as u64) as usize];
    if n % 10 == 0 {
        json!({
            "request_id": format!("load-{n}"),
            "phone": format!("{prefix}{:08}", 10_000_000 + (n / 10) % 1_000_000),
            "kind": "VERIFICATION_CODE",
            "text": format!("您的验证码为{:06}，5分钟内有效，请勿泄露。", n % 1_000_000),
        })
    } else {
        json!({
            "request_id": format!("load-{n}"),
            "phone": format!("{prefix}{:08}", 50_000_000 + n % 100_000),
            "kind": if n % 3 == 0 { "REMINDER" } else { "NOTICE" },
            "text": format!("第{n}号通知：您有一条交通违法记录待处理，请及时处理。"),
        })
    }
}

/// A warm-up notice, to recipients the measured traffic never uses (so no
/// cap it meets is touched).
fn warmup_instruction(n: u64) -> Value {
    json!({
        "request_id": format!("warmup-{n}"),
        "phone": format!("186{:08}", 60_000_000 + n),
        "kind": "NOTICE",
        "text": format!("第{n}号通知：您有一条交通违法记录待处理，请及时处理。"),
    })
}

/// Resident memory of a process, now and at its peak, in MiB.
fn memory_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Processor seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces; the fields
    // after it start with the state (field 3), so utime and stime (fields 14
    // and 15) are the 12th and 13th after the parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// The kernel's clock ticks per second for process times (`getconf CLK_TCK`;
/// 100 on Linux when it cannot be asked).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t: &f64| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// The local broker's and ClickHouse front's processes, from the pid files
/// `deploy/local-services.sh` writes.
fn local_service_pids() -> Vec<(&'static str, u32)> {
    let var = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../var");
    [
        ("kafka", "kafka/kafka.pid"),
        ("clickhouse", "clickhouse/chfront.pid"),
    ]
    .into_iter()
    .filter_map(|(name, file)| {
        let pid = std::fs::read_to_string(var.join(file)).ok()?;
        Some((name, pid.trim().parse().ok()?))
    })
    .collect()
}

/// Where a message's time went, from the timestamps its final status
/// carries: acceptance to its first Submit (ingest, Kafka, the dispatcher),
/// Submit to the carrier's report (the gateway, here the simulator, and the
/// status receiver), report to the decision (the status service's Kafka
/// round trip and correlation).
#[derive(Default)]
struct Stages {
    to_submit: Vec<i64>,
    to_report: Vec<i64>,
    to_decision: Vec<i64>,
    /// By the Unix second of acceptance, the messages that took longer than
    /// [`SLOW_MS`] to their final status: how many, the slowest, and the
    /// slowest time to Submit among them.
    slow: BTreeMap<i64, Slow>,
}

/// Acceptance to final status beyond which a message counts as slow.
const SLOW_MS: i64 = 500;

#[derive(Default)]
struct Slow {
    count: u64,
    max_ms: i64,
    max_to_submit_ms: i64,
}

impl Stages {
    fn add(&mut self, status: &FinalStatus) {
        let latency = status.decided_at - status.accepted_at;
        let to_submit = status.submitted_at.map(|at| at - status.accepted_at);
        if let (Some(submitted), Some(report)) = (status.submitted_at, status.report_at) {
            self.to_submit.push(submitted - status.accepted_at);
            self.to_report.push(report - submitted);
            self.to_decision.push(status.decided_at - report);
        }
        if latency > SLOW_MS {
            let slow = self.slow.entry(status.accepted_at / 1000).or_default();
            slow.count += 1;
            slow.max_ms = slow.max_ms.max(latency);
            slow.max_to_submit_ms = slow.max_to_submit_ms.max(to_submit.unwrap_or(0));
        }
    }

    /// The seconds with slow messages, counted from `start_ms`, the busiest
    /// first (at most 30).
    fn slow_seconds(&self, start_ms: i64) -> Value {
        let mut seconds: Vec<(&i64, &Slow)> = self.slow.iter().collect();
        seconds.sort_by_key(|(_, slow)| std::cmp::Reverse(slow.count));
        seconds
            .into_iter()
            .take(30)
            .map(|(second, slow)| {
                json!({
                    "second": second - start_ms / 1000,
                    "over_500_ms": slow.count,
                    "max_ms": slow.max_ms,
                    "max_to_submit_ms": slow.max_to_submit_ms,
                })
            })
            .collect()
    }

    fn summary(&mut self) -> Value {
        let stage = |values: &mut Vec<i64>| {
            values.sort_unstable();
            json!({ "p50": quantile(values, 0.50), "p99": quantile(values, 0.99) })
        };
        json!({
            "acceptance_to_submit": stage(&mut self.to_submit),
            "submit_to_report": stage(&mut self.to_report),
            "report_to_decision": stage(&mut self.to_decision),
        })
    }
}

/// p50, p99 and max of sorted latencies.
fn latency_summary(sorted: &[i64]) -> Value {
    json!({
        "p50": quantile(sorted, 0.50),
        "p99": quantile(sorted, 0.99),
        "max": sorted.last().copied().unwrap_or(0),
    })
}

fn quantile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Runs one of Kafka's own performance tools and returns its output.
fn kafka_tool(class: &str, args: &[String]) -> String {
    let libs =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kafka/dist/libs/*");
    let output = std::process::Command::new("java")
        .arg("-cp")
        .arg(libs)
        .arg(class)
        .args(args)
        .output();
    match output {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("could not run {class}: {e}"),
    }
}

/// Kafka's producer (acks=all) and consumer benchmarks on `records` records
/// of `size` bytes; records per second of each, when their output parses.
async fn broker_limits(stack: &Stack, records: u64, size: usize) -> (Option<f64>, Option<f64>) {
    let bootstrap = &stack.kafka.bootstrap;
    let topic = format!("{}perf", stack.kafka.topic_prefix);
    let admin = stack.kafka.admin().expect("admin client");
    let spec = sms_core::kafka::TopicSpec {
        name: topic.clone(),
        partitions: 3,
        config: Vec::new(),
    };
    sms_core::kafka::create_topics(&admin, &[spec], 1)
        .await
        .expect("perf topic");
    let produced = kafka_tool(
        "org.apache.kafka.tools.ProducerPerformance",
        &[
            "--topic".into(),
            topic.clone(),
            "--num-records".into(),
            records.to_string(),
            "--record-size".into(),
            size.to_string(),
            "--throughput".into(),
            "-1".into(),
            "--producer-props".into(),
            format!("bootstrap.servers={bootstrap}"),
            "acks=all".into(),
            "enable.idempotence=true".into(),
        ],
    );
    // "N records sent, R records/sec (M MB/sec), ..."
    let producer_rate = produced
        .lines()
        .rev()
        .find(|l| l.contains("records sent"))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok());
    let consumed = kafka_tool(
        "org.apache.kafka.tools.ConsumerPerformance",
        &[
            "--bootstrap-server".into(),
            bootstrap.clone(),
            "--topic".into(),
            topic,
            "--messages".into(),
            records.to_string(),
            "--timeout".into(),
            "60000".into(),
        ],
    );
    // A header line, then "start, end, MB, MB.sec, records, records.sec, ...".
    let consumer_rate = consumed
        .lines()
        .rev()
        .find(|l| l.split(',').count() >= 6 && !l.contains("start.time"))
        .and_then(|l| l.split(',').nth(5))
        .and_then(|s| s.trim().parse().ok());
    if producer_rate.is_none() || consumer_rate.is_none() {
        eprintln!("kafka tools said:\n{produced}\n{consumed}");
    }
    (producer_rate, consumer_rate)
}

#[tokio::main]
async fn main() {
    let rate = setting("BENCH_RATE", 5_000).max(1);
    let seconds = setting("BENCH_SECONDS", 600).max(1);
    let batch = setting("BENCH_BATCH", 100).clamp(1, 1_000);
    let warmup = setting("BENCH_WARMUP", 5_000);
    let out = std::env::var("BENCH_OUT")
        .unwrap_or_else(|_| format!("{}/../var/bench/pipeline.json", env!("CARGO_MANIFEST_DIR")));
    let total = rate * seconds;
    println!("pipeline: {rate} messages/s for {seconds} s ({total} messages), {batch} per call");

    // The carrier answers at once and reports at once; the subscription check
    // is off so that a million recipients need not register first (the
    // lookup it skips is one map read per message).
    let stack = Stack::start_with(
        "bench_pipeline",
        Options {
            reports: Some(
                "[reports]\ndelay = { kind = \"fixed\", delay_ms = 0 }\n\
                 outcomes = [{ state = 0, error_code = 0, weight = 993 }, { state = 2, error_code = 29, weight = 7 }]\n"
                    .into(),
            ),
            log: "warn",
            env: vec![
                (
                    "dispatcher",
                    "DISPATCHER_POLICY__REQUIRE_SUBSCRIPTION".into(),
                    "false".into(),
                ),
                // A window slot is freed when its transaction commits (every
                // 20 ms), so one instance sends at most connections x window
                // per commit cycle: the default 2 x 16 allows about 1,500/s.
                (
                    "dispatcher",
                    "DISPATCHER_GATEWAY__CONNECTIONS".into(),
                    setting("BENCH_CONNECTIONS", 8).to_string(),
                ),
                (
                    "dispatcher",
                    "DISPATCHER_GATEWAY__WINDOW".into(),
                    setting("BENCH_WINDOW", 128).to_string(),
                ),
                // Each transaction costs the broker a round of requests and
                // markers on every partition it wrote: at 20 ms, the broker
                // used half again as much processor time as at 100 ms.
                (
                    "dispatcher",
                    "DISPATCHER_CONSUMER__COMMIT_INTERVAL_MS".into(),
                    setting("BENCH_COMMIT_MS", 100).to_string(),
                ),
                // The tests run the sink with short batches so that rows show
                // soon; the benchmark runs it with its default (1 s) batches.
                (
                    "analytics",
                    "ANALYTICS_BATCH_MAX_MS".into(),
                    setting("BENCH_SINK_BATCH_MS", 1_000).to_string(),
                ),
            ],
            ingest_client_extra: "rate_per_second = 1000000\nburst = 1000000\n".into(),
            // Reports are answered only once Kafka has them (a few ms), so
            // one report connection carries at most window / that time: the
            // default window of 16 allows about 2,300 reports/s.
            sim_extra: format!("window = {}\n", setting("BENCH_REPORT_WINDOW", 128)),
            ..Options::default()
        },
    )
    .await;
    let pids = stack.pids();
    // Every process whose processor time is counted: the services, the
    // broker and the ClickHouse front, and this load generator.
    let mut counted: Vec<(&'static str, u32)> = pids.iter().map(|(n, p)| (*n, *p)).collect();
    counted.extend(local_service_pids());
    counted.push(("load generator", std::process::id()));
    let cpu_before: BTreeMap<&'static str, f64> = counted
        .iter()
        .filter_map(|(name, pid)| Some((*name, cpu_seconds(*pid)?)))
        .collect();
    let peaks: Arc<std::sync::Mutex<BTreeMap<&'static str, f64>>> = Arc::default();

    // Final statuses as they are written: acceptance-to-decision time of each.
    let consumer: StreamConsumer = stack
        .kafka
        .consumer_config(
            "bench-status",
            &format!("{}bench-reader", stack.kafka.topic_prefix),
        )
        .create()
        .expect("consumer");
    consumer
        .subscribe(&[&stack.kafka.topics().status])
        .expect("subscribe");
    let decided = Arc::new(AtomicU64::new(0));
    let warmed = Arc::new(AtomicU64::new(0));
    let reader = {
        let (decided, warmed) = (decided.clone(), warmed.clone());
        tokio::spawn(async move {
            let codec = sms_core::avro::AvroCodec::single_object();
            let mut latencies = Vec::with_capacity(total as usize);
            let mut warmup_latencies = Vec::new();
            let mut stages = Stages::default();
            let mut per_second: BTreeMap<i64, u64> = BTreeMap::new();
            let mut stream = consumer.stream();
            while (latencies.len() as u64) < total {
                match tokio::time::timeout(Duration::from_secs(120), stream.next()).await {
                    Ok(Some(Ok(message))) => {
                        if let Ok(status) = codec
                            .decode::<FinalStatus>(message.payload().unwrap_or_default())
                            .await
                        {
                            if status.request_id.starts_with("warmup-") {
                                warmup_latencies.push(status.decided_at - status.accepted_at);
                                warmed.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            latencies.push(status.decided_at - status.accepted_at);
                            stages.add(&status);
                            *per_second.entry(status.decided_at / 1000).or_default() += 1;
                            decided.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Some(Err(_))) => tokio::time::sleep(Duration::from_millis(100)).await,
                    Ok(None) | Err(_) => break,
                }
            }
            (latencies, per_second, stages, warmup_latencies)
        })
    };

    // Memory of every service, sampled each second; every 30 s a sample is
    // kept, so that what a service holds at start and what it gains with the
    // messages it has seen can be told apart.
    // Growth of 8 MiB or more between two samples is kept as a jump, to be
    // set beside the seconds with slow messages.
    let timeline: Arc<std::sync::Mutex<Vec<Value>>> = Arc::default();
    let jumps: Arc<std::sync::Mutex<Vec<Value>>> = Arc::default();
    let start_ms = sms_core::events::now_millis();
    let sampler = {
        let (peaks, timeline, jumps) = (peaks.clone(), timeline.clone(), jumps.clone());
        let pids = pids.clone();
        let decided = decided.clone();
        tokio::spawn(async move {
            let begun = Instant::now();
            let mut last: BTreeMap<&str, f64> = BTreeMap::new();
            for tick in 0u64.. {
                let mut now = BTreeMap::new();
                for (name, pid) in &pids {
                    if let Some((rss, _)) = memory_mib(*pid) {
                        let mut peaks = peaks.lock().unwrap_or_else(|p| p.into_inner());
                        let peak = peaks.entry(name).or_default();
                        *peak = peak.max(rss);
                        now.insert(*name, rss.round());
                        let before = last.insert(name, rss).unwrap_or(rss);
                        if rss - before >= 8.0 {
                            jumps.lock().unwrap_or_else(|p| p.into_inner()).push(json!({
                                "second": (sms_core::events::now_millis() - start_ms) / 1000,
                                "service": name,
                                "from_mib": before.round(),
                                "to_mib": rss.round(),
                            }));
                        }
                    }
                }
                if tick % 30 == 0 {
                    timeline
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(json!({
                            "second": begun.elapsed().as_secs(),
                            "final_statuses": decided.load(Ordering::Relaxed),
                            "rss_mib": now,
                        }));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    // Warm-up: the services have just started, their consumer groups are
    // forming and their transactional producers wait for the new broker's
    // transaction coordinator. A second of notices at the same rate goes
    // through first, and the measured traffic starts once every one of them
    // has its final status; what they took is reported apart.
    let warmup_began = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(batch as f64 / rate as f64));
    let mut n = 0;
    while n < warmup {
        ticker.tick().await;
        let items: Vec<Value> = (n..(n + batch).min(warmup))
            .map(warmup_instruction)
            .collect();
        n += items.len() as u64;
        stack.send_batch(&items).await;
    }
    while warmed.load(Ordering::Relaxed) < warmup
        && warmup_began.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let warmup_seconds = warmup_began.elapsed().as_secs_f64();
    println!(
        "warm-up: {} of {warmup} final in {warmup_seconds:.1} s",
        warmed.load(Ordering::Relaxed)
    );

    // The platform: one batch call every `batch / rate` seconds, at most 64
    // calls in flight; when the system cannot keep up, the rate falls.
    let stack = Arc::new(stack);
    let in_flight = Arc::new(Semaphore::new(64));
    let accepted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(batch as f64 / rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut calls = Vec::new();
    let mut next = 0u64;
    let mut last_report = Instant::now();
    while next < total {
        ticker.tick().await;
        let permit = in_flight.clone().acquire_owned().await.expect("semaphore");
        let items: Vec<Value> = (next..(next + batch).min(total)).map(instruction).collect();
        next += items.len() as u64;
        let (stack, counter) = (stack.clone(), accepted.clone());
        calls.push(tokio::spawn(async move {
            let answer = stack.send_batch(&items).await;
            counter.fetch_add(answer["accepted"].as_u64().unwrap_or(0), Ordering::Relaxed);
            drop(permit);
        }));
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            println!(
                "  {:>4} s: sent {next}, accepted {}, final {}",
                started.elapsed().as_secs(),
                accepted.load(Ordering::Relaxed),
                decided.load(Ordering::Relaxed)
            );
        }
    }
    for call in calls {
        let _ = call.await;
    }
    let sending = started.elapsed();
    let accepted = accepted.load(Ordering::Relaxed);
    println!(
        "sent {total} in {:.1} s ({:.0}/s), {accepted} accepted",
        sending.as_secs_f64(),
        total as f64 / sending.as_secs_f64()
    );

    let (mut latencies, per_second, mut stages, mut warmup_latencies) =
        reader.await.expect("reader");
    warmup_latencies.sort_unstable();
    let elapsed = started.elapsed();
    sampler.abort();
    // Processor seconds each process used while the traffic ran, and the
    // share of the machine's processors that is.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut cpu = BTreeMap::new();
    for (name, pid) in &counted {
        if let (Some(before), Some(after)) = (cpu_before.get(name), cpu_seconds(*pid)) {
            let used = after - before;
            cpu.insert(
                name.to_string(),
                json!({
                    "seconds": (used * 10.0).round() / 10.0,
                    "share_of_machine": (used / (elapsed.as_secs_f64() * cores) * 1000.0).round() / 1000.0,
                }),
            );
        }
    }
    let mut memory = BTreeMap::new();
    for (name, pid) in &pids {
        let sampled = peaks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
            .unwrap_or(0.0);
        let peak = memory_mib(*pid).map_or(sampled, |(_, hwm)| hwm.max(sampled));
        memory.insert(name.to_string(), (peak * 10.0).round() / 10.0);
    }
    latencies.sort_unstable();
    let finals = latencies.len() as u64;
    // The sustained rate: final statuses per second over the whole seconds
    // between the first and the last, the partial edges left out.
    let seconds_seen: Vec<u64> = per_second.values().copied().collect();
    let inner = if seconds_seen.len() > 2 {
        &seconds_seen[1..seconds_seen.len() - 1]
    } else {
        &seconds_seen[..]
    };
    let sustained = inner.iter().sum::<u64>() as f64 / inner.len().max(1) as f64;
    let mut windows: Vec<u64> = inner
        .chunks(10)
        .filter(|c| c.len() == 10)
        .map(|c| c.iter().sum::<u64>() / 10)
        .collect();
    windows.sort_unstable();
    let slowest_window = windows.first().copied().unwrap_or(0);

    let clickhouse_rows = stack
        .clickhouse
        .query(
            "SELECT count() FROM sms_messages FINAL \
             WHERE is_final = 1 AND NOT startsWith(request_id, 'warmup-')",
        )
        .fetch_one::<u64>()
        .await
        .unwrap_or(0);

    let (producer_rate, consumer_rate) = broker_limits(&stack, 1_000_000, 200).await;
    let result = json!({
        "target_rate": rate,
        "seconds": seconds,
        "batch": batch,
        "sent": total,
        "accepted": accepted,
        "final_statuses": finals,
        "lost": accepted.saturating_sub(finals),
        "send_seconds": sending.as_secs_f64(),
        "wall_seconds": elapsed.as_secs_f64(),
        "sustained_final_per_s": sustained.round(),
        "slowest_10s_final_per_s": slowest_window,
        "latency_ms": latency_summary(&latencies),
        "stages_ms": stages.summary(),
        "warmup": {
            "messages": warmup,
            "final": warmup_latencies.len(),
            "seconds": (warmup_seconds * 10.0).round() / 10.0,
            "latency_ms": latency_summary(&warmup_latencies),
        },
        "slow_seconds": stages.slow_seconds(start_ms),
        "memory_jumps": jumps.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        "peak_rss_mib": memory,
        "rss_every_30s": timeline.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        "cpu_during_run": cpu,
        "cores": cores,
        "clickhouse_final_rows_at_end": clickhouse_rows,
        "kafka_producer_perf_records_per_s": producer_rate,
        "kafka_consumer_perf_records_per_s": consumer_rate,
        "ratio_to_kafka_producer": producer_rate.map(|p| (sustained / p * 1000.0).round() / 1000.0),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&result).unwrap_or_default()
    );
    if let Some(dir) = std::path::Path::new(&out).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&out, format!("{result:#}\n")) {
        eprintln!("writing {out}: {e}");
    }
    match Arc::try_unwrap(stack) {
        Ok(stack) => stack.stop().await,
        Err(_) => eprintln!("a call still holds the system; its processes end with this one"),
    }
}
