//! Every service error becomes an HTTP response here, and only here. Bodies use Pyroscope's
//! shape, `{"errors":["…"]}`. 5xx bodies are generic; their cause is logged, never returned.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::core::error::VerifyError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 401 with `WWW-Authenticate`; the reason is one of [`VerifyError`]'s fixed strings.
    #[error("invalid credentials: {0}")]
    Unauthorized(VerifyError),
    /// 401 for a failed login (no bearer challenge: it was not a token).
    #[error("{0}")]
    Unauthenticated(String),
    /// 403: authenticated, but the role does not allow this.
    #[error("{0}")]
    Forbidden(String),
    #[error("{}", .0.join("; "))]
    BadRequest(Vec<String>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// 405: the route exists, the HTTP method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    TooManyRequests(String),
    /// 429 with `Retry-After`: a key over its limit (the message names the limit).
    #[error("{message}")]
    Limited {
        message: String,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    Unavailable(String),
    /// 502: an upstream answered something that can't be passed on.
    #[error("{0}")]
    BadGateway(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError::BadRequest(vec![msg.into()])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) | ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests(_) | ApiError::Limited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        ApiError::Internal(err)
    }
}

#[derive(serde::Serialize)]
struct Body {
    errors: Vec<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let errors = match &self {
            ApiError::BadRequest(msgs) => msgs.clone(),
            ApiError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "internal error");
                vec!["internal error".to_owned()]
            }
            other => vec![other.to_string()],
        };
        let mut response = (status, Json(Body { errors })).into_response();
        if let ApiError::Limited {
            retry_after_secs, ..
        } = &self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        if let ApiError::Unauthorized(reason) = self {
            let challenge = format!(
                "Bearer realm=\"pyrogate\", error=\"invalid_token\", error_description=\"{reason}\""
            );
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}
