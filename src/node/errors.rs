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
            // A full disk is like a full spool: a clear 503 the agent retries, not a 500.
            SpoolError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
                tracing::error!(
                    "the disk under the spool is full; refusing pushes until there is room"
                );
                ApiError::Unavailable(
                    "the upstream is unavailable and this node's disk is full; retry later".into(),
                )
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_under_the_spool_is_a_503_with_the_reason() {
        let err = SpoolError::Io {
            path: "/var/lib/pyrogate/spool/x".into(),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        };
        let api = ApiError::from(err);
        assert_eq!(api.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(api.to_string().contains("disk is full"), "{api}");
    }
}
