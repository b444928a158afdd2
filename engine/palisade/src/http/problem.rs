//! Errors as RFC 9457 problem details (`application/problem+json`): `type`,
//! `title`, `status`, `detail`, and, for a request whose fields are wrong,
//! an `errors` extension listing each field with its message
//! (`[{"field": "expected_open", "message": "port 70000 is out of range
//! (allowed: 1 to 65535)"}]`). Every error the API answers is one of these
//! (docs/API.md lists the types).

use axum::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

use super::StoreAccessError;
use super::auth::Denied;
use crate::config::FieldError;

/// The media type of a problem.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// What went wrong, in kinds a client can tell apart: each is a `type`
/// URI with a fixed title and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// Malformed JSON, a bad query parameter or header.
    BadRequest,
    /// The monitor fails the configuration checker (`errors` says where).
    InvalidMonitor,
    /// No credentials, or a token that is not valid.
    Unauthorized,
    /// The token is read-only and the request writes.
    Forbidden,
    /// A write through a session without its CSRF token.
    Csrf,
    NotFound,
    MethodNotAllowed,
    /// A monitor of that name exists.
    MonitorExists,
    /// The monitor is defined in the configuration file.
    ManagedByConfig,
    /// The `If-Match` version is not the current one.
    VersionMismatch,
    /// A write without `If-Match`.
    PreconditionRequired,
    /// A body that is not `application/json`.
    UnsupportedMediaType,
    /// A body over the server's limit (2 MB).
    PayloadTooLarge,
    /// The daemon is stopping and takes no more requests.
    DaemonUnavailable,
    Internal,
}

impl ProblemKind {
    /// The last part of the `type` URI.
    pub fn slug(self) -> &'static str {
        match self {
            Self::BadRequest => "bad-request",
            Self::InvalidMonitor => "invalid-monitor",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::Csrf => "csrf",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::MonitorExists => "monitor-exists",
            Self::ManagedByConfig => "managed-by-config",
            Self::VersionMismatch => "version-mismatch",
            Self::PreconditionRequired => "precondition-required",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::PayloadTooLarge => "payload-too-large",
            Self::DaemonUnavailable => "daemon-unavailable",
            Self::Internal => "internal",
        }
    }

    /// The `type` URI: a stable identifier (a tag URI, RFC 4151), not a
    /// link.
    pub fn type_uri(self) -> String {
        format!("{TYPE_PREFIX}{}", self.slug())
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::BadRequest => "Bad request",
            Self::InvalidMonitor => "Invalid monitor",
            Self::Unauthorized => "Authentication required",
            Self::Forbidden => "Forbidden",
            Self::Csrf => "Missing or wrong CSRF token",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::MonitorExists => "Monitor exists",
            Self::ManagedByConfig => "Managed by the configuration file",
            Self::VersionMismatch => "Version mismatch",
            Self::PreconditionRequired => "If-Match required",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::PayloadTooLarge => "Payload too large",
            Self::DaemonUnavailable => "Daemon unavailable",
            Self::Internal => "Internal error",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest | Self::InvalidMonitor => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::Csrf => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::MonitorExists | Self::ManagedByConfig => StatusCode::CONFLICT,
            Self::VersionMismatch => StatusCode::PRECONDITION_FAILED,
            Self::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::DaemonUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Every problem `type` starts so.
pub const TYPE_PREFIX: &str = "tag:palisade.invalid,2026:problem:";

/// An RFC 9457 problem: the body and the status of an error response.
/// `type`, `title` and `status` come from its [`ProblemKind`].
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    kind: ProblemKind,
    pub detail: String,
    /// Each wrong field with its message (extension member).
    pub errors: Vec<FieldError>,
    /// Other extension members (`current_version`, `line`, ...).
    pub extensions: Map<String, Value>,
    /// The `WWW-Authenticate` challenge of a 401.
    challenge: Option<&'static str>,
}

