"""The htpasswd file shared by the operator and the registry (`dockyard_common.htpasswd`).

Covers: rendering is sorted by user and parses back; comments, blank and malformed lines are skipped and a
later line for a user wins; a user name or hash that would break the line grammar is refused; passwords
bcrypt cannot hash faithfully (empty, over 72 bytes) are refused without the password in the message.
"""

from __future__ import annotations

import pytest

from dockyard_common import htpasswd


def test_htpasswd_renders_sorted_and_parses_back() -> None:
    text = htpasswd.render({"bob": "$2b$04$b", "alice": "$2b$04$a"})
    assert text == "alice:$2b$04$a\nbob:$2b$04$b\n"
    assert htpasswd.parse(text + "# comment\n\nmalformed\n") == {
        "alice": "$2b$04$a",
        "bob": "$2b$04$b",
    }


def test_a_later_line_for_the_same_user_wins_and_surrounding_space_is_ignored() -> None:
    assert htpasswd.parse("  alice:$2y$old  \r\nalice:$2y$new\n") == {"alice": "$2y$new"}


def test_an_empty_file_has_no_users() -> None:
    assert htpasswd.parse("") == {}
    assert htpasswd.render({}) == ""


@pytest.mark.parametrize(
    "entries", [{"": "$2b$x"}, {"a:b": "$2b$x"}, {"a\nb": "$2b$x"}, {"alice": "$2b$x\nmallory:$2b$y"}]
)
def test_entries_that_would_change_the_user_set_when_read_back_are_refused(entries: dict[str, str]) -> None:
    with pytest.raises(htpasswd.EntryError):
        htpasswd.render(entries)


@pytest.mark.parametrize("password", [b"", b"x" * 73])
def test_passwords_bcrypt_cannot_hash_faithfully_are_refused(password: bytes) -> None:
    with pytest.raises(htpasswd.PasswordError) as info:
        htpasswd.check_password(password)
    assert password.decode() not in str(info.value) or not password


def test_a_password_of_exactly_72_bytes_is_accepted() -> None:
    htpasswd.check_password("é".encode() * 36)
