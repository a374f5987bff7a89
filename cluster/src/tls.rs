//! The cluster's certificate authority, node certificates and join tokens.
//!
//! `cluster init` (or a node's first start) makes a CA; every node holds the CA's key so that any
//! node can admit a joining one. Nodes present certificates signed by that CA to each other
//! (mutual TLS) under the fixed server name [`SERVER_NAME`], so addresses may change freely.
//! A join token carries the CA certificate (so that the joining node can check whom it talks
//! to), an expiry, and a MAC under the cluster's join key (so that any node can check it).

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity as TonicIdentity, ServerTlsConfig};

use crate::Error;

/// The name every node certificate carries and every peer checks.
pub const SERVER_NAME: &str = "wharf-node";
const TLS_DIR: &str = "tls";
const TOKEN_PREFIX: &str = "wharf1";

/// A node's TLS material and the cluster secrets it shares with its peers.
#[derive(Clone)]
pub struct Identity {
    pub ca_pem: String,
    pub ca_key_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub join_key: [u8; 32],
}

fn ca_params() -> Result<CertificateParams, Error> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "wharf cluster CA");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(p)
}

fn tls_err(e: impl std::fmt::Display) -> Error {
    Error::Tls(e.to_string())
}

impl Identity {
    /// A new cluster: a new CA, this node's certificate, a new join key.
    pub fn new_cluster() -> Result<Self, Error> {
        let ca_key = KeyPair::generate().map_err(tls_err)?;
        let ca = ca_params()?.self_signed(&ca_key).map_err(tls_err)?;
        let mut join_key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut join_key);
        let mut id = Identity {
            ca_pem: ca.pem(),
            ca_key_pem: ca_key.serialize_pem(),
            cert_pem: String::new(),
            key_pem: String::new(),
            join_key,
        };
        let (cert, key) = id.issue_node_cert()?;
        id.cert_pem = cert;
        id.key_pem = key;
        Ok(id)
    }

    /// A certificate and key for a node, signed by the cluster CA.
    pub fn issue_node_cert(&self) -> Result<(String, String), Error> {
        let ca_key = KeyPair::from_pem(&self.ca_key_pem).map_err(tls_err)?;
        let issuer = Issuer::new(ca_params()?, ca_key);
        let key = KeyPair::generate().map_err(tls_err)?;
        let mut p = CertificateParams::new(vec![SERVER_NAME.to_string(), "localhost".to_string()])
            .map_err(tls_err)?;
        p.distinguished_name.push(DnType::CommonName, SERVER_NAME);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &issuer).map_err(tls_err)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    fn paths(data_dir: &Path) -> [PathBuf; 5] {
        let d = data_dir.join(TLS_DIR);
        [
            d.join("ca.pem"),
            d.join("ca.key"),
            d.join("node.pem"),
            d.join("node.key"),
            d.join("join.key"),
        ]
    }

    pub fn exists(data_dir: &Path) -> bool {
        Self::paths(data_dir)[0].exists()
    }

    pub fn load(data_dir: &Path) -> Result<Self, Error> {
        let [ca, ca_key, cert, key, join] = Self::paths(data_dir);
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| Error::Tls(format!("reading {}: {e}", p.display())))
        };
        let mut join_key = [0u8; 32];
        hex::decode_to_slice(read(&join)?.trim(), &mut join_key)
            .map_err(|e| Error::Tls(format!("bad join key: {e}")))?;
        Ok(Identity {
            ca_pem: read(&ca)?,
            ca_key_pem: read(&ca_key)?,
            cert_pem: read(&cert)?,
            key_pem: read(&key)?,
            join_key,
        })
    }

    pub fn save(&self, data_dir: &Path) -> Result<(), Error> {
        let dir = data_dir.join(TLS_DIR);
        std::fs::create_dir_all(&dir)?;
        let [ca, ca_key, cert, key, join] = Self::paths(data_dir);
        write_file(&cert, &self.cert_pem, false)?;
        write_file(&key, &self.key_pem, true)?;
        write_file(&ca_key, &self.ca_key_pem, true)?;
        write_file(&join, &hex::encode(self.join_key), true)?;
        // The CA certificate last: its presence says the directory is complete.
        write_file(&ca, &self.ca_pem, false)?;
        Ok(())
    }

    pub fn server_tls(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(TonicIdentity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            // Join comes from nodes that have no certificate yet; every other call checks one.
            .client_auth_optional(true)
    }

    pub fn client_tls(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(TonicIdentity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(SERVER_NAME)
    }

    /// A join token valid for `ttl_secs`.
    pub fn join_token(&self, now_secs: u64, ttl_secs: u64) -> String {
        let exp = now_secs + ttl_secs;
        let ca_der = pem_body(&self.ca_pem).unwrap_or_default();
        format!(
            "{TOKEN_PREFIX}.{exp}.{}.{}",
            mac(&self.join_key, exp),
            URL_SAFE_NO_PAD.encode(ca_der)
        )
    }

    /// Checks a join token: made with this cluster's join key, not expired.
    pub fn verify_join_token(&self, token: &str, now_secs: u64) -> Result<(), Error> {
        let (exp, mac_hex, _) = split_token(token)?;
        if mac(&self.join_key, exp) != mac_hex {
            return Err(Error::JoinRefused(
                "the join token is not valid for this cluster".into(),
            ));
        }
        if exp < now_secs {
            return Err(Error::JoinRefused("the join token has expired".into()));
        }
        Ok(())
    }
}

/// The CA certificate a join token carries, as PEM, for the joining side's TLS.
pub fn token_ca_pem(token: &str) -> Result<String, Error> {
    let (_, _, ca_b64) = split_token(token)?;
    let der = URL_SAFE_NO_PAD
        .decode(ca_b64)
        .map_err(|_| Error::JoinRefused("malformed join token".into()))?;
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    Ok(format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    ))
}

