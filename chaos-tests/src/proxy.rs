//! The fault proxy: one TCP forwarder per directed link (node to node, and client to node),
//! whose fault can change at any moment.
//!
//! - blocked: open connections are cut, new ones are accepted and then hang silently until the
//!   block lifts (as packets that vanish would make them), then are closed;
//! - delay: every piece of data waits `delay ± jitter` before it is passed on, in order;
//! - drop: each piece of data, with probability `drop`, kills its connection instead.

use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What a link does to its traffic now.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Fault {
    pub blocked: bool,
    pub delay_ms: u64,
    pub jitter_ms: u64,
    pub drop: f64,
}

/// One directed link: traffic towards node `to` (from one node, or from the clients).
pub struct Link {
    pub to: usize,
    pub listen: SocketAddr,
    fault: watch::Sender<Fault>,
}

impl Link {
    /// Binds `127.0.0.1:0` and forwards every connection to `upstream`.
    pub async fn start(to: usize, upstream: SocketAddr, seed: u64) -> anyhow::Result<Link> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let listen = listener.local_addr()?;
        let (tx, rx) = watch::channel(Fault::default());
        tokio::spawn(accept(listener, upstream, rx, seed));
        Ok(Link {
            to,
            listen,
            fault: tx,
        })
    }

    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    rx: watch::Receiver<Fault>,
    seed: u64,
) {
    let mut n = 0u64;
    while let Ok((inbound, _)) = listener.accept().await {
        n += 1;
        let _ = inbound.set_nodelay(true);
        let rng = StdRng::seed_from_u64(seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        tokio::spawn(connection(inbound, upstream, rx.clone(), rng));
    }
}

async fn wait_until(rx: &mut watch::Receiver<Fault>, f: impl Fn(&Fault) -> bool) {
    let _ = rx.wait_for(|v| f(v)).await;
}

async fn connection(
    inbound: TcpStream,
    upstream: SocketAddr,
    mut rx: watch::Receiver<Fault>,
    rng: StdRng,
) {
    if rx.borrow().blocked {
        // Hang silently until the block lifts, then close.
        wait_until(&mut rx, |f| !f.blocked).await;
        return;
    }
    let Ok(Ok(outbound)) =
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(upstream)).await
    else {
        return;
    };
    let _ = outbound.set_nodelay(true);
    let (ir, iw) = inbound.into_split();
    let (or, ow) = outbound.into_split();
    let mut blocked = rx.clone();
    tokio::select! {
        _ = pump(ir, ow, rx.clone(), rng.clone()) => {}
        _ = pump(or, iw, rx, rng) => {}
        // A block cuts open connections.
        _ = wait_until(&mut blocked, |f| f.blocked) => {}
    }
}

async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    rx: watch::Receiver<Fault>,
    mut rng: StdRng,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        let fault = *rx.borrow();
        if fault.drop > 0.0 && rng.gen_bool(fault.drop.min(1.0)) {
            return;
        }
        if fault.delay_ms > 0 {
            let jitter = if fault.jitter_ms > 0 {
                rng.gen_range(0..=2 * fault.jitter_ms) as i64 - fault.jitter_ms as i64
            } else {
                0
            };
            let ms = (fault.delay_ms as i64 + jitter).max(0) as u64;
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An echo server, and a link in front of it.
    async fn echo_link() -> Link {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = server.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = server.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        Link::start(1, upstream, 7).await.unwrap()
    }

    async fn round_trip(link: &Link, within: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        let attempt = async {
            let mut s = TcpStream::connect(link.listen).await.ok()?;
            s.write_all(b"ping").await.ok()?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.ok()?;
            (&buf == b"ping").then_some(())
        };
        tokio::time::timeout(within, attempt).await.ok()??;
        Some(t0.elapsed())
    }

    #[tokio::test]
    async fn a_link_passes_blocks_delays_and_heals() {
        let link = echo_link().await;
        assert!(round_trip(&link, Duration::from_secs(2)).await.is_some());

        // Blocked: an open connection is cut, a new one hangs.
        let mut open = TcpStream::connect(link.listen).await.unwrap();
        open.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        open.read_exact(&mut b).await.unwrap();
        link.set(Fault {
            blocked: true,
            ..Fault::default()
        });
        let n = tokio::time::timeout(Duration::from_secs(2), open.read(&mut b)).await;
        assert!(
            matches!(n, Ok(Ok(0)) | Ok(Err(_))),
            "the open connection survived a block"
        );
        assert!(round_trip(&link, Duration::from_millis(500))
            .await
            .is_none());

        // Delayed: each direction waits its delay.
        link.set(Fault {
            delay_ms: 150,
            ..Fault::default()
        });
        let took = round_trip(&link, Duration::from_secs(5)).await.unwrap();
        assert!(took >= Duration::from_millis(300), "{took:?}");

        // Dropping everything: connections die at their first data.
        link.set(Fault {
            drop: 1.0,
            ..Fault::default()
        });
        assert!(round_trip(&link, Duration::from_secs(1)).await.is_none());

        link.set(Fault::default());
        let took = round_trip(&link, Duration::from_secs(2)).await.unwrap();
        assert!(took < Duration::from_millis(300), "{took:?}");
    }
}

