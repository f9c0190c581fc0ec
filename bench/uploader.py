"""A lean push client: the images of an OCI layout over one TLS keep-alive connection (issue 15).

skopeo spends ~4 CPU-s per GiB on the client (it re-reads, hashes and TLS-encrypts every layer), so on two
cores its MB/s hides what the servers cost. This client only reads each layer file in 1 MiB blocks and
sends it: digests and sizes come from the layout (known before the push, as for any real client that
built the image), nothing is hashed, nothing is buffered whole. Two upload styles, both OCI:

- `monolithic`: POST to open a session, then one `PUT ?digest=` carrying the whole blob;
- `chunked`: POST, then `PATCH` chunks of `--chunk-mib` with `Content-Range`, then an empty `PUT ?digest=`.

Then `PUT` of the manifest by tag. Run as a child process (`python -m bench.uploader`) so that its CPU is
counted like skopeo's (getrusage of children); it prints the wall seconds of the whole push as JSON.

Owns: talking OCI to one registry on 127.0.0.1 over verified TLS.
Must not: retry, skip a blob the registry already has (HEAD), or print the credentials.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import ssl
import sys
import time
import urllib.parse
from pathlib import Path
from typing import BinaryIO

BLOCK = 1 << 20
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


class PushError(RuntimeError):
    pass


class _Window:
    """`length` bytes of an open file from its current position, read in BLOCK-sized pieces."""

    def __init__(self, f: BinaryIO, length: int) -> None:
        self._f = f
        self._left = length

    def read(self, size: int = BLOCK) -> bytes:
        if self._left <= 0:
            return b""
        data = self._f.read(min(size, self._left, BLOCK))
        self._left -= len(data)
        return data


class Client:
    def __init__(self, *, address: str, ca_file: str, authorization: str) -> None:
        host, _, port = address.rpartition(":")
        context = ssl.create_default_context(cafile=ca_file)
        self._conn = http.client.HTTPSConnection(host, int(port), context=context, blocksize=BLOCK)
        self._auth = authorization

    def close(self) -> None:
        self._conn.close()

    def _request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | _Window | None = None,
        headers: dict[str, str] | None = None,
        expect: int,
    ) -> http.client.HTTPResponse:
        sent = {"Authorization": self._auth, **(headers or {})}
        self._conn.request(method, url, body=body, headers=sent)
        response = self._conn.getresponse()
        payload = response.read()
        if response.status != expect:
            raise PushError(f"{method} {url.split('?')[0]}: {response.status} {payload[:500]!r}")
        return response

    def _start(self, repo: str) -> str:
        response = self._request("POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"},
                                 expect=202)  # fmt: skip
        location = response.getheader("Location")
        if not location:
            raise PushError("POST of an upload answered without Location")
        parsed = urllib.parse.urlsplit(location)
        return parsed.path + (f"?{parsed.query}" if parsed.query else "")

    @staticmethod
    def _with_digest(location: str, digest: str) -> str:
        joiner = "&" if "?" in location else "?"
        return f"{location}{joiner}digest={urllib.parse.quote(digest)}"

    def push_blob(self, *, repo: str, path: Path, digest: str, style: str, chunk: int) -> None:
        size = path.stat().st_size
        location = self._start(repo)
        octets = {"Content-Type": "application/octet-stream"}
        with path.open("rb", buffering=0) as f:
            if style == "monolithic":
                self._request("PUT", self._with_digest(location, digest), body=_Window(f, size),
                              headers={**octets, "Content-Length": str(size)}, expect=201)  # fmt: skip
                return
            offset = 0
            while offset < size:
                n = min(chunk, size - offset)
                response = self._request(
                    "PATCH", location, body=_Window(f, n), expect=202,
                    headers={**octets, "Content-Length": str(n),
                             "Content-Range": f"{offset}-{offset + n - 1}"},
                )  # fmt: skip
                offset += n
                location = _path_of(response.getheader("Location") or location)
            self._request("PUT", self._with_digest(location, digest), headers={"Content-Length": "0"},
                          expect=201)  # fmt: skip

    def push_manifest(self, *, repo: str, tag: str, manifest: bytes) -> None:
        headers = {"Content-Type": MANIFEST_TYPE, "Content-Length": str(len(manifest))}
        self._request("PUT", f"/v2/{repo}/manifests/{tag}", body=manifest, headers=headers, expect=201)


def _path_of(location: str) -> str:
    parsed = urllib.parse.urlsplit(location)
    return parsed.path + (f"?{parsed.query}" if parsed.query else "")


def push_layout(*, client: Client, layout: Path, tags: list[str], repo: str, style: str, chunk: int) -> None:
    """Push every tagged image of `layout` named in `tags` to `repo:<tag>`: config, layers, manifest."""
    index = json.loads((layout / "index.json").read_text())
    by_tag = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in index["manifests"]}
    blobs = layout / "blobs" / "sha256"
    for tag in tags:
        descriptor = by_tag[tag]
        manifest = (blobs / descriptor["digest"].split(":", 1)[1]).read_bytes()
        doc = json.loads(manifest)
        for blob in [doc["config"], *doc["layers"]]:
            client.push_blob(repo=repo, path=blobs / blob["digest"].split(":", 1)[1], digest=blob["digest"],
                             style=style, chunk=chunk)  # fmt: skip
        client.push_manifest(repo=repo, tag=tag, manifest=manifest)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.uploader", description=__doc__.splitlines()[0])
    p.add_argument("--address", required=True, help="host:port of the registry's TLS endpoint")
    p.add_argument("--ca", required=True, help="CA file to verify the server with")
    p.add_argument("--layout", required=True, type=Path, help="OCI image layout directory")
    p.add_argument("--repo", required=True)
    p.add_argument("--tags", required=True, help="comma-separated tags of the layout to push")
    p.add_argument("--style", choices=("monolithic", "chunked"), default="monolithic")
    p.add_argument("--chunk-mib", type=int, default=64, help="PATCH size for --style chunked (default 64)")
    args = p.parse_args(argv)
    # Credentials from the environment, never on a command line another process could read.
    creds = os.environ.get("BENCH_CREDS", "")
    if ":" not in creds:
        print("bench.uploader: set BENCH_CREDS=user:password", file=sys.stderr)
        return 2
    authorization = "Basic " + base64.b64encode(creds.encode()).decode()
    client = Client(address=args.address, ca_file=args.ca, authorization=authorization)
    start = time.perf_counter()
    try:
        push_layout(client=client, layout=args.layout, tags=args.tags.split(","), repo=args.repo,
                    style=args.style, chunk=args.chunk_mib << 20)  # fmt: skip
    except (PushError, OSError, http.client.HTTPException) as exc:
        print(f"bench.uploader: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(json.dumps({"seconds": time.perf_counter() - start}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
