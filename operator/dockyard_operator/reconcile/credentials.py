"""Step: the users' passwords → htpasswd and access.yaml, hashing only what changed.

Owns: reading each user's password Secret (a missing Secret or key, or an unusable password, blocks the pass
with a problem naming it), reusing the bcrypt hash already in `<registry>-htpasswd` when the password still
verifies, and the cache of passwords already proven to match their hash: bcrypt costs as much to verify as to
hash, and the periodic resync would otherwise pay it for every user of every registry on every pass. A
password Secret that many registries (or users) of one namespace reference is hashed once: the hash made for
that very Secret key and password is reused, so their htpasswd lines are equal, which tells a reader nothing
their specs do not already say.
Must not: put a password anywhere but into bcrypt, or write anything (the children step writes the Secret).
"""

from __future__ import annotations

import asyncio
import hmac
import secrets

from dockyard_common import htpasswd
from dockyard_operator import crypto, model, settings
from dockyard_operator.builders import htpasswd_secret
from dockyard_operator.conditions import Reason
from dockyard_operator.reconcile import context


class Credentials:
    """One per operator process: holds the verified-password cache across passes."""

    def __init__(self, *, reader: context.Reader, config: settings.Settings, cache_key: bytes | None) -> None:
        self._reader = reader
        self._rounds = config.bcrypt_rounds
        # Passwords already proven to match their hash, remembered as keyed HMACs (the key never leaves this
        # process, so the tags are useless to anyone reading memory dumps without it).
        self._cache_key = cache_key if cache_key is not None else secrets.token_bytes(32)
        self._verified: dict[tuple[str, str, str], tuple[bytes, str]] = {}
        # (namespace, Secret, key) -> (tag of its password, a hash proven to match it): one bcrypt per
        # password Secret, not per registry referencing it. One entry per Secret key, replaced on change.
        self._shared: dict[tuple[str, str, str], tuple[bytes, str]] = {}
        self._hashing: dict[tuple[str, str, str], asyncio.Lock] = {}

    async def users(self, run: context.Pass) -> context.Users:
        """(htpasswd, access.yaml); raises `context.Blocked` naming every unusable password."""
        problems: list[context.Problem] = []
        read: dict[str, dict[str, bytes] | None] = {}
        passwords: dict[str, tuple[tuple[str, str, str], bytes]] = {}
        for user in run.spec.auth.users:
            ref = user.password_secret_ref
            if ref.name not in read:
                read[ref.name] = await context.secret(self._reader, namespace=run.namespace, name=ref.name)
            data = read[ref.name]
            if data is None:
                problems.append(
                    context.Problem(
                        Reason.SECRET_NOT_FOUND, f"user {user.name}: Secret {ref.name!r} not found"
                    )
                )
                continue
            if ref.key not in data:
                problems.append(
                    context.Problem(
                        Reason.SECRET_KEY_MISSING,
                        f"user {user.name}: Secret {ref.name!r} has no key {ref.key!r}",
                    )
                )
                continue
            try:
                htpasswd.check_password(data[ref.key])
            except htpasswd.PasswordError as exc:
                problems.append(
                    context.Problem(
                        Reason.INVALID_PASSWORD,
                        f"user {user.name}: Secret {ref.name!r} key {ref.key!r}: {exc}",
                    )
                )
                continue
            passwords[user.name] = ((run.namespace, ref.name, ref.key), data[ref.key])
        if problems:
            raise context.Blocked(problems)
        current_object = await context.own_secret_object(
            self._reader, owner=run.owner, name=run.names.htpasswd_secret
        )
        current = context.decode(current_object)
        existing = htpasswd.parse((current or {}).get("htpasswd", b"").decode("utf-8", "replace"))
        hashes: dict[str, str] = {}
        for user_name, (source, password) in passwords.items():
            key = (run.namespace, run.names.registry, user_name)
            tag = hmac.digest(self._cache_key, password, "sha256")
            current_hash = existing.get(user_name)
            if current_hash is not None and self._verified.get(key) == (tag, current_hash):
                hashes[user_name] = current_hash  # verified on an earlier pass
                continue
            hashes[user_name] = await self._hash(
                source, tag=tag, user=user_name, password=password, existing=existing
            )
            self._verified[key] = (tag, hashes[user_name])
        namespaces: dict[str, dict[str, str]] | None = None
        if htpasswd_secret.needs_namespaces(run.spec.auth):
            namespaces = {
                ns["metadata"]["name"]: dict(ns["metadata"].get("labels") or {})
                for ns in await self._reader.list_namespaces()
                if not (ns["metadata"].get("deletionTimestamp"))
            }
        return context.Users(
            htpasswd=htpasswd.render(hashes),
            access_yaml=htpasswd_secret.access_yaml(run.spec.auth, namespaces=namespaces),
            token_key=token_key(run.spec, current),
            read=context.read_objects(current_object),
        )

    async def _hash(
        self,
        source: tuple[str, str, str],
        *,
        tag: bytes,
        user: str,
        password: bytes,
        existing: dict[str, str],
    ) -> str:
        """The user's hash: the one in place when it still verifies, else the one already made for this
        Secret key's password, else a new one (made once however many passes want it at the same time)."""
        current = existing.get(user)
        async with self._hashing.setdefault(source, asyncio.Lock()):
            shared = self._shared.get(source)
            known = shared[1] if shared is not None and shared[0] == tag else None
            if known is None:
                # bcrypt is deliberately slow: keep it off the event loop that serves every other registry.
                made = await asyncio.to_thread(
                    crypto.reuse_or_hash, user=user, password=password, existing=existing, rounds=self._rounds
                )
                self._shared[source] = (tag, made)
                return made
        if current is None or current == known:
            return known  # proven to match this very password when it was made or verified
        # A hash of its own from before (an older operator's): kept while it verifies, so no Secret changes.
        keep = await asyncio.to_thread(crypto.verify_password, password, current)
        return current if keep else known


def token_key(spec: model.PrivateRegistrySpec, current: dict[str, bytes] | None) -> str:
    """The registry token key: kept once made (tokens already handed out stay valid), made only when
    spec.pullSecrets.tokenLifetime asks for short-lived pull secrets, the registry offers the token flow
    (its replicas must accept each other's tokens), or nodes need a credential for a wired mirror that
    takes no anonymous pulls."""
    chosen = spec.pull_secrets
    short_lived = chosen is not None and chosen.token_lifetime is not None
    node_credentials = spec.node_trust.enabled and any(m.needs_node_credential for m in spec.mirrors)
    if not short_lived and not spec.auth.token_flow and not node_credentials:
        return ""
    existing = (current or {}).get(htpasswd_secret.TOKEN_KEY_FILE, b"").decode("ascii", "replace").strip()
    return existing if len(existing) >= 64 else secrets.token_hex(32)
