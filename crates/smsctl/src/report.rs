//! The monthly report as an operator hands it over: a self-contained HTML page with charts, Markdown, and CSV.

use std::fmt::Write;

use crate::chart::{self, escape};
use crate::monthly::{
    MonthlyReport, Rate, Volume, LATENCY_BUCKETS_MS, SUCCESS_THRESHOLD_PERCENT,
    TIMELINESS_THRESHOLD_PERCENT,
};

const DEFINITIONS_ZH: &str = "按受理时间（北京时间）所在月份统计已有最终状态的短信。因策略被拒绝（REJECTED，或提交前已过期 EXPIRED）的短信属平台侧，单列为拒绝，不计入比率。成功率 = 成功送达 / 提交运营商的短信；及时率 = 受理后 7 秒内返回状态 / 提交运营商的短信（无状态报告计为不及时）。";
const DEFINITIONS_EN: &str = "Messages count in the month (Beijing time) their request was accepted, once final. Messages refused by policy (REJECTED, or EXPIRED before submission) are the bureau's and are shown as refusals, outside the rates. Success rate = delivered / messages that went to the carrier; timeliness rate = statuses returned within 7 s of acceptance / messages that went to the carrier (no report counts as late). Latency percentiles are exact, over messages with a report.";

fn kind_label(kind: &str) -> String {
    match kind {
        "VERIFICATION_CODE" => "验证码 verification code".into(),
        "NOTICE" => "通知 notice".into(),
        "REMINDER" => "提醒 reminder".into(),
        other => other.into(),
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "达标 met"
    } else {
        "未达标 NOT met"
    }
}

fn bucket_labels() -> Vec<String> {
    let mut labels = Vec::new();
    let mut low = 0;
    for upper in LATENCY_BUCKETS_MS {
        labels.push(format!("{}–{} s", low / 1000, upper / 1000));
        low = upper;
    }
    labels.push(format!("> {} s", low / 1000));
    labels
}

fn change(current: Rate, previous: Rate) -> String {
    match (current.percent(), previous.percent()) {
        (Some(c), Some(p)) => format!("{:+.3} pp", c - p),
        _ => "n/a".into(),
    }
}

fn count_change(current: u64, previous: u64) -> String {
    if previous == 0 {
        return "n/a".into();
    }
    format!(
        "{:+.2}%",
        (current as f64 - previous as f64) * 100.0 / previous as f64
    )
}

/// The summary rows shared by every format: (label, this month, previous, change).
fn summary_rows(report: &MonthlyReport) -> Vec<[String; 4]> {
    let (t, p) = (&report.total, &report.previous);
    vec![
        [
            "短信总数 Messages".into(),
            t.messages.to_string(),
            p.messages.to_string(),
            count_change(t.messages, p.messages),
        ],
        [
            "计费条数 Billed segments".into(),
            t.billed_segments.to_string(),
            p.billed_segments.to_string(),
            count_change(t.billed_segments, p.billed_segments),
        ],
        [
            "提交运营商 Sent to the carrier".into(),
            t.carrier_messages.to_string(),
            p.carrier_messages.to_string(),
            count_change(t.carrier_messages, p.carrier_messages),
        ],
        [
            "成功送达 Delivered".into(),
            t.delivered.to_string(),
            p.delivered.to_string(),
            count_change(t.delivered, p.delivered),
        ],
        [
            "7 秒内返回 Status within 7 s".into(),
            t.within_seven_seconds.to_string(),
            p.within_seven_seconds.to_string(),
            count_change(t.within_seven_seconds, p.within_seven_seconds),
        ],
        [
            "策略拒绝 Refused by policy".into(),
            t.refused.to_string(),
            p.refused.to_string(),
            count_change(t.refused, p.refused),
        ],
        [
            "成功率 Success rate".into(),
            t.success().display(),
            p.success().display(),
            change(t.success(), p.success()),
        ],
        [
            "及时率 Timeliness rate".into(),
            t.timeliness().display(),
            p.timeliness().display(),
            change(t.timeliness(), p.timeliness()),
        ],
    ]
}

fn volume_row(label: &str, v: &Volume) -> [String; 7] {
    [
        label.to_string(),
        v.messages.to_string(),
        v.billed_segments.to_string(),
        v.carrier_messages.to_string(),
        v.delivered.to_string(),
        v.success().display(),
        v.timeliness().display(),
    ]
}

const VOLUME_HEADER: [&str; 7] = [
    "",
    "短信 Messages",
    "计费条数 Billed",
    "提交运营商 To carrier",
    "送达 Delivered",
    "成功率 Success",
    "及时率 Timeliness",
];

