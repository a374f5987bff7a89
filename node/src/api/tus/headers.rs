//! tus's own header formats: `Upload-Metadata` and `Upload-Checksum` (as a header or, with
//! checksum-trailer, as a trailer after a chunked body).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::error::{Error, Result};

/// `Upload-Metadata`: comma-separated `key base64value` pairs (the value may be left out).
/// Keys are unique, non-empty, without spaces or commas.
pub fn parse_metadata(raw: &str) -> Result<BTreeMap<String, Vec<u8>>> {
    let bad = |m: &str| Error::bad_request("invalid_metadata", format!("Upload-Metadata: {m}"));
    let mut out = BTreeMap::new();
    if raw.trim().is_empty() {
        return Ok(out);
    }
    for pair in raw.split(',') {
        let mut parts = pair.trim().splitn(2, ' ');
        let key = parts.next().unwrap_or("");
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("every pair needs a key of visible ASCII characters"));
        }
        let value = match parts.next().map(str::trim) {
            None | Some("") => Vec::new(),
            Some(v) => base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|_| bad(&format!("the value of {key} is not base64")))?,
        };
        if out.insert(key.to_string(), value).is_some() {
            return Err(bad(&format!("the key {key} appears twice")));
        }
    }
    Ok(out)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Md5,
}

impl Algorithm {
    pub const ALL: [Algorithm; 3] = [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Md5];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Md5 => "md5",
        }
    }
}

/// `Upload-Checksum: <algorithm> <base64 digest>`: the digest of one PATCH body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: Algorithm,
    pub digest: Vec<u8>,
}

impl Checksum {
    pub fn parse(v: Option<&HeaderValue>) -> Result<Option<Checksum>> {
        let Some(v) = v else {
            return Ok(None);
        };
        let bad = |m: String| Error::bad_request("invalid_checksum", m);
        let s = v
            .to_str()
            .map_err(|_| bad("Upload-Checksum must be ASCII".into()))?;
        let (alg, digest) = s
            .trim()
            .split_once(' ')
            .ok_or_else(|| bad("Upload-Checksum is `<algorithm> <base64 digest>`".into()))?;
        let (algorithm, len) = match alg.to_ascii_lowercase().as_str() {
            "sha1" => (Algorithm::Sha1, 20),
            "sha256" => (Algorithm::Sha256, 32),
            "md5" => (Algorithm::Md5, 16),
            other => {
                return Err(bad(format!(
                    "checksum algorithm {other} is not supported (Tus-Checksum-Algorithm lists those that are)"
                )))
            }
        };
        let digest = base64::engine::general_purpose::STANDARD
            .decode(digest.trim())
            .ok()
            .filter(|d| d.len() == len)
            .ok_or_else(|| bad(format!("the {alg} digest must be {len} bytes in base64")))?;
        Ok(Some(Checksum { algorithm, digest }))
    }

    pub fn hasher(&self) -> Hasher {
        Hasher::of(self.algorithm)
    }
}

const UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");

/// Where a PATCH's checksum comes from.
pub enum Expected {
    /// `Upload-Checksum` among the request's headers.
    Header(Checksum),
    /// checksum-trailer: `Trailer: Upload-Checksum` announced it; it follows the chunked body
    /// and lands here when the body ends.
    Trailer(Arc<Mutex<Option<HeaderMap>>>),
}

impl Expected {
    /// The checksum a request declares, as a header or an announced trailer (both at once is
    /// refused), and its body, which records the trailer when one was announced.
    pub fn of_request(headers: &HeaderMap, body: Body) -> Result<(Option<Expected>, Body)> {
        let header = Checksum::parse(headers.get(&UPLOAD_CHECKSUM))?;
        let announced = headers
            .get_all(axum::http::header::TRAILER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|name| name.trim().eq_ignore_ascii_case(UPLOAD_CHECKSUM.as_str()));
        match (header, announced) {
            (Some(_), true) => Err(Error::bad_request(
                "invalid_checksum",
                "Upload-Checksum comes as a header or as a trailer, not both",
            )),
            (Some(c), false) => Ok((Some(Expected::Header(c)), body)),
            (None, true) => {
                let slot = Arc::new(Mutex::new(None));
                let tap = TrailerTap {
                    inner: body,
                    slot: slot.clone(),
                };
                Ok((Some(Expected::Trailer(slot)), Body::new(tap)))
            }
            (None, false) => Ok((None, body)),
        }
    }