fn split_token(token: &str) -> Result<(u64, &str, &str), Error> {
    let bad = || Error::JoinRefused("malformed join token".into());
    let mut it = token.trim().splitn(4, '.');
    let (Some(TOKEN_PREFIX), Some(exp), Some(mac), Some(ca)) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(bad());
    };
    Ok((exp.parse().map_err(|_| bad())?, mac, ca))
}

fn mac(key: &[u8; 32], exp: u64) -> String {
    let h = blake3::keyed_hash(key, format!("wharf-join:{exp}").as_bytes());
    hex::encode(&h.as_bytes()[..16])
}

fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    STANDARD.decode(body).ok()
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), Error> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(if private { 0o600 } else { 0o644 });
    let mut f = opts.open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_tokens_verify_expire_and_carry_the_ca() {
        let id = Identity::new_cluster().unwrap();
        let t = id.join_token(1000, 60);
        id.verify_join_token(&t, 1000).unwrap();
        assert!(
            matches!(id.verify_join_token(&t, 2000), Err(Error::JoinRefused(m)) if m.contains("expired"))
        );
        let other = Identity::new_cluster().unwrap();
        assert!(
            matches!(other.verify_join_token(&t, 1000), Err(Error::JoinRefused(m)) if m.contains("not valid"))
        );
        assert!(id.verify_join_token("wharf1.x", 1000).is_err());
        assert_eq!(pem_body(&token_ca_pem(&t).unwrap()), pem_body(&id.ca_pem));
    }

    #[test]
    fn identity_round_trips_through_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::new_cluster().unwrap();
        assert!(!Identity::exists(dir.path()));
        id.save(dir.path()).unwrap();
        assert!(Identity::exists(dir.path()));
        let back = Identity::load(dir.path()).unwrap();
        assert_eq!(back.ca_pem, id.ca_pem);
        assert_eq!(back.join_key, id.join_key);
        // A second node certificate from the loaded CA key.
        let (cert, _) = back.issue_node_cert().unwrap();
        assert!(cert.contains("BEGIN CERTIFICATE"));
    }
}
