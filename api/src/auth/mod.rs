//! Authentication: who a request comes from.
//!
//! Three ways in, as kube-apiserver offers them: a client certificate signed by the
//! cluster CA (CN = user, O = groups; checked once per connection by the TLS layer),
//! a bearer token listed in a static token file (`--token-auth-file`, the CSV
//! `token,user,uid,"group1,group2"`), or a ServiceAccount token the server signed
//! ([`service_account`]), or a bootstrap token ([`bootstrap_token`]) that lets a new
//! node ask for its certificate. Anything else is anonymous and gets 401.

pub mod bootstrap_token;
pub mod jwt;
pub mod service_account;

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// An authenticated user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// What else the authenticator knows (a pod-bound token's pod and credential id).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    pub fn new(name: String, uid: String, mut groups: Vec<String>) -> User {
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        User { name, uid, groups, extra: BTreeMap::new() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} line {line}: {why}")]
    Syntax { path: String, line: usize, why: &'static str },
}

/// The bearer tokens the server accepts.
#[derive(Default)]
pub struct Authenticator {
    tokens: HashMap<String, Arc<User>>,
    /// Issues and checks ServiceAccount tokens (absent in unit tests).
    service_accounts: Option<service_account::Tokens>,
}

impl Authenticator {
    pub fn with_token_file(path: &Path) -> Result<Authenticator, TokenFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| TokenFileError::Read { path: path.display().to_string(), source })?;
        Self::parse_token_file(&text).map_err(|(line, why)| TokenFileError::Syntax {
            path: path.display().to_string(),
            line,
            why,
        })
    }

    /// Parses the token file's text; the error names the line (1-based).
    pub(crate) fn parse_token_file(text: &str) -> Result<Authenticator, (usize, &'static str)> {
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_csv(line);
            if fields.len() < 3 {
                return Err((i + 1, "expected at least token,user,uid"));
            }
            if fields[0].is_empty() || fields[1].is_empty() {
                return Err((i + 1, "token and user must not be empty"));
            }
            let groups = fields
                .get(3)
                .map(|g| g.split(',').map(str::trim).filter(|g| !g.is_empty()).map(String::from).collect())
                .unwrap_or_default();
            tokens.insert(fields[0].clone(), Arc::new(User::new(fields[1].clone(), fields[2].clone(), groups)));
        }
        Ok(Authenticator { tokens, service_accounts: None })
    }

    /// Accepts ServiceAccount tokens signed by (and issues them with) `tokens`.
    pub fn with_service_accounts(mut self, tokens: service_account::Tokens) -> Authenticator {
        self.service_accounts = Some(tokens);
        self
    }

    pub fn service_accounts(&self) -> Option<&service_account::Tokens> {
        self.service_accounts.as_ref()
    }

    /// The user an `Authorization: Bearer` header speaks for: a static token's, or a
    /// ServiceAccount token's while it is valid at `now` (Unix seconds) and the objects
    /// it names exist (`lookup`).
    pub fn token(&self, authorization: &str, now: i64, lookup: service_account::Lookup<'_>) -> Option<Arc<User>> {
        let token = authorization.strip_prefix("Bearer ").or_else(|| authorization.strip_prefix("bearer "))?.trim();
        if let Some(user) = self.tokens.get(token) {
            return Some(Arc::clone(user));
        }
        match self.service_accounts.as_ref()?.authenticate(token, now, lookup) {
            Ok(user) => Some(Arc::new(user)),
            Err(error) => {
                tracing::debug!(%error, "bearer token refused");
                None
            }
        }
    }
}

/// A CSV line with double-quoted fields (the token file's format).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => fields.last_mut().expect("never empty").push(c),
        }
    }
    fields.into_iter().map(|f| f.trim().to_string()).collect()
}

/// The user a verified client certificate names (CN is the user, each O a group), and
/// when the certificate ends (Unix seconds): a connection made with it authenticates
/// only until then, however long it stays open.
pub fn user_from_certificate(der: &[u8]) -> Option<(User, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let groups = subject.iter_organization().filter_map(|o| o.as_str().ok()).map(String::from).collect();
    Some((User::new(name, String::new(), groups), cert.validity().not_after.timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_lines() {
        let auth =
            Authenticator::parse_token_file("# comment\nsecret-1,alice,u1,\"dev,ops\"\nsecret-2,bob,u2\n").unwrap();
        let token = |header: &str| auth.token(header, 0, &|_, _, _| None);
        let alice = token("Bearer secret-1").unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.groups, ["dev", "ops", "system:authenticated"]);
        assert_eq!(token("Bearer secret-2").unwrap().groups, ["system:authenticated"]);
        assert!(token("Bearer nope").is_none());
        assert!(token("Basic secret-1").is_none());
        assert_eq!(Authenticator::parse_token_file("only-token\n").err().map(|(line, _)| line), Some(1));
    }
}
