//! Notifications and what each channel receives.
//!
//! A [`Notification`] is one message about one monitor: the alerts (groups) that started
//! firing, changed level, are still firing (re-notification) or resolved in the same
//! evaluation, so one incident is one message. [`requests`] turns it into the HTTP requests
//! (or the file line) of a channel. Audit data is attacker-controlled — a username can be
//! `<!channel>` or a Markdown link — so every value is escaped for the format that carries it
//! and cut to the channel's size limits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::rfc3339;
use crate::spec::{ChannelKind, ChannelSpec};

/// What happened to the alerts of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// They fire (or still do).
    Firing,
    /// They resolved.
    Resolved,
}

impl Status {
    /// The name in payloads.
    pub fn name(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// One alert: a group of a monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The group's fields and values.
    pub group: BTreeMap<String, String>,
    /// firing or resolved.
    pub status: Status,
    /// `alert` or `warn` while firing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// The severity of its level.
    pub severity: String,
    /// The value, formatted.
    pub value: String,
    /// The threshold, formatted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<String>,
    /// The rendered title.
    pub title: String,
    /// The rendered message.
    pub message: String,
    /// When it started firing.
    #[serde(with = "rfc3339")]
    pub starts_at: i64,
    /// When it resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    /// A stable key of the monitor and group (PagerDuty's `dedup_key`, Alertmanager's
    /// fingerprint).
    pub key: String,
    /// A few matching events of the window, as stored (redacted).
    #[serde(default)]
    pub samples: Vec<Value>,
    /// A link that opens the query behind the alert, for this group and window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// One message about one monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Unique and stable: the same evaluation produces the same id after a restart, so it is
    /// never delivered twice (the idempotency key receivers see).
    pub id: String,
    /// The monitor.
    pub monitor: String,
    /// Its description.
    #[serde(default)]
    pub description: String,
    /// The query.
    pub query: String,
    /// The evaluation time.
    #[serde(with = "rfc3339")]
    pub at: i64,
    /// The alerts.
    pub alerts: Vec<Alert>,
    /// kubetrail's address (`--external-url`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,
}

impl Notification {
    /// firing if any alert fires, else resolved.
    pub fn status(&self) -> Status {
        if self.alerts.iter().any(|a| a.status == Status::Firing) {
            Status::Firing
        } else {
            Status::Resolved
        }
    }

    /// A one-line summary: `[FIRING:2] forbidden-spike` and the first title.
    pub fn summary(&self) -> String {
        let status = self.status();
        let count = self.alerts.iter().filter(|a| a.status == status).count();
        let first = self.alerts.first().map_or("", |a| a.title.as_str());
        format!(
            "[{}:{count}] {}: {first}",
            status.name().to_uppercase(),
            self.monitor
        )
    }
}

/// One request to a channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// POST JSON to a URL with extra headers.
    Post {
        /// Where.
        url: String,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// The body.
        body: Vec<u8>,
    },
    /// Append a line to a file.
    Append {
        /// The file.
        path: String,
        /// The line, without its newline.
        line: Vec<u8>,
    },
}

/// The requests that deliver `notification` to `channel`, in order.
pub fn requests(channel: &ChannelSpec, notification: &Notification) -> Vec<Request> {
    let post = |body: Value, extra: Vec<(String, String)>| {
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut headers = vec![("Idempotency-Key".to_owned(), notification.id.clone())];
        headers.extend(extra);
        Request::Post {
            url: channel.target.clone(),
            headers,
            body,
        }
    };
    match channel.kind {
        ChannelKind::Webhook => {
            let body = alertmanager_webhook(channel, notification);
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            let mut headers = vec![("Idempotency-Key".to_owned(), notification.id.clone())];
            if let Some(secret) = &channel.secret {
                headers.push(("X-Kubetrail-Signature".to_owned(), sign(secret, &bytes)));
            }
            vec![Request::Post {
                url: channel.target.clone(),
                headers,
                body: bytes,
            }]
        }
        ChannelKind::Alertmanager => {
            let url = format!("{}/api/v2/alerts", channel.target.trim_end_matches('/'));
            let alerts: Vec<Value> = notification
                .alerts
                .iter()
                .map(|a| {
                    let mut alert = alertmanager_alert(notification, a);
                    // While firing the alert is sent again every minute with an end a few
                    // minutes ahead; if kubetrail stops, Alertmanager resolves it by itself.
                    if a.status == Status::Firing {
                        alert["endsAt"] = json!(rfc3339::format(notification.at + 5 * 60_000_000));
                    }
                    alert
                })
                .collect();
            let Request::Post { headers, body, .. } = post(json!(alerts), Vec::new()) else {
                unreachable!()
            };
            vec![Request::Post { url, headers, body }]
        }
        ChannelKind::Slack => vec![post(slack(notification), Vec::new())],
        ChannelKind::Teams => vec![post(teams(notification), Vec::new())],
        ChannelKind::PagerDuty => notification
            .alerts
            .iter()
            .map(|a| post(pagerduty(channel, notification, a), Vec::new()))
            .collect(),
        ChannelKind::File => vec![Request::Append {
            path: channel.target.clone(),
            line: serde_json::to_vec(notification).unwrap_or_default(),
        }],
    }
}

