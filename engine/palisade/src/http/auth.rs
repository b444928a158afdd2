//! Who may do what: API tokens from the file named by `http.tokens`
//! (`<role> <token> [name]` per line, roles `read` and `admin`), sent as
//! `Authorization: Bearer <token>`; the dashboard logs in with a token and
//! keeps a session cookie (HttpOnly, SameSite=Strict) whose writes carry a
//! CSRF token. Without a tokens file (allowed only on loopback) whoever
//! reaches the server is an admin, through a session all the same (so that
//! forms still carry CSRF tokens).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use base64::Engine;
use thiserror::Error;

use crate::config::tokens::constant_time_eq;
pub use crate::config::tokens::{MIN_TOKEN_LEN, Role, TokenHolder, Tokens, TokensError};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "palisade_session";
/// How long a session lasts without use.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// The header an API write over a session cookie carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub role: Role,
    pub name: String,
    /// The token its forms carry.
    pub csrf: String,
    last_used: Instant,
}

/// Who is calling, and how they proved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    /// The token's name, or `local` without a tokens file.
    pub name: String,
    /// A session's CSRF token: writes through a session must carry it.
    /// `None` for a bearer token (no cookie, no CSRF).
    pub csrf: Option<String>,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Denied {
    #[error("authentication required: send `Authorization: Bearer <token>` or log in")]
    Unauthenticated,
    #[error("the token is not valid")]
    BadToken,
    #[error("this needs the admin role; the token is read-only")]
    Forbidden,
    #[error("the form or request lacks a valid CSRF token: reload the page and try again")]
    Csrf,
}

impl Caller {
    /// `Ok` if the caller has at least `role`.
    pub fn require(&self, role: Role) -> Result<(), Denied> {
        if self.role >= role {
            Ok(())
        } else {
            Err(Denied::Forbidden)
        }
    }

    /// `Ok` for a bearer caller, or a session caller whose request carries
    /// its CSRF token (`given`).
    pub fn check_csrf(&self, given: Option<&str>) -> Result<(), Denied> {
        match (&self.csrf, given) {
            (None, _) => Ok(()),
            (Some(expected), Some(given))
                if constant_time_eq(expected.as_bytes(), given.as_bytes()) =>
            {
                Ok(())
            }
            _ => Err(Denied::Csrf),
        }
    }
}

/// Tokens and sessions.
#[derive(Debug)]
pub struct Auth {
    tokens: Option<Tokens>,
    tokens_path: Option<PathBuf>,
    sessions: Mutex<HashMap<String, Session>>,
}

impl Auth {
    /// With the tokens of `tokens_path`, or open (loopback only) without.
    pub fn new(tokens_path: Option<&Path>) -> Result<Auth, TokensError> {
        let tokens = tokens_path.map(Tokens::load).transpose()?;
        Ok(Auth {
            tokens,
            tokens_path: tokens_path.map(Path::to_path_buf),
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// Whether callers must prove who they are.
    pub fn required(&self) -> bool {
        self.tokens.is_some()
    }

    /// The tokens file, if any.
    pub fn tokens_path(&self) -> Option<&Path> {
        self.tokens_path.as_deref()
    }

    /// Who sent a request with these headers: a bearer token first, then a
    /// session cookie; without a tokens file, an admin named `local`
    /// (through its session if it has one, for CSRF).
    pub fn identify(&self, headers: &HeaderMap) -> Result<Caller, Denied> {
        if let Some(value) = headers.get(AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or(Denied::BadToken)?;
            return match &self.tokens {
                Some(tokens) => tokens
                    .holder(token)
                    .map(|h| Caller {
                        role: h.role,
                        name: h.name.clone(),
                        csrf: None,
                    })
                    .ok_or(Denied::BadToken),
                None => Ok(Caller {
                    role: Role::Admin,
                    name: "local".to_owned(),
                    csrf: None,
                }),
            };
        }
        if let Some(session) = session_id(headers).and_then(|id| self.session(&id)) {
            return Ok(Caller {
                role: session.role,
                name: session.name,
                csrf: Some(session.csrf),
            });
        }
        Err(Denied::Unauthenticated)
    }

    /// Logs in with `token` (any string without a tokens file): a new
    /// session's id, to set as the [`SESSION_COOKIE`].
    pub fn login(&self, token: &str) -> Result<String, Denied> {
        let (role, name) = match &self.tokens {
            Some(tokens) => {
                let holder = tokens.holder(token.trim()).ok_or(Denied::BadToken)?;
                (holder.role, holder.name.clone())
            }
            None => (Role::Admin, "local".to_owned()),
        };
        Ok(self.open_session(role, name))
    }

    /// A session without a token: only without a tokens file.
    pub fn open_local_session(&self) -> Option<String> {
        (!self.required()).then(|| self.open_session(Role::Admin, "local".to_owned()))
    }

    fn open_session(&self, role: Role, name: String) -> String {
        let id = random_token();
        let session = Session {
            role,
            name,
            csrf: random_token(),
            last_used: Instant::now(),
        };
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.retain(|_, s| s.last_used.elapsed() < SESSION_IDLE);
            sessions.insert(id.clone(), session);
        }
        id
    }

    /// Ends a session.
    pub fn logout(&self, headers: &HeaderMap) {
        if let (Some(id), Ok(mut sessions)) = (session_id(headers), self.sessions.lock()) {
            sessions.remove(&id);
        }
    }

    fn session(&self, id: &str) -> Option<Session> {
        let mut sessions = self.sessions.lock().ok()?;
        let session = sessions.get_mut(id)?;
        if session.last_used.elapsed() >= SESSION_IDLE {
            sessions.remove(id);
            return None;
        }
        session.last_used = Instant::now();
        Some(session.clone())
    }
}

/// The `Set-Cookie` value of a session.
pub fn session_cookie(id: &str) -> String {
    format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_IDLE.as_secs()
    )
}

/// The `Set-Cookie` value that ends a session.
pub fn cleared_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// 32 random bytes, URL-safe base64.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // getrandom fails only without a kernel source of randomness.
    getrandom::fill(&mut bytes).expect("the kernel's random source");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const ADMIN: &str = "admin-token-0123456789";
    const READER: &str = "read-token-0123456789";

