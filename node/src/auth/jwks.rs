//! An external identity provider's public keys (a JWKS, RFC 7517) from a file or a URL: user
//! tokens signed RS256, ES256 or EdDSA (and their RSA-PSS, SHA-384/512 and P-384 siblings) are
//! checked with them; no key here can sign a token.
//!
//! The key set is read at start, again every `auth.jwks_refresh_secs`, and again when a token
//! names a `kid` the set lacks (at most once every [`REFETCH_MIN`], however many such tokens
//! arrive), so a provider's new key is taken as soon as its first token shows up. A read that
//! fails keeps the last good set (and logs a warning).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use wharf_raft::model::Tier;

use super::{check_user_id, token_error, Claims, LEEWAY_SECS};
use crate::config::AuthConfig;
use crate::error::Error;

/// The shortest time between two reads of the key set that tokens with unknown `kid`s cause.
pub const REFETCH_MIN: Duration = Duration::from_secs(5);
/// One fetch of the key set gives up after this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// A key set larger than this is refused (real ones are a few KiB).
const MAX_JWKS_BYTES: usize = 1 << 20;

/// The algorithms a token may name: public-key ones only.
const PUBLIC_KEY_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
const WRONG_ALGORITHM: &str =
    "the token must be signed by the identity provider (RS256, ES256 or EdDSA); HS256 tokens \
     are not accepted here";

enum Source {
    File(PathBuf),
    Url(reqwest::Url),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Url(u) => write!(f, "{u}"),
        }
    }
}