/// `sha256=HEX` of the body under the channel's secret (HMAC-SHA256), as GitHub signs
/// webhooks: receivers recompute it to know the payload is kubetrail's and unchanged.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn labels(notification: &Notification, alert: &Alert) -> Value {
    let mut labels = serde_json::Map::new();
    labels.insert("alertname".into(), json!(notification.monitor));
    labels.insert("monitor".into(), json!(notification.monitor));
    labels.insert("severity".into(), json!(alert.severity));
    for (k, v) in &alert.group {
        labels.insert(label_name(k), json!(v));
    }
    Value::Object(labels)
}

/// A group field as an Alertmanager label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
fn label_name(field: &str) -> String {
    let mut name: String = field
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) || name.is_empty() {
        name.insert(0, '_');
    }
    name
}

fn alertmanager_alert(notification: &Notification, alert: &Alert) -> Value {
    let mut annotations = json!({
        "summary": alert.title,
        "description": alert.message,
        "value": alert.value,
    });
    if let Some(t) = &alert.threshold {
        annotations["threshold"] = json!(t);
    }
    json!({
        "labels": labels(notification, alert),
        "annotations": annotations,
        "startsAt": rfc3339::format(alert.starts_at),
        "endsAt": alert.ends_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        "generatorURL": alert.link.clone().unwrap_or_default(),
    })
}

/// Alertmanager's webhook payload (version 4), which most alert receivers accept.
fn alertmanager_webhook(channel: &ChannelSpec, notification: &Notification) -> Value {
    let alerts: Vec<Value> = notification
        .alerts
        .iter()
        .map(|a| {
            let mut alert = alertmanager_alert(notification, a);
            alert["status"] = json!(a.status.name());
            alert["fingerprint"] = json!(a.key);
            alert["samples"] = json!(a.samples);
            alert
        })
        .collect();
    let severity = notification
        .alerts
        .first()
        .map_or("warning", |a| a.severity.as_str());
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{monitor=\"{}\"}}", notification.monitor),
        "truncatedAlerts": 0,
        "status": notification.status().name(),
        "receiver": channel.name,
        "groupLabels": {"monitor": notification.monitor},
        "commonLabels": {"alertname": notification.monitor, "monitor": notification.monitor, "severity": severity},
        "commonAnnotations": {},
        "externalURL": notification.external_url.clone().unwrap_or_default(),
        "alerts": alerts,
        "id": notification.id,
    })
}

