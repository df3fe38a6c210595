//! Request bodies that a handler answered without reading to the end.
//!
//! A handler that refuses a request early (a 401 before the upload, a multipart body with the
//! file before the spec, a JSON body over its limit) returns while the client is still sending.
//! Closing the connection then is what broke the edge (issue 12, finding 4): the kernel answers
//! unread bytes on a closed socket with a TCP reset, and a proxy that is still writing the body
//! (the edge's nginx streams uploads, `proxy_request_buffering off`) gets `EPIPE`/`ECONNRESET`
//! before it has read the answer, tells its client 502 and counts the cluster as failed. So the
//! answer goes out at once and the rest of the body is read and thrown away beside it, within a
//! [`DrainBudget`]: nginx stops sending and closes as soon as it has the answer (a few MiB in
//! flight at most), an ordinary client finishes its request and the connection stays usable,
//! and a client that keeps sending (or stalls) past the budget is cut off.

use axum::body::{Body, BodyDataStream, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// How much of a refused request's body is read (and thrown away) after the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainBudget {
    /// More than this and the connection is closed. Generous: behind nginx only what is in
    /// flight when the answer arrives gets here.
    pub max_bytes: u64,
    /// A client that sends nothing for this long is not waited for.
    pub idle: Duration,
    /// Nor one that is still sending after this long.
    pub total: Duration,
}

impl Default for DrainBudget {
    fn default() -> Self {
        DrainBudget {
            max_bytes: 64 << 20,
            idle: Duration::from_secs(5),
            total: Duration::from_secs(30),
        }
    }
}

/// Why the rest of a body was not read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutOff {
    TooManyBytes,
    TooLong,
    Idle,
}

impl DrainBudget {
    /// How long to wait for the next chunk, `read` bytes and `elapsed` time into the drain, or
    /// why to stop now.
    pub fn next_wait(&self, read: u64, elapsed: Duration) -> Result<Duration, CutOff> {
        if read > self.max_bytes {
            return Err(CutOff::TooManyBytes);
        }
        match self.total.checked_sub(elapsed) {
            Some(left) if !left.is_zero() => Ok(left.min(self.idle)),
            _ => Err(CutOff::TooLong),
        }
    }

    /// What an expired wait means: the total ran out, or the client went quiet.
    pub fn expired(&self, elapsed: Duration) -> CutOff {
        if elapsed >= self.total {
            CutOff::TooLong
        } else {
            CutOff::Idle
        }
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// The body ended (or the peer went away): the connection is in a clean state.
    Complete {
        bytes: u64,
    },
    CutOff {
        bytes: u64,
        why: CutOff,
    },
}

/// Reads `rest` to its end within `budget`, throwing the bytes away.
pub async fn discard<S>(mut rest: S, budget: DrainBudget) -> Drained
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Unpin,
{
    let started = Instant::now();
    let mut bytes = 0u64;
    loop {
        let wait = match budget.next_wait(bytes, started.elapsed()) {
            Ok(wait) => wait,
            Err(why) => return Drained::CutOff { bytes, why },
        };
        match tokio::time::timeout(wait, rest.next()).await {
            Ok(Some(Ok(chunk))) => bytes += chunk.len() as u64,
            // The end, or the peer closed: either way nothing is left to read.
            Ok(None) | Ok(Some(Err(_))) => return Drained::Complete { bytes },
            Err(_) => {
                return Drained::CutOff {
                    bytes,
                    why: budget.expired(started.elapsed()),
                }
            }
        }
    }
}

/// What a handler left of a body when it dropped it.
struct Leftover {
    rest: BodyDataStream,
    /// Whether the handler read from it at all (which sends `100 Continue` when asked for).
    touched: bool,
}

/// The request body as the handler sees it: passes every chunk on and, when dropped before the
/// end, hands what is left back to [`finish_reading`].
struct Watched {
    rest: Option<BodyDataStream>,
    slot: Arc<Mutex<Option<Leftover>>>,
    touched: bool,
    ended: bool,
}

impl Stream for Watched {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(rest) = this.rest.as_mut() else {
            return Poll::Ready(None);
        };
        this.touched = true;
        let item = rest.poll_next_unpin(cx);
        if matches!(item, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.ended = true;
        }
        item
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(rest) = self.rest.take() {
            if !self.ended && !rest.is_end_stream() {
                let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
                *slot = Some(Leftover {
                    rest,
                    touched: self.touched,
                });
            }
        }
    }
}

