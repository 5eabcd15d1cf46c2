//! The query parser: recursive descent over tokens, with an error at the exact position of the
//! first mistake saying what was expected there.
//!
//! ```text
//! query     := [or] ("|" pipe)*
//! or        := and ("OR" and)*
//! and       := unary (["AND"] unary)*
//! unary     := ("NOT" | "-") unary | "(" or ")" | term
//! term      := QUOTED | WORD | WORD ":" value | WORD ":" "(" value ("OR" value)* ")" | WORD CMP value
//! pipe      := "stats" aggs ["by" fields] | "timechart" SPAN aggs ["by" field] | "top" [N] field
//!            | "sort" ["-"]column ("," ["-"]column)* | "fields" fields | "limit" N
//! agg       := FUNC "(" [field] ")" ["as" NAME]
//! ```

use kubetrail_event::Timestamp;

use crate::ast::{AggFunc, Aggregate, Expr, Literal, Pattern, Pipe, Query, SortKey, ValueSet};
use crate::error::QueryError;
use crate::fields::{Field, FieldKind, JsonColumn, parse_duration_micros};
use crate::lexer::{CompareOp, Spanned, Token, tokenize};
use crate::limits::QueryLimits;

/// Parses a query under the default [`QueryLimits`].
pub fn parse(query: &str) -> Result<Query, QueryError> {
    parse_with(query, &QueryLimits::default())
}

/// Parses a query under `limits`. The parser recurses only into parentheses and negations, at
/// most `max_depth` levels.
pub fn parse_with(query: &str, limits: &QueryLimits) -> Result<Query, QueryError> {
    if query.len() > limits.max_length {
        return Err(QueryError::limit(
            limits.max_length,
            "query.maxLength",
            format!(
                "the query is {} bytes long, longer than the limit of {} bytes",
                query.len(),
                limits.max_length
            ),
        ));
    }
    let tokens = tokenize(query)?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        end: query.len(),
        limits,
        depth: 0,
        terms: 0,
    };
    // A lone `*` is "every event", as in the search boxes users know.
    if matches!(parser.peek(), Some(Spanned { token: Token::Word(w), .. }) if w == "*") {
        parser.pos += 1;
        if !parser.at_pipe_or_end() {
            parser.pos -= 1;
        }
    }
    let filter = if parser.at_pipe_or_end() {
        None
    } else {
        Some(parser.or()?)
    };
    let mut pipes = Vec::new();
    while let Some(token) = parser.peek() {
        match token.token {
            Token::Pipe => {
                parser.pos += 1;
                pipes.push(parser.pipe()?);
            }
            Token::Close => return Err(QueryError::at(token.at, "this `)` closes nothing")),
            _ => {
                return Err(QueryError::at(
                    token.at,
                    "expected `|` before the next command",
                ));
            }
        }
    }
    Ok(Query { filter, pipes })
}

struct Parser<'l> {
    tokens: Vec<Spanned>,
    pos: usize,
    end: usize,
    limits: &'l QueryLimits,
    /// Parentheses and negations open around the current token.
    depth: usize,
    /// Search terms read so far.
    terms: usize,
}

const COMMANDS: &str = "stats, timechart, top, sort, fields, limit";

