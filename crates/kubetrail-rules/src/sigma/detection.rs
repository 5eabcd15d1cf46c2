//! A Sigma `detection:` converted: each selection (a map of `field|modifier: values`, a list
//! of such maps, or a list of keywords) becomes a search expression, the `condition:` combines
//! them, and the result is written in kubetrail's query language. Every value is checked to
//! mean in kubetrail what it means in Sigma: letter case, wildcards, numbers, and what the
//! query language can write.

use std::collections::BTreeMap;

use kubetrail_query::{CompareOp, Field, FieldKind};
use serde_yaml_ng::Value;

use super::fields::{Case, FieldMapping, map_field};
use super::regex::to_globs;
use super::{Lines, SigmaProblem, SigmaRefusal};

/// The deepest nesting of parentheses and `not` read in a Sigma condition.
pub(crate) const MAX_CONDITION_DEPTH: usize = 32;

/// A pattern over a field's value: literal text and runs of any characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob(Vec<GlobPart>);

/// A part of a [`Glob`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GlobPart {
    /// Text as written.
    Lit(String),
    /// Any run of characters, the empty one included.
    Any,
}

impl Glob {
    /// A pattern of `parts`, with adjacent texts joined and runs of `Any` folded.
    pub(crate) fn new(parts: Vec<GlobPart>) -> Glob {
        let mut out: Vec<GlobPart> = Vec::new();
        for part in parts {
            match (out.last_mut(), part) {
                (_, GlobPart::Lit(text)) if text.is_empty() => {}
                (Some(GlobPart::Any), GlobPart::Any) => {}
                (Some(GlobPart::Lit(last)), GlobPart::Lit(text)) => last.push_str(&text),
                (_, part) => out.push(part),
            }
        }
        Glob(out)
    }

    /// The value, when the pattern has no wildcard.
    pub(crate) fn exact(&self) -> Option<String> {
        let mut text = String::new();
        for part in &self.0 {
            match part {
                GlobPart::Lit(t) => text.push_str(t),
                GlobPart::Any => return None,
            }
        }
        Some(text)
    }

    /// Whether the pattern matches every value.
    pub(crate) fn is_any(&self) -> bool {
        self.0 == [GlobPart::Any]
    }

    /// The pattern as kubetrail writes it (`*` for a run).
    pub(crate) fn to_pattern(&self) -> String {
        self.0
            .iter()
            .map(|p| match p {
                GlobPart::Lit(t) => t.as_str(),
                GlobPart::Any => "*",
            })
            .collect()
    }

    /// The shortest value the pattern matches: its texts, in order.
    pub(crate) fn witness(&self) -> String {
        self.0
            .iter()
            .filter_map(|p| match p {
                GlobPart::Lit(t) => Some(t.as_str()),
                GlobPart::Any => None,
            })
            .collect()
    }

    /// The pattern with `{i}` in place of its first run (or after its text when it has
    /// none): a value that differs between repetitions of a test event.
    pub(crate) fn numbered_witness(&self) -> Option<String> {
        let mut text = String::new();
        let mut numbered = false;
        for part in &self.0 {
            match part {
                GlobPart::Lit(t) => text.push_str(t),
                GlobPart::Any if !numbered => {
                    text.push_str("{i}");
                    numbered = true;
                }
                GlobPart::Any => {}
            }
        }
        numbered.then_some(text)
    }

    fn has_letters(&self) -> bool {
        self.0.iter().any(|p| match p {
            GlobPart::Lit(t) => t.chars().any(|c| c.is_lowercase() || c.is_uppercase()),
            GlobPart::Any => false,
        })
    }

    fn lowercase(&self) -> Glob {
        Glob(
            self.0
                .iter()
                .map(|p| match p {
                    GlobPart::Lit(t) => GlobPart::Lit(t.to_lowercase()),
                    GlobPart::Any => GlobPart::Any,
                })
                .collect(),
        )
    }

    /// Whether `value` matches, ignoring letter case.
    fn matches_ignoring_case(&self, value: &str) -> bool {
        let value = value.to_lowercase();
        let lower = self.lowercase();
        let mut rest = value.as_str();
        let mut floating = false;
        for (index, part) in lower.0.iter().enumerate() {
            let GlobPart::Lit(text) = part else {
                floating = true;
                continue;
            };
            let last = index + 1 == lower.0.len();
            if floating && last {
                return rest.ends_with(text.as_str());
            }
            let found = if floating {
                rest.find(text.as_str())
            } else {
                rest.starts_with(text.as_str()).then_some(0)
            };
            match found {
                Some(i) => rest = &rest[i + text.len()..],
                None => return false,
            }
            floating = false;
        }
        floating || rest.is_empty()
    }

