"""Build real, runnable-shaped OCI images in Python: random gzip'd tar layers, a config, a manifest.

Owns: layer, config and manifest bytes whose digests the tests know in advance, and writing them as an
OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/...`) that skopeo copies from.
Layers are real tar archives with a correct `rootfs.diff_ids` so podman can unpack them.

Must not: talk to a registry (the clients under test do that) or depend on anything but the stdlib.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path

LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclasses.dataclass(frozen=True)
class Blob:
    """Bytes with their digest; what a descriptor points at."""

    data: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return _digest(self.data)

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}


@dataclasses.dataclass(frozen=True)
class Layer:
    """A gzip'd tar layer and the digest of its uncompressed tar (the config's diff_id)."""

    blob: Blob
    diff_id: str


def random_layer(*, name: str, size: int = 64 * 1024) -> Layer:
    """A layer holding one file `/<name>` of random bytes (random, so no two layers ever share a digest)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = 0o644
        info.mtime = 0
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    tar_bytes = raw.getvalue()
    compressed = gzip.compress(tar_bytes, mtime=0)
    return Layer(blob=Blob(data=compressed, media_type=LAYER_GZIP), diff_id=_digest(tar_bytes))


@dataclasses.dataclass(frozen=True)
class Image:
    """An image manifest with its config and layers, all as bytes."""

    config: Blob
    layers: tuple[Layer, ...]
    manifest: Blob

    @property
    def digest(self) -> str:
        return self.manifest.digest

    def blobs(self) -> list[Blob]:
        return [self.config, *(layer.blob for layer in self.layers)]


def image(*, layers: Sequence[Layer], label: str) -> Image:
    """An amd64/linux image manifest over `layers`; `label` makes the config (and digest) unique."""
    config_doc = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"dev.dockyard.test": label}, "Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created_by": f"dockyard test layer {i}"} for i in range(len(layers))],
    }
    config = Blob(data=json.dumps(config_doc, sort_keys=True).encode(), media_type=CONFIG)
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.blob.descriptor() for layer in layers],
    }
    manifest = Blob(data=json.dumps(manifest_doc, sort_keys=True).encode(), media_type=MANIFEST)
    return Image(config=config, layers=tuple(layers), manifest=manifest)


def random_image(*, label: str, layer_count: int = 3, layer_size: int = 64 * 1024) -> Image:
    return image(
        layers=[random_layer(name=f"{label}-{i}.bin", size=layer_size) for i in range(layer_count)],
        label=label,
    )


def write_layout(*, directory: Path, tag: str, img: Image) -> Path:
    """Write `img` as an OCI image layout tagged `tag`; returns `directory` (skopeo's `oci:DIR:TAG`)."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for blob in [*img.blobs(), img.manifest]:
        (blobs / blob.digest.removeprefix("sha256:")).write_bytes(blob.data)
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    descriptor = img.manifest.descriptor()
    descriptor["annotations"] = {"org.opencontainers.image.ref.name": tag}
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [descriptor],
    }
    (directory / "index.json").write_text(json.dumps(index))
    return directory


INDEX = "application/vnd.oci.image.index.v1+json"


def index(*, platforms: Sequence[tuple[str, Image]]) -> Blob:
    """A multi-platform image index: one `(architecture, image)` per entry, all linux."""
    doc = {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [
            {**img.manifest.descriptor(), "platform": {"architecture": arch, "os": "linux"}}
            for arch, img in platforms
        ],
    }
    return Blob(data=json.dumps(doc, sort_keys=True).encode(), media_type=INDEX)


def write_index_layout(*, directory: Path, tag: str, idx: Blob, imgs: Sequence[Image]) -> Path:
    """Write a multi-platform index and its images as an OCI layout tagged `tag`."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for img in imgs:
        for blob in [*img.blobs(), img.manifest]:
            (blobs / blob.digest.removeprefix("sha256:")).write_bytes(blob.data)
    (blobs / idx.digest.removeprefix("sha256:")).write_bytes(idx.data)
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    descriptor = idx.descriptor()
    descriptor["annotations"] = {"org.opencontainers.image.ref.name": tag}
    (directory / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": [descriptor]})
    )
    return directory


def tagged_digest(*, directory: Path, tag: str) -> str:
    """The digest a layout's index.json gives for `tag`."""
    index_doc = json.loads((directory / "index.json").read_text())
    found = [
        d["digest"]
        for d in index_doc["manifests"]
        if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
    ]
    assert len(found) == 1, index_doc
    return str(found[0])


@dataclasses.dataclass(frozen=True)
class LayoutContents:
    """What a client wrote into a layout: the tagged manifest and every blob digest it references."""

    manifest_digest: str
    manifest: dict[str, object]
    config_digest: str
    layer_digests: list[str]


def read_layout(*, directory: Path, tag: str) -> LayoutContents:
    """Read back a layout a client pulled into, checking every referenced blob is present and intact."""
    index = json.loads((directory / "index.json").read_text())
    matches = [
        d
        for d in index["manifests"]
        if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
    ]
    assert len(matches) == 1, f"tag {tag} in {directory}/index.json: {index}"
    manifest_digest = matches[0]["digest"]

    def blob(digest: str) -> bytes:
        algo, _, hex_ = digest.partition(":")
        data = (directory / "blobs" / algo / hex_).read_bytes()
        assert _digest(data) == digest, f"blob {digest} in {directory} does not match its digest"
        return data

    manifest = json.loads(blob(manifest_digest))
    layer_digests = [layer["digest"] for layer in manifest["layers"]]
    for digest in [manifest["config"]["digest"], *layer_digests]:
        blob(digest)
    return LayoutContents(
        manifest_digest=manifest_digest,
        manifest=manifest,
        config_digest=manifest["config"]["digest"],
        layer_digests=layer_digests,
    )