impl Parser<'_> {
    fn peek(&self) -> Option<&Spanned> {
        self.tokens.get(self.pos)
    }

    /// Consumes the next token if it is a word.
    fn take_word(&mut self) -> Option<(String, usize)> {
        match self.peek() {
            Some(Spanned {
                token: Token::Word(w),
                at,
            }) => {
                let taken = (w.clone(), *at);
                self.pos += 1;
                Some(taken)
            }
            _ => None,
        }
    }

    /// The position of the next token, or the end of the query.
    fn here(&self) -> usize {
        self.peek().map_or(self.end, |t| t.at)
    }

    fn at_pipe_or_end(&self) -> bool {
        matches!(
            self.peek(),
            None | Some(Spanned {
                token: Token::Pipe,
                ..
            })
        )
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Spanned { token: Token::Word(w), .. }) if w == word)
    }

    fn found(&self) -> String {
        match self.peek() {
            None => "the end of the query".to_owned(),
            Some(t) => match &t.token {
                Token::Word(w) => format!("`{w}`"),
                Token::Quoted(q) => format!("\"{q}\""),
                Token::Colon => "`:`".into(),
                Token::Minus => "`-`".into(),
                Token::Open => "`(`".into(),
                Token::Close => "`)`".into(),
                Token::Comma => "`,`".into(),
                Token::Pipe => "`|`".into(),
                Token::Compare(op) => format!("`{}`", op.as_str()),
            },
        }
    }

    fn or(&mut self) -> Result<Expr, QueryError> {
        let mut terms = vec![self.and()?];
        while self.is_word("OR") {
            let at = self.here();
            self.pos += 1;
            if self.starts_term() {
                terms.push(self.and()?);
            } else {
                return Err(QueryError::at(
                    at,
                    format!("expected a search term after OR, found {}", self.found()),
                ));
            }
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            any_of(terms)
        })
    }

    fn starts_term(&self) -> bool {
        match self.peek().map(|t| &t.token) {
            Some(Token::Word(w)) => w != "OR" && w != "AND",
            Some(Token::Quoted(_) | Token::Minus | Token::Open) => true,
            _ => false,
        }
    }

    fn and(&mut self) -> Result<Expr, QueryError> {
        let mut terms = vec![self.unary()?];
        loop {
            if self.is_word("AND") {
                let at = self.here();
                self.pos += 1;
                if !self.starts_term() {
                    return Err(QueryError::at(
                        at,
                        format!("expected a search term after AND, found {}", self.found()),
                    ));
                }
                terms.push(self.unary()?);
            } else if self.starts_term() {
                terms.push(self.unary()?);
            } else {
                break;
            }
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::And(terms)
        })
    }

    /// Enters a parenthesis or a negation at `at`, refusing to go deeper than the limit.
    fn descend(&mut self, at: usize) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            return Err(QueryError::limit(
                at,
                "query.maxDepth",
                format!(
                    "the query nests parentheses and negations more than {} levels deep",
                    self.limits.max_depth
                ),
            ));
        }
        Ok(())
    }

    fn unary(&mut self) -> Result<Expr, QueryError> {
        let at = self.here();
        if self.is_word("NOT")
            || matches!(
                self.peek(),
                Some(Spanned {
                    token: Token::Minus,
                    ..
                })
            )
        {
            self.pos += 1;
            if !self.starts_term() {
                return Err(QueryError::at(
                    at,
                    format!("expected a search term to negate, found {}", self.found()),
                ));
            }
            self.descend(at)?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        if matches!(
            self.peek(),
            Some(Spanned {
                token: Token::Open,
                ..
            })
        ) {
            self.pos += 1;
            if matches!(
                self.peek(),
                Some(Spanned {
                    token: Token::Close,
                    ..
                })
            ) {
                return Err(QueryError::at(
                    self.here(),
                    "empty parentheses: expected a search term",
                ));
            }
            self.descend(at)?;
            let inner = self.or()?;
            self.depth -= 1;
            if matches!(
                self.peek(),
                Some(Spanned {
                    token: Token::Close,
                    ..
                })
            ) {
                self.pos += 1;
                return Ok(inner);
            }
            return Err(QueryError::at(
                at,
                format!(
                    "this `(` is never closed: expected `)`, found {}",
                    self.found()
                ),
            ));
        }
        self.term()
    }

    fn term(&mut self) -> Result<Expr, QueryError> {
        let Some(token) = self.peek().cloned() else {
            return Err(QueryError::at(self.end, "expected a search term"));
        };
        self.terms += 1;
        if self.terms > self.limits.max_terms {
            return Err(QueryError::limit(
                token.at,
                "query.maxTerms",
                format!(
                    "the query has more than {} search terms; for many values of one field, use a value list: user:(a OR b OR …)",
                    self.limits.max_terms
                ),
            ));
        }
        let name = match token.token {
            Token::Quoted(text) => {
                self.pos += 1;
                self.check_length(&text, token.at)?;
                return Ok(Expr::Text(text));
            }
            Token::Word(word) => {
                self.pos += 1;
                word
            }
            _ => {
                return Err(QueryError::at(
                    token.at,
                    format!("expected a search term, found {}", self.found()),
                ));
            }
        };
        match self.peek().map(|t| t.token.clone()) {
            Some(Token::Colon) => {
                self.pos += 1;
                let field = Field::resolve(&name, token.at)?;
                if matches!(
                    self.peek(),
                    Some(Spanned {
                        token: Token::Open,
                        ..
                    })
                ) {
                    let open = self.here();
                    self.pos += 1;
                    let mut alternatives = vec![self.match_value(&field, &name)?];
                    loop {
                        if alternatives.len() > self.limits.max_values {
                            return Err(QueryError::limit(
                                self.here(),
                                "query.maxValues",
                                format!(
                                    "a value list holds at most {} values",
                                    self.limits.max_values
                                ),
                            ));
                        }
                        match self.peek().map(|t| t.token.clone()) {
                            Some(Token::Close) => {
                                self.pos += 1;
                                break;
                            }
                            Some(Token::Word(w)) if w == "OR" => {
                                self.pos += 1;
                                alternatives.push(self.match_value(&field, &name)?);
                            }
                            Some(Token::Comma) => {
                                self.pos += 1;
                                alternatives.push(self.match_value(&field, &name)?);
                            }
                            None => {
                                return Err(QueryError::at(
                                    open,
                                    "this value list is never closed: expected `)`",
                                ));
                            }
                            Some(_) => {
                                return Err(QueryError::at(
                                    self.here(),
                                    format!(
                                        "expected OR or `)` in the value list, found {}",
                                        self.found()
                                    ),
                                ));
                            }
                        }
                    }
                    return Ok(if alternatives.len() == 1 {
                        alternatives.remove(0)
                    } else {
                        any_of(alternatives)
                    });
                }
                self.match_value(&field, &name)
            }
            Some(Token::Compare(op)) => {
                self.pos += 1;
                let field = Field::resolve(&name, token.at)?;
                let (text, at) = self.value(&name, op.as_str())?;
                if matches!(&field, Field::Json { path, .. } if path.is_empty()) {
                    return Err(QueryError::at(
                        token.at,
                        format!(
                            "`{name}` is a whole body: search its text (`{name}:TEXT`) or match a value at a path in it (`{name}.spec.replicas:3`)"
                        ),
                    ));
                }
                if field.kind() == FieldKind::List {
                    return Err(QueryError::at(
                        token.at,
                        format!(
                            "`{name}` holds several values: use `{name}:VALUE` instead of a comparison"
                        ),
                    ));
                }
                let value = literal(&field, &name, &text, at)?;
                Ok(Expr::Compare { field, op, value })
            }
            _ if COMMANDS.split(", ").any(|c| c == name) => Err(QueryError::at(
                token.at,
                format!(
                    "expected `|` before the command `{name}` (to search for the word, quote it: \"{name}\")"
                ),
            )),
            _ => {
                self.check_length(&name, token.at)?;
                Ok(Expr::Text(name))
            }
        }
    }

    fn too_many_rows(&self, at: usize, n: u64) -> QueryError {
        QueryError::limit(
            at,
            "query.maxRows",
            format!(
                "{n} rows are more than an answer may have ({})",
                self.limits.max_rows
            ),
        )
    }

    /// Refuses a value or free-text term longer than the limit.
    fn check_length(&self, text: &str, at: usize) -> Result<(), QueryError> {
        if text.len() > self.limits.max_value_length {
            return Err(QueryError::limit(
                at,
                "query.maxValueLength",
                format!(
                    "this value is {} bytes long, longer than the limit of {} bytes",
                    text.len(),
                    self.limits.max_value_length
                ),
            ));
        }
        Ok(())
    }

    /// A value token after `field:` or an operator.
    fn value(&mut self, name: &str, after: &str) -> Result<(String, usize), QueryError> {
        match self.peek().cloned() {
            Some(Spanned {
                token: Token::Word(w),
                at,
            }) if !w.is_empty() => {
                self.pos += 1;
                self.check_length(&w, at)?;
                Ok((w, at))
            }
            Some(Spanned {
                token: Token::Quoted(q),
                at,
            }) => {
                self.pos += 1;
                self.check_length(&q, at)?;
                Ok((q, at))
            }
            _ => Err(QueryError::at(
                self.here(),
                format!(
                    "expected a value after `{name}{after}`, found {}",
                    self.found()
                ),
            )),
        }
    }

    fn match_value(&mut self, field: &Field, name: &str) -> Result<Expr, QueryError> {
        let quoted = matches!(
            self.peek(),
            Some(Spanned {
                token: Token::Quoted(_),
                ..
            })
        );
        let (text, at) = self.value(name, ":")?;
        if text == "*" && !quoted {
            return Ok(Expr::Exists(field.clone()));
        }
        if let Field::Json { column, path } = field
            && path.is_empty()
        {
            return body_text(*column, name, text, quoted, at);
        }
        match field.kind() {
            FieldKind::Text | FieldKind::List => Ok(Expr::Match {
                field: field.clone(),
                pattern: if text.contains('*') && !quoted {
                    Pattern::Wildcard(text)
                } else {
                    Pattern::Exact(text)
                },
            }),
            FieldKind::Int if text.len() == 3 && text.ends_with("xx") => {
                let class: i64 = text[..1]
                    .parse()
                    .ok()
                    .filter(|c| (1..=5).contains(c))
                    .ok_or_else(|| {
                        QueryError::at(at, format!("`{text}` is not a status class: use 1xx … 5xx"))
                    })?;
                Ok(Expr::And(vec![
                    Expr::Compare {
                        field: field.clone(),
                        op: CompareOp::Ge,
                        value: Literal::Int(class * 100),
                    },
                    Expr::Compare {
                        field: field.clone(),
                        op: CompareOp::Le,
                        value: Literal::Int(class * 100 + 99),
                    },
                ]))
            }
            FieldKind::Time => Err(QueryError::at(
                at,
                format!(
                    "`{name}` is a time: compare it (`{name}>=2026-03-02T08:00:00Z`) or use --since/--from/--to"
                ),
            )),
            _ => Ok(Expr::Compare {
                field: field.clone(),
                op: CompareOp::Eq,
                value: literal(field, name, &text, at)?,
            }),
        }
    }

    fn pipe(&mut self) -> Result<Pipe, QueryError> {
        let at = self.here();
        let Some((command, _)) = self.take_word() else {
            return Err(QueryError::at(
                at,
                format!(
                    "expected a command after `|` ({COMMANDS}), found {}",
                    self.found()
                ),
            ));
        };
        match command.as_str() {
            "stats" => {
                let aggregates = self.aggregates()?;
                let by = if self.is_word("by") {
                    self.pos += 1;
                    let by_at = self.here();
                    let by = self.fields(self.limits.max_group_by, "query.maxGroupBy")?;
                    if let Some(clash) = aggregates
                        .iter()
                        .find(|a| by.iter().any(|f| f.display_name() == a.alias))
                    {
                        return Err(QueryError::at(
                            by_at,
                            format!(
                                "`{}` names both an aggregate and a field to group by: name the aggregate with `as`",
                                clash.alias
                            ),
                        ));
                    }
                    by
                } else {
                    Vec::new()
                };
                self.end_of_command("stats")?;
                Ok(Pipe::Stats { aggregates, by })
            }
            "timechart" => {
                let span_at = self.here();
                let span = self
                    .take_word()
                    .and_then(|(w, _)| parse_duration_micros(&w).filter(|s| *s > 0));
                let span_micros = span.ok_or_else(|| {
                    QueryError::at(
                        span_at,
                        "expected the bucket width after timechart, like `1m` or `30s`",
                    )
                })?;
                let aggregates = self.aggregates()?;
                let by = if self.is_word("by") {
                    self.pos += 1;
                    let mut fields = self.fields(2, "query.maxGroupBy")?;
                    if fields.iter().any(|f| {
                        f.display_name() == "time"
                            || aggregates.iter().any(|a| a.alias == f.display_name())
                    }) {
                        return Err(QueryError::at(
                            span_at,
                            "a timechart's series field must differ from `time` and from the aggregates' names",
                        ));
                    }
                    if fields.len() > 1 {
                        return Err(QueryError::at(
                            span_at,
                            "timechart splits by one field at most",
                        ));
                    }
                    fields.pop()
                } else {
                    None
                };
                self.end_of_command("timechart")?;
                Ok(Pipe::Timechart {
                    span_micros,
                    span_at,
                    aggregates,
                    by,
                })
            }
            "top" => {
                let mut limit = 10;
                if let Some(Spanned {
                    token: Token::Word(w),
                    ..
                }) = self.peek()
                    && let Ok(n) = w.parse::<u64>()
                {
                    if n > self.limits.max_rows {
                        return Err(self.too_many_rows(self.here(), n));
                    }
                    limit = n;
                    self.pos += 1;
                }
                let mut fields = self.fields(2, "query.maxGroupBy")?;
                if fields.len() != 1 {
                    return Err(QueryError::at(at, "top takes one field: `top 10 user`"));
                }
                self.end_of_command("top")?;
                Ok(Pipe::Top {
                    limit,
                    field: fields.remove(0),
                })
            }
            "sort" => {
                let mut keys = Vec::new();
                loop {
                    let descending = matches!(
                        self.peek(),
                        Some(Spanned {
                            token: Token::Minus,
                            ..
                        })
                    );
                    if descending {
                        self.pos += 1;
                    }
                    let column_at = self.here();
                    let Some((column, _)) = self.take_word() else {
                        return Err(QueryError::at(
                            column_at,
                            "expected a column to sort by, like `-count` or `time`",
                        ));
                    };
                    keys.push(SortKey { column, descending });
                    if !matches!(
                        self.peek(),
                        Some(Spanned {
                            token: Token::Comma,
                            ..
                        })
                    ) {
                        break;
                    }
                    self.pos += 1;
                }
                self.end_of_command("sort")?;
                Ok(Pipe::Sort(keys))
            }
            "fields" => {
                let fields = self.fields(self.limits.max_terms, "query.maxTerms")?;
                self.end_of_command("fields")?;
                Ok(Pipe::Fields(fields))
            }
            "limit" | "head" => {
                let n_at = self.here();
                let n = self.take_word().and_then(|(w, _)| w.parse::<u64>().ok());
                let n =
                    n.ok_or_else(|| QueryError::at(n_at, "expected a number of rows after limit"))?;
                if n > self.limits.max_rows {
                    return Err(self.too_many_rows(n_at, n));
                }
                self.end_of_command("limit")?;
                Ok(Pipe::Limit(n))
            }
            other => Err(QueryError::at(
                at,
                format!("unknown command `{other}`; commands are {COMMANDS}"),
            )),
        }
    }

    fn end_of_command(&self, command: &str) -> Result<(), QueryError> {
        if self.at_pipe_or_end() {
            Ok(())
        } else {
            Err(QueryError::at(
                self.here(),
                format!("unexpected {} in `{command}`", self.found()),
            ))
        }
    }

    /// A comma-separated list of fields, each named once, at most `max` of them (the limit
    /// configured as `key`).
    fn fields(&mut self, max: usize, key: &'static str) -> Result<Vec<Field>, QueryError> {
        let mut fields: Vec<Field> = Vec::new();
        loop {
            let at = self.here();
            let Some((word, _)) = self.take_word() else {
                return Err(QueryError::at(
                    at,
                    format!("expected a field name, found {}", self.found()),
                ));
            };
            let field = output_field(&word, at)?;
            if fields
                .iter()
                .any(|f| f.display_name() == field.display_name())
            {
                return Err(QueryError::at(
                    at,
                    format!("`{}` is already in this list", field.display_name()),
                ));
            }
            if fields.len() == max {
                return Err(QueryError::limit(
                    at,
                    key,
                    format!("at most {max} fields fit in this list"),
                ));
            }
            fields.push(field);
            if !matches!(
                self.peek(),
                Some(Spanned {
                    token: Token::Comma,
                    ..
                })
            ) {
                return Ok(fields);
            }
            self.pos += 1;
        }
    }

    fn aggregates(&mut self) -> Result<Vec<Aggregate>, QueryError> {
        let mut aggregates: Vec<Aggregate> = Vec::new();
        loop {
            let at = self.here();
            let Some((name, _)) = self.take_word() else {
                return Err(QueryError::at(
                    at,
                    format!(
                        "expected an aggregate like count() or p99(latency), found {}",
                        self.found()
                    ),
                ));
            };
            let func = match name.as_str() {
                "count" => AggFunc::Count,
                "dc" | "distinct_count" => AggFunc::DistinctCount,
                "sum" => AggFunc::Sum,
                "avg" => AggFunc::Avg,
                "min" => AggFunc::Min,
                "max" => AggFunc::Max,
                p if p.starts_with('p')
                    && p[1..].parse::<u8>().is_ok_and(|n| (1..=99).contains(&n)) =>
                {
                    AggFunc::Percentile(p[1..].parse().unwrap_or(50))
                }
                other => {
                    return Err(QueryError::at(
                        at,
                        format!(
                            "unknown aggregate `{other}`: use count, dc, sum, avg, min, max or p1 … p99"
                        ),
                    ));
                }
            };
            if !matches!(
                self.peek(),
                Some(Spanned {
                    token: Token::Open,
                    ..
                })
            ) {
                return Err(QueryError::at(
                    self.here(),
                    format!("expected `(` after `{name}`: write {name}(…)"),
                ));
            }
            self.pos += 1;
            let field = if matches!(
                self.peek(),
                Some(Spanned {
                    token: Token::Close,
                    ..
                })
            ) {
                None
            } else {
                let field_at = self.here();
                match self.take_word() {
                    Some((w, _)) => Some(output_field(&w, field_at)?),
                    None => {
                        return Err(QueryError::at(
                            field_at,
                            format!("expected a field inside {name}(…)"),
                        ));
                    }
                }
            };
            if !matches!(
                self.peek(),
                Some(Spanned {
                    token: Token::Close,
                    ..
                })
            ) {
                return Err(QueryError::at(
                    self.here(),
                    format!("expected `)` to close {name}(, found {}", self.found()),
                ));
            }
            self.pos += 1;
            match (&func, &field) {
                (AggFunc::Count, _) | (AggFunc::DistinctCount, Some(_)) => {}
                // First and last seen: `stats min(time), max(time) by verb, resource`.
                (AggFunc::Min | AggFunc::Max, Some(f)) if f.kind() == FieldKind::Time => {}
                (AggFunc::DistinctCount, None) => {
                    return Err(QueryError::at(at, "dc needs a field: dc(user)"));
                }
                (_, None) => {
                    return Err(QueryError::at(
                        at,
                        format!("{name} needs a numeric field: {name}(latency)"),
                    ));
                }
                (_, Some(f)) if !matches!(f.kind(), FieldKind::Int | FieldKind::Duration) => {
                    return Err(QueryError::at(
                        at,
                        format!(
                            "{name} needs a numeric field such as latency or code, not `{}`",
                            f.display_name()
                        ),
                    ));
                }
                _ => {}
            }
            let mut alias = match &field {
                None => func.name(),
                Some(f) => format!("{}_{}", func.name(), f.display_name().replace('.', "_")),
            };
            if self.is_word("as") {
                self.pos += 1;
                let alias_at = self.here();
                match self.take_word() {
                    Some((w, _)) if is_identifier(&w) => alias = w,
                    _ => {
                        return Err(QueryError::at(
                            alias_at,
                            "expected a name after `as` (letters, digits, _)",
                        ));
                    }
                }
            }
            if aggregates.iter().any(|a| a.alias == alias) {
                return Err(QueryError::at(
                    at,
                    format!("two aggregates are named `{alias}`: name one with `as`"),
                ));
            }
            aggregates.push(Aggregate { func, field, alias });
            if !matches!(
                self.peek(),
                Some(Spanned {
                    token: Token::Comma,
                    ..
                })
            ) {
                return Ok(aggregates);
            }
            self.pos += 1;
        }
    }
}

