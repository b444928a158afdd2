//! `http.tokens`: the API tokens file, one `<role> <token> [name]` per line
//! (roles `read` and `admin`, tokens of at least [`MIN_TOKEN_LEN`]
//! characters, `#` comments). Read and checked with the configuration
//! (`check-config` and the daemon's start refuse a bad one, exit 2); used
//! by `http::auth`.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;
use thiserror::Error;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read everything.
    Read,
    /// Read and change monitors, ask for scans.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Admin => "admin",
        }
    }
}

/// A tokens file that cannot be used.
#[derive(Debug, Error)]
pub enum TokensError {
    #[error("cannot read the tokens file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{path}: no tokens (write `<role> <token> [name]` lines, role read or admin)")]
    Empty { path: String },
}

/// The shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// One token's holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHolder {
    pub role: Role,
    /// The name given in the file, else `token <line>`.
    pub name: String,
}

/// The tokens of a tokens file.
#[derive(Clone, PartialEq, Eq)]
pub struct Tokens(HashMap<String, TokenHolder>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.0.len())
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Reads and checks a tokens file: `<role> <token> [name]` per line,
    /// `#` comments and blank lines ignored; every token at least
    /// [`MIN_TOKEN_LEN`] characters and used once.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: name.clone(),
            source,
        })?;
        Tokens::parse(&name, &text)
    }

    /// [`Tokens::load`] of `text`; `path` only names it in errors.
    pub fn parse(path: &str, text: &str) -> Result<Tokens, TokensError> {
        let mut tokens = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let err = |message: String| TokensError::Line {
                path: path.to_owned(),
                line: line_no,
                message,
            };
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(role), Some(token)) = (words.next(), words.next()) else {
                return Err(err(
                    "expected `<role> <token> [name]` (role read or admin)".to_owned()
                ));
            };
            let role = match role {
                "read" => Role::Read,
                "admin" => Role::Admin,
                other => {
                    return Err(err(format!("unknown role {other:?}: write read or admin")));
                }
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(err(format!(
                    "the token is too short ({} characters, at least {MIN_TOKEN_LEN}; e.g. \
                     `openssl rand -hex 24`)",
                    token.len()
                )));
            }
            let holder = TokenHolder {
                role,
                name: words
                    .next()
                    .map_or_else(|| format!("token {line_no}"), str::to_owned),
            };
            if tokens.insert(token.to_owned(), holder).is_some() {
                return Err(err("this token is listed twice".to_owned()));
            }
        }
        if tokens.is_empty() {
            return Err(TokensError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Tokens(tokens))
    }

    /// The holder of `token`, compared in constant time per candidate.
    pub fn holder(&self, token: &str) -> Option<&TokenHolder> {
        self.0
            .iter()
            .find(|(known, _)| constant_time_eq(known.as_bytes(), token.as_bytes()))
            .map(|(_, holder)| holder)
    }
}

/// Whether `a == b`, in time that depends on the length only.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
