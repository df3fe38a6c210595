//! Reading request bodies with time limits, and telling apart why a read failed.
//!
//! hyper bounds how long a client may take to send a request's headers, but not its body: a
//! client that announces a Content-Length and sends less, or starts a multipart upload and
//! stops, would hold its connection (and a file descriptor, and a task) for ever. So the
//! listener wraps every request body in a [`TimedBody`]: nothing may arrive for longer than the
//! idle timeout while the body is being read, and the whole body must be in by a deadline.
//!
//! When a read fails, [`BodyError::of`] finds out why, so that each cause gets its own answer:
//! only a body that really is too large is a 413; a stalled one is a 408 and one that ends early
//! or breaks off is a 400.

use crate::error::{ApiError, ErrorCode};
use axum::http::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use hyper::body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long request bodies may take (`body_idle_timeout_seconds`, `body_deadline_seconds`,
/// `upload_deadline_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Longest wait for the next bytes of a body that is being read.
    pub idle: Duration,
    /// A non-upload body (JSON), and the `spec` part of an upload, must be complete this long
    /// after the request's headers.
    pub deadline: Duration,
    /// A multipart upload must be complete this long after the request's headers.
    pub upload_deadline: Duration,
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits {
            idle: Duration::from_secs(30),
            deadline: Duration::from_secs(60),
            upload_deadline: Duration::from_secs(3600),
        }
    }
}

impl BodyLimits {
    /// The total deadline for a request with these headers: uploads (multipart, and tus PATCH
    /// bodies) get the long one, everything else the short one.
    pub fn deadline_for(&self, headers: &HeaderMap) -> Duration {
        let multipart = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let v = v.trim_start().to_ascii_lowercase();
                v.starts_with("multipart/") || v.starts_with(crate::tus::OFFSET_CONTENT_TYPE)
            });
        if multipart {
            self.upload_deadline
        } else {
            self.deadline
        }
    }
}

/// The body read was cut off by a time limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyTimeout {
    #[error("the request body stalled: nothing arrived for {} s", .0.as_secs())]
    Idle(Duration),
    #[error("the request body was not complete within {} s", .0.as_secs())]
    Deadline(Duration),
}

/// A request body with an idle timeout and a total deadline (see the module documentation).
pub struct TimedBody<B> {
    inner: B,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    /// Whether the idle timer runs: only while the reader waits for bytes, so a handler that
    /// takes its time between reads (writing a chunk to disk) is not blamed on the client.
    waiting: bool,
    deadline: Pin<Box<Sleep>>,
    total: Duration,
}

impl<B> TimedBody<B> {
    /// `deadline` counts from now (the request's headers have just been read).
    pub fn new(inner: B, idle: Duration, deadline: Duration) -> TimedBody<B> {
        let now = Instant::now();
        TimedBody {
            inner,
            idle,
            idle_timer: Box::pin(tokio::time::sleep_until(now + idle)),
            waiting: false,
            deadline: Box::pin(tokio::time::sleep_until(now + deadline)),
            total: deadline,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        // First, so that a body which keeps dripping (and so never idles) still ends.
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout::Deadline(this.total)))));
        }
        if !this.waiting {
            this.waiting = true;
            let at = Instant::now() + this.idle;
            this.idle_timer.as_mut().reset(at);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.idle_timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout::Idle(this.idle))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why reading a request body failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// More bytes than the limit: the only case that is a 413.
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error(transparent)]
    TimedOut(BodyTimeout),
    /// The client closed early, sent a broken chunked encoding, or the connection failed.
    #[error("the request body ended before it was complete or could not be read")]
    Incomplete,
}