/// The report as Markdown.
pub fn markdown(report: &MonthlyReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# 短信服务月度统计报告 Monthly SMS report: {}\n",
        report.month
    );
    let _ = writeln!(out, "{DEFINITIONS_ZH}\n\n{DEFINITIONS_EN}\n");
    let _ = writeln!(out, "## 合同指标 Contract thresholds\n");
    let _ = writeln!(
        out,
        "| 指标 Figure | 本月 This month | 要求 Required | 结论 Verdict |\n|---|---:|---:|---|"
    );
    let _ = writeln!(
        out,
        "| 成功率 Success rate (3.7) | {} | ≥ {SUCCESS_THRESHOLD_PERCENT}% | {} |",
        report.total.success().display(),
        verdict(report.success_met())
    );
    let _ = writeln!(
        out,
        "| 及时率 Timeliness rate (3.8) | {} | ≥ {TIMELINESS_THRESHOLD_PERCENT}% | {} |\n",
        report.total.timeliness().display(),
        verdict(report.timeliness_met())
    );
    let _ = writeln!(
        out,
        "## 汇总与环比 Summary and previous month ({})\n",
        report.month.previous()
    );
    table_md(
        &mut out,
        &["", "本月 This month", "上月 Previous", "变化 Change"],
        summary_rows(report).iter().map(|r| r.to_vec()),
    );
    let _ = writeln!(out, "\n## 按类型 By kind\n");
    table_md(
        &mut out,
        &VOLUME_HEADER,
        report
            .by_kind
            .iter()
            .map(|(k, v)| volume_row(&kind_label(k), v).to_vec()),
    );
    let _ = writeln!(out, "\n## 按日 By day\n");
    table_md(
        &mut out,
        &VOLUME_HEADER,
        report.by_day.iter().map(|(d, v)| volume_row(d, v).to_vec()),
    );
    let _ = writeln!(out, "\n## 失败类型 Failures by category\n");
    table_md(
        &mut out,
        &["类别 Category", "短信 Messages"],
        report
            .failures_by_category
            .iter()
            .map(|(c, n)| vec![c.clone(), n.to_string()]),
    );
    let _ = writeln!(
        out,
        "\n## 失败原因（运营商错误码） Failures by carrier error code\n"
    );
    table_md(
        &mut out,
        &[
            "错误码 Code",
            "类别 Category",
            "说明",
            "Description",
            "短信 Messages",
        ],
        report.failures_by_code.iter().map(|f| {
            vec![
                display_code(&f.code),
                f.category.clone(),
                f.description_zh.clone(),
                f.description_en.clone(),
                f.messages.to_string(),
            ]
        }),
    );
    let _ = writeln!(out, "\n## 策略拒绝 Refusals by reason\n");
    table_md(
        &mut out,
        &["原因 Reason", "短信 Messages"],
        report
            .refusals_by_reason
            .iter()
            .map(|(r, n)| vec![r.clone(), n.to_string()]),
    );
    let _ = writeln!(out, "\n## 时延分布 Latency (acceptance to report)\n");
    let l = &report.latency;
    let _ = writeln!(
        out,
        "Over {} messages with a report / 共 {} 条有状态报告。\n",
        l.reported, l.reported
    );
    table_md(
        &mut out,
        &["P50", "P90", "P98", "P99"],
        std::iter::once(vec![ms(l.p50_ms), ms(l.p90_ms), ms(l.p98_ms), ms(l.p99_ms)]),
    );
    let _ = writeln!(out);
    table_md(
        &mut out,
        &["区间 Range", "短信 Messages"],
        bucket_labels()
            .into_iter()
            .zip(l.buckets.iter())
            .map(|(b, n)| vec![b, n.to_string()]),
    );
    out
}

fn display_code(code: &str) -> String {
    if code.is_empty() {
        "—".into()
    } else {
        code.into()
    }
}

fn ms(value: i64) -> String {
    format!("{:.3} s", value as f64 / 1000.0)
}