/// Slack's `mrkdwn` escaping: `&`, `<` and `>` become entities, so `<!channel>`, `<@U123>` and
/// `<http://x|text>` in audit data are shown as text and ping or link nothing.
pub fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Cuts `text` to at most `max` characters, marking the cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Slack: a header, one section per alert (at most 20, then a count), a link button. Limits
/// respected: 150 characters of header, 3000 per section, 50 blocks.
fn slack(notification: &Notification) -> Value {
    const MAX_ALERTS: usize = 20;
    let status = notification.status();
    let icon = match status {
        Status::Firing => ":rotating_light:",
        Status::Resolved => ":white_check_mark:",
    };
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": cut(&format!("{} {}", status.name().to_uppercase(), notification.monitor), 150)},
    })];
    for alert in notification.alerts.iter().take(MAX_ALERTS) {
        let group = alert
            .group
            .iter()
            .map(|(k, v)| format!("{k}=`{}`", slack_escape(&v.replace('`', "'"))))
            .collect::<Vec<_>>()
            .join(" ");
        let threshold = alert
            .threshold
            .as_ref()
            .map(|t| format!(" (threshold {t})"))
            .unwrap_or_default();
        let text = format!(
            "{icon} *{}*\n{}\nvalue {}{threshold} · {} · {}",
            slack_escape(&alert.title),
            slack_escape(&alert.message),
            slack_escape(&alert.value),
            alert.severity,
            group
        );
        blocks
            .push(json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&text, 3000)}}));
    }
    if notification.alerts.len() > MAX_ALERTS {
        blocks.push(json!({"type": "context", "elements": [{"type": "plain_text", "text": format!("and {} more", notification.alerts.len() - MAX_ALERTS)}]}));
    }
    if let Some(link) = notification.alerts.first().and_then(|a| a.link.clone()) {
        blocks.push(json!({"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open the query"}, "url": link}]}));
    }
    json!({"text": cut(&slack_escape(&notification.summary()), 3000), "blocks": blocks})
}

/// Escapes the Markdown an Adaptive Card's TextBlock would render (links, emphasis, lists).
pub fn markdown_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '*'
                | '_'
                | '['
                | ']'
                | '('
                | ')'
                | '#'
                | '`'
                | '>'
                | '<'
                | '-'
                | '+'
                | '!'
                | '|'
                | '~'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Microsoft Teams (workflow webhook): an Adaptive Card with a title, the facts of each alert
/// and a link button.
fn teams(notification: &Notification) -> Value {
    let mut body = vec![json!({
        "type": "TextBlock", "size": "Medium", "weight": "Bolder", "wrap": true,
        "text": cut(&markdown_escape(&notification.summary()), 500),
    })];
    for alert in notification.alerts.iter().take(20) {
        let mut facts = vec![
            json!({"title": "status", "value": alert.status.name()}),
            json!({"title": "value", "value": markdown_escape(&alert.value)}),
            json!({"title": "severity", "value": alert.severity}),
        ];
        for (k, v) in &alert.group {
            facts
                .push(json!({"title": markdown_escape(k), "value": cut(&markdown_escape(v), 500)}));
        }
        body.push(json!({"type": "TextBlock", "wrap": true, "text": cut(&markdown_escape(&alert.message), 2000)}));
        body.push(json!({"type": "FactSet", "facts": facts}));
    }
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    });
    if let Some(link) = notification.alerts.first().and_then(|a| a.link.clone()) {
        card["actions"] =
            json!([{"type": "Action.OpenUrl", "title": "Open the query", "url": link}]);
    }
    json!({
        "type": "message",
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": card}],
    })
}

