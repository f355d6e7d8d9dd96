//! Label selectors: `app=web,tier in (fe,be),!canary,release`.
//!
//! Parsed once (from a query string or a `metav1.LabelSelector`) into a [`Selector`]:
//! a conjunction of [`Requirement`]s. Matching borrows the labels and allocates
//! nothing: requirement values are kept sorted so set membership is a binary search.

use crate::validation;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;
use std::fmt;

/// Anything that can answer "what is the value of label `key`?".
pub trait Labels {
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Labels for [(&str, &str)] {
    fn label(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

impl<T: Labels + ?Sized> Labels for &T {
    fn label(&self, key: &str) -> Option<&str> {
        (**self).label(key)
    }
}

/// The operator of one requirement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `k=v`, `k==v`
    Equals,
    /// `k!=v`: also true when the label is absent, as in Kubernetes.
    NotEquals,
    In,
    /// `k notin (a,b)`: also true when the label is absent.
    NotIn,
    /// `k`
    Exists,
    /// `!k`
    DoesNotExist,
    /// `k>5`: the label must exist and parse as an integer greater than the value.
    GreaterThan,
    /// `k<5`
    LessThan,
}

/// One condition on one label key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Requirement {
    key: String,
    operator: Operator,
    /// Sorted and deduplicated.
    values: Vec<String>,
}

impl Requirement {
    /// Checks the key and values as Kubernetes does and sorts the values.
    pub fn new(key: &str, operator: Operator, mut values: Vec<String>) -> Result<Requirement, SelectorError> {
        if let Some(problem) = validation::qualified_name(key).into_iter().next() {
            return Err(SelectorError::InvalidKey { key: key.to_owned(), problem });
        }
        let expected = match operator {
            Operator::Equals | Operator::NotEquals | Operator::GreaterThan | Operator::LessThan => Some(1),
            Operator::Exists | Operator::DoesNotExist => Some(0),
            Operator::In | Operator::NotIn => None,
        };
        match expected {
            Some(count) if values.len() != count => {
                return Err(SelectorError::ValueCount { key: key.to_owned(), expected: count, found: values.len() })
            }
            None if values.is_empty() => {
                return Err(SelectorError::ValueCount { key: key.to_owned(), expected: 1, found: 0 })
            }
            _ => {}
        }
        for value in &values {
            if matches!(operator, Operator::GreaterThan | Operator::LessThan) {
                if value.parse::<i64>().is_err() {
                    return Err(SelectorError::InvalidValue {
                        value: value.clone(),
                        problem: "for 'Gt', 'Lt' operators, the value must be an integer".into(),
                    });
                }
            } else if let Some(problem) = validation::label_value(value).into_iter().next() {
                return Err(SelectorError::InvalidValue { value: value.clone(), problem });
            }
        }
        values.sort_unstable();
        values.dedup();
        Ok(Requirement { key: key.to_owned(), operator, values })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    pub fn values(&self) -> &[String] {
        &self.values
    }

    fn contains(&self, value: &str) -> bool {
        self.values.binary_search_by(|probe| probe.as_str().cmp(value)).is_ok()
    }

    /// Whether `labels` satisfy this requirement. Allocation-free.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        let value = labels.label(&self.key);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(|v| self.contains(v)),
            Operator::NotEquals | Operator::NotIn => !value.is_some_and(|v| self.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(found), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    found > bound
                } else {
                    found < bound
                }
            }
        }
    }
}

/// A conjunction of requirements; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Selector {
    requirements: Vec<Requirement>,
    /// `true` for the selector that matches nothing (a nil `metav1.LabelSelector` where
    /// Kubernetes treats nil as "select none").
    nothing: bool,
}

/// Why a selector was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("unable to parse requirement: found '{found}', expected: {expected}")]
    Syntax { found: String, expected: &'static str },
    #[error("unable to parse requirement: invalid label key \"{key}\": {problem}")]
    InvalidKey { key: String, problem: String },
    #[error("unable to parse requirement: invalid label value: \"{value}\": at key: {problem}")]
    InvalidValue { value: String, problem: String },
    #[error("operator for key \"{key}\" takes {expected} value(s), found {found}")]
    ValueCount { key: String, expected: usize, found: usize },
    #[error("{0:?} is not a valid label selector operator")]
    UnknownOperator(String),
}

impl Selector {
    /// Matches every object.
    pub fn everything() -> Selector {
        Selector::default()
    }

    /// Matches no object.
    pub fn nothing() -> Selector {
        Selector { requirements: Vec::new(), nothing: true }
    }

    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Selector {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Selector { requirements, nothing: false }
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    pub fn is_everything(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// Whether `labels` satisfy every requirement. Allocation-free.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Parses the `labelSelector` query syntax.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        Parser { text, position: 0 }.selector()
    }

    /// Converts a `metav1.LabelSelector` (matchLabels and matchExpressions).
    pub fn from_label_selector(selector: &LabelSelector) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement::new(key, Operator::Equals, vec![value.clone()])?);
        }
        for expression in selector.match_expressions.iter().flatten() {
            let operator = match expression.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => return Err(SelectorError::UnknownOperator(other.to_owned())),
            };
            let values = expression.values.clone().unwrap_or_default();
            requirements.push(Requirement::new(&expression.key, operator, values)?);
        }
        Ok(Selector::from_requirements(requirements))
    }
}

