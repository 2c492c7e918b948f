//! Label selectors as kubectl reads them (`team=a,tier in (x,y),!legacy`), turned into the
//! `metav1.LabelSelector` an ImageShare's `spec.recipientSelector` holds.
//!
//! The grammar and the conversion follow k8s.io/apimachinery (`labels.Parse`, then
//! `metav1.ParseToLabelSelector`), so a selector that works with `kubectl get ns -l` means the
//! same here: `=`/`==` become `matchLabels`, `!=` becomes `NotIn` with one value, `in`/`notin`
//! take a parenthesised list, a bare key is `Exists` and `!key` is `DoesNotExist`. `<` and `>`
//! parse in kubectl but have no LabelSelector form, so they are refused, as
//! `ParseToLabelSelector` refuses them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// Why a selector string was refused; `Display` names the input and the spot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad selector {input:?}: {reason}")]
pub struct SelectorError {
    pub input: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Comma,
    Open,
    Close,
    /// `=` or `==`: the same requirement.
    Equals,
    NotEquals,
    /// `!` before a key.
    Not,
    /// `<` or `>`, kept to refuse them by name.
    Compare(char),
    In,
    NotIn,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Ident(s) => format!("{s:?}"),
            Token::Comma => "','".into(),
            Token::Open => "'('".into(),
            Token::Close => "')'".into(),
            Token::Equals => "'='".into(),
            Token::NotEquals => "'!='".into(),
            Token::Not => "'!'".into(),
            Token::Compare(c) => format!("'{c}'"),
            Token::In => "'in'".into(),
            Token::NotIn => "'notin'".into(),
        }
    }
}

/// Splits like apimachinery's lexer: the special characters `=!(),<>` and whitespace end an
/// identifier; `in` and `notin` are keywords wherever they stand alone.
fn lex(input: &str) -> Vec<Token> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let (token, len) = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            ',' => (Token::Comma, 1),
            '(' => (Token::Open, 1),
            ')' => (Token::Close, 1),
            '=' if next == Some('=') => (Token::Equals, 2),
            '=' => (Token::Equals, 1),
            '!' if next == Some('=') => (Token::NotEquals, 2),
            '!' => (Token::Not, 1),
            '<' | '>' => (Token::Compare(c), 1),
            _ => {
                let word: String = chars[i..]
                    .iter()
                    .take_while(|c| !c.is_whitespace() && !"=!(),<>".contains(**c))
                    .collect();
                let len = word.chars().count();
                let token = match word.as_str() {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    _ => Token::Ident(word),
                };
                (token, len)
            }
        };
        tokens.push(token);
        i += len;
    }
    tokens
}

/// One parsed requirement, before it is sorted into matchLabels or matchExpressions.
#[derive(Debug)]
enum Requirement {
    Equals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

struct Parser<'a> {
    tokens: Vec<Token>,
    at: usize,
    input: &'a str,
}