    /// Why kubetrail cannot write this pattern, if it cannot: a wildcard pattern is one bare
    /// word, so its text cannot hold spaces, quotes, parentheses, commas, `|` or a literal `*`.
    fn unwritable(&self) -> Option<String> {
        if self.exact().is_some() || self.is_any() {
            return None;
        }
        for part in &self.0 {
            if let GlobPart::Lit(text) = part
                && let Some(c) = text
                    .chars()
                    .find(|c| c.is_whitespace() || "*()|,\"".contains(*c))
            {
                return Some(format!(
                    "a wildcard pattern holding {c:?}: kubetrail writes patterns as one bare word, which cannot hold spaces, quotes, parentheses, commas, `|` or a literal `*`"
                ));
            }
        }
        None
    }
}

/// A search expression, before it is written in kubetrail's query language.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    /// All hold.
    And(Vec<Node>),
    /// Any holds.
    Or(Vec<Node>),
    /// Does not hold.
    Not(Box<Node>),
    /// A term.
    Term(Term),
}

/// A field of a term: the kubetrail field as written, and the Sigma name it came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldRef {
    /// As written in the condition (`resource`).
    pub(crate) name: String,
    /// Resolved.
    pub(crate) field: Field,
}

/// One search term.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Term {
    /// The field matches the pattern (a value when it has no wildcard).
    Match {
        /// The field.
        field: FieldRef,
        /// The pattern.
        glob: Glob,
    },
    /// The field has a value.
    Exists(FieldRef),
    /// A numeric comparison.
    Compare {
        /// The field.
        field: FieldRef,
        /// The operator.
        op: CompareOp,
        /// The number.
        value: i64,
    },
    /// Free text anywhere in the event, case-insensitive (a Sigma keyword).
    Text(String),
}

impl Node {
    fn and(mut nodes: Vec<Node>) -> Node {
        if nodes.len() == 1 {
            return nodes.remove(0);
        }
        Node::And(
            nodes
                .into_iter()
                .flat_map(|n| match n {
                    Node::And(inner) => inner,
                    other => vec![other],
                })
                .collect(),
        )
    }

    fn or(mut nodes: Vec<Node>) -> Node {
        if nodes.len() == 1 {
            return nodes.remove(0);
        }
        Node::Or(
            nodes
                .into_iter()
                .flat_map(|n| match n {
                    Node::Or(inner) => inner,
                    other => vec![other],
                })
                .collect(),
        )
    }

    /// Whether a term names this field (the rule then decides on the stage itself).
    pub(crate) fn mentions(&self, name: &str) -> bool {
        match self {
            Node::And(all) | Node::Or(all) => all.iter().any(|n| n.mentions(name)),
            Node::Not(inner) => inner.mentions(name),
            Node::Term(
                Term::Match { field, .. } | Term::Exists(field) | Term::Compare { field, .. },
            ) => field.field.display_name() == name,
            Node::Term(Term::Text(_)) => false,
        }
    }

    /// The search in kubetrail's query language.
    pub(crate) fn render(&self) -> String {
        self.render_in(Context::Top)
    }