    fn auth() -> Auth {
        Auth {
            tokens: Some(
                Tokens::parse("t", &format!("# who\nadmin {ADMIN} alice\nread {READER}\n"))
                    .unwrap(),
            ),
            tokens_path: None,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        h
    }

    #[test]
    fn tokens_files_are_checked_line_by_line() {
        let err = |text: &str| Tokens::parse("t", text).unwrap_err().to_string();
        assert_eq!(
            err(""),
            "t: no tokens (write `<role> <token> [name]` lines, role read or admin)"
        );
        assert!(err("root 0123456789abcdef").contains("t:1: unknown role \"root\""));
        assert!(err("admin short").contains("too short (5 characters"));
        assert!(
            err(&format!("admin {ADMIN}\nread {ADMIN}"))
                .starts_with("t:2: this token is listed twice")
        );
        assert!(err("admin").contains("expected `<role> <token> [name]`"));
    }

    #[test]
    fn bearer_tokens_carry_their_role_and_wrong_ones_are_refused() {
        let auth = auth();
        let admin = auth.identify(&bearer(ADMIN)).unwrap();
        assert_eq!((admin.role, admin.name.as_str()), (Role::Admin, "alice"));
        let reader = auth.identify(&bearer(READER)).unwrap();
        assert_eq!((reader.role, reader.name.as_str()), (Role::Read, "token 3"));
        assert_eq!(reader.require(Role::Admin), Err(Denied::Forbidden));
        assert_eq!(
            auth.identify(&bearer("nope-nope-nope-nope")),
            Err(Denied::BadToken)
        );
        assert_eq!(
            auth.identify(&HeaderMap::new()),
            Err(Denied::Unauthenticated)
        );
        // A bearer caller needs no CSRF token.
        assert_eq!(admin.check_csrf(None), Ok(()));
    }

    #[test]
    fn sessions_need_their_csrf_token_for_writes() {
        let auth = auth();
        assert_eq!(auth.login("wrong"), Err(Denied::BadToken));
        let id = auth.login(READER).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&format!("a=b; {SESSION_COOKIE}={id}")).unwrap(),
        );
        let caller = auth.identify(&headers).unwrap();
        assert_eq!(caller.role, Role::Read);
        let csrf = caller.csrf.clone().unwrap();
        assert_eq!(caller.check_csrf(None), Err(Denied::Csrf));
        assert_eq!(caller.check_csrf(Some("forged")), Err(Denied::Csrf));
        assert_eq!(caller.check_csrf(Some(&csrf)), Ok(()));
        auth.logout(&headers);
        assert_eq!(auth.identify(&headers), Err(Denied::Unauthenticated));
        assert!(
            auth.open_local_session().is_none(),
            "tokens configured: no free session"
        );
    }
}
