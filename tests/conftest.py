"""Fixtures shared across the test packages.

`s3_server`: the real S3-compatible server (gofakes3 from the tool cache, `tests.support.s3server`), one per
test module; the module's tests are skipped, saying why, when the server is not built.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import s3server


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3server.S3Server]:
    reason = s3server.available()
    if reason is not None:
        pytest.skip(reason)
    with s3server.running(tmp_path_factory.mktemp("s3")) as server:
        yield server
