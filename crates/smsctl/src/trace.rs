//! Traces (clause 3.11): the full timeline of messages from `sms_events`, on the terminal and as a report for the bureau.
//!
//! A trace by message id reads the table by its sorting key; a trace by
//! phone number reads the `by_phone` projection twice: for the window, and
//! then for the whole timelines of the messages it found together with the
//! phone's carrier reports. Carrier reports carry no message id: they are
//! found by phone number and time (the projection again) and matched to the
//! message's segments by SGIP sequence triple. A trace by
//! request id scans the events of the window given (all of them without one).
//!
//! The terminal shows phone numbers masked; the report file, which is for
//! the bureau, shows them in full.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use clickhouse::Row;
use serde::Deserialize;

use crate::chart::escape;
use crate::error::SmsctlError;
use crate::period::beijing_time;
use crate::warehouse::{quote, Warehouse};

/// What to trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceTarget {
    /// One or more message ids.
    Messages(Vec<String>),
    /// The platform's request id, optionally within a window (Unix ms).
    Request {
        request_id: String,
        window: Option<(i64, i64)>,
    },
    /// Every message to a phone number in a window (Unix ms, end exclusive).
    Phone { phone: String, from: i64, to: i64 },
}

/// How long after a message's last event its reports are still looked for.
const REPORT_LOOKAHEAD_MS: i64 = 3 * 24 * 3600 * 1000;

/// The most messages a trace returns, so a phone number with heavy traffic
/// still answers quickly.
pub const MAX_MESSAGES: usize = 1_000;

/// One event of a timeline.
#[derive(Debug, Clone, PartialEq, Eq, Row, Deserialize)]
pub struct TraceEvent {
    /// Unix milliseconds.
    #[serde(rename = "event_time_ms")]
    pub event_time: i64,
    pub event_id: String,
    pub event_kind: String,
    pub message_id: String,
    pub request_id: String,
    pub client_id: String,
    pub phone: String,
    pub message_kind: String,
    pub state: String,
    pub reason: String,
    pub failure_category: String,
    pub error_code: String,
    pub segment_index: i16,
    pub billed_segments: u16,
    pub segments_delivered: u16,
    pub sequence: String,
    pub text: String,
    pub attempt: u16,
    /// Unix milliseconds; 0 when unknown.
    #[serde(rename = "accepted_at_ms")]
    pub accepted_at: i64,
    pub latency_ms: Option<i64>,
    pub within_seven_seconds: u8,
}

/// The timeline of one message, in time order, with its carrier reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageTrace {
    pub message_id: String,
    pub request_id: String,
    pub phone: String,
    pub kind: String,
    /// Unix milliseconds; 0 when unknown.
    pub accepted_at: i64,
    pub events: Vec<TraceEvent>,
}

impl MessageTrace {
    /// The final status event, if the message has one.
    pub fn final_status(&self) -> Option<&TraceEvent> {
        self.events.iter().find(|e| e.event_kind == "final_status")
    }

    /// Segment index of each submitted sequence triple.
    fn segments(&self) -> BTreeMap<&str, i16> {
        self.events
            .iter()
            .filter(|e| e.event_kind == "submitted")
            .map(|e| (e.sequence.as_str(), e.segment_index))
            .collect()
    }
}

/// What a trace found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub target: TraceTarget,
    pub messages: Vec<MessageTrace>,
    /// Events of the phone number that belong to no message (uplinks,
    /// subscription changes), for a trace by phone.
    pub phone_events: Vec<TraceEvent>,
    /// Whether [`MAX_MESSAGES`] cut the list.
    pub truncated: bool,
    pub sql: Vec<String>,
}

const COLUMNS: &str = "toUnixTimestamp64Milli(event_time) AS event_time_ms, event_id, toString(event_kind) AS event_kind, \
message_id, request_id, toString(client_id) AS client_id, phone, toString(message_kind) AS message_kind, \
toString(state) AS state, toString(reason) AS reason, toString(failure_category) AS failure_category, \
toString(error_code) AS error_code, segment_index, billed_segments, segments_delivered, sequence, text, attempt, \
toUnixTimestamp64Milli(accepted_at) AS accepted_at_ms, latency_ms, within_seven_seconds";