/// Middleware around every route: answers go out as the handler returns them, and whatever
/// the handler left unread of the request body is read to the end in the background (within
/// [`DrainBudget::default`]), so the connection is never closed on bytes still arriving.
pub async fn finish_reading(req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    // A client that asked for `100 Continue` and never got it sends no body after a final
    // answer: nothing to wait for.
    let expects_continue = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let slot = Arc::new(Mutex::new(None));
    let (parts, body) = req.into_parts();
    let watched = Watched {
        rest: Some(body.into_data_stream()),
        slot: slot.clone(),
        touched: false,
        ended: false,
    };
    let resp = next
        .run(Request::from_parts(parts, Body::from_stream(watched)))
        .await;
    let left = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(left) = left.filter(|l| l.touched || !expects_continue) {
        let status = resp.status();
        tokio::spawn(async move {
            match discard(left.rest, DrainBudget::default()).await {
                Drained::Complete { bytes } => tracing::debug!(
                    %status,
                    bytes,
                    "read and discarded the rest of an answered request body"
                ),
                Drained::CutOff { bytes, why } => tracing::debug!(
                    %status,
                    bytes,
                    ?why,
                    "stopped reading an answered request body; closing the connection"
                ),
            }
        });
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_bounds_bytes_idle_time_and_total_time() {
        let b = DrainBudget {
            max_bytes: 100,
            idle: Duration::from_secs(5),
            total: Duration::from_secs(30),
        };
        assert_eq!(b.next_wait(0, Duration::ZERO), Ok(Duration::from_secs(5)));
        assert_eq!(
            b.next_wait(100, Duration::from_secs(10)),
            Ok(Duration::from_secs(5))
        );
        // Near the end of the total, the wait shrinks to what is left.
        assert_eq!(
            b.next_wait(50, Duration::from_secs(28)),
            Ok(Duration::from_secs(2))
        );
        assert_eq!(b.next_wait(101, Duration::ZERO), Err(CutOff::TooManyBytes));
        assert_eq!(
            b.next_wait(0, Duration::from_secs(30)),
            Err(CutOff::TooLong)
        );
        assert_eq!(
            b.next_wait(0, Duration::from_secs(31)),
            Err(CutOff::TooLong)
        );
        assert_eq!(b.expired(Duration::from_secs(7)), CutOff::Idle);
        assert_eq!(b.expired(Duration::from_secs(30)), CutOff::TooLong);
    }

    fn chunks(n: usize, size: usize) -> impl Stream<Item = Result<Bytes, axum::Error>> + Unpin {
        futures::stream::iter((0..n).map(move |_| Ok(Bytes::from(vec![0u8; size]))))
    }

    #[tokio::test]
    async fn a_body_within_the_budget_is_read_to_the_end() {
        let d = discard(chunks(10, 1000), DrainBudget::default()).await;
        assert_eq!(d, Drained::Complete { bytes: 10_000 });
    }

    #[tokio::test]
    async fn a_body_over_the_budget_is_cut_off() {
        let budget = DrainBudget {
            max_bytes: 2500,
            ..DrainBudget::default()
        };
        let d = discard(chunks(10, 1000), budget).await;
        assert_eq!(
            d,
            Drained::CutOff {
                bytes: 3000,
                why: CutOff::TooManyBytes
            }
        );
    }

    #[tokio::test]
    async fn a_client_that_stalls_is_not_waited_for() {
        let budget = DrainBudget {
            idle: Duration::from_millis(50),
            ..DrainBudget::default()
        };
        let stalled = chunks(1, 10).chain(futures::stream::pending());
        let d = discard(Box::pin(stalled), budget).await;
        assert_eq!(
            d,
            Drained::CutOff {
                bytes: 10,
                why: CutOff::Idle
            }
        );
    }
}