    fn render_in(&self, context: Context) -> String {
        match self {
            Node::Term(term) => render_term(term),
            Node::Not(inner) => match inner.as_ref() {
                Node::Term(term) => format!("-{}", render_term(term)),
                other => format!("NOT {}", other.render_in(Context::Negated)),
            },
            Node::And(all) => {
                let text = all
                    .iter()
                    .map(|n| n.render_in(Context::InAnd))
                    .collect::<Vec<_>>()
                    .join(" ");
                if context == Context::Top {
                    text
                } else {
                    format!("({text})")
                }
            }
            Node::Or(any) => match value_list(any) {
                Some(list) => list,
                None => {
                    let text = any
                        .iter()
                        .map(|n| n.render_in(Context::InOr))
                        .collect::<Vec<_>>()
                        .join(" OR ");
                    if context == Context::Top {
                        text
                    } else {
                        format!("({text})")
                    }
                }
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Top,
    InAnd,
    InOr,
    Negated,
}

/// `field:(a OR b*)` for alternatives that are all patterns (or all numbers) of one field.
fn value_list(any: &[Node]) -> Option<String> {
    let mut name = None;
    let mut values = Vec::new();
    for node in any {
        let (field, value) = match node {
            Node::Term(Term::Match { field, glob }) if !glob.is_any() => {
                (field, render_value(glob, true))
            }
            Node::Term(Term::Compare {
                field,
                op: CompareOp::Eq,
                value,
            }) => (field, value.to_string()),
            _ => return None,
        };
        if name.is_some_and(|n: &str| n != field.name) {
            return None;
        }
        name = Some(field.name.as_str());
        values.push(value);
    }
    Some(format!("{}:({})", name?, values.join(" OR ")))
}

fn render_term(term: &Term) -> String {
    match term {
        Term::Match { field, glob } => format!("{}:{}", field.name, render_value(glob, false)),
        Term::Exists(field) => format!("{}:*", field.name),
        Term::Compare { field, op, value } => match op {
            CompareOp::Eq => format!("{}:{value}", field.name),
            op => format!("{}{}{value}", field.name, op.as_str()),
        },
        Term::Text(text) => quote(text),
    }
}

/// A value after `field:`: bare when the lexer reads it back as written, else quoted (an
/// exact value; wildcard patterns were checked to be bare words).
fn render_value(glob: &Glob, in_list: bool) -> String {
    match glob.exact() {
        Some(text) => {
            let quoted = text.is_empty()
                || text
                    .chars()
                    .any(|c| c.is_whitespace() || "*()|,\"\\".contains(c))
                || (in_list && matches!(text.as_str(), "OR" | "AND" | "NOT"));
            if quoted { quote(&text) } else { text }
        }
        None => glob.to_pattern(),
    }
}

fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// What converting a detection needs: the user's field mappings and where things are in the
/// file, for problems.
pub(crate) struct Converter<'a> {
    /// Sigma field → kubetrail field, from `--field`.
    pub(crate) extra_fields: &'a [(String, String)],
    /// Lines of the document.
    pub(crate) lines: &'a Lines<'a>,
    /// Problems found.
    pub(crate) problems: Vec<SigmaProblem>,
}

/// The match a field's modifiers ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Equals,
    Contains,
    StartsWith,
    EndsWith,
    Regex,
    Exists,
    Compare(CompareOp),
}

struct Modifiers {
    kind: Kind,
    all: bool,
    cased: bool,
    regex_ignore_case: bool,
}

impl Converter<'_> {
    /// Converts `detection:`; None when a problem was recorded.
    pub(crate) fn detection(&mut self, detection: &Value) -> Option<Node> {
        let base = self.lines.key("detection", 1);
        let Some(map) = detection.as_mapping() else {
            self.refuse(
                base,
                SigmaRefusal::Document("`detection:` is not a mapping".into()),
            );
            return None;
        };
        let mut selections: BTreeMap<String, Option<Node>> = BTreeMap::new();
        let mut condition = None;
        for (key, value) in map {
            let Some(name) = key.as_str() else {
                self.refuse(
                    base,
                    SigmaRefusal::Document("a key of `detection:` is not a string".into()),
                );
                continue;
            };
            let line = self.lines.key(name, base);
            match name {
                "condition" => condition = Some((value, line)),
                "timeframe" => self.refuse(
                    line,
                    SigmaRefusal::Condition {
                        condition: "timeframe".into(),
                        why: "`timeframe` belongs to Sigma v1 aggregations; write a correlation rule (event_count, value_count)".into(),
                    },
                ),
                _ => {
                    let node = self.selection(name, value, line);
                    selections.insert(name.to_owned(), node);
                }
            }
        }
        let Some((condition, line)) = condition else {
            self.refuse(
                base,
                SigmaRefusal::Document("`detection:` has no `condition:`".into()),
            );
            return None;
        };
        let texts: Vec<&str> = match condition {
            Value::String(text) => vec![text.as_str()],
            Value::Sequence(items) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if texts.is_empty() {
            self.refuse(
                line,
                SigmaRefusal::Document("`condition:` is not a string or a list of strings".into()),
            );
            return None;
        }
        let mut alternatives = Vec::new();
        for text in texts {
            match parse_condition(text, &selections) {
                Ok(Some(node)) => alternatives.push(node),
                Ok(None) => {}
                Err(why) => self.refuse(
                    line,
                    SigmaRefusal::Condition {
                        condition: text.to_owned(),
                        why,
                    },
                ),
            }
        }
        if !self.problems.is_empty() {
            return None;
        }
        Some(Node::or(alternatives))
    }

    fn refuse(&mut self, line: usize, refusal: SigmaRefusal) {
        self.problems.push(SigmaProblem { line, refusal });
    }

    /// One selection: a map (all items hold), a list of maps (any holds) or keywords.
    fn selection(&mut self, name: &str, value: &Value, line: usize) -> Option<Node> {
        match value {
            Value::Mapping(_) => self.selection_map(value, line),
            Value::Sequence(items) if items.iter().all(Value::is_mapping) && !items.is_empty() => {
                let nodes: Vec<Option<Node>> = items
                    .iter()
                    .map(|item| self.selection_map(item, line))
                    .collect();
                nodes.into_iter().collect::<Option<Vec<_>>>().map(Node::or)
            }
            Value::Sequence(items) if !items.is_empty() && items.iter().all(is_scalar) => {
                let nodes: Vec<Option<Node>> =
                    items.iter().map(|item| self.keyword(item, line)).collect();
                nodes.into_iter().collect::<Option<Vec<_>>>().map(Node::or)
            }
            Value::String(_) | Value::Number(_) => self.keyword(value, line),
            _ => {
                self.refuse(
                    line,
                    SigmaRefusal::Document(format!(
                        "the selection `{name}` is not a map, a list of maps or a list of keywords"
                    )),
                );
                None
            }
        }
    }

    fn selection_map(&mut self, value: &Value, line: usize) -> Option<Node> {
        let map = value.as_mapping()?;
        if map.is_empty() {
            self.refuse(line, SigmaRefusal::Document("an empty selection".into()));
            return None;
        }
        let mut nodes = Vec::new();
        let mut failed = false;
        for (key, values) in map {
            let Some(key) = key.as_str() else {
                self.refuse(
                    line,
                    SigmaRefusal::Document("a field name that is not a string".into()),
                );
                failed = true;
                continue;
            };
            let item_line = self.lines.key(key, line);
            match self.item(key, values) {
                Ok(node) => nodes.push(node),
                Err(refusal) => {
                    self.refuse(item_line, refusal);
                    failed = true;
                }
            }
        }
        (!failed).then(|| Node::and(nodes))
    }

    /// A keyword: free text anywhere in the event, which kubetrail matches case-insensitively
    /// in the event's JSON text, as Sigma matches keywords.
    fn keyword(&mut self, value: &Value, line: usize) -> Option<Node> {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                self.refuse(
                    line,
                    SigmaRefusal::Document("a keyword that is not a string".into()),
                );
                return None;
            }
        };
        let trimmed = text.trim_matches('*');
        let why = if trimmed.is_empty() {
            Some("an empty keyword matches every event".to_owned())
        } else if let Some(c) = trimmed.chars().find(|c| matches!(c, '*' | '?')) {
            Some(format!(
                "the wildcard `{c}` inside a keyword: kubetrail finds free text, not patterns"
            ))
        } else {
            trimmed
                .chars()
                .find(|c| matches!(c, '"' | '\\' | '<' | '>' | '&') || c.is_control())
                .map(|c| {
                    format!(
                        "{c:?} in a keyword: free text is found in the event's JSON text, where it is written escaped"
                    )
                })
        };
        match why {
            Some(why) => {
                self.refuse(
                    line,
                    SigmaRefusal::Value {
                        field: "keywords".into(),
                        why: format!("{text:?}: {why}"),
                    },
                );
                None
            }
            None => Some(Node::Term(Term::Text(trimmed.to_owned()))),
        }
    }

    /// One `field|modifiers: values` item.
    fn item(&self, key: &str, values: &Value) -> Result<Node, SigmaRefusal> {
        let mut parts = key.split('|');
        let name = parts.next().unwrap_or_default();
        if name.is_empty() {
            return Err(SigmaRefusal::Document(format!(
                "`{key}`: keywords with modifiers are not supported"
            )));
        }
        let modifiers = modifiers(parts)?;
        let mapping = map_field(name, self.extra_fields).map_err(|hint| SigmaRefusal::Field {
            field: name.to_owned(),
            hint,
        })?;
        let list: Vec<&Value> = match values {
            Value::Sequence(items) => items.iter().collect(),
            other => vec![other],
        };
        if list.is_empty() {
            return Err(SigmaRefusal::Value {
                field: key.to_owned(),
                why: "an empty list of values".into(),
            });
        }
        let nodes = list
            .into_iter()
            .map(|value| value_node(key, &mapping, &modifiers, value))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(if modifiers.all {
            Node::and(nodes)
        } else {
            Node::or(nodes)
        })
    }
}

