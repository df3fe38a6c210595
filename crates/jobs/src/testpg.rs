//! Real Postgres databases for tests, one fresh database per test.
//!
//! With `REELAY_TEST_DATABASE_URL` set (an admin URL allowed to `CREATE DATABASE`), databases
//! are created on that server and left there: point it at a throwaway server. Otherwise the
//! first test that asks starts a private cluster for the whole test binary: `initdb` into a temp
//! dir, `pg_ctl start` on a free 127.0.0.1 port, `fsync=off`. The binaries are looked up in
//! `REELAY_TEST_PG_BINDIR`, Debian's `/usr/lib/postgresql/<version>/bin` (newest first), then
//! `PATH`.
//!
//! Rust test binaries run no destructors for statics and have no exit hook, so the cluster is
//! stopped by a watchdog: a detached `sh` that polls the test process and, once it is gone, stops
//! the cluster (`-m immediate`) and deletes its directory. It runs in its own process group so a
//! Ctrl-C to `cargo test` does not kill it before it has cleaned up (pg_ctl already detaches the
//! postmaster the same way).
//!
//! Postgres refuses to run as root; as root, `initdb`/`pg_ctl` run as `nobody` (override with
//! `REELAY_TEST_PG_USER`) through `runuser`, or `su` where there is no `runuser`.

use sqlx::Connection;
use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

const URL_VAR: &str = "REELAY_TEST_DATABASE_URL";
const BINDIR_VAR: &str = "REELAY_TEST_PG_BINDIR";
const USER_VAR: &str = "REELAY_TEST_PG_USER";

/// Returns the URL of a new, empty database that no other test uses, so tests can run in
/// parallel against one server. The schema is not created: stores migrate on connect.
///
/// Panics with the reason when no Postgres can be had: a test that needs Postgres and silently
/// skips would pass without testing anything.
pub async fn test_database_url() -> String {
    let admin = match admin_url().await {
        Ok(url) => url,
        Err(e) => panic!(
            "no Postgres for the tests: {e}\n\
             Install Postgres (Debian: apt-get install postgresql) or set {URL_VAR} to an \
             admin URL of a throwaway server."
        ),
    };
    match create_database(&admin).await {
        Ok(url) => url,
        Err(e) => panic!("creating a test database: {e}"),
    }
}

/// Whether tests use a server from `REELAY_TEST_DATABASE_URL` rather than one they started, in
/// which case they must not stop or restart it.
#[cfg(test)]
pub(crate) fn external_server() -> bool {
    std::env::var_os(URL_VAR).is_some_and(|v| !v.is_empty())
}

async fn admin_url() -> Result<String, String> {
    if let Some(url) = std::env::var(URL_VAR).ok().filter(|v| !v.is_empty()) {
        return Ok(url);
    }
    static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
    // initdb and pg_ctl block for a second or two: keep them off the async worker threads.
    tokio::task::spawn_blocking(|| {
        SHARED
            .get_or_init(Cluster::start_new)
            .as_ref()
            .map(Cluster::admin_url)
            .map_err(Clone::clone)
    })
    .await
    .map_err(|e| format!("starting Postgres panicked: {e}"))?
}

async fn create_database(admin_url: &str) -> Result<String, String> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // Process id and time keep names apart across test binaries sharing an external server.
    let name = format!(
        "reelay_test_{}_{}_{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .map_err(|e| format!("connecting to the admin database: {e}"))?;
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
    // Best effort: the database exists whether or not the goodbye reaches the server.
    let _ = conn.close().await;
    with_database(admin_url, &name)
}

/// `url` with its database (the URL path) replaced by `database`, keeping user, host and query.
pub(crate) fn with_database(url: &str, database: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{URL_VAR} is not a postgres:// URL"))?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(authority_end);
    let suffix_start = after.find(['?', '#']).unwrap_or(after.len());
    let suffix = &after[suffix_start..];
    Ok(format!("{scheme}://{authority}/{database}{suffix}"))
}

