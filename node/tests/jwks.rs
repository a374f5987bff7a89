//! User tokens from an external identity provider: real nodes verify RS256, ES256 and EdDSA
//! tokens with public keys from a JWKS file or a JWKS URL (a small HTTP server here), take a
//! rotated key by its `kid`, check issuer and audience, map a role claim to tiers, and refuse
//! the HS256 tokens the data dir's secret would sign.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{assert_error, json, Node};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};
use wharf_raft::model::Tier;

const ISSUER: &str = "https://idp.test/realms/wharf";
const AUDIENCE: &str = "wharf";

/// A key pair of the test's own identity provider: it signs tokens, its public half is a JWK.
struct Signer {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
}

impl Signer {
    fn es256(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        // The raw public key is the uncompressed point: 0x04, x, y.
        let raw = pair.public_key_raw();
        assert_eq!((raw.len(), raw[0]), (65, 4));
        Signer {
            kid: kid.into(),
            alg: Algorithm::ES256,
            key: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&raw[33..]),
            }),
        }
    }

    fn ed25519(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        Signer {
            kid: kid.into(),
            alg: Algorithm::EdDSA,
            key: EncodingKey::from_ed_der(&pair.serialize_der()),
            jwk: json!({
                "kty": "OKP", "crv": "Ed25519", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(pair.public_key_raw()),
            }),
        }
    }

    /// RS256 with a fixed test key (a 2048-bit RSA key takes long to make in a debug build;
    /// the pair was made with openssl for this test only).
    fn rs256(kid: &str) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let pem = std::fs::read(dir.join("jwks-rs256-test-key.pem")).unwrap();
        let mut jwk: Value = serde_json::from_slice(
            &std::fs::read(dir.join("jwks-rs256-test-key.pub.json")).unwrap(),
        )
        .unwrap();
        jwk["kid"] = kid.into();
        Signer {
            kid: kid.into(),
            alg: Algorithm::RS256,
            key: EncodingKey::from_rsa_pem(&pem).unwrap(),
            jwk,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }

    /// A token whose header names no key.
    fn sign_without_kid(&self, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(self.alg), claims, &self.key).unwrap()
    }

    /// A token for `user` with the right issuer and audience and these realm roles.
    fn token(&self, user: &str, roles: &[&str]) -> String {
        self.sign(&claims(user, roles))
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims as Keycloak makes them: roles under `realm_access.roles`.
fn claims(user: &str, roles: &[&str]) -> Value {
    json!({
        "iss": ISSUER,
        "aud": [AUDIENCE, "account"],
        "sub": user,
        "iat": now(),
        "exp": now() + 600,
        "azp": "wharf-web",
        "realm_access": { "roles": roles },
    })
}

fn jwks(signers: &[&Signer]) -> Value {
    json!({ "keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>() })
}

/// Writes a config file for external tokens; `source` is the `jwks_file = …` or `jwks_url =
/// …` line, `extra` more lines of the auth section.
fn config(dir: &Path, source: &str, extra: &str) -> PathBuf {
    let path = dir.join("wharf.toml");
    std::fs::write(
        &path,
        format!(
            "[auth]\n{source}\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n\
             tier_claim = \"realm_access.roles\"\n{extra}\n\
             [auth.tier_map]\n\"wharf-admin\" = \"admin\"\n\"paying\" = \"premium\"\n"
        ),
    )
    .unwrap();
    path
}

fn start(dir: &Path, config: &Path) -> Node {
    Node::start_with(
        &dir.join("node"),
        &[("WHARF_CONFIG", config.to_str().unwrap())],
    )
}

/// A JWKS endpoint: serves whatever set it holds, counts the fetches, can be made to fail.
#[derive(Clone)]
struct Idp {
    set: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
    addr: SocketAddr,
}

impl Idp {
    async fn start(set: Value) -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let idp = Idp {
            set: Arc::new(Mutex::new(set)),
            fetches: Arc::default(),
            failing: Arc::default(),
            addr: listener.local_addr().unwrap(),
        };
        let state = idp.clone();
        let app = axum::Router::new().route(
            "/realms/wharf/protocol/openid-connect/certs",
            axum::routing::get(move || {
                let s = state.clone();
                async move {
                    s.fetches.fetch_add(1, Ordering::SeqCst);
                    if s.failing.load(Ordering::SeqCst) {
                        return (StatusCode::INTERNAL_SERVER_ERROR, "down".to_string());
                    }
                    (StatusCode::OK, s.set.lock().unwrap().to_string())
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        idp
    }

    fn url(&self) -> String {
        format!(
            "http://{}/realms/wharf/protocol/openid-connect/certs",
            self.addr
        )
    }

    fn serve(&self, set: Value) {
        *self.set.lock().unwrap() = set;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

async fn list(node: &Node, token: &str) -> (StatusCode, Value) {
    json(node.get(token, "/v1/files").send().await.unwrap()).await
}

/// The HS256 token the data dir's secret signs (what embedded mode would take).
fn hs256_token(node: &Node) -> String {
    node.token("alice", Tier::Admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_signed_with_keys_from_a_jwks_file_are_accepted_and_hs256_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (es, ed, rs) = (
        Signer::es256("es-1"),
        Signer::ed25519("ed-1"),
        Signer::rs256("rs-1"),
    );
    // A second ES256 key that the set names no kid for.
    let mut plain = Signer::es256("");
    plain.jwk.as_object_mut().unwrap().remove("kid");
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, jwks(&[&es, &ed, &rs, &plain]).to_string()).unwrap();
    let cfg = config(
        dir.path(),
        &format!("jwks_file = {:?}", file.to_str().unwrap()),
        "",
    );
    let node = start(dir.path(), &cfg);
    // With a JWKS, no node holds a key that can mint a user token.
    assert!(
        !node.data_dir.join("jwt_secret").exists(),
        "the node made an HS256 secret"
    );

    // A real upload and download with the ES256 token; listings with the other two.
    let token = es.token("alice", &[]);
    let data = common::random_bytes(100_000, 7);
    let file_rec = node.upload(&token, "a.bin", &data).await;
    let id = file_rec["id"].as_str().unwrap();
    assert_eq!(node.download(&token, id).await, data);
    // Tokens without a kid are tried against every key of their algorithm.
    for t in [
        ed.token("alice", &[]),
        rs.token("alice", &[]),
        es.sign_without_kid(&claims("alice", &[])),
        plain.sign_without_kid(&claims("alice", &[])),
    ] {
        let (st, page) = list(&node, &t).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        assert_eq!(page["files"][0]["id"], id, "the same user sees the file");
    }
    // Another user's token from the same provider sees none of it.
    let (st, page) = list(&node, &ed.token("bob", &[])).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(page["files"].as_array().unwrap().len(), 0);

    // The node has no jwt_secret configured, and the data dir's secret signs nothing it takes.
    let got = list(&node, &hs256_token(&node)).await;
    assert_error(&got, 401, "invalid_token");
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HS256"),
        "{}",
        got.1
    );

    // A key not in the set, a signature by another key under a known kid, a bad subject.
    let stranger = Signer::es256("es-1");
    assert_error(
        &list(&node, &stranger.token("alice", &[])).await,
        401,
        "invalid_token",
    );
    let unknown = Signer::es256("nobody");
    assert_error(
        &list(&node, &unknown.token("alice", &[])).await,
        401,
        "invalid_token",
    );
    assert_error(
        &list(&node, &es.token("../etc", &[])).await,
        401,
        "invalid_token",
    );

    // QUIC verifies through the same keys.
    let conn = common::quic::connect(&node).await;
    let hello = common::quic::hello(&conn, &ed.token("alice", &[])).await;
    assert_eq!(common::quic::ok_json(hello)["user"], "alice");
    let conn = common::quic::connect(&node).await;
    let refused = common::quic::hello(&conn, &hs256_token(&node))
        .await
        .unwrap();
    assert_eq!(refused.code, "invalid_token", "{}", refused.message);

    // `wharf token issue` signs HS256 only: with this config it says why it will not.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["token", "issue", "--user", "alice", "--data-dir"])
        .arg(&node.data_dir)
        .env("WHARF_CONFIG", &cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("identity provider"), "{err}");

    // A node whose JWKS file is missing does not start, and says which file.
    let missing = dir.path().join("missing.json");
    let cfg2 = dir.path().join("missing.toml");
    std::fs::write(
        &cfg2,
        format!("[auth]\njwks_file = {:?}\n", missing.to_str().unwrap()),
    )
    .unwrap();
    let log = common::start_must_fail(
        &dir.path().join("other"),
        &[("WHARF_CONFIG", cfg2.to_str().unwrap())],
        &[],
    );
    assert!(log.contains("missing.json"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_a_jwks_url_rotate_by_kid_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old = Signer::es256("2026-01");
    let idp = Idp::start(jwks(&[&old])).await;
    let cfg = config(dir.path(), &format!("jwks_url = \"{}\"", idp.url()), "");
    let node = start(dir.path(), &cfg);
    let pid = node.pid();
    let (st, body) = list(&node, &old.token("alice", &[])).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let read_at_start = idp.fetches();
    assert!(read_at_start >= 1);

    // The provider rotates: a new key under a new kid, the old one retired.
    let new = Signer::ed25519("2026-02");
    let new_token = new.token("alice", &[]);
    idp.serve(jwks(&[&new]));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = list(&node, &new_token).await;
        if got.0 == StatusCode::OK {
            break;
        }
        // Refused only while the last read is too recent to read again.
        assert_error(&got, 401, "invalid_token");
        assert!(Instant::now() < deadline, "the new key was never taken");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(node.pid(), pid);
    // The old key went with its set.
    assert_error(
        &list(&node, &old.token("alice", &[])).await,
        401,
        "invalid_token",
    );

    // Unknown kids do not make the node hammer the provider: a burst reads it at most once
    // more (a read may just have become due), however many such tokens arrive.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let before = idp.fetches();
    for i in 0..20 {
        let t = Signer::es256(&format!("forged-{i}")).token("alice", &[]);
        assert_error(&list(&node, &t).await, 401, "invalid_token");
    }
    let burst = idp.fetches() - before;
    assert!(burst >= 1, "an unknown kid never reread the set");
    assert!(burst <= 2, "{burst} reads for one burst");

    // A provider that fails keeps the last good set in use.
    tokio::time::sleep(Duration::from_secs(6)).await;
    idp.failing.store(true, Ordering::SeqCst);
    let before = idp.fetches();
    let t = Signer::es256("forged-x").token("alice", &[]);
    assert_error(&list(&node, &t).await, 401, "invalid_token");
    assert!(idp.fetches() > before, "the failing provider was not asked");
    let (st, body) = list(&node, &new_token).await;
    assert_eq!(st, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_audience_and_expiry_are_checked_and_the_set_is_reread_periodically() {
    let dir = tempfile::tempdir().unwrap();
    let key = Signer::rs256("rs-1");
    let idp = Idp::start(jwks(&[&key])).await;
    let cfg = config(
        dir.path(),
        &format!("jwks_url = \"{}\"", idp.url()),
        "jwks_refresh_secs = 1",
    );
    let node = start(dir.path(), &cfg);
    let (st, body) = list(&node, &key.token("alice", &[])).await;
    assert_eq!(st, StatusCode::OK, "{body}");

    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = claims("alice", &[]);
        change(&mut c);
        key.sign(&c)
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "wrong issuer",
            with(&|c| c["iss"] = "https://evil.test/realms/wharf".into()),
            "issuer",
        ),
        (
            "no issuer",
            with(&|c| {
                c.as_object_mut().unwrap().remove("iss");
            }),
            "claim",
        ),
        (
            "wrong audience",
            with(&|c| c["aud"] = json!(["account", "other-api"])),
            "audience",
        ),
        (
            "no audience",
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            "claim",
        ),
        (
            "not yet valid",
            with(&|c| c["nbf"] = (now() + 3600).into()),
            "not valid yet",
        ),
    ];
    for (what, token, words) in cases {
        let got = list(&node, &token).await;
        assert_error(&got, 401, "invalid_token");
        let message = got.1["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{what}: {message}");
        assert!(
            !message.contains("InvalidIssuer") && !message.contains("Audience("),
            "{what}: library words in {message}"
        );
    }
    let expired = with(&|c| {
        c["iat"] = (now() - 7200).into();
        c["exp"] = (now() - 3600).into();
    });
    assert_error(&list(&node, &expired).await, 401, "token_expired");
    // A single-string audience is fine too.
    let single = with(&|c| c["aud"] = AUDIENCE.into());
    assert_eq!(list(&node, &single).await.0, StatusCode::OK);

    // jwks_refresh_secs = 1: the set is read again with no token asking for it.
    let before = idp.fetches();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(
        idp.fetches() >= before + 2,
        "{} -> {}",
        before,
        idp.fetches()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_comes_from_the_mapped_role_claim() {
    let dir = tempfile::tempdir().unwrap();
    let key = Signer::es256("es-1");
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, jwks(&[&key]).to_string()).unwrap();
    let cfg = config(
        dir.path(),
        &format!("jwks_file = {:?}", file.to_str().unwrap()),
        "",
    );
    let node = start(dir.path(), &cfg);

    let admin = key.token("root", &["offline_access", "wharf-admin", "paying"]);
    let (st, status) = json(node.get(&admin, "/v1/cluster/status").send().await.unwrap()).await;
    assert_eq!(st, StatusCode::OK, "{status}");

    let basic = key.token("carol", &["offline_access", "uma_authorization"]);
    let got = json(node.get(&basic, "/v1/cluster/status").send().await.unwrap()).await;
    assert_error(&got, 403, "forbidden");
    let premium = key.token("dave", &["paying"]);
    let got = json(
        node.get(&premium, "/v1/cluster/status")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&got, 403, "forbidden");

    // Tiers decide quotas: premium's is 1 TiB by default, basic's 10 GiB.
    let quota = |v: Value| v["quota"].as_u64().unwrap();
    assert_eq!(quota(node.usage(&premium).await), 1 << 40);
    assert_eq!(quota(node.usage(&basic).await), 10 << 30);
    // A tier name the map does not list is no tier: basic.
    let named = key.token("erin", &["admin"]);
    assert_eq!(quota(node.usage(&named).await), 10 << 30);
}
