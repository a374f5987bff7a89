//! Property tests over everything that parses what a client sends: the QUIC frame decoder,
//! `Range`, `Content-Digest` and the other body headers, names, `Content-Disposition` and
//! bearer tokens. CI runs them at proptest's default case count; `scripts/fuzz` runs them for
//! millions of cases (`PROPTEST_CASES`).

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use std::time::Duration;
use wharf_raft::model::Tier;

use crate::api::http::files::{content_disposition, parse_range};
use crate::api::http::uploads::BodyHeaders;
use crate::api::http::validate_name;
use crate::auth::Keys;

fn decode_frame(bytes: &[u8]) -> std::io::Result<wharf_proto::quic::Request> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut reader = bytes;
    rt.block_on(wharf_proto::quic::read_frame(&mut reader))
}

proptest! {
    /// Any bytes: an error or a request, never a panic; a decoded frame re-encodes to bytes
    /// that decode to the same request.
    #[test]
    fn quic_frames_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(req) = decode_frame(&bytes) {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let mut out = Vec::new();
            rt.block_on(wharf_proto::quic::write_frame(&mut out, &req)).unwrap();
            prop_assert_eq!(decode_frame(&out).unwrap(), req);
        }
    }

    /// A frame that claims more than the limit is refused before anything is allocated.
    #[test]
    fn quic_frames_over_the_limit_are_refused(len in (wharf_proto::quic::MAX_FRAME as u32 + 1)..) {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 16]);
        prop_assert!(decode_frame(&bytes).is_err());
    }

    /// Whatever the header says, a satisfiable range lies inside the file.
    #[test]
    fn ranges_stay_inside_the_file(value in "[ -~]{0,40}", size in 0u64..1 << 40) {
        if let Ok(Some((start, end))) = parse_range(&value, size) {
            prop_assert!(start <= end && end < size, "{value:?} of {size}: {start}-{end}");
        }
    }

    #[test]
    fn well_formed_ranges_are_understood(start in 0u64..1000, len in 1u64..1000, size in 1u64..3000) {
        let end = start + len - 1;
        match parse_range(&format!("bytes={start}-{end}"), size) {
            Ok(Some((a, b))) => prop_assert!(a == start && b == end.min(size - 1)),
            Ok(None) => prop_assert!(false, "ignored"),
            Err(_) => prop_assert!(start >= size),
        }
    }

    /// Body headers with any values: parsed or refused as a client error, never a panic.
    #[test]
    fn body_headers_parse_or_are_refused(
        length in "[ -~]{0,24}",
        blake3 in "[ -~]{0,70}",
        digest in "[ -~]{0,80}",
    ) {
        let mut h = HeaderMap::new();
        for (name, value) in [("content-length", &length), ("x-wharf-blake3", &blake3), ("content-digest", &digest)] {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(HeaderName::from_static(name), v);
            }
        }
        if let Err(e) = BodyHeaders::parse(&h) {
            prop_assert_eq!(e.status_and_code().0.as_u16(), 400);
        }
    }

    #[test]
    fn a_correct_content_digest_is_read_back(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        use base64::Engine;
        use sha2::Digest;
        let sum: [u8; 32] = sha2::Sha256::digest(&bytes).into();
        let value = format!("sha-256=:{}:", base64::engine::general_purpose::STANDARD.encode(sum));
        let mut h = HeaderMap::new();
        h.insert("content-digest", HeaderValue::from_str(&value).unwrap());
        prop_assert_eq!(BodyHeaders::parse(&h).unwrap().sha256, Some(sum));
    }

    /// An accepted name is one path component that looks like itself: never a path, never
    /// control, bidirectional or zero-width characters; and it is safe in Content-Disposition.
    #[test]
    fn accepted_names_are_plain_names(name in "\\PC{0,40}|[./\\\\a\u{202e}\u{200b}\u{ad}\u{61c}\u{180e}]{0,6}") {
        if validate_name(&name).is_ok() {
            let mut parts = std::path::Path::new(&name).components();
            prop_assert!(matches!(parts.next(), Some(std::path::Component::Normal(_))));
            prop_assert!(parts.next().is_none());
            prop_assert!(!name.contains('/') && !name.contains('\\'));
            let hidden = name.chars().any(|c| {
                c.is_control()
                    || ['\u{ad}', '\u{61c}', '\u{180e}'].contains(&c)
                    || ('\u{200b}'..='\u{200f}').contains(&c)
                    || ('\u{2028}'..='\u{202e}').contains(&c)
            });
            prop_assert!(!hidden, "{:?}", name);
            let cd = content_disposition(&name);
            prop_assert!(HeaderValue::from_str(&cd).is_ok());
            let encoded = cd.split("''").nth(1).unwrap_or_default();
            prop_assert!(cd.is_ascii() && !encoded.contains(' ') && !encoded.contains('"'));
        }
    }

    /// Any string as a token: refused with a 401 and our own words. A real token verifies,
    /// and any change to it does not.
    #[test]
    fn tokens_verify_only_as_issued(junk in "[ -~]{0,200}", flip in any::<prop::sample::Index>(), user in "[a-z0-9._@-]{1,20}") {
        let keys = Keys::new(b"0123456789abcdef0123456789abcdef");
        let verify = |t: &str| futures::executor::block_on(keys.verify(t));
        match verify(&junk) {
            Ok(_) => prop_assert!(false, "junk verified: {junk:?}"),
            Err(e) => {
                prop_assert_eq!(e.status_and_code().0.as_u16(), 401);
                prop_assert!(!e.to_string().contains("variant"));
            }
        }
        let token = keys.issue(&user, Tier::Basic, Duration::from_secs(60)).unwrap();
        prop_assert_eq!(verify(&token).unwrap().sub, user);
        let mut bytes = token.into_bytes();
        let i = flip.index(bytes.len());
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let changed = String::from_utf8(bytes).unwrap();
        // The MAC covers the encoded header and claims; only the signature's last character
        // has slack bits (base64url), so only a change there may still verify.
        if verify(&changed).is_ok() {
            prop_assert_eq!(i, changed.len() - 1);
        }
    }
}
