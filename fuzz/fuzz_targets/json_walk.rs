//! Fuzzes the walks over untrusted JSON that replace recursion in kubetrail
//! (`kubetrail_event::json`): on any input they must not crash, and on valid JSON they must
//! agree with a tree built by serde_json (which validates too, and recurses: only shallow
//! inputs are compared). Redaction, which edits bodies through the same tokens, must leave
//! valid JSON behind.
#![no_main]

use std::borrow::Cow;

use kubetrail_event::json::{Tokens, nesting_depth, values_at_path};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// `values_at_path` as a recursive walk over a serde_json tree: the reference.
fn tree_values(value: &Value, path: &[&str], out: &mut Vec<String>) {
    match (value, path.split_first()) {
        (Value::Array(items), _) => items.iter().for_each(|v| tree_values(v, path, out)),
        (Value::Object(map), Some((key, rest))) => {
            if let Some(child) = map.get(*key) {
                tree_values(child, rest, out);
            }
        }
        (Value::String(s), None) => out.push(s.clone()),
        (Value::Null, None) => {}
        (Value::Object(_), None) => out.push("{}".to_owned()),
        (other, None) => out.push(other.to_string()),
        _ => {}
    }
}

fn tree_depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(tree_depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(tree_depth).max().unwrap_or(0),
        _ => 0,
    }
}

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    // Any input: no panic, no endless loop.
    let _ = Tokens::new(text).count();
    let depth = nesting_depth(text.as_bytes());
    let path: Vec<&str> = text
        .get(..text.len().min(12))
        .unwrap_or("")
        .split('.')
        .collect();
    let walked = values_at_path(text, &path);
    // Valid, shallow JSON: the walks agree with a tree.
    let Ok(tree) = serde_json::from_str::<Value>(text) else {
        return;
    };
    // serde_json keeps the last of duplicate keys; the walks see them all (a dropped
    // duplicate may also be the deepest branch).
    if has_duplicate_keys(text) {
        return;
    }
    assert_eq!(depth, tree_depth(&tree), "depth of {text}");
    let mut expected = Vec::new();
    tree_values(&tree, &path, &mut expected);
    let walked: Vec<String> = walked.into_iter().map(Cow::into_owned).collect();
    assert_eq!(
        normalize(walked),
        normalize(expected),
        "values at {path:?} of {text}"
    );
});

/// Values as compared: numbers as serde_json prints them, objects as a marker (the walk gives
/// their text, the tree its own serialization).
fn normalize(values: Vec<String>) -> Vec<String> {
    values
        .into_iter()
        .map(|v| match serde_json::from_str::<Value>(&v) {
            Ok(n @ Value::Number(_)) => n.to_string(),
            Ok(Value::Object(_)) => "{object}".to_owned(),
            _ => v,
        })
        .collect()
}

/// Whether an object of the text repeats a key.
fn has_duplicate_keys(text: &str) -> bool {
    use kubetrail_event::json::TokenKind;
    let mut open: Vec<std::collections::HashSet<String>> = Vec::new();
    for token in Tokens::new(text) {
        match token.kind {
            TokenKind::ObjectStart | TokenKind::ArrayStart => open.push(Default::default()),
            TokenKind::ObjectEnd | TokenKind::ArrayEnd => {
                open.pop();
            }
            TokenKind::Key => {
                let key = kubetrail_event::json::unescape(&text[token.span]).into_owned();
                if let Some(keys) = open.last_mut()
                    && !keys.insert(key)
                {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}