fn table_md(out: &mut String, header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(
        out,
        "|{}",
        header
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---|" } else { "---:|" })
            .collect::<String>()
    );
    let mut any = false;
    for row in rows {
        any = true;
        let cells: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    if !any {
        let _ = writeln!(out, "| — |{}", " |".repeat(header.len().saturating_sub(1)));
    }
}

fn table_html(out: &mut String, header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    out.push_str("<table><thead><tr>");
    for h in header {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>");
    let mut any = false;
    for row in rows {
        any = true;
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let class = if i == 0 { "" } else { " class=\"n\"" };
            let _ = write!(out, "<td{class}>{}</td>", escape(cell));
        }
        out.push_str("</tr>");
    }
    if !any {
        let _ = write!(out, "<tr><td colspan=\"{}\">—</td></tr>", header.len());
    }
    out.push_str("</tbody></table>\n");
}

const STYLE: &str = "body{font-family:-apple-system,'Segoe UI','PingFang SC','Microsoft YaHei',sans-serif;max-width:900px;margin:2em auto;padding:0 1em;color:#222}\
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:3px 8px}th{background:#f3f3f3}\
td.n{text-align:right;font-variant-numeric:tabular-nums}.met{color:#176f2c;font-weight:bold}.missed{color:#b00020;font-weight:bold}\
.chart{width:100%;height:auto;margin:.5em 0}p.def{font-size:.9em;color:#444}";

/// The report as one self-contained HTML page (no external resources).
pub fn html(report: &MonthlyReport) -> String {
    let mut out = String::new();
    let title = format!("短信服务月度统计报告 Monthly SMS report {}", report.month);
    let _ = write!(out, "<!DOCTYPE html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n", escape(&title));
    let _ = writeln!(out, "<h1>{}</h1>", escape(&title));
    let _ = writeln!(
        out,
        "<p class=\"def\">{}</p><p class=\"def\">{}</p>",
        escape(DEFINITIONS_ZH),
        escape(DEFINITIONS_EN)
    );

    let _ = writeln!(out, "<h2>合同指标 Contract thresholds</h2>");
    let class = |met: bool| if met { "met" } else { "missed" };
    let _ = writeln!(
        out,
        "<table><thead><tr><th>指标 Figure</th><th>本月 This month</th><th>要求 Required</th><th>结论 Verdict</th></tr></thead><tbody>\
<tr><td>成功率 Success rate (3.7)</td><td class=\"n\">{}</td><td class=\"n\">≥ {SUCCESS_THRESHOLD_PERCENT}%</td><td class=\"{}\">{}</td></tr>\
<tr><td>及时率 Timeliness rate (3.8)</td><td class=\"n\">{}</td><td class=\"n\">≥ {TIMELINESS_THRESHOLD_PERCENT}%</td><td class=\"{}\">{}</td></tr></tbody></table>",
        report.total.success().display(),
        class(report.success_met()),
        verdict(report.success_met()),
        report.total.timeliness().display(),
        class(report.timeliness_met()),
        verdict(report.timeliness_met()),
    );

    let _ = writeln!(
        out,
        "<h2>汇总与环比 Summary and previous month ({})</h2>",
        report.month.previous()
    );
    table_html(
        &mut out,
        &["", "本月 This month", "上月 Previous", "变化 Change"],
        summary_rows(report).iter().map(|r| r.to_vec()),
    );

    let days: Vec<String> = report.by_day.keys().cloned().collect();
    let _ = writeln!(out, "<h2>每日发送量 Daily volume</h2>");
    let series: Vec<(&str, &str, Vec<u64>)> = [
        ("VERIFICATION_CODE", "验证码 verification code", "#3b6fb6"),
        ("NOTICE", "通知 notice", "#6fa84f"),
        ("REMINDER", "提醒 reminder", "#e0a030"),
    ]
    .iter()
    .map(|(kind, label, colour)| {
        let per_day = days
            .iter()
            .map(|day| {
                report
                    .by_day_and_kind
                    .get(&(day.clone(), (*kind).to_string()))
                    .map_or(0, |v| v.messages)
            })
            .collect();
        (*label, *colour, per_day)
    })
    .collect();
    out.push_str(&chart::stacked_bars("daily volume", &days, &series));

    let _ = writeln!(
        out,
        "<h2>每日成功率与及时率 Daily success and timeliness</h2>"
    );
    let success: Vec<Option<f64>> = report
        .by_day
        .values()
        .map(|v| v.success().percent())
        .collect();
    let timely: Vec<Option<f64>> = report
        .by_day
        .values()
        .map(|v| v.timeliness().percent())
        .collect();
    out.push_str(&chart::rate_lines(
        "daily rates",
        &days,
        &[
            ("成功率 success", "#176f2c", success),
            ("及时率 timeliness", "#3b6fb6", timely),
        ],
        &[
            (
                "99% 成功率要求",
                "#b00020",
                SUCCESS_THRESHOLD_PERCENT as f64,
            ),
            (
                "98% 及时率要求",
                "#e07020",
                TIMELINESS_THRESHOLD_PERCENT as f64,
            ),
        ],
    ));

    let _ = writeln!(out, "<h2>按类型 By kind</h2>");
    table_html(
        &mut out,
        &VOLUME_HEADER,
        report
            .by_kind
            .iter()
            .map(|(k, v)| volume_row(&kind_label(k), v).to_vec()),
    );

    let _ = writeln!(out, "<h2>失败类型 Failures by category</h2>");
    let mut categories: Vec<(String, u64)> = report
        .failures_by_category
        .iter()
        .map(|(c, n)| (c.clone(), *n))
        .collect();
    categories.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out.push_str(&chart::horizontal_bars(
        "failure causes",
        &categories,
        "#b00020",
    ));
    let _ = writeln!(
        out,
        "<h2>失败原因（运营商错误码） Failures by carrier error code</h2>"
    );
    table_html(
        &mut out,
        &[
            "错误码 Code",
            "类别 Category",
            "说明",
            "Description",
            "短信 Messages",
        ],
        report.failures_by_code.iter().map(|f| {
            vec![
                display_code(&f.code),
                f.category.clone(),
                f.description_zh.clone(),
                f.description_en.clone(),
                f.messages.to_string(),
            ]
        }),
    );

    let _ = writeln!(out, "<h2>策略拒绝 Refusals by reason</h2>");
    table_html(
        &mut out,
        &["原因 Reason", "短信 Messages"],
        report
            .refusals_by_reason
            .iter()
            .map(|(r, n)| vec![r.clone(), n.to_string()]),
    );

    let l = &report.latency;
    let _ = writeln!(out, "<h2>时延分布 Latency (acceptance to report)</h2><p>共 {} 条有状态报告 / over {} messages with a report.</p>", l.reported, l.reported);
    table_html(
        &mut out,
        &["P50", "P90", "P98", "P99"],
        std::iter::once(vec![ms(l.p50_ms), ms(l.p90_ms), ms(l.p98_ms), ms(l.p99_ms)]),
    );
    let buckets: Vec<(String, u64)> = bucket_labels()
        .into_iter()
        .zip(l.buckets.iter().copied())
        .collect();
    out.push_str(&chart::horizontal_bars(
        "latency distribution",
        &buckets,
        "#3b6fb6",
    ));

    let _ = writeln!(out, "<h2>按日 By day</h2>");
    table_html(
        &mut out,
        &VOLUME_HEADER,
        report.by_day.iter().map(|(d, v)| volume_row(d, v).to_vec()),
    );
    out.push_str("</body></html>\n");
    out
}

/// The report as CSV: one figure a line, `section,key,metric,value`.
pub fn csv(report: &MonthlyReport) -> String {
    let mut out = String::from("section,key,metric,value\n");
    let mut line = |section: &str, key: &str, metric: &str, value: String| {
        let _ = writeln!(
            out,
            "{},{},{},{}",
            field(section),
            field(key),
            field(metric),
            field(&value)
        );
    };
    let volume =
        |line: &mut dyn FnMut(&str, &str, &str, String), section: &str, key: &str, v: &Volume| {
            line(section, key, "messages", v.messages.to_string());
            line(
                section,
                key,
                "billed_segments",
                v.billed_segments.to_string(),
            );
            line(
                section,
                key,
                "carrier_messages",
                v.carrier_messages.to_string(),
            );
            line(section, key, "delivered", v.delivered.to_string());
            line(
                section,
                key,
                "within_seven_seconds",
                v.within_seven_seconds.to_string(),
            );
            line(section, key, "refused", v.refused.to_string());
            line(
                section,
                key,
                "success_rate_percent",
                v.success()
                    .percent()
                    .map(|p| format!("{p:.4}"))
                    .unwrap_or_default(),
            );
            line(
                section,
                key,
                "timeliness_rate_percent",
                v.timeliness()
                    .percent()
                    .map(|p| format!("{p:.4}"))
                    .unwrap_or_default(),
            );
        };
    let month = report.month.to_string();
    volume(&mut line, "total", &month, &report.total);
    volume(
        &mut line,
        "previous_month",
        &report.month.previous().to_string(),
        &report.previous,
    );
    line(
        "threshold",
        "success_99",
        "met",
        report.success_met().to_string(),
    );
    line(
        "threshold",
        "timeliness_98",
        "met",
        report.timeliness_met().to_string(),
    );
    for (kind, v) in &report.by_kind {
        volume(&mut line, "kind", kind, v);
    }
    for (day, v) in &report.by_day {
        volume(&mut line, "day", day, v);
    }
    for (category, n) in &report.failures_by_category {
        line("failure_category", category, "messages", n.to_string());
    }
    for f in &report.failures_by_code {
        line("failure_code", &f.code, "messages", f.messages.to_string());
        line(
            "failure_code",
            &f.code,
            "description_en",
            f.description_en.clone(),
        );
        line(
            "failure_code",
            &f.code,
            "description_zh",
            f.description_zh.clone(),
        );
    }
    for (reason, n) in &report.refusals_by_reason {
        line("refusal_reason", reason, "messages", n.to_string());
    }
    let l = &report.latency;
    line("latency", "reported", "messages", l.reported.to_string());
    for (name, v) in [
        ("p50", l.p50_ms),
        ("p90", l.p90_ms),
        ("p98", l.p98_ms),
        ("p99", l.p99_ms),
    ] {
        line("latency", name, "ms", v.to_string());
    }
    for (label, n) in bucket_labels().iter().zip(l.buckets.iter()) {
        line("latency_bucket", label, "messages", n.to_string());
    }
    out
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.into()
    }
}
