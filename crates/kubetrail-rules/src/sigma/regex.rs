//! Sigma's `|re` values, converted where a regular expression says no more than a few
//! wildcard patterns do: kubetrail's query language has no regular expressions, so
//! `%2f(bin|usr%2fbin)%2f(sh|bash)` becomes the four patterns `*%2fbin%2fsh*`, … and anything
//! beyond literals, alternation, optional parts, small character classes, `.*` and the anchors
//! `^`/`$` at the ends is refused by name.

use super::detection::{Glob, GlobPart};

/// The most patterns one regular expression may expand to.
pub(crate) const MAX_ALTERNATIVES: usize = 64;

/// The deepest nesting of groups read.
const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Elem {
    Char(char),
    /// `.*`: any run of characters.
    Any,
    /// `^`
    Start,
    /// `$`
    End,
}

type Seq = Vec<Elem>;

/// The wildcard patterns whose union matches what `regex` finds (unanchored, as Sigma
/// searches), or the construct that cannot be converted.
pub(crate) fn to_globs(regex: &str) -> Result<Vec<Glob>, String> {
    let mut parser = Parser {
        chars: regex.chars().collect(),
        pos: 0,
        depth: 0,
    };
    let seqs = parser.alternation()?;
    if let Some(c) = parser.peek() {
        return Err(format!("an unmatched `{c}`"));
    }
    seqs.into_iter().map(|seq| glob_of(&seq)).collect()
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn alternation(&mut self) -> Result<Vec<Seq>, String> {
        let mut out = self.concat()?;
        while self.peek() == Some('|') {
            self.pos += 1;
            out.extend(self.concat()?);
            if out.len() > MAX_ALTERNATIVES {
                return Err(too_many());
            }
        }
        Ok(out)
    }

    fn concat(&mut self) -> Result<Vec<Seq>, String> {
        let mut seqs: Vec<Seq> = vec![Vec::new()];
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let (atom, quantifiable) = self.atom()?;
            let atom = if quantifiable {
                self.quantified(atom)?
            } else {
                atom
            };
            let mut product = Vec::new();
            for seq in &seqs {
                for tail in &atom {
                    let mut joined = seq.clone();
                    joined.extend(tail.iter().cloned());
                    product.push(joined);
                    if product.len() > MAX_ALTERNATIVES {
                        return Err(too_many());
                    }
                }
            }
            seqs = product;
        }
        Ok(seqs)
    }

    /// One atom: its expansions, and whether a quantifier may follow it.
    fn atom(&mut self) -> Result<(Vec<Seq>, bool), String> {
        let Some(c) = self.peek() else {
            return Err("a regular expression that ends too early".to_owned());
        };
        self.pos += 1;
        match c {
            '(' => {
                if self.peek() == Some('?') {
                    if self.chars.get(self.pos + 1) == Some(&':') {
                        self.pos += 2;
                    } else {
                        return Err("`(?…)` (flags, named groups or look-around)".to_owned());
                    }
                }
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(format!("groups nested more than {MAX_DEPTH} deep"));
                }
                let inner = self.alternation()?;
                self.depth -= 1;
                if self.peek() != Some(')') {
                    return Err("a `(` that is never closed".to_owned());
                }
                self.pos += 1;
                Ok((inner, true))
            }
            '[' => Ok((self.class()?, true)),
            '.' => {
                if self.peek() == Some('*') {
                    self.pos += 1;
                    if self.peek() == Some('?') {
                        self.pos += 1;
                    }
                    Ok((vec![vec![Elem::Any]], false))
                } else {
                    Err("`.` other than in `.*` (exactly one character of any kind)".to_owned())
                }
            }
            '^' => Ok((vec![vec![Elem::Start]], false)),
            '$' => Ok((vec![vec![Elem::End]], false)),
            '\\' => Ok((vec![vec![Elem::Char(self.escaped()?)]], true)),
            '*' | '+' | '?' | '{' => Err(format!("`{c}` with nothing before it to repeat")),
            c => Ok((vec![vec![Elem::Char(c)]], true)),
        }
    }

    /// The character after a `\`: escaped punctuation is itself; classes such as `\d` and
    /// escapes such as `\n` are refused.
    fn escaped(&mut self) -> Result<char, String> {
        let Some(c) = self.peek() else {
            return Err("a `\\` at the end".to_owned());
        };
        self.pos += 1;
        if c.is_ascii_punctuation() || c == ' ' {
            Ok(c)
        } else {
            Err(format!("the escape `\\{c}`"))
        }
    }

    fn quantified(&mut self, atom: Vec<Seq>) -> Result<Vec<Seq>, String> {
        match self.peek() {
            Some('?') => {
                self.pos += 1;
                if self.peek() == Some('?') {
                    self.pos += 1;
                }
                let mut out = atom;
                out.push(Vec::new());
                if out.len() > MAX_ALTERNATIVES {
                    return Err(too_many());
                }
                Ok(out)
            }
            Some('*') => Err(
                "`*` after a character or group (only `.*`, any run of characters, converts)"
                    .to_owned(),
            ),
            Some('+') => Err("the quantifier `+`".to_owned()),
            Some('{') => Err("a counted repetition `{n,m}`".to_owned()),
            _ => Ok(atom),
        }
    }

    /// `[abc]`, `[a-c]`: one alternative per character.
    fn class(&mut self) -> Result<Vec<Seq>, String> {
        if self.peek() == Some('^') {
            return Err("a negated character class `[^…]`".to_owned());
        }
        let mut members: Vec<char> = Vec::new();
        let mut first = true;
        loop {
            let Some(c) = self.peek() else {
                return Err("a `[` that is never closed".to_owned());
            };
            self.pos += 1;
            if c == ']' && !first {
                break;
            }
            first = false;
            let low = if c == '\\' { self.escaped()? } else { c };
            if self.peek() == Some('-') && self.chars.get(self.pos + 1).is_some_and(|n| *n != ']') {
                self.pos += 1;
                let Some(high) = self.peek() else {
                    return Err("a `[` that is never closed".to_owned());
                };
                self.pos += 1;
                let high = if high == '\\' { self.escaped()? } else { high };
                if high < low {
                    return Err(format!("the empty range `{low}-{high}`"));
                }
                for member in low..=high {
                    members.push(member);
                    if members.len() > MAX_ALTERNATIVES {
                        return Err(too_many());
                    }
                }
            } else {
                members.push(low);
            }
            if members.len() > MAX_ALTERNATIVES {
                return Err(too_many());
            }
        }
        members.sort_unstable();
        members.dedup();
        Ok(members.into_iter().map(|c| vec![Elem::Char(c)]).collect())
    }
}