fn time_literal(millis: i64) -> String {
    format!("fromUnixTimestamp64Milli(toInt64({millis}), 'UTC')")
}

/// Checks that an id or number holds only characters ids are made of, so
/// it can go into SQL and file names as is.
pub fn check_id(option: &'static str, id: &str) -> Result<(), SmsctlError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '+'));
    if ok {
        Ok(())
    } else {
        Err(SmsctlError::argument(
            option,
            format!("`{id}` is not an id (letters, digits, - _ . : only)"),
        ))
    }
}

/// Normalises a phone number to the stored form (E.164 digits, no `+`):
/// an 11-digit mainland number gets the 86 country code.
pub fn normalise_phone(phone: &str) -> Result<String, SmsctlError> {
    let digits: String = phone
        .trim()
        .trim_start_matches('+')
        .chars()
        .filter(|c| *c != ' ' && *c != '-')
        .collect();
    if digits.is_empty() || digits.len() > 15 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(SmsctlError::argument(
            "--phone",
            format!("`{phone}` is not a phone number"),
        ));
    }
    if digits.len() == 11 && digits.starts_with('1') {
        return Ok(format!("86{digits}"));
    }
    Ok(digits)
}

/// A phone number as logs show it: the last four digits and the prefix
/// before the subscriber part, `86130****5678`.
pub fn mask_phone(phone: &str) -> String {
    let n = phone.chars().count();
    if n < 8 {
        return "****".into();
    }
    let head: String = phone.chars().take(n - 8).collect();
    let tail: String = phone.chars().skip(n - 4).collect();
    format!("{head}****{tail}")
}