/// One usable public key of the set.
struct Key {
    kid: Option<String>,
    /// What it may verify: its `alg`, or every algorithm its key type allows.
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

/// The provider's keys and what a token from it must carry.
pub struct Provider {
    source: Source,
    client: reqwest::Client,
    /// The last good key set; `None` until one was read.
    keys: RwLock<Option<Arc<Vec<Key>>>>,
    /// Serialises reads of the source and holds when the last one began.
    last_read: tokio::sync::Mutex<Option<Instant>>,
    refresh: Duration,
    validation: Validation,
    tier_claim: String,
    tier_map: BTreeMap<String, Tier>,
}

impl Provider {
    /// Reads the key set once. A file must be readable now; a URL that does not answer yet is
    /// retried (tokens are answered 503 until a set was read).
    pub async fn start(auth: &AuthConfig) -> anyhow::Result<Arc<Self>> {
        let source = if !auth.jwks_file.is_empty() {
            Source::File(PathBuf::from(&auth.jwks_file))
        } else {
            let url = reqwest::Url::parse(&auth.jwks_url).context("auth.jwks_url")?;
            let loopback = url.host_str().is_some_and(|h| {
                h == "localhost"
                    || h.trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
            if url.scheme() == "http" && !loopback {
                tracing::warn!(
                    url = %url,
                    "auth.jwks_url is plain HTTP: whoever can change the answer can mint tokens"
                );
            }
            Source::Url(url)
        };
        let provider = Arc::new(Self::new(source, auth)?);
        match provider.read_now().await {
            Ok(n) => {
                tracing::info!(source = %provider.source, keys = n, "identity provider keys read")
            }
            Err(e) => match provider.source {
                Source::File(_) => return Err(e),
                Source::Url(_) => tracing::warn!(
                    source = %provider.source, error = format!("{e:#}"),
                    "the identity provider's keys could not be read; retrying"
                ),
            },
        }
        Ok(provider)
    }

    fn new(source: Source, auth: &AuthConfig) -> anyhow::Result<Self> {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if !auth.issuer.is_empty() {
            validation.set_issuer(&[&auth.issuer]);
            required.push("iss");
        }
        if auth.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&auth.audience]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        let mut tier_map = BTreeMap::new();
        for (from, to) in &auth.tier_map {
            let Some(tier) = parse_tier(to) else {
                bail!("auth.tier_map: {to:?} is not basic, premium or admin");
            };
            tier_map.insert(from.clone(), tier);
        }
        Ok(Self {
            source,
            client: reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .build()
                .context("making the HTTP client for auth.jwks_url")?,
            keys: RwLock::new(None),
            last_read: tokio::sync::Mutex::new(None),
            refresh: Duration::from_secs(auth.jwks_refresh_secs),
            validation,
            tier_claim: auth.tier_claim.clone(),
            tier_map,
        })
    }

    /// Rereads the key set every `auth.jwks_refresh_secs` (every [`REFETCH_MIN`] while none
    /// has been read yet) until `stop`.
    pub fn spawn_refresh(self: &Arc<Self>, stop: CancellationToken) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let wait = if me.current().is_some() {
                    me.refresh
                } else {
                    REFETCH_MIN
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                if let Err(e) = me.read_now().await {
                    tracing::warn!(
                        source = %me.source, error = format!("{e:#}"),
                        "rereading the identity provider's keys failed; the last good set stays"
                    );
                }
            }
        });
    }

    fn current(&self) -> Option<Arc<Vec<Key>>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the source and replaces the key set; returns how many usable keys it has.
    async fn read_now(&self) -> anyhow::Result<usize> {
        let mut last = self.last_read.lock().await;
        *last = Some(Instant::now());
        self.read_locked().await
    }

    /// Rereads the source unless a read began less than [`REFETCH_MIN`] ago; callers that
    /// arrive during a read wait for it rather than start another.
    async fn read_if_stale(&self) {
        let mut last = self.last_read.lock().await;
        if last.is_some_and(|t| t.elapsed() < REFETCH_MIN) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.read_locked().await {
            tracing::warn!(
                source = %self.source, error = format!("{e:#}"),
                "rereading the identity provider's keys failed; the last good set stays"
            );
        }
    }

    async fn read_locked(&self) -> anyhow::Result<usize> {
        let bytes = match &self.source {
            Source::File(path) => tokio::fs::read(path)
                .await
                .with_context(|| format!("reading auth.jwks_file {}", path.display()))?,
            Source::Url(url) => self.fetch(url).await?,
        };
        let keys =
            parse_key_set(&bytes).with_context(|| format!("the key set at {}", self.source))?;
        let n = keys.len();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(keys));
        Ok(n)
    }

    async fn fetch(&self, url: &reqwest::Url) -> anyhow::Result<Vec<u8>> {
        let mut resp = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .with_context(|| format!("fetching {url}"))?;
        if !resp.status().is_success() {
            bail!("{url} answered {}", resp.status());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .with_context(|| format!("reading {url}"))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                bail!("{url} sent more than {MAX_JWKS_BYTES} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Checks a token: signed by one of the provider's keys with a public-key algorithm, not
    /// expired, from the configured issuer to the configured audience, its `sub` a user id.
    pub async fn verify(&self, token: &str) -> Result<Claims, Error> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| token_error(&e, WRONG_ALGORITHM))?;
        if !PUBLIC_KEY_ALGORITHMS.contains(&header.alg) {
            return Err(Error::unauthorized("invalid_token", WRONG_ALGORITHM));
        }
        let kid = header.kid.as_deref();
        let known =
            |keys: &[Key]| kid.is_none_or(|kid| keys.iter().any(|k| k.kid.as_deref() == Some(kid)));
        let keys = match self.current() {
            Some(keys) if known(&keys) => keys,
            _ => {
                // A key the set lacks (rotated in since the last read), or no set yet.
                self.read_if_stale().await;
                self.current().ok_or_else(|| {
                    Error::Unavailable(
                        "the identity provider's keys could not be read yet; retry shortly".into(),
                    )
                })?
            }
        };
        let candidates: Vec<&Key> = keys
            .iter()
            .filter(|k| k.algorithms.contains(&header.alg))
            // A key the set names no kid for may have signed any token.
            .filter(|k| kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid)
            .collect();
        if candidates.is_empty() {
            let message =
                if kid.is_some_and(|kid| !keys.iter().any(|k| k.kid.as_deref() == Some(kid))) {
                    "the token's signing key (kid) is not one of the identity provider's keys"
                } else {
                    "no key of the identity provider verifies the token's algorithm"
                };
            return Err(Error::unauthorized("invalid_token", message));
        }
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        for key in candidates {
            match jsonwebtoken::decode::<Value>(token, &key.key, &validation) {
                Ok(data) => return self.claims(&data.claims),
                // Not this key: try the next one that fits (a token or key without a kid).
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::InvalidSignature
                            | ErrorKind::Crypto(_)
                            | ErrorKind::InvalidEcdsaKey
                            | ErrorKind::InvalidRsaKey(_)
                            | ErrorKind::InvalidKeyFormat
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(token_error(&e, WRONG_ALGORITHM)),
            }
        }
        Err(Error::unauthorized(
            "invalid_token",
            "the token's signature does not verify",
        ))
    }

    /// Our claims from the provider's: `sub`, `exp`, `iat` and the tier from `tier_claim`.
    fn claims(&self, claims: &Value) -> Result<Claims, Error> {
        let sub = claims.get("sub").and_then(Value::as_str).ok_or_else(|| {
            Error::unauthorized("invalid_token", "the token lacks a required claim")
        })?;
        check_user_id(sub)?;
        let exp = claims.get("exp").and_then(Value::as_u64).ok_or_else(|| {
            Error::unauthorized("invalid_token", "the token lacks a required claim")
        })?;
        Ok(Claims {
            sub: sub.to_string(),
            tier: self.tier(claims),
            iat: claims.get("iat").and_then(Value::as_u64).unwrap_or(0),
            exp,
        })
    }

    /// The highest tier the claim's values map to; `basic` when none does.
    fn tier(&self, claims: &Value) -> Tier {
        let values: Vec<&str> = match lookup(claims, &self.tier_claim) {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        values
            .into_iter()
            .filter_map(|v| {
                if self.tier_map.is_empty() {
                    parse_tier(v)
                } else {
                    self.tier_map.get(v).copied()
                }
            })
            .max_by_key(|t| rank(*t))
            .unwrap_or(Tier::Basic)
    }
}

/// The value at a dotted `path` in a JSON object: the whole path as one key first (claim
/// names such as `https://example.com/roles` hold dots), then split at each dot, the longest
/// head first (`realm_access.roles` is `roles` inside `realm_access`).
fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let object = value.as_object()?;
    if let Some(v) = object.get(path) {
        return Some(v);
    }
    path.rmatch_indices('.').find_map(|(i, _)| {
        object
            .get(&path[..i])
            .and_then(|inner| lookup(inner, &path[i + 1..]))
    })
}