/// Alternatives of a search (`a OR b`, a value list): exact values of one field become one
/// set lookup ([`Expr::In`]), whatever else the alternatives hold stays an `OR` beside it.
fn any_of(alternatives: Vec<Expr>) -> Expr {
    let mut sets: Vec<(Field, Vec<String>)> = Vec::new();
    let mut rest = Vec::new();
    for alternative in alternatives {
        match alternative {
            Expr::Match {
                field,
                pattern: Pattern::Exact(value),
            } if field.is_set_searchable() => match sets.iter_mut().find(|(f, _)| *f == field) {
                Some((_, values)) => values.push(value),
                None => sets.push((field, vec![value])),
            },
            other => rest.push(other),
        }
    }
    for (field, values) in sets {
        rest.push(if values.len() == 1 {
            Expr::Match {
                field,
                pattern: Pattern::Exact(values.into_iter().next().unwrap_or_default()),
            }
        } else {
            Expr::In {
                field,
                values: ValueSet::new(values),
            }
        });
    }
    if rest.len() == 1 {
        rest.remove(0)
    } else {
        Expr::Or(rest)
    }
}

/// Whether `name` can be an output column name.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Reads `text` as a value of `field`'s type.
/// `requestObject:TEXT`: free text in one body. Free text is found anywhere in the body, so a
/// `*` at either end of an unquoted value says nothing more and is dropped; one inside it would
/// need a pattern over the whole JSON text, which a path says better.
fn body_text(
    body: JsonColumn,
    name: &str,
    text: String,
    quoted: bool,
    at: usize,
) -> Result<Expr, QueryError> {
    let text = if quoted {
        text
    } else {
        let inner = text.trim_matches('*');
        if let Some(star) = inner.find('*') {
            return Err(QueryError::at(
                at + (text.len() - text.trim_start_matches('*').len()) + star,
                format!(
                    "`{name}:` finds text anywhere in the body, so `*` only fits at its ends; for a pattern, name the path (`{name}.spec.containers.image:nginx*`) or quote the text to find a `*`"
                ),
            ));
        }
        if inner.is_empty() {
            return Ok(Expr::Exists(Field::Json {
                column: body,
                path: Vec::new(),
            }));
        }
        inner.to_owned()
    };
    Ok(Expr::BodyText { body, text })
}

