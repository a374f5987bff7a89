//! The QUIC transport: one connection per node (made on first use, made again when it dies), a
//! Hello with the JWT on its first stream, then one bidirectional stream per request or chunk.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::{RecvStream, VarInt};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::AsyncReadExt;
use tokio::sync::{Mutex, OnceCell};
use wharf_proto::quic::{
    read_frame, write_frame, Hello, Reply, Request, ALPN, CONNECTION_WINDOW, STREAM_WINDOW,
};

use crate::{Error, Result};

/// The name every node's certificate carries (the cluster CA signs it).
const SERVER_NAME: &str = "wharf-node";
/// A request or chunk that takes longer than this is abandoned (and retried elsewhere).
const OP_TIMEOUT: Duration = Duration::from_secs(300);

/// How the client trusts a node's certificate.
#[derive(Clone, Debug, Default)]
pub enum Trust {
    /// No QUIC trust configured: `quic://` nodes are refused.
    #[default]
    Unset,
    /// Pin the cluster's CA (`<data-dir>/tls/ca.pem`), PEM.
    Ca(Vec<u8>),
    /// Accept any certificate (development only: no protection against a man in the middle).
    Insecure,
}

/// The QUIC side of a client: one endpoint, shared by every node's connection.
pub(crate) struct Transport {
    config: quinn::ClientConfig,
    endpoint: OnceCell<quinn::Endpoint>,
    token: Arc<std::sync::RwLock<String>>,
}

/// The node's close code when a connection's token expired.
const TOKEN_EXPIRED: VarInt = VarInt::from_u32(0x13);

/// A node that failed to connect, or whose connection died, is skipped for this long: UDP has
/// no "connection refused", so every try would otherwise wait for a handshake timeout.
const DOWN_FOR: Duration = Duration::from_secs(3);

/// One `quic://host:port` node.
pub(crate) struct QuicNode {
    pub(crate) addr: String,
    link: Mutex<Link>,
}

#[derive(Default)]
struct Link {
    conn: Option<quinn::Connection>,
    /// The token the connection said Hello with.
    token: String,
    down_until: Option<Instant>,
}

impl QuicNode {
    pub(crate) fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_string(),
            link: Mutex::new(Link::default()),
        }
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> Error {
        Error::Unreachable(format!("quic://{}: {e}", self.addr))
    }

    async fn mark_down(&self) {
        let mut link = self.link.lock().await;
        link.conn = None;
        link.down_until = Some(Instant::now() + DOWN_FOR);
    }
}

