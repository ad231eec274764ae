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