    /// The hashers a body is fed to: the one named, or every one when the name comes last.
    pub fn hashers(&self) -> Vec<Hasher> {
        match self {
            Expected::Header(c) => vec![c.hasher()],
            Expected::Trailer(_) => Algorithm::ALL.into_iter().map(Hasher::of).collect(),
        }
    }

    /// The checksum to hold the body to, once the body has ended.
    pub fn checksum(&self) -> Result<Checksum> {
        match self {
            Expected::Header(c) => Ok(c.clone()),
            Expected::Trailer(slot) => {
                let trailers = slot.lock().expect("lock poisoned").take();
                Checksum::parse(trailers.as_ref().and_then(|t| t.get(&UPLOAD_CHECKSUM)))?
                    .ok_or_else(|| {
                        Error::bad_request(
                            "checksum_trailer_missing",
                            "Trailer announced Upload-Checksum, but the body ended without it; \
                             nothing was kept",
                        )
                    })
            }
        }
    }
}

/// A request body that keeps its trailers (reading a body as data drops them).
struct TrailerTap {
    inner: Body,
    slot: Arc<Mutex<Option<HeaderMap>>>,
}

impl HttpBody for TrailerTap {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, axum::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame {
            if let Some(t) = f.trailers_ref() {
                *self.slot.lock().expect("lock poisoned") = Some(t.clone());
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pub enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Md5(md5::Md5),
}

impl Hasher {
    pub fn of(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha1 => Hasher::Sha1(Default::default()),
            Algorithm::Sha256 => Hasher::Sha256(Default::default()),
            Algorithm::Md5 => Hasher::Md5(Default::default()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha1(_) => Algorithm::Sha1,
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Md5(_) => Algorithm::Md5,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => sha1::Digest::update(h, data),
            Hasher::Sha256(h) => sha2::Digest::update(h, data),
            Hasher::Md5(h) => md5::Digest::update(h, data),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha1(h) => sha1::Digest::finalize(h).to_vec(),
            Hasher::Sha256(h) => sha2::Digest::finalize(h).to_vec(),
            Hasher::Md5(h) => md5::Digest::finalize(h).to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_pairs_parse_with_empty_values_and_refuse_duplicates() {
        let m = parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")
            .unwrap();
        assert_eq!(m["filename"], b"world_domination_plan.pdf");
        assert_eq!(m["is_confidential"], b"");
        assert!(parse_metadata("").unwrap().is_empty());
        assert!(parse_metadata("a eA==,a eA==").is_err());
        assert!(parse_metadata("a !!!").is_err());
        assert!(parse_metadata(",").is_err());
    }

    #[test]
    fn checksums_parse_by_algorithm_and_length() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        let sha1 = Checksum::parse(Some(&h("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=")))
            .unwrap()
            .unwrap();
        assert_eq!(sha1.algorithm, Algorithm::Sha1);
        let mut hasher = sha1.hasher();
        hasher.update(b"hello world");
        assert_eq!(hasher.finish(), sha1.digest);
        assert!(Checksum::parse(Some(&h("crc32 AAAA"))).is_err());
        assert!(Checksum::parse(Some(&h("sha1 AAAA"))).is_err());
        assert!(Checksum::parse(Some(&h("sha1"))).is_err());
        assert_eq!(Checksum::parse(None).unwrap(), None);
    }
}
