"""schemathesis hooks for scripts/contract-test.sh.

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
