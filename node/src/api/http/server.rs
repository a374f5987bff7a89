//! Serving the router on a TCP listener, with the limits a public server needs: a connection
//! limit, a header-read timeout, an idle timeout, TCP keepalive, optional TLS, and a bounded
//! drain on shutdown.
//!
//! axum's own `serve` has none of these knobs, so connections are driven by hyper directly.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::config::HttpConfig;

/// What `serve` needs besides the router.
pub struct Limits {
    pub header_timeout: Duration,
    pub idle: Duration,
    pub tcp_keepalive: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// How long requests in flight may go on after shutdown begins.
    pub drain: Duration,
}

impl Limits {
    pub fn new(c: &HttpConfig, drain_secs: u64) -> Self {
        Self {
            header_timeout: Duration::from_secs(c.header_timeout_secs),
            idle: Duration::from_secs(c.idle_secs),
            tcp_keepalive: Duration::from_secs(c.tcp_keepalive_secs),
            max_connections: c.max_connections,
            max_connections_per_ip: c.max_connections_per_ip,
            drain: Duration::from_secs(drain_secs),
        }
    }
}

/// The answer to a connection over a limit: written raw, then the connection is closed.
fn too_many() -> Vec<u8> {
    let body = r#"{"error":{"code":"too_many_connections","message":"the node is at its connection limit"}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `app` until `stop` is cancelled; then stops accepting, lets connections finish their
/// requests for at most `limits.drain`, and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    stop: CancellationToken,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let by_ip = crate::limits::Slots::<std::net::IpAddr>::default();
    let conns = tokio_util::task::TaskTracker::new();
    let limits = Arc::new(limits);
    // Cancelled when the drain time is over: connections still open are dropped.
    let force = CancellationToken::new();
    // Refusals answered at once; past these, a refused connection is just closed (a flood
    // must not turn into as many tasks, each holding its socket for a while).
    let refusing = Arc::new(tokio::sync::Semaphore::new(REFUSALS_ANSWERED));
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if open.load(Ordering::Relaxed) >= limits.max_connections {
            refuse_bounded(tcp, &refusing);
            continue;
        }
        let Some(per_ip) = by_ip.take(&peer.ip(), limits.max_connections_per_ip) else {
            refuse_bounded(tcp, &refusing);
            continue;
        };
        open.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("wharf_http_connections").increment(1.0);
        let guard = (Open(open.clone()), per_ip);
        let _ = tcp.set_nodelay(true);
        let sock = socket2::SockRef::from(&tcp);
        let _ = sock.set_tcp_keepalive(
            &socket2::TcpKeepalive::new()
                .with_time(limits.tcp_keepalive)
                .with_interval(limits.tcp_keepalive / 3 + Duration::from_secs(1))
                .with_retries(3),
        );
        let (app, tls, limits, stop) = (app.clone(), tls.clone(), limits.clone(), stop.clone());
        let force = force.clone();
        conns.spawn(async move {
            let _guard = guard;
            let serve = async {
                match tls {
                    None => connection(tcp, peer, app, &limits, stop).await,
                    Some(acceptor) => {
                        let handshake =
                            tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await;
                        if let Ok(Ok(stream)) = handshake {
                            connection(stream, peer, app, &limits, stop).await;
                        }
                    }
                }
            };
            tokio::select! {
                _ = serve => {}
                _ = force.cancelled() => {}
            }
        });
    }
    // Closed now, so that new connections are refused at once instead of waiting in the
    // backlog for an accept that never comes.
    drop(listener);
    conns.close();
    if tokio::time::timeout(limits.drain, conns.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = open.load(Ordering::Relaxed),
            "connections still open after the drain time; closing them"
        );
        force.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), conns.wait()).await;
    }
}

struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("wharf_http_connections").decrement(1.0);
    }
}

/// Refused connections that get an answer at the same time (see [`refuse`]).
const REFUSALS_ANSWERED: usize = 64;

/// Answers a refused connection with [`refuse`] while fewer than [`REFUSALS_ANSWERED`] are
/// being answered; closes it at once otherwise.
fn refuse_bounded(tcp: TcpStream, refusing: &Arc<tokio::sync::Semaphore>) {
    metrics::counter!("wharf_http_connections_refused_total").increment(1);
    if let Ok(permit) = refusing.clone().try_acquire_owned() {
        tokio::spawn(async move {
            refuse(tcp).await;
            drop(permit);
        });
    }
}

/// Answers 503 and closes. What the client sent is read (briefly) first and after: closing a
/// socket with unread input resets it, and the client would see that instead of the answer.
async fn refuse(mut tcp: TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut buf)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = tcp.write_all(&too_many()).await;
        let _ = tcp.shutdown().await;
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// One connection: hyper with a header timeout; closed when idle (no request in flight and no
/// byte moving) for `limits.idle`, and asked to finish when shutdown begins.
async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    app: Router,
    limits: &Limits,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let in_flight = Arc::new(AtomicUsize::new(0));
    let service = {
        let in_flight = in_flight.clone();
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let flight = Flight::start(in_flight.clone(), activity.clone());
            let app = app.clone();
            async move {
                use tower::ServiceExt;
                let res = app.oneshot(req.map(axum::body::Body::new)).await;
                // The response body may still stream: it counts as activity through the IO.
                drop(flight);
                res
            }
        })
    };
    // HTTP/1.1 only: hyper's header-read timeout exists for HTTP/1 alone, and an HTTP/2 client
    // could keep a connection "active" forever with pings.
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024);
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let idle_check = tokio::time::sleep(Duration::from_secs(1).min(limits.idle));
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = idle_check => {
                if in_flight.load(Ordering::Relaxed) == 0 && activity.idle_for() >= limits.idle {
                    if stopping {
                        return;
                    }
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// When the connection last moved a byte (or a request began or ended).
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A request in flight on a connection (counted until its handler answered).
struct Flight {
    count: Arc<AtomicUsize>,
    activity: Arc<Activity>,
}

impl Flight {
    fn start(count: Arc<AtomicUsize>, activity: Arc<Activity>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        Self { count, activity }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.activity.touch();
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that records when bytes moved.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The TLS acceptor for `node.tls_cert`/`node.tls_key` (PEM), or the cluster certificate.
pub fn tls_acceptor(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use anyhow::Context as _;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("reading the TLS certificate chain (PEM)")?;
    if certs.is_empty() {
        anyhow::bail!("the TLS certificate file holds no certificate");
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("reading the TLS key (PEM)")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not go together")?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))
}
