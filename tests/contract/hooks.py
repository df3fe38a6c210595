"""schemathesis hooks for scripts/contract-test.sh (the API run and the remote-claim run).

A multipart submission must send its `spec` part before its `file` part (the server validates the
spec before it streams gigabytes of video to disk), an order OpenAPI cannot state and
schemathesis does not keep (it sends required parts alphabetically: file first). Every generated
multipart body is sent with `spec` first, as the document's description says; nothing else about
the case changes.
"""

import schemathesis


@schemathesis.hook
def map_case(context, case):
    if (case.media_type or "").startswith("multipart/") and isinstance(case.body, dict) and "spec" in case.body:
        case.body = {"spec": case.body["spec"], **{k: v for k, v in case.body.items() if k != "spec"}}
    return case


@schemathesis.serializer("application/offset+octet-stream")
def offset_octet_stream(ctx, value):
    """A tus PATCH body is raw bytes, like application/octet-stream."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


@schemathesis.serializer("application/x-subrip", "text/vtt", "image/png", "image/jpeg")
def caption_and_watermark_bytes(ctx, value):
    """The media types a submission's `captions` and `watermark` parts are documented with: raw
    bytes. Without a serializer schemathesis reported POST /v1/jobs as an error ("Serialization
    not possible ... application/x-subrip") on the seeds whose fuzzing picked one."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


@schemathesis.serializer("video/mp4")
def video_bytes(ctx, value):
    """The `file` part's encoding allows `video/*`, a range schemathesis sends as a registered
    type of that family and has none of its own: without one, a stateful scenario that picked it
    ended as "Serialization not possible ... 'video/*'" (CI, seed
    132958162157048559038035521227365804954). The part is raw bytes, sent as video/mp4."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")
