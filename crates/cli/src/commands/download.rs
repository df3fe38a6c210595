//! `reelay download`: every stored output file of a job into a directory.
//!
//! File names come from the server and are treated as hostile: each must be a plain relative
//! path that stays inside the target directory, checked before anything is written.

use super::{context, emit};
use crate::client::Client;
use crate::format::{clean, human_bytes};
use crate::progress;
use anyhow::Context;
use clap::Args;
use futures::{StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use reelay_protocol::OutputView;
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone, Args)]
pub struct DownloadArgs {
    /// The job id, e.g. aws.01JDQ7Z3K4M5N6P7Q8R9S0T1V2.
    pub id: String,

    /// Directory to write the files into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
}

/// Files fetched at the same time (HLS outputs are many small segments).
const PARALLEL: usize = 4;

/// The path, relative to the target directory, for a server-provided file name; refuses
/// anything that could leave the directory or be read differently on another platform.
pub fn safe_relative_path(name: &str) -> Result<PathBuf, String> {
    let refuse = |why: &str| Err(format!("unsafe file name {:?}: {why}", clean(name)));
    if name.is_empty() {
        return refuse("empty");
    }
    if name.starts_with('/') {
        return refuse("absolute");
    }
    if name.contains('\\') {
        return refuse("contains a backslash");
    }
    if name.contains("..") {
        return refuse("contains '..'");
    }
    if name.contains(':') {
        return refuse("contains ':'");
    }
    if name.chars().any(char::is_control) {
        return refuse("contains control characters");
    }
    let mut path = PathBuf::new();
    for part in name.split('/') {
        match part {
            "" => return refuse("has an empty path component"),
            "." => return refuse("has a '.' path component"),
            _ => path.push(part),
        }
    }
    // Belt and braces: only plain names may remain, whatever the platform's path rules.
    if path.is_absolute() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return refuse("not a plain relative path");
    }
    Ok(path)
}

/// Checks every name of the listing (before anything is written) and pairs it with its path.
pub fn plan(files: &[OutputView]) -> Result<Vec<(PathBuf, &OutputView)>, String> {
    let mut seen = HashSet::new();
    files
        .iter()
        .map(|file| {
            let path = safe_relative_path(&file.name)?;
            if !seen.insert(path.clone()) {
                return Err(format!("file {:?} listed twice", clean(&file.name)));
            }
            Ok((path, file))
        })
        .collect()
}

/// Removes a partial download unless it was completed.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The temporary name next to `dest` while it downloads.
fn temp_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.{}.reelay-part", std::process::id()))
}

async fn download_one(
    client: &Client,
    dir: &Path,
    relative: &Path,
    file: &OutputView,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let name = clean(&file.name);
    let dest = dir.join(relative);
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let url = client.resolve(&file.url)?;
    let response = client
        .fetch(url)
        .await
        .map_err(|e| context(e, format!("cannot download {name}")))?;

    let mut temp = TempFile {
        path: temp_path(&dest),
        keep: false,
    };
    let mut out = tokio::fs::File::create(&temp.path)
        .await
        .with_context(|| format!("cannot create {}", temp.path.display()))?;
    let mut body = response.bytes_stream();
    let mut received: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| client.body_error(e))?;
        received += chunk.len() as u64;
        if received > file.size {
            anyhow::bail!(
                "{name}: the server sent more than the {} bytes it announced",
                file.size
            );
        }
        out.write_all(&chunk)
            .await
            .with_context(|| format!("cannot write {}", temp.path.display()))?;
        bar.inc(chunk.len() as u64);
    }
    out.flush()
        .await
        .with_context(|| format!("cannot write {}", temp.path.display()))?;
    drop(out);
    if received != file.size {
        anyhow::bail!(
            "{name}: received {received} bytes, but the server announced {}",
            file.size
        );
    }
    tokio::fs::rename(&temp.path, &dest)
        .await
        .with_context(|| format!("cannot move the download into {}", dest.display()))?;
    temp.keep = true;
    Ok(())
}

