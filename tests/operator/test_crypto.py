"""Password hashing with injected randomness (`crypto`, the operator's bcrypt).

Covers: bcrypt hashes verify, an existing hash is reused for an unchanged password and replaced for a changed
one, the salt factory is injected, passwords over 72 bytes or empty are refused.
"""

from __future__ import annotations

import bcrypt
import pytest

from dockyard_common import htpasswd
from dockyard_operator import crypto


def test_a_hash_verifies_its_password_only() -> None:
    hashed = crypto.hash_password(b"pw-one", rounds=4)
    assert hashed.startswith("$2b$04$")
    assert crypto.verify_password(b"pw-one", hashed)
    assert not crypto.verify_password(b"pw-two", hashed)
    assert not crypto.verify_password(b"pw-one", "not-a-hash")


def test_an_unchanged_password_keeps_its_hash_and_a_changed_one_gets_a_new_hash() -> None:
    existing = {"alice": crypto.hash_password(b"old", rounds=4)}
    assert (
        crypto.reuse_or_hash(user="alice", password=b"old", existing=existing, rounds=4) == existing["alice"]
    )
    fresh = crypto.reuse_or_hash(user="alice", password=b"new", existing=existing, rounds=4)
    assert fresh != existing["alice"] and crypto.verify_password(b"new", fresh)


def test_the_salt_factory_is_injected() -> None:
    salt = bcrypt.gensalt(rounds=4)
    assert crypto.hash_password(b"pw", rounds=4, salt_factory=lambda _: salt) == crypto.hash_password(
        b"pw", rounds=4, salt_factory=lambda _: salt
    )


@pytest.mark.parametrize("password", [b"", b"x" * 73])
def test_passwords_bcrypt_cannot_hash_faithfully_are_refused(password: bytes) -> None:
    with pytest.raises(htpasswd.PasswordError):
        crypto.hash_password(password, rounds=4)
