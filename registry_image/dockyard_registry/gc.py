"""Garbage collection: drop tags a retention policy retires and manifests nothing keeps, then sweep blobs.

Owns: deciding which tags, manifests, blob data and stale upload sessions can go. Must not: delete
anything younger than the grace period. That rule is what keeps a running registry safe: a blob just
uploaded has a fresh mtime, one re-linked or referenced by a manifest pushed during the run has a fresh
`pushed` record beside it (paths.blob_pushed: the store never touches blob data, which on object storage
would mean copying it), and the sweep re-reads both right before deleting. Upload sessions count as fresh
while bytes still arrive; they go once untouched for `upload_expiry` (the grace period unless given).
Temp files of atomic writes killed before their rename (kill -9 during a manifest PUT) go once older
than the grace period.

A run has three phases, each one reading what the previous one left:
1. Tags (with a retention policy): a tag the policy does not keep goes, unless younger than the grace
   period. A tag's age is its link's mtime: pushing or moving a tag rewrites it.
2. Manifests (with `delete_untagged`): per repository, the roots are the kept tags and every revision
   younger than the grace period; what they reach stays — an index's children, and the referrers
   (manifests whose `subject` is kept), recursively. The rest goes: untagged manifests, and referrers
   whose subject is gone. A revision's age is its link's mtime, which every push that refers to the
   manifest refreshes (re-pushing it, tagging it, pushing an index listing it).
3. Blobs: every blob a remaining manifest revision references is kept; the rest goes once old
   (sweep.py, with stale upload sessions and interrupted writes).

Races with a running registry: each deletion re-checks what made it deletable (the tag still names the
same manifest and is old; the revision is still old; the blob is still old) just before it deletes.
Inside the registry's process (the online gc of `serve --gc-schedule`) the re-check and the deletion
hold the store's `GcLock` exclusively, so no push interleaves with them. Across processes (replicas on
one bucket, or the CLI against a live data directory) the run announces itself and holds a tombstone on
each item around its re-check and deletion (fence.py), and pushes check for those after their own
writes. Either way a push either refreshed the time before the re-check, or finds the content gone after
and is refused (a manifest naming a blob or manifest that was just collected is MANIFEST_BLOB_UNKNOWN,
never a half-stored image), or, for its own tag or revision, writes it again. Deciding from a snapshot
is only ever too conservative: a tag moved during the run keeps its old manifest until the next run.
Times are compared one second more conservatively than the grace period: object stores keep them to
the second.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from dockyard_registry import digest, fence, manifests, paths, retention, store, sweep
from dockyard_registry.sweep import Report as Report
from dockyard_registry.sweep import layer_links as layer_links
from dockyard_registry.sweep import stored_blobs as stored_blobs

DEFAULT_GRACE = 3600.0
CUTOFF_MARGIN = 1.0
"""Seconds a run keeps beyond the grace: object stores keep modification times to the second, so a claim
written in the same second as the cutoff must not read as older than it."""


@dataclasses.dataclass(frozen=True)
class _Revision:
    """What gc needs of one stored manifest revision."""

    mtime: float | None
    blobs: tuple[digest.Digest, ...]  # the blobs it keeps (foreign layers only where linked)
    children: tuple[digest.Digest, ...]  # index entries
    subject: digest.Digest | None
    readable: bool  # False: missing or unparsable bytes (fsck's to report); such a revision is kept


def _scan(st: store.Store, repo: str) -> dict[digest.Digest, _Revision]:
    """Every manifest revision of one repository, parsed once."""
    found: dict[digest.Digest, _Revision] = {}
    for revision in st.maintenance.revisions(repo):
        mtime = st.maintenance.revision_time(repo, revision)
        try:
            stored = st.get_manifest(repo, revision)
            parsed = manifests.parse(stored.data, content_type=stored.media_type, strict=False)
        except (store.ManifestUnknownError, manifests.ManifestInvalidError):
            found[revision] = _Revision(mtime, (), (), None, readable=False)
            continue
        # A foreign layer counts only where the repository links it: a manifest that merely names
        # another repository's digest must not keep that blob alive.
        blobs = tuple(
            b.digest for b in parsed.blobs if not b.external or st.maintenance.links(repo, b.digest)
        )
        found[revision] = _Revision(
            mtime,
            blobs,
            tuple(c.digest for c in parsed.manifests),
            parsed.subject.digest if parsed.subject is not None else None,
            readable=True,
        )
    return found


def _tags(st: store.Store, repo: str) -> dict[str, tuple[str, float]]:
    """Each tag's target (as stored) and mtime; tags gone or unreadable meanwhile are left out."""
    out: dict[str, tuple[str, float]] = {}
    for tag in st.maintenance.tag_names(repo):
        try:
            target, mtime = st.maintenance.tag(repo, tag)
        except (FileNotFoundError, UnicodeDecodeError):
            continue
        if mtime is not None:
            out[tag] = (target, mtime)
    return out


