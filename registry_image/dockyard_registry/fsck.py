"""fsck: re-hash every blob and check every link, tag and manifest reference.

Owns: finding corruption and dangling references and describing each in one line. Must not: repair or
delete anything (that is a human decision; `gc` removes only unreferenced content).
"""

from __future__ import annotations

from dockyard_registry import digest, gc, manifests, paths, store

_CHUNK = 1 << 20


def check(st: store.Store) -> list[str]:
    problems: list[str] = []
    driver = st.driver
    for blob in gc.stored_blobs(st):
        data = paths.blob_data(blob)
        if driver.size(data) is None:
            # A blob directory without data is a write interrupted before its atomic rename: clients
            # never saw it and gc removes it. Data missing under a link is reported below.
            continue
        hasher = digest.new_hasher(blob.algorithm)
        with driver.open_reader(data) as f:
            while chunk := f.read(_CHUNK):
                hasher.update(chunk)
        if hasher.hexdigest() != blob.encoded:
            problems.append(f"blob {blob}: content does not match its digest (corrupt)")
    for repo in st.catalog():
        for blob in gc.linked(st, paths.layers(repo)):
            if driver.size(paths.blob_data(blob)) is None:
                problems.append(f"repository {repo}: layer link to missing blob {blob}")
        revisions = set(gc.linked(st, paths.revisions(repo)))
        for revision in sorted(revisions):
            try:
                found = st.get_manifest(repo, revision)
            except store.ManifestUnknownError:
                problems.append(f"repository {repo}: manifest {revision} data missing")
                continue
            try:
                parsed = manifests.parse(found.data, content_type=found.media_type, strict=False)
            except manifests.ManifestInvalidError as exc:
                problems.append(f"repository {repo}: manifest {revision} invalid: {exc}")
                continue
            for blob in parsed.required_blobs():
                if (
                    driver.size(paths.layer_link(repo, blob)) is None
                    or driver.size(paths.blob_data(blob)) is None
                ):
                    problems.append(f"repository {repo}: manifest {revision} references missing blob {blob}")
            for child in parsed.manifests:
                if child.digest not in revisions:
                    problems.append(
                        f"repository {repo}: index {revision} references missing manifest {child.digest}"
                    )
        for tag in driver.list(paths.tags(repo)):
            try:
                target = digest.parse(driver.get(paths.tag_link(repo, tag)).decode().strip())
            except (FileNotFoundError, ValueError, UnicodeDecodeError):
                problems.append(f"repository {repo}: tag {tag} is unreadable")
                continue
            if target not in revisions:
                problems.append(f"repository {repo}: tag {tag} points to missing manifest {target}")
    return problems
