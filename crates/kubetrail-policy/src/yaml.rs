//! A YAML document as a small tree that remembers the line of every node, so that every problem
//! in a policy file can be reported at its line. Policies are YAML or JSON (JSON is YAML), read
//! the way kube-apiserver's YAML-to-JSON conversion reads them: plain scalars `true`/`false` are
//! booleans, `null`/`~`/empty are null, numbers are numbers, everything else is a string.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A node of the tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A mapping: keys in document order (duplicates kept, so they can be reported).
    Map(Vec<(Key, Node)>),
    /// A sequence.
    Seq(Vec<Node>),
    /// A string (quoted, or a plain scalar that is nothing else).
    Str(String, Line),
    /// A plain `true`/`false`.
    Bool(bool, Line),
    /// A plain number, as written.
    Number(String, Line),
    /// `null`, `~` or nothing.
    Null(Line),
}

/// 1-based line number in the policy file.
pub type Line = usize;

/// A mapping key with its line.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key text.
    pub name: String,
    /// Where it is.
    pub line: Line,
}

impl Node {
    /// The line where the node starts (for collections, that of their first entry).
    pub fn line(&self) -> Line {
        match self {
            Node::Str(_, l) | Node::Bool(_, l) | Node::Number(_, l) | Node::Null(l) => *l,
            Node::Map(entries) => entries.first().map_or(1, |(k, _)| k.line),
            Node::Seq(items) => items.first().map_or(1, Node::line),
        }
    }

    /// What kind of node this is, in the words of Go's JSON errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Map(_) => "object",
            Node::Seq(_) => "array",
            Node::Str(..) => "string",
            Node::Bool(..) => "bool",
            Node::Number(..) => "number",
            Node::Null(_) => "null",
        }
    }
}

/// Parses `text`; the first document only (a policy file holds one).
pub fn parse(text: &str) -> Result<Node, (Line, String)> {
    let mut builder = TreeBuilder::default();
    let mut parser = Parser::new_from_str(text);
    parser
        .load(&mut builder, false)
        .map_err(|e| (e.marker().line(), e.info().to_owned()))?;
    match builder.root {
        Some(root) => Ok(root),
        None => Ok(Node::Null(1)),
    }
}

/// Turns parser events into a tree.
#[derive(Default)]
struct TreeBuilder {
    stack: Vec<Frame>,
    root: Option<Node>,
}

enum Frame {
    Map {
        entries: Vec<(Key, Node)>,
        pending_key: Option<Key>,
    },
    Seq(Vec<Node>),
}

impl TreeBuilder {
    fn push_node(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq(items)) => items.push(node),
            Some(Frame::Map {
                entries,
                pending_key,
            }) => match pending_key.take() {
                Some(key) => entries.push((key, node)),
                None => {
                    // A key. Non-scalar keys do not occur in policies; they become their text.
                    let (name, line) = match node {
                        Node::Str(s, l) | Node::Number(s, l) => (s, l),
                        Node::Bool(b, l) => (b.to_string(), l),
                        Node::Null(l) => (String::new(), l),
                        other => (format!("{other:?}"), other.line()),
                    };
                    *pending_key = Some(Key { name, line });
                }
            },
        }
    }
}

impl MarkedEventReceiver for TreeBuilder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let line = mark.line();
        match event {
            Event::Scalar(value, style, _, _) => {
                let node = if style != TScalarStyle::Plain {
                    Node::Str(value, line)
                } else {
                    match value.as_str() {
                        "true" | "True" | "TRUE" => Node::Bool(true, line),
                        "false" | "False" | "FALSE" => Node::Bool(false, line),
                        "" | "~" | "null" | "Null" | "NULL" => Node::Null(line),
                        v if v.parse::<f64>().is_ok() => Node::Number(value, line),
                        _ => Node::Str(value, line),
                    }
                };
                self.push_node(node);
            }
            Event::MappingStart(..) => self.stack.push(Frame::Map {
                entries: Vec::new(),
                pending_key: None,
            }),
            Event::SequenceStart(..) => self.stack.push(Frame::Seq(Vec::new())),
            Event::MappingEnd => {
                if let Some(Frame::Map { entries, .. }) = self.stack.pop() {
                    self.push_node(Node::Map(entries));
                }
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(items)) = self.stack.pop() {
                    self.push_node(Node::Seq(items));
                }
            }
            Event::Alias(_) => self.push_node(Node::Null(line)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept() {
        let tree = parse("apiVersion: audit.k8s.io/v1\nrules:\n  - level: Metadata\n    verbs: [get, \"true\"]\n").unwrap();
        let Node::Map(entries) = tree else { panic!() };
        assert_eq!(entries[1].0.name, "rules");
        assert_eq!(entries[1].0.line, 2);
        let Node::Seq(rules) = &entries[1].1 else {
            panic!()
        };
        let Node::Map(rule) = &rules[0] else { panic!() };
        assert_eq!(rule[1].0.line, 4);
        assert_eq!(
            rule[1].1,
            Node::Seq(vec![
                Node::Str("get".into(), 4),
                Node::Str("true".into(), 4)
            ])
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let (line, message) = parse("rules:\n  - level: [Metadata\n").unwrap_err();
        assert!(line >= 2, "{line} {message}");
    }
}
