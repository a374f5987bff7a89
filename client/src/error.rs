//! The SDK's error type, which errors are worth another try, and how a node's non-2xx answer
//! becomes one.

use reqwest::{RequestBuilder, StatusCode};
use wharf_proto::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node refused the request; `code` is wharf's stable error code.
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("no node answered: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("BLAKE3 mismatch: expected {expected}, got {actual}")]
    Checksum { expected: String, actual: String },
    #[error("bad node address {0:?} (want http://host:port or quic://host:port)")]
    BadNode(String),
    #[error("TLS: {0}")]
    Tls(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Worth another try (elsewhere): transport failures, 5xx, a chunk in progress or taken
    /// over, a rate limit.
    pub(crate) fn retryable(&self) -> bool {
        match self {
            Error::Unreachable(_) => true,
            Error::Api { status, code, .. } => {
                *status >= 500
                    || code == "chunk_in_progress"
                    || code == "chunk_taken_over"
                    || code == "upload_completing"
                    || code == "rate_limited"
            }
            _ => false,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Sends a request; a non-2xx answer becomes [`Error::Api`] with wharf's error code.
pub(crate) async fn send(req: RequestBuilder) -> Result<reqwest::Response> {
    let resp = req
        .send()
        .await
        .map_err(|e| Error::Unreachable(e.to_string()))?;
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    Err(match serde_json::from_str::<ErrorBody>(&text) {
        Ok(b) => Error::Api {
            status: status.as_u16(),
            code: b.error.code,
            message: b.error.message,
        },
        Err(_) => Error::Api {
            status: status.as_u16(),
            code: if status == StatusCode::NOT_FOUND {
                "not_found".into()
            } else {
                "http_error".into()
            },
            message: text,
        },
    })
}
