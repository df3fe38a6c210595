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
use crate::ClientArgs;
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

/// The flags that name a cluster's store, all that `reelay migrate` and the store side of the
/// token commands read: their --help then lists these, not the 25 flags of `reelay serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct StoreArgs {
    /// The cluster's TOML configuration file (its store, and for token create its issuer_key).
    #[arg(long, env = "REELAY_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The cluster's data directory (its SQLite store) [default: ./data].
    #[arg(long, env = "REELAY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The cluster's job store: sqlite:/path/file.db or postgres://user:pass@host/db.
    #[arg(
        long,
        env = "REELAY_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database_url: Option<String>,
}

impl StoreArgs {
    pub fn to_serve(&self) -> ServeArgs {
        ServeArgs {
            config: self.config.clone(),
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            ..ServeArgs::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (only this once) on stdout.
    #[command(
        after_help = "Example:\n  export REELAY_TOKEN=$(cat data/up/admin.token)   # next to `reelay up`\n  reelay token create --scope submit --scope read --owner me"
    )]
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
        /// Sign offline with this issuer key file (no server needed).
        #[arg(long, env = "REELAY_ISSUER_KEY", value_name = "FILE")]
        issuer_key: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
        /// A cluster's store, for a token made there (per-cluster, or signed with the
        /// config's issuer_key).
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the per-cluster tokens of a store: id, name, scopes, created, last used.
    #[command(after_help = "Example:\n  reelay token list --data-dir data")]
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a token by id: through --server with an admin --token (signed tokens: every
    /// cluster within seconds), or in the store.
    #[command(after_help = "Example:\n  reelay token revoke 01JDQ7Z3K4M5N6P7Q8R9S0T1V2")]
    Revoke {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        store: StoreArgs,
        /// The cluster's trusted keys file (revoking a signed token in a store needs one).
        #[arg(long, env = "REELAY_TRUSTED_KEYS", value_name = "FILE")]
        trusted_keys: Option<PathBuf>,
    },
    /// Generate an issuer key file (mode 0600) and print its line for trusted.keys.
    #[command(
        after_help = "Example:\n  reelay token keygen --id 2025-06 --out issuer.key >> trusted.keys"
    )]
    Keygen {
        /// Key id, e.g. the date: 2025-06.
        #[arg(long)]
        id: String,
        /// Where to write the issuer key (refuses to overwrite).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

impl TokenArgs {
    /// The client flags of the subcommand (none for those that never call a server).
    pub fn client(&self) -> ClientArgs {
        match &self.command {
            TokenCommand::Create { client, .. } | TokenCommand::Revoke { client, .. } => {
                client.clone()
            }
            TokenCommand::List { .. } | TokenCommand::Keygen { .. } => ClientArgs::default(),
        }
    }
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
fn store_given(a: &StoreArgs) -> bool {
    a.config.is_some() || a.data_dir.is_some() || a.database_url.is_some()
}

/// The SQLite file a configuration names, when it names one (the default is in the data dir).
fn sqlite_file(cfg: &Config) -> Option<PathBuf> {
    match cfg.database_url.as_deref() {
        None => Some(cfg.data_dir.join("reelay.db")),
        Some(url) => url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .map(|p| PathBuf::from(p.split('?').next().unwrap_or(p))),
    }
}

async fn open(
    args: &ServeArgs,
) -> anyhow::Result<(Config, std::sync::Arc<dyn reelay_server::JobStore>)> {
    let cfg = Config::load(args)?;
    if let Some(file) = sqlite_file(&cfg).filter(|f| !f.exists()) {
        // Opening creates it: a token written there is valid on no running cluster, which is
        // easy to miss when a token for `reelay up` (data/up/…) was meant.
        eprintln!(
            "warning: {} did not exist: a new, empty store is created and no cluster serves it yet; \
             a token made here is accepted only by a cluster started on this store",
            file.display()
        );
    }
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
            issuer_key,
            client: _,
            store,
        } => {
            let new = NewClaims {
                owner: owner.clone(),
                scopes: scopes.clone(),
                name: name.clone(),
                ttl_seconds: *expires_in,
            };
            if let Some(path) = issuer_key {
                let key = load_signing_key(path)?;
                return print_signed(&key, &new, &mut out);
            }
            if client.is_none() && !store_given(store) {
                return Err(no_destination().into());
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
            let (cfg, store) = open(&store.to_serve()).await?;
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
            let (_, store) = open(&store.to_serve()).await?;
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
        TokenCommand::Revoke {
            id,
            client: _,
            store,
            trusted_keys,
        } => {
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
            let (cfg, store) = open(&ServeArgs {
                trusted_keys: trusted_keys.clone(),
                ..store.to_serve()
            })
            .await?;
            if reelay_identity::revocation::valid_token_id(&id) {
                if cfg.trusted_keys.is_none() {
                    anyhow::bail!(
                        "{id} is a signed token id, but this cluster has no trusted_keys"
                    );
                }
                let at = store.add_revocation(&id, now_millis()).await?;
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

/// `reelay token create` with neither an issuer key, nor an admin token for a server, nor a
/// store named used to write a token into ./data, a store no running cluster reads (next to
/// `reelay up` the clusters keep theirs under data/up/): it printed "created" and the token
/// worked nowhere. Now it says where a token can come from instead.
fn no_destination() -> crate::commands::UsageError {
    let up_token = Path::new("data/up/admin.token");
    let up = if up_token.exists() {
        format!(
            "\n  next to `reelay up`: export REELAY_TOKEN=$(cat {}) and run this again (it goes through --server, default http://127.0.0.1:8080)",
            up_token.display()
        )
    } else {
        String::new()
    };
    crate::commands::UsageError(format!(
        "nowhere to create the token: no --issuer-key, no admin --token (REELAY_TOKEN) for --server, and no store (--data-dir, --database-url or --config) named{up}\n  through a server: reelay token create --server URL --token ADMIN_TOKEN --scope …\n  offline: reelay token create --issuer-key issuer.key --scope …\n  in a cluster's store: reelay token create --data-dir DIR --scope … (only a cluster serving that store accepts it)"
    ))
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