/// How `initdb` and `pg_ctl` are run: directly, or as an unprivileged user when we are root.
#[derive(Debug, Clone)]
enum RunAs {
    Me,
    Runuser(String),
    Su(String),
}

impl RunAs {
    fn detect() -> Result<RunAs, String> {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| format!("running `id -u`: {e}"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Ok(RunAs::Me);
        }
        let user = std::env::var(USER_VAR).unwrap_or_else(|_| "nobody".to_string());
        if find_on_path("runuser").is_some() {
            Ok(RunAs::Runuser(user))
        } else if find_on_path("su").is_some() {
            Ok(RunAs::Su(user))
        } else {
            Err(
                "running as root, which Postgres refuses, and neither runuser nor su is \
                 available to switch users"
                    .to_string(),
            )
        }
    }

    fn user(&self) -> Option<&str> {
        match self {
            RunAs::Me => None,
            RunAs::Runuser(user) | RunAs::Su(user) => Some(user),
        }
    }

    fn command(&self, program: &Path, args: &[OsString]) -> Command {
        match self {
            RunAs::Me => {
                let mut cmd = Command::new(program);
                cmd.args(args);
                cmd
            }
            RunAs::Runuser(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(program).args(args);
                cmd
            }
            RunAs::Su(user) => {
                let line = std::iter::once(program.as_os_str())
                    .chain(args.iter().map(OsString::as_os_str))
                    .map(|a| sh_quote(&a.to_string_lossy()))
                    .collect::<Vec<_>>()
                    .join(" ");
                let mut cmd = Command::new("su");
                cmd.args(["-s", "/bin/sh", user, "-c"]).arg(line);
                cmd
            }
        }
    }
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// A directory holding `initdb`, `pg_ctl` and `postgres`.
fn find_bindir() -> Result<PathBuf, String> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(dir) = std::env::var_os(BINDIR_VAR) {
        let dir = PathBuf::from(dir);
        return if complete(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "{BINDIR_VAR}={} lacks initdb, pg_ctl or postgres",
                dir.display()
            ))
        };
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    debian.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    debian
        .into_iter()
        .map(|(_, dir)| dir)
        .chain(path_dirs)
        .find(|dir| complete(dir))
        .ok_or_else(|| {
            "initdb, pg_ctl and postgres not found in /usr/lib/postgresql/*/bin or on PATH"
                .to_string()
        })
}

/// A Postgres cluster this process initialised in a temp dir of its own.
#[derive(Debug)]
pub(crate) struct Cluster {
    pg_ctl: PathBuf,
    run_as: RunAs,
    /// Owned by the server user; holds `data/`, the socket and `postgres.log`.
    base: PathBuf,
    port: u16,
}