impl Parser<'_> {
    fn error(&self, reason: impl Into<String>) -> SelectorError {
        SelectorError {
            input: self.input.to_string(),
            reason: reason.into(),
        }
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        match self.next() {
            Some(Token::Ident(key)) => {
                check_key(&key).map_err(|reason| self.error(reason))?;
                Ok(key)
            }
            Some(other) => Err(self.error(format!("expected a label key, found {}", other.describe()))),
            None => Err(self.error("expected a label key, found the end")),
        }
    }

    fn value(&mut self) -> Result<String, SelectorError> {
        // `key=` followed by the end or a comma selects the empty value, as in kubectl.
        let value = match self.peek() {
            None | Some(Token::Comma) => String::new(),
            Some(Token::Ident(_)) => match self.next() {
                Some(Token::Ident(v)) => v,
                _ => unreachable!("peeked an identifier"),
            },
            Some(other) => return Err(self.error(format!("expected a label value, found {}", other.describe()))),
        };
        check_value(&value).map_err(|reason| self.error(reason))?;
        Ok(value)
    }

    /// `( v1, v2 )`: at least one value, each a valid label value (the empty one included).
    fn values(&mut self, key: &str, op: &str) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            Some(Token::Open) => {}
            Some(other) => {
                return Err(self.error(format!("expected '(' after '{key} {op}', found {}", other.describe())));
            }
            None => return Err(self.error(format!("expected '(' after '{key} {op}', found the end"))),
        }
        if self.peek() == Some(&Token::Close) {
            return Err(self.error(format!("'{key} {op} ()' needs at least one value")));
        }
        let mut values = Vec::new();
        loop {
            let value = match self.peek() {
                Some(Token::Comma) | Some(Token::Close) => String::new(),
                Some(Token::Ident(_)) => match self.next() {
                    Some(Token::Ident(v)) => v,
                    _ => unreachable!("peeked an identifier"),
                },
                Some(other) => return Err(self.error(format!("expected a label value, found {}", other.describe()))),
                None => return Err(self.error(format!("missing ')' after the values of '{key} {op}'"))),
            };
            check_value(&value).map_err(|reason| self.error(reason))?;
            values.push(value);
            match self.next() {
                Some(Token::Comma) => {}
                Some(Token::Close) => break,
                Some(other) => return Err(self.error(format!("expected ',' or ')', found {}", other.describe()))),
                None => return Err(self.error(format!("missing ')' after the values of '{key} {op}'"))),
            }
        }
        values.sort();
        values.dedup();
        Ok(values)
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if self.peek() == Some(&Token::Not) {
            self.next();
            return Ok(Requirement::DoesNotExist(self.key()?));
        }
        let key = self.key()?;
        match self.peek() {
            None | Some(Token::Comma) => return Ok(Requirement::Exists(key)),
            _ => {}
        }
        match self.next() {
            Some(Token::Equals) => Ok(Requirement::Equals(key, self.value()?)),
            Some(Token::NotEquals) => Ok(Requirement::NotIn(key, vec![self.value()?])),
            Some(Token::In) => Ok(Requirement::In(key.clone(), self.values(&key, "in")?)),
            Some(Token::NotIn) => Ok(Requirement::NotIn(key.clone(), self.values(&key, "notin")?)),
            Some(Token::Compare(c)) => Err(self.error(format!(
                "'{key} {c} …' compares numbers, which a label selector of an object can not express; use in/notin"
            ))),
            Some(other) => Err(self.error(format!(
                "expected '=', '==', '!=', 'in' or 'notin' after {key:?}, found {}",
                other.describe()
            ))),
            None => unreachable!("the end was handled above"),
        }
    }
}

/// Parses a kubectl-style selector. An empty selector is refused: as a recipient selector it
/// would select every namespace of the cluster, which nobody means by leaving it out.
pub fn parse(input: &str) -> Result<LabelSelector, SelectorError> {
    let mut parser = Parser {
        tokens: lex(input),
        at: 0,
        input,
    };
    if parser.tokens.is_empty() {
        return Err(parser.error("it is empty, which would select every namespace"));
    }
    let mut requirements = Vec::new();
    loop {
        requirements.push(parser.requirement()?);
        match parser.next() {
            None => break,
            Some(Token::Comma) => {}
            Some(other) => return Err(parser.error(format!("expected ',' or the end, found {}", other.describe()))),
        }
    }
    Ok(to_label_selector(requirements))
}

/// As `metav1.ParseToLabelSelector`, except that a second `key=value` for a key already in
/// matchLabels becomes an `In` expression instead of overwriting the first: the requirements
/// are ANDed, and a map can hold only one value per key.
fn to_label_selector(requirements: Vec<Requirement>) -> LabelSelector {
    let mut labels = BTreeMap::new();
    let mut expressions = Vec::new();
    let expression = |key: String, operator: &str, values: Option<Vec<String>>| LabelSelectorRequirement {
        key,
        operator: operator.to_string(),
        values,
    };
    for requirement in requirements {
        match requirement {
            Requirement::Equals(key, value) => match labels.get(&key) {
                None => {
                    labels.insert(key, value);
                }
                Some(existing) if *existing == value => {}
                Some(_) => expressions.push(expression(key, "In", Some(vec![value]))),
            },
            Requirement::In(key, values) => expressions.push(expression(key, "In", Some(values))),
            Requirement::NotIn(key, values) => expressions.push(expression(key, "NotIn", Some(values))),
            Requirement::Exists(key) => expressions.push(expression(key, "Exists", None)),
            Requirement::DoesNotExist(key) => expressions.push(expression(key, "DoesNotExist", None)),
        }
    }
    LabelSelector {
        match_labels: (!labels.is_empty()).then_some(labels),
        match_expressions: (!expressions.is_empty()).then_some(expressions),
    }
}

