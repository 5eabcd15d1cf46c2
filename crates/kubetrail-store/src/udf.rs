//! The `kt_*` SQL functions the query language compiles to (see `kubetrail_query::Dialect`):
//! free text, matching inside list columns, inside the JSON of the stored event, and annotation
//! lookup (the latency functions live in `quantiles.rs`).

use std::borrow::Cow;
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBuilder, ListArray, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use serde_json::Value;

/// Every kubetrail function.
pub fn functions() -> Vec<ScalarUDF> {
    let list = DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
    vec![
        create_udf(
            "kt_contains_text",
            vec![DataType::Utf8, DataType::Utf8],
            DataType::Boolean,
            Volatility::Immutable,
            Arc::new(contains_text),
        ),
        create_udf(
            "kt_list_like",
            vec![list, DataType::Utf8],
            DataType::Boolean,
            Volatility::Immutable,
            Arc::new(list_like),
        ),
        create_udf(
            "kt_json_path_match",
            vec![
                DataType::Utf8,
                DataType::Utf8,
                DataType::Utf8,
                DataType::Boolean,
            ],
            DataType::Boolean,
            Volatility::Immutable,
            Arc::new(json_path_match),
        ),
        create_udf(
            "kt_annotation",
            vec![DataType::Utf8, DataType::Utf8],
            DataType::Utf8,
            Volatility::Immutable,
            Arc::new(annotation),
        ),
        crate::quantiles::latency_top_bound(),
    ]
}

fn arrays(args: &[ColumnarValue]) -> Result<Vec<ArrayRef>> {
    ColumnarValue::values_to_arrays(args)
}

fn strings(array: &ArrayRef) -> Result<&StringArray> {
    array
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| DataFusionError::Execution("expected a text argument".to_owned()))
}

/// A needle of free text, ready to search many texts for it ignoring case.
enum TextNeedle {
    /// An ASCII needle (nearly every search): a SIMD search that folds ASCII case as it goes,
    /// without lowering the text. `ILIKE` lowered every kilobyte-long event first, which was
    /// half the time of a free-text query.
    Ascii(AhoCorasick),
    /// Any other needle, lowercased, sought in the lowercased text.
    Lowered(String),
}

impl TextNeedle {
    fn new(needle: &str) -> Result<TextNeedle> {
        if !needle.is_ascii() {
            return Ok(TextNeedle::Lowered(needle.to_lowercase()));
        }
        AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build([needle])
            .map(TextNeedle::Ascii)
            .map_err(|e| DataFusionError::Execution(format!("kt_contains_text: {e}")))
    }

    fn is_in(&self, text: &str) -> bool {
        match self {
            TextNeedle::Ascii(searcher) => searcher.is_match(text),
            TextNeedle::Lowered(needle) => text.to_lowercase().contains(needle.as_str()),
        }
    }
}

/// `kt_contains_text(text, needle)`: whether the text contains the needle, ignoring case (the
/// query language's free text; NULL for a NULL text). The needle is a parameter, the same for
/// every row.
fn contains_text(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let texts = match &args[0] {
        ColumnarValue::Array(array) => array.clone(),
        ColumnarValue::Scalar(scalar) => scalar.to_array()?,
    };
    let texts = strings(&texts)?;
    let result: BooleanArray = match &args[1] {
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(needle))) => {
            let needle = TextNeedle::new(needle)?;
            texts.iter().map(|t| t.map(|t| needle.is_in(t))).collect()
        }
        other => {
            let needles = other.to_array(texts.len())?;
            let needles = strings(&needles)?;
            texts
                .iter()
                .zip(needles.iter())
                .map(|(text, needle)| match (text, needle) {
                    (Some(text), Some(needle)) => {
                        TextNeedle::new(needle).map(|n| Some(n.is_in(text)))
                    }
                    _ => Ok(None),
                })
                .collect::<Result<_>>()?
        }
    };
    Ok(ColumnarValue::Array(Arc::new(result)))
}

/// `kt_list_like(list, pattern)`: any element matches the LIKE pattern.
fn list_like(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let arrays = arrays(args)?;
    let lists = arrays[0]
        .as_any()
        .downcast_ref::<ListArray>()
        .ok_or_else(|| DataFusionError::Execution("kt_list_like expects a list".to_owned()))?;
    let patterns = strings(&arrays[1])?;
    let result: BooleanArray = (0..lists.len())
        .map(|i| {
            if lists.is_null(i) || patterns.is_null(i) {
                return Some(false);
            }
            let values = lists.value(i);
            let values = values.as_any().downcast_ref::<StringArray>()?;
            let pattern = patterns.value(i);
            Some(
                (0..values.len())
                    .any(|j| !values.is_null(j) && like_match(pattern, values.value(j))),
            )
        })
        .collect();
    Ok(ColumnarValue::Array(Arc::new(result)))
}