/// A UDP link (the clients' QUIC traffic to one node): datagrams from each client address go
/// out through a socket of their own, so the node's answers find their way back. Blocked or
/// dropped datagrams vanish; delayed ones are sent later (and may overtake each other).
pub struct UdpLink {
    pub listen: SocketAddr,
    fault: watch::Sender<Fault>,
}

impl UdpLink {
    pub async fn start(upstream: SocketAddr, seed: u64) -> anyhow::Result<UdpLink> {
        let socket = std::sync::Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
        let listen = socket.local_addr()?;
        let (tx, rx) = watch::channel(Fault::default());
        tokio::spawn(udp_relay(socket, upstream, rx, seed));
        Ok(UdpLink { listen, fault: tx })
    }

    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }
}

/// Whether a datagram passes, and after how long.
fn datagram_fate(fault: &Fault, rng: &mut StdRng) -> Option<Duration> {
    if fault.blocked || (fault.drop > 0.0 && rng.gen_bool(fault.drop.min(1.0))) {
        return None;
    }
    let jitter = if fault.jitter_ms > 0 {
        rng.gen_range(0..=2 * fault.jitter_ms) as i64 - fault.jitter_ms as i64
    } else {
        0
    };
    Some(Duration::from_millis(
        (fault.delay_ms as i64 + jitter).max(0) as u64,
    ))
}

async fn send_later(
    socket: std::sync::Arc<tokio::net::UdpSocket>,
    to: Option<SocketAddr>,
    data: Vec<u8>,
    after: Duration,
) {
    if !after.is_zero() {
        tokio::time::sleep(after).await;
    }
    let _ = match to {
        Some(addr) => socket.send_to(&data, addr).await,
        None => socket.send(&data).await,
    };
}

async fn udp_relay(
    socket: std::sync::Arc<tokio::net::UdpSocket>,
    upstream: SocketAddr,
    rx: watch::Receiver<Fault>,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sessions: std::collections::HashMap<SocketAddr, std::sync::Arc<tokio::net::UdpSocket>> =
        std::collections::HashMap::new();
    let mut buf = vec![0u8; 65_536];
    while let Ok((n, client)) = socket.recv_from(&mut buf).await {
        let out = match sessions.get(&client) {
            Some(s) => s.clone(),
            None => {
                let Ok(s) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                if s.connect(upstream).await.is_err() {
                    continue;
                }
                let s = std::sync::Arc::new(s);
                // The node's answers, back to this client, through the same faults.
                let (back, listen, mut rx2) = (s.clone(), socket.clone(), rx.clone());
                let mut rng2 = StdRng::seed_from_u64(rng.gen());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_536];
                    while let Ok(n) = back.recv(&mut buf).await {
                        let fault = *rx2.borrow_and_update();
                        if let Some(after) = datagram_fate(&fault, &mut rng2) {
                            let data = buf[..n].to_vec();
                            tokio::spawn(send_later(listen.clone(), Some(client), data, after));
                        }
                    }
                });
                sessions.insert(client, s.clone());
                s
            }
        };
        let fault = *rx.borrow();
        if let Some(after) = datagram_fate(&fault, &mut rng) {
            tokio::spawn(send_later(out, None, buf[..n].to_vec(), after));
        }
    }
}

#[cfg(test)]
mod udp_tests {
    use super::*;

    #[tokio::test]
    async fn a_udp_link_relays_both_ways_blocks_and_heals() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = server.recv_from(&mut buf).await {
                let _ = server.send_to(&buf[..n], from).await;
            }
        });
        let link = UdpLink::start(upstream, 3).await.unwrap();
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(link.listen).await.unwrap();
        let echo = |msg: &'static [u8]| {
            let client = &client;
            async move {
                client.send(msg).await.unwrap();
                let mut buf = [0u8; 64];
                let n = tokio::time::timeout(Duration::from_millis(500), client.recv(&mut buf))
                    .await
                    .ok()?
                    .ok()?;
                Some(buf[..n].to_vec())
            }
        };
        assert_eq!(echo(b"one").await.as_deref(), Some(&b"one"[..]));
        link.set(Fault {
            blocked: true,
            ..Fault::default()
        });
        assert_eq!(echo(b"two").await, None);
        link.set(Fault::default());
        assert_eq!(echo(b"three").await.as_deref(), Some(&b"three"[..]));
    }
}