/// A [`Problem`] as JSON.
#[derive(Serialize)]
struct Wire<'p> {
    #[serde(rename = "type")]
    type_uri: String,
    title: &'static str,
    status: u16,
    detail: &'p str,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'p [FieldError],
    #[serde(flatten)]
    extensions: &'p Map<String, Value>,
}

impl Serialize for Problem {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Wire {
            type_uri: self.kind.type_uri(),
            title: self.kind.title(),
            status: self.status().as_u16(),
            detail: &self.detail,
            errors: &self.errors,
            extensions: &self.extensions,
        }
        .serialize(serializer)
    }
}

impl Problem {
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Problem {
        Problem {
            kind,
            detail: detail.into(),
            errors: Vec::new(),
            extensions: Map::new(),
            challenge: (kind == ProblemKind::Unauthorized).then_some("Bearer realm=\"palisade\""),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    pub fn kind(&self) -> ProblemKind {
        self.kind
    }

    /// With the fields that are wrong.
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Problem {
        self.errors = errors;
        self
    }

    /// With an extension member.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Problem {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(ProblemKind::BadRequest, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(ProblemKind::NotFound, detail)
    }

    /// One field is wrong: a 400 naming it.
    pub fn field(field: &str, message: impl Into<String>) -> Problem {
        let message = message.into();
        Problem::bad_request(format!("{field}: {message}")).with_errors(vec![FieldError {
            field: field.to_owned(),
            message,
        }])
    }

    /// A failure that is not the caller's: logged in full, answered in
    /// general terms.
    pub fn internal(error: &dyn std::fmt::Display) -> Problem {
        tracing::error!("API: {error}");
        Problem::new(
            ProblemKind::Internal,
            "the request failed inside the daemon (its log says why)",
        )
    }
}

impl From<Denied> for Problem {
    fn from(denied: Denied) -> Problem {
        let kind = match denied {
            Denied::Unauthenticated | Denied::BadToken => ProblemKind::Unauthorized,
            Denied::Forbidden => ProblemKind::Forbidden,
            Denied::Csrf => ProblemKind::Csrf,
        };
        let mut problem = Problem::new(kind, denied.to_string());
        if denied == Denied::BadToken {
            // RFC 6750 3.1: a token that is not valid is `invalid_token`.
            problem.challenge = Some("Bearer realm=\"palisade\", error=\"invalid_token\"");
        }
        problem
    }
}

impl From<StoreAccessError> for Problem {
    fn from(e: StoreAccessError) -> Problem {
        Problem::internal(&e)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut headers: Vec<(HeaderName, HeaderValue)> =
            vec![(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))];
        if let Some(challenge) = self.challenge {
            headers.push((WWW_AUTHENTICATE, HeaderValue::from_static(challenge)));
        }
        let body = match serde_json::to_vec(&self) {
            Ok(body) => body,
            // A map of strings and numbers always serializes.
            Err(_) => b"{}".to_vec(),
        };
        let mut response = (status, body).into_response();
        for (name, value) in headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_is_rfc_9457_json_with_its_fields() {
        let problem = Problem::field("expected_open", "port 70000 is out of range")
            .with("current_version", 3);
        let json = serde_json::to_value(&problem).unwrap();
        assert_eq!(
            json["type"],
            "tag:palisade.invalid,2026:problem:bad-request"
        );
        assert_eq!(json["status"], 400);
        assert_eq!(json["title"], "Bad request");
        assert_eq!(json["errors"][0]["field"], "expected_open");
        assert_eq!(json["current_version"], 3);
        let response = problem.into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[CONTENT_TYPE], PROBLEM_JSON);
    }

    #[test]
    fn unauthorized_answers_carry_a_bearer_challenge() {
        let response = Problem::from(Denied::BadToken).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(
            response.headers()[WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
        let response = Problem::from(Denied::Forbidden).into_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(response.headers().get(WWW_AUTHENTICATE).is_none());
    }
}
