//! The remote claim between clusters (issue 16, part 1): the wire both sides speak, the rules
//! of what a peer's worker may read and write, and the client a worker uses to run a task of
//! another cluster.
//!
//! The owner keeps the job: its id, its store row and its outputs in its own storage. A peer's
//! worker claims through `/v1/peer/tasks/claim` (`api::peer`), holds the same lease as a home
//! worker (its renewals go through `/v1/peer/tasks/{id}/renew`), reads the task's inputs and
//! writes its outputs through the owner (or straight to S3/GCS with presigned URLs), and
//! completes, fails or releases it there. Every request after the claim names the attempt
//! (`worker`, `attempt`), and the owner checks it against the lease in its store, so a peer's
//! worker that lost its lease can no longer touch the task or its objects.

use crate::storage::Storage;
use reelay_jobs::{Claim, Job, PhaseTimings};
use reelay_protocol::{ErrorDetail, InputFacts, JobStatus};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// The task kinds a cluster hands to a peer: those whose outputs are files under the
/// attempt's prefix and whose inputs the rules below open to it — the job's own input
/// (`inputs/{job}/…`, or a URL the peer fetches itself) for a `transcode`, the piece files of
/// its range (under the split task's prefix) for a split job's `encode_segment`.
pub const PEER_KINDS: &[&str] = &[reelay_jobs::TRANSCODE, crate::task_payloads::ENCODE_SEGMENT];

/// The prefix of every attempt of job `job_id`'s `split` task, whose piece files a peer's
/// `encode_segment` reads.
pub fn split_prefix(job_id: &str) -> String {
    format!("{}/split/", crate::worker::intermediate_prefix(job_id))
}

/// The lease owner recorded at home for a peer's worker: its cluster and its own id, so one
/// peer can never act on a lease another peer (or a home worker) holds.
pub fn lease_owner(peer: &str, worker: &str) -> String {
    format!("peer:{peer}:{worker}")
}

/// A peer's worker id: what it sends as `worker` (1–128 of `[A-Za-z0-9._-]`).
pub fn valid_worker_id(worker: &str) -> bool {
    !worker.is_empty()
        && worker.len() <= 128
        && worker
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether a peer working on a task of kind `kind` of job `job_id` may read `key`: the job's
/// own input objects (`inputs/{job}/…`: the upload, its probe, captions, watermark), and for
/// an `encode_segment` the split task's piece files ([`split_prefix`]); nothing else.
pub fn may_read(job_id: &str, kind: &str, key: &str) -> bool {
    let under = |prefix: &str| {
        key.strip_prefix(prefix)
            .is_some_and(|rest| !rest.is_empty())
    };
    crate::storage::valid_user_key(key)
        && (under(&format!("inputs/{job_id}/"))
            || (kind == crate::task_payloads::ENCODE_SEGMENT && under(&split_prefix(job_id))))
}

/// The storage key behind `key` as a peer names it: the job's source key
/// (`inputs/{job}/source`) is its stored input (`input_key`: the upload itself, or the key
/// input the job names, which lies outside `inputs/{job}/` under the owner's key prefix, a
/// prefix the peer does not share); any other key is itself. A peer so never learns, nor
/// chooses, where a key input lives: it reads the one object admission allowed for the job.
pub fn stored_key<'a>(job_id: &str, key: &'a str, input_key: Option<&'a str>) -> &'a str {
    match input_key {
        Some(stored) if key == crate::storage::input_key(job_id) => stored,
        _ => key,
    }
}

/// The storage keys a split piece (`encode_segment`) reads: its range's piece files under the
/// split task's prefix, from the split's result among its dependencies. An error names what
/// is missing (a broken graph: the task is handed back).
pub fn segment_reads(claim: &Claim) -> Result<Vec<String>, String> {
    let payload: crate::task_payloads::SegmentPayload =
        serde_json::from_value(claim.payload.clone()).map_err(|e| format!("payload: {e}"))?;
    let split_id = format!("{}.{}", claim.job.id, crate::task_payloads::SPLIT);
    let split: crate::task_payloads::SplitResult = claim
        .dependencies
        .iter()
        .find(|(t, _)| *t == split_id)
        .map(|(_, v)| serde_json::from_value(v.clone()))
        .ok_or("no split result")?
        .map_err(|e| format!("split result: {e}"))?;
    let task = reelay_media::split::segment_tasks(&split.layout, &split.manifest)
        .into_iter()
        .find(|t| t.index == payload.index)
        .ok_or_else(|| format!("no range {}", payload.index))?;
    Ok(task
        .pieces
        .iter()
        .map(|p| format!("{}/{p}", split.prefix))
        .collect())
}

/// Whether a peer's attempt whose files live under `prefix` may write `key`: only beneath it.
pub fn may_write(prefix: &str, key: &str) -> bool {
    crate::storage::valid_user_key(key)
        && key
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| !rest.is_empty())
}

/// Whether every object a completion names lies under the attempt's `prefix`: each `"key"`
/// string anywhere in its outputs is beneath it, each `"prefix"` string is it (a split piece's
/// result names its files relative to its prefix), and no string climbs out of a directory
/// (`..`) or is absolute. A peer cannot point a job's outputs at another job's files.
pub fn outputs_within(prefix: &str, outputs: &serde_json::Value) -> bool {
    use serde_json::Value;
    match outputs {
        Value::Array(items) => items.iter().all(|v| outputs_within(prefix, v)),
        Value::Object(map) => map.iter().all(|(k, v)| match (k.as_str(), v) {
            ("key", Value::String(key)) => may_write(prefix, key),
            ("key", _) => false,
            ("prefix", Value::String(p)) => p == prefix,
            ("prefix", _) => false,
            _ => outputs_within(prefix, v),
        }),
        Value::String(text) => !text.starts_with('/') && !text.split('/').any(|c| c == ".."),
        _ => true,
    }
}

/// `POST /v1/peer/tasks/claim`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimRequest {
    /// The peer's worker (its own id, see [`valid_worker_id`]).
    pub worker: String,
    /// Exactly this task (the edge's stealing decision named it, by its id or by the owner's
    /// opaque offer handle, see `offer_handle`), or nothing if it is no longer claimable;
    /// absent: any task the owner offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
}