fn too_many() -> String {
    format!("a regular expression that expands to more than {MAX_ALTERNATIVES} wildcard patterns")
}

/// One expansion as a pattern: unanchored ends become runs of any characters.
fn glob_of(seq: &[Elem]) -> Result<Glob, String> {
    let mut parts = Vec::new();
    let anchored_start = seq.first() == Some(&Elem::Start);
    let anchored_end = seq.last() == Some(&Elem::End) && seq.len() > usize::from(anchored_start);
    let body = &seq[usize::from(anchored_start)..seq.len() - usize::from(anchored_end)];
    if !anchored_start {
        parts.push(GlobPart::Any);
    }
    for elem in body {
        match elem {
            Elem::Char(c) => match parts.last_mut() {
                Some(GlobPart::Lit(text)) => text.push(*c),
                _ => parts.push(GlobPart::Lit(c.to_string())),
            },
            Elem::Any => parts.push(GlobPart::Any),
            Elem::Start => return Err("`^` other than at the start".to_owned()),
            Elem::End => return Err("`$` other than at the end".to_owned()),
        }
    }
    if !anchored_end {
        parts.push(GlobPart::Any);
    }
    Ok(Glob::new(parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs(regex: &str) -> Vec<String> {
        to_globs(regex)
            .unwrap()
            .iter()
            .map(|g| g.to_pattern())
            .collect()
    }

    #[test]
    fn alternations_and_optional_parts_expand() {
        assert_eq!(globs("a(b|c)d"), ["*abd*", "*acd*"]);
        assert_eq!(
            globs("^kube-(system|public)$"),
            ["kube-system", "kube-public"]
        );
        assert_eq!(globs("^/api/.*/exec"), ["/api/*/exec*"]);
        assert_eq!(globs("(ba)?sh$"), ["*bash", "*sh"]);
        assert_eq!(globs("%20-[icl]"), ["*%20-c*", "*%20-i*", "*%20-l*"]);
        assert_eq!(globs(r"a\.b"), ["*a.b*"]);
    }

    #[test]
    fn the_upstream_enumeration_regex_converts() {
        let all = globs(
            "%2f(bin%2f(ash|bash|busybox|dash|sh|zsh)|usr%2fbin%2f(curl|kubectl|perl|python|wget))|%20-[icl]",
        );
        assert_eq!(all.len(), 14);
        assert!(all.contains(&"*%2fbin%2fbusybox*".to_owned()));
        assert!(all.contains(&"*%2fusr%2fbin%2fwget*".to_owned()));
        assert!(all.contains(&"*%20-l*".to_owned()));
    }

    #[test]
    fn what_patterns_cannot_say_is_named() {
        for (regex, construct) in [
            (r"\d+", r"the escape `\d`"),
            ("a+", "`+`"),
            ("a.b", "`.` other than in `.*`"),
            ("[^a]", "negated"),
            ("(?i)a", "`(?…)`"),
            ("a{2}", "`{n,m}`"),
            ("a*", "`*` after a character"),
            ("a^b", "`^` other than at the start"),
            ("[a-z][a-z]", "more than 64"),
        ] {
            let error = to_globs(regex).unwrap_err();
            assert!(error.contains(construct), "{regex}: {error}");
        }
    }

    #[test]
    fn nesting_is_limited() {
        let deep = format!("{}a{}", "(".repeat(40), ")".repeat(40));
        assert!(to_globs(&deep).unwrap_err().contains("nested"));
    }
}