/// Runs a trace.
pub async fn trace(warehouse: &Warehouse, target: TraceTarget) -> Result<Trace, SmsctlError> {
    let mut sql = Vec::new();
    let mut phone_events = Vec::new();
    let ids: Vec<String> = match &target {
        TraceTarget::Messages(ids) => {
            for id in ids {
                check_id("--message", id)?;
            }
            ids.clone()
        }
        TraceTarget::Request { request_id, window } => {
            check_id("--request", request_id)?;
            let bounds = window
                .map(|(from, to)| {
                    format!(
                        " AND event_time >= {} AND event_time < {}",
                        time_literal(from),
                        time_literal(to)
                    )
                })
                .unwrap_or_default();
            let query = format!(
                "SELECT DISTINCT message_id FROM sms_events WHERE request_id = {}{bounds} AND message_id != '' LIMIT {}",
                quote(request_id),
                MAX_MESSAGES + 1
            );
            let ids: Vec<String> = warehouse
                .fetch("finding the request's messages", &query)
                .await?;
            sql.push(query);
            ids
        }
        TraceTarget::Phone { phone, from, to } => {
            check_id("--phone", phone)?;
            let query = format!(
                "SELECT {COLUMNS} FROM sms_events WHERE phone = {} AND event_time >= {} AND event_time < {} ORDER BY event_time_ms, event_id",
                quote(phone),
                time_literal(*from),
                time_literal(*to)
            );
            let events: Vec<TraceEvent> = warehouse
                .fetch("reading the phone's events", &query)
                .await?;
            sql.push(query);
            let mut ids: Vec<String> = Vec::new();
            for event in events {
                if !event.message_id.is_empty() && event.event_kind != "uplink" {
                    if !ids.contains(&event.message_id) {
                        ids.push(event.message_id);
                    }
                } else if event.event_kind != "report" {
                    phone_events.push(event);
                }
            }
            ids
        }
    };
    let truncated = ids.len() > MAX_MESSAGES;
    let ids: Vec<String> = ids.into_iter().take(MAX_MESSAGES).collect();
    if ids.is_empty() {
        return Ok(Trace {
            target,
            messages: Vec::new(),
            phone_events,
            truncated,
            sql,
        });
    }

    // The messages' own events: by the sorting key, or for a trace by phone
    // by the projection, with the phone's carrier reports in the same read.
    let list: Vec<String> = ids.iter().map(|id| quote(id)).collect();
    let (query, operation) = match &target {
        TraceTarget::Phone { phone, .. } => (
            format!(
                "SELECT {COLUMNS} FROM sms_events WHERE phone = {} AND ((message_id IN ({}) AND event_kind != 'uplink') OR event_kind = 'report') ORDER BY event_time_ms, event_id",
                quote(phone),
                list.join(", ")
            ),
            "reading the messages' events and the phone's reports",
        ),
        _ => (
            format!(
                "SELECT {COLUMNS} FROM sms_events WHERE message_id IN ({}) AND event_kind != 'uplink' ORDER BY event_time_ms, event_id",
                list.join(", ")
            ),
            "reading the messages' events",
        ),
    };
    let events: Vec<TraceEvent> = warehouse.fetch(operation, &query).await?;
    sql.push(query);
    let mut by_id: BTreeMap<String, Vec<TraceEvent>> = BTreeMap::new();
    let mut phone_reports: Option<Vec<TraceEvent>> = None;
    if matches!(target, TraceTarget::Phone { .. }) {
        phone_reports = Some(Vec::new());
    }
    for event in events {
        match &mut phone_reports {
            Some(reports) if event.event_kind == "report" => reports.push(event),
            _ => by_id
                .entry(event.message_id.clone())
                .or_default()
                .push(event),
        }
    }

    // Their carrier reports, by phone number, time and sequence triple.
    let mut phones: Vec<&str> = Vec::new();
    let mut sequences: Vec<&str> = Vec::new();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for event in by_id.values().flatten() {
        if event.event_kind == "submitted" && !event.sequence.is_empty() {
            sequences.push(&event.sequence);
            if !phones.contains(&event.phone.as_str()) {
                phones.push(&event.phone);
            }
            first = first.min(event.event_time);
            last = last.max(event.event_time);
        }
    }
    let (reports_from, reports_to) = (first - 60_000, last + REPORT_LOOKAHEAD_MS);
    let mut reports: Vec<TraceEvent> = Vec::new();
    if let Some(candidates) = phone_reports {
        reports = candidates
            .into_iter()
            .filter(|r| {
                r.event_time >= reports_from
                    && r.event_time < reports_to
                    && sequences.contains(&r.sequence.as_str())
            })
            .collect();
    } else if !sequences.is_empty() {
        let query = format!(
            "SELECT {COLUMNS} FROM sms_events WHERE phone IN ({}) AND event_time >= {} AND event_time < {} \
AND event_kind = 'report' AND sequence IN ({}) ORDER BY event_time_ms, event_id",
            phones.iter().map(|p| quote(p)).collect::<Vec<_>>().join(", "),
            time_literal(reports_from),
            time_literal(reports_to),
            sequences.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ")
        );
        reports = warehouse.fetch("reading carrier reports", &query).await?;
        sql.push(query);
    }

    let mut messages = Vec::new();
    for id in &ids {
        let Some(mut events) = by_id.remove(id) else {
            continue;
        };
        let own: Vec<&str> = events
            .iter()
            .filter(|e| e.event_kind == "submitted")
            .map(|e| e.sequence.as_str())
            .collect();
        let matched: Vec<TraceEvent> = reports
            .iter()
            .filter(|r| own.contains(&r.sequence.as_str()))
            .cloned()
            .collect();
        events.extend(matched);
        events.sort_by(|a, b| {
            a.event_time
                .cmp(&b.event_time)
                .then_with(|| a.event_id.cmp(&b.event_id))
        });
        let pick = |f: fn(&TraceEvent) -> &str| {
            events
                .iter()
                .map(f)
                .find(|v| !v.is_empty())
                .unwrap_or_default()
                .to_string()
        };
        messages.push(MessageTrace {
            message_id: id.clone(),
            request_id: pick(|e| &e.request_id),
            phone: pick(|e| &e.phone),
            kind: pick(|e| &e.message_kind),
            accepted_at: events
                .iter()
                .map(|e| e.accepted_at)
                .find(|a| *a > 0)
                .unwrap_or(0),
            events,
        });
    }
    messages.sort_by(|a, b| {
        a.accepted_at
            .cmp(&b.accepted_at)
            .then_with(|| a.message_id.cmp(&b.message_id))
    });
    Ok(Trace {
        target,
        messages,
        phone_events,
        truncated,
        sql,
    })
}

