"""Pure modules: digest and reference grammars, the path layout, the error table, manifest parsing.

Covers: valid/invalid/unsupported digests; repository names (uppercase, `..`, leading separators,
percent signs, over 255 chars) and tags; that paths.py keeps every path under its own prefixes and
content-addresses blobs; that every OCI code has the right status and that domain errors translate
(unknown exceptions do not); manifest parsing of each media type, subject/artifactType/annotations,
foreign layers (exempt only with urls), size limit and every way a manifest can be invalid; stored
manifests read leniently (strict=False) so gc still sees the blobs of what an earlier version accepted.
"""

from __future__ import annotations

import json

import pytest

from dockyard_registry import digest, errors, manifests, paths, reference, store

HEX = "a" * 64


def test_sha256_and_sha512_digests_parse() -> None:
    d = digest.parse(f"sha256:{HEX}")
    assert (d.algorithm, d.encoded, str(d)) == ("sha256", HEX, f"sha256:{HEX}")
    assert digest.parse("sha512:" + "b" * 128).algorithm == "sha512"


@pytest.mark.parametrize(
    "value",
    [
        "sha256:baddigeststring",
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "sha256",
        ":abc",
        "sha256:",
        "SHA256:" + HEX,
        "sha256:" + HEX + "/..",
        "sha512:" + HEX,
    ],
)
def test_malformed_digests_are_invalid(value: str) -> None:
    with pytest.raises(digest.DigestInvalidError):
        digest.parse(value)


def test_well_formed_digest_of_unknown_algorithm_is_unsupported() -> None:
    with pytest.raises(digest.DigestUnsupportedError):
        digest.parse("md5:d41d8cd98f00b204e9800998ecf8427e")


def test_of_bytes_matches_hashlib() -> None:
    assert str(digest.of_bytes(b"hello")) == (
        "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    )


@pytest.mark.parametrize("name", ["a", "library/ubuntu", "a-b/c_d/e.f", "a__b", "a---b/0"])
def test_valid_repository_names(name: str) -> None:
    assert reference.validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "Upper",
        "a/../b",
        "..",
        "/leading",
        "trailing/",
        "a//b",
        "-a",
        "a/_layers",
        "a%2Fb",
        "a/.b",
        "",
        "a b",
        "a" * 256,
    ],
)
def test_invalid_repository_names_are_rejected(name: str) -> None:
    with pytest.raises(reference.NameInvalidError):
        reference.validate_name(name)


def test_name_of_exactly_255_characters_is_allowed() -> None:
    assert reference.is_valid_name("a" * 255)


@pytest.mark.parametrize("tag", ["latest", "v1.0", "_x", "A" * 128])
def test_valid_tags(tag: str) -> None:
    assert reference.validate_tag(tag) == tag


@pytest.mark.parametrize("tag", [".hidden", "-x", "a" * 129, "a/b", "..", "a%20b", ""])
def test_invalid_tags_are_rejected(tag: str) -> None:
    with pytest.raises(reference.TagInvalidError):
        reference.validate_tag(tag)


def test_reference_with_colon_is_parsed_as_a_digest() -> None:
    assert isinstance(reference.parse_reference(f"sha256:{HEX}"), digest.Digest)
    assert reference.parse_reference("v1") == "v1"
    with pytest.raises(digest.DigestInvalidError):
        reference.parse_reference("sha256:nothex")


def test_blob_paths_are_content_addressed_and_shared_by_repositories() -> None:
    d = digest.parse(f"sha256:{HEX}")
    assert paths.blob_data(d) == f"blobs/sha256/aa/{HEX}/data"
    assert paths.layer_link("team/app", d) == f"repositories/team/app/_layers/sha256/{HEX}"
    assert paths.revision_link("x", d).startswith("repositories/x/_manifests/revisions/")
    assert paths.tag_link("x", "v1") == "repositories/x/_manifests/tags/v1"


