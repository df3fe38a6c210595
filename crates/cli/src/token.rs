//! `reelay token create|list|revoke`: API tokens, managed directly in the cluster's job store
//! (same `--config`, `--data-dir` and `--database-url` as `reelay serve`). The secret is printed
//! once by `create` and never stored: the store keeps only its SHA-256.

use anyhow::Context;
use clap::{Args, Subcommand};
use reelay_server::auth::{issue_token, Scope};
use reelay_server::{Config, ServeArgs};
use std::io::Write;

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (only this once) on stdout.
    Create {
        /// What the token may do: submit, read, admin (repeat the flag for several).
        #[arg(long = "scope", required = true, value_parser = parse_scope)]
        scopes: Vec<Scope>,
        /// A label for `reelay token list`.
        #[arg(long, default_value = "")]
        name: String,
        #[command(flatten)]
        store: ServeArgs,
    },
    /// List tokens: id, name, scopes, created, last used (never the secret).
    List {
        #[command(flatten)]
        store: ServeArgs,
    },
    /// Revoke a token by id (the part after rly_): it stops working at once.
    Revoke {
        id: String,
        #[command(flatten)]
        store: ServeArgs,
    },
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    s.parse()
}

async fn open(args: &ServeArgs) -> anyhow::Result<std::sync::Arc<dyn reelay_server::JobStore>> {
    let cfg = Config::load(args)?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    Ok(reelay_server::open_store(&cfg).await?)
}

pub async fn run(args: &TokenArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match &args.command {
        TokenCommand::Create {
            scopes,
            name,
            store,
        } => {
            let store = open(store).await?;
            let issued = issue_token(&*store, name, scopes)
                .await
                .map_err(|e| anyhow::anyhow!("creating the token: {e}"))?;
            writeln!(out, "{}", issued.token)?;
            eprintln!(
                "token {} ({}) created; it is shown only now: keep it secret (REELAY_TOKEN)",
                issued.stored.id,
                issued.stored.scopes.join(" ")
            );
        }
        TokenCommand::List { store } => {
            let store = open(store).await?;
            let tokens = store.list_tokens().await?;
            writeln!(
                out,
                "{:<14} {:<20} {:<20} {:<26} {:<26} STATUS",
                "ID", "NAME", "SCOPES", "CREATED", "LAST USED"
            )?;
            for t in tokens {
                let time = reelay_server::view::rfc3339;
                writeln!(
                    out,
                    "{:<14} {:<20} {:<20} {:<26} {:<26} {}",
                    t.id,
                    crate::format::clean(&t.name),
                    t.scopes.join(","),
                    time(t.created_at),
                    t.last_used_at.map(time).unwrap_or_else(|| "-".into()),
                    if t.is_revoked() { "revoked" } else { "active" }
                )?;
            }
        }
        TokenCommand::Revoke { id, store } => {
            let store = open(store).await?;
            let id = id.strip_prefix("rly_").unwrap_or(id);
            let id = id.split('_').next().unwrap_or(id);
            if !store.revoke_token(id).await? {
                anyhow::bail!("no active token {id:?}");
            }
            eprintln!("token {id} revoked");
        }
    }
    Ok(())
}