impl Transport {
    pub(crate) fn new(trust: &Trust, token: Arc<std::sync::RwLock<String>>) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Tls(e.to_string()))?;
        let mut tls = match trust {
            Trust::Unset => {
                return Err(Error::Tls(
                    "quic:// nodes need the cluster CA to pin (--ca <data-dir>/tls/ca.pem or \
                     WHARF_CA) or --insecure"
                        .into(),
                ))
            }
            Trust::Ca(pem) => builder
                .with_root_certificates(ca_roots(pem)?)
                .with_no_client_auth(),
            Trust::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
                .with_no_client_auth(),
        };
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| Error::Tls(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
            .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
            .send_window(u64::from(CONNECTION_WINDOW))
            // A node gone silent (killed, paused, cut off) is noticed within 10 s.
            .keep_alive_interval(Some(Duration::from_secs(2)))
            .max_idle_timeout(Some(VarInt::from_u32(10_000).into()));
        config.transport_config(Arc::new(transport));
        Ok(Self {
            config,
            endpoint: OnceCell::new(),
            token,
        })
    }

    async fn endpoint(&self) -> Result<&quinn::Endpoint> {
        self.endpoint
            .get_or_try_init(|| async {
                let bind: SocketAddr = "0.0.0.0:0".parse().expect("address");
                let socket = wharf_proto::quic::udp_socket(bind)?;
                let runtime = Arc::new(quinn::TokioRuntime);
                quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
                    .map_err(Error::Io)
            })
            .await
    }

    fn token(&self) -> String {
        self.token.read().expect("lock poisoned").clone()
    }

    /// The node's live connection, made (with its Hello) if there is none, and the token it
    /// said Hello with.
    async fn connection(&self, node: &QuicNode) -> Result<(quinn::Connection, String)> {
        let mut link = node.link.lock().await;
        if let Some(c) = link.conn.as_ref() {
            if c.close_reason().is_none() {
                return Ok((c.clone(), link.token.clone()));
            }
        }
        link.conn = None;
        if link.down_until.is_some_and(|t| Instant::now() < t) {
            return Err(node.unreachable("down (retrying shortly)"));
        }
        let token = self.token();
        match self.connect(node, &token).await {
            Ok(conn) => {
                link.conn = Some(conn.clone());
                link.token = token.clone();
                link.down_until = None;
                Ok((conn, token))
            }
            Err(e) => {
                if matches!(e, Error::Unreachable(_)) {
                    link.down_until = Some(Instant::now() + DOWN_FOR);
                }
                Err(e)
            }
        }
    }

    async fn connect(&self, node: &QuicNode, token: &str) -> Result<quinn::Connection> {
        let addr = tokio::net::lookup_host(&node.addr)
            .await
            .map_err(|e| node.unreachable(e))?
            .next()
            .ok_or_else(|| node.unreachable("no address"))?;
        let endpoint = self.endpoint().await?;
        let connecting = endpoint
            .connect_with(self.config.clone(), addr, SERVER_NAME)
            .map_err(|e| node.unreachable(e))?;
        let conn = tokio::time::timeout(Duration::from_secs(5), connecting)
            .await
            .map_err(|_| node.unreachable("handshake timed out"))?
            .map_err(|e| node.unreachable(e))?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| node.unreachable(e))?;
        let hello = Hello {
            token: token.to_string(),
        };
        write_frame(&mut send, &hello)
            .await
            .map_err(|e| node.unreachable(e))?;
        let _ = send.finish();
        let reply: Reply = read_frame(&mut recv)
            .await
            .map_err(|e| node.unreachable(e))?;
        check(reply)?;
        Ok(conn)
    }

    /// One request on its own stream (with `body` after it, for a chunk): the reply's JSON on
    /// success, and the stream for whatever follows it.
    pub(crate) async fn call(
        &self,
        node: &QuicNode,
        req: Request,
        body: Option<bytes::Bytes>,
    ) -> Result<(Vec<u8>, RecvStream)> {
        let (conn, used) = self.connection(node).await?;
        match self.exchange(node, &conn, &req, body.clone()).await {
            // The connection's token expired and `set_token` gave another since: once more, on
            // a new connection.
            Err(e) if e.code() == Some("token_expired") && self.token() != used => {
                node.link.lock().await.conn = None;
                let (conn, _) = self.connection(node).await?;
                self.exchange(node, &conn, &req, body).await
            }
            other => other,
        }
    }

    async fn exchange(
        &self,
        node: &QuicNode,
        conn: &quinn::Connection,
        req: &Request,
        body: Option<bytes::Bytes>,
    ) -> Result<(Vec<u8>, RecvStream)> {
        let exchange = async {
            let lost = |e: String| node.unreachable(e);
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| lost(e.to_string()))?;
            write_frame(&mut send, req)
                .await
                .map_err(|e| lost(e.to_string()))?;
            if let Some(b) = body {
                // Handed over without a copy.
                send.write_chunk(b).await.map_err(|e| lost(e.to_string()))?;
            }
            let _ = send.finish();
            let reply: Reply = read_frame(&mut recv)
                .await
                .map_err(|e| lost(e.to_string()))?;
            Ok::<_, Error>((check(reply)?, recv))
        };
        let res = tokio::time::timeout(OP_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(node.unreachable("timed out")));
        if matches!(res, Err(Error::Unreachable(_))) {
            match conn.close_reason() {
                // The node closed the connection at the token's expiry: not a node that is down.
                // The next call reconnects (with the token `set_token` gave, if any).
                Some(quinn::ConnectionError::ApplicationClosed(c))
                    if c.error_code == TOKEN_EXPIRED =>
                {
                    return Err(Error::Api {
                        status: 401,
                        code: "token_expired".into(),
                        message: "the token expired; this connection was closed".into(),
                    });
                }
                Some(_) => node.mark_down().await,
                None => {}
            }
        }
        res
    }

    /// A ranged read of `len` bytes at `offset`: exactly those bytes after the reply, which
    /// must name the same range.
    pub(crate) async fn read(
        &self,
        node: &QuicNode,
        req: Request,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let (head, recv) = self.call(node, req, None).await?;
        #[derive(serde::Deserialize)]
        struct Head {
            offset: u64,
            length: u64,
        }
        match serde_json::from_slice::<Head>(&head) {
            Ok(h) if h.offset == offset && h.length == len => {}
            _ => return Err(node.unreachable("the reply names another range")),
        }
        let mut data = Vec::with_capacity(len as usize);
        let mut body = recv.take(len);
        tokio::time::timeout(OP_TIMEOUT, body.read_to_end(&mut data))
            .await
            .map_err(|_| node.unreachable("read timed out"))?
            .map_err(|e| node.unreachable(e))?;
        if data.len() as u64 != len {
            return Err(node.unreachable("short range read"));
        }
        Ok(data)
    }
}

/// The certificates of a CA file (PEM), as roots to trust.
pub(crate) fn ca_roots(pem: &[u8]) -> Result<rustls::RootCertStore> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| Error::Tls(format!("CA file: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| Error::Tls(format!("CA file: {e}")))?;
    }
    if roots.is_empty() {
        return Err(Error::Tls("CA file holds no certificate".into()));
    }
    Ok(roots)
}

/// A reply's JSON, or its typed error.
fn check(reply: Reply) -> Result<Vec<u8>> {
    if reply.code.is_empty() {
        return Ok(reply.json);
    }
    Err(Error::Api {
        status: u16::try_from(reply.status).unwrap_or(500),
        code: reply.code,
        message: reply.message,
    })
}

/// `--insecure`: any certificate is accepted; the handshake's signatures are still checked.
#[derive(Debug)]
pub(crate) struct AnyCert(pub(crate) Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
