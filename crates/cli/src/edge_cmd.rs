//! `reelay edge`: the multi-cloud edge — nginx as the data plane, this process as its controller.

use clap::Args;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// The edge configuration file (edge.toml).
    #[arg(long, env = "REELAY_EDGE_CONFIG", value_name = "FILE")]
    pub config: PathBuf,

    /// Validate the file and render nginx.conf (put through `nginx -t` when nginx is
    /// installed), then exit: 0 when usable, 1 when not. Starts and resolves nothing.
    #[arg(long)]
    pub check_config: bool,

    /// With --check-config: also print the rendered nginx.conf.
    #[arg(long, requires = "check_config")]
    pub print_nginx_conf: bool,
}

pub async fn run(args: &EdgeArgs) -> anyhow::Result<()> {
    if !args.check_config {
        return Ok(reelay_edge::run(&args.config).await?);
    }
    let report = reelay_edge::check_config(&args.config).await?;
    let mut out = std::io::stdout().lock();
    if args.print_nginx_conf {
        writeln!(out, "{}", report.rendered)?;
    }
    for w in &report.warnings {
        writeln!(out, "WARNING: {w}")?;
    }
    let nginx = match report.nginx_accepted {
        Some(_) => "nginx -t accepts the rendered configuration",
        None => "nginx not found: template rendered but not tested",
    };
    writeln!(
        out,
        "{}: OK ({} cluster{}, mode {}; {nginx})",
        args.config.display(),
        report.config.clusters.len(),
        if report.config.clusters.len() == 1 {
            ""
        } else {
            "s"
        },
        report.config.mode.as_str(),
    )?;
    Ok(())
}
