//! Why a token was refused: the one error type of the token core. It lives apart from the
//! verifier so that every part of the core (JWS parsing, revocation lists, the verifier) can
//! return it without depending on each other.

/// Why a token was refused. Every variant is a distinct, loggable reason; none carries any part
/// of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("missing")]
    Missing,
    #[error("more than one authorization header")]
    MultipleCredentials,
    #[error("unsupported authorization scheme")]
    UnsupportedScheme,
    #[error("tokens are not accepted in the query string")]
    TokenInQuery,
    #[error("token too large")]
    TooLarge,
    #[error("malformed")]
    Malformed,
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    #[error("forbidden header parameter {0}")]
    ForbiddenHeader(&'static str),
    #[error("wrong token type")]
    WrongType,
    #[error("missing key id")]
    MissingKeyId,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("bad signature")]
    BadSignature,
    #[error("invalid claim {0}")]
    InvalidClaim(&'static str),
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("unknown role")]
    UnknownRole,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("revoked")]
    Revoked,
}

impl VerifyError {
    /// A short, fixed label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            VerifyError::Missing => "missing",
            VerifyError::MultipleCredentials => "multiple_credentials",
            VerifyError::UnsupportedScheme => "unsupported_scheme",
            VerifyError::TokenInQuery => "token_in_query",
            VerifyError::TooLarge => "too_large",
            VerifyError::Malformed => "malformed",
            VerifyError::UnsupportedAlgorithm => "unsupported_algorithm",
            VerifyError::ForbiddenHeader(_) => "forbidden_header",
            VerifyError::WrongType => "wrong_type",
            VerifyError::MissingKeyId => "missing_kid",
            VerifyError::UnknownKey => "unknown_key",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::InvalidClaim(_) => "invalid_claim",
            VerifyError::WrongIssuer => "wrong_issuer",
            VerifyError::UnknownRole => "unknown_role",
            VerifyError::Expired => "expired",
            VerifyError::NotYetValid => "not_yet_valid",
            VerifyError::Revoked => "revoked",
        }
    }
}