/// `POST /v1/peer/tasks/{id}/release`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseRequest {
    pub worker: String,
    pub attempt: u32,
    /// False when the attempt never began (its inputs could not be fetched): the task may then
    /// move to a peer again. Absent: true, the task stays home from now on.
    #[serde(default = "began_default")]
    pub began: bool,
}

fn began_default() -> bool {
    true
}

/// What a task's handler needs of its job, as a peer receives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerJob {
    pub id: String,
    pub cluster: String,
    pub spec_json: String,
    pub spec_hash: String,
    pub input_key: Option<String>,
    pub input_url: Option<String>,
    pub owner: Option<String>,
    pub priority: i32,
    pub max_attempts: u32,
    pub estimated_seconds: f64,
    pub created_at: i64,
    pub split_json: Option<String>,
    pub input_name: Option<String>,
    pub input_facts: Option<InputFacts>,
}

/// The job's spec as a peer sees it: a key input's key replaced by the job's own source key,
/// which is all the peer reads ([`stored_key`]); any other spec as stored.
fn peer_spec(job: &Job) -> String {
    let source = crate::storage::input_key(&job.id);
    if job.input_key.as_deref().is_none_or(|k| k == source) {
        return job.spec_json.clone();
    }
    let Ok(mut spec) = serde_json::from_str::<serde_json::Value>(&job.spec_json) else {
        return job.spec_json.clone();
    };
    if let Some(key) = spec.pointer_mut("/input/key") {
        *key = serde_json::Value::String(source);
    }
    spec.to_string()
}

impl PeerJob {
    pub fn from_job(job: &Job) -> PeerJob {
        PeerJob {
            id: job.id.clone(),
            cluster: job.cluster.clone(),
            spec_json: peer_spec(job),
            spec_hash: job.spec_hash.clone(),
            // Whatever the job's stored input (an upload, or a key input under the owner's
            // key prefix), the peer reads it as the job's own source ([`stored_key`]).
            input_key: job
                .input_key
                .as_ref()
                .map(|_| crate::storage::input_key(&job.id)),
            input_url: job.input_url.clone(),
            owner: job.owner.clone(),
            priority: job.priority,
            max_attempts: job.max_attempts,
            estimated_seconds: job.estimated_seconds,
            created_at: job.created_at,
            split_json: job.split_json.clone(),
            input_name: job.input_name.clone(),
            input_facts: job.input_facts.clone(),
        }
    }

    fn into_job(self) -> Job {
        Job {
            id: self.id,
            cluster: self.cluster,
            status: JobStatus::Running,
            progress: 0.0,
            attempts: 0,
            max_attempts: self.max_attempts,
            priority: self.priority,
            spec_json: self.spec_json,
            spec_hash: self.spec_hash,
            input_key: self.input_key,
            input_url: self.input_url,
            idempotency_key: None,
            owner: self.owner,
            estimated_seconds: self.estimated_seconds,
            created_at: self.created_at,
            started_at: None,
            finished_at: None,
            error: None,
            outputs: Vec::new(),
            cancel_requested: false,
            deleted_at: None,
            inputs_deleted_at: None,
            playable_at: None,
            split_json: self.split_json,
            tasks: Vec::new(),
            input_name: self.input_name,
            input_facts: self.input_facts,
        }
    }
}

/// One object a peer may read: its key and size, and a presigned URL when the owner's storage
/// can sign one (S3, GCS); otherwise it is read through `GET …/objects/{key}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerObject {
    pub key: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// The answer to a successful claim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerTask {
    pub task_id: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub attempt: u32,
    /// How long the lease lasts without a renewal.
    pub lease_ms: u64,
    pub job: PeerJob,
    pub dependencies: Vec<(String, serde_json::Value)>,
    /// Every object the task may read.
    pub inputs: Vec<PeerObject>,
    /// Where this attempt's files go (every output key must lie under it).
    pub output_prefix: String,
    /// The task's expected encode seconds (its weight): the thief's cluster reports the slot
    /// busy for the remaining part. 0 from an owner that does not send it.
    #[serde(default)]
    pub weight: f64,
}

impl PeerTask {
    /// What is wrong with this answer to a claim (`asked`: the task the claim named), or
    /// `None`. The thief runs the task under names the owner chose (its scratch directory is
    /// named for the task id; the handler reads the inputs and writes under the prefix), so an
    /// owner that is compromised, or a link that is not what it seems, must not be able to
    /// name a path outside the thief's staging area, a kind the thief never runs for peers, or
    /// an object of another job.
    pub fn problem(&self, asked: Option<&str>) -> Option<String> {
        if let Some(why) = self.id_problem() {
            return Some(why);
        }
        let job = &self.job.id;
        // A handle (the owner's sealed offer) cannot be compared: only the owner reads it.
        if asked.is_some_and(|a| a != self.task_id && !reelay_protocol::is_offer_handle(a)) {
            return Some(format!(
                "asked for task {:?}, got {:?}",
                asked.unwrap_or_default(),
                self.task_id
            ));
        }
        if !PEER_KINDS.contains(&self.kind.as_str()) {
            return Some(format!(
                "a task of kind {:?} is not run for peers",
                self.kind
            ));
        }
        let under_job = |p: &str| {
            [format!("outputs/{job}/"), format!("tasks/{job}/")]
                .iter()
                .any(|root| p.strip_prefix(root.as_str()).is_some_and(|r| !r.is_empty()))
        };
        if !crate::storage::valid_user_key(&self.output_prefix) || !under_job(&self.output_prefix) {
            return Some(format!(
                "the output prefix {:?} is not one of job {job}'s",
                self.output_prefix
            ));
        }
        if let Some(obj) = self
            .inputs
            .iter()
            .find(|o| !may_read(job, &self.kind, &o.key))
        {
            return Some(format!("the input {:?} is not one of job {job}'s", obj.key));
        }
        if let Some(url) = self
            .inputs
            .iter()
            .filter_map(|o| o.url.as_deref())
            .find(|u| {
                reqwest::Url::parse(u).map_or(true, |u| !matches!(u.scheme(), "http" | "https"))
            })
        {
            return Some(format!("the input URL {url:?} is not http(s)"));
        }
        if let Some(k) = &self.job.input_key {
            if *k != crate::storage::input_key(job) {
                return Some(format!("the job's input {k:?} is not its source key"));
            }
        }
        None
    }