fn literal(field: &Field, name: &str, text: &str, at: usize) -> Result<Literal, QueryError> {
    match field.kind() {
        FieldKind::Text | FieldKind::List => Ok(Literal::Text(text.to_owned())),
        FieldKind::Int => text
            .parse()
            .map(Literal::Int)
            .map_err(|_| QueryError::at(at, format!("`{name}` is a number: `{text}` is not one"))),
        FieldKind::Duration => parse_duration_micros(text)
            .map(Literal::Duration)
            .ok_or_else(|| {
                QueryError::at(
                    at,
                    format!("`{name}` is a duration such as 250ms, 1s or 2m: `{text}` is not one"),
                )
            }),
        FieldKind::Time => Timestamp::parse(text)
            .map(|t| Literal::Time(t.as_micros()))
            .ok_or_else(|| {
                QueryError::at(
                    at,
                    format!("`{name}` is a time: `{text}` is not RFC 3339 (2026-03-02T08:00:00Z)"),
                )
            }),
        FieldKind::Bool => match text {
            "true" => Ok(Literal::Bool(true)),
            "false" => Ok(Literal::Bool(false)),
            _ => Err(QueryError::at(
                at,
                format!("`{name}` is true or false, not `{text}`"),
            )),
        },
    }
}

/// A field named in a command (`by`, `fields`, `top`, an aggregate): one the store has a value
/// for. The pod view and query parameters are read from bodies and URIs when searching only.
fn output_field(name: &str, at: usize) -> Result<Field, QueryError> {
    let field = Field::resolve(name, at)?;
    if field.is_search_only() {
        return Err(QueryError::at(
            at,
            format!(
                "`{name}` can be searched (`{name}:VALUE`) but not grouped by, aggregated or shown as a column"
            ),
        ));
    }
    Ok(field)
}
