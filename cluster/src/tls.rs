//! The cluster's certificate authority, node certificates and join tokens.
//!
//! The founding node makes a CA and keeps its key; a joining node makes its own key pair and
//! sends a certificate signing request, which a holder of the CA key signs (see
//! docs/SECURITY.md). Each node certificate names its node id (a URI SAN
//! `urn:wharf:node:<id>`) besides the fixed server name [`SERVER_NAME`] that peers check, so
//! addresses may change freely and every call can be checked against the cluster's node
//! records. A join token carries the CA certificate (so that the joining node can check whom it
//! talks to), a token id and a secret whose BLAKE3 the cluster keeps in Raft.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity as TonicIdentity, ServerTlsConfig};

use crate::Error;

/// The name every node certificate carries and every peer checks.
pub const SERVER_NAME: &str = "wharf-node";
const TLS_DIR: &str = "tls";
const TOKEN_PREFIX: &str = "wharf2";
const NODE_URI: &str = "urn:wharf:node:";

/// A node's TLS material.
#[derive(Clone)]
pub struct Identity {
    pub ca_pem: String,
    /// Only on a node that signs joiners' requests (the founder, unless the operator moved it).
    pub ca_key_pem: Option<String>,
    pub cert_pem: String,
    pub key_pem: String,
    /// What a joiner trusts before its own log names its peers: the cluster's nodes when it
    /// joined, and every id above the highest one handed out then (nodes admitted later).
    pub seed: Seed,
}

/// See [`Identity::seed`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Seed {
    pub peers: Vec<u64>,
    pub floor: u64,
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

/// What a node certificate says: the server name peers check, and the node's id.
fn node_params(node_id: u64) -> Result<CertificateParams, Error> {
    let mut p = CertificateParams::new(vec![SERVER_NAME.to_string(), "localhost".to_string()])
        .map_err(tls_err)?;
    let uri = format!("{NODE_URI}{node_id}").try_into().map_err(tls_err)?;
    p.subject_alt_names.push(SanType::URI(uri));
    p.distinguished_name
        .push(DnType::CommonName, format!("wharf node {node_id}"));
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(p)
}

/// A new CA, as PEM (certificate, private key): the start of a rotation of the cluster CA.
pub fn new_ca() -> Result<(String, String), Error> {
    let key = KeyPair::generate().map_err(tls_err)?;
    let ca = ca_params()?.self_signed(&key).map_err(tls_err)?;
    Ok((ca.pem(), key.serialize_pem()))
}

/// Whether the certificate `pem` and the certificate `der` are for the same key: a node's
/// record pins its key, so that a certificate made again by a new CA (a rotation) for the
/// same key and id is still the node's.
pub fn same_key(pem: &str, der: &[u8]) -> bool {
    let Some(recorded) = pem_body(pem) else {
        return false;
    };
    // Every Raft call comes here: the same certificate needs no parsing.
    if recorded == der {
        return true;
    }
    match (
        x509_parser::parse_x509_certificate(&recorded),
        x509_parser::parse_x509_certificate(der),
    ) {
        (Ok((_, a)), Ok((_, b))) => a.public_key().raw == b.public_key().raw,
        _ => false,
    }
}

/// A new key pair and a certificate signing request for it (the key stays with the caller).
pub fn new_key_and_csr() -> Result<(String, String), Error> {
    let key = KeyPair::generate().map_err(tls_err)?;
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    p.distinguished_name
        .push(DnType::CommonName, "wharf joining node");
    let csr = p.serialize_request(&key).map_err(tls_err)?;
    Ok((csr.pem().map_err(tls_err)?, key.serialize_pem()))
}

/// Signs a joiner's request as node `node_id`'s certificate. Only the request's public key is
/// used (its signature checked): the names and the id are the CA's to choose.
pub fn sign_csr(ca_key_pem: &str, csr_pem: &str, node_id: u64) -> Result<String, Error> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(tls_err)?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| Error::JoinRefused(format!("bad certificate signing request: {e}")))?;
    let signed = CertificateSigningRequestParams {
        params: node_params(node_id)?,
        public_key: csr.public_key,
    };
    Ok(signed.signed_by(&issuer).map_err(tls_err)?.pem())
}

