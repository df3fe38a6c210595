//! One tus PATCH per upload at a time in this process.
//!
//! An append commits by writing its part only if no part exists at that offset
//! (`Storage::put_if_absent`), which S3, GCS and the local store decide atomically, so replicas
//! racing on one upload already commit once. Within one process that atomicity is not relied
//! on: a second PATCH of an upload whose PATCH is still streaming is answered 409 at once (tus
//! clients HEAD and resume), instead of racing the first to the same part. This also keeps a
//! storage stand-in whose conditional put checks then writes (s3s-fs) from committing twice.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Upload ids with a PATCH in flight.
#[derive(Debug, Default)]
pub struct PatchLocks(Mutex<HashSet<String>>);

/// Held while a PATCH runs; dropping it (also on error or a dropped request) frees the upload.
#[derive(Debug)]
pub struct PatchGuard {
    locks: Arc<PatchLocks>,
    id: String,
}

impl PatchLocks {
    /// `None` when another PATCH of `id` holds it.
    pub fn try_acquire(self: &Arc<Self>, id: &str) -> Option<PatchGuard> {
        let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
        held.insert(id.to_string()).then(|| PatchGuard {
            locks: Arc::clone(self),
            id: id.to_string(),
        })
    }
}

impl Drop for PatchGuard {
    fn drop(&mut self) {
        let mut held = self.locks.0.lock().unwrap_or_else(|p| p.into_inner());
        held.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_patch_per_upload_until_it_ends() {
        let locks = Arc::new(PatchLocks::default());
        let a = locks.try_acquire("u1").expect("free");
        assert!(locks.try_acquire("u1").is_none(), "held by the first PATCH");
        let b = locks
            .try_acquire("u2")
            .expect("another upload is independent");
        drop(a);
        assert!(
            locks.try_acquire("u1").is_some(),
            "freed when the first ended"
        );
        drop(b);
        assert!(locks.0.lock().unwrap().is_empty());
    }
}