impl BodyError {
    /// Classifies a body read error by what is in its source chain: a [`BodyTimeout`] from the
    /// listener's [`TimedBody`], otherwise a broken body.
    pub fn of(err: &(dyn std::error::Error + 'static)) -> BodyError {
        let mut cur = Some(err);
        while let Some(e) = cur {
            if let Some(t) = e.downcast_ref::<BodyTimeout>() {
                return BodyError::TimedOut(*t);
            }
            cur = e.source();
        }
        BodyError::Incomplete
    }

    /// Whether `err`'s chain holds a body read failure (as opposed to, say, a malformed
    /// multipart framing, which the caller reports itself).
    pub fn is_read_failure(err: &(dyn std::error::Error + 'static)) -> bool {
        let mut cur = Some(err);
        while let Some(e) = cur {
            if e.downcast_ref::<BodyTimeout>().is_some()
                || e.downcast_ref::<hyper::Error>().is_some()
            {
                return true;
            }
            cur = e.source();
        }
        false
    }

    /// The answer for the client; `too_large_code` names what was too large.
    pub fn into_api(self, too_large_code: ErrorCode) -> ApiError {
        match self {
            BodyError::TooLarge(_) => ApiError::new(too_large_code, self.to_string()),
            BodyError::TimedOut(t) => ApiError::new(ErrorCode::BodyTimeout, t.to_string()),
            BodyError::Incomplete => ApiError::new(ErrorCode::BodyIncomplete, self.to_string()),
        }
    }
}

/// Reads a whole (small) body, refusing more than `limit` bytes.
pub async fn read_to_limit(body: axum::body::Body, limit: usize) -> Result<Bytes, BodyError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::of(&e))?;
        if buf.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, StatusCode};

    /// A body whose chunks arrive after the given pauses.
    fn chunks(parts: Vec<(u64, &'static str)>) -> axum::body::Body {
        let s = futures::stream::iter(parts).then(|(ms, text)| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, std::convert::Infallible>(Bytes::from_static(text.as_bytes()))
        });
        axum::body::Body::from_stream(s)
    }

    async fn collect(mut b: TimedBody<axum::body::Body>) -> Result<String, BodyError> {
        let mut out = String::new();
        while let Some(frame) = futures::future::poll_fn(|cx| Pin::new(&mut b).poll_frame(cx)).await
        {
            let frame = frame.map_err(|e| BodyError::of(&*e))?;
            if let Ok(data) = frame.into_data() {
                out.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
        Ok(out)
    }

    // Real time, in tenths of a second (tokio's paused clock needs its test-util feature).
    const IDLE: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn timely_bodies_pass_through() {
        let b = TimedBody::new(
            chunks(vec![(100, "ab"), (200, "cd")]),
            IDLE,
            Duration::from_secs(5),
        );
        assert_eq!(collect(b).await.unwrap(), "abcd");
    }

    #[tokio::test]
    async fn a_pause_longer_than_the_idle_timeout_ends_the_body() {
        let b = TimedBody::new(
            chunks(vec![(50, "ab"), (1000, "cd")]),
            IDLE,
            Duration::from_secs(60),
        );
        assert_eq!(
            collect(b).await,
            Err(BodyError::TimedOut(BodyTimeout::Idle(IDLE)))
        );
    }

    #[tokio::test]
    async fn a_body_that_keeps_dripping_meets_the_deadline() {
        let drip: Vec<(u64, &str)> = (0..100).map(|_| (100, "x")).collect();
        let deadline = Duration::from_millis(700);
        let started = std::time::Instant::now();
        let b = TimedBody::new(chunks(drip), IDLE, deadline);
        assert_eq!(
            collect(b).await,
            Err(BodyError::TimedOut(BodyTimeout::Deadline(deadline)))
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn uploads_get_the_long_deadline() {
        let limits = BodyLimits::default();
        let mut h = HeaderMap::new();
        assert_eq!(limits.deadline_for(&h), limits.deadline);
        h.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("Multipart/Form-Data; boundary=x"),
        );
        assert_eq!(limits.deadline_for(&h), limits.upload_deadline);
        h.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert_eq!(limits.deadline_for(&h), limits.deadline);
    }

    #[test]
    fn only_an_overflow_is_413() {
        assert_eq!(
            BodyError::TooLarge(10).into_api(ErrorCode::TooLarge).status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            BodyError::TimedOut(BodyTimeout::Idle(Duration::from_secs(1)))
                .into_api(ErrorCode::TooLarge)
                .status,
            StatusCode::REQUEST_TIMEOUT
        );
        assert_eq!(
            BodyError::Incomplete.into_api(ErrorCode::TooLarge).status,
            StatusCode::BAD_REQUEST
        );
        let wrapped = axum::Error::new(BodyTimeout::Deadline(Duration::from_secs(2)));
        assert_eq!(
            BodyError::of(&wrapped),
            BodyError::TimedOut(BodyTimeout::Deadline(Duration::from_secs(2)))
        );
        assert_eq!(
            BodyError::of(&std::io::Error::other("reset")),
            BodyError::Incomplete
        );
    }
}
