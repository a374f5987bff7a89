//! A clamd client: `PING`, `VERSION` and `INSTREAM` over TCP or a unix socket.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::store::ByteStream;

/// clamd's own INSTREAM chunks are limited by StreamMaxLength only; 64 KiB keeps them small.
const CHUNK: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Clamd {
    Tcp(String),
    Unix(PathBuf),
}

/// What clamd said about a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    Clean,
    Infected(String),
    /// clamd answered with an error about this stream (e.g. StreamMaxLength exceeded).
    Error(String),
}

trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

pub const DEFAULT_SOCKET: &str = "unix:/var/run/clamav/clamd.ctl";

impl Clamd {
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(a) = s.strip_prefix("tcp://") {
            Some(Clamd::Tcp(a.to_string()))
        } else {
            s.strip_prefix("unix:")
                .map(|p| Clamd::Unix(PathBuf::from(p)))
        }
    }

    async fn connect(&self) -> io::Result<Box<dyn Conn>> {
        let connect = async {
            Ok::<Box<dyn Conn>, io::Error>(match self {
                Clamd::Tcp(a) => Box::new(tokio::net::TcpStream::connect(a).await?),
                #[cfg(unix)]
                Clamd::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
                #[cfg(not(unix))]
                Clamd::Unix(_) => return Err(io::Error::other("unix sockets need a unix system")),
            })
        };
        tokio::time::timeout(Duration::from_secs(3), connect)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting to clamd"))?
    }

    async fn command(&self, cmd: &str) -> io::Result<String> {
        let mut c = self.connect().await?;
        c.write_all(format!("z{cmd}\0").as_bytes()).await?;
        read_reply(&mut c, Duration::from_secs(5)).await
    }

    /// `PONG` when clamd is up.
    pub async fn ping(&self) -> io::Result<()> {
        match self.command("PING").await?.as_str() {
            "PONG" => Ok(()),
            other => Err(io::Error::other(format!(
                "clamd answered {other:?} to PING"
            ))),
        }
    }

    pub async fn version(&self) -> io::Result<String> {
        self.command("VERSION").await
    }

    /// Streams `body` to clamd with INSTREAM. `idle` bounds every wait on clamd.
    pub async fn scan(&self, mut body: ByteStream, idle: Duration) -> io::Result<Finding> {
        let mut c = self.connect().await?;
        c.write_all(b"zINSTREAM\0").await?;
        while let Some(piece) = body.next().await {
            let piece = piece?;
            for part in piece.chunks(CHUNK) {
                let send = async {
                    c.write_all(&(part.len() as u32).to_be_bytes()).await?;
                    c.write_all(part).await
                };
                tokio::time::timeout(idle, send).await.map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "clamd stopped reading")
                })??;
            }
        }
        c.write_all(&0u32.to_be_bytes()).await?;
        let reply = read_reply(&mut c, idle).await?;
        Ok(parse_reply(&reply))
    }
}

async fn read_reply(c: &mut Box<dyn Conn>, idle: Duration) -> io::Result<String> {
    let mut buf = Vec::new();
    let read = async {
        let mut byte = [0u8; 1];
        loop {
            if c.read(&mut byte).await? == 0 || byte[0] == 0 {
                break;
            }
            buf.push(byte[0]);
            if buf.len() > 4096 {
                break;
            }
        }
        Ok::<_, io::Error>(())
    };
    tokio::time::timeout(idle, read)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "clamd did not answer"))??;
    if buf.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "clamd closed the connection",
        ));
    }
    Ok(String::from_utf8_lossy(&buf).trim().to_string())
}

/// `stream: OK`, `stream: NAME FOUND`, `… ERROR`.
fn parse_reply(reply: &str) -> Finding {
    let body = reply.strip_prefix("stream: ").unwrap_or(reply);
    if body == "OK" {
        Finding::Clean
    } else if let Some(sig) = body.strip_suffix(" FOUND") {
        Finding::Infected(sig.to_string())
    } else {
        Finding::Error(body.trim_end_matches(" ERROR").to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse() {
        assert_eq!(parse_reply("stream: OK"), Finding::Clean);
        assert_eq!(
            parse_reply("stream: Eicar-Test-Signature.UNOFFICIAL FOUND"),
            Finding::Infected("Eicar-Test-Signature.UNOFFICIAL".into())
        );
        assert_eq!(
            parse_reply("INSTREAM size limit exceeded. ERROR"),
            Finding::Error("INSTREAM size limit exceeded.".into())
        );
        assert_eq!(
            Clamd::parse("tcp://127.0.0.1:3310"),
            Some(Clamd::Tcp("127.0.0.1:3310".into()))
        );
        assert_eq!(
            Clamd::parse("unix:/run/c.ctl"),
            Some(Clamd::Unix("/run/c.ctl".into()))
        );
        assert_eq!(Clamd::parse("http://x"), None);
    }
}