/// `kt_json_path_match(json, path, value, wildcard)`.
fn json_path_match(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let arrays = arrays(args)?;
    let documents = strings(&arrays[0])?;
    let paths = strings(&arrays[1])?;
    let values = strings(&arrays[2])?;
    let wildcards = arrays[3]
        .as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| {
            DataFusionError::Execution("kt_json_path_match expects a boolean".to_owned())
        })?;
    let mut result = BooleanBuilder::with_capacity(documents.len());
    for i in 0..documents.len() {
        if documents.is_null(i) {
            result.append_value(false);
            continue;
        }
        let document = documents.value(i);
        let value = values.value(i);
        let wildcard = wildcards.value(i);
        // Most rows cannot match: look for the value's text before parsing JSON.
        let literal = if wildcard {
            value.split('*').max_by_key(|s| s.len()).unwrap_or("")
        } else {
            value
        };
        if literal
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " ._:/-".contains(c))
            && !document.contains(literal)
        {
            result.append_value(false);
            continue;
        }
        let path: Vec<String> = paths.value(i).split('.').map(str::to_owned).collect();
        let matched = serde_json::from_str::<Value>(document).is_ok_and(|json| {
            let mut found: Vec<Cow<'_, str>> = Vec::new();
            kubetrail_query::collect_path(&json, &path, &mut found);
            found.iter().any(|f| {
                if wildcard {
                    kubetrail_query::wildcard_match(value, f)
                } else {
                    f == value
                }
            })
        });
        result.append_value(matched);
    }
    Ok(ColumnarValue::Array(Arc::new(result.finish())))
}

/// `kt_annotation(annotations_json, key)`: the value, or NULL.
fn annotation(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let arrays = arrays(args)?;
    let maps = strings(&arrays[0])?;
    let keys = strings(&arrays[1])?;
    let mut result = StringBuilder::new();
    for i in 0..maps.len() {
        let key = keys.value(i);
        let value = (!maps.is_null(i) && maps.value(i).contains(key))
            .then(|| serde_json::from_str::<serde_json::Map<String, Value>>(maps.value(i)).ok())
            .flatten()
            .and_then(|m| m.get(key).and_then(Value::as_str).map(str::to_owned));
        result.append_option(value);
    }
    Ok(ColumnarValue::Array(Arc::new(result.finish())))
}

/// SQL LIKE as the query compiler writes it: `%` is any run of characters and `\` escapes the
/// next character. Matched segment by segment, in linear time.
fn like_match(pattern: &str, text: &str) -> bool {
    let mut segments = vec![String::new()];
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => segments
                .last_mut()
                .expect("never empty")
                .extend(chars.next()),
            '%' => segments.push(String::new()),
            c => segments.last_mut().expect("never empty").push(c),
        }
    }
    let glob = segments
        .iter()
        .map(|s| s.replace('*', "\u{0}"))
        .collect::<Vec<_>>()
        .join("*");
    kubetrail_query::wildcard_match(&glob, &text.replace('*', "\u{0}"))
}

#[cfg(test)]
mod tests {
    use super::{TextNeedle, like_match};

    #[test]
    fn free_text_ignores_case() {
        let ascii = TextNeedle::new("Debug-Tools").unwrap();
        assert!(ascii.is_in(r#"{"image":"registry/DEBUG-tools:1"}"#));
        assert!(!ascii.is_in(r#"{"image":"registry/debug_tools:1"}"#));
        let unicode = TextNeedle::new("ÉTÉ").unwrap();
        assert!(unicode.is_in("un été chaud"));
        assert!(!unicode.is_in("une ete"));
        assert!(TextNeedle::new("").unwrap().is_in("anything"));
    }

    #[test]
    fn like() {
        assert!(like_match("10.0.%", "10.0.5.9"));
        assert!(!like_match("10.0.%", "192.168.1.1"));
        assert!(like_match("a\\%b", "a%b"));
        assert!(!like_match("a\\%b", "axb"));
        assert!(like_match("%a%b%", "xxaxxbxx"));
        assert!(like_match("a*b%", "a*bc"));
    }
}