/// Checks that a signing request parses and is signed by its own key.
pub fn check_csr(csr_pem: &str) -> Result<(), Error> {
    CertificateSigningRequestParams::from_pem(csr_pem)
        .map(|_| ())
        .map_err(|e| Error::JoinRefused(format!("bad certificate signing request: {e}")))
}

/// The node id a certificate (DER) names, if it names one.
pub fn cert_node_id(der: &[u8]) -> Option<u64> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::URI(u) => u.strip_prefix(NODE_URI)?.parse().ok(),
        _ => None,
    })
}

/// Whether `cert_pem` carries a valid signature of the CA `ca_pem`.
pub fn issued_by(cert_pem: &str, ca_pem: &str) -> bool {
    let (Some(cert), Some(ca)) = (pem_body(cert_pem), pem_body(ca_pem)) else {
        return false;
    };
    let (Ok((_, cert)), Ok((_, ca))) = (
        x509_parser::parse_x509_certificate(&cert),
        x509_parser::parse_x509_certificate(&ca),
    ) else {
        return false;
    };
    cert.verify_signature(Some(ca.public_key())).is_ok()
}

/// The DER bytes of a PEM certificate.
pub fn pem_der(pem: &str) -> Option<Vec<u8>> {
    pem_body(pem)
}

/// Whether two PEM texts hold the same certificate.
pub fn same_certificate(a: &str, b: &str) -> bool {
    matches!((pem_body(a), pem_body(b)), (Some(x), Some(y)) if x == y)
}

/// The node id a PEM certificate names.
pub fn pem_node_id(pem: &str) -> Option<u64> {
    cert_node_id(&pem_body(pem)?)
}

impl Identity {
    /// A new cluster: a new CA, and the founding node's certificate.
    pub fn new_cluster(node_id: u64) -> Result<Self, Error> {
        let ca_key = KeyPair::generate().map_err(tls_err)?;
        let ca = ca_params()?.self_signed(&ca_key).map_err(tls_err)?;
        let (csr, key_pem) = new_key_and_csr()?;
        let ca_key_pem = ca_key.serialize_pem();
        let cert_pem = sign_csr(&ca_key_pem, &csr, node_id)?;
        Ok(Identity {
            ca_pem: ca.pem(),
            ca_key_pem: Some(ca_key_pem),
            cert_pem,
            key_pem,
            seed: Seed::default(),
        })
    }

    /// The node id this node's certificate names.
    pub fn node_id(&self) -> Option<u64> {
        pem_node_id(&self.cert_pem)
    }

    fn paths(data_dir: &Path) -> [PathBuf; 5] {
        let d = data_dir.join(TLS_DIR);
        [
            d.join("ca.pem"),
            d.join("ca.key"),
            d.join("node.pem"),
            d.join("node.key"),
            d.join("seed.json"),
        ]
    }

    pub fn exists(data_dir: &Path) -> bool {
        Self::paths(data_dir)[0].exists()
    }