impl fmt::Display for Selector {
    /// The canonical query form, requirements sorted by key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, requirement) in self.requirements.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            let key = &requirement.key;
            let values = requirement.values.join(",");
            match requirement.operator {
                Operator::Equals => write!(f, "{key}={values}")?,
                Operator::NotEquals => write!(f, "{key}!={values}")?,
                Operator::In => write!(f, "{key} in ({values})")?,
                Operator::NotIn => write!(f, "{key} notin ({values})")?,
                Operator::Exists => write!(f, "{key}")?,
                Operator::DoesNotExist => write!(f, "!{key}")?,
                Operator::GreaterThan => write!(f, "{key}>{values}")?,
                Operator::LessThan => write!(f, "{key}<{values}")?,
            }
        }
        Ok(())
    }
}

/// A hand-written scanner over the selector text. Tokens: identifiers (keys, values,
/// `in`, `notin`), `!`, `=`, `==`, `!=`, `>`, `<`, `(`, `)`, `,`.
struct Parser<'a> {
    text: &'a str,
    position: usize,
}

fn is_word_byte(b: u8) -> bool {
    !b.is_ascii_whitespace() && !matches!(b, b'!' | b'=' | b'>' | b'<' | b'(' | b')' | b',')
}

impl<'a> Parser<'a> {
    fn skip_space(&mut self) {
        while self.text.as_bytes().get(self.position).is_some_and(u8::is_ascii_whitespace) {
            self.position += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.text.as_bytes().get(self.position).copied()
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.text[self.position..].starts_with(token) {
            self.position += token.len();
            true
        } else {
            false
        }
    }

    fn word(&mut self) -> &'a str {
        self.skip_space();
        let start = self.position;
        while self.text.as_bytes().get(self.position).copied().is_some_and(is_word_byte) {
            self.position += 1;
        }
        &self.text[start..self.position]
    }

    fn found(&mut self) -> String {
        self.skip_space();
        self.text[self.position..].chars().next().map(String::from).unwrap_or_else(|| "EOF".into())
    }

    fn selector(mut self) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        if self.peek().is_none() {
            return Ok(Selector::everything());
        }
        loop {
            requirements.push(self.requirement()?);
            match self.peek() {
                None => break,
                Some(b',') => self.position += 1,
                Some(_) => return Err(SelectorError::Syntax { found: self.found(), expected: "',' or end of string" }),
            }
        }
        Ok(Selector::from_requirements(requirements))
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if self.peek() == Some(b'!') && !self.text[self.position..].starts_with("!=") {
            self.position += 1;
            let key = self.word();
            if key.is_empty() {
                return Err(SelectorError::Syntax { found: self.found(), expected: "identifier after '!'" });
            }
            return Requirement::new(key, Operator::DoesNotExist, Vec::new());
        }
        let key = self.word();
        if key.is_empty() {
            return Err(SelectorError::Syntax { found: self.found(), expected: "identifier" });
        }
        let operator = match self.peek() {
            None | Some(b',') => return Requirement::new(key, Operator::Exists, Vec::new()),
            _ if self.eat("==") || self.eat("=") => Operator::Equals,
            _ if self.eat("!=") => Operator::NotEquals,
            _ if self.eat(">") => Operator::GreaterThan,
            _ if self.eat("<") => Operator::LessThan,
            _ => match self.word() {
                "in" => Operator::In,
                "notin" => Operator::NotIn,
                _ => return Err(SelectorError::Syntax { found: self.found(), expected: "=, !=, ==, in, notin, >, <" }),
            },
        };
        let values = if matches!(operator, Operator::In | Operator::NotIn) {
            self.value_set()?
        } else {
            vec![self.word().to_owned()]
        };
        Requirement::new(key, operator, values)
    }

    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        if !self.eat("(") {
            return Err(SelectorError::Syntax { found: self.found(), expected: "'(' after in/notin" });
        }
        let mut values = Vec::new();
        loop {
            values.push(self.word().to_owned());
            if self.eat(",") {
                continue;
            }
            if self.eat(")") {
                return Ok(values);
            }
            return Err(SelectorError::Syntax { found: self.found(), expected: "',' or ')'" });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn matching_table() {
        let web = labels(&[("app", "web"), ("tier", "fe"), ("replicas", "3")]);
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("tier in (fe,be)", true),
            ("tier in (be)", false),
            ("tier notin (be)", true),
            ("missing notin (be)", true),
            ("app", true),
            ("!app", false),
            ("!canary", true),
            ("app=web, tier in ( fe )", true),
            ("replicas>2", true),
            ("replicas<3", false),
            ("app=", false),
            ("app=web,!tier", false),
        ];
        for (text, expected) in cases {
            let selector = Selector::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(selector.matches(&web), expected, "{text:?}");
        }
    }

    #[test]
    fn empty_value_matches_empty_label() {
        let selector = Selector::parse("app=").unwrap();
        assert!(selector.matches(&labels(&[("app", "")])));
    }

    #[test]
    fn rejects_bad_syntax() {
        for text in ["app in", "app in (a", "=x", "app=a=b", "app in a", "-bad=x", "app=-x", "a,", "replicas>x", "!"] {
            assert!(Selector::parse(text).is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn display_is_canonical() {
        let selector = Selector::parse("tier in (be,fe) , app=web,!x").unwrap();
        assert_eq!(selector.to_string(), "app=web,tier in (be,fe),!x");
        assert_eq!(Selector::parse(&selector.to_string()).unwrap(), selector);
    }

    #[test]
    fn from_metav1_label_selector() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
        let selector = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        };
        let selector = Selector::from_label_selector(&selector).unwrap();
        assert!(selector.matches(&labels(&[("app", "web")])));
        assert!(!selector.matches(&labels(&[("app", "web"), ("tier", "db")])));
        assert!(!Selector::nothing().matches(&labels(&[])));
    }
}