/// One line describing an event, in English with the Chinese term.
pub fn describe(message: &MessageTrace, event: &TraceEvent) -> String {
    let segments = message.segments();
    let total = segments.len();
    let code = |c: &str| {
        if c.is_empty() {
            String::new()
        } else {
            format!(", code {c}")
        }
    };
    match event.event_kind.as_str() {
        "requested" => format!("受理 accepted by ingest (attempt {})", event.attempt),
        "retry_queued" => format!("重试排队 queued for attempt {}", event.attempt),
        "refused" => format!(
            "拒绝 refused by policy: {}{}",
            event.reason,
            code(&event.error_code)
        ),
        "retrying" => format!(
            "重试 to be retried: {}{}",
            event.reason,
            code(&event.error_code)
        ),
        "dispatch_failed" => format!(
            "提交失败 dispatch failed: {}{}",
            event.reason,
            code(&event.error_code)
        ),
        "submitted" => format!(
            "提交 SGIP Submit of segment {}/{total}, sequence {}",
            event.segment_index + 1,
            event.sequence
        ),
        "gateway_response" => format!(
            "网关应答 Submit_Resp for segment {}: result {}{}",
            event.segment_index + 1,
            event.error_code,
            event
                .latency_ms
                .map(|l| format!(" after {l} ms"))
                .unwrap_or_default()
        ),
        "report" => format!(
            "状态报告 Report for segment {}: {}{}",
            segments
                .get(event.sequence.as_str())
                .map_or("?".into(), |i| (i + 1).to_string()),
            event.state,
            code(&event.error_code)
        ),
        "final_status" => {
            let mut line = format!("最终状态 final status: {}", event.state);
            if !event.failure_category.is_empty() {
                let _ = write!(line, " ({})", event.failure_category);
            }
            if !event.reason.is_empty() {
                let _ = write!(line, ", reason {}", event.reason);
            }
            let _ = write!(line, "{}", code(&event.error_code));
            let _ = write!(
                line,
                "; billed {} segment(s), {} delivered; status within 7 s: {}",
                event.billed_segments,
                event.segments_delivered,
                if event.within_seven_seconds == 1 {
                    "yes 是"
                } else {
                    "no 否"
                }
            );
            if let Some(latency) = event.latency_ms {
                let _ = write!(line, "; acceptance to report {latency} ms");
            }
            line
        }
        "subscription" => format!(
            "订阅变更 subscription {} via {} ({})",
            event.state, event.reason, event.text
        ),
        "uplink" => format!("上行 uplink to {}: {}", event.reason, event.text),
        other => other.to_string(),
    }
}

/// `+1.234 s` after acceptance, or empty when acceptance is unknown.
fn since_acceptance(message: &MessageTrace, event: &TraceEvent) -> String {
    if message.accepted_at <= 0 {
        return String::new();
    }
    let ms = event.event_time - message.accepted_at;
    format!(
        "{}{}.{:03} s",
        if ms < 0 { "-" } else { "+" },
        ms.abs() / 1000,
        ms.abs() % 1000
    )
}

fn target_label(target: &TraceTarget, full_phone: bool) -> String {
    match target {
        TraceTarget::Messages(ids) => format!("message {}", ids.join(", ")),
        TraceTarget::Request { request_id, .. } => format!("request {request_id}"),
        TraceTarget::Phone { phone, from, to } => format!(
            "phone {} from {} to {} (Beijing time)",
            if full_phone {
                phone.clone()
            } else {
                mask_phone(phone)
            },
            beijing_time(*from),
            beijing_time(*to)
        ),
    }
}