fn is_scalar(value: &Value) -> bool {
    matches!(value, Value::String(_) | Value::Number(_))
}

fn modifiers<'k>(names: impl Iterator<Item = &'k str>) -> Result<Modifiers, SigmaRefusal> {
    let mut out = Modifiers {
        kind: Kind::Equals,
        all: false,
        cased: false,
        regex_ignore_case: false,
    };
    for name in names {
        let kind = match name {
            "contains" => Kind::Contains,
            "startswith" => Kind::StartsWith,
            "endswith" => Kind::EndsWith,
            "re" => Kind::Regex,
            "exists" => Kind::Exists,
            "gt" => Kind::Compare(CompareOp::Gt),
            "gte" => Kind::Compare(CompareOp::Ge),
            "lt" => Kind::Compare(CompareOp::Lt),
            "lte" => Kind::Compare(CompareOp::Le),
            "all" => {
                out.all = true;
                continue;
            }
            "cased" => {
                out.cased = true;
                continue;
            }
            "i" | "m" | "s" if out.kind != Kind::Regex => {
                return Err(modifier(
                    name,
                    "a regular-expression flag without `re` before it",
                ));
            }
            "i" => {
                out.regex_ignore_case = true;
                continue;
            }
            "s" => continue,
            "m" => {
                return Err(modifier(
                    "m",
                    "multi-line regular expressions: `^` and `$` would match at every line of the value",
                ));
            }
            "base64" | "base64offset" => {
                return Err(modifier(
                    name,
                    "it searches for base64 encodings of the value, and kubetrail's query language cannot search for encoded text",
                ));
            }
            "utf16" | "utf16le" | "utf16be" | "wide" => {
                return Err(modifier(
                    name,
                    "it encodes the value in UTF-16, which only Windows logs need",
                ));
            }
            "windash" => {
                return Err(modifier(
                    name,
                    "it varies the dashes of Windows command lines, which audit events do not hold",
                ));
            }
            "cidr" => {
                return Err(modifier(
                    name,
                    "kubetrail's query language has no network-range match (rule exemptions do: `source_ip`)",
                ));
            }
            "expand" => {
                return Err(modifier(
                    name,
                    "its placeholders are filled by a Sigma processing pipeline, not by the rule",
                ));
            }
            "fieldref" => {
                return Err(modifier(
                    name,
                    "it compares two fields of one event, which kubetrail's query language cannot",
                ));
            }
            "minute" | "hour" | "day" | "week" | "month" | "year" => {
                return Err(modifier(
                    name,
                    "kubetrail's query language does not match parts of times",
                ));
            }
            other => {
                return Err(modifier(
                    other,
                    "it is not a Sigma modifier kubetrail knows",
                ));
            }
        };
        if out.kind != Kind::Equals {
            return Err(modifier(
                name,
                "it is combined with another modifier of the same kind (contains, startswith, endswith, re, exists, gt, gte, lt, lte)",
            ));
        }
        out.kind = kind;
    }
    Ok(out)
}

