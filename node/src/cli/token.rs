//! `wharf token issue`: sign a client token with the cluster's secret.

use std::time::Duration;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use wharf_raft::model::Tier;

use crate::auth::Keys;
use crate::cli::Common;

#[derive(Subcommand)]
pub(super) enum TokenCommand {
    /// Print a bearer token for a user, signed with the cluster's secret.
    Issue {
        #[command(flatten)]
        common: Common,
        /// User id (1 to 128 characters of A-Z a-z 0-9 . _ @ -).
        #[arg(long)]
        user: String,
        #[arg(long, value_enum, default_value_t = TierArg::Basic)]
        tier: TierArg,
        /// Lifetime, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Print a link to the node's browser page that signs in with the token (the token
        /// rides in the link's fragment, which browsers never send). The page is at BASE, or
        /// at the address the data dir's node serves.
        #[arg(long, value_name = "BASE", num_args = 0..=1, default_missing_value = "")]
        url: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(super) enum TierArg {
    Basic,
    Premium,
    Admin,
}

impl From<TierArg> for Tier {
    fn from(t: TierArg) -> Self {
        match t {
            TierArg::Basic => Tier::Basic,
            TierArg::Premium => Tier::Premium,
            TierArg::Admin => Tier::Admin,
        }
    }
}

pub(super) fn token_command(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Issue {
            common,
            user,
            tier,
            ttl,
            url,
        } => {
            let config = common.load()?;
            config.validate()?;
            if config.auth.external() {
                anyhow::bail!(
                    "auth.jwks_file or auth.jwks_url is set: user tokens come from the identity \
                     provider, and this cluster refuses the HS256 tokens `wharf token issue` signs"
                );
            }
            let keys = Keys::load_or_create(&config.auth.jwt_secret, &config.node.data_dir)
                .context("loading the token secret")?;
            let token = keys.issue(&user, tier.into(), ttl)?;
            match url {
                None => println!("{token}"),
                Some(base) => println!("{}/#token={token}", page_base(&config, &base)),
            }
            Ok(())
        }
    }
}

/// Where the browser page is: `base` when given, else the address the data dir's node
/// recorded (else the configured one), over HTTPS when the node serves it.
fn page_base(config: &crate::config::Config, base: &str) -> String {
    if !base.is_empty() {
        return base.trim_end_matches('/').to_string();
    }
    let http = crate::Listening::read(&config.node.data_dir)
        .map(|l| l.http)
        .unwrap_or_else(|| config.node.http_addr.to_string());
    let https = !config.node.tls.is_empty() || !config.node.tls_cert.is_empty();
    format!("{}://{http}", if https { "https" } else { "http" })
}