    /// What is wrong with the job and task ids alone (see [`PeerTask::problem`]): an answer
    /// whose ids pass may still be handed back to its owner by id.
    fn id_problem(&self) -> Option<String> {
        let job = &self.job.id;
        if !valid_worker_id(job) || job.contains("..") {
            return Some(format!("the job id {job:?} is not an id"));
        }
        let key = self.task_id.strip_prefix(&format!("{job}."));
        if !key.is_some_and(|k| valid_worker_id(k) && !k.contains("..")) {
            return Some(format!(
                "the task id {:?} is not a task of job {job}",
                self.task_id
            ));
        }
        None
    }

    /// The claim as the peer's handler sees it (its job rebuilt from what was sent).
    pub fn to_claim(&self) -> Claim {
        Claim {
            job: self.job.clone().into_job(),
            task_id: self.task_id.clone(),
            kind: self.kind.clone(),
            payload: self.payload.clone(),
            attempt: self.attempt,
            lease_expires_at: reelay_jobs::now_millis()
                .saturating_add(i64::try_from(self.lease_ms).unwrap_or(i64::MAX)),
            dependencies: self.dependencies.clone(),
            weight: self.weight,
        }
    }
}

/// Which attempt a request acts for; checked against the lease at home.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub worker: String,
    pub attempt: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewRequest {
    pub worker: String,
    pub attempt: u32,
    #[serde(default)]
    pub progress: Option<f64>,
    #[serde(default)]
    pub eta_at: Option<i64>,
}

/// `renewed`, `cancelled` (stop, do not complete) or `lease_lost` (stop: someone else owns it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RenewAnswer {
    Renewed,
    Cancelled,
    LeaseLost,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutcomeBody<T> {
    pub outcome: T,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompleteRequest {
    pub worker: String,
    pub attempt: u32,
    pub outputs: serde_json::Value,
    #[serde(default)]
    pub timings: Option<PhaseTimings>,
}

/// `completed` (the owner recorded it) or `lease_lost` (it did not: the outputs were removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompleteAnswer {
    Completed,
    LeaseLost,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailRequest {
    pub worker: String,
    pub attempt: u32,
    pub error: ErrorDetail,
    /// Set when another attempt could succeed: the task is retried after this long.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailAnswer {
    Requeued,
    Failed,
    LeaseLost,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadUrlRequest {
    pub worker: String,
    pub attempt: u32,
    pub key: String,
}

/// A presigned PUT URL for the key, or none: then the peer PUTs through the owner's api.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadUrlAnswer {
    pub url: Option<String>,
}

/// Why talking to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer {peer} answered {status}: {code}: {message}")]
    Refused {
        peer: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("peer {peer} unreachable: {source}")]
    Transport {
        peer: String,
        source: reqwest::Error,
    },
    #[error("peer {peer} sent an answer that does not decode: {message}")]
    Protocol { peer: String, message: String },
    #[error("local staging: {0}")]
    Staging(String),
    /// A `[[steal.peers]]` entry that cannot be used: a file missing or not what it should be
    /// (reported at start, see [`PeerClient::new`]).
    #[error("peer {peer}: {message}")]
    Config { peer: String, message: String },
}

impl PeerError {
    pub fn code(&self) -> &str {
        match self {
            PeerError::Refused { .. } => "peer_refused",
            PeerError::Transport { .. } => "peer_unreachable",
            PeerError::Protocol { .. } => "peer_protocol",
            PeerError::Staging(_) => "peer_staging",
            PeerError::Config { .. } => "peer_config",
        }
    }

    /// Everything but a refusal for a reason that will not change (4xx other than 408/429)
    /// may work next time.
    pub fn is_transient(&self) -> bool {
        match self {
            PeerError::Refused { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            PeerError::Config { .. } => false,
            _ => true,
        }
    }
}

/// A peer cluster this one's workers may take tasks from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's cluster name (only for logs and metrics; the owner records who claimed from
    /// the credential, not from this).
    pub name: String,
    /// Base URL of the peer's api: its edge's inter-cloud (mTLS) address in production, the
    /// cluster itself in tests.
    pub url: String,
    /// A file holding a token with the `peer` scope, valid on that cluster.
    pub token_file: std::path::PathBuf,
    /// PEM file of the CA certificate(s) that `url`'s HTTPS certificate must chain to: the
    /// private CA of the edge's inter-cloud listener. With it only these CAs are trusted for
    /// this peer (not the public web roots); without it, the public web roots. Presigned
    /// object-store URLs are always checked against the public roots.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate chain (PEM) presented to `url`, for an edge that wants mutual TLS
    /// from the workers of other clouds; with `client_key`, both or neither.
    #[serde(default)]
    pub client_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of `client_cert`.
    #[serde(default)]
    pub client_key: Option<std::path::PathBuf>,
}

impl PeerConfig {
    fn invalid(&self, message: String) -> PeerError {
        PeerError::Config {
            peer: self.name.clone(),
            message,
        }
    }

    /// Reads `setting`'s file, or says which one could not be read.
    fn read(&self, setting: &str, path: &Path) -> Result<Vec<u8>, PeerError> {
        std::fs::read(path).map_err(|e| self.invalid(format!("{setting} {}: {e}", path.display())))
    }

