//! Tokens of the query language, each with the byte offset where it starts, so every error can
//! point at the place in the query it is about.

use crate::error::QueryError;

/// A token.
#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    /// A bare word: a field name, a value, a keyword (`AND`, `OR`, `NOT`, `by`, `as`), a number,
    /// a duration (`1s`), a time, a wildcard pattern (`system:serviceaccount:*`).
    Word(String),
    /// A double-quoted string, unescaped.
    Quoted(String),
    /// `:`
    Colon,
    /// `-` directly before a term.
    Minus,
    /// `(`
    Open,
    /// `)`
    Close,
    /// `,`
    Comma,
    /// `|`
    Pipe,
    /// `=`, `!=`, `<`, `<=`, `>`, `>=`
    Compare(CompareOp),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CompareOp {
    /// The operator as written.
    pub const fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "=",
            CompareOp::Ne => "!=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        }
    }
}

/// A token and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned {
    /// The token.
    pub token: Token,
    /// Byte offset in the query.
    pub at: usize,
}

/// Characters that end a bare word.
fn ends_word(c: char) -> bool {
    c.is_whitespace() || matches!(c, ':' | '(' | ')' | ',' | '|' | '"' | '=' | '<' | '>' | '!')
}

/// Splits `query` into tokens.
///
/// After `field:` and after a comparison operator comes a value, read up to the next space,
/// `)`, `|` or `,`, so values may contain colons (`user:system:serviceaccount:ci:*`,
/// `time>=2026-03-02T08:00:00Z`); inside a value list `field:( … )` every word is such a value.
pub fn tokenize(query: &str) -> Result<Vec<Spanned>, QueryError> {
    let mut tokens: Vec<Spanned> = Vec::new();
    let mut chars = query.char_indices().peekable();
    let mut value_next = false;
    let mut in_value_list = false;
    while let Some(&(at, c)) = chars.peek() {
        let single = |token| Spanned { token, at };
        let expecting_value = std::mem::take(&mut value_next);
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                in_value_list = expecting_value;
                tokens.push(single(Token::Open));
            }
            ')' => {
                chars.next();
                in_value_list = false;
                tokens.push(single(Token::Close));
            }
            ':' | ',' | '|' => {
                chars.next();
                if c == ':' {
                    value_next = matches!(
                        tokens.last(),
                        Some(Spanned {
                            token: Token::Word(_),
                            ..
                        })
                    );
                }
                tokens.push(single(match c {
                    ':' => Token::Colon,
                    ',' => Token::Comma,
                    _ => Token::Pipe,
                }));
            }
            '"' => {
                chars.next();
                let mut text = String::new();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.next() {
                            Some((_, escaped)) => text.push(escaped),
                            None => break,
                        },
                        c => text.push(c),
                    }
                }
                if !closed {
                    return Err(QueryError::at(
                        at,
                        "this quoted string is never closed: add a `\"`",
                    ));
                }
                tokens.push(single(Token::Quoted(text)));
            }
            _ if expecting_value || in_value_list => {
                let mut word = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_whitespace() || matches!(c, ')' | '|' | ',' | '(') {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(single(Token::Word(word)));
            }
            '=' | '<' | '>' | '!' => {
                chars.next();
                let followed_by_eq = chars.peek().is_some_and(|&(_, n)| n == '=');
                let op = match (c, followed_by_eq) {
                    ('=', _) => CompareOp::Eq,
                    ('<', false) => CompareOp::Lt,
                    ('<', true) => CompareOp::Le,
                    ('>', false) => CompareOp::Gt,
                    ('>', true) => CompareOp::Ge,
                    ('!', true) => CompareOp::Ne,
                    _ => {
                        return Err(QueryError::at(
                            at,
                            "`!` must be followed by `=`; to negate a term write NOT or `-` before it",
                        ));
                    }
                };
                if followed_by_eq && c != '=' {
                    chars.next();
                }
                value_next = true;
                tokens.push(single(Token::Compare(op)));
            }
            '-' => {
                // A leading minus negates a term (`-verb:get`) or sorts descending (`sort -n`).
                chars.next();
                tokens.push(single(Token::Minus));
            }
            _ => {
                let mut word = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if ends_word(c) {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(single(Token::Word(word)));
            }
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(query: &str) -> Vec<Token> {
        tokenize(query)
            .unwrap()
            .into_iter()
            .map(|t| t.token)
            .collect()
    }

    #[test]
    fn values_keep_their_colons() {
        assert_eq!(
            words("user:system:serviceaccount:kube-system:* -verb:get"),
            [
                Token::Word("user".into()),
                Token::Colon,
                Token::Word("system:serviceaccount:kube-system:*".into()),
                Token::Minus,
                Token::Word("verb".into()),
                Token::Colon,
                Token::Word("get".into()),
            ]
        );
        assert_eq!(
            words("time>=2026-03-02T08:00:00Z"),
            [
                Token::Word("time".into()),
                Token::Compare(CompareOp::Ge),
                Token::Word("2026-03-02T08:00:00Z".into()),
            ]
        );
        assert_eq!(
            words("user:(system:kube-scheduler OR alice)"),
            [
                Token::Word("user".into()),
                Token::Colon,
                Token::Open,
                Token::Word("system:kube-scheduler".into()),
                Token::Word("OR".into()),
                Token::Word("alice".into()),
                Token::Close,
            ]
        );
    }

    #[test]
    fn unclosed_quotes_are_errors() {
        let e = tokenize("verb:get \"forbidden").unwrap_err();
        assert_eq!(e.position, 9);
    }
}
