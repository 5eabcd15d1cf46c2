//! JSON walked without recursion, at any depth.
//!
//! kube-apiserver records a request body as `requestObject` once it parses as JSON, and Go's
//! parser accepts 10,000 levels of nesting; a log file can hold anything. A recursive walk over
//! such a body overflows the thread's stack and aborts the whole process (a stack overflow
//! cannot be caught), so everything in kubetrail that looks inside JSON it did not write goes
//! through this module: the nesting depth ([`nesting_depth`]), the values at a path
//! ([`values_at_path`]), and a token stream with byte spans ([`Tokens`]) on which redaction
//! and the policy's `managedFields` removal edit bodies in place. Each keeps its open
//! containers on a heap-allocated stack whose size is bounded by the input's length.
//!
//! These walks expect JSON that was already validated (the decoder validates every document):
//! on malformed input they never panic or loop, but what they return is unspecified.

use std::borrow::Cow;
use std::ops::Range;

use memchr::{memchr2, memchr2_iter};

/// Whether `bytes` nests objects and arrays more than `limit` levels deep.
///
/// A text cannot nest deeper than it has opening brackets, and counting those is a SIMD
/// search; only texts with more than `limit` of them are walked.
pub fn nests_deeper_than(bytes: &[u8], limit: usize) -> bool {
    memchr2_iter(b'{', b'[', bytes).nth(limit).is_some() && nesting_depth(bytes) > limit
}

/// The deepest nesting of objects and arrays in a JSON text (`{}` is 1, `{"a":[]}` is 2);
/// brackets inside strings do not count.
pub fn nesting_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest, mut pos) = (0usize, 0usize, 0usize);
    while pos < bytes.len() {
        match bytes[pos] {
            b'"' => {
                pos = string_end(bytes, pos);
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        pos += 1;
    }
    deepest
}

/// The outermost objects and arrays that start deeper than `limit` levels: each is a complete
/// value, and none contains another.
pub(crate) fn deep_regions(bytes: &[u8], limit: usize) -> Vec<Range<usize>> {
    let mut regions = Vec::new();
    let (mut depth, mut pos, mut start) = (0usize, 0usize, 0usize);
    while pos < bytes.len() {
        match bytes[pos] {
            b'"' => {
                pos = string_end(bytes, pos);
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth == limit + 1 {
                    start = pos;
                }
            }
            b'}' | b']' if depth > 0 => {
                if depth == limit + 1 {
                    regions.push(start..pos + 1);
                }
                depth -= 1;
            }
            _ => {}
        }
        pos += 1;
    }
    if depth > limit {
        regions.push(start..bytes.len());
    }
    regions
}

/// A copy of `text` in which each region (a complete value, see [`deep_regions`]) is replaced
/// by the number `0` padded with spaces to the same length: still valid JSON, and every byte
/// outside the regions stays at its offset, so a span found in the copy is the same span of
/// the original.
pub(crate) fn mask(text: &str, regions: &[Range<usize>]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for region in regions {
        if let Some(value) = bytes.get_mut(region.clone())
            && let Some((first, rest)) = value.split_first_mut()
        {
            *first = b'0';
            rest.fill(b' ');
        }
    }
    // Regions start and end at ASCII brackets (or the end), so whole characters were replaced.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The index just past the string that starts at `start` (a `"`), or the end of the text when
/// it never closes.
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut pos = start + 1;
    while pos < bytes.len() {
        match memchr2(b'"', b'\\', &bytes[pos..]) {
            None => break,
            Some(i) if bytes[pos + i] == b'\\' => pos += i + 2,
            Some(i) => return pos + i + 1,
        }
    }
    bytes.len()
}

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// `{`
    ObjectStart,
    /// `}`
    ObjectEnd,
    /// `[`
    ArrayStart,
    /// `]`
    ArrayEnd,
    /// An object's key, quotes included in the span.
    Key,
    /// A string value, quotes included in the span.
    String,
    /// A number, `true`, `false` or `null`.
    Scalar,
}

/// A token and where it is in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// What it is.
    pub kind: TokenKind,
    /// Its bytes in the text.
    pub span: Range<usize>,
}