def _reachable(revisions: dict[digest.Digest, _Revision], roots: set[digest.Digest]) -> set[digest.Digest]:
    """The roots and everything they reach: index children and referrers of reached manifests."""
    referrers: dict[digest.Digest, list[digest.Digest]] = {}
    for d, rev in revisions.items():
        if rev.subject is not None:
            referrers.setdefault(rev.subject, []).append(d)
    seen: set[digest.Digest] = set()
    todo = list(roots)
    while todo:
        d = todo.pop()
        if d in seen:
            continue
        seen.add(d)
        found = revisions.get(d)
        if found is not None:
            todo.extend(found.children)
        todo.extend(referrers.get(d, ()))
    return seen


def mark(st: store.Store) -> set[digest.Digest]:
    """Every blob (manifests included) some stored manifest revision references."""
    marked: set[digest.Digest] = set()
    for repo in st.catalog():
        for revision, rev in _scan(st, repo).items():
            marked.add(revision)
            marked.update(rev.blobs)
    return marked


def collect(
    st: store.Store,
    *,
    grace: float,
    dry_run: bool,
    clock: Callable[[], float] = time.time,
    upload_expiry: float | None = None,
    delete_untagged: bool = False,
    policy: retention.Policy | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    defer: bool = False,
) -> Report:
    """One run (see the module docstring). Safe to kill at any point: the next run finishes the job.

    `should_stop` is asked between repositories and between blobs; when it says so the run ends there
    (`stopped` in the report): how a shutting-down registry ends an online run quickly. With `defer`, a
    run that finds another process's run live and started first does nothing (`deferred_to`): replicas
    on one schedule collect once.

    A blob's links go before its bytes, so a run killed midway leaves at worst an unlinked blob (swept
    next time), never a link to nothing; a manifest's tags go before its revision, its revision before
    its bytes. Links to blobs already gone (left by older versions or by hand) are removed too, unless a
    manifest still references the blob: that is fsck's to report.
    """
    began = time.monotonic()
    report = Report(dry_run=dry_run, started=clock())
    cutoff = clock() - grace - CUTOFF_MARGIN
    run = None if dry_run else st.fence.begin()
    try:
        if run is not None and defer and (other := _peer_collecting(run)) is not None:
            report.deferred_to = other
            report.duration = time.monotonic() - began
            return report
        _collect(st, report, run, began=began, cutoff=cutoff, clock=clock, grace=grace,
                 upload_expiry=upload_expiry, delete_untagged=delete_untagged, policy=policy,
                 should_stop=should_stop)  # fmt: skip
    finally:
        if run is not None:
            run.end()
    return report


def _peer_collecting(run: fence.Run) -> str | None:
    """The live run of another replica that this one defers to, or None.

    Looked for twice: a replica on the same schedule may start its run a moment before this one and
    write its marker just after this one's first look. Once the ready delay passed (which the run's
    first deletion waits for anyway), every marker written before this run's own is visible, so of
    runs that overlap, exactly one (the one started first) goes on.
    """
    other = run.defer_to()
    if other is None:
        run.wait_ready()
        other = run.defer_to()
    return other