    /// The CA certificates of `ca_file` (none when unset); a file without any is an error.
    fn roots(&self) -> Result<Vec<reqwest::Certificate>, PeerError> {
        let Some(path) = &self.ca_file else {
            return Ok(Vec::new());
        };
        let pem = self.read("ca_file", path)?;
        let bad = |why: String| self.invalid(format!("ca_file {}: {why}", path.display()));
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificate in it".into()));
        }
        Ok(certs)
    }

    /// The client identity of `client_cert` + `client_key`, when both are set.
    fn identity(&self) -> Result<Option<reqwest::Identity>, PeerError> {
        match (&self.client_cert, &self.client_key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => {
                let mut pem = self.read("client_cert", cert)?;
                pem.push(b'\n');
                pem.extend(self.read("client_key", key)?);
                reqwest::Identity::from_pem(&pem).map(Some).map_err(|e| {
                    self.invalid(format!(
                        "client_cert {} with client_key {}: {e}",
                        cert.display(),
                        key.display()
                    ))
                })
            }
            _ => Err(self.invalid("client_cert and client_key go together".into())),
        }
    }
}

/// `[steal]` in the cluster's config: where its idle workers look for work (issue 16, part 2).
///
/// The gate is deliberately simple: a worker slot asks a peer only when its own cluster handed
/// it nothing (no ready task at home), at most every `poll_ms`; the owner offers a task only
/// after it was ready at home for `offer_after_seconds` (its own workers come first), only of
/// the kinds in [`PEER_KINDS`], and only once ever (a task moves at most once). Off unless a
/// peer is listed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StealConfig {
    /// Peers to take work from (none: this cluster's workers never work for another).
    pub peers: Vec<PeerConfig>,
    /// How often an idle slot asks the peers.
    pub poll_ms: u64,
    /// As the owner: a task ready at home this long is offered to peers.
    pub offer_after_seconds: f64,
    /// Per request to a peer (claims, renewals, completions), not per object transfer.
    pub request_timeout_ms: u64,
    /// The edge whose stealing policy decides (`GET {edge}/edge/steal?thief={cluster}`): an
    /// idle slot asks it which peer and task to take, and claims exactly that task from the
    /// peer of that name. Unset: the slot asks the peers in turn for any task.
    pub edge: Option<String>,
    /// A token with the `peer` scope for the edge (needed when the edge's `[auth]` is on).
    /// Unset: the first peer's `token_file`.
    pub token_file: Option<std::path::PathBuf>,
    /// As the owner: hand a peer's worker presigned URLs for the task's objects when the
    /// storage can sign (S3/GCS), so the bytes go between the worker and the bucket and not
    /// through this api. Off where the bucket's address is private to this cloud (compose:
    /// `s3-aws:9000` is unreachable from the gcp network) or no peer may talk to the bucket:
    /// the peer then streams every object through this cluster's `…/objects/` routes, as for
    /// local storage.
    pub presign: bool,
    /// As the owner: the longest a peer's attempt may hold a task, from its claim. Past it the
    /// owner refuses the peer's renewals (`lease_lost`), the lease runs out, and the task is
    /// claimed again (at home; on its last attempt the job fails as for a vanished worker). A
    /// peer's worker stops a stalled ffmpeg itself, but one that renews without end (a bug)
    /// would otherwise keep the owner's job for good. A peer that releases and claims again
    /// starts a new hold. The default, two days, is above what a whole-file task of a few
    /// renditions may take at home (each rendition's ffmpeg is allowed
    /// `job_timeout_seconds`, 6 h); set it above your longest task.
    pub max_peer_hold_seconds: u64,
}

impl Default for StealConfig {
    fn default() -> Self {
        StealConfig {
            peers: Vec::new(),
            poll_ms: 1000,
            offer_after_seconds: 5.0,
            request_timeout_ms: 5000,
            edge: None,
            token_file: None,
            presign: true,
            max_peer_hold_seconds: 2 * 24 * 3600,
        }
    }
}

/// A client of one peer's remote-claim endpoints.
#[derive(Clone)]
pub struct PeerClient {
    pub name: String,
    base: String,
    token: String,
    /// To the peer's `url` (its CA and client certificate, when configured).
    http: reqwest::Client,
    /// To presigned object-store URLs, which carry their own authority: public roots, no
    /// client certificate.
    presigned: reqwest::Client,
    /// Presigned URLs may name private addresses (`--allow-private-urls`).
    allow_private_urls: bool,
    request_timeout: Duration,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerClient({} at {})", self.name, self.base)
    }
}

/// The error body the owner's api answers with.
#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorDetail,
}

impl PeerClient {
    /// Reads the token file and the TLS files (`ca_file`, `client_cert`, `client_key`); any
    /// of them missing or unusable is a [`PeerError::Config`], which the worker role reports
    /// at start. The token is sent with every request and never logged.
    pub fn new(
        cfg: &PeerConfig,
        request_timeout: Duration,
        allow_private_urls: bool,
    ) -> Result<PeerClient, PeerError> {
        let token = String::from_utf8_lossy(&cfg.read("token_file", &cfg.token_file)?)
            .trim()
            .to_string();
        if token.is_empty() {
            return Err(cfg.invalid(format!("token_file {}: empty", cfg.token_file.display())));
        }
        let base = || {
            reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_secs(5))
        };
        let mut peer = base();
        let roots = cfg.roots()?;
        if !roots.is_empty() {
            peer = peer.tls_built_in_root_certs(false);
            for cert in roots {
                peer = peer.add_root_certificate(cert);
            }
        }
        if let Some(identity) = cfg.identity()? {
            peer = peer.identity(identity);
        }
        let built = |b: reqwest::ClientBuilder| {
            b.build()
                .map_err(|e| cfg.invalid(format!("TLS settings: {e}")))
        };
        Ok(PeerClient {
            name: cfg.name.clone(),
            base: cfg.url.trim_end_matches('/').to_string(),
            token,
            http: built(peer)?,
            // A presigned URL is the object itself: a redirect elsewhere is not followed (an
            // owner's storage does not send one; anything that does is not that storage). The
            // owner names it, so it gets what a URL input gets: http(s) only, and (unless this
            // cluster allows private URLs) a resolver that refuses loopback, link-local and
            // private addresses, so an owner that is not what it should be cannot aim this
            // worker at its own network (a metadata service, an internal api).
            presigned: built(
                crate::fetch::guarded_client_builder(allow_private_urls)
                    .connect_timeout(Duration::from_secs(5))
                    .redirect(reqwest::redirect::Policy::none()),
            )?,
            allow_private_urls,
            request_timeout,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/peer/tasks{path}", self.base)
    }

    /// A presigned URL the owner handed out, checked as a URL input is
    /// ([`crate::fetch::check_url`]); the client's resolver checks where its name points.
    fn presigned_url(&self, raw: &str) -> Result<reqwest::Url, PeerError> {
        crate::fetch::check_url(raw, self.allow_private_urls).map_err(|e| PeerError::Protocol {
            peer: self.name.clone(),
            message: format!("a presigned URL refused: {e}"),
        })
    }

    fn transport(&self, source: reqwest::Error) -> PeerError {
        PeerError::Transport {
            peer: self.name.clone(),
            source,
        }
    }

    async fn refused(&self, resp: reqwest::Response) -> PeerError {
        let status = resp.status().as_u16();
        let (code, message) = match resp.json::<ErrorEnvelope>().await {
            Ok(e) => (e.error.code, e.error.message),
            Err(_) => ("unknown".to_string(), String::new()),
        };
        PeerError::Refused {
            peer: self.name.clone(),
            status,
            code,
            message,
        }
    }

    async fn post<B: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Option<T>, PeerError> {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .timeout(self.request_timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.refused(resp).await);
        }
        resp.json::<T>()
            .await
            .map(Some)
            .map_err(|e| PeerError::Protocol {
                peer: self.name.clone(),
                message: e.to_string(),
            })
    }

