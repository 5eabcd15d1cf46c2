//! Writes a normalized event as one compact line of `audit.k8s.io/v1` JSON.
//!
//! Fields come in the order kube-apiserver writes them and empty fields are left out as it
//! does, so output looks like what the API server would have written had it been v1.
//! `requestObject`, `responseObject`, `responseStatus.details` and unknown fields are copied
//! from their raw text; only whitespace outside strings is removed when the input was
//! pretty-printed, so values never drift. Derived fields are written, on request, under the
//! `_kubetrail` key, which the decoder drops when it reads such output back.

use crate::derived::Derived;
use crate::model::{AuditEvent, RawJson, UserInfo};
use crate::time::Timestamp;
use crate::wire::DERIVED_KEY;

/// What to write besides the event.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonOptions {
    /// Add the derived fields (and the declared source apiVersion) under `_kubetrail`.
    pub derived: bool,
}

/// Appends `event` to `out` as one line of JSON, newline included.
pub fn write_event_json(event: &AuditEvent<'_>, options: JsonOptions, out: &mut Vec<u8>) {
    let mut w = ObjectWriter::new(out);
    w.key("kind");
    w.out.extend_from_slice(b"\"Event\"");
    w.key("apiVersion");
    w.out.extend_from_slice(b"\"audit.k8s.io/v1\"");
    w.str_field("level", event.level.as_str());
    w.str_field("auditID", &event.audit_id);
    w.str_field("stage", event.stage.as_str());
    w.str_field("requestURI", &event.request_uri);
    w.str_field("verb", &event.verb);
    w.key("user");
    write_user(&event.user, w.out);
    if let Some(user) = &event.impersonated_user {
        w.key("impersonatedUser");
        write_user(user, w.out);
    }
    if let Some(meta) = &event.authentication_metadata {
        w.key("authenticationMetadata");
        let mut m = ObjectWriter::new(w.out);
        m.opt_str_field("impersonationConstraint", &meta.impersonation_constraint);
        m.end();
    }
    if !event.source_ips.is_empty() {
        w.key("sourceIPs");
        write_str_array(&event.source_ips, w.out);
    }
    if let Some(ua) = &event.user_agent {
        w.str_field("userAgent", ua);
    }
    if let Some(r) = &event.object_ref {
        w.key("objectRef");
        let mut o = ObjectWriter::new(w.out);
        o.opt_str_field("resource", &r.resource);
        o.opt_str_field("namespace", &r.namespace);
        o.opt_str_field("name", &r.name);
        o.opt_str_field("uid", &r.uid);
        o.opt_str_field("apiGroup", &r.api_group);
        o.opt_str_field("apiVersion", &r.api_version);
        o.opt_str_field("resourceVersion", &r.resource_version);
        o.opt_str_field("subresource", &r.subresource);
        o.end();
    }
    if let Some(s) = &event.response_status {
        w.key("responseStatus");
        let mut o = ObjectWriter::new(w.out);
        o.key("metadata");
        o.out.extend_from_slice(b"{}");
        o.opt_str_field("status", &s.status);
        o.opt_str_field("message", &s.message);
        o.opt_str_field("reason", &s.reason);
        if let Some(details) = &s.details {
            o.raw_field("details", details);
        }
        if let Some(code) = s.code {
            o.key("code");
            o.out.extend_from_slice(code.to_string().as_bytes());
        }
        o.end();
    }
    if let Some(body) = &event.request_object {
        w.raw_field("requestObject", body);
    }
    if let Some(body) = &event.response_object {
        w.raw_field("responseObject", body);
    }
    w.time_field("requestReceivedTimestamp", event.request_received_timestamp);
    w.time_field("stageTimestamp", event.stage_timestamp);
    if !event.annotations.is_empty() {
        w.key("annotations");
        let mut o = ObjectWriter::new(w.out);
        for (k, v) in &event.annotations {
            o.str_field(k, v);
        }
        o.end();
    }
    for (k, v) in &event.unknown_fields {
        w.raw_field(k, v);
    }
    if options.derived {
        w.key(DERIVED_KEY);
        write_derived(event, &event.derived, w.out);
    }
    w.end();
    out.push(b'\n');
}

