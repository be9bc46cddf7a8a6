//! `sample-traffic`: sends a realistic sample of a day's traffic through a running ingest, as the 12123 platform would.
//!
//! It registers the recipients' subscriptions, then sends a mix of
//! verification codes, inspection reminders and violation notices (some long
//! enough to take several segments) through the batch API, plus a few
//! instructions that must be refused (a number outside China Unicom's ranges,
//! advertising text) so the refusals show up in the reports too. It prints
//! what was accepted and refused.
//!
//! `sample-traffic --ingest http://127.0.0.1:8080 --token local-platform-token --messages 2000`

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    name = "sample-traffic",
    about = "Send a sample of a day's traffic through ingest."
)]
struct Cli {
    /// Base URL of ingest.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    ingest: String,
    /// Bearer token of the platform client.
    #[arg(long, env = "SAMPLE_TOKEN", default_value = "local-platform-token")]
    token: String,
    /// Messages to send.
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// Distinct recipients of notices and reminders; every verification code
    /// goes to a recipient of its own (the caps allow one a minute per number).
    #[arg(long, default_value_t = 300)]
    recipients: usize,
    /// Messages per batch call.
    #[arg(long, default_value_t = 200)]
    batch: usize,
    /// A prefix for request ids, so runs do not collide.
    #[arg(long, default_value = "")]
    run_id: String,
}

/// China Unicom prefixes the sample numbers are drawn from.
const PREFIXES: [&str; 6] = ["130", "131", "132", "156", "186", "176"];

fn recipient(n: usize) -> String {
    format!(
        "{}{:08}",
        PREFIXES[n % PREFIXES.len()],
        10_000_000 + n * 7919 % 89_999_999
    )
}

fn is_code(n: usize) -> bool {
    // Three in ten are verification codes.
    matches!(n % 10, 0 | 3 | 6)
}

/// The recipient of message `n`.
fn recipient_of(n: usize, recipients: usize) -> usize {
    if is_code(n) {
        recipients + n
    } else {
        n % recipients
    }
}

fn instruction(run: &str, n: usize, recipients: usize) -> Value {
    let phone = recipient(recipient_of(n, recipients));
    let request_id = format!("{run}sample-{n:07}");
    match n % 10 {
        _ if is_code(n) => json!({
            "request_id": request_id, "phone": phone, "kind": "VERIFICATION_CODE",
            "template_id": "otp-login", "params": { "code": format!("{:06}", (n * 7_919) % 1_000_000) },
        }),
        1 | 4 => json!({
            "request_id": request_id, "phone": phone, "kind": "REMINDER",
            "template_id": "inspection-reminder",
            "params": { "plate": format!("京A{:05}", n % 100_000), "date": "2026年12月31日" },
        }),
        // A long notice: several segments.
        7 => json!({
            "request_id": request_id, "phone": phone, "kind": "NOTICE",
            "text": format!("您的车辆京A{:05}于2026年11月28日在长安街与西单北大街交叉口发生违反禁令标志指示的交通违法行为，\
        记3分，罚款200元。请自收到本通知之日起十五日内，通过交管12123 App 或到就近的违法处理窗口接受处理。\
        逾期不处理的，将依法加处罚款，并影响车辆年检。如有异议，可在处理时提出申辩。", n % 100_000),
        }),
        _ => json!({
            "request_id": request_id, "phone": phone, "kind": "NOTICE",
            "template_id": "violation-notice", "params": { "plate": format!("京A{:05}", n % 100_000) },
        }),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let auth = format!("Bearer {}", cli.token);
    let base = cli.ingest.trim_end_matches('/');

    // Every recipient subscribes to every kind (contract clause 2.9).
    let mut registered: Vec<usize> = (0..cli.messages)
        .map(|n| recipient_of(n, cli.recipients))
        .collect();
    registered.sort_unstable();
    registered.dedup();
    for &n in &registered {
        let answer = http
            .post(format!("{base}/v1/subscriptions"))
            .header("Authorization", &auth)
            .json(&json!({ "phone": recipient(n) }))
            .send()
            .await
            .with_context(|| format!("ingest at {base} is not reachable"))?;
        let status = answer.status();
        if !status.is_success() && status.as_u16() != 409 {
            anyhow::bail!(
                "registering a recipient failed: {status} {}",
                answer.text().await.unwrap_or_default()
            );
        }
    }
    println!("registered {} recipients", registered.len());

    let mut accepted = 0;
    let mut refused = 0;
    let mut instructions: Vec<Value> = (0..cli.messages)
        .map(|n| instruction(&cli.run_id, n, cli.recipients))
        .collect();
    // Two that must be refused: a China Mobile number and advertising text.
    instructions.push(json!({ "request_id": format!("{}sample-refused-1", cli.run_id), "phone": "13800138000", "kind": "NOTICE", "text": "您的车辆年检即将到期。" }));
    instructions.push(json!({ "request_id": format!("{}sample-refused-2", cli.run_id), "phone": recipient(1), "kind": "NOTICE", "text": "限时抢购，洗车优惠券免费领！" }));
    for chunk in instructions.chunks(cli.batch.max(1)) {
        let answer = http
            .post(format!("{base}/v1/messages/batch"))
            .header("Authorization", &auth)
            .json(&json!({ "messages": chunk }))
            .send()
            .await?;
        let status = answer.status();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            anyhow::bail!("batch refused: {status} {body}");
        }
        accepted += body["accepted"].as_u64().unwrap_or(0);
        refused += body["refused"].as_u64().unwrap_or(0);
    }
    println!(
        "sent {} instructions: {accepted} accepted, {refused} refused at the door",
        instructions.len()
    );
    Ok(())
}
