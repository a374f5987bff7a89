//! TLS for `https://` nodes. With the cluster CA pinned (`Trust::Ca`), a node serving its
//! cluster certificate (`node.tls = "cluster"`) is accepted under the cluster's fixed server
//! name, whatever address the URL names, as over QUIC; other certificates are checked against
//! the CA for the URL's host. `Trust::Unset` leaves the public roots to reqwest.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::quic::{ca_roots, AnyCert, Trust};
use crate::{Error, Result};

/// The name every cluster certificate carries.
const CLUSTER_NAME: &str = "wharf-node";

pub(crate) fn config(trust: &Trust) -> Result<Option<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let mut tls = match trust {
        Trust::Unset => return Ok(None),
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth(),
        Trust::Ca(pem) => {
            let roots = ca_roots(pem)?;
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| Error::Tls(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ClusterName(inner)))
                .with_no_client_auth()
        }
    };
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(tls))
}

/// Verifies against the pinned CA: for the URL's host, or else for the cluster's name.
#[derive(Debug)]
struct ClusterName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ClusterName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Ok(v) => Ok(v),
            Err(_) => {
                let cluster = ServerName::try_from(CLUSTER_NAME).expect("a valid name");
                self.0
                    .verify_server_cert(end_entity, intermediates, &cluster, ocsp, now)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
