//! Title and message templates: `{{user}} got {{value}} 403s`. A placeholder names a group
//! field of the monitor's `by` or one of [`BUILTINS`]; anything else is refused when the
//! monitor is loaded, so a typo never reaches a pager as an empty string. Values are inserted
//! as plain text: each channel escapes them for its own format.

/// Placeholders every template may use.
pub const BUILTINS: &[&str] = &[
    "monitor",
    "value",
    "threshold",
    "window",
    "severity",
    "level",
    "group",
    "state",
];

/// The placeholders of a template, or what is wrong with its syntax.
pub fn placeholders(text: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| {
            format!(
                "`{{{{` at character {} is not closed with `}}}}`",
                text.len() - rest.len() + start + 1
            )
        })?;
        let name = after[..end].trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(format!(
                "`{{{{{name}}}}}` is not a placeholder: write a field name like `{{{{user}}}}`"
            ));
        }
        names.push(name.to_owned());
        rest = &after[end + 2..];
    }
    Ok(names)
}

/// Checks a template against the placeholders it may use.
pub fn check(text: &str, allowed: &[String]) -> Result<(), String> {
    for name in placeholders(text)? {
        if !BUILTINS.contains(&name.as_str()) && !allowed.contains(&name) {
            let mut known: Vec<&str> = BUILTINS.to_vec();
            known.extend(allowed.iter().map(String::as_str));
            return Err(format!(
                "`{{{{{name}}}}}` is neither a field after `by` nor a built-in placeholder; use one of {}",
                known.join(", ")
            ));
        }
    }
    Ok(())
}

/// Fills a (checked) template.
pub fn render(text: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        out.push_str(&lookup(after[..end].trim()).unwrap_or_default());
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_checked_and_filled() {
        let allowed = vec!["user".to_owned()];
        assert!(check("{{user}} got {{ value }} 403s", &allowed).is_ok());
        assert!(check("{{usr}}", &allowed).unwrap_err().contains("user"));
        assert!(
            check("{{user", &allowed)
                .unwrap_err()
                .contains("not closed")
        );
        assert!(check("{{}}", &allowed).is_err());
        let text = render("{{user}} got {{value}} 403s", |n| match n {
            "user" => Some("alice".into()),
            "value" => Some("51".into()),
            _ => None,
        });
        assert_eq!(text, "alice got 51 403s");
    }
}
