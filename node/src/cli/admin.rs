//! `wharf admin`: administration through a node's HTTP API (rescans).

use clap::Subcommand;

use crate::cli::{block_on, Api};

#[derive(Subcommand)]
pub(super) enum AdminCommand {
    /// Queue files for another virus scan (after a signature update).
    Rescan {
        #[command(flatten)]
        api: Api,
        /// Every clean, errored or unscanned file.
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        all: bool,
        /// One file, by id.
        #[arg(long)]
        file: Option<String>,
    },
}

pub(super) fn admin_command(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Rescan { api, all, file } => block_on(async {
            let body = match file {
                Some(f) => serde_json::json!({ "file": f }),
                None => serde_json::json!({ "all": all }),
            };
            let resp = api
                .send(
                    reqwest::Client::new()
                        .post(api.url("/v1/admin/rescan"))
                        .json(&body),
                )
                .await?;
            let v: serde_json::Value = resp.json().await?;
            println!("{} file(s) queued for a scan", v["requeued"]);
            Ok(())
        }),
    }
}