/// PagerDuty Events API v2: trigger or resolve, deduplicated per monitor and group.
fn pagerduty(channel: &ChannelSpec, notification: &Notification, alert: &Alert) -> Value {
    let severity = match alert.severity.as_str() {
        "critical" => "critical",
        "info" => "info",
        _ => "warning",
    };
    let mut event = json!({
        "routing_key": channel.secret.clone().unwrap_or_default(),
        "event_action": if alert.status == Status::Firing { "trigger" } else { "resolve" },
        "dedup_key": alert.key,
    });
    if alert.status == Status::Firing {
        event["payload"] = json!({
            "summary": cut(&alert.title, 1024),
            "source": "kubetrail",
            "severity": severity,
            "timestamp": rfc3339::format(notification.at),
            "component": notification.monitor,
            "custom_details": {
                "message": alert.message,
                "group": alert.group,
                "value": alert.value,
                "threshold": alert.threshold,
                "query": notification.query,
                "samples": alert.samples,
            },
        });
        if let Some(link) = &alert.link {
            event["links"] = json!([{"href": link, "text": "Open the query"}]);
        }
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Source;

    fn notification(user: &str) -> Notification {
        Notification {
            id: "n1".into(),
            monitor: "forbidden-spike".into(),
            description: String::new(),
            query: "code:403 | stats count() by user".into(),
            at: 1_772_438_460_000_000,
            alerts: vec![Alert {
                group: BTreeMap::from([("user".to_owned(), user.to_owned())]),
                status: Status::Firing,
                level: Some("alert".into()),
                severity: "warning".into(),
                value: "184".into(),
                threshold: Some("100".into()),
                title: format!("{user} got 184 403s"),
                message: format!("{user} got 184 403s in 5m"),
                starts_at: 1_772_438_460_000_000,
                ends_at: None,
                key: "forbidden-spike/abc".into(),
                samples: vec![],
                link: Some("http://kubetrail.example/explore?q=x".into()),
            }],
            external_url: None,
        }
    }

    fn channel(kind: ChannelKind) -> ChannelSpec {
        ChannelSpec {
            name: "c".into(),
            kind,
            target: "http://127.0.0.1:1/hook".into(),
            secret: Some("s3cret".into()),
            source: Source {
                file: None,
                line: 1,
            },
        }
    }

    fn body(request: &Request) -> Value {
        match request {
            Request::Post { body, .. } => serde_json::from_slice(body).unwrap(),
            Request::Append { line, .. } => serde_json::from_slice(line).unwrap(),
        }
    }

    #[test]
    fn slack_pings_no_one_and_links_nothing_from_audit_data() {
        let n = notification("<!channel> <@U1> <http://evil|click>");
        let text =
            serde_json::to_string(&body(&requests(&channel(ChannelKind::Slack), &n)[0])).unwrap();
        assert!(!text.contains("<!channel>"), "{text}");
        assert!(!text.contains("<http://evil"), "{text}");
        assert!(text.contains("&lt;!channel&gt;"), "{text}");
        let long = notification(&"x".repeat(10_000));
        let slack = body(&requests(&channel(ChannelKind::Slack), &long)[0]);
        for block in slack["blocks"].as_array().unwrap() {
            if let Some(t) = block["text"]["text"].as_str() {
                assert!(t.chars().count() <= 3000);
            }
        }
    }

    #[test]
    fn webhook_payloads_are_alertmanager_shaped_and_signed() {
        let n = notification("alice");
        let requests = requests(&channel(ChannelKind::Webhook), &n);
        let Request::Post {
            headers, body: raw, ..
        } = &requests[0]
        else {
            panic!()
        };
        let signature = headers
            .iter()
            .find(|(k, _)| k == "X-Kubetrail-Signature")
            .unwrap();
        assert_eq!(signature.1, sign("s3cret", raw));
        let body = body(&requests[0]);
        assert_eq!(body["version"], "4");
        assert_eq!(body["status"], "firing");
        assert_eq!(body["alerts"][0]["labels"]["user"], "alice");
        assert_eq!(body["alerts"][0]["labels"]["alertname"], "forbidden-spike");
        assert_eq!(body["alerts"][0]["annotations"]["value"], "184");
    }

    #[test]
    fn alertmanager_pagerduty_and_teams_shapes() {
        let mut n = notification("alice");
        let am = requests(&channel(ChannelKind::Alertmanager), &n);
        let Request::Post { url, .. } = &am[0] else {
            panic!()
        };
        assert_eq!(url, "http://127.0.0.1:1/hook/api/v2/alerts");
        assert_eq!(body(&am[0])[0]["endsAt"], "2026-03-02T08:06:00Z");
        let pd = body(&requests(&channel(ChannelKind::PagerDuty), &n)[0]);
        assert_eq!(pd["event_action"], "trigger");
        assert_eq!(pd["dedup_key"], "forbidden-spike/abc");
        assert_eq!(pd["routing_key"], "s3cret");
        n.alerts[0].status = Status::Resolved;
        let pd = body(&requests(&channel(ChannelKind::PagerDuty), &n)[0]);
        assert_eq!(pd["event_action"], "resolve");
        assert!(pd.get("payload").is_none());
        let evil = notification("[click](http://evil) **boss**");
        let teams = serde_json::to_string(&body(&requests(&channel(ChannelKind::Teams), &evil)[0]))
            .unwrap();
        assert!(teams.contains("AdaptiveCard"));
        assert!(!teams.contains("[click](http://evil)"), "{teams}");
    }
}
