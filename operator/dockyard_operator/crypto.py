"""Password hashes: the bcrypt entries of the htpasswd Secret.

Owns: hashing and verifying passwords with `bcrypt`, and keeping a hash that still verifies. The salt (the
randomness) is a parameter, so reuse decisions are testable. Certificates are `dockyard_common.pki`, the
htpasswd file's grammar and the password rules `dockyard_common.htpasswd`: the registry shares both.
Must not: talk to Kubernetes or log secrets; exceptions raised here never contain passwords.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import bcrypt

from dockyard_common import htpasswd

SaltFactory = Callable[[int], bytes]


def _default_salt(rounds: int) -> bytes:
    return bcrypt.gensalt(rounds=rounds)


def hash_password(password: bytes, *, rounds: int, salt_factory: SaltFactory = _default_salt) -> str:
    """A bcrypt hash in htpasswd form (`$2b$...`); `htpasswd.PasswordError` for an unusable password."""
    htpasswd.check_password(password)
    return bcrypt.hashpw(password, salt_factory(rounds)).decode("ascii")


def verify_password(password: bytes, hashed: str) -> bool:
    """Whether `password` matches the bcrypt `hashed`; any malformed hash simply does not match."""
    if not password or len(password) > htpasswd.MAX_PASSWORD_BYTES:
        return False
    try:
        return bool(bcrypt.checkpw(password, hashed.encode("ascii")))
    except (ValueError, UnicodeEncodeError):
        return False


def reuse_or_hash(
    *,
    user: str,
    password: bytes,
    existing: Mapping[str, str],
    rounds: int,
    salt_factory: SaltFactory = _default_salt,
) -> str:
    """The existing hash of `user` when it still verifies `password`, else a new one.

    Keeping verified hashes means the htpasswd Secret (and so the pod checksum) changes only when a password
    or the user set really changes, not on every reconcile.
    """
    current = existing.get(user)
    if current is not None and verify_password(password, current):
        return current
    return hash_password(password, rounds=rounds, salt_factory=salt_factory)
