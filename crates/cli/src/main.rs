//! `reelay`: the server roles and the command-line client of the reelay transcoding service.

mod client;
mod commands;
mod edge_cmd;
mod format;
mod progress;
mod resumable;
mod sse;
mod token;
mod up;

use clap::{Args, Parser, Subcommand, ValueEnum};
use commands::{
    cancel, delete, download, list, presets, split_plan, status, submit, wait, UsageError,
};
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
    /// Where client commands send requests; also accepted after the subcommand.
    #[command(flatten)]
    client: ClientArgs,

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

const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// The flags of commands that talk to a server. Flattened into those commands only (not
/// global), so `reelay serve --help` does not offer a --server it would ignore. The variables
/// are read in [`ClientArgs::resolve`], so that a flag given before the subcommand still beats
/// them.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ClientArgs {
    /// Base URL of the reelay API [env: REELAY_SERVER] [default: http://127.0.0.1:8080].
    #[arg(long, value_parser = parse_server_url, value_name = "URL")]
    server: Option<Url>,
    /// Bearer token sent to the server [env: REELAY_TOKEN].
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
}

impl ClientArgs {
    /// The flag after the subcommand, else the one before it, else the variable, else the
    /// default.
    pub(crate) fn resolve(&self, before: &ClientArgs) -> anyhow::Result<(Url, Option<String>)> {
        let server = match self.server.clone().or_else(|| before.server.clone()) {
            Some(url) => url,
            None => match std::env::var("REELAY_SERVER") {
                Ok(v) if !v.is_empty() => {
                    parse_server_url(&v).map_err(|e| UsageError(format!("REELAY_SERVER: {e}")))?
                }
                _ => Url::parse(DEFAULT_SERVER)?,
            },
        };
        let token = self
            .token
            .clone()
            .or_else(|| before.token.clone())
            .or_else(|| std::env::var("REELAY_TOKEN").ok())
            .filter(|t| !t.is_empty());
        Ok((server, token))
    }
}

/// A client command's own flags plus the client flags.
#[derive(Debug, Clone, Args)]
struct WithClient<T: Args> {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    args: T,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a reelay cluster (API and worker in one process).
    #[command(
        after_help = "Example:\n  reelay serve --listen 127.0.0.1:8080 --data-dir data --workers 2"
    )]
    Serve(reelay_server::ServeArgs),
    /// Run only the HTTP API of a cluster (no encoding); scale it out beside `reelay worker`.
    #[command(
        after_help = "Example:\n  reelay api --database-url postgres://reelay@db/reelay --storage s3://bucket/media"
    )]
    Api(reelay_server::ServeArgs),
    /// Run only workers (claim and encode); serves /healthz, /readyz and /metrics on --listen.
    #[command(
        after_help = "Example:\n  reelay worker --database-url postgres://reelay@db/reelay --storage s3://bucket/media --workers 4"
    )]
    Worker(reelay_server::ServeArgs),
    /// Apply the job store's migrations and exit.
    #[command(
        after_help = "Example:\n  reelay migrate --database-url postgres://reelay@db/reelay"
    )]
    Migrate(token::StoreArgs),
    /// Run the multi-cloud edge: nginx (data plane) and the placement controller.
    #[command(after_help = "Example:\n  reelay edge --config deploy/local/edge.toml")]
    Edge(edge_cmd::EdgeArgs),
    /// Start two clusters and the edge on this machine (Ctrl-C stops them all).
    #[command(after_help = "Example:\n  reelay up --topology deploy/local/topology.toml")]
    Up(up::UpArgs),
    /// API tokens: create (offline with an issuer key, through --server with an admin --token,
    /// or in a cluster's store), revoke, list, and generate issuer keys.
    #[command(
        after_help = "Example:\n  reelay token create --scope submit --scope read --owner me"
    )]
    Token(token::TokenArgs),
    /// Submit a transcoding job; prints its id.
    #[command(after_help = "Example:\n  reelay submit clip.mov --preset mp4-720p --wait")]
    Submit(WithClient<submit::SubmitArgs>),
    /// Show a job.
    #[command(after_help = "Example:\n  reelay status aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2")]
    Status(WithClient<status::StatusArgs>),
    /// Follow a job until it finishes.
    #[command(after_help = "Example:\n  reelay wait aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2")]
    Wait(WithClient<wait::WaitArgs>),
    /// Download every output file of a finished job.
    #[command(after_help = "Example:\n  reelay download aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2 --to out/")]
    Download(WithClient<download::DownloadArgs>),
    /// List the output presets the server offers.
    #[command(after_help = "Example:\n  reelay presets --server https://video.example.com")]
    Presets(WithClient<presets::PresetsArgs>),
    /// Cancel a queued or running job.
    #[command(after_help = "Example:\n  reelay cancel aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2")]
    Cancel(WithClient<cancel::CancelArgs>),
    /// Delete a finished job's input and output files (the job stays listed as deleted).
    #[command(after_help = "Example:\n  reelay delete aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2 --cancel")]
    Delete(WithClient<delete::DeleteArgs>),
    /// List recent jobs, newest first.
    #[command(after_help = "Example:\n  reelay list --status running")]
    List(WithClient<list::ListArgs>),
    /// Show how a cluster would split an input (split-and-stitch), without a cluster: probes
    /// the file here and prints the ranges for the given outputs and worker slots.
    #[command(
        after_help = "Example:\n  reelay split-plan film.mp4 --preset hls-abr --preset mp4-720p --slots 32"
    )]
    SplitPlan(split_plan::SplitPlanArgs),
}

