//! The client-facing front ends: [`http`] (the HTTP API, axum), [`tus`] (tus 1.0 at `/files/`,
//! on the same listener), [`web`] (the browser page at `/`, on it too) and [`quic`] (the same
//! operations over QUIC). All parse and authenticate requests and call the actor handles.

pub mod http;
#[cfg(test)]
mod props;
pub mod quic;
pub mod tus;
pub mod web;

/// A body as a stream that fails with `TimedOut` when no bytes came for `idle`: a sender that
/// stalled or vanished frees what it held.
pub(crate) fn idle_stream<S>(stream: S, idle: std::time::Duration) -> crate::store::ByteStream
where
    S: futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
{
    use futures::StreamExt;
    Box::pin(futures::stream::unfold(
        Some(Box::pin(stream)),
        move |s| async move {
            let mut s = s?;
            match tokio::time::timeout(idle, s.next()).await {
                Ok(Some(item)) => Some((item, Some(s))),
                Ok(None) => None,
                Err(_) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no body bytes came for {} s", idle.as_secs()),
                    )),
                    None,
                )),
            }
        },
    ))
}
