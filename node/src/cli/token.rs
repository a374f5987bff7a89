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
            println!("{}", keys.issue(&user, tier.into(), ttl)?);
            Ok(())
        }
    }
}
