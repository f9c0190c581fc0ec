"""The htpasswd file the operator renders into `<registry>-htpasswd` and the registry reads and edits.

Owns: the file's grammar (`user:hash` lines; blank lines, `#` comments and lines without a colon are
skipped), rendering it in a stable order, and what a password must be for bcrypt to hash it faithfully.
Must not: hash or verify (the operator uses `bcrypt`, the registry `passlib`: each keeps its own), read
files, or put a password into an error message.
"""

from __future__ import annotations

from collections.abc import Mapping

MAX_PASSWORD_BYTES = 72
"""bcrypt only looks at the first 72 bytes: a longer password is refused, never truncated silently."""


class PasswordError(ValueError):
    """A password bcrypt cannot hash faithfully (the message never contains the password)."""


class EntryError(ValueError):
    """A user name or hash that would break the file's one-entry-per-line grammar."""


def check_password(password: bytes) -> None:
    """Raise `PasswordError` when the password is empty or longer than bcrypt reads."""
    if not password:
        raise PasswordError("the password is empty")
    if len(password) > MAX_PASSWORD_BYTES:
        raise PasswordError(f"the password is longer than {MAX_PASSWORD_BYTES} bytes (bcrypt's limit)")


def parse(text: str) -> dict[str, str]:
    """`user:hash` lines to a dict (a later line for the same user wins); anything else is skipped."""
    entries: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        user, _, hashed = line.partition(":")
        entries[user] = hashed
    return entries


def render(entries: Mapping[str, str]) -> str:
    """One `user:hash` line per entry, sorted by user so that equal entries give equal bytes.

    Raises `EntryError` for a user name that is empty or holds a colon, or a user or hash holding a line
    break: either would be read back as a different set of users.
    """
    for user, hashed in entries.items():
        if not user or ":" in user or any(c in user + hashed for c in "\r\n"):
            raise EntryError(f"user {user[:64]!r} cannot be written to an htpasswd file")
    return "".join(f"{user}:{entries[user]}\n" for user in sorted(entries))