fn modifier(name: &str, why: &str) -> SigmaRefusal {
    SigmaRefusal::Modifier {
        name: name.to_owned(),
        why: why.to_owned(),
    }
}

/// One value of an item as a search.
fn value_node(
    key: &str,
    mapping: &FieldMapping,
    modifiers: &Modifiers,
    value: &Value,
) -> Result<Node, SigmaRefusal> {
    let field = FieldRef {
        name: mapping.kubetrail.clone(),
        field: mapping.field.clone(),
    };
    let refuse = |why: String| SigmaRefusal::Value {
        field: key.to_owned(),
        why,
    };
    let shown = display(value);
    if matches!(mapping.field.kind(), FieldKind::Time | FieldKind::Duration) {
        return Err(refuse(format!(
            "`{}` is a time or a duration, which imported rules do not compare",
            mapping.kubetrail
        )));
    }
    match modifiers.kind {
        Kind::Exists => {
            return match value {
                Value::Bool(true) => Ok(Node::Term(Term::Exists(field))),
                Value::Bool(false) => Ok(Node::Not(Box::new(Node::Term(Term::Exists(field))))),
                _ => Err(refuse(format!("`exists` takes true or false, not {shown}"))),
            };
        }
        Kind::Compare(op) => {
            if mapping.case != Case::Number {
                return Err(refuse(format!(
                    "`{}` compares numbers, and `{}` is not a number",
                    op.as_str(),
                    mapping.kubetrail
                )));
            }
            let n = number(value).ok_or_else(|| refuse(format!("{shown} is not a number")))?;
            return Ok(Node::Term(Term::Compare {
                field,
                op,
                value: n,
            }));
        }
        _ => {}
    }
    if value.is_null() {
        return if modifiers.kind == Kind::Equals {
            Ok(Node::Not(Box::new(Node::Term(Term::Exists(field)))))
        } else {
            Err(refuse("null with a modifier".into()))
        };
    }
    if mapping.case == Case::Number {
        if modifiers.kind != Kind::Equals {
            return Err(refuse(format!(
                "`{}` is a number in audit events: only equality and gt, gte, lt, lte apply",
                mapping.kubetrail
            )));
        }
        let n = number(value).ok_or_else(|| {
            refuse(format!(
                "`{}` is a number in audit events and {shown} is not one, so the Sigma rule can never match",
                mapping.kubetrail
            ))
        })?;
        return Ok(Node::Term(Term::Compare {
            field,
            op: CompareOp::Eq,
            value: n,
        }));
    }
    let (text, typed) = match value {
        Value::String(s) => (s.clone(), false),
        Value::Bool(b) => (b.to_string(), true),
        Value::Number(n) => (n.to_string(), true),
        _ => return Err(refuse(format!("{shown} is not a value"))),
    };
    let globs = if modifiers.kind == Kind::Regex {
        if typed {
            return Err(refuse(format!("{shown} is not a regular expression")));
        }
        to_globs(&text).map_err(|construct| {
            refuse(format!(
                "the regular expression {text:?} holds {construct}, which kubetrail's wildcard patterns cannot say"
            ))
        })?
    } else {
        let glob = sigma_glob(&text).map_err(refuse)?;
        let parts = match modifiers.kind {
            Kind::Contains => vec![GlobPart::Any, GlobPart::Lit(String::new()), GlobPart::Any],
            Kind::StartsWith => vec![GlobPart::Lit(String::new()), GlobPart::Any],
            Kind::EndsWith => vec![GlobPart::Any, GlobPart::Lit(String::new())],
            _ => vec![GlobPart::Lit(String::new())],
        };
        let mut joined = Vec::new();
        for part in parts {
            match part {
                GlobPart::Lit(_) => joined.extend(glob.0.iter().cloned()),
                GlobPart::Any => joined.push(GlobPart::Any),
            }
        }
        vec![Glob::new(joined)]
    };
    // Sigma matches strings ignoring case unless `cased`; regular expressions are
    // case-sensitive unless `i`. Booleans and numbers are compared as written.
    let ignore_case = if modifiers.kind == Kind::Regex {
        modifiers.regex_ignore_case
    } else {
        !modifiers.cased && !typed
    };
    let mut nodes = Vec::new();
    for glob in globs {
        let cased: Vec<Glob> = if !ignore_case || !glob.has_letters() {
            vec![glob]
        } else {
            match mapping.case {
                Case::Lower => vec![glob.lowercase()],
                Case::Enum(members) => {
                    let matching: Vec<Glob> = members
                        .iter()
                        .filter(|m| glob.matches_ignoring_case(m))
                        .map(|m| Glob::new(vec![GlobPart::Lit((*m).to_owned())]))
                        .collect();
                    if matching.is_empty() {
                        vec![glob]
                    } else {
                        matching
                    }
                }
                Case::Any | Case::Number => {
                    let name = key.split('|').next().unwrap_or(key);
                    let fix = if modifiers.kind == Kind::Regex {
                        "drop the `i` flag".to_owned()
                    } else {
                        format!("add `|cased` to the Sigma field (`{name}|cased…`)")
                    };
                    return Err(refuse(format!(
                        "Sigma matches {text:?} ignoring letter case, kubetrail's `{}` matches case-sensitively, and its values may be written in any case; {fix} to convert a case-sensitive match",
                        mapping.kubetrail
                    )));
                }
            }
        };
        for glob in cased {
            if let Some(why) = glob.unwritable() {
                return Err(refuse(format!("{text:?}: {why}")));
            }
            nodes.push(Node::Term(if glob.is_any() {
                Term::Exists(field.clone())
            } else {
                Term::Match {
                    field: field.clone(),
                    glob,
                }
            }));
        }
    }
    Ok(Node::or(nodes))
}

