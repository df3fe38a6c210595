//! `reelay token …`: API tokens.
//!
//! Where a token is made, in this order:
//! 1. `--issuer-key FILE`: signed offline with that issuer key (no server needed);
//! 2. `--token ADMIN` (or `REELAY_TOKEN`) and `--server URL`: through the admin API of a cluster
//!    or the edge, signed with that cluster's issuer key;
//! 3. otherwise in the cluster's store (same `--config`, `--data-dir`, `--database-url` as
//!    `reelay serve`): signed with the config's `issuer_key` when it has one, else a
//!    per-cluster `rly_…` token (the first design, valid on that cluster only).
//!
//! A token's secret is printed once, on stdout, and never stored anywhere.

use crate::client::Client;
use anyhow::Context;
use clap::{Args, Subcommand};
use reelay_identity::keys::load_signing_key;
use reelay_identity::token::{issue, NewClaims};
use reelay_identity::wire::CreateTokenRequest;
use reelay_identity::SigningKey;
use reelay_server::auth::{issue_token, Scope};
use reelay_server::{Config, ServeArgs};
use std::io::Write;
use std::path::{Path, PathBuf};

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
        /// A label.
        #[arg(long, default_value = "")]
        name: String,
        /// Owner of the jobs the token submits, on every cluster (signed tokens; default: the
        /// token's own id). Reuse it when re-issuing a token so it keeps its jobs.
        #[arg(long)]
        owner: Option<String>,
        /// Lifetime, e.g. 3600, 12h, 30d (signed tokens; default: until revoked).
        #[arg(long, value_parser = parse_duration)]
        expires_in: Option<u64>,
        /// `--issuer-key FILE` signs offline with that issuer key; the other flags name a
        /// cluster's store for per-cluster tokens.
        #[command(flatten)]
        store: ServeArgs,
    },
    /// List the per-cluster tokens of a store: id, name, scopes, created, last used.
    List {
        #[command(flatten)]
        store: ServeArgs,
    },
    /// Revoke a token by id: through --server with an admin --token (signed tokens: every
    /// cluster within seconds), or in the store.
    Revoke {
        id: String,
        #[command(flatten)]
        store: ServeArgs,
    },
    /// Generate an issuer key file (mode 0600) and print its line for trusted.keys.
    Keygen {
        /// Key id, e.g. the date: 2025-06.
        #[arg(long)]
        id: String,
        /// Where to write the issuer key (refuses to overwrite).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    s.parse()
}

/// Seconds, or a number with s, m, h or d.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let (num, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected seconds or a number with s, m, h or d"))?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => return Err(format!("{s:?}: the unit is s, m, h or d")),
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s:?}: out of range"))
}

/// Whether any store flag was given: then the command works on that store.
fn store_given(a: &ServeArgs) -> bool {
    a.config.is_some() || a.data_dir.is_some() || a.database_url.is_some()
}

async fn open(
    args: &ServeArgs,
) -> anyhow::Result<(Config, std::sync::Arc<dyn reelay_server::JobStore>)> {
    let cfg = Config::load(args)?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let store = reelay_server::open_store(&cfg).await?;
    Ok((cfg, store))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn print_signed(key: &SigningKey, new: &NewClaims, out: &mut impl Write) -> anyhow::Result<()> {
    let (token, claims) = issue(key, new, now()).map_err(|e| anyhow::anyhow!("{e}"))?;
    writeln!(out, "{token}")?;
    eprintln!(
        "token {} (owner {}, {}) signed with key {}; shown only now: keep it secret (REELAY_TOKEN)",
        claims.jti,
        claims.sub,
        claims
            .scp
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        claims.kid
    );
    Ok(())
}

/// Writes a new file readable by its owner only; never replaces one.
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

pub async fn run(args: &TokenArgs, client: Option<Client>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match &args.command {
        TokenCommand::Create {
            scopes,
            name,
            owner,
            expires_in,
            store,
        } => {
            let new = NewClaims {
                owner: owner.clone(),
                scopes: scopes.clone(),
                name: name.clone(),
                ttl_seconds: *expires_in,
            };
            if let Some(path) = &store.issuer_key {
                let key = load_signing_key(path)?;
                return print_signed(&key, &new, &mut out);
            }
            if let (Some(client), false) = (&client, store_given(store)) {
                let created = client
                    .create_token(&CreateTokenRequest {
                        scopes: scopes.clone(),
                        name: name.clone(),
                        owner: owner.clone(),
                        expires_in_seconds: *expires_in,
                    })
                    .await
                    .with_context(|| format!("creating a token at {}", client.server()))?;
                writeln!(out, "{}", created.token)?;
                eprintln!(
                    "token {} (owner {}) created by {} with key {}; shown only now: keep it secret (REELAY_TOKEN)",
                    created.id,
                    created.owner,
                    client.server(),
                    created.key_id
                );
                return Ok(());
            }
            let (cfg, store) = open(store).await?;
            if let Some(path) = &cfg.issuer_key {
                let key = load_signing_key(path)?;
                return print_signed(&key, &new, &mut out);
            }
            if owner.is_some() || expires_in.is_some() {
                anyhow::bail!(
                    "--owner and --expires-in need a signed token: give --issuer-key, or --server with an admin --token"
                );
            }
            let issued = issue_token(&*store, name, scopes)
                .await
                .map_err(|e| anyhow::anyhow!("creating the token: {e}"))?;
            writeln!(out, "{}", issued.token)?;
            eprintln!(
                "per-cluster token {} ({}) created; valid on this cluster only; shown only now: keep it secret (REELAY_TOKEN)",
                issued.stored.id,
                issued.stored.scopes.join(" ")
            );
        }
        TokenCommand::List { store } => {
            let (_, store) = open(store).await?;
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
            let id = id.strip_prefix("rly_").unwrap_or(id);
            let id = id.split('_').next().unwrap_or(id).to_ascii_lowercase();
            if let (Some(client), false) = (&client, store_given(store)) {
                let r = client
                    .revoke_token(&id)
                    .await
                    .with_context(|| format!("revoking at {}", client.server()))?;
                eprintln!("token {} revoked", r.id);
                return Ok(());
            }
            let (cfg, store) = open(store).await?;
            if reelay_identity::revocation::valid_token_id(&id) {
                if cfg.trusted_keys.is_none() {
                    anyhow::bail!(
                        "{id} is a signed token id, but this cluster has no trusted_keys"
                    );
                }
                let at =
                    reelay_server::JobStore::add_revocation(&*store, &id, now_millis()).await?;
                eprintln!(
                    "token {id} revoked{} (this cluster's API picks it up within a second; the edge carries it to the others)",
                    if at { "" } else { " already" }
                );
            } else {
                if !store.revoke_token(&id).await? {
                    anyhow::bail!("no active token {id:?}");
                }
                eprintln!("token {id} revoked");
            }
        }
        TokenCommand::Keygen { id, out: path } => {
            let (key, file) = SigningKey::generate(id)?;
            write_private(path, &file)?;
            writeln!(out, "{}", key.trusted_line())?;
            eprintln!(
                "issuer key {id} written to {} (mode 0600, secret). The line above goes into \
                 trusted.keys on every cluster and edge.",
                path.display()
            );
        }
    }
    Ok(())
}

/// Unix milliseconds, as the store records times.
fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("2m"), Ok(120));
        assert_eq!(parse_duration("12h"), Ok(43200));
        assert_eq!(parse_duration("30d"), Ok(2_592_000));
        for bad in ["", "d", "0", "1y", "-1", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