/// The trace for the terminal, phone numbers masked.
pub fn terminal(trace: &Trace) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "trace of {}: {} message(s)",
        target_label(&trace.target, false),
        trace.messages.len()
    );
    if trace.truncated {
        let _ = writeln!(
            out,
            "(only the first {MAX_MESSAGES} messages; narrow the window)"
        );
    }
    for m in &trace.messages {
        let _ = writeln!(
            out,
            "\nmessage {} request {} to {} ({})",
            m.message_id,
            m.request_id,
            mask_phone(&m.phone),
            m.kind
        );
        for e in &m.events {
            let _ = writeln!(
                out,
                "  {}  {:>10}  {}",
                beijing_time(e.event_time),
                since_acceptance(m, e),
                describe(m, e)
            );
        }
    }
    for e in &trace.phone_events {
        let _ = writeln!(
            out,
            "\n  {}  {}",
            beijing_time(e.event_time),
            describe(&empty_message(), e)
        );
    }
    out
}

fn empty_message() -> MessageTrace {
    MessageTrace {
        message_id: String::new(),
        request_id: String::new(),
        phone: String::new(),
        kind: String::new(),
        accepted_at: 0,
        events: Vec::new(),
    }
}

fn summary(m: &MessageTrace) -> String {
    match m.final_status() {
        Some(f) => describe(m, f),
        None => "尚无最终状态 no final status yet".into(),
    }
}

/// The trace report for the bureau, as Markdown, phone numbers in full.
pub fn markdown(trace: &Trace, generated_at: i64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# 短信发送追踪报告 SMS trace report\n");
    let _ = writeln!(
        out,
        "- 追踪对象 Subject: {}",
        target_label(&trace.target, true)
    );
    let _ = writeln!(
        out,
        "- 生成时间 Generated: {} (Beijing time)",
        beijing_time(generated_at)
    );
    let _ = writeln!(
        out,
        "- 短信数 Messages found: {}{}\n",
        trace.messages.len(),
        if trace.truncated { " (truncated)" } else { "" }
    );
    if trace.messages.is_empty() {
        let _ = writeln!(out, "未找到相关短信记录。No message matches.\n");
    }
    for m in &trace.messages {
        let _ = writeln!(out, "## {}\n", m.message_id);
        let _ = writeln!(out, "- 请求号 Request id: {}", m.request_id);
        let _ = writeln!(out, "- 手机号 Phone: {}", m.phone);
        let _ = writeln!(out, "- 类型 Kind: {}", m.kind);
        let _ = writeln!(
            out,
            "- 受理时间 Accepted: {}",
            if m.accepted_at > 0 {
                beijing_time(m.accepted_at)
            } else {
                "—".into()
            }
        );
        let _ = writeln!(out, "- 结果 Outcome: {}\n", summary(m));
        let _ = writeln!(
            out,
            "| 时间 Time (Beijing) | 距受理 Since acceptance | 事件 Event |\n|---|---:|---|"
        );
        for e in &m.events {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                beijing_time(e.event_time),
                since_acceptance(m, e),
                describe(m, e).replace('|', "\\|")
            );
        }
        let _ = writeln!(out);
    }
    if !trace.phone_events.is_empty() {
        let _ = writeln!(
            out,
            "## 号码事件 Events of the number\n\n| 时间 Time (Beijing) | 事件 Event |\n|---|---|"
        );
        for e in &trace.phone_events {
            let _ = writeln!(
                out,
                "| {} | {} |",
                beijing_time(e.event_time),
                describe(&empty_message(), e).replace('|', "\\|")
            );
        }
    }
    out
}

