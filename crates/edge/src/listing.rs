//! `GET /v1/jobs` across clusters: one page merged from every cluster's newest-first list.
//!
//! Job ids are `{cluster}.{ULID}` and ULIDs sort by creation time, so "newest first" across
//! clusters means ordering by the ULID part (ordering by the whole id would list every `gcp`
//! job before any `aws` one). The merged page's cursor is the last job id shown; each cluster is
//! then asked for the jobs older than that instant, written with its own prefix because a
//! cluster compares cursors against its own ids.
//!
//! A cluster that could not be asked (the health checks say it is down) or did not answer is
//! named in the page's `missing_clusters` (and `partial` is set): a listing never leaves a
//! cloud's jobs out without saying so (issue 12, finding 9).

use reelay_protocol::{JobList, JobView};

fn ulid_of(id: &str) -> &str {
    id.split_once('.').map_or(id, |(_, u)| u)
}

fn cluster_of(id: &str) -> &str {
    id.split_once('.').map_or("", |(c, _)| c)
}

/// The cursor to send to `cluster` for a merged-page cursor (a job id of any cluster).
pub fn cluster_cursor(merged: &str, cluster: &str) -> String {
    format!("{cluster}.{}", ulid_of(merged))
}

/// Newest first (by ULID, then by cluster name so that the order is total), at most `limit`.
/// `more` tells whether any cluster said it had further pages.
pub fn merge(pages: Vec<Vec<JobView>>, limit: usize, more: bool) -> (Vec<JobView>, Option<String>) {
    let mut jobs: Vec<JobView> = pages.into_iter().flatten().collect();
    jobs.sort_by(|a, b| {
        ulid_of(&b.id)
            .cmp(ulid_of(&a.id))
            .then_with(|| cluster_of(&b.id).cmp(cluster_of(&a.id)))
    });
    let truncated = jobs.len() > limit;
    jobs.truncate(limit);
    let next = if truncated || more {
        jobs.last().map(|j| j.id.clone())
    } else {
        None
    };
    (jobs, next)
}

/// The merged page: `pages` of the clusters that answered, `missing` those that were down or did
/// not answer.
pub fn page(pages: Vec<Vec<JobView>>, missing: Vec<String>, limit: usize, more: bool) -> JobList {
    let (jobs, next_cursor) = merge(pages, limit, more);
    JobList::with_missing(jobs, next_cursor, missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reelay_protocol::JobStatus;

    fn job(id: &str) -> JobView {
        JobView {
            id: id.to_string(),
            cluster: cluster_of(id).to_string(),
            status: JobStatus::Queued,
            progress: 0.0,
            attempts: 0,
            created_at: String::new(),
            started_at: None,
            finished_at: None,
            error: None,
            outputs: vec![],
            deleted_at: None,
            playable_at: None,
            split: None,
            tasks: vec![],
            metadata: Default::default(),
            input: None,
            requested_outputs: vec![],
            timings: None,
        }
    }

    fn ids(jobs: &[JobView]) -> Vec<&str> {
        jobs.iter().map(|j| j.id.as_str()).collect()
    }

    #[test]
    fn pages_interleave_by_time_not_by_cluster_name() {
        let aws = vec![
            job("aws.01J00000000000000000000003"),
            job("aws.01J00000000000000000000001"),
        ];
        let gcp = vec![
            job("gcp.01J00000000000000000000004"),
            job("gcp.01J00000000000000000000002"),
        ];
        let (jobs, next) = merge(vec![aws.clone(), gcp.clone()], 10, false);
        assert_eq!(
            ids(&jobs),
            vec![
                "gcp.01J00000000000000000000004",
                "aws.01J00000000000000000000003",
                "gcp.01J00000000000000000000002",
                "aws.01J00000000000000000000001"
            ]
        );
        assert_eq!(next, None);
        let (jobs, next) = merge(vec![aws, gcp], 3, false);
        assert_eq!(jobs.len(), 3);
        assert_eq!(next.as_deref(), Some("gcp.01J00000000000000000000002"));
    }

    #[test]
    fn a_cluster_with_more_pages_keeps_the_cursor() {
        let (jobs, next) = merge(
            vec![vec![job("aws.01J00000000000000000000003")], vec![]],
            5,
            true,
        );
        assert_eq!(jobs.len(), 1);
        assert_eq!(next.as_deref(), Some("aws.01J00000000000000000000003"));
        let (jobs, next) = merge(vec![vec![], vec![]], 5, true);
        assert!(jobs.is_empty());
        assert_eq!(next, None);
    }

    #[test]
    fn a_page_without_a_cluster_says_which() {
        let gcp = vec![job("gcp.01J00000000000000000000002")];
        let whole = page(vec![gcp.clone()], vec![], 10, false);
        assert!(!whole.partial && whole.missing_clusters.is_empty());
        let part = page(vec![gcp], vec!["aws".into()], 10, false);
        assert!(part.partial);
        assert_eq!(part.missing_clusters, ["aws"]);
        assert_eq!(part.jobs.len(), 1);
    }

    #[test]
    fn cursors_are_rewritten_per_cluster() {
        assert_eq!(
            cluster_cursor("gcp.01J00000000000000000000002", "aws"),
            "aws.01J00000000000000000000002"
        );
    }
}