fn parse_tier(s: &str) -> Option<Tier> {
    match s {
        "basic" => Some(Tier::Basic),
        "premium" => Some(Tier::Premium),
        "admin" => Some(Tier::Admin),
        _ => None,
    }
}

fn rank(t: Tier) -> u8 {
    match t {
        Tier::Basic => 0,
        Tier::Premium => 1,
        Tier::Admin => 2,
    }
}

/// The usable signing keys of a JWKS document. Keys this node cannot or must not use
/// (encryption keys, symmetric keys, unknown types) are skipped with a warning; a set with no
/// usable key is an error (the last good set then stays).
fn parse_key_set(bytes: &[u8]) -> anyhow::Result<Vec<Key>> {
    let doc: Value = serde_json::from_slice(bytes).context("not JSON")?;
    let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
        bail!("not a JWKS (no \"keys\" array)");
    };
    let mut keys = Vec::new();
    for entry in entries {
        match parse_key(entry) {
            Ok(k) => keys.push(k),
            Err(why) => {
                let kid = entry.get("kid").and_then(Value::as_str).unwrap_or("(none)");
                tracing::warn!(kid, "a key of the identity provider is skipped: {why}");
            }
        }
    }
    if keys.is_empty() {
        bail!("no usable signing key (RSA, EC P-256/P-384 or Ed25519)");
    }
    Ok(keys)
}