/// The trace report for the bureau, as a self-contained HTML page.
pub fn html(trace: &Trace, generated_at: i64) -> String {
    let mut out = String::new();
    let _ = write!(out, "<!DOCTYPE html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>短信发送追踪报告 SMS trace report</title><style>\
body{{font-family:-apple-system,'Segoe UI','PingFang SC','Microsoft YaHei',sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}}\
table{{border-collapse:collapse;font-size:.9em}}th,td{{border:1px solid #ccc;padding:3px 8px;text-align:left}}th{{background:#f3f3f3}}td.n{{text-align:right}}\
h2{{font-size:1.1em;margin-top:2em;border-bottom:1px solid #ccc}}</style></head><body>\n");
    let _ = writeln!(out, "<h1>短信发送追踪报告 SMS trace report</h1><ul>");
    let _ = writeln!(
        out,
        "<li>追踪对象 Subject: {}</li>",
        escape(&target_label(&trace.target, true))
    );
    let _ = writeln!(
        out,
        "<li>生成时间 Generated: {} (Beijing time)</li>",
        beijing_time(generated_at)
    );
    let _ = writeln!(
        out,
        "<li>短信数 Messages found: {}{}</li></ul>",
        trace.messages.len(),
        if trace.truncated { " (truncated)" } else { "" }
    );
    if trace.messages.is_empty() {
        let _ = writeln!(out, "<p>未找到相关短信记录。No message matches.</p>");
    }
    for m in &trace.messages {
        let _ = writeln!(out, "<h2>{}</h2><ul>", escape(&m.message_id));
        let _ = writeln!(
            out,
            "<li>请求号 Request id: {}</li><li>手机号 Phone: {}</li><li>类型 Kind: {}</li>",
            escape(&m.request_id),
            escape(&m.phone),
            escape(&m.kind)
        );
        let _ = writeln!(
            out,
            "<li>受理时间 Accepted: {}</li><li>结果 Outcome: {}</li></ul>",
            if m.accepted_at > 0 {
                beijing_time(m.accepted_at)
            } else {
                "—".into()
            },
            escape(&summary(m))
        );
        out.push_str("<table><thead><tr><th>时间 Time (Beijing)</th><th>距受理 Since acceptance</th><th>事件 Event</th></tr></thead><tbody>");
        for e in &m.events {
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                beijing_time(e.event_time),
                since_acceptance(m, e),
                escape(&describe(m, e))
            );
        }
        out.push_str("</tbody></table>\n");
    }
    if !trace.phone_events.is_empty() {
        out.push_str("<h2>号码事件 Events of the number</h2><table><tbody>");
        for e in &trace.phone_events {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td></tr>",
                beijing_time(e.event_time),
                escape(&describe(&empty_message(), e))
            );
        }
        out.push_str("</tbody></table>\n");
    }
    out.push_str("</body></html>\n");
    out
}

/// Writes the HTML and Markdown reports into `dir`; returns their paths.
pub fn write_report(
    trace: &Trace,
    dir: &Path,
    generated_at: i64,
) -> Result<Vec<PathBuf>, SmsctlError> {
    std::fs::create_dir_all(dir).map_err(|e| SmsctlError::io(dir, e))?;
    let subject = match &trace.target {
        TraceTarget::Messages(ids) if ids.len() == 1 => format!("message-{}", ids[0]),
        TraceTarget::Messages(ids) => format!("messages-{}", ids.len()),
        TraceTarget::Request { request_id, .. } => format!("request-{request_id}"),
        TraceTarget::Phone { phone, .. } => format!(
            "phone-{}",
            phone.get(phone.len().saturating_sub(4)..).unwrap_or("")
        ),
    };
    let stamp = crate::period::beijing_time(generated_at)
        .chars()
        .filter(char::is_ascii_digit)
        .take(14)
        .collect::<String>();
    let stem = format!("trace-{}-{stamp}", subject.replace([':', '/'], "_"));
    let mut written = Vec::new();
    for (ext, body) in [
        ("html", html(trace, generated_at)),
        ("md", markdown(trace, generated_at)),
    ] {
        let path = dir.join(format!("{stem}.{ext}"));
        std::fs::write(&path, body).map_err(|e| SmsctlError::io(&path, e))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_normalised_and_masked() {
        assert_eq!(normalise_phone("13012345678").unwrap(), "8613012345678");
        assert_eq!(
            normalise_phone("+86 130-1234-5678").unwrap(),
            "8613012345678"
        );
        assert!(normalise_phone("13a").is_err());
        assert_eq!(mask_phone("8613012345678"), "86130****5678");
        assert_eq!(mask_phone("123"), "****");
    }

    #[test]
    fn ids_with_quotes_are_refused() {
        assert!(check_id("--message", "a1b2-c3").is_ok());
        assert!(check_id("--message", "x' OR 1=1").is_err());
        assert!(check_id("--message", "").is_err());
    }
}