def test_reserved_repository_children_cannot_be_repository_components() -> None:
    for reserved in paths.RESERVED:
        assert not reference.is_valid_name(f"a/{reserved}")


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("BLOB_UNKNOWN", 404),
        ("BLOB_UPLOAD_INVALID", 400),
        ("BLOB_UPLOAD_UNKNOWN", 404),
        ("DIGEST_INVALID", 400),
        ("MANIFEST_BLOB_UNKNOWN", 400),
        ("MANIFEST_INVALID", 400),
        ("MANIFEST_UNKNOWN", 404),
        ("NAME_INVALID", 400),
        ("NAME_UNKNOWN", 404),
        ("SIZE_INVALID", 400),
        ("RANGE_INVALID", 416),
        ("TAG_INVALID", 400),
        ("UNAUTHORIZED", 401),
        ("DENIED", 403),
        ("UNSUPPORTED", 405),
        ("TOO_MANY_REQUESTS", 429),
        ("UNKNOWN", 500),
    ],
)
def test_error_table_has_each_oci_code_with_its_status(code: str, status: int) -> None:
    assert errors.Code[code].status == status


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (store.BlobUnknownError("x"), "BLOB_UNKNOWN"),
        (store.UploadUnknownError("x"), "BLOB_UPLOAD_UNKNOWN"),
        (store.DigestMismatchError("x"), "DIGEST_INVALID"),
        (store.ManifestUnknownError("x"), "MANIFEST_UNKNOWN"),
        (store.ManifestBlobUnknownError("x"), "MANIFEST_BLOB_UNKNOWN"),
        (store.NameUnknownError("x"), "NAME_UNKNOWN"),
        (store.RangeInvalidError("x", size=0), "RANGE_INVALID"),
        (store.SizeMismatchError("x"), "SIZE_INVALID"),
        (manifests.ManifestInvalidError("x"), "MANIFEST_INVALID"),
        (reference.NameInvalidError("x"), "NAME_INVALID"),
        (reference.TagInvalidError("x"), "TAG_INVALID"),
        (digest.DigestInvalidError("x"), "DIGEST_INVALID"),
        (digest.DigestUnsupportedError("x"), "UNSUPPORTED"),
    ],
)
def test_domain_errors_translate_to_their_oci_code(exc: Exception, code: str) -> None:
    translated = errors.translate(exc)
    assert translated is not None and translated.code.name == code


def test_unknown_exceptions_are_not_translated() -> None:
    assert errors.translate(KeyError("boom")) is None


def test_envelope_is_the_spec_json_shape() -> None:
    body = json.loads(errors.envelope(errors.OciError(errors.Code.BLOB_UNKNOWN, "gone", detail={"d": 1})))
    assert body == {"errors": [{"code": "BLOB_UNKNOWN", "message": "gone", "detail": {"d": 1}}]}


def _desc(media_type: str, data: bytes = b"x", **extra: object) -> dict[str, object]:
    return {"mediaType": media_type, "digest": str(digest.of_bytes(data)), "size": len(data), **extra}


def test_image_manifest_lists_config_and_layers_as_blobs() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": manifests.OCI_MANIFEST,
        "config": _desc("application/vnd.oci.image.config.v1+json", b"c"),
        "layers": [_desc("application/vnd.oci.image.layer.v1.tar", b"l")],
    }
    m = manifests.parse(json.dumps(doc).encode(), content_type=None)
    assert m.media_type == manifests.OCI_MANIFEST
    assert m.required_blobs() == (digest.of_bytes(b"c"), digest.of_bytes(b"l"))
    assert m.artifact_type == "application/vnd.oci.image.config.v1+json"


def test_index_lists_child_manifests_and_keeps_subject_artifact_type_and_annotations() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": manifests.OCI_INDEX,
        "artifactType": "application/x-sbom",
        "manifests": [_desc(manifests.OCI_MANIFEST, b"m")],
        "subject": _desc(manifests.OCI_MANIFEST, b"s"),
        "annotations": {"k": "v"},
    }
    m = manifests.parse(json.dumps(doc).encode(), content_type=manifests.OCI_INDEX)
    assert [c.digest for c in m.manifests] == [digest.of_bytes(b"m")]
    assert m.subject is not None and m.subject.digest == digest.of_bytes(b"s")
    assert (m.artifact_type, m.annotations) == ("application/x-sbom", {"k": "v"})


