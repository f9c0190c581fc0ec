"""fsck: re-hash every blob and check every link, tag and manifest reference.

Owns: finding corruption and dangling references, describing each in one line, and telling the two apart.
Corruption is a state no sequence of API calls produces (bytes that do not match their digest, data gone
under a link, a tag to nothing, an unparsable manifest): only a disk, a crash or a hand can make it.
A dangling reference is one the API itself leaves behind, so it is reported but is not damage: the
distribution spec lets a client DELETE a manifest an index still lists, or DELETE a blob from a
repository whose manifest still names it (the bytes stay: gc keeps every blob a manifest references).
Content a pull-through mirror fetched (a repository with the `_mirror` marker) is checked like any
other, except that what its manifests name but no client asked for yet (a layer, an index's child) is
"not fetched yet" (`uncached`, counted but not a warning): the mirror fetches it on demand.
Must not: repair or delete anything (that is a human decision; `gc` removes only unreferenced content).
"""

from __future__ import annotations

import dataclasses

from dockyard_registry import digest, gc, manifests, store


@dataclasses.dataclass(frozen=True)
class Report:
    """What one run found, one line per finding."""

    corruption: list[str] = dataclasses.field(default_factory=list)
    dangling: list[str] = dataclasses.field(default_factory=list)  # left by API calls; not damage
    # A mirror's manifests name blobs and children it fetches only when asked: neither damage nor dangling.
    uncached: list[str] = dataclasses.field(default_factory=list)


def check(st: store.Store) -> Report:
    report = Report()
    kept = st.maintenance
    for blob in gc.stored_blobs(st):
        try:
            actual = kept.hash_blob(blob)
        except FileNotFoundError:
            # A blob directory without data is a write interrupted before its atomic rename: clients
            # never saw it and gc removes it. Data missing under a link is reported below.
            continue
        if actual != blob.encoded:
            report.corruption.append(f"blob {blob}: content does not match its digest (corrupt)")
    for repo in st.catalog():
        for blob in kept.layer_links(repo):
            if kept.blob_size(blob) is None:
                report.corruption.append(f"repository {repo}: layer link to missing blob {blob}")
        revisions = set(kept.revisions(repo))
        for revision in sorted(revisions):
            _check_manifest(st, report, repo=repo, revision=revision, revisions=revisions)
        for tag in kept.tag_names(repo):
            try:
                target = digest.parse(kept.tag(repo, tag)[0])
            except (FileNotFoundError, ValueError, UnicodeDecodeError):
                report.corruption.append(f"repository {repo}: tag {tag} is unreadable")
                continue
            if target not in revisions:
                # Deleting a manifest deletes its tags first, so a tag to nothing is never the API's doing.
                report.corruption.append(f"repository {repo}: tag {tag} points to missing manifest {target}")
    return report


def _check_manifest(
    st: store.Store, report: Report, *, repo: str, revision: digest.Digest, revisions: set[digest.Digest]
) -> None:
    kept = st.maintenance
    mirrored = st.is_mirrored(repo)
    try:
        found = st.get_manifest(repo, revision)
    except store.ManifestUnknownError:
        report.corruption.append(f"repository {repo}: manifest {revision} data missing")
        return
    try:
        parsed = manifests.parse(found.data, content_type=found.media_type, strict=False)
    except manifests.ManifestInvalidError as exc:
        report.corruption.append(f"repository {repo}: manifest {revision} invalid: {exc}")
        return
    for blob in parsed.required_blobs():
        if mirrored and not kept.links(repo, blob):
            report.uncached.append(f"repository {repo}: manifest {revision} blob {blob} not fetched yet")
        elif kept.blob_size(blob) is None:
            report.corruption.append(f"repository {repo}: manifest {revision} references missing blob {blob}")
        elif not kept.links(repo, blob):
            report.dangling.append(
                f"repository {repo}: manifest {revision} references blob {blob}, deleted from the repository"
            )
    for child in parsed.manifests:
        if child.digest not in revisions and mirrored:
            report.uncached.append(
                f"repository {repo}: index {revision} manifest {child.digest} not fetched yet"
            )
        elif child.digest not in revisions:
            report.dangling.append(
                f"repository {repo}: index {revision} references manifest {child.digest}, "
                "deleted from the repository"
            )