/// The tokens of a JSON text, in order, with keys told from string values. Commas, colons and
/// whitespace are not tokens.
pub struct Tokens<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// For each open container, whether it is an object.
    open: Vec<bool>,
    /// The next string is a key (just after `{` or a comma inside an object).
    key_next: bool,
}

impl<'a> Tokens<'a> {
    /// The tokens of `text`.
    pub fn new(text: &'a str) -> Self {
        Tokens {
            bytes: text.as_bytes(),
            pos: 0,
            open: Vec::new(),
            key_next: false,
        }
    }

    /// How many containers are open.
    pub fn depth(&self) -> usize {
        self.open.len()
    }

    /// Whether the innermost open container is an object.
    pub fn in_object(&self) -> bool {
        self.open.last() == Some(&true)
    }

    /// Right after an `ObjectStart` or `ArrayStart` token: moves past the end of that
    /// container without producing its tokens, and returns the index just past its end.
    pub fn skip_container(&mut self) -> usize {
        let mut depth = 1usize;
        while self.pos < self.bytes.len() {
            match self.bytes[self.pos] {
                b'"' => {
                    self.pos = string_end(self.bytes, self.pos);
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        self.pos += 1;
                        break;
                    }
                }
                _ => {}
            }
            self.pos += 1;
        }
        self.open.pop();
        self.key_next = false;
        self.pos
    }
}

impl Iterator for Tokens<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        loop {
            let &byte = self.bytes.get(self.pos)?;
            let start = self.pos;
            let kind = match byte {
                b' ' | b'\t' | b'\n' | b'\r' => {
                    self.pos += 1;
                    continue;
                }
                b',' => {
                    self.key_next = self.in_object();
                    self.pos += 1;
                    continue;
                }
                b':' => {
                    self.key_next = false;
                    self.pos += 1;
                    continue;
                }
                b'{' => {
                    self.open.push(true);
                    self.key_next = true;
                    self.pos += 1;
                    TokenKind::ObjectStart
                }
                b'[' => {
                    self.open.push(false);
                    self.key_next = false;
                    self.pos += 1;
                    TokenKind::ArrayStart
                }
                b'}' | b']' => {
                    self.open.pop();
                    self.key_next = false;
                    self.pos += 1;
                    if byte == b'}' {
                        TokenKind::ObjectEnd
                    } else {
                        TokenKind::ArrayEnd
                    }
                }
                b'"' => {
                    self.pos = string_end(self.bytes, self.pos);
                    if std::mem::take(&mut self.key_next) && self.in_object() {
                        TokenKind::Key
                    } else {
                        TokenKind::String
                    }
                }
                _ => {
                    let len = self.bytes[self.pos..]
                        .iter()
                        .position(|b| b" \t\n\r,:]}[{\"".contains(b))
                        .unwrap_or(self.bytes.len() - self.pos);
                    self.pos += len.max(1);
                    TokenKind::Scalar
                }
            };
            return Some(Token {
                kind,
                span: start..self.pos,
            });
        }
    }
}

/// The text of a JSON string (its span with the quotes), unescaped; borrowed when it has no
/// escapes.
pub fn unescape(quoted: &str) -> Cow<'_, str> {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(quoted);
    if !inner.contains('\\') {
        return Cow::Borrowed(inner);
    }
    match serde_json::from_str::<String>(quoted) {
        Ok(text) => Cow::Owned(text),
        Err(_) => Cow::Borrowed(inner),
    }
}

/// Whether an object in the JSON `text` may have a member named `key`: false only when it
/// certainly has none, because `"key"` appears nowhere and no `\u` escape spells one of the
/// key's characters (a key may be written escaped). A scan of the bytes, far cheaper than a
/// walk: what lets a search skip walking a body for a field it does not hold. Keys with
/// other than ASCII letters and digits are always "may".
pub fn may_have_key(text: &str, key: &str) -> bool {
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return true;
    }
    let bytes = text.as_bytes();
    let quoted_at =
        |at: usize| at > 0 && bytes[at - 1] == b'"' && bytes.get(at + key.len()) == Some(&b'"');
    if memchr::memmem::find_iter(bytes, key.as_bytes()).any(quoted_at) {
        return true;
    }
    memchr::memmem::find_iter(bytes, b"\\u").any(|at| {
        text.get(at + 2..at + 6)
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .and_then(char::from_u32)
            .is_some_and(|c| key.contains(c))
    })
}

