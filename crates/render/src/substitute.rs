//! `${VAR}` substitution in a kustomization's output, as Flux's post-build
//! does: `${VAR}`, `${VAR:=default}` and `${VAR:-default}` take the value
//! given in the config (or the default); `$${VAR}` is a literal `${VAR}`.
//!
//! Stricter than Flux by default: a variable with neither a value nor a
//! default is an error naming it, rather than an empty string that would
//! apply a half-configured object.

use std::collections::BTreeMap;

/// A variable with neither a value nor a default: its name and the line
/// (from 1) of its first use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "line {line}: variable {name} has no value: set it under substitute, or give a default as ${{{name}:=value}}"
)]
pub struct Undefined {
    pub name: String,
    pub line: usize,
}

/// Substitutes the variables of `text`; the error names the first
/// undefined variable and its line.
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Result<String, Undefined> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        // `$${…}`: the escape for a literal `${…}`.
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
            continue;
        }
        let Some(inner) = tail.strip_prefix("${") else {
            out.push('$');
            rest = &tail[1..];
            continue;
        };
        let Some(end) = inner.find('}') else {
            out.push_str(tail);
            rest = "";
            break;
        };
        let expression = &inner[..end];
        let (name, default) = match expression.find(":=").or_else(|| expression.find(":-")) {
            Some(i) => (&expression[..i], Some(&expression[i + 2..])),
            None => (expression, None),
        };
        if !is_name(name) {
            // Not a variable (a shell snippet in a ConfigMap, say): as is.
            out.push_str("${");
            rest = inner;
            continue;
        }
        match (vars.get(name), default) {
            (Some(value), _) => out.push_str(value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                let line = text[..text.len() - tail.len()].matches('\n').count() + 1;
                return Err(Undefined {
                    name: name.to_owned(),
                    line,
                });
            }
        }
        rest = &inner[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn is_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn values_defaults_and_escapes() {
        let v = vars(&[("CLUSTER", "eu-1"), ("REPLICAS", "3")]);
        assert_eq!(
            substitute("name: web-${CLUSTER}\nreplicas: ${REPLICAS}", &v).as_deref(),
            Ok("name: web-eu-1\nreplicas: 3")
        );
        assert_eq!(
            substitute("tier: ${TIER:=gold} ${ZONE:-a}", &v).as_deref(),
            Ok("tier: gold a")
        );
        assert_eq!(
            substitute("${CLUSTER:=other}", &v).as_deref(),
            Ok("eu-1"),
            "a value wins over the default"
        );
        assert_eq!(
            substitute("cmd: echo $${HOME} $5", &v).as_deref(),
            Ok("cmd: echo ${HOME} $5")
        );
        assert_eq!(
            substitute("x: ${not a var} ${unterminated", &v).as_deref(),
            Ok("x: ${not a var} ${unterminated")
        );
    }

    #[test]
    fn an_undefined_variable_is_named_with_its_line() {
        let e = substitute("a: 1\nb: ${MISSING}\n", &vars(&[])).expect_err("undefined");
        assert_eq!(
            e,
            Undefined {
                name: "MISSING".into(),
                line: 2
            }
        );
        assert_eq!(
            e.to_string(),
            "line 2: variable MISSING has no value: set it under substitute, or give a default as ${MISSING:=value}"
        );
    }
}
