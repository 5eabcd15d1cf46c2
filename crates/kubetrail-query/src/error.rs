//! Query errors: where in the query, and what was expected there.

use std::fmt;

/// A mistake in a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    /// Byte offset in the query where the problem is.
    pub position: usize,
    /// What is wrong and what was expected, in words.
    pub message: String,
    /// When the query went past a limit: the limit's configuration key (`query.maxDepth`).
    pub limit: Option<&'static str>,
}

impl QueryError {
    pub(crate) fn at(position: usize, message: impl Into<String>) -> Self {
        QueryError {
            position,
            message: message.into(),
            limit: None,
        }
    }

    /// The query goes past the limit configured as `key`.
    pub(crate) fn limit(position: usize, key: &'static str, message: impl Into<String>) -> Self {
        QueryError {
            position,
            message: format!("{} ({key})", message.into()),
            limit: Some(key),
        }
    }

    /// The message with the query and a caret under the position, for terminals:
    ///
    /// ```text
    /// verb:get AND OR user:bob
    ///              ^ expected a search term after AND, found OR
    /// ```
    pub fn render(&self, query: &str) -> String {
        let column = query
            .get(..self.position.min(query.len()))
            .map_or(self.position, |prefix| prefix.chars().count());
        format!("{query}\n{}^ {}", " ".repeat(column), self.message)
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at position {})", self.message, self.position)
    }
}

impl std::error::Error for QueryError {}