def test_docker_schema2_types_are_accepted_from_content_type() -> None:
    doc = {
        "schemaVersion": 2,
        "config": _desc("application/vnd.docker.container.image.v1+json"),
        "layers": [],
    }
    m = manifests.parse(json.dumps(doc).encode(), content_type=manifests.DOCKER_MANIFEST)
    assert m.media_type == manifests.DOCKER_MANIFEST
    lst = {"schemaVersion": 2, "mediaType": manifests.DOCKER_LIST, "manifests": []}
    assert manifests.parse(json.dumps(lst).encode(), content_type=None).media_type == manifests.DOCKER_LIST


def test_only_foreign_layers_with_urls_are_not_required() -> None:
    foreign = "application/vnd.oci.image.layer.nondistributable.v1.tar"
    doc = {
        "schemaVersion": 2,
        "mediaType": manifests.OCI_MANIFEST,
        "config": _desc("c/t", b"c"),
        "layers": [
            _desc(foreign, b"n", urls=["https://x"]),
            _desc(foreign, b"without urls"),
            _desc("application/vnd.oci.image.layer.v1.tar", b"u", urls=["https://x"]),
        ],
    }
    parsed = manifests.parse(json.dumps(doc).encode(), content_type=None)
    assert parsed.required_blobs() == tuple(digest.of_bytes(x) for x in (b"c", b"without urls", b"u"))
    assert [b.urls for b in parsed.blobs] == [(), ("https://x",), (), ("https://x",)]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"schemaVersion": 1}', "schemaVersion"),
        (b'{"schemaVersion": 2, "mediaType": "text/plain"}', "unsupported manifest media type"),
        (b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}', "no config"),
        (
            b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": '
            b'{"mediaType": "a", "digest": "sha256:bad", "size": 1}}',
            "config.digest",
        ),
        (
            b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": '
            b'{"mediaType": "a", "digest": "sha256:' + b"a" * 64 + b'", "size": -1}}',
            "config.size",
        ),
        (b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json"}', "manifests list"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_invalid_manifests_are_rejected_with_a_reason(body: bytes, message: str) -> None:
    with pytest.raises(manifests.ManifestInvalidError, match=message):
        manifests.parse(body, content_type=None)


def test_content_type_contradicting_the_body_media_type_is_rejected() -> None:
    doc = {"schemaVersion": 2, "mediaType": manifests.OCI_INDEX, "manifests": []}
    with pytest.raises(manifests.ManifestInvalidError, match="does not match"):
        manifests.parse(json.dumps(doc).encode(), content_type=manifests.OCI_MANIFEST)


def test_manifest_over_4_mib_is_rejected_before_parsing() -> None:
    with pytest.raises(manifests.ManifestInvalidError, match="larger than"):
        manifests.parse(b" " * (manifests.MAX_MANIFEST_BYTES + 1), content_type=None)


def test_stored_manifests_are_read_leniently_so_gc_still_sees_their_blobs() -> None:
    """A manifest an earlier version accepted (UTF-16, a duplicate key) must still tell gc its blobs."""
    doc = {
        "schemaVersion": 2,
        "mediaType": manifests.OCI_MANIFEST,
        "config": _desc("c/t", b"c"),
        "layers": [],
    }
    for data in (
        json.dumps(doc).encode("utf-16"),
        json.dumps(doc).encode()[:-1] + b', "Layers": []}',
    ):
        with pytest.raises(manifests.ManifestInvalidError):
            manifests.parse(data, content_type=None)
        lenient = manifests.parse(data, content_type=None, strict=False)
        assert lenient.required_blobs() == (digest.of_bytes(b"c"),)


def test_a_manifest_nested_too_deeply_is_invalid_in_both_modes() -> None:
    deep = b'{"schemaVersion": 2, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for strict in (True, False):
        with pytest.raises(manifests.ManifestInvalidError, match="nested too deeply"):
            manifests.parse(deep, content_type=None, strict=strict)
