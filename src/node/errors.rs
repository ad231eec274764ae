//! The node's errors as API answers. Statuses are decided by [`ApiError`]; this file is the one
//! place that says which [`ApiError`] each node error is.

use crate::edge::error::ApiError;
use crate::node::ingest::local::LocalError;
use crate::node::ingest::spool::SpoolError;

impl From<SpoolError> for ApiError {
    fn from(err: SpoolError) -> Self {
        match err {
            SpoolError::Full { max_bytes } => ApiError::Unavailable(format!(
                "the upstream is unavailable and this node's spool is full ({max_bytes} bytes, ingest.spool.max-bytes); retry later"
            )),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<LocalError> for ApiError {
    fn from(err: LocalError) -> Self {
        match err {
            LocalError::TooLarge { .. } => ApiError::PayloadTooLarge(err.to_string()),
            other => ApiError::Internal(other.into()),
        }
    }
}
