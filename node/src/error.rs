//! The node's error type and its one mapping to HTTP: status, stable code, message.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use wharf_proto::{ErrorBody, ErrorDetail};
use wharf_raft::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    #[error("{0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("chunks missing: {0:?}")]
    MissingChunks(Vec<u32>),
    #[error("{0}")]
    FileTooLarge(String),
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("{0}")]
    TooManyUploads(String),
    #[error("{0}")]
    ChecksumMismatch(String),
    #[error("range not satisfiable (the file has {size} bytes)")]
    RangeNotSatisfiable { size: u64 },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    NotSupported(String),
    #[error("{0}")]
    Infected(String),
    #[error("too many {}; retry in {} s", .0.what, .0.retry_after.as_secs())]
    RateLimited(crate::limits::RateLimited),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    BodyTooLarge(String),
    #[error("{0}")]
    BodyTimeout(String),
    #[error("this method is not allowed on this path (the Allow header lists those that are)")]
    MethodNotAllowed,
    /// tus: `Tus-Resumable` is missing or names another version.
    #[error("{0}")]
    PreconditionFailed(String),
    /// The resource existed and never will again (an expired tus upload).
    #[error("{0}")]
    Gone(String),
    /// tus: a PATCH at another offset than the upload's.
    #[error("the upload is at offset {offset}; send the bytes from there (HEAD gives it)")]
    OffsetMismatch { offset: u64 },
    /// tus's own status for an `Upload-Checksum` that does not match the body (460).
    #[error("{0}")]
    TusChecksumMismatch(String),
    #[error("object store: {0}")]
    Store(#[from] std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

/// tus's checksum extension answers a digest mismatch with this status of its own.
pub const TUS_CHECKSUM_MISMATCH: StatusCode = match StatusCode::from_u16(460) {
    Ok(s) => s,
    Err(_) => StatusCode::BAD_REQUEST,
};

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Error::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Error::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Error::Unauthorized {
            code,
            message: message.into(),
        }
    }

    /// Status and stable error code: the one place both are decided.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Error::Unauthorized { code, .. } => (StatusCode::UNAUTHORIZED, code),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Error::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Error::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Error::MissingChunks(_) => (StatusCode::CONFLICT, "missing_chunks"),
            Error::FileTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "file_too_large"),
            Error::QuotaExceeded(_) => (StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded"),
            Error::TooManyUploads(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_uploads"),
            Error::ChecksumMismatch(_) => (StatusCode::UNPROCESSABLE_ENTITY, "checksum_mismatch"),
            Error::RangeNotSatisfiable { .. } => {
                (StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable")
            }
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Error::NotSupported(_) => (StatusCode::NOT_IMPLEMENTED, "not_supported"),
            Error::Infected(_) => (StatusCode::FORBIDDEN, "infected"),
            Error::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Error::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Error::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Error::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            Error::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Error::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, "tus_version"),
            Error::Gone(_) => (StatusCode::GONE, "gone"),
            Error::OffsetMismatch { .. } => (StatusCode::CONFLICT, "offset_mismatch"),
            Error::TusChecksumMismatch(_) => (TUS_CHECKSUM_MISMATCH, "checksum_mismatch"),
            Error::Store(_) | Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<ModelError> for Error {
    fn from(e: ModelError) -> Self {
        let message = e.to_string();
        match e {
            ModelError::NotFound => Error::NotFound,
            ModelError::QuotaExceeded { .. } => Error::QuotaExceeded(message),
            ModelError::FileTooLarge { .. } => Error::FileTooLarge(message),
            ModelError::TooManyUploads { .. } => Error::TooManyUploads(message),
            ModelError::UploadNotActive { .. } => Error::conflict("upload_not_active", message),
            ModelError::ChunkOutOfRange { .. } => {
                Error::bad_request("chunk_index_out_of_range", message)
            }
            ModelError::ChunkLength { .. } => Error::bad_request("chunk_length_mismatch", message),
            ModelError::ChunkConflict { .. } => Error::conflict("chunk_conflict", message),
            ModelError::MissingChunks(v) => Error::MissingChunks(v),
            ModelError::ChecksumMismatch { .. } => Error::ChecksumMismatch(message),
            ModelError::IdempotencyConflict => Error::conflict("idempotency_conflict", message),
            ModelError::QuotaBelowUsage { .. } => Error::conflict("quota_below_usage", message),
            ModelError::Invalid(_) => Error::bad_request("invalid_request", message),
            ModelError::LeaseHeld { .. } => Error::conflict("scan_leased", message),
            ModelError::JoinRefused(_) => Error::Forbidden(message),
            ModelError::NotPartial(_) => Error::bad_request("invalid_concat", message),
            ModelError::PartialTaken { .. } => Error::conflict("partial_taken", message),
            ModelError::NameTaken { .. } => Error::conflict("name_taken", message),
            ModelError::FolderCycle => Error::conflict("folder_cycle", message),
            ModelError::FolderNotEmpty => Error::conflict("folder_not_empty", message),
            ModelError::Forbidden => Error::Forbidden(message),
        }
    }
}

impl From<wharf_cluster::Error> for Error {
    fn from(e: wharf_cluster::Error) -> Self {
        use wharf_cluster::Error as C;
        match e {
            C::Model(m) => m.into(),
            C::Unavailable(m) => Error::Unavailable(m),
            C::Membership(m) => Error::conflict("membership", m),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        metrics::counter!("wharf_http_errors_total", "code" => code).increment(1);
        if status.is_server_error() {
            tracing::warn!(%code, error = %self, "request failed");
        }
        let missing = match &self {
            Error::MissingChunks(v) => Some(v.clone()),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message: self.to_string(),
                missing,
            },
        };
        let mut resp = (status, axum::Json(body)).into_response();
        let headers = resp.headers_mut();
        match self {
            Error::Unauthorized { .. } => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Error::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Error::RateLimited(r) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(r.retry_after.as_secs()),
                );
            }
            Error::RangeNotSatisfiable { size } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
            }
            _ => {}
        }
        resp
    }
}