fn write_derived(event: &AuditEvent<'_>, d: &Derived<'_>, out: &mut Vec<u8>) {
    let mut o = ObjectWriter::new(out);
    if let Some(v) = &event.source_api_version {
        o.str_field("sourceApiVersion", v);
    }
    if let Some(latency) = d.latency_micros {
        o.key("latencyMicros");
        o.out.extend_from_slice(latency.to_string().as_bytes());
    }
    o.str_field("effectiveUser", &d.effective_user);
    o.str_field("userKind", d.user_kind.as_str());
    if let Some((ns, name)) = &d.service_account {
        o.str_field("serviceAccountNamespace", ns);
        o.str_field("serviceAccountName", name);
    }
    if let Some(decision) = &d.decision {
        o.str_field("decision", decision);
    }
    if let Some(reason) = &d.authorization_reason {
        o.str_field("authorizationReason", reason);
    }
    if let Some(class) = d.code_class {
        o.str_field("codeClass", &class.to_string());
    }
    o.key("mutating");
    o.out
        .extend_from_slice(if d.mutating { b"true" } else { b"false" });
    o.str_field("path", &d.path);
    if let Some(key) = &d.resource_key {
        o.str_field("resourceKey", key);
    }
    o.str_field("client", &d.client.to_string());
    o.opt_str_field("clientVersion", &d.client.version);
    o.end();
}

fn write_user(user: &UserInfo<'_>, out: &mut Vec<u8>) {
    let mut o = ObjectWriter::new(out);
    o.opt_str_field("username", &user.username);
    o.opt_str_field("uid", &user.uid);
    if !user.groups.is_empty() {
        o.key("groups");
        write_str_array(&user.groups, o.out);
    }
    if !user.extra.is_empty() {
        o.key("extra");
        let mut e = ObjectWriter::new(o.out);
        for (k, values) in &user.extra {
            e.key(k);
            write_str_array(values, e.out);
        }
        e.end();
    }
    o.end();
}

fn write_str_array<S: AsRef<str>>(items: &[S], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_string(item.as_ref(), out);
    }
    out.push(b']');
}

/// Writes the members of one JSON object, handling commas.
struct ObjectWriter<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> ObjectWriter<'o> {
    fn new(out: &'o mut Vec<u8>) -> Self {
        out.push(b'{');
        ObjectWriter { out, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_json_string(key, self.out);
        self.out.push(b':');
    }

    fn str_field(&mut self, key: &str, value: &str) {
        self.key(key);
        write_json_string(value, self.out);
    }

    fn opt_str_field(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            self.str_field(key, value);
        }
    }

    fn raw_field(&mut self, key: &str, value: &RawJson<'_>) {
        self.key(key);
        write_compact(value.as_str(), self.out);
    }

    fn time_field(&mut self, key: &str, value: Option<Timestamp>) {
        self.key(key);
        match value {
            Some(t) => {
                self.out.push(b'"');
                t.write_micro_time(self.out);
                self.out.push(b'"');
            }
            None => self.out.extend_from_slice(b"null"),
        }
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

/// Writes `s` as a JSON string.
pub(crate) fn write_json_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut run_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            // Go's encoder, which the API server uses, escapes these for HTML safety.
            b'<' => b"\\u003c",
            b'>' => b"\\u003e",
            b'&' => b"\\u0026",
            0..=0x1f => b"",
            // U+2028 and U+2029 (E2 80 A8/A9), also escaped by Go.
            0xE2 if bytes.get(i + 1) == Some(&0x80)
                && matches!(bytes.get(i + 2), Some(0xA8 | 0xA9)) =>
            {
                if bytes[i + 2] == 0xA8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                }
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[run_start..i]);
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        run_start = if b == 0xE2 { i + 3 } else { i + 1 };
    }
    out.extend_from_slice(&bytes[run_start..]);
    out.push(b'"');
}

/// Copies JSON text, dropping whitespace outside strings when there is any line break in it.
fn write_compact(raw: &str, out: &mut Vec<u8>) {
    let bytes = raw.as_bytes();
    if memchr::memchr2(b'\n', b'\r', bytes).is_none() {
        out.extend_from_slice(bytes);
        return;
    }
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if b.is_ascii_whitespace() {
            continue;
        }
        out.push(b);
    }
}

#[cfg(test)]
mod tests {
    use super::{write_compact, write_json_string};

    #[test]
    fn strings_are_escaped() {
        let mut out = Vec::new();
        write_json_string("a\"b\\c\nd\u{1}é<&>\u{2028}x", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#""a\"b\\c\nd\u0001é\u003c\u0026\u003e\u2028x""#
        );
    }

    #[test]
    fn pretty_raw_values_are_compacted_outside_strings() {
        let mut out = Vec::new();
        write_compact("{\n  \"a b\": [1, 2],\n  \"c\": \"x\\\" y\"\n}", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a b":[1,2],"c":"x\" y"}"#
        );
    }
}
