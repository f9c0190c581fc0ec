"""The on-disk layout, as pure functions from names to driver paths.

Owns: where every piece of state lives. Must not: do I/O. Every path is relative to the data root and
uses `/`; drivers map it onto their medium.

    <root>/
    ├── blobs/<alg>/<first 2 hex>/<encoded>/data                  content, shared by all repositories
    ├── repositories/<name with slashes>/
    │   ├── _layers/<alg>/<encoded>                               link: blob pushed or mounted here
    │   ├── _manifests/revisions/<alg>/<encoded>                  link: manifest (holds its media type)
    │   ├── _manifests/tags/<tag>                                 tag -> manifest digest
    │   ├── _referrers/<subject alg>/<subject encoded>/<alg>/<encoded>   referrer descriptor (JSON)
    │   └── _mirror                                               empty: holds content a mirror fetched
    ├── uploads/<upload id>/
    │   ├── data                                                  bytes received so far
    │   └── info                                                  JSON: repository, start time, owner,
    │                                                             last write (older versions: no owner)
    └── gc/runs/<run id>/                                         a gc run in progress (fence.py)
        ├── lease                                                 JSON: run, host, pid; rewritten each minute
        └── doomed/<path of an item>                              empty: the run is deleting that item

Repository names never have a component starting with `_` (see reference.py), so the `_layers`,
`_manifests`, `_referrers` and `_mirror` children can never collide with a nested repository.
"""

from __future__ import annotations

from dockyard_registry import digest

BLOBS = "blobs"
REPOSITORIES = "repositories"
UPLOADS = "uploads"
GC_RUNS = "gc/runs"
RESERVED = ("_layers", "_manifests", "_referrers", "_mirror")


def blob_dir(d: digest.Digest) -> str:
    return f"{BLOBS}/{d.algorithm}/{d.encoded[:2]}/{d.encoded}"


def blob_data(d: digest.Digest) -> str:
    return f"{blob_dir(d)}/data"


def blob_pushed(d: digest.Digest) -> str:
    """A tiny record written whenever a push relies on an existing blob: gc's grace period starts anew
    from its time, so the (possibly huge) data is never touched or copied to say "still in use"."""
    return f"{blob_dir(d)}/pushed"


def repository(name: str) -> str:
    return f"{REPOSITORIES}/{name}"


def layer_link(name: str, d: digest.Digest) -> str:
    return f"{REPOSITORIES}/{name}/_layers/{d.algorithm}/{d.encoded}"


def layers(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_layers"


def mirror_marker(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_mirror"


def revision_link(name: str, d: digest.Digest) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/revisions/{d.algorithm}/{d.encoded}"


def revisions(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/revisions"


def tag_link(name: str, tag: str) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/tags/{tag}"


def tags(name: str) -> str:
    return f"{REPOSITORIES}/{name}/_manifests/tags"


def referrers(name: str, subject: digest.Digest) -> str:
    return f"{REPOSITORIES}/{name}/_referrers/{subject.algorithm}/{subject.encoded}"


def referrer_link(name: str, subject: digest.Digest, d: digest.Digest) -> str:
    return f"{referrers(name, subject)}/{d.algorithm}/{d.encoded}"


def upload_dir(upload_id: str) -> str:
    return f"{UPLOADS}/{upload_id}"


def upload_data(upload_id: str) -> str:
    return f"{UPLOADS}/{upload_id}/data"


def is_upload_data(path: str) -> bool:
    """Whether `path` is an upload session's data: the only paths the store opens writers on."""
    parts = path.split("/")
    return len(parts) == 3 and parts[0] == UPLOADS and parts[2] == "data" and bool(parts[1])


def upload_info(upload_id: str) -> str:
    return f"{UPLOADS}/{upload_id}/info"


def gc_run(run: str) -> str:
    return f"{GC_RUNS}/{run}"


def gc_lease(run: str) -> str:
    return f"{GC_RUNS}/{run}/lease"


def gc_tombstone(run: str, item: str) -> str:
    """`item` is the storage path of what the run deletes (blob_dir, revision_link, tag_link)."""
    return f"{GC_RUNS}/{run}/doomed/{item}"