fn parse_key(entry: &Value) -> Result<Key, &'static str> {
    let jwk: Jwk = serde_json::from_value(entry.clone())
        .map_err(|_| "not a key of a known type (RSA, EC, OKP) or malformed")?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key (use = enc)");
    }
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return Err("its key_ops do not include verify");
    }
    let fits = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return Err("an EC curve other than P-256 or P-384"),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            _ => return Err("an OKP curve other than Ed25519"),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err("a symmetric (oct) key: only public keys are taken")
        }
    };
    let algorithms = match jwk.common.key_algorithm {
        None => fits,
        Some(a) => {
            let alg = Algorithm::from_str(&a.to_string())
                .map_err(|_| "its alg is not a signature algorithm")?;
            if !fits.contains(&alg) {
                return Err("its alg does not fit its key type");
            }
            vec![alg]
        }
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "its key parameters are malformed")?;
    Ok(Key {
        kid: jwk.common.key_id.clone(),
        algorithms,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn provider(tier_claim: &str, map: &[(&str, &str)]) -> Provider {
        let auth = AuthConfig {
            jwks_file: "/nonexistent".into(),
            tier_claim: tier_claim.into(),
            tier_map: map
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            ..AuthConfig::default()
        };
        Provider::new(Source::File("/nonexistent".into()), &auth).unwrap()
    }

    #[test]
    fn the_tier_claim_is_a_dotted_path_and_keys_with_dots_match_whole_first() {
        let claims = json!({
            "realm_access": { "roles": ["offline_access", "wharf-admin"] },
            "https://example.com/roles": ["paying"],
            "https://example.com": { "plan": "paying" },
            "tier": "premium",
        });
        let map = [("wharf-admin", "admin"), ("paying", "premium")];
        assert_eq!(
            provider("realm_access.roles", &map).tier(&claims),
            Tier::Admin
        );
        assert_eq!(
            provider("https://example.com/roles", &map).tier(&claims),
            Tier::Premium
        );
        assert_eq!(
            provider("https://example.com.plan", &map).tier(&claims),
            Tier::Premium
        );
        // No tier_map: the claim names wharf's tiers itself.
        assert_eq!(provider("tier", &[]).tier(&claims), Tier::Premium);
        // With a map, only mapped values count; nothing mapped is basic.
        assert_eq!(provider("tier", &map).tier(&claims), Tier::Basic);
        assert_eq!(provider("missing.path", &map).tier(&claims), Tier::Basic);
        // The highest of several wins, whatever their order.
        let both = json!({ "roles": ["wharf-admin", "paying"] });
        assert_eq!(provider("roles", &map).tier(&both), Tier::Admin);
        let odd = json!({ "roles": 7 });
        assert_eq!(provider("roles", &map).tier(&odd), Tier::Basic);
    }

    #[test]
    fn symmetric_encryption_and_unknown_keys_are_skipped() {
        let set = json!({ "keys": [
            { "kty": "oct", "k": "c2VjcmV0", "kid": "hmac" },
            { "kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB", "kid": "enc" },
            { "kty": "XYZ", "kid": "odd" },
            { "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "ed" },
        ]});
        let keys = parse_key_set(set.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("ed"));
        assert_eq!(keys[0].algorithms, vec![Algorithm::EdDSA]);
        let none = json!({ "keys": [{ "kty": "oct", "k": "c2VjcmV0" }] });
        assert!(parse_key_set(none.to_string().as_bytes()).is_err());
        assert!(parse_key_set(b"{}").is_err());
        let mismatched = json!({ "kty": "OKP", "crv": "Ed25519", "alg": "RS256", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" });
        assert!(parse_key(&mismatched).is_err());
    }

    #[test]
    fn auth_settings_are_checked() {
        use crate::config::Config;
        let with = |f: &dyn Fn(&mut AuthConfig)| {
            let mut c = Config::default();
            f(&mut c.auth);
            c.validate()
        };
        with(&|_| {}).unwrap();
        with(&|a| a.jwks_url = "https://idp.example.com/certs".into()).unwrap();
        let errors = [
            with(&|a| {
                a.jwks_file = "k.json".into();
                a.jwks_url = "https://idp.example.com/certs".into();
            }),
            with(&|a| a.jwks_url = "ftp://idp.example.com/certs".into()),
            with(&|a| a.issuer = "https://idp.example.com".into()),
            with(&|a| {
                a.jwks_file = "k.json".into();
                a.tier_map.insert("boss".into(), "root".into());
            }),
            with(&|a| {
                a.jwks_file = "k.json".into();
                a.audience = "  ".into();
            }),
            with(&|a| {
                a.jwks_file = "k.json".into();
                a.jwks_refresh_secs = 0;
            }),
        ];
        for e in errors {
            assert!(e.unwrap_err().to_string().contains("auth."));
        }
    }
}