pub async fn run(client: &Client, args: &DownloadArgs) -> anyhow::Result<()> {
    let listing = client
        .outputs(&args.id)
        .await
        .map_err(|e| context(e, format!("cannot list the outputs of job {}", args.id)))?;
    let plan = plan(&listing.files).map_err(|e| anyhow::anyhow!("refusing to download: {e}"))?;
    tokio::fs::create_dir_all(&args.to)
        .await
        .with_context(|| format!("cannot create {}", args.to.display()))?;
    let total = plan
        .iter()
        .fold(0u64, |sum, (_, f)| sum.saturating_add(f.size));

    let bar = progress::bytes_bar(total, "downloading");
    let result = futures::stream::iter(plan.iter().map(Ok))
        .try_for_each_concurrent(PARALLEL, |(relative, file)| {
            download_one(client, &args.to, relative, file, &bar)
        })
        .await;
    bar.finish_and_clear();
    result?;

    emit(format!(
        "downloaded {} file{} ({}) to {}",
        plan.len(),
        if plan.len() == 1 { "" } else { "s" },
        human_bytes(total),
        args.to.display()
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_kept() {
        assert_eq!(
            safe_relative_path("mp4-720p.mp4").unwrap(),
            PathBuf::from("mp4-720p.mp4")
        );
        assert_eq!(
            safe_relative_path("hls-abr/v0/index.m3u8").unwrap(),
            Path::new("hls-abr").join("v0").join("index.m3u8")
        );
        assert!(safe_relative_path(".hidden").is_ok());
        assert!(safe_relative_path("a.b.c").is_ok());
    }

    #[test]
    fn hostile_names_are_refused() {
        for name in [
            "",
            "/etc/passwd",
            "//server/share",
            "..",
            "../x",
            "a/../../x",
            "a/..",
            "...",
            "x..y",
            "a\\b",
            "..\\..\\windows",
            "C:\\x",
            "C:x",
            "a//b",
            "a/",
            "/",
            "./a",
            "a/./b",
            ".",
            "a\0b",
            "a\nb",
            "\x1b[2J",
        ] {
            assert!(safe_relative_path(name).is_err(), "{name:?} accepted");
        }
        let err = safe_relative_path("../../etc/cron.d/x").unwrap_err();
        assert!(err.contains("unsafe file name"), "{err}");
    }

    #[test]
    fn accepted_names_stay_inside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "a",
            "b/c",
            "hls/v0/seg_00001.ts",
            "é/ü.mp4",
            " spaced name ",
        ] {
            let path = dir.path().join(safe_relative_path(name).unwrap());
            assert!(path.starts_with(dir.path()));
            assert!(path
                .strip_prefix(dir.path())
                .unwrap()
                .components()
                .all(|c| matches!(c, Component::Normal(_))));
        }
    }

    fn file(name: &str) -> OutputView {
        OutputView {
            name: name.into(),
            url: format!("/v1/jobs/a.B/outputs/{name}"),
            size: 1,
            content_type: "video/mp4".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_single_bad_name_refuses_the_whole_listing() {
        let files = vec![file("ok.mp4"), file("hls/master.m3u8")];
        assert_eq!(plan(&files).unwrap().len(), 2);
        let files = vec![file("ok.mp4"), file("../escape")];
        assert!(plan(&files).is_err());
        let files = vec![file("ok.mp4"), file("ok.mp4")];
        assert!(plan(&files).unwrap_err().contains("twice"));
    }

    #[test]
    fn temp_names_sit_next_to_the_destination() {
        let temp = temp_path(Path::new("out/hls/v0/index.m3u8"));
        assert_eq!(temp.parent(), Some(Path::new("out/hls/v0")));
        let name = temp.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".index.m3u8."), "{name}");
        assert!(name.ends_with(".reelay-part"), "{name}");
    }
}
