//! Bearer JWTs: claims are the user id (`sub`) and `tier`. Two modes: HS256 with the cluster
//! secret (embedded, the default), or an external identity provider's public keys from a JWKS
//! ([`jwks`]), in which HS256 tokens are refused and the node needs no secret to verify.

pub mod jwks;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use wharf_raft::model::Tier;

use crate::error::Error;

const SECRET_FILE: &str = "jwt_secret";
/// Seconds a token is still accepted after its `exp` (clock skew between issuer and node).
pub const LEEWAY_SECS: u64 = 5;
/// The longest lifetime `issue` gives a token.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tier: Tier,
    pub iat: u64,
    pub exp: u64,
}

/// Checks client tokens (and, with the cluster secret, signs them).
#[derive(Clone)]
pub struct Keys(Verifier);

#[derive(Clone)]
enum Verifier {
    Secret(Arc<SecretKeys>),
    External(Arc<jwks::Provider>),
}

/// The embedded mode: HS256 with the cluster's secret.
#[derive(Clone)]
struct SecretKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Keys {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self(Verifier::Secret(Arc::new(SecretKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        })))
    }

    /// Tokens from an external identity provider, checked with its public keys only.
    pub fn external(provider: Arc<jwks::Provider>) -> Self {
        Self(Verifier::External(provider))
    }

    /// Whether tokens come from an external identity provider.
    pub fn is_external(&self) -> bool {
        matches!(self.0, Verifier::External(_))
    }

    /// The configured secret, or the one in the data dir (made on first use).
    pub fn load_or_create(configured: &str, data_dir: &Path) -> anyhow::Result<Self> {
        Ok(Self::new(
            load_or_create_secret(configured, data_dir)?.as_bytes(),
        ))
    }

    pub fn issue(&self, user: &str, tier: Tier, ttl: Duration) -> anyhow::Result<String> {
        let Verifier::Secret(keys) = &self.0 else {
            anyhow::bail!(
                "user tokens come from the identity provider (auth.jwks_file or auth.jwks_url): \
                 this cluster signs none"
            );
        };
        validate_user_id(user).map_err(|e| anyhow::anyhow!("{e}"))?;
        if ttl > MAX_TTL {
            anyhow::bail!(
                "a token lives at most 10 years (--ttl {}s asked)",
                ttl.as_secs()
            );
        }
        let iat = now_secs();
        let claims = Claims {
            sub: user.to_string(),
            tier,
            iat,
            exp: iat + ttl.as_secs(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &keys.encoding,
        )?)
    }

    /// Checks an `Authorization` header value.
    pub async fn verify_header(&self, header: Option<&str>) -> Result<Claims, Error> {
        let header = header.ok_or_else(|| {
            Error::unauthorized("unauthorized", "an Authorization: Bearer token is required")
        })?;
        // The scheme is case-insensitive (RFC 9110 section 11.1).
        let token = match header.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token,
            _ => {
                return Err(Error::unauthorized(
                    "unauthorized",
                    "the Authorization header must be Bearer",
                ))
            }
        };
        self.verify(token.trim()).await
    }

    /// Checks a bare token. The messages say what is wrong without the JWT library's words.
    pub async fn verify(&self, token: &str) -> Result<Claims, Error> {
        match &self.0 {
            Verifier::Secret(keys) => keys.verify(token),
            Verifier::External(provider) => provider.verify(token).await,
        }
    }
}

impl SecretKeys {
    fn verify(&self, token: &str) -> Result<Claims, Error> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| token_error(&e, "the token must be signed with HS256"))?;
        check_user_id(&data.claims.sub)?;
        Ok(data.claims)
    }
}

/// The library's error as ours: `token_expired` or `invalid_token`, in our own words.
/// `wrong_algorithm` says which algorithms this node takes.
fn token_error(e: &jsonwebtoken::errors::Error, wrong_algorithm: &'static str) -> Error {
    let message = match e.kind() {
        ErrorKind::ExpiredSignature => {
            return Error::unauthorized("token_expired", "the token has expired")
        }
        ErrorKind::InvalidSignature => "the token's signature does not verify",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => wrong_algorithm,
        ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
        ErrorKind::ImmatureSignature => "the token is not valid yet",
        ErrorKind::InvalidIssuer => "the token's issuer (iss) is not the one this service accepts",
        ErrorKind::InvalidAudience => "the token's audience (aud) does not name this service",
        ErrorKind::Json(_) => "the token's header or claims are malformed",
        _ => "the token is malformed",
    };
    Error::unauthorized("invalid_token", message)
}

/// A token's subject must be a valid user id (it becomes part of metadata keys).
fn check_user_id(sub: &str) -> Result<(), Error> {
    validate_user_id(sub).map_err(|_| {
        Error::unauthorized(
            "invalid_token",
            "the token's user id (sub) is not a valid user id",
        )
    })
}

