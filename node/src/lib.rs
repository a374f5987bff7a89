//! wharf-node: the `wharf` binary's library. Config, actors, the HTTP front end, the object
//! store and auth; see docs/ARCHITECTURE.md for the map.

pub mod auth;
pub mod config;
pub mod error;
pub mod hash;
pub mod http;
pub mod meta;
pub mod objstore;
pub mod quota;
pub mod uploads;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, StoreKind};
use crate::objstore::{LocalStore, ObjectStore};

/// Runs a node until `shutdown` resolves, then stops the front end, the actors and Raft.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let config = Arc::new(config);
    let data_dir = &config.node.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let keys = auth::Keys::load_or_create(&config.auth.jwt_secret, data_dir)?;
    let store: Arc<dyn ObjectStore> = match config.store.kind {
        StoreKind::Local => {
            let root = config.objects_dir();
            Arc::new(
                LocalStore::open(&root)
                    .with_context(|| format!("opening the object store at {}", root.display()))?,
            )
        }
    };
    let staging = data_dir.join("staging");
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;

    let meta = meta::Metadata::open(&config).await?;
    let stop = CancellationToken::new();
    let quota = quota::QuotaHandle::spawn(meta.clone(), config.clone(), stop.clone());
    let ctx = Arc::new(uploads::Ctx {
        meta: meta.clone(),
        store: store.clone(),
        quota: quota.clone(),
        staging,
        config: config.upload.clone(),
    });
    let uploads = uploads::UploadsHandle::spawn(ctx, stop.clone());
    let app = http::router(http::AppState {
        keys,
        meta: meta.clone(),
        quota,
        uploads,
        store,
    });

    let listener = tokio::net::TcpListener::bind(config.node.http_addr)
        .await
        .with_context(|| format!("binding HTTP to {}", config.node.http_addr))?;
    let addr = listener.local_addr()?;
    // Tests and scripts read this line to learn the bound port.
    tracing::info!(%addr, data_dir = %data_dir.display(), "wharf node listening");
    println!("wharf node {} listening on http://{addr}", config.node.id);

    let server_stop = stop.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = shutdown => {}
                _ = server_stop.cancelled() => {}
            }
        })
        .await
        .context("HTTP server")?;
    tracing::info!("shutting down");
    stop.cancel();
    meta.raft.shutdown().await.ok();
    Ok(())
}
