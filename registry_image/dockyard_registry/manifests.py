"""Manifest parsing: which media types we accept and what a manifest references.

Owns: turning the exact bytes a client PUT into a `Manifest` (media type, referenced blobs and child
manifests, subject, artifactType, annotations). Must not: do I/O or re-encode the bytes; the store keeps
and serves the client's exact bytes, since their digest is the manifest's identity.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from dockyard_registry import digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MEDIA_TYPES = IMAGE_TYPES | INDEX_TYPES
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


class ManifestInvalidError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: digest.Digest
    size: int
    artifact_type: str | None = None
    annotations: Mapping[str, str] | None = None
    urls: tuple[str, ...] = ()
    # A foreign (nondistributable) layer with `urls`: clients fetch it from there, so the repository
    # need not hold it (Distribution's rule). Any other descriptor, `urls` or not, must be in the
    # repository; whether `urls` are accepted at all is the store's policy.
    external: bool = False


@dataclasses.dataclass(frozen=True)
class Manifest:
    media_type: str
    blobs: tuple[Descriptor, ...]  # config + layers of an image manifest
    manifests: tuple[Descriptor, ...]  # children of an index
    subject: Descriptor | None
    artifact_type: str | None  # for the referrers API (image: falls back to config.mediaType)
    annotations: Mapping[str, str] | None

    def required_blobs(self) -> tuple[digest.Digest, ...]:
        return tuple(d.digest for d in self.blobs if not d.external)


def parse(data: bytes, *, content_type: str | None, strict: bool = True) -> Manifest:
    """Parse and validate manifest bytes; raises ManifestInvalidError with a message fit for a client.

    `strict` (every push) also refuses bytes that other parsers may read differently from us: anything
    but UTF-8, and an object with a key twice or two keys differing only in case (Go's encoding/json,
    which most clients and registries use, matches field names ignoring case and keeps the last one).
    gc, fsck and deletes read stored manifests with `strict=False`: bytes an earlier version accepted
    must still tell gc which blobs they keep.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestInvalidError(f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
    doc = _load(data, strict=strict)
    if not isinstance(doc, dict):
        raise ManifestInvalidError("manifest must be a JSON object")
    if doc.get("schemaVersion") != 2:
        raise ManifestInvalidError("manifest schemaVersion must be 2")
    body_type = doc.get("mediaType")
    if body_type is not None and not isinstance(body_type, str):
        raise ManifestInvalidError("manifest mediaType must be a string")
    ctype = (content_type or "").split(";")[0].strip() or None
    media_type = body_type or ctype
    if media_type is None:
        # OCI allows omitting mediaType; infer from shape as clients without Content-Type expect.
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if media_type not in MEDIA_TYPES:
        raise ManifestInvalidError(f"unsupported manifest media type {media_type!r}")
    if body_type is not None and ctype is not None and ctype in MEDIA_TYPES and ctype != body_type:
        raise ManifestInvalidError(f"Content-Type {ctype!r} does not match manifest mediaType {body_type!r}")
    subject = _descriptor(doc["subject"], "subject") if doc.get("subject") is not None else None
    artifact_type = _optional_str(doc, "artifactType")
    annotations = _annotations(doc.get("annotations"), "annotations")
    if media_type in IMAGE_TYPES:
        if "config" not in doc:
            raise ManifestInvalidError("image manifest has no config")
        config = _descriptor(doc["config"], "config")
        layers = doc.get("layers", [])
        if not isinstance(layers, list):
            raise ManifestInvalidError("layers must be a list")
        blobs = (config, *(_descriptor(x, f"layers[{i}]") for i, x in enumerate(layers)))
        return Manifest(media_type, blobs, (), subject, artifact_type or config.media_type, annotations)
    children = doc.get("manifests")
    if not isinstance(children, list):
        raise ManifestInvalidError("index has no manifests list")
    parsed = tuple(_descriptor(x, f"manifests[{i}]") for i, x in enumerate(children))
    return Manifest(media_type, (), parsed, subject, artifact_type, annotations)


def _load(data: bytes, *, strict: bool) -> Any:
    try:
        if not strict:
            return json.loads(data)  # json guesses UTF-16/32 from the first bytes
        return json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
    except ManifestInvalidError:
        raise
    except UnicodeDecodeError as exc:
        raise ManifestInvalidError(f"manifest is not valid JSON: not UTF-8 at byte {exc.start}") from None
    except ValueError as exc:
        raise ManifestInvalidError(f"manifest is not valid JSON: {exc}") from None
    except RecursionError:
        # The stdlib parser recurses once per nesting level; no manifest nests more than a few levels.
        raise ManifestInvalidError("manifest is nested too deeply") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        folded = key.casefold()
        if folded in seen:
            raise ManifestInvalidError(
                f"manifest has the key {key[:100]!r} twice in one object (keys are compared ignoring case)"
            )
        seen.add(folded)
    return dict(pairs)


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise ManifestInvalidError(f"{where} must be a descriptor object")
    media_type = value.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        raise ManifestInvalidError(f"{where}.mediaType must be a non-empty string")
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestInvalidError(f"{where}.size must be a non-negative integer")
    raw = value.get("digest")
    if not isinstance(raw, str):
        raise ManifestInvalidError(f"{where}.digest must be a string")
    try:
        dgst = digest.parse(raw)
    except (digest.DigestInvalidError, digest.DigestUnsupportedError) as exc:
        raise ManifestInvalidError(f"{where}.digest: {exc}") from None
    urls = value.get("urls")
    if urls is not None and (not isinstance(urls, list) or not all(isinstance(u, str) for u in urls)):
        raise ManifestInvalidError(f"{where}.urls must be a list of strings")
    urls = tuple(urls or ())
    foreign = "nondistributable" in media_type or "foreign" in media_type
    return Descriptor(
        media_type=media_type,
        digest=dgst,
        size=size,
        artifact_type=_optional_str(value, "artifactType"),
        annotations=_annotations(value.get("annotations"), f"{where}.annotations"),
        urls=urls,
        external=foreign and bool(urls),
    )


def _optional_str(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ManifestInvalidError(f"{key} must be a string")
    return value or None


def _annotations(value: Any, where: str) -> Mapping[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ManifestInvalidError(f"{where} must map strings to strings")
    return dict(value)


def referrer_descriptor(*, manifest: Manifest, dgst: digest.Digest, size: int) -> dict[str, Any]:
    """The descriptor of a referrer as listed by the referrers API."""
    out: dict[str, Any] = {"mediaType": manifest.media_type, "digest": str(dgst), "size": size}
    if manifest.artifact_type:
        out["artifactType"] = manifest.artifact_type
    if manifest.annotations:
        out["annotations"] = dict(manifest.annotations)
    return out