    /// The answer an endpoint owes (a 204 where a body was due is the peer breaking the
    /// protocol): an error, never a panic.
    fn required<T>(&self, v: Option<T>) -> Result<T, PeerError> {
        v.ok_or_else(|| PeerError::Protocol {
            peer: self.name.clone(),
            message: "an empty answer where one was due".into(),
        })
    }

    /// A task for `worker` (exactly `task` when given), or `None` when the peer has nothing
    /// to hand out (or that task is no longer claimable).
    pub async fn claim(
        &self,
        worker: &str,
        task: Option<&str>,
    ) -> Result<Option<PeerTask>, PeerError> {
        let got: Option<PeerTask> = self
            .post(
                "/claim",
                &ClaimRequest {
                    worker: worker.to_string(),
                    task_id: task.map(str::to_string),
                },
            )
            .await?;
        // Not run. Handed back as never begun when its ids are sound (an owner of a newer
        // version offering a kind this worker does not run gets it back at once); otherwise
        // not even that (the release would put the owner's task id in a URL): the owner's
        // lease runs out and the task runs at home.
        if let Some((t, why)) = got.as_ref().and_then(|t| Some((t, t.problem(task)?))) {
            if t.id_problem().is_none() {
                let at = Attempt {
                    worker: worker.to_string(),
                    attempt: t.attempt,
                };
                if let Err(e) = self.release(&t.task_id, &at, false).await {
                    tracing::warn!(peer = %self.name, error = %e, "could not hand back a refused task");
                }
            }
            return Err(PeerError::Protocol {
                peer: self.name.clone(),
                message: format!("refused its claim answer: {why}"),
            });
        }
        Ok(got)
    }

    pub async fn renew(&self, task: &str, req: &RenewRequest) -> Result<RenewAnswer, PeerError> {
        let a: Option<OutcomeBody<RenewAnswer>> = self.post(&format!("/{task}/renew"), req).await?;
        Ok(self.required(a)?.outcome)
    }

    pub async fn complete(
        &self,
        task: &str,
        req: &CompleteRequest,
    ) -> Result<CompleteAnswer, PeerError> {
        let a: Option<OutcomeBody<CompleteAnswer>> =
            self.post(&format!("/{task}/complete"), req).await?;
        Ok(self.required(a)?.outcome)
    }

    pub async fn fail(&self, task: &str, req: &FailRequest) -> Result<FailAnswer, PeerError> {
        let a: Option<OutcomeBody<FailAnswer>> = self.post(&format!("/{task}/fail"), req).await?;
        Ok(self.required(a)?.outcome)
    }

    /// Hands the task back; `began: false` when the attempt never got its inputs (the task may
    /// then move again).
    pub async fn release(&self, task: &str, at: &Attempt, began: bool) -> Result<(), PeerError> {
        let req = ReleaseRequest {
            worker: at.worker.clone(),
            attempt: at.attempt,
            began,
        };
        let _: Option<serde_json::Value> = self.post(&format!("/{task}/release"), &req).await?;
        Ok(())
    }

    /// Copies one input object into `staging` under the same key: from its presigned URL when
    /// it has one, else streamed through the owner's api.
    pub async fn download(
        &self,
        task: &str,
        at: &Attempt,
        obj: &PeerObject,
        staging: &Storage,
    ) -> Result<u64, PeerError> {
        use futures::StreamExt;
        let req = match &obj.url {
            Some(url) => self.presigned.get(self.presigned_url(url)?),
            None => self
                .http
                .get(self.url(&format!("/{task}/objects/{}", obj.key)))
                .bearer_auth(&self.token)
                .query(&[("worker", &at.worker), ("attempt", &at.attempt.to_string())]),
        };
        let resp = req.send().await.map_err(|e| self.transport(e))?;
        if !resp.status().is_success() {
            return Err(self.refused(resp).await);
        }
        let mut w = staging
            .writer(&obj.key)
            .await
            .map_err(|e| PeerError::Staging(e.to_string()))?;
        let mut body = resp.bytes_stream();
        let mut got = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    w.abort().await;
                    return Err(self.transport(e));
                }
            };
            // No more than the claim said the object holds: a body that runs on would fill
            // this cluster's staging disk.
            got += chunk.len() as u64;
            if got > obj.size {
                w.abort().await;
                return Err(PeerError::Protocol {
                    peer: self.name.clone(),
                    message: format!("{} is longer than its {} bytes", obj.key, obj.size),
                });
            }
            if let Err(e) = w.write(&chunk).await {
                w.abort().await;
                return Err(PeerError::Staging(e.to_string()));
            }
        }
        w.finish()
            .await
            .map_err(|e| PeerError::Staging(e.to_string()))
    }

    /// Sends the local file `file` to the owner as object `key`: to a presigned PUT URL when
    /// the owner's storage signs one, else streamed through its api.
    pub async fn upload(
        &self,
        task: &str,
        at: &Attempt,
        key: &str,
        file: &Path,
    ) -> Result<(), PeerError> {
        let signed: Option<UploadUrlAnswer> = self
            .post(
                &format!("/{task}/upload-url"),
                &UploadUrlRequest {
                    worker: at.worker.clone(),
                    attempt: at.attempt,
                    key: key.to_string(),
                },
            )
            .await?;
        let f = tokio::fs::File::open(file)
            .await
            .map_err(|e| PeerError::Staging(format!("{}: {e}", file.display())))?;
        let len = f
            .metadata()
            .await
            .map_err(|e| PeerError::Staging(e.to_string()))?
            .len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(f));
        let req = match signed.and_then(|s| s.url) {
            Some(url) => self.presigned.put(self.presigned_url(&url)?),
            None => self
                .http
                .put(self.url(&format!("/{task}/objects/{key}")))
                .bearer_auth(&self.token)
                .query(&[("worker", &at.worker), ("attempt", &at.attempt.to_string())]),
        };
        let resp = req
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        if !resp.status().is_success() {
            return Err(self.refused(resp).await);
        }
        Ok(())
    }
}