impl Cluster {
    /// Initialises and starts a cluster, with a watchdog that removes it when this process ends.
    pub(crate) fn start_new() -> Result<Cluster, String> {
        let bindir = find_bindir()?;
        let run_as = RunAs::detect()?;
        let base = std::env::temp_dir().join(format!(
            "reelay-pg-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir(&base).map_err(|e| format!("creating {}: {e}", base.display()))?;
        let mut cluster = Cluster {
            pg_ctl: bindir.join("pg_ctl"),
            run_as,
            base,
            port: 0,
        };
        // From here on the watchdog removes the directory, whatever fails next.
        cluster.spawn_watchdog()?;
        if let Some(user) = cluster.run_as.user() {
            run(Command::new("chown")
                .arg(format!("{user}:"))
                .arg(&cluster.base))?;
        }
        let data = cluster.data_dir();
        let initdb_args: Vec<OsString> = vec![
            "-D".into(),
            data.into(),
            "-U".into(),
            "postgres".into(),
            "--auth=trust".into(),
            "--encoding=UTF8".into(),
            "--locale=C".into(),
            "--no-sync".into(),
        ];
        run(&mut cluster.run_as.command(&bindir.join("initdb"), &initdb_args))?;

        // A free port can be taken between probing and binding; try a few.
        let mut last_error = String::new();
        for _ in 0..5 {
            cluster.port = free_port()?;
            match cluster.start() {
                Ok(()) => return Ok(cluster),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    pub(crate) fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.base.join("data")
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut full: Vec<OsString> = vec!["-D".into(), self.data_dir().into()];
        full.extend(args.iter().map(OsString::from));
        let mut cmd = self.run_as.command(&self.pg_ctl, &full);
        // The server user may not be able to enter the test's working directory.
        cmd.current_dir(&self.base);
        cmd
    }

    /// Starts the (stopped) cluster on its port and waits until it accepts connections.
    pub(crate) fn start(&self) -> Result<(), String> {
        let log = self.base.join("postgres.log");
        // pg_ctl hands -o to a shell, hence the quoting of the socket directory.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200",
            self.port,
            sh_quote(&self.base.to_string_lossy())
        );
        let log_arg = log.to_string_lossy().into_owned();
        let result =
            run(&mut self.pg_ctl(&["-l", &log_arg, "-o", &options, "-w", "-t", "60", "start"]));
        result.map_err(|e| {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: String = tail.lines().rev().take(15).collect::<Vec<_>>().join("\n");
            format!("{e}\npostgres.log (last lines, newest first):\n{tail}")
        })
    }

    /// Stops the cluster, ending every session (`-m fast`), as an administrator restarting it
    /// would.
    pub(crate) fn stop(&self) -> Result<(), String> {
        run(&mut self.pg_ctl(&["-m", "fast", "-w", "stop"]))
    }

    /// Polls this process and, once it has exited, kills the cluster and deletes `base`.
    fn spawn_watchdog(&self) -> Result<(), String> {
        let stop = self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
        let stop_line = std::iter::once(stop.get_program())
            .chain(stop.get_args())
            .map(|a| sh_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ");
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.2; done; \
             cd /; {stop_line} >/dev/null 2>&1; rm -rf {base}",
            pid = std::process::id(),
            base = sh_quote(&self.base.to_string_lossy()),
        );
        use std::os::unix::process::CommandExt;
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map(drop)
            .map_err(|e| format!("spawning the cleanup watchdog: {e}"))
    }
}

/// A cluster of a single test's own, for tests that stop or restart the server and must not
/// disturb the shared one. Removed on drop (also when the test panics); the watchdog covers
/// the process dying first.
pub struct PrivateCluster(pub(crate) Cluster);

impl PrivateCluster {
    /// A fresh cluster of the caller's own (other crates' tests restart it mid-run).
    pub fn start_new() -> Result<PrivateCluster, String> {
        Cluster::start_new().map(PrivateCluster)
    }
    /// URL of its `postgres` database (trust auth, loopback).
    pub fn url(&self) -> String {
        self.0.admin_url()
    }
    pub fn stop(&self) -> Result<(), String> {
        self.0.stop()
    }
    pub fn start(&self) -> Result<(), String> {
        self.0.start()
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self.0.pg_ctl(&["-m", "immediate", "-w", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.0.base);
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// Runs to completion; a failure carries the command's output.
fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{:?} {:?} failed ({}):\n{}{}",
        cmd.get_program(),
        cmd.get_args().collect::<Vec<_>>(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_database() {
        let cases = [
            ("postgres://u:p@h:5/admin", "postgres://u:p@h:5/t1"),
            ("postgres://h", "postgres://h/t1"),
            ("postgres://h/", "postgres://h/t1"),
            (
                "postgresql://h/admin?sslmode=disable",
                "postgresql://h/t1?sslmode=disable",
            ),
            (
                "postgres://h?sslmode=disable",
                "postgres://h/t1?sslmode=disable",
            ),
            (
                "postgres:///admin?host=/run/postgresql",
                "postgres:///t1?host=/run/postgresql",
            ),
            ("postgres://[::1]:5432/admin", "postgres://[::1]:5432/t1"),
        ];
        for (admin, want) in cases {
            assert_eq!(with_database(admin, "t1").as_deref(), Ok(want), "{admin}");
        }
        assert!(with_database("localhost:5432", "t1").is_err());
    }

    #[test]
    fn sh_quote_survives_quotes() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
