//! A short memory of the edge's positive token checks.
//!
//! nginx asks the controller about every `/v1` request (`auth_request`), and checking a signed
//! token (base64, JSON, an Ed25519 signature) was most of the controller's CPU per status read
//! (docs/benchmarks.md, "Data plane with wrk"). A client reading a job's status sends the same
//! token many times a second, so the controller remembers, for at most [`TTL_MS`], that a
//! (token, scope) pair was allowed.
//!
//! What keeps this as strict as checking every time:
//! - **Only allowed answers are kept.** A refusal is not remembered: refusals are what an
//!   attacker sends, remembering them would let junk fill the memory, and a token that becomes
//!   valid (a key added, a clock caught up) must work on its next request.
//! - **Never past the token's own expiry**: an entry lives until the earlier of `now + TTL_MS`
//!   and the token's `exp`, and not at all if the clock is set back before the check.
//! - **Forgotten entirely when what the answer depended on changes**: the caller
//!   [`invalidate`](AuthCache::invalidate)s after adding revocations or reloading keys. The
//!   generation counter closes the race where a check computed against the old revocations
//!   stores its answer after the invalidation: such an answer is dropped.
//! - **No token is kept**: the key is SHA-256 of the scope and the raw `Authorization` value, in
//!   memory only (nginx's `proxy_cache` was rejected because it wrote tokens into files).
//! - **Bounded**: at most [`MAX_ENTRIES`]; when full, expired entries go, and if that frees less
//!   than a quarter everything goes. Many distinct valid tokens cost CPU (checks as without the
//!   cache), never memory, and each full sweep is paid for by the inserts that filled the room.
//!
//! Time is passed in (Unix milliseconds); nothing here reads a clock.

use reelay_identity::Scope;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// How long an allowed answer is reused. Short enough that nothing the edge does not learn
/// about through revocations or keys (which invalidate at once) outlives a blink; long enough
/// that a client polling a job reuses it. Not configurable: no deployment has asked for
/// another value, and a longer one would only widen what a cache can get wrong.
pub const TTL_MS: u64 = 2_000;

/// Under 100 bytes an entry (a 32-byte key, two times, the table's overhead): < 0.5 MB at most.
pub const MAX_ENTRIES: usize = 4_096;

/// What an entry is found by: a hash, never the token.
pub type CacheKey = [u8; 32];

/// The key of one check: the scope (the same token may hold `read` but not `submit`) and the
/// header exactly as sent.
pub fn cache_key(authorization: &str, need: Scope) -> CacheKey {
    let mut h = Sha256::new();
    h.update(need.as_str().as_bytes());
    h.update([0u8]);
    h.update(authorization.as_bytes());
    h.finalize().into()
}

#[derive(Debug)]
pub struct AuthCache {
    /// Key → the Unix ms span `[from, until)` in which the answer "allowed" holds: a clock set
    /// back does not stretch an entry's life.
    entries: HashMap<CacheKey, (u64, u64)>,
    generation: u64,
    ttl_ms: u64,
    max_entries: usize,
    stats: CacheStats,
}

/// Lookups since start, for `/edge/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Answered from memory.
    pub hits: u64,
    /// Checked in full (not remembered, expired, or a refusal).
    pub misses: u64,
}

impl Default for AuthCache {
    fn default() -> Self {
        AuthCache::new(TTL_MS, MAX_ENTRIES)
    }
}

impl AuthCache {
    pub fn new(ttl_ms: u64, max_entries: usize) -> AuthCache {
        AuthCache {
            entries: HashMap::new(),
            generation: 0,
            ttl_ms,
            max_entries: max_entries.max(1),
            stats: CacheStats::default(),
        }
    }

    /// The generation to hand back to [`insert`](Self::insert); read it before reading the
    /// keys and revocations the check uses.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether `key` was allowed and still is at `now_ms`.
    pub fn allowed(&self, key: &CacheKey, now_ms: u64) -> bool {
        self.entries
            .get(key)
            .is_some_and(|&(from, until)| (from..until).contains(&now_ms))
    }

