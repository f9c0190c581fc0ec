"""OCI image layouts with incompressible layers, for skopeo to push.

Each layer is a gzip stream of random bytes at compression level 0 (stored blocks): incompressible, and
skopeo sees gzip magic so it sends the layer as it is instead of compressing it on the client (which would
measure gzip, not the registry). Layers are written in chunks while being hashed: a 256 MiB layer is never
held in memory.

Owns: writing `oci-layout`, `index.json` and `blobs/sha256/*` for one or many tagged images.
Must not: reuse random content across calls (a registry that already has a blob skips its upload).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zlib
from pathlib import Path

CHUNK = 4 * 1024 * 1024
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


@dataclasses.dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    path: Path
    diff_id: str = ""  # for layers: the digest of the uncompressed content


class Layout:
    """An OCI image layout directory that images are added to one by one."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.blobs = directory / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.index: list[dict[str, object]] = []

    def _write_bytes(self, data: bytes) -> Blob:
        digest = hashlib.sha256(data).hexdigest()
        path = self.blobs / digest
        path.write_bytes(data)
        return Blob(digest=f"sha256:{digest}", size=len(data), path=path)

    def random_layer(self, *, size: int) -> Blob:
        """A gzip (level 0) stream wrapping `size` random bytes, hashed as it is written."""
        hasher, raw = hashlib.sha256(), hashlib.sha256()
        tmp = self.blobs / f".tmp-{os.urandom(6).hex()}"
        written = 0
        gz = zlib.compressobj(0, zlib.DEFLATED, 31)
        with tmp.open("wb") as out:
            remaining = size
            while remaining:
                n = min(CHUNK, remaining)
                remaining -= n
                data = os.urandom(n)
                raw.update(data)
                for piece in (gz.compress(data), gz.flush() if not remaining else b""):
                    if piece:
                        hasher.update(piece)
                        out.write(piece)
                        written += len(piece)
        path = self.blobs / hasher.hexdigest()
        tmp.rename(path)
        return Blob(
            digest=f"sha256:{hasher.hexdigest()}",
            size=written,
            path=path,
            diff_id=f"sha256:{raw.hexdigest()}",
        )

    def add_image(self, *, tag: str, layer_sizes: list[int]) -> Blob:
        """Write a new image with fresh random layers; returns its manifest blob."""
        layers = [self.random_layer(size=s) for s in layer_sizes]
        config = self._write_bytes(
            json.dumps(
                {
                    "architecture": "amd64",
                    "os": "linux",
                    "config": {"Labels": {"dockyard.bench": os.urandom(8).hex()}},
                    "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
                },
                sort_keys=True,
            ).encode()
        )
        manifest = self._write_bytes(
            json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": MANIFEST_TYPE,
                    "config": {"mediaType": CONFIG_TYPE, "digest": config.digest, "size": config.size},
                    "layers": [
                        {"mediaType": LAYER_TYPE, "digest": layer.digest, "size": layer.size}
                        for layer in layers
                    ],
                }
            ).encode()
        )
        self.index.append(
            {
                "mediaType": MANIFEST_TYPE,
                "digest": manifest.digest,
                "size": manifest.size,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        )
        (self.directory / "index.json").write_text(
            json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": self.index,
                }
            )
        )
        return manifest

    def reference(self, tag: str) -> str:
        """The skopeo transport reference of one tagged image in this layout."""
        return f"oci:{self.directory}:{tag}"