fn number(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn display(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        other => serde_yaml_ng::to_string(other)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
    }
}

/// A Sigma string value: `*` is any run, `?` one character (refused: kubetrail has none),
/// `\*`, `\?` and `\\` are the characters themselves, any other `\` is kept.
fn sigma_glob(text: &str) -> Result<Glob, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&next @ ('*' | '?' | '\\')) => {
                    literal.push(next);
                    chars.next();
                }
                _ => literal.push('\\'),
            },
            '*' => {
                parts.push(GlobPart::Lit(std::mem::take(&mut literal)));
                parts.push(GlobPart::Any);
            }
            '?' => {
                return Err(format!(
                    "{text:?} has the wildcard `?` (exactly one character), which kubetrail's patterns lack; write `\\?` for a question mark"
                ));
            }
            c => literal.push(c),
        }
    }
    parts.push(GlobPart::Lit(literal));
    Ok(Glob::new(parts))
}

/// Parses a Sigma condition over the converted selections (None: a selection that could not
/// be converted, already reported).
fn parse_condition(text: &str, selections: &BTreeMap<String, Option<Node>>) -> Parsed {
    let tokens = condition_tokens(text)?;
    let mut parser = ConditionParser {
        tokens,
        pos: 0,
        depth: 0,
        selections,
    };
    let node = parser.or()?;
    match parser.tokens.get(parser.pos) {
        Some(token) if token.eq_ignore_ascii_case("near") => {
            Err("`near` (Sigma v1 temporal proximity) is not supported".into())
        }
        Some(token) => Err(format!("unexpected `{token}`")),
        None => Ok(node),
    }
}

fn condition_tokens(text: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        match c {
            '(' | ')' => {
                if !word.is_empty() {
                    tokens.push(std::mem::take(&mut word));
                }
                tokens.push(c.to_string());
            }
            '|' => {
                return Err(
                    "`|` aggregations (`count() by … > N`) are Sigma v1; write a correlation rule (event_count, value_count)"
                        .into(),
                );
            }
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    tokens.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    Ok(tokens)
}

struct ConditionParser<'s> {
    tokens: Vec<String>,
    pos: usize,
    depth: usize,
    selections: &'s BTreeMap<String, Option<Node>>,
}

/// A parsed sub-condition: None when it names a selection that could not be converted.
type Parsed = Result<Option<Node>, String>;

