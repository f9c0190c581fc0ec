"""Garbage collection: mark every blob a manifest revision references, sweep the rest.

Owns: deciding which blob data and stale upload sessions can go. Must not: delete anything younger than
the grace period. That rule is what keeps a running registry safe: a blob just uploaded (or re-linked,
or referenced by a manifest pushed during the run — the store touches those) has a fresh mtime, and the
sweep re-reads the mtime right before deleting. Upload sessions count as fresh while bytes still arrive;
they go once untouched for `upload_expiry` (the grace period unless given). Temp files of atomic writes
killed before their rename (kill -9 during a manifest PUT) go once older than the grace period.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator

from dockyard_registry import digest, manifests, paths, store


@dataclasses.dataclass
class Report:
    blobs: list[str] = dataclasses.field(default_factory=list)
    uploads: list[str] = dataclasses.field(default_factory=list)
    leftovers: list[str] = dataclasses.field(default_factory=list)
    bytes: int = 0
    kept: int = 0


def stored_blobs(st: store.Store) -> Iterator[digest.Digest]:
    """Every blob in the content store, whatever links to it."""
    driver = st.driver
    for algorithm in driver.list(paths.BLOBS):
        for prefix in driver.list(f"{paths.BLOBS}/{algorithm}"):
            for encoded in driver.list(f"{paths.BLOBS}/{algorithm}/{prefix}"):
                try:
                    yield digest.parse(f"{algorithm}:{encoded}")
                except (digest.DigestInvalidError, digest.DigestUnsupportedError):
                    continue


def linked(st: store.Store, directory: str) -> Iterator[digest.Digest]:
    """Digests of the `<alg>/<encoded>` link files under a repository directory."""
    for algorithm in st.driver.list(directory):
        for encoded in st.driver.list(f"{directory}/{algorithm}"):
            try:
                yield digest.parse(f"{algorithm}:{encoded}")
            except (digest.DigestInvalidError, digest.DigestUnsupportedError):
                continue


def mark(st: store.Store) -> set[digest.Digest]:
    marked: set[digest.Digest] = set()
    for repo in st.catalog():
        for revision in linked(st, paths.revisions(repo)):
            marked.add(revision)
            try:
                found = st.get_manifest(repo, revision)
                parsed = manifests.parse(found.data, content_type=found.media_type, strict=False)
            except (store.ManifestUnknownError, manifests.ManifestInvalidError):
                continue
            for blob in parsed.blobs:
                # A foreign layer counts only where the repository links it: a manifest that merely names
                # another repository's digest must not keep that blob alive.
                if not blob.external or st.driver.size(paths.layer_link(repo, blob.digest)) is not None:
                    marked.add(blob.digest)
    return marked


def layer_links(st: store.Store) -> dict[digest.Digest, list[str]]:
    """For every linked blob, the repositories that link it."""
    links: dict[digest.Digest, list[str]] = {}
    for repo in st.catalog():
        for blob in linked(st, paths.layers(repo)):
            links.setdefault(blob, []).append(repo)
    return links


def collect(
    st: store.Store,
    *,
    grace: float,
    dry_run: bool,
    clock: Callable[[], float] = time.time,
    upload_expiry: float | None = None,
) -> Report:
    """One mark-and-sweep run. Safe to kill at any point: the next run finishes the job.

    A blob's links go before its bytes, so a run killed midway leaves at worst an unlinked blob (swept
    next time), never a link to nothing. Links to blobs already gone (left by older versions or by
    hand) are removed too, unless a manifest still references the blob: that is fsck's to report.
    """
    report = Report()
    marked = mark(st)
    links = layer_links(st)
    cutoff = clock() - grace
    driver = st.driver
    for blob in stored_blobs(st):
        data = paths.blob_data(blob)
        if blob in marked:
            report.kept += 1
            continue
        mtime = driver.mtime(data)
        if mtime is None:
            # Left by a write interrupted before its rename (crash): remove once it is old enough.
            leftover = driver.mtime(paths.blob_dir(blob))
            if leftover is not None and leftover <= cutoff and not dry_run:
                driver.delete(paths.blob_dir(blob))
            continue
        if mtime > cutoff:
            report.kept += 1
            continue
        report.blobs.append(str(blob))
        report.bytes += driver.size(data) or 0
        if dry_run:
            continue
        # Re-check just before deleting: a push or mount during this run refreshes the mtime.
        again = driver.mtime(data)
        if again is None or again > cutoff:
            continue
        for repo in links.pop(blob, []):
            driver.delete(paths.layer_link(repo, blob))
        driver.delete(paths.blob_dir(blob))
    if not dry_run:
        for blob, repos in links.items():
            if blob not in marked and driver.size(paths.blob_data(blob)) is None:
                for repo in repos:
                    driver.delete(paths.layer_link(repo, blob))
    upload_cutoff = clock() - (grace if upload_expiry is None else upload_expiry)
    for upload_id in driver.list(paths.UPLOADS):
        last = st.upload_last_active(upload_id)
        if last is not None and last <= upload_cutoff:
            report.uploads.append(upload_id)
            if not dry_run:
                driver.delete(paths.upload_dir(upload_id))
    # After the blobs: a removed temp file refreshes its directory's mtime, which the blob pass reads.
    for top in (paths.BLOBS, paths.REPOSITORIES, paths.UPLOADS):
        for temp in driver.leftovers(top):
            written = driver.mtime(temp)
            if written is None or written > cutoff:
                continue  # gone meanwhile, or a write still in flight
            report.leftovers.append(temp)
            report.bytes += driver.size(temp) or 0
            if not dry_run:
                driver.delete(temp)
    return report
