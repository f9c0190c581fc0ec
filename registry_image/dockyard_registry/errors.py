"""The OCI error-code table, the JSON error envelope, and the one translation from domain errors.

Owns: which HTTP status and code each failure gets. Must not: be imported by the store or the pure
grammar modules; they raise their own domain errors and only the HTTP edge (the middleware in app.py)
calls `translate`.
"""

from __future__ import annotations

import enum
import errno
import json
from typing import Any

from dockyard_registry import bodyfile, digest, manifests, reference, store, upstream


class Code(enum.Enum):
    """OCI distribution-spec error codes with their default HTTP status and message."""

    BLOB_UNKNOWN = (404, "blob unknown to registry")
    BLOB_UPLOAD_INVALID = (400, "blob upload invalid")
    BLOB_UPLOAD_UNKNOWN = (404, "blob upload unknown to registry")
    DIGEST_INVALID = (400, "provided digest did not match uploaded content")
    MANIFEST_BLOB_UNKNOWN = (400, "manifest references a manifest or blob unknown to registry")
    MANIFEST_INVALID = (400, "manifest invalid")
    MANIFEST_UNKNOWN = (404, "manifest unknown to registry")
    NAME_INVALID = (400, "invalid repository name")
    NAME_UNKNOWN = (404, "repository name not known to registry")
    # Not one of the spec's own codes (it allows others); Distribution answers a bad `n` with it.
    PAGINATION_NUMBER_INVALID = (400, "invalid number of results requested")
    SIZE_INVALID = (400, "provided length did not match content length")
    RANGE_INVALID = (416, "requested range not satisfiable")
    TAG_INVALID = (400, "manifest tag did not match URI")
    UNAUTHORIZED = (401, "authentication required")
    DENIED = (403, "requested access to the resource is denied")
    UNSUPPORTED = (405, "the operation is unsupported")
    TOO_MANY_REQUESTS = (429, "too many requests")
    UNKNOWN = (500, "unknown error")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def message(self) -> str:
        return self.value[1]

    @property
    def wire(self) -> str:
        """The code as the spec spells it in the envelope (`TOOMANYREQUESTS` has no underscores)."""
        return "TOOMANYREQUESTS" if self is Code.TOO_MANY_REQUESTS else self.name


class OciError(Exception):
    """An error already expressed in OCI terms; raised by handlers and auth, rendered by the middleware."""

    def __init__(
        self,
        code: Code,
        message: str | None = None,
        *,
        detail: Any = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or code.message)
        self.code = code
        self.message = message or code.message
        self.detail = detail
        self.status = status or code.status
        self.headers = headers or {}


_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})

# Domain error -> OCI code; the first matching class wins, so subclasses go first.
_TABLE: tuple[tuple[type[Exception], Code, int | None], ...] = (
    (store.BlobUnknownError, Code.BLOB_UNKNOWN, None),
    (store.UploadUnknownError, Code.BLOB_UPLOAD_UNKNOWN, None),
    (store.UploadInvalidError, Code.BLOB_UPLOAD_INVALID, None),
    # The body file nginx handed over is unreadable (gone, not a regular file): the upload is unchanged.
    (bodyfile.BodyFileError, Code.BLOB_UPLOAD_INVALID, None),
    # The spec's TOOMANYREQUESTS, not DENIED: the user may push, just not open another session now, and
    # Distribution-compatible clients show a 429's message instead of reporting a permission problem.
    (store.TooManyUploadsError, Code.TOO_MANY_REQUESTS, None),
    (store.RangeInvalidError, Code.RANGE_INVALID, None),
    (store.DigestMismatchError, Code.DIGEST_INVALID, None),
    (store.SizeMismatchError, Code.SIZE_INVALID, None),
    (store.ManifestUnknownError, Code.MANIFEST_UNKNOWN, None),
    (store.ManifestBlobUnknownError, Code.MANIFEST_BLOB_UNKNOWN, None),
    (store.NameUnknownError, Code.NAME_UNKNOWN, None),
    (manifests.ManifestInvalidError, Code.MANIFEST_INVALID, None),
    (reference.NameInvalidError, Code.NAME_INVALID, None),
    (reference.TagInvalidError, Code.TAG_INVALID, None),
    (digest.DigestUnsupportedError, Code.UNSUPPORTED, 400),
    (digest.DigestInvalidError, Code.DIGEST_INVALID, None),
    # A mirror's upstream failed (unreachable, refused our credentials, sent the wrong bytes) and nothing
    # cached could stand in: the registry is a gateway here, and the message says which upstream and why.
    (upstream.UpstreamError, Code.UNKNOWN, 502),
)


def translate(exc: Exception) -> OciError | None:
    """The OCI form of a domain error, or None when the exception is not one we know (a bug: 500)."""
    if isinstance(exc, OciError):
        return exc
    if isinstance(exc, store.StorageUnavailableError):
        # The bucket's endpoint is down or restarting: retryable, and nothing of the request was kept.
        return OciError(
            Code.UNKNOWN, "registry storage is unavailable; retry", status=503, headers={"Retry-After": "5"}
        )
    if isinstance(exc, OSError) and exc.errno in _FULL:
        # Not the client's fault and not a bug: say so, so operators look at the volume, not the code.
        return OciError(Code.UNKNOWN, "registry storage is full", status=507)
    for cls, code, status in _TABLE:
        if isinstance(exc, cls):
            detail = getattr(exc, "detail", None)
            return OciError(code, str(exc) or code.message, detail=detail, status=status)
    return None


def envelope(err: OciError) -> bytes:
    entry: dict[str, Any] = {"code": err.code.wire, "message": err.message}
    if err.detail is not None:
        entry["detail"] = err.detail
    return json.dumps({"errors": [entry]}).encode()