    /// [`allowed`](Self::allowed), counted as a hit or a miss.
    pub fn lookup(&mut self, key: Option<&CacheKey>, now_ms: u64) -> bool {
        let hit = key.is_some_and(|k| self.allowed(k, now_ms));
        if hit {
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
        }
        hit
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Remembers an allowed check made at `now_ms` with the state of `generation`, for a token
    /// valid until `token_expiry` (Unix seconds; `u64::MAX` if it never expires). Ignored if
    /// the state changed since.
    pub fn insert(&mut self, key: CacheKey, generation: u64, token_expiry: u64, now_ms: u64) {
        if generation != self.generation {
            return;
        }
        let until = now_ms
            .saturating_add(self.ttl_ms)
            .min(token_expiry.saturating_mul(1000));
        if until <= now_ms {
            return;
        }
        if self.entries.len() >= self.max_entries && !self.entries.contains_key(&key) {
            self.entries
                .retain(|_, &mut (from, until)| (from..until).contains(&now_ms));
            if self.entries.len() > self.max_entries - self.max_entries / 4 {
                self.entries.clear();
            }
        }
        self.entries.insert(key, (now_ms, until));
    }

    /// Forgets every answer: the revocations or the trusted keys changed.
    pub fn invalidate(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEVER: u64 = u64::MAX;

    #[test]
    fn an_allowed_check_is_reused_until_the_ttl_ends() {
        let mut c = AuthCache::new(2_000, 16);
        let k = cache_key("Bearer a", Scope::Read);
        assert!(!c.allowed(&k, 1_000_000));
        c.insert(k, c.generation(), NEVER, 1_000_000);
        assert!(c.allowed(&k, 1_000_000));
        assert!(c.allowed(&k, 1_001_999));
        assert!(!c.allowed(&k, 1_002_000), "expired after the TTL");
        assert!(
            !c.allowed(&k, 999_999),
            "a clock set back does not stretch it"
        );
        // Another scope or another header is another question.
        assert!(!c.allowed(&cache_key("Bearer a", Scope::Submit), 1_000_000));
        assert!(!c.allowed(&cache_key("Bearer a ", Scope::Read), 1_000_000));
        // Counted.
        assert!(c.lookup(Some(&k), 1_000_001));
        assert!(!c.lookup(Some(&k), 1_002_001));
        assert!(!c.lookup(None, 1_000_001));
        assert_eq!(c.stats(), CacheStats { hits: 1, misses: 2 });
    }

    #[test]
    fn never_past_the_tokens_own_expiry() {
        let mut c = AuthCache::new(2_000, 16);
        let k = cache_key("Bearer a", Scope::Read);
        // The token expires at 1 001 s: 500 ms after the check.
        c.insert(k, c.generation(), 1_001, 1_000_500);
        assert!(c.allowed(&k, 1_000_999));
        assert!(!c.allowed(&k, 1_001_000));
        // Already expired: nothing stored.
        let k2 = cache_key("Bearer b", Scope::Read);
        c.insert(k2, c.generation(), 1_000, 1_000_500);
        assert!(!c.allowed(&k2, 1_000_500));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn invalidation_forgets_everything_and_refuses_late_answers() {
        let mut c = AuthCache::new(2_000, 16);
        let k = cache_key("Bearer a", Scope::Read);
        let before = c.generation();
        c.insert(k, before, NEVER, 0);
        assert!(c.allowed(&k, 1));
        c.invalidate();
        assert!(!c.allowed(&k, 1));
        assert!(c.is_empty());
        // A check that read the old revocations finishes after the invalidation: dropped.
        c.insert(k, before, NEVER, 1);
        assert!(!c.allowed(&k, 1));
        c.insert(k, c.generation(), NEVER, 1);
        assert!(c.allowed(&k, 1));
    }

    #[test]
    fn many_distinct_tokens_never_grow_it_past_the_bound() {
        let mut c = AuthCache::new(2_000, 64);
        for i in 0..10_000u32 {
            let k = cache_key(&format!("Bearer t{i}"), Scope::Read);
            c.insert(k, c.generation(), NEVER, u64::from(i));
            assert!(c.len() <= 64);
            assert!(c.allowed(&k, u64::from(i)), "the newest answer is kept");
        }
        // Expired entries make room before anything live is dropped.
        let mut c = AuthCache::new(10, 4);
        for i in 0..4u8 {
            c.insert([i; 32], c.generation(), NEVER, u64::from(i)); // until 10, 11, 12, 13
        }
        c.insert([9; 32], c.generation(), NEVER, 11);
        assert_eq!(
            c.len(),
            3,
            "the two expired entries went, the live ones stayed"
        );
        assert!([[2; 32], [3; 32], [9; 32]].iter().all(|k| c.allowed(k, 11)));
        // Re-inserting a present key when full drops nothing.
        c.insert([7; 32], c.generation(), NEVER, 11);
        c.insert([7; 32], c.generation(), NEVER, 11);
        assert_eq!(c.len(), 4);
        // Full of live entries: all go (each such sweep is paid for by a quarter of inserts).
        c.insert([6; 32], c.generation(), NEVER, 11);
        assert_eq!(c.len(), 1);
        assert!(c.allowed(&[6; 32], 11));
    }

    #[test]
    fn the_key_is_a_hash_not_the_token() {
        let header = "Bearer rly2.secret-part";
        let k = cache_key(header, Scope::Read);
        assert!(!k
            .windows(6)
            .any(|w| header.as_bytes().windows(6).any(|h| h == w)));
        assert_ne!(k, cache_key(header, Scope::Peer));
    }
}
