//! A raw quinn client for the node's QUIC endpoint: connect with the node's CA, say Hello, send
//! one request per stream.

use std::sync::Arc;

use quinn::RecvStream;
use serde_json::Value;
use wharf_proto::quic::{read_frame, request::Op, write_frame, Hello, Reply, Request};

use super::Node;

pub async fn connect(node: &Node) -> quinn::Connection {
    try_connect(node).await.unwrap()
}

/// A connection to the node's QUIC endpoint, or the error that refused it.
pub async fn try_connect(node: &Node) -> Result<quinn::Connection, quinn::ConnectionError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let ca = std::fs::read(node.data_dir.join("tls/ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![wharf_proto::quic::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
        .connect(node.quic_addr.parse().unwrap(), "wharf-node")
        .unwrap()
        .await
}

pub async fn read_reply(recv: &mut RecvStream) -> Result<Reply, String> {
    read_frame(recv).await.map_err(|e| e.to_string())
}

pub async fn hello(conn: &quinn::Connection, token: &str) -> Result<Reply, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let hello = Hello {
        token: token.into(),
    };
    write_frame(&mut send, &hello).await.unwrap();
    send.finish().unwrap();
    read_reply(&mut recv).await
}

pub async fn call(conn: &quinn::Connection, op: Op, body: Option<&[u8]>) -> Result<Reply, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    write_frame(&mut send, &Request { op: Some(op) })
        .await
        .unwrap();
    if let Some(b) = body {
        send.write_all(b).await.map_err(|e| e.to_string())?;
    }
    send.finish().unwrap();
    read_reply(&mut recv).await
}

pub fn ok_json(r: Result<Reply, String>) -> Value {
    let r = r.unwrap();
    assert_eq!(r.code, "", "{}", r.message);
    serde_json::from_slice(&r.json).unwrap_or(Value::Null)
}