def _collect(
    st: store.Store,
    report: Report,
    run: fence.Run | None,
    *,
    began: float,
    cutoff: float,
    clock: Callable[[], float],
    grace: float,
    upload_expiry: float | None,
    delete_untagged: bool,
    policy: retention.Policy | None,
    should_stop: Callable[[], bool],
) -> None:
    dry_run = run is None
    marked: set[digest.Digest] = set()
    for repo in st.catalog():
        if should_stop():
            report.stopped = True
            break
        if run is not None:
            run.heartbeat()
        revisions = _scan(st, repo)
        gone = _collect_repository(
            st,
            report,
            run,
            repo=repo,
            revisions=revisions,
            cutoff=cutoff,
            now=clock(),
            delete_untagged=delete_untagged,
            policy=policy,
        )
        for revision, rev in revisions.items():
            if revision not in gone:
                marked.add(revision)
                marked.update(rev.blobs)
    if report.stopped:  # the marks are incomplete: sweeping now would delete what a manifest references
        report.duration = time.monotonic() - began
        return
    sweep.blobs(st, report, run, marked=marked, cutoff=cutoff, should_stop=should_stop)
    if report.stopped:
        report.duration = time.monotonic() - began
        return
    sweep.uploads_and_leftovers(
        st,
        report,
        cutoff=cutoff,
        upload_cutoff=clock() - (grace if upload_expiry is None else upload_expiry),
        dry_run=dry_run,
    )
    report.duration = time.monotonic() - began


def _collect_repository(
    st: store.Store,
    report: Report,
    run: fence.Run | None,
    *,
    repo: str,
    revisions: dict[digest.Digest, _Revision],
    cutoff: float,
    now: float,
    delete_untagged: bool,
    policy: retention.Policy | None,
) -> set[digest.Digest]:
    """Phases 1 and 2 for one repository; returns the revisions deleted (dry: that would be)."""
    dry_run = run is None
    if policy is None and not delete_untagged:
        return set()
    tags = _tags(st, repo)
    retired: set[str] = set()
    if policy is not None and policy.covers(repo):
        kept = policy.kept(repo, {tag: mtime for tag, (_, mtime) in tags.items()}, now=now)
        retired = {tag for tag, (_, mtime) in tags.items() if tag not in kept and mtime <= cutoff}
    for tag in sorted(retired):
        target, mtime = tags[tag]
        if run is None or _delete_tag(st, report, run, repo=repo, tag=tag, target=target, mtime=mtime):
            report.tags.append(f"{repo}:{tag}")
    if not delete_untagged:
        return set()
    roots: set[digest.Digest] = set()
    for tag, (target, _) in tags.items():
        if tag in retired and (dry_run or not st.maintenance.has_tag(repo, tag)):
            continue
        try:
            roots.add(digest.parse(target))
        except (digest.DigestInvalidError, digest.DigestUnsupportedError):
            continue  # a damaged tag keeps nothing; fsck reports it
    for revision, rev in revisions.items():
        if not rev.readable or rev.mtime is None or rev.mtime > cutoff:
            roots.add(revision)
    reachable = _reachable(revisions, roots)
    gone: set[digest.Digest] = set()
    for revision in sorted(set(revisions) - reachable, key=str):
        rev = revisions[revision]
        if run is None or _delete_revision(
            st, report, run, repo=repo, revision=revision, subject=rev.subject, cutoff=cutoff
        ):
            report.manifests.append(f"{repo}@{revision}")
            gone.add(revision)
    return gone


def _delete_tag(
    st: store.Store, report: Report, run: fence.Run, *, repo: str, tag: str, target: str, mtime: float
) -> bool:
    """Delete a retired tag unless it changed since it was read; False when it stays."""
    try:
        with st.gc_lock.exclusive(), run.deleting(paths.tag_link(repo, tag)) as in_time:
            try:
                now_target, now_mtime = st.maintenance.tag(repo, tag)
            except (FileNotFoundError, UnicodeDecodeError):
                return False
            if now_target != target or now_mtime != mtime or not in_time():
                return False  # pushed or moved during the run: recent now
            st.maintenance.remove_tag(repo, tag)
    except OSError as exc:
        report.errors.append(f"tag {repo}:{tag}: {exc}")
        return False
    return True


def _delete_revision(
    st: store.Store,
    report: Report,
    run: fence.Run,
    *,
    repo: str,
    revision: digest.Digest,
    subject: digest.Digest | None,
    cutoff: float,
) -> bool:
    """Delete an unreachable manifest revision unless a push refreshed it; False when it stays."""
    try:
        with st.gc_lock.exclusive(), run.deleting(paths.revision_link(repo, revision)) as in_time:
            mtime = st.maintenance.revision_time(repo, revision)
            if mtime is None or mtime > cutoff or not in_time():
                return False  # deleted meanwhile, or pushed, tagged or listed by an index during the run
            st.maintenance.remove_revision(repo, revision, subject=subject)
    except OSError as exc:
        report.errors.append(f"manifest {repo}@{revision}: {exc}")
        return False
    return True