/// A label name: at most 63 alphanumerics, `-`, `_` or `.`, beginning and ending with an
/// alphanumeric.
fn is_label_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && s.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A DNS-1123 subdomain: the prefix of a label key.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            let bytes = part.as_bytes();
            !part.is_empty()
                && bytes[0].is_ascii_alphanumeric()
                && bytes[bytes.len() - 1].is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        })
}

fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !is_dns_subdomain(prefix)
    {
        return Err(format!(
            "{key:?} is not a label key: its prefix {prefix:?} must be a DNS subdomain (lowercase letters, digits, '-' and '.')"
        ));
    }
    if !is_label_name(name) {
        return Err(format!(
            "{key:?} is not a label key: the name must be 1-63 letters, digits, '-', '_' or '.', beginning and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a label value: at most 63 letters, digits, '-', '_' or '.', beginning and ending with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json_of(input: &str) -> serde_json::Value {
        serde_json::to_value(parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"))).unwrap()
    }

    fn reason(input: &str) -> String {
        parse(input).expect_err(input).reason
    }

    #[test]
    fn the_kubectl_forms_become_match_labels_and_expressions() {
        assert_eq!(
            json_of("team=a,tier in (x,y),!legacy"),
            json!({
                "matchLabels": {"team": "a"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["x", "y"]},
                    {"key": "legacy", "operator": "DoesNotExist"},
                ],
            })
        );
        assert_eq!(
            json_of(" env == prod , region notin ( eu , us ) , gpu , zone!=b "),
            json!({
                "matchLabels": {"env": "prod"},
                "matchExpressions": [
                    {"key": "region", "operator": "NotIn", "values": ["eu", "us"]},
                    {"key": "gpu", "operator": "Exists"},
                    {"key": "zone", "operator": "NotIn", "values": ["b"]},
                ],
            })
        );
        assert_eq!(json_of("team=a"), json!({"matchLabels": {"team": "a"}}));
        assert_eq!(
            json_of("!legacy"),
            json!({"matchExpressions": [{"key": "legacy", "operator": "DoesNotExist"}]})
        );
    }

    #[test]
    fn prefixed_keys_empty_values_and_sorted_sets_are_kept() {
        assert_eq!(
            json_of("example.com/tier in (b,a,b),app.kubernetes.io/part-of=,x=1"),
            json!({
                "matchLabels": {"app.kubernetes.io/part-of": "", "x": "1"},
                "matchExpressions": [{"key": "example.com/tier", "operator": "In", "values": ["a", "b"]}],
            })
        );
        assert_eq!(
            json_of("t in (a,)"),
            json!({"matchExpressions": [{"key": "t", "operator": "In", "values": ["", "a"]}]})
        );
    }

    #[test]
    fn a_key_required_twice_stays_required_twice() {
        // Both must hold (nothing matches); overwriting the first would select team=b.
        assert_eq!(
            json_of("team=a,team=b,team=a"),
            json!({
                "matchLabels": {"team": "a"},
                "matchExpressions": [{"key": "team", "operator": "In", "values": ["b"]}],
            })
        );
    }

    #[test]
    fn malformed_selectors_are_refused_with_the_reason() {
        assert!(reason("").contains("empty"), "{}", reason(""));
        assert!(reason("  ").contains("empty"));
        assert!(reason("tier in (x").contains("missing ')'"), "{}", reason("tier in (x"));
        assert!(reason("tier in x").contains("expected '('"), "{}", reason("tier in x"));
        assert!(reason("tier in ()").contains("at least one value"));
        assert!(reason("a=b,").contains("found the end"), "{}", reason("a=b,"));
        assert!(reason(",a").contains("found ','"), "{}", reason(",a"));
        assert!(reason("a b").contains("expected '='"), "{}", reason("a b"));
        assert!(
            reason("a=b c").contains("expected ',' or the end"),
            "{}",
            reason("a=b c")
        );
        assert!(reason("replicas>2").contains("in/notin"), "{}", reason("replicas>2"));
        assert!(reason("-bad=x").contains("not a label key"));
        assert!(reason("Bad.Prefix/x=y").contains("prefix"));
        assert!(reason("a=-x").contains("not a label value"));
        assert!(reason(&format!("a={}", "v".repeat(64))).contains("not a label value"));
        assert!(reason("!").contains("expected a label key"));
        assert_eq!(json_of("a=="), json!({"matchLabels": {"a": ""}}));
        let e = parse("team=a,tier in (x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad selector \"team=a,tier in (x\": missing ')' after the values of 'tier in'"
        );
    }
}
