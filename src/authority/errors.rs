//! The authority's errors as API answers. Statuses are decided by [`ApiError`]; this file is
//! the one place that says which [`ApiError`] each authority error is.

use crate::authority::keyring::KeyringError;
use crate::authority::store::StoreError;
use crate::edge::error::ApiError;

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(msg) => ApiError::Conflict(msg.into()),
            StoreError::NotFound(msg) => ApiError::NotFound(msg.into()),
            StoreError::Invalid(msg) => ApiError::bad_request(msg),
            // Writes (and reads of the database) wait for it; the signed documents already
            // published are still served from memory.
            other if other.is_unavailable() => {
                tracing::warn!(error = %other, "a request needed the database, which is unavailable");
                ApiError::Unavailable(
                    "the database is unavailable; nothing was changed, try again shortly".into(),
                )
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<KeyringError> for ApiError {
    fn from(err: KeyringError) -> Self {
        match err {
            KeyringError::UnknownKid(_) => ApiError::NotFound(err.to_string()),
            KeyringError::RetireActive(_) | KeyringError::AlreadyRetired(_) => {
                ApiError::Conflict(err.to_string())
            }
            other => ApiError::Internal(other.into()),
        }
    }
}
