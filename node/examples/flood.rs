//! Misbehaving clients for `scripts/bench-abuse`: many connections that hold a node's
//! resources without ever making a proper request.
//!
//! ```text
//! flood quic-no-hello ADDR CONNS SECS      QUIC connections that never say Hello but push data
//! flood http-idle ADDR CONNS SECS          TCP connections that send nothing
//! flood http-half-headers ADDR CONNS SECS  HTTP requests whose headers never end
//! ```
//! Prints how many connections it opened and how many the node refused or closed early.
//! Connections come from the loopback addresses 127.0.0.2 to 127.0.0.9 in turn, so that the
//! node's per-address limits do not stop the flood before its limits in all do.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, addr, conns, secs] = args.as_slice() else {
        anyhow::bail!("usage: flood quic-no-hello|http-idle|http-half-headers ADDR CONNS SECS");
    };
    let conns: usize = conns.parse()?;
    let hold = Duration::from_secs(secs.parse()?);
    let opened = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + hold;
    let mut tasks = Vec::new();
    let endpoints = if mode == "quic-no-hello" {
        (0..SOURCES)
            .map(|i| quic_endpoint(source(i)))
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    for i in 0..conns {
        let (addr, opened, closed, mode) =
            (addr.clone(), opened.clone(), closed.clone(), mode.clone());
        let endpoint = endpoints.get(i % SOURCES).cloned();
        let from = source(i);
        tasks.push(tokio::spawn(async move {
            let ended_early = match mode.as_str() {
                "quic-no-hello" => {
                    quic_no_hello(endpoint.expect("endpoint"), &addr, &opened, until).await
                }
                "http-idle" => tcp_hold(from, &addr, b"", &opened, until).await,
                "http-half-headers" => {
                    tcp_hold(
                        from,
                        &addr,
                        b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ",
                        &opened,
                        until,
                    )
                    .await
                }
                other => panic!("unknown mode {other}"),
            };
            if ended_early {
                closed.fetch_add(1, Ordering::Relaxed);
            }
        }));
        // Not all at once: a listen backlog overflow is not what is measured.
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    println!(
        "{mode}: {} of {conns} connections opened, {} refused or closed by the node before {}s",
        opened.load(Ordering::Relaxed),
        closed.load(Ordering::Relaxed),
        hold.as_secs()
    );
    Ok(())
}

/// How many loopback addresses the connections come from.
const SOURCES: usize = 8;

/// The address connection `i` comes from: 127.0.0.2 to 127.0.0.9 in turn.
fn source(i: usize) -> std::net::IpAddr {
    std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % SOURCES) as u8).into()
}

/// Holds a TCP connection (after sending `first`) until `until`; true if the node closed it.
async fn tcp_hold(
    from: std::net::IpAddr,
    addr: &str,
    first: &[u8],
    opened: &AtomicUsize,
    until: Instant,
) -> bool {
    let Ok(addr) = addr.parse::<std::net::SocketAddr>() else {
        return true;
    };
    let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
        return true;
    };
    if socket.bind((from, 0).into()).is_err() {
        return true;
    }
    let Ok(mut s) = socket.connect(addr).await else {
        return true;
    };
    opened.fetch_add(1, Ordering::Relaxed);
    if s.write_all(first).await.is_err() {
        return true;
    }
    let mut buf = [0u8; 4096];
    let left = until.saturating_duration_since(Instant::now());
    loop {
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Opens a QUIC connection and pushes data on streams without a Hello, until `until`.
async fn quic_no_hello(
    endpoint: quinn::Endpoint,
    addr: &str,
    opened: &AtomicUsize,
    until: Instant,
) -> bool {
    let Ok(addr) = addr.parse() else { return true };
    let Ok(connecting) = endpoint.connect(addr, "wharf-node") else {
        return true;
    };
    let Ok(conn) = connecting.await else {
        return true;
    };
    opened.fetch_add(1, Ordering::Relaxed);
    let junk = bytes::Bytes::from(vec![0u8; 1 << 20]);
    let pushing = async {
        // Half a Hello's length on the first stream (the node waits for the rest), then as
        // many streams as it lets open, each pushing megabytes.
        if let Ok((mut send, _recv)) = conn.open_bi().await {
            let _ = send.write_all(&[0, 0]).await;
            std::mem::forget(send);
        }
        for _ in 0..64 {
            let Ok((mut send, _recv)) = conn.open_bi().await else {
                return;
            };
            let junk = junk.clone();
            tokio::spawn(async move {
                loop {
                    if send.write_chunk(junk.clone()).await.is_err() {
                        return;
                    }
                }
            });
        }
    };
    let left = tokio::time::sleep(until.saturating_duration_since(Instant::now()));
    let closed = conn.closed();
    tokio::pin!(left, closed);
    tokio::select! {
        _ = &mut closed => true,
        _ = &mut left => false,
        _ = pushing => tokio::select! {
            _ = &mut closed => true,
            _ = &mut left => false,
        },
    }
}

/// A client endpoint on `from` that accepts any certificate: this is an attacker, not a client.
fn quic_endpoint(from: std::net::IpAddr) -> anyhow::Result<quinn::Endpoint> {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    #[derive(Debug)]
    struct Any(Arc<rustls::crypto::CryptoProvider>);
    impl ServerCertVerifier for Any {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Any(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![wharf_proto::quic::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut endpoint = quinn::Endpoint::client((from, 0).into())?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    Ok(endpoint)
}