impl ConditionParser<'_> {
    fn peek_is(&self, word: &str) -> bool {
        self.tokens
            .get(self.pos)
            .is_some_and(|t| t.eq_ignore_ascii_case(word))
    }

    fn or(&mut self) -> Parsed {
        let mut all = vec![self.and()?];
        while self.peek_is("or") {
            self.pos += 1;
            all.push(self.and()?);
        }
        Ok(all.into_iter().collect::<Option<Vec<_>>>().map(Node::or))
    }

    fn and(&mut self) -> Parsed {
        let mut all = vec![self.unary()?];
        while self.peek_is("and") {
            self.pos += 1;
            all.push(self.unary()?);
        }
        Ok(all.into_iter().collect::<Option<Vec<_>>>().map(Node::and))
    }

    fn unary(&mut self) -> Parsed {
        let Some(token) = self.tokens.get(self.pos).cloned() else {
            return Err("it ends where a selection was expected".into());
        };
        self.pos += 1;
        let lower = token.to_ascii_lowercase();
        match lower.as_str() {
            "not" => {
                self.descend()?;
                let inner = self.unary()?;
                self.depth -= 1;
                Ok(inner.map(|n| Node::Not(Box::new(n))))
            }
            "(" => {
                self.descend()?;
                let inner = self.or()?;
                self.depth -= 1;
                if self.tokens.get(self.pos).map(String::as_str) != Some(")") {
                    return Err("a `(` is never closed".into());
                }
                self.pos += 1;
                Ok(inner)
            }
            "near" => Err("`near` (Sigma v1 temporal proximity) is not supported".into()),
            "and" | "or" | ")" | "of" | "them" => Err(format!("unexpected `{token}`")),
            _ if self.peek_is("of") => {
                self.pos += 1;
                let quantifier = match lower.as_str() {
                    "1" | "any" => false,
                    "all" => true,
                    other => {
                        return Err(format!(
                            "`{other} of`: Sigma conditions take `1 of`, `any of` or `all of`"
                        ));
                    }
                };
                let Some(target) = self.tokens.get(self.pos).cloned() else {
                    return Err(format!("`{token} of` names nothing"));
                };
                self.pos += 1;
                let names: Vec<&String> = if target.eq_ignore_ascii_case("them") {
                    self.selections
                        .keys()
                        .filter(|n| !n.starts_with('_'))
                        .collect()
                } else {
                    self.selections
                        .keys()
                        .filter(|n| kubetrail_query::wildcard_match(&target, n))
                        .collect()
                };
                if names.is_empty() {
                    return Err(format!("`{token} of {target}` names no selection"));
                }
                let nodes: Option<Vec<Node>> =
                    names.iter().map(|n| self.selections[*n].clone()).collect();
                Ok(nodes.map(|nodes| {
                    if quantifier {
                        Node::and(nodes)
                    } else {
                        Node::or(nodes)
                    }
                }))
            }
            _ => match self.selections.get(&token) {
                Some(node) => Ok(node.clone()),
                None if token.contains('*') => Err(format!(
                    "`{token}`: a pattern of selection names needs `1 of` or `all of` before it"
                )),
                None => Err(format!("`{token}` is not a selection of the rule")),
            },
        }
    }

    fn descend(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_CONDITION_DEPTH {
            return Err(format!(
                "it nests parentheses and `not` more than {MAX_CONDITION_DEPTH} deep"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigma::Lines;

    fn convert(detection: &str) -> Result<String, Vec<String>> {
        let text = format!("detection:\n{detection}");
        let lines = Lines::new(&text, 1);
        let value: Value = serde_yaml_ng::from_str(&text).unwrap();
        let mut converter = Converter {
            extra_fields: &[],
            lines: &lines,
            problems: Vec::new(),
        };
        match converter.detection(&value["detection"]) {
            Some(node) => Ok(node.render()),
            None => Err(converter
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.line, p.refusal))
                .collect()),
        }
    }

    #[test]
    fn selections_values_and_lists() {
        assert_eq!(
            convert(
                "  selection:\n    verb: [create, UPDATE]\n    objectRef.resource: Pods\n  condition: selection\n"
            )
            .unwrap(),
            "verb:(create OR update) resource:pods"
        );
        assert_eq!(
            convert(
                "  selection:\n    - verb: delete\n    - objectRef.subresource: exec\n  condition: selection\n"
            )
            .unwrap(),
            "verb:delete OR subresource:exec"
        );
        assert_eq!(
            convert(
                "  selection:\n    responseStatus.code: [401, '403']\n  condition: selection\n"
            )
            .unwrap(),
            "code:(401 OR 403)"
        );
    }

    #[test]
    fn modifiers() {
        assert_eq!(
            convert(
                "  sel:\n    requestURI|cased|contains|all: ['/exec', 'command=sh']\n    userAgent|cased|startswith: kubectl/\n    user.username|cased|endswith: '@example.com'\n  condition: sel\n"
            )
            .unwrap(),
            "uri:*/exec* uri:*command=sh* ua:kubectl/* user:*@example.com"
        );
        assert_eq!(
            convert("  sel:\n    requestURI|re: '^/api/v1/(pods|secrets)$'\n  condition: sel\n")
                .unwrap(),
            "uri:(/api/v1/pods OR /api/v1/secrets)"
        );
        assert_eq!(
            convert(
                "  sel:\n    responseStatus.code|gte: 400\n    objectRef.name|exists: true\n    impersonatedUser.username: null\n  condition: sel\n"
            )
            .unwrap(),
            "code>=400 name:* -as:*"
        );
        assert_eq!(
            convert("  sel:\n    stage: responsecomplete\n  condition: sel\n").unwrap(),
            "stage:ResponseComplete"
        );
        assert_eq!(
            convert("  sel:\n    stage|startswith: response\n  condition: sel\n").unwrap(),
            "stage:(ResponseStarted OR ResponseComplete)"
        );
        assert_eq!(
            convert("  keywords:\n    - '*kube-hunter*'\n    - nmap\n  condition: keywords\n")
                .unwrap(),
            "\"kube-hunter\" OR \"nmap\""
        );
    }

    #[test]
    fn conditions() {
        let rule = "  selection_a:\n    verb: create\n  selection_b:\n    objectRef.resource: pods\n  filter_x:\n    objectRef.namespace: kube-system\n  _hidden:\n    verb: get\n";
        let with = |condition: &str| convert(&format!("{rule}  condition: {condition}\n"));
        assert_eq!(
            with("all of selection_* and not 1 of filter_*").unwrap(),
            "verb:create resource:pods -ns:kube-system"
        );
        assert_eq!(
            with("1 of them").unwrap(),
            "ns:kube-system OR verb:create OR resource:pods"
        );
        assert_eq!(
            with("selection_a and not (selection_b or filter_x)").unwrap(),
            "verb:create NOT (resource:pods OR ns:kube-system)"
        );
        assert_eq!(
            with("(selection_a or selection_b) and filter_x").unwrap(),
            "(verb:create OR resource:pods) ns:kube-system"
        );
        for (condition, why) in [
            ("selection_a | count() > 5", "`|` aggregations"),
            ("selection_a near selection_b", "`near`"),
            ("2 of selection_*", "`2 of`"),
            ("selection_c", "not a selection"),
            ("1 of nothing*", "names no selection"),
            ("(selection_a", "never closed"),
        ] {
            let problems = with(condition).unwrap_err();
            assert!(problems[0].contains(why), "{condition}: {problems:?}");
        }
    }

    #[test]
    fn what_cannot_be_converted_exactly_is_refused_with_its_line() {
        let problems = convert(
            "  selection:\n    verb: create\n    userAgent|contains: trufflehog\n    file_path: x\n    requestURI|base64: abc\n  condition: selection\n",
        )
        .unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].starts_with("4: `userAgent|contains`: Sigma matches"),
            "{}",
            problems[0]
        );
        assert!(problems[0].contains("|cased"), "{}", problems[0]);
        assert!(
            problems[1].starts_with("5: `file_path` is not a field"),
            "{}",
            problems[1]
        );
        assert!(
            problems[2].starts_with("6: the modifier `base64`"),
            "{}",
            problems[2]
        );
        for (item, why) in [
            ("responseStatus.code: ALLOW", "is a number in audit events"),
            ("responseStatus.code|contains: '40'", "only equality"),
            ("objectRef.name|cased: 'a?b'", "the wildcard `?`"),
            ("requestURI|cased|contains: ' gcc '", "one bare word"),
            ("requestURI|re: '\\d+'", "the escape `\\d`"),
            ("verb|near: x", "not a Sigma modifier"),
        ] {
            let problems = convert(&format!(
                "  selection:\n    {item}\n  condition: selection\n"
            ))
            .unwrap_err();
            assert!(problems[0].contains(why), "{item}: {problems:?}");
        }
    }

    #[test]
    fn values_needing_quotes_are_quoted() {
        assert_eq!(
            convert("  sel:\n    user.username|cased: 'Jane Doe'\n  condition: sel\n").unwrap(),
            "user:\"Jane Doe\""
        );
        assert_eq!(
            convert("  sel:\n    objectRef.name|cased: 'a\\*b'\n  condition: sel\n").unwrap(),
            "name:\"a*b\""
        );
    }

    #[test]
    fn conditions_nest_only_so_deep() {
        let condition = format!("{}sel{}", "(".repeat(40), ")".repeat(40));
        let problems = convert(&format!(
            "  sel:\n    verb: get\n  condition: '{condition}'\n"
        ))
        .unwrap_err();
        assert!(problems[0].contains("more than 32 deep"), "{problems:?}");
    }
}
