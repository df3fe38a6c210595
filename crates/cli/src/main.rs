//! `reelay`: the server roles and the command-line client of the reelay transcoding service.

mod client;
mod commands;
mod edge_cmd;
mod format;
mod progress;
mod sse;
mod token;
mod up;

use clap::{Parser, Subcommand, ValueEnum};
use commands::{cancel, download, list, presets, status, submit, wait, UsageError};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;
use url::Url;

#[derive(Debug, Parser)]
#[command(
    name = "reelay",
    version,
    about = "reelay video transcoding: run a cluster, or submit and follow jobs",
    propagate_version = true
)]
struct Cli {
    /// Base URL of the reelay API.
    #[arg(
        long,
        global = true,
        env = "REELAY_SERVER",
        default_value = "http://127.0.0.1:8080",
        value_parser = parse_server_url,
        value_name = "URL"
    )]
    server: Url,

    /// Bearer token sent to the server.
    #[arg(long, global = true, env = "REELAY_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Log line format (logs go to stderr; the level comes from RUST_LOG).
    #[arg(
        long,
        global = true,
        env = "REELAY_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a reelay cluster (API and worker in one process).
    Serve(reelay_server::ServeArgs),
    /// Run only the HTTP API of a cluster (no encoding); scale it out beside `reelay worker`.
    Api(reelay_server::ServeArgs),
    /// Run only workers (claim and encode); serves /healthz, /readyz and /metrics on --listen.
    Worker(reelay_server::ServeArgs),
    /// Apply the job store's migrations and exit.
    Migrate(reelay_server::ServeArgs),
    /// Run the multi-cloud edge: nginx (data plane) and the placement controller.
    Edge(edge_cmd::EdgeArgs),
    /// Start two clusters and the edge on this machine (Ctrl-C stops them all).
    Up(up::UpArgs),
    /// API tokens: create (offline with an issuer key, through --server with an admin --token,
    /// or in a cluster's store), revoke, list, and generate issuer keys.
    Token(token::TokenArgs),
    /// Submit a transcoding job; prints its id.
    Submit(submit::SubmitArgs),
    /// Show a job.
    Status(status::StatusArgs),
    /// Follow a job until it finishes.
    Wait(wait::WaitArgs),
    /// Download every output file of a finished job.
    Download(download::DownloadArgs),
    /// List the output presets the server offers.
    Presets(presets::PresetsArgs),
    /// Cancel a queued or running job.
    Cancel(cancel::CancelArgs),
    /// List recent jobs, newest first.
    List(list::ListArgs),
}

fn parse_server_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(format!("{s:?} is not an http:// or https:// URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{s:?} must not have a query or fragment"));
    }
    Ok(url)
}

/// Logging on stderr. `RUST_LOG` sets the filter; without it, servers log at `info` and the
/// client only shows warnings (its results go to stdout).
fn init_logging(format: LogFormat, default_filter: &str) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec)
            .map_err(|e| UsageError(format!("invalid RUST_LOG {spec:?}: {e}")))?,
        _ => EnvFilter::new(default_filter),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let server_role = match &cli.command {
        Command::Serve(args) => Some((reelay_server::Role::Serve, args.clone())),
        Command::Api(args) => Some((reelay_server::Role::Api, args.clone())),
        Command::Worker(args) => Some((reelay_server::Role::Worker, args.clone())),
        Command::Migrate(args) => {
            let args = args.clone();
            init_logging(cli.log_format, "info")?;
            return reelay_server::run_migrate(args)
                .await
                .map_err(|e| anyhow::anyhow!(e));
        }
        Command::Edge(args) => {
            init_logging(cli.log_format, "info")?;
            return edge_cmd::run(args).await;
        }
        Command::Up(args) => {
            init_logging(cli.log_format, "info")?;
            return up::run(args).await;
        }
        Command::Token(args) => {
            init_logging(cli.log_format, "warn")?;
            // With a token, token commands go to --server's admin API.
            let api = match cli.token.as_deref().filter(|t| !t.is_empty()) {
                Some(t) => Some(client::Client::new(cli.server.clone(), Some(t))?),
                None => None,
            };
            return token::run(args, api).await;
        }
        _ => None,
    };
    if let Some((role, args)) = server_role {
        init_logging(cli.log_format, "info")?;
        return reelay_server::run_role(role, args)
            .await
            .map_err(|e| anyhow::anyhow!(e));
    }
    init_logging(cli.log_format, "warn")?;
    let client = client::Client::new(cli.server, cli.token.as_deref())?;
    match &cli.command {
        Command::Serve(_)
        | Command::Api(_)
        | Command::Worker(_)
        | Command::Migrate(_)
        | Command::Edge(_)
        | Command::Up(_)
        | Command::Token(_) => {
            unreachable!("handled above")
        }
        Command::Submit(args) => submit::run(&client, args).await,
        Command::Status(args) => status::run(&client, args).await,
        Command::Wait(args) => wait::run(&client, args).await,
        Command::Download(args) => download::run(&client, args).await,
        Command::Presets(args) => presets::run(&client, args).await,
        Command::Cancel(args) => cancel::run(&client, args).await,
        Command::List(args) => list::run(&client, args).await,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let broken_pipe = error.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                // `reelay list | head`: the reader has all it wanted.
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            if error.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else if error.downcast_ref::<list::PartialListing>().is_some() {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        // Catches clashes such as a role's Args reusing a global flag name.
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_before_and_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "reelay",
            "--server",
            "https://example.com/reelay",
            "status",
            "aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2",
            "--token",
            "t",
        ])
        .unwrap();
        assert_eq!(cli.server.as_str(), "https://example.com/reelay");
        assert_eq!(cli.token.as_deref(), Some("t"));
        assert!(matches!(cli.command, Command::Status(_)));
    }

    #[test]
    fn server_urls_are_checked() {
        assert!(parse_server_url("http://127.0.0.1:8080").is_ok());
        assert!(parse_server_url("https://api.example.com/prefix/").is_ok());
        for bad in [
            "127.0.0.1:8080",
            "ftp://x",
            "file:///tmp",
            "http://x/?a=b",
            "nonsense",
        ] {
            assert!(parse_server_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn list_rejects_unknown_statuses() {
        assert!(Cli::try_parse_from(["reelay", "list", "--status", "done"]).is_err());
        let cli =
            Cli::try_parse_from(["reelay", "list", "--status", "failed", "--limit", "5"]).unwrap();
        match cli.command {
            Command::List(args) => {
                assert_eq!(args.status, Some(reelay_protocol::JobStatus::Failed));
                assert_eq!(args.limit, Some(5));
            }
            other => panic!("parsed as {other:?}"),
        }
    }
}
