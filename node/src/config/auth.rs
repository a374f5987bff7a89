//! Client tokens: `auth` (the embedded secret, or an identity provider's keys).

use anyhow::bail;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret for client tokens; empty means the one generated into `<data_dir>/jwt_secret`.
    /// Verifies nothing when a JWKS is configured.
    pub jwt_secret: String,
    /// An external identity provider's public keys (a JWKS JSON file). Set (or `jwks_url`):
    /// user tokens are RS256, ES256 or EdDSA from that provider, and HS256 tokens are refused.
    pub jwks_file: String,
    /// The same fetched over HTTP(S), e.g. Keycloak's `…/protocol/openid-connect/certs`.
    pub jwks_url: String,
    /// How often the key set is read again; a token with an unknown `kid` also rereads it (at
    /// most once every few seconds), so a rotated key is taken at once.
    pub jwks_refresh_secs: u64,
    /// With a JWKS: the `iss` a token must carry; empty: not checked.
    pub issuer: String,
    /// With a JWKS: a value the token's `aud` must include; empty: not checked.
    pub audience: String,
    /// With a JWKS: the claim that carries the tier, a dotted path (`realm_access.roles`); a
    /// key that itself holds dots (`https://example.com/roles`) is matched whole first.
    pub tier_claim: String,
    /// With a JWKS: the claim's values (a string or an array of strings) to wharf tiers,
    /// `{ "wharf-admin" = "admin" }`; the highest wins, `basic` when none maps. Empty: values
    /// that name a tier (`basic`, `premium`, `admin`) are taken as they are.
    pub tier_map: std::collections::BTreeMap<String, String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: String::new(),
            jwks_file: String::new(),
            jwks_url: String::new(),
            jwks_refresh_secs: 300,
            issuer: String::new(),
            audience: String::new(),
            tier_claim: "tier".into(),
            tier_map: Default::default(),
        }
    }
}

impl AuthConfig {
    /// Whether user tokens come from an external identity provider (a JWKS is configured).
    pub fn external(&self) -> bool {
        !self.jwks_file.is_empty() || !self.jwks_url.is_empty()
    }

    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if !self.jwt_secret.is_empty() && self.jwt_secret.len() < 32 {
            bail!("auth.jwt_secret must be at least 32 characters");
        }
        if !self.external() {
            if !self.issuer.is_empty()
                || !self.audience.is_empty()
                || !self.tier_map.is_empty()
                || self.tier_claim != "tier"
            {
                bail!(
                    "auth.issuer, auth.audience, auth.tier_claim and auth.tier_map apply to \
                     tokens from an identity provider: set auth.jwks_file or auth.jwks_url"
                );
            }
            return Ok(());
        }
        if !self.jwks_file.is_empty() && !self.jwks_url.is_empty() {
            bail!("auth.jwks_file and auth.jwks_url exclude each other");
        }
        if !self.jwks_url.is_empty() {
            let ok = reqwest::Url::parse(&self.jwks_url)
                .is_ok_and(|u| ["http", "https"].contains(&u.scheme()) && u.has_host());
            if !ok {
                bail!("auth.jwks_url must be an http:// or https:// URL");
            }
        }
        if self.jwks_refresh_secs == 0 {
            bail!("auth.jwks_refresh_secs must be positive");
        }
        for (key, value) in [("issuer", &self.issuer), ("audience", &self.audience)] {
            if !value.is_empty() && value.trim().is_empty() {
                bail!("auth.{key} is blank: leave it empty or give the value tokens carry");
            }
        }
        if self.tier_claim.trim().is_empty() {
            bail!("auth.tier_claim must name a claim (default \"tier\")");
        }
        for (from, to) in &self.tier_map {
            if from.is_empty() {
                bail!("auth.tier_map: a key is empty");
            }
            if !["basic", "premium", "admin"].contains(&to.as_str()) {
                bail!(
                    "auth.tier_map: {from:?} maps to {to:?}, which is not basic, premium or admin"
                );
            }
        }
        Ok(())
    }
}