/// The HS256 secret: `auth.jwt_secret` if set, else `<data_dir>/jwt_secret`, made on first use.
pub fn load_or_create_secret(configured: &str, data_dir: &Path) -> anyhow::Result<String> {
    if !configured.is_empty() {
        return Ok(configured.to_string());
    }
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() < 32 => anyhow::bail!(
            "{} holds no usable secret (fewer than 32 characters); restore it from another node \
             of the cluster or from a backup",
            path.display()
        ),
        Ok(s) => Ok(s.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let secret = hex::encode(bytes);
            store_secret(data_dir, &secret)?;
            Ok(secret)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Stores the cluster's secret (a joining node receives it from the cluster).
pub fn store_secret(data_dir: &Path, secret: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    write_private(&data_dir.join(SECRET_FILE), secret)
}

/// User ids become parts of metadata keys (`owner/id`), so they are kept to a safe alphabet.
pub fn validate_user_id(user: &str) -> Result<(), Error> {
    let ok = !user.is_empty()
        && user.len() <= 128
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(
            "invalid_user",
            "user ids are 1 to 128 characters of A-Z a-z 0-9 . _ @ -",
        ))
    }
}

/// Writes a secret whole or not at all: a temp file (mode 0600), fsynced, renamed over `path`,
/// so a process killed half-way never leaves an empty or partial secret behind.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_file_is_written_whole_and_an_empty_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let made = load_or_create_secret("", dir.path()).unwrap();
        assert_eq!(made.len(), 64);
        assert_eq!(load_or_create_secret("", dir.path()).unwrap(), made);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![SECRET_FILE.to_string()], "a temp file was left");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // What a kill between create and write used to leave: refused, not used as a key.
        std::fs::write(dir.path().join(SECRET_FILE), "").unwrap();
        let err = load_or_create_secret("", dir.path()).unwrap_err();
        assert!(err.to_string().contains("no usable secret"), "{err}");
    }

    #[test]
    fn a_ttl_past_ten_years_is_refused_not_wrapped_into_an_expired_token() {
        let keys = Keys::new(b"0123456789abcdef0123456789abcdef");
        let token = keys.issue("alice", Tier::Basic, MAX_TTL).unwrap();
        assert!(!token.is_empty());
        for ttl in [
            MAX_TTL + Duration::from_secs(1),
            Duration::from_secs(u64::MAX),
        ] {
            let err = keys.issue("alice", Tier::Basic, ttl).unwrap_err();
            assert!(err.to_string().contains("at most 10 years"), "{err}");
        }
    }

    fn encoding(keys: &Keys) -> &EncodingKey {
        match &keys.0 {
            Verifier::Secret(k) => &k.encoding,
            Verifier::External(_) => unreachable!("an embedded key"),
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    #[test]
    fn issued_token_verifies_and_forged_one_does_not() {
        let keys = Keys::new(b"0123456789abcdef0123456789abcdef");
        let t = keys
            .issue("alice", Tier::Premium, Duration::from_secs(60))
            .unwrap();
        let c = block_on(keys.verify_header(Some(&format!("Bearer {t}")))).unwrap();
        assert_eq!((c.sub.as_str(), c.tier), ("alice", Tier::Premium));

        let other = Keys::new(b"another-secret-another-secret-xx");
        let forged = other
            .issue("alice", Tier::Admin, Duration::from_secs(60))
            .unwrap();
        let err = block_on(keys.verify_header(Some(&format!("Bearer {forged}")))).unwrap_err();
        assert_eq!(err.status_and_code().1, "invalid_token");
        let err = block_on(keys.verify_header(None)).unwrap_err();
        assert_eq!(err.status_and_code().1, "unauthorized");
    }

    #[test]
    fn expired_token_is_refused_as_expired() {
        let keys = Keys::new(b"0123456789abcdef0123456789abcdef");
        let claims = Claims {
            sub: "alice".into(),
            tier: Tier::Basic,
            iat: 1,
            exp: 2,
        };
        let t =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, encoding(&keys)).unwrap();
        let err = block_on(keys.verify_header(Some(&format!("Bearer {t}")))).unwrap_err();
        assert_eq!(err.status_and_code().1, "token_expired");
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_errors_name_no_library_internals() {
        let keys = Keys::new(b"0123456789abcdef0123456789abcdef");
        let t = keys
            .issue("alice", Tier::Basic, Duration::from_secs(60))
            .unwrap();
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            block_on(keys.verify_header(Some(&format!("{scheme} {t}")))).unwrap();
        }
        assert!(block_on(keys.verify_header(Some(&format!("Basic {t}")))).is_err());
        // alg "none", a garbage token, a bad user id in a correctly signed token.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSJ9.";
        for bad in [none, "x.y.z", "garbage"] {
            let e = block_on(keys.verify(bad)).unwrap_err();
            let text = e.to_string();
            assert_eq!(e.status_and_code().1, "invalid_token");
            assert!(
                !text.contains("variant") && !text.contains("expected"),
                "{text}"
            );
        }
        let claims = Claims {
            sub: "../etc".into(),
            tier: Tier::Basic,
            iat: now_secs(),
            exp: now_secs() + 60,
        };
        let t =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, encoding(&keys)).unwrap();
        let e = block_on(keys.verify(&t)).unwrap_err();
        assert_eq!(e.status_and_code().0.as_u16(), 401);
        assert!(keys
            .issue("alice", Tier::Basic, Duration::from_secs(u64::MAX))
            .is_err());
    }

    #[test]
    fn user_ids_cannot_carry_separators() {
        assert!(validate_user_id("alice@example.com").is_ok());
        assert!(validate_user_id("a/b").is_err());
        assert!(validate_user_id("").is_err());
    }
}