/// The edge whose stealing policy an idle slot asks (`[steal] edge`).
#[derive(Clone)]
pub struct EdgeClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    request_timeout: Duration,
}

impl std::fmt::Debug for EdgeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EdgeClient({})", self.base)
    }
}

impl EdgeClient {
    /// The edge of `cfg` (`None` when `[steal] edge` is unset); its token from
    /// `[steal] token_file`, else the first peer's.
    pub fn new(cfg: &StealConfig, request_timeout: Duration) -> Result<Option<Self>, PeerError> {
        let Some(base) = &cfg.edge else {
            return Ok(None);
        };
        let file = cfg
            .token_file
            .as_ref()
            .or_else(|| cfg.peers.first().map(|p| &p.token_file));
        let token = match file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| {
                        PeerError::Staging(format!("edge token file {}: {e}", f.display()))
                    })?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|source| PeerError::Transport {
                peer: "edge".into(),
                source,
            })?;
        Ok(Some(EdgeClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
            request_timeout,
        }))
    }

    /// The edge's decision for an idle slot of cluster `thief`.
    pub async fn decide(&self, thief: &str) -> Result<reelay_protocol::StealDecision, PeerError> {
        let transport = |source| PeerError::Transport {
            peer: "edge".into(),
            source,
        };
        let mut req = self
            .http
            .get(format!("{}/edge/steal", self.base))
            // `idle=1`: this slot's own claim just found nothing (the edge's reading of this
            // cluster may be a poll old, or count blocked tasks as work).
            .query(&[("thief", thief), ("idle", "1")])
            .timeout(self.request_timeout);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        if !status.is_success() {
            let (code, message) = match resp.json::<ErrorEnvelope>().await {
                Ok(e) => (e.error.code, e.error.message),
                Err(_) => ("unknown".to_string(), String::new()),
            };
            return Err(PeerError::Refused {
                peer: "edge".into(),
                status: status.as_u16(),
                code,
                message,
            });
        }
        resp.json().await.map_err(|e| PeerError::Protocol {
            peer: "edge".into(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_never_sees_where_a_key_input_lies() {
        let stored = PeerJob {
            id: "aws.01J".into(),
            cluster: "aws".into(),
            spec_json:
                r#"{"input":{"key":"incoming/team/film.mov"},"outputs":[{"preset":"mp4-360p"}]}"#
                    .into(),
            spec_hash: "h".into(),
            input_key: Some("incoming/team/film.mov".into()),
            input_url: None,
            owner: Some("team".into()),
            priority: 0,
            max_attempts: 3,
            estimated_seconds: 1.0,
            created_at: 0,
            split_json: None,
            input_name: None,
            input_facts: None,
        }
        .into_job();
        let seen = PeerJob::from_job(&stored);
        assert_eq!(seen.input_key.as_deref(), Some("inputs/aws.01J/source"));
        let spec: serde_json::Value = serde_json::from_str(&seen.spec_json).unwrap();
        assert_eq!(spec["input"]["key"], "inputs/aws.01J/source");
        assert_eq!(spec["outputs"][0]["preset"], "mp4-360p");
        assert!(!serde_json::to_string(&seen).unwrap().contains("incoming"));
        // An upload's spec goes as stored.
        let mut upload = stored.clone();
        upload.input_key = Some("inputs/aws.01J/source".into());
        upload.spec_json = r#"{"outputs":[]}"#.into();
        assert_eq!(PeerJob::from_job(&upload).spec_json, upload.spec_json);
    }

    fn answer() -> PeerTask {
        PeerTask {
            task_id: "aws.01J.seg-0003".into(),
            kind: crate::task_payloads::ENCODE_SEGMENT.into(),
            payload: serde_json::json!({}),
            attempt: 1,
            lease_ms: 30_000,
            job: PeerJob {
                id: "aws.01J".into(),
                cluster: "aws".into(),
                spec_json: "{}".into(),
                spec_hash: "h".into(),
                input_key: Some("inputs/aws.01J/source".into()),
                input_url: None,
                owner: None,
                priority: 0,
                max_attempts: 3,
                estimated_seconds: 1.0,
                created_at: 0,
                split_json: None,
                input_name: None,
                input_facts: None,
            },
            dependencies: vec![],
            inputs: vec![PeerObject {
                key: format!(
                    "{}/piece_00001.ts",
                    split_prefix("aws.01J").trim_end_matches('/')
                ),
                size: 10,
                url: Some("https://bucket.s3.example/k?X-Amz-Signature=1".into()),
            }],
            output_prefix: "tasks/aws.01J/seg-0003/a1-p0123456789ab".into(),
            weight: 4.0,
        }
    }

    /// The thief runs a claimed task under names the owner chose: anything that would lead
    /// outside its staging area or to another job's objects is refused before it runs.
    #[test]
    fn a_claim_answer_names_only_its_own_jobs_things() {
        assert_eq!(answer().problem(Some("aws.01J.seg-0003")), None);
        assert_eq!(answer().problem(None), None);
        // Asked by the owner's opaque handle: the id cannot be compared, the rest still is.
        assert_eq!(answer().problem(Some("o_c2VhbGVk")), None);
        let refused = |change: &dyn Fn(&mut PeerTask), asked: Option<&str>| {
            let mut t = answer();
            change(&mut t);
            t.problem(asked).unwrap_or_else(|| panic!("accepted {t:?}"))
        };
        // A task id that climbs out of the scratch directory, or of another job.
        refused(&|t| t.task_id = "aws.01J.../../../etc".into(), None);
        refused(&|t| t.task_id = "aws.01J./x".into(), None);
        refused(&|t| t.task_id = "gcp.01K.seg-0003".into(), None);
        refused(&|t| t.job.id = "../..".into(), None);
        // Not the task asked for.
        refused(&|_| {}, Some("aws.01J.seg-0004"));
        // A handle does not excuse an id that climbs out.
        refused(
            &|t| t.task_id = "aws.01J.../../../etc".into(),
            Some("o_c2VhbGVk"),
        );
        // A kind the thief never runs for a peer.
        refused(&|t| t.kind = "stitch".into(), None);
        // Outputs outside the job, or a path that climbs.
        refused(&|t| t.output_prefix = "outputs/gcp.01K/a1".into(), None);
        refused(
            &|t| t.output_prefix = "tasks/aws.01J/../../etc".into(),
            None,
        );
        refused(&|t| t.output_prefix = "outputs/aws.01J/".into(), None);
        // Inputs of another job, a climbing key, a URL that is not http(s).
        refused(&|t| t.inputs[0].key = "inputs/gcp.01K/source".into(), None);
        refused(&|t| t.inputs[0].key = "inputs/aws.01J/../../x".into(), None);
        refused(
            &|t| t.inputs[0].url = Some("file:///etc/passwd".into()),
            None,
        );
        refused(&|t| t.job.input_key = Some("incoming/other".into()), None);
        // The job's own outputs prefix is fine for a whole-file transcode.
        let mut whole = answer();
        whole.kind = reelay_jobs::TRANSCODE.into();
        whole.task_id = "aws.01J.main".into();
        whole.inputs[0].key = "inputs/aws.01J/source".into();
        whole.output_prefix = "outputs/aws.01J/a2-p0123456789ab".into();
        assert_eq!(whole.problem(None), None);
    }

    #[test]
    fn the_jobs_source_is_its_stored_input_and_nothing_else_moves() {
        let key_input = Some("incoming/team/film.mov");
        // A key input is read where it lies, under the name every job's source has.
        assert_eq!(
            stored_key("aws.01J", "inputs/aws.01J/source", key_input),
            "incoming/team/film.mov"
        );
        // An upload is its own source.
        assert_eq!(
            stored_key(
                "aws.01J",
                "inputs/aws.01J/source",
                Some("inputs/aws.01J/source")
            ),
            "inputs/aws.01J/source"
        );
        // Every other key, another job's source included, is itself (and may_read decides).
        for key in [
            "inputs/aws.01J/captions/0.vtt",
            "inputs/aws.01K/source",
            "incoming/team/film.mov",
        ] {
            assert_eq!(stored_key("aws.01J", key, key_input), key);
        }
        assert_eq!(
            stored_key("aws.01J", "inputs/aws.01J/source", None),
            "inputs/aws.01J/source"
        );
    }

    #[test]
    fn reads_only_the_jobs_inputs() {
        let read = |key| may_read("aws.01J", "transcode", key);
        assert!(read("inputs/aws.01J/source"));
        assert!(read("inputs/aws.01J/captions/0.vtt"));
        assert!(!read("inputs/aws.01K/source"));
        assert!(!read("inputs/aws.01J/../aws.01K/source"));
        assert!(!read("inputs/aws.01J/"));
        assert!(!read("outputs/aws.01J/a1/out.mp4"));
        assert!(!read("inputs/aws.01Jx/source"));
        assert!(!read("tasks/aws.01J/split/a1/piece_00000.mkv"));
    }

    #[test]
    fn a_split_piece_also_reads_the_split_tasks_pieces() {
        let read = |key| may_read("aws.01J", "encode_segment", key);
        assert!(read("tasks/aws.01J/split/a1/piece_00000.mkv"));
        assert!(read("inputs/aws.01J/source"));
        assert!(!read("tasks/aws.01J/seg-1/a1/mp4-360p/piece_00001.ts"));
        assert!(!read("tasks/aws.01K/split/a1/piece_00000.mkv"));
        assert!(!read("tasks/aws.01J/split/a1/../../seg-1/a1/x.ts"));
        assert!(!read("tasks/aws.01J/split/"));
        assert!(!may_read(
            "aws.01J",
            "stitch",
            "tasks/aws.01J/split/a1/p.mkv"
        ));
    }

    #[test]
    fn writes_only_under_the_attempt() {
        let p = "outputs/aws.01J/a2";
        assert!(may_write(p, "outputs/aws.01J/a2/out.mp4"));
        assert!(may_write(p, "outputs/aws.01J/a2/hls/v0/seg_00001.ts"));
        assert!(!may_write(p, "outputs/aws.01J/a1/out.mp4"));
        assert!(!may_write(p, "outputs/aws.01J/a2"));
        assert!(!may_write(p, "outputs/aws.01J/a22/out.mp4"));
        assert!(!may_write(p, "outputs/aws.01J/a2/../a1/out.mp4"));
        assert!(!may_write(p, "inputs/aws.01J/source"));
    }

    #[test]
    fn completion_keys_stay_under_the_attempt() {
        let p = "outputs/aws.01J/a1";
        let ok =
            serde_json::json!([{"name": "x.mp4", "key": "outputs/aws.01J/a1/x.mp4", "size": 1}]);
        assert!(outputs_within(p, &ok));
        let other = serde_json::json!([{"name": "x.mp4", "key": "outputs/aws.01K/a1/x.mp4"}]);
        assert!(!outputs_within(p, &other));
        let nested = serde_json::json!({"pieces": [{"key": "inputs/aws.01J/source"}]});
        assert!(!outputs_within(p, &nested));
        let not_text = serde_json::json!([{"key": 5}]);
        assert!(!outputs_within(p, &not_text));
        // A split piece's result: its own prefix, files relative to it.
        let s = "tasks/aws.01J/seg-2/a1";
        let piece = serde_json::json!({"prefix": s, "files": ["mp4-360p/piece_00002.ts"],
            "output": {"index": 2, "files": [["mp4-360p", "mp4-360p/piece_00002.ts"]], "hls": []}});
        assert!(outputs_within(s, &piece));
        let elsewhere = serde_json::json!({"prefix": "tasks/aws.01K/seg-2/a1", "files": []});
        assert!(!outputs_within(s, &elsewhere));
        for climb in ["../../aws.01K/seg-2/a1/x.ts", "/etc/passwd", "a/../../b"] {
            let bad = serde_json::json!({"prefix": s, "files": [climb]});
            assert!(!outputs_within(s, &bad), "{climb}");
        }
    }

    #[test]
    fn worker_ids_and_lease_owners() {
        assert!(valid_worker_id("gcp-host-12-01J"));
        assert!(!valid_worker_id(""));
        assert!(!valid_worker_id("a:b"));
        assert!(!valid_worker_id(&"w".repeat(129)));
        assert_eq!(lease_owner("gcp", "w1"), "peer:gcp:w1");
    }

    /// A peer entry whose files are written into `dir` (`ca_file` etc. set by the caller).
    fn peer_in(dir: &Path) -> PeerConfig {
        std::fs::write(dir.join("peer.token"), "rly_peer\n").unwrap();
        PeerConfig {
            name: "aws".into(),
            url: "https://edge.example:8443/clusters/aws".into(),
            token_file: dir.join("peer.token"),
            ca_file: None,
            client_cert: None,
            client_key: None,
        }
    }

    fn config_error(cfg: &PeerConfig) -> String {
        match PeerClient::new(cfg, Duration::from_secs(1), false) {
            Err(e @ PeerError::Config { .. }) => {
                assert!(!e.is_transient());
                assert_eq!(e.code(), "peer_config");
                e.to_string()
            }
            Err(e) => panic!("not a config error: {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    /// The owner names presigned URLs; this worker goes only where a URL input may go.
    #[test]
    fn presigned_urls_are_checked_like_url_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let strict = PeerClient::new(&peer_in(dir.path()), Duration::from_secs(1), false).unwrap();
        for bad in [
            "http://169.254.169.254/latest/meta-data/",
            "http://127.0.0.1:9000/media/k?X-Amz-Signature=1",
            "http://10.0.0.7/media/k",
            "file:///etc/passwd",
            "https://user:pw@bucket.s3.example/k",
        ] {
            assert!(strict.presigned_url(bad).is_err(), "{bad}");
        }
        assert!(strict
            .presigned_url("https://bucket.s3.us-east-1.amazonaws.com/k?X-Amz-Signature=1")
            .is_ok());
        // A cluster allowed private URLs (tests, an S3 on loopback) takes a private bucket.
        let open = PeerClient::new(&peer_in(dir.path()), Duration::from_secs(1), true).unwrap();
        assert!(open
            .presigned_url("http://127.0.0.1:9000/media/k?X-Amz-Signature=1")
            .is_ok());
        assert!(open.presigned_url("file:///etc/passwd").is_err());
    }

    #[test]
    fn tls_files_are_checked_when_the_client_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["edge.example".to_string()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(d.join("ca.pem"), cert.pem()).unwrap();
        std::fs::write(d.join("leaf.pem"), cert.pem()).unwrap();
        std::fs::write(d.join("leaf.key"), key.serialize_pem()).unwrap();
        std::fs::write(d.join("junk.pem"), "not a certificate\n").unwrap();

        // Usable: no TLS files, a CA, a CA and a client certificate.
        let plain = peer_in(d);
        assert!(PeerClient::new(&plain, Duration::from_secs(1), false).is_ok());
        let mut ok = peer_in(d);
        ok.ca_file = Some(d.join("ca.pem"));
        assert!(PeerClient::new(&ok, Duration::from_secs(1), false).is_ok());
        ok.client_cert = Some(d.join("leaf.pem"));
        ok.client_key = Some(d.join("leaf.key"));
        assert!(PeerClient::new(&ok, Duration::from_secs(1), false).is_ok());

        // Each unusable file is named, with its setting.
        let mut c = peer_in(d);
        c.ca_file = Some(d.join("missing.pem"));
        let e = config_error(&c);
        assert!(
            e.contains("peer aws: ca_file") && e.contains("missing.pem"),
            "{e}"
        );
        c.ca_file = Some(d.join("junk.pem"));
        let e = config_error(&c);
        assert!(
            e.contains("junk.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
        let mut c = peer_in(d);
        c.client_cert = Some(d.join("leaf.pem"));
        assert!(config_error(&c).contains("go together"));
        c.client_key = Some(d.join("junk.pem"));
        let e = config_error(&c);
        assert!(e.contains("client_cert") && e.contains("junk.pem"), "{e}");
        c.client_key = Some(d.join("nokey.pem"));
        assert!(config_error(&c).contains("client_key"));
        let mut c = peer_in(d);
        c.token_file = d.join("nothing.token");
        assert!(config_error(&c).contains("token_file"));
        std::fs::write(d.join("empty.token"), "\n").unwrap();
        c.token_file = d.join("empty.token");
        assert!(config_error(&c).contains("empty"));
    }

    #[test]
    fn refusals_that_cannot_change_are_permanent() {
        let refused = |status| PeerError::Refused {
            peer: "aws".into(),
            status,
            code: "x".into(),
            message: String::new(),
        };
        assert!(!refused(403).is_transient());
        assert!(refused(503).is_transient());
        assert!(refused(429).is_transient());
        assert_eq!(refused(403).code(), "peer_refused");
    }
}