    pub fn load(data_dir: &Path) -> Result<Self, Error> {
        let [ca, ca_key, cert, key, seed] = Self::paths(data_dir);
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map_err(|e| Error::Tls(format!("reading {}: {e}", p.display())))
        };
        let seed = match std::fs::read_to_string(&seed) {
            Ok(s) => serde_json::from_str(&s)
                .map_err(|e| Error::Tls(format!("{}: {e}", seed.display())))?,
            Err(_) => Seed::default(),
        };
        Ok(Identity {
            ca_pem: read(&ca)?,
            ca_key_pem: ca_key.exists().then(|| read(&ca_key)).transpose()?,
            cert_pem: read(&cert)?,
            key_pem: read(&key)?,
            seed,
        })
    }

    pub fn save(&self, data_dir: &Path) -> Result<(), Error> {
        let dir = data_dir.join(TLS_DIR);
        std::fs::create_dir_all(&dir)?;
        let [ca, ca_key, cert, key, seed] = Self::paths(data_dir);
        write_file(&cert, &self.cert_pem, false)?;
        write_file(&key, &self.key_pem, true)?;
        if let Some(k) = &self.ca_key_pem {
            write_file(&ca_key, k, true)?;
        }
        let seeds = serde_json::to_string(&self.seed).map_err(tls_err)?;
        write_file(&seed, &seeds, false)?;
        // The CA certificate last: its presence says the directory is complete.
        write_file(&ca, &self.ca_pem, false)?;
        sync_dir(&dir)?;
        sync_dir(data_dir)?;
        Ok(())
    }

    /// A new certificate for this node's key naming `node_id`, signed with the CA key this
    /// node holds (for certificates made before they named their node).
    pub fn reissue_own(&mut self, node_id: u64) -> Result<(), Error> {
        let Some(ca_key) = &self.ca_key_pem else {
            return Err(Error::Tls(
                "this node's certificate names no node id and this node holds no CA key to \
                 make one that does"
                    .into(),
            ));
        };
        let key = KeyPair::from_pem(&self.key_pem).map_err(tls_err)?;
        let issuer = Issuer::new(ca_params()?, KeyPair::from_pem(ca_key).map_err(tls_err)?);
        self.cert_pem = node_params(node_id)?
            .signed_by(&key, &issuer)
            .map_err(tls_err)?
            .pem();
        Ok(())
    }

    /// This node's certificate made again by the CA `ca_pem`/`ca_key_pem`, for the same key
    /// and node id: one step of rotating the cluster CA, done on every node while it is
    /// stopped. A node that held the old CA key holds the new one.
    pub fn reissue_under(
        &mut self,
        node_id: u64,
        ca_pem: &str,
        ca_key_pem: &str,
    ) -> Result<(), Error> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(tls_err)?;
        let issuer = Issuer::new(
            ca_params()?,
            KeyPair::from_pem(ca_key_pem).map_err(tls_err)?,
        );
        self.cert_pem = node_params(node_id)?
            .signed_by(&key, &issuer)
            .map_err(tls_err)?
            .pem();
        self.ca_pem = ca_pem.to_string();
        if self.ca_key_pem.is_some() {
            self.ca_key_pem = Some(ca_key_pem.to_string());
        }
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
}

/// A join token just made: what to hand the operator, and what the cluster keeps.
pub struct NewToken {
    /// `wharf2.<id>.<secret>.<CA certificate>`: shown once, never stored.
    pub token: String,
    pub id: String,
    pub secret_hash: String,
}

/// A new join token for the cluster whose CA certificate is `ca_pem`.
pub fn new_join_token(ca_pem: &str) -> NewToken {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut id);
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let id = hex::encode(id);
    let secret = URL_SAFE_NO_PAD.encode(secret);
    let ca_der = pem_body(ca_pem).unwrap_or_default();
    NewToken {
        token: format!(
            "{TOKEN_PREFIX}.{id}.{secret}.{}",
            URL_SAFE_NO_PAD.encode(ca_der)
        ),
        secret_hash: secret_hash(&secret),
        id,
    }
}

/// What the cluster keeps of a token's secret.
pub fn secret_hash(secret: &str) -> String {
    blake3::hash(format!("wharf-join-token:{secret}").as_bytes())
        .to_hex()
        .to_string()
}

/// A join token's parts.
pub struct ParsedToken {
    pub id: String,
    pub secret: String,
    ca_b64: String,
}

impl ParsedToken {
    /// The CA certificate the token carries, as PEM, for the joining side's TLS.
    pub fn ca_pem(&self) -> Result<String, Error> {
        let der = URL_SAFE_NO_PAD
            .decode(&self.ca_b64)
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

    pub fn secret_hash(&self) -> String {
        secret_hash(&self.secret)
    }
}

pub fn parse_join_token(token: &str) -> Result<ParsedToken, Error> {
    let bad = || Error::JoinRefused("malformed join token".into());
    let mut it = token.trim().splitn(4, '.');
    let (Some(prefix), Some(id), Some(secret), Some(ca)) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(bad());
    };
    if prefix == "wharf1" {
        return Err(Error::JoinRefused(
            "this join token is of an older kind; make a new one with `wharf cluster token`".into(),
        ));
    }
    if prefix != TOKEN_PREFIX
        || id.is_empty()
        || !id.bytes().all(|b| b.is_ascii_hexdigit())
        || secret.is_empty()
    {
        return Err(bad());
    }
    Ok(ParsedToken {
        id: id.to_string(),
        secret: secret.to_string(),
        ca_b64: ca.to_string(),
    })
}

fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect::<Vec<_>>()
        .concat();
    STANDARD.decode(body).ok()
}

/// Writes a file whole: a temporary file of its own name (so that a private file is never
/// written into another file's leftover temporary, which may be readable by others), fsynced,
/// renamed over the file.
pub fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), Error> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    // A leftover of a crash may have any mode: start from a new file.
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(if private { 0o600 } else { 0o644 });
    let mut f = opts.open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Makes a directory's entries (new files, renames) durable.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_tokens_carry_the_ca_and_a_secret_whose_hash_is_all_that_is_kept() {
        let id = Identity::new_cluster(1).unwrap();
        let t = new_join_token(&id.ca_pem);
        let parsed = parse_join_token(&t.token).unwrap();
        assert_eq!(parsed.id, t.id);
        assert_eq!(parsed.secret_hash(), t.secret_hash);
        assert!(!t.secret_hash.contains(&parsed.secret));
        assert_eq!(pem_body(&parsed.ca_pem().unwrap()), pem_body(&id.ca_pem));
        // Another token: another id and secret.
        let u = new_join_token(&id.ca_pem);
        assert_ne!(u.id, t.id);
        assert_ne!(u.secret_hash, t.secret_hash);
        assert!(parse_join_token("wharf2.x").is_err());
        assert!(parse_join_token("wharf2.zz.secret.ca").is_err());
        let old = parse_join_token("wharf1.1.2.3").err().unwrap().to_string();
        assert!(old.contains("older kind"), "{old}");
    }

    #[test]
    fn a_signed_request_names_the_node_the_ca_chose_and_keeps_the_joiners_key() {
        let ca = Identity::new_cluster(1).unwrap();
        assert_eq!(ca.node_id(), Some(1));
        let (csr, key_pem) = new_key_and_csr().unwrap();
        let cert = sign_csr(ca.ca_key_pem.as_deref().unwrap(), &csr, 7).unwrap();
        assert_eq!(pem_node_id(&cert), Some(7));
        // The certificate is for the joiner's key: its public key is the key pair's.
        let key = KeyPair::from_pem(&key_pem).unwrap();
        let der = pem_body(&cert).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            parsed.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
        // A tampered request is refused.
        let bad = csr.replace('A', "B");
        assert!(sign_csr(ca.ca_key_pem.as_deref().unwrap(), &bad, 8).is_err());
    }

    #[test]
    fn identity_round_trips_through_the_data_dir_with_private_keys_private() {
        let dir = tempfile::tempdir().unwrap();
        let mut id = Identity::new_cluster(1).unwrap();
        id.seed = Seed {
            peers: vec![1, 3],
            floor: 3,
        };
        assert!(!Identity::exists(dir.path()));
        // A leftover temporary file, world-readable, from a crash: not reused for a key.
        std::fs::create_dir_all(dir.path().join("tls")).unwrap();
        std::fs::write(dir.path().join("tls/ca.key.tmp"), "old").unwrap();
        id.save(dir.path()).unwrap();
        assert!(Identity::exists(dir.path()));
        let back = Identity::load(dir.path()).unwrap();
        assert_eq!(back.ca_pem, id.ca_pem);
        assert_eq!(back.ca_key_pem, id.ca_key_pem);
        assert_eq!(back.seed.peers, vec![1, 3]);
        assert_eq!(back.seed.floor, 3);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in ["ca.key", "node.key"] {
                let mode = std::fs::metadata(dir.path().join("tls").join(f))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o077, 0, "{f} has mode {mode:o}");
            }
        }
        // A joiner's data dir holds no CA key.
        let joiner = tempfile::tempdir().unwrap();
        let j = Identity {
            ca_key_pem: None,
            ..back.clone()
        };
        j.save(joiner.path()).unwrap();
        assert!(!joiner.path().join("tls/ca.key").exists());
        assert!(Identity::load(joiner.path()).unwrap().ca_key_pem.is_none());
    }

    #[test]
    fn an_old_certificate_is_reissued_with_its_node_id() {
        let mut id = Identity::new_cluster(1).unwrap();
        id.reissue_own(4).unwrap();
        assert_eq!(id.node_id(), Some(4));
        id.ca_key_pem = None;
        assert!(id.reissue_own(5).is_err());
    }
}