/// Checks `--server` and says how to fix the usual slips: a bare `host:port` (the URL parser
/// reads `127.0.0.1:8080` as relative, and `localhost:8080` as scheme `localhost`), a missing
/// colon (`http//host`), stray spaces.
fn parse_server_url(s: &str) -> Result<Url, String> {
    let hint = server_url_hint(s);
    let url = Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}{hint}"))?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(format!("{s:?} is not an http:// or https:// URL{hint}"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{s:?} must not have a query or fragment"));
    }
    Ok(url)
}

fn server_url_hint(s: &str) -> String {
    let t = s.trim();
    for (typo, fixed) in [("https//", "https://"), ("http//", "http://")] {
        if let Some(rest) = t.strip_prefix(typo) {
            return format!("; did you mean {fixed}{rest}?");
        }
    }
    if t != s {
        return format!("; remove the spaces: {t:?}");
    }
    if !t.contains("://") && !t.is_empty() {
        return format!("; add the scheme: http://{t}");
    }
    String::new()
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
    let before = &cli.client;
    let client_flags_before = before.server.is_some() || before.token.is_some();
    let server_role = match &cli.command {
        Command::Serve(args) => Some((reelay_server::Role::Serve, args.clone())),
        Command::Api(args) => Some((reelay_server::Role::Api, args.clone())),
        Command::Worker(args) => Some((reelay_server::Role::Worker, args.clone())),
        _ => None,
    };
    let not_a_client = server_role.is_some()
        || matches!(
            cli.command,
            Command::Migrate(_) | Command::Edge(_) | Command::Up(_) | Command::SplitPlan(_)
        );
    if not_a_client && client_flags_before {
        return Err(UsageError(
            "--server and --token are for client commands (submit, status, token …), not for servers"
                .into(),
        )
        .into());
    }
    if let Some((role, args)) = server_role {
        init_logging(cli.log_format, "info")?;
        return reelay_server::run_role(role, args)
            .await
            .map_err(|e| anyhow::anyhow!(e));
    }
    let connect = |c: &ClientArgs| -> anyhow::Result<client::Client> {
        let (server, token) = c.resolve(before)?;
        client::Client::new(server, token.as_deref())
    };
    match &cli.command {
        Command::Serve(_) | Command::Api(_) | Command::Worker(_) => {
            unreachable!("handled above")
        }
        Command::Migrate(args) => {
            init_logging(cli.log_format, "info")?;
            reelay_server::run_migrate(args.to_serve())
                .await
                .map_err(|e| anyhow::anyhow!(e))
        }
        Command::Edge(args) => {
            init_logging(cli.log_format, "info")?;
            edge_cmd::run(args).await
        }
        Command::Up(args) => {
            init_logging(cli.log_format, "info")?;
            up::run(args).await
        }
        Command::SplitPlan(args) => {
            init_logging(cli.log_format, "warn")?;
            split_plan::run(args).await
        }
        Command::Token(args) => {
            init_logging(cli.log_format, "warn")?;
            // With a token, token commands go to --server's admin API.
            let (server, token) = args.client().resolve(before)?;
            let api = match token {
                Some(t) => Some(client::Client::new(server, Some(&t))?),
                None => None,
            };
            token::run(args, api).await
        }
        command => {
            init_logging(cli.log_format, "warn")?;
            match command {
                Command::Submit(a) => submit::run(&connect(&a.client)?, &a.args).await,
                Command::Status(a) => status::run(&connect(&a.client)?, &a.args).await,
                Command::Wait(a) => wait::run(&connect(&a.client)?, &a.args).await,
                Command::Download(a) => download::run(&connect(&a.client)?, &a.args).await,
                Command::Presets(a) => presets::run(&connect(&a.client)?, &a.args).await,
                Command::Cancel(a) => cancel::run(&connect(&a.client)?, &a.args).await,
                Command::Delete(a) => delete::run(&connect(&a.client)?, &a.args).await,
                Command::List(a) => list::run(&connect(&a.client)?, &a.args).await,
                _ => unreachable!("handled above"),
            }
        }
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
        match &cli.command {
            Command::Status(a) => {
                let (server, token) = a.client.resolve(&cli.client).unwrap();
                assert_eq!(server.as_str(), "https://example.com/reelay");
                assert_eq!(token.as_deref(), Some("t"));
            }
            other => panic!("parsed as {other:?}"),
        }
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
        let hint = |s: &str| parse_server_url(s).unwrap_err();
        assert!(hint("127.0.0.1:8080").contains("http://127.0.0.1:8080"));
        assert!(hint("localhost:8080").contains("http://localhost:8080"));
        assert!(hint("http//example.com").contains("did you mean http://example.com"));
        // The URL parser itself forgives one missing slash.
        assert!(parse_server_url("https:/example.com").is_ok());
        assert!(!hint("ftp://x").contains("did you mean"));
    }

    #[test]
    fn split_plan_refuses_values_no_cluster_could_have() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["reelay", "split-plan", "film.mp4"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv)
        };
        assert!(parse(&["--slots", "8", "--segment-seconds", "8"]).is_ok());
        for bad in [
            &["--slots", "0"][..],
            &["--segment-seconds", "1"],
            &["--segment-seconds", "3601"],
            &["--max-segments", "1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn list_rejects_unknown_statuses() {
        assert!(Cli::try_parse_from(["reelay", "list", "--status", "done"]).is_err());
        let cli =
            Cli::try_parse_from(["reelay", "list", "--status", "failed", "--limit", "5"]).unwrap();
        match cli.command {
            Command::List(WithClient { args, .. }) => {
                assert_eq!(args.status, Some(reelay_protocol::JobStatus::Failed));
                assert_eq!(args.limit, Some(5));
            }
            other => panic!("parsed as {other:?}"),
        }
    }
}