/// The values found at a dotted `path` in a JSON text, searching every element of the arrays
/// on the way (`spec.containers.image` looks in each container): strings unescaped, numbers
/// and booleans as written, objects as their JSON text; `null` is no value. An empty path is
/// the text itself (its values, if it is an array).
pub fn values_at_path<'t, S: AsRef<str>>(text: &'t str, path: &[S]) -> Vec<Cow<'t, str>> {
    let mut found = Vec::new();
    let mut tokens = Tokens::new(text);
    // For each open container walked into: how many steps of the path its values have
    // matched (arrays pass their own count to their elements).
    let mut matched: Vec<usize> = Vec::new();
    // The count of the value after the key just read, None when the key is off the path.
    let mut after_key: Option<usize> = None;
    loop {
        // Whose value the next token is: the root's, an object member's or an array element's.
        let (at_root, in_object) = (tokens.depth() == 0, tokens.in_object());
        let Some(token) = tokens.next() else { break };
        let here = match token.kind {
            TokenKind::Key => {
                after_key = matched
                    .last()
                    .copied()
                    .filter(|m| {
                        path.get(*m).is_some_and(|step| {
                            unescape(&text[token.span.clone()]) == step.as_ref()
                        })
                    })
                    .map(|m| m + 1);
                continue;
            }
            TokenKind::ObjectEnd | TokenKind::ArrayEnd => {
                matched.pop();
                continue;
            }
            _ if at_root => Some(0),
            _ if in_object => after_key.take(),
            _ => matched.last().copied(),
        };
        let complete = here == Some(path.len());
        match token.kind {
            TokenKind::ObjectStart if complete => {
                let end = tokens.skip_container();
                found.push(Cow::Borrowed(&text[token.span.start..end]));
            }
            TokenKind::ObjectStart | TokenKind::ArrayStart => match here {
                Some(m) => matched.push(m),
                None => {
                    tokens.skip_container();
                }
            },
            TokenKind::String if complete => found.push(unescape(&text[token.span])),
            TokenKind::Scalar if complete && &text[token.span.clone()] != "null" => {
                found.push(Cow::Borrowed(&text[token.span]));
            }
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deep(levels: usize) -> String {
        format!("{}{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn a_key_is_ruled_out_only_when_no_spelling_of_it_can_be_there() {
        let body = r#"{"spec":{"hostPID":true,"note":"a \u003c b"}}"#;
        assert!(may_have_key(body, "hostPID"));
        assert!(!may_have_key(body, "hostIPC"));
        // Written as a value, not a key: still "may" (cheap and safe).
        assert!(may_have_key(r#"{"a":"hostIPC"}"#, "hostIPC"));
        // Spelled with an escape: a walk decodes it, so the scan must not rule it out.
        let escaped = r#"{"spec":{"host\u0049PC":true}}"#;
        assert!(may_have_key(escaped, "hostIPC"));
        assert_eq!(values_at_path(escaped, &["spec", "hostIPC"]), vec!["true"]);
        // An escape of a character the key lacks rules nothing in.
        assert!(!may_have_key(r#"{"x":"\u0026"}"#, "hostIPC"));
        // Part of a longer key is not the key.
        assert!(!may_have_key(r#"{"hostIPCs":1,"xhostIPC":2}"#, "hostIPC"));
        assert!(may_have_key("{}", "host-path"));
    }

    #[test]
    fn depth_is_counted_outside_strings_and_without_recursion() {
        assert_eq!(nesting_depth(b"1"), 0);
        assert_eq!(nesting_depth(b"{}"), 1);
        assert_eq!(nesting_depth(br#"{"a":[{"b":"[[[[\"]]"}]}"#), 3);
        assert_eq!(nesting_depth(deep(1_000_000).as_bytes()), 1_000_000);
        assert!(!nests_deeper_than(br#"{"a":[1,{"b":2}]}"#, 3));
        assert!(nests_deeper_than(br#"{"a":[1,{"b":[2]}]}"#, 3));
        // Many brackets side by side are not depth.
        let wide = format!("[{}0]", "[],".repeat(10_000));
        assert!(!nests_deeper_than(wide.as_bytes(), 2));
    }

    #[test]
    fn masking_keeps_offsets_and_makes_shallow_valid_json() {
        let text = format!(r#"{{"a":{},"b":"x","c":[[1],[2,"]"]]}}"#, deep(50));
        let regions = deep_regions(text.as_bytes(), 2);
        let masked = mask(&text, &regions);
        assert_eq!(masked.len(), text.len());
        assert_eq!(nesting_depth(masked.as_bytes()), 2);
        let value: serde_json::Value = serde_json::from_str(&masked).unwrap();
        assert_eq!(value["b"], "x");
        assert_eq!(value["a"], serde_json::json!([0]));
        for (i, (a, b)) in text.bytes().zip(masked.bytes()).enumerate() {
            if !regions.iter().any(|r| r.contains(&i)) {
                assert_eq!(a, b, "byte {i}");
            }
        }
    }

    #[test]
    fn tokens_tell_keys_from_values() {
        let text = r#"{"k":"v","a":[1,"s",{"x":null}],"e":{}}"#;
        let kinds: Vec<(TokenKind, &str)> =
            Tokens::new(text).map(|t| (t.kind, &text[t.span])).collect();
        use TokenKind::*;
        assert_eq!(
            kinds,
            [
                (ObjectStart, "{"),
                (Key, "\"k\""),
                (String, "\"v\""),
                (Key, "\"a\""),
                (ArrayStart, "["),
                (Scalar, "1"),
                (String, "\"s\""),
                (ObjectStart, "{"),
                (Key, "\"x\""),
                (Scalar, "null"),
                (ObjectEnd, "}"),
                (ArrayEnd, "]"),
                (Key, "\"e\""),
                (ObjectStart, "{"),
                (ObjectEnd, "}"),
                (ObjectEnd, "}"),
            ]
        );
    }

    fn at(text: &str, path: &str) -> Vec<String> {
        let steps: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
        values_at_path(text, &steps)
            .into_iter()
            .map(Cow::into_owned)
            .collect()
    }

    #[test]
    fn values_at_a_path_search_arrays_element_wise() {
        let pod = r#"{"spec":{"containers":[{"image":"nginx","securityContext":{"privileged":true}},{"image":"busy\"box","ports":[{"containerPort":80},{"containerPort":443}]}],"replicas":3,"x":null},"items":[[{"a":1}],{"a":2}]}"#;
        assert_eq!(at(pod, "spec.containers.image"), ["nginx", "busy\"box"]);
        assert_eq!(
            at(pod, "spec.containers.securityContext.privileged"),
            ["true"]
        );
        assert_eq!(
            at(pod, "spec.containers.ports.containerPort"),
            ["80", "443"]
        );
        assert_eq!(at(pod, "spec.replicas"), ["3"]);
        assert!(at(pod, "spec.x").is_empty());
        assert!(at(pod, "spec.nothing").is_empty());
        assert_eq!(at(pod, "items.a"), ["1", "2"]);
        assert_eq!(
            at(pod, "spec.containers.securityContext"),
            [r#"{"privileged":true}"#]
        );
        assert_eq!(at(r#"["a",["b"]]"#, ""), ["a", "b"]);
        assert_eq!(at(r#""top""#, ""), ["top"]);
    }

    #[test]
    fn values_at_a_path_agree_with_a_tree_walk_at_any_depth() {
        let body = format!(
            r#"{{"spec":{{"deep":{},"image":"a"}},"list":[{{"spec":{{"image":"b"}}}}]}}"#,
            deep(200_000)
        );
        assert_eq!(at(&body, "spec.image"), ["a"]);
        assert_eq!(at(&body, "list.spec.image"), ["b"]);
        let mut nested = String::new();
        for _ in 0..100_000 {
            nested.push_str(r#"{"a":"#);
        }
        nested.push_str("\"bottom\"");
        nested.push_str(&"}".repeat(100_000));
        let path = vec!["a"; 100_000];
        assert_eq!(values_at_path(&nested, &path), ["bottom"]);
    }
}
