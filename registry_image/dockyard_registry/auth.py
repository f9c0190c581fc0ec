"""Authentication (htpasswd, bcrypt) and authorization (per-user access rules on repository globs).

Owns: deciding who a request is and whether they may pull, push or delete in a repository; reloading
htpasswd and access.yaml when they change. Must not: know HTTP routing or render responses (handlers do),
and must never put a password (or anything derived from one without a secret key) into a log, an
exception message or a cache key.

Cost model: bcrypt is paid once per credential. A verified credential is remembered per user as
HMAC(process-random key, user NUL password), compared with `hmac.compare_digest`, and dropped when the
user's htpasswd entry changes. Unknown users are verified against a dummy hash of the same cost so the
response time does not reveal which users exist. bcrypt runs in a thread so the event loop keeps serving.

Fairness under a password flood: every fresh-credential check is charged to the client that asked for it
(its address, chosen by the HTTP edge: the peer, or nginx's X-Real-IP from a trusted proxy). A client has
a small budget of checks waiting or running (`max_pending_per_client`); beyond it that client alone is
answered TooManyVerificationsError (429). Waiting checks are served round-robin over clients, so a
first-time login from one address waits for at most one check of each other busy address, however
many requests a flooder keeps queued. `max_pending` bounds all waiting checks together (memory), the
last line against a flood from many addresses.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import dataclasses
import enum
import functools
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from passlib.hash import bcrypt

from dockyard_common import htpasswd as htpasswd_file
from dockyard_registry import identity as identity_
from dockyard_registry import tokens as tokens_

log = logging.getLogger(__name__)
T = TypeVar("T")
_BCRYPT_COST_RE = re.compile(r"^\$2[abxy]?\$(\d\d)\$")
_DEFAULT_COST = 10


class Action(enum.Enum):
    PULL = "pull"
    PUSH = "push"
    DELETE = "delete"


class Level(enum.Enum):
    PULL = "pull"
    PUSH = "push"
    ADMIN = "admin"

    @property
    def actions(self) -> frozenset[Action]:
        return _LEVEL_ACTIONS[self]


_LEVEL_ACTIONS = {
    Level.PULL: frozenset({Action.PULL}),
    Level.PUSH: frozenset({Action.PULL, Action.PUSH}),
    Level.ADMIN: frozenset({Action.PULL, Action.PUSH, Action.DELETE}),
}


class AccessFileError(ValueError):
    pass


class BadCredentialsError(Exception):
    """Credentials were sent but are wrong or malformed (the message never contains them)."""


class TooManyVerificationsError(Exception):
    """Too many bcrypt checks are already queued: shed load instead of queueing without bound."""


@dataclasses.dataclass(frozen=True)
class UserRule:
    level: Level = Level.PUSH
    repositories: tuple[str, ...] = ("**",)

    def permits(self, repository: str, action: Action) -> bool:
        return action in self.level.actions and any(glob_match(g, repository) for g in self.repositories)


@dataclasses.dataclass(frozen=True)
class ServiceAccountRule:
    """Access for Kubernetes ServiceAccounts: `namespace` and `name` are exact names or `*`/`?` patterns."""

    namespace: str
    name: str = "*"
    rule: UserRule = UserRule(level=Level.PULL)

    def matches(self, principal: identity_.Principal) -> bool:
        return (
            principal.kind == "kubernetes"
            and principal.namespace is not None
            and principal.service_account is not None
            and identity_.name_matches(self.namespace, principal.namespace)
            and identity_.name_matches(self.name, principal.service_account)
        )


@dataclasses.dataclass(frozen=True)
class OidcRule:
    """Access for users or groups of one OIDC issuer (its name in the identities file); patterns allowed."""

    issuer: str
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    rule: UserRule = UserRule(level=Level.PULL)

    def matches(self, principal: identity_.Principal) -> bool:
        if principal.kind != "oidc" or principal.issuer != self.issuer:
            return False
        return any(identity_.name_matches(u, principal.subject) for u in self.users) or any(
            identity_.name_matches(g, group) for g in self.groups for group in principal.groups
        )


@dataclasses.dataclass(frozen=True)
class AccessRules:
    anonymous_pull: bool = False
    users: Mapping[str, UserRule] = dataclasses.field(default_factory=dict)
    service_accounts: tuple[ServiceAccountRule, ...] = ()
    oidc: tuple[OidcRule, ...] = ()


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who made a request: a user name, or None for anonymous; `principal` for a verified token.

    A token's `user` is its principal's subject (`system:serviceaccount:ns:name`, or `oidc:<issuer>:<sub>`),
    which no htpasswd user can have (`:` separates htpasswd fields), so upload budgets never mix them.
    """

    user: str | None
    principal: identity_.Principal | None = None
    grants: tuple[tokens_.Grant, ...] | None = None
    """Set for a registry token (`/token`): exactly these grants, nothing from the rules."""


ANONYMOUS = Identity(user=None)


@functools.lru_cache(maxsize=1024)
def presented_secret(authorization: str | None) -> str:
    """The token or password an Authorization header carries: a Bearer token, or the password of Basic
    credentials; "" when there is none or the header is malformed."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() != "basic":
        return ""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[2]


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("^" + "".join(out) + "$")


def glob_match(pattern: str, repository: str) -> bool:
    """`*` matches within one path segment, `**` across segments (`team/**` matches `team/a/b`)."""
    return _glob_regex(pattern).match(repository) is not None


def parse_access(text: str) -> AccessRules:
    """Parse access.yaml; raises AccessFileError with a message naming the bad entry."""
    try:
        doc = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise AccessFileError(f"access file is not valid YAML: {exc}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise AccessFileError("access file must be a mapping")
    unknown = set(doc) - {"anonymousPull", "users", "serviceAccounts", "oidc"}
    if unknown:
        raise AccessFileError(f"access file has unknown keys: {sorted(unknown)}")
    anonymous = doc.get("anonymousPull", False)
    if not isinstance(anonymous, bool):
        raise AccessFileError("anonymousPull must be true or false")
    users_doc = doc.get("users") or {}
    if not isinstance(users_doc, dict):
        raise AccessFileError("users must be a mapping of user name to rule")
    users: dict[str, UserRule] = {}
    for name, rule in users_doc.items():
        users[str(name)] = _parse_rule(str(name), rule or {})
    return AccessRules(
        anonymous_pull=anonymous,
        users=users,
        service_accounts=tuple(_parse_sa_rules(doc.get("serviceAccounts") or [])),
        oidc=tuple(_parse_oidc_rules(doc.get("oidc") or [])),
    )


def _parse_sa_rules(entries: Any) -> list[ServiceAccountRule]:
    if not isinstance(entries, list):
        raise AccessFileError("serviceAccounts must be a list of rules")
    out = []
    for i, entry in enumerate(entries):
        where = f"serviceAccounts[{i}]"
        if not isinstance(entry, dict):
            raise AccessFileError(f"{where} must be a mapping")
        namespace, name = entry.get("namespace"), entry.get("name", "*")
        if not isinstance(namespace, str) or not namespace or not isinstance(name, str) or not name:
            raise AccessFileError(f"{where}: namespace (and name, if given) must be non-empty strings")
        rest = {k: v for k, v in entry.items() if k not in ("namespace", "name")}
        out.append(ServiceAccountRule(namespace=namespace, name=name, rule=_parse_rule(where, rest, "pull")))
    return out


def _parse_oidc_rules(entries: Any) -> list[OidcRule]:
    if not isinstance(entries, list):
        raise AccessFileError("oidc must be a list of rules")
    out = []
    for i, entry in enumerate(entries):
        where = f"oidc[{i}]"
        if not isinstance(entry, dict):
            raise AccessFileError(f"{where} must be a mapping")
        issuer = entry.get("issuer")
        if not isinstance(issuer, str) or not issuer:
            raise AccessFileError(f"{where}: issuer must name an issuer of the identities file")
        names: dict[str, tuple[str, ...]] = {}
        for key in ("users", "groups"):
            value = entry.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise AccessFileError(f"{where}: {key} must be a list of names")
            names[key] = tuple(value)
        if not names["users"] and not names["groups"]:
            raise AccessFileError(f"{where}: name at least one user or group")
        rest = {k: v for k, v in entry.items() if k not in ("issuer", "users", "groups")}
        out.append(
            OidcRule(
                issuer=issuer,
                users=names["users"],
                groups=names["groups"],
                rule=_parse_rule(where, rest, "pull"),
            )
        )
    return out


def _parse_rule(name: str, rule: Any, default: str = "push") -> UserRule:
    if not isinstance(rule, dict):
        raise AccessFileError(f"rule of user {name!r} must be a mapping")
    unknown = set(rule) - {"access", "repositories"}
    if unknown:
        raise AccessFileError(f"rule of user {name!r} has unknown keys: {sorted(unknown)}")
    try:
        level = Level(rule.get("access", default))
    except ValueError:
        raise AccessFileError(f"user {name!r}: access must be one of pull, push, admin") from None
    repos = rule.get("repositories", ["**"])
    if not isinstance(repos, list) or not repos or not all(isinstance(r, str) and r for r in repos):
        raise AccessFileError(f"user {name!r}: repositories must be a non-empty list of globs")
    return UserRule(level=level, repositories=tuple(repos))


def render_access(rules: AccessRules) -> str:
    users = {
        name: {"access": rule.level.value, "repositories": list(rule.repositories)}
        for name, rule in sorted(rules.users.items())
    }
    doc: dict[str, Any] = {"anonymousPull": rules.anonymous_pull, "users": users}
    if rules.service_accounts:
        doc["serviceAccounts"] = [
            {"namespace": r.namespace, "name": r.name, **_render_rule(r.rule)} for r in rules.service_accounts
        ]
    if rules.oidc:
        doc["oidc"] = [
            {"issuer": r.issuer, "users": list(r.users), "groups": list(r.groups), **_render_rule(r.rule)}
            for r in rules.oidc
        ]
    return yaml.safe_dump(doc, sort_keys=False)


def _render_rule(rule: UserRule) -> dict[str, Any]:
    return {"access": rule.level.value, "repositories": list(rule.repositories)}


class Reloading(Generic[T]):
    """A file parsed on first use and re-parsed when its stat changes (checked at most once a second)."""

    def __init__(
        self,
        path: Path | None,
        parse: Callable[[str], T],
        empty: T,
        *,
        clock: Callable[[], float] = time.monotonic,
        keep_when_removed: bool = False,
    ) -> None:
        self._path, self._parse, self._empty, self._clock = path, parse, empty, clock
        self._keep_when_removed = keep_when_removed
        self._value = empty
        self._signature: tuple[int, int, int] | None = None
        self._checked = -1e18

    def get(self) -> T:
        now = self._clock()
        if now - self._checked < 1.0:
            return self._value
        self._checked = now
        if self._path is None:
            return self._value
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            if self._keep_when_removed and self._signature is not None:
                log.error("%s disappeared; keeping the rules it last had", self._path)
                return self._value
            self._value, self._signature = self._empty, None
            return self._value
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        if signature != self._signature:
            try:
                self._value = self._parse(self._path.read_text())
                self._signature = signature
            except (ValueError, OSError) as exc:
                if self._signature is None:
                    raise
                # Keep serving with the last good rules rather than failing open or closed on a typo.
                log.error("keeping previous %s: %s", self._path, exc)
        return self._value


class Authenticator:
    def __init__(
        self,
        *,
        htpasswd: Path | None,
        access: Path | None,
        anonymous_pull: bool = False,
        clock: Callable[[], float] = time.monotonic,
        max_pending: int = 256,
        max_pending_per_client: int = 8,
        bcrypt_threads: int | None = None,
        tokens: identity_.TokenVerifier | None = None,
        registry_tokens: tokens_.RegistryTokens | None = None,
        anonymous_pull_repositories: tuple[str, ...] = (),
    ) -> None:
        # Globs anyone may pull without credentials whatever the access rules say: the repositories of
        # pull-through mirrors that allow it (mirrors.Mirror.anonymous_pull), so nodes wired to a mirror
        # pull through it without opening the rest of the registry.
        self.anonymous_pull_repositories = anonymous_pull_repositories
        # Issues and verifies the Docker token flow's Bearer tokens; None: that flow is off.
        self.registry_tokens = registry_tokens
        # Verifies JWT passwords (ServiceAccount / OIDC tokens); None: every password is an htpasswd one.
        self.tokens = tokens
        self._htpasswd: Reloading[dict[str, str]] = Reloading(htpasswd, htpasswd_file.parse, {}, clock=clock)
        # Access rules restrict users; losing the file must not widen anyone's rights (no rules means
        # push everywhere), so a removed file keeps its last rules. A removed htpasswd fails closed.
        self._access = Reloading(access, parse_access, AccessRules(), clock=clock, keep_when_removed=True)
        self._force_anonymous_pull = anonymous_pull
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, tuple[str, bytes]] = {}
        self._dummies: dict[int, str] = {}
        self._bcrypt_slots = FairSlots(bcrypt_threads or max(2, (os.cpu_count() or 2)))
        # Fresh credentials (wrong passwords above all) each cost a bcrypt; past this many waiting from one
        # client (or this many from all clients together), that client gets 429 rather than a queue spot.
        self.max_pending = max_pending
        self.max_pending_per_client = max_pending_per_client
        self._pending = 0
        self._pending_by_client: collections.Counter[str] = collections.Counter()
        self._inflight: dict[bytes, asyncio.Future[bool]] = {}
        # Credential checks by outcome, for the metrics: "hit" (cached), "miss" (bcrypt), "failure" (wrong).
        self.counts: collections.Counter[str] = collections.Counter()
        # Load eagerly so a broken access file fails at startup, not on the first request.
        self._htpasswd.get()
        self._access.get()

    async def authenticate(self, authorization: str | None, *, client: str = "") -> Identity:
        """Identity for an Authorization header; raises BadCredentialsError when credentials are wrong.

        `client` names who sent it (an address) for the fairness budget; TooManyVerificationsError when
        that client already has its share of fresh-credential checks waiting.
        """
        if not authorization:
            return ANONYMOUS
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and (own := self._registry_token_identity(value.strip())) is not None:
            return own
        if scheme.lower() == "bearer" and self.tokens is not None:
            return await self._token_identity(value.strip())
        if scheme.lower() != "basic":
            raise BadCredentialsError("only Basic authentication is supported")
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise BadCredentialsError("malformed Basic credentials") from None
        user, sep, password = decoded.partition(":")
        if not sep or not user:
            raise BadCredentialsError("malformed Basic credentials")
        # A registry token as a password too: what a pull secret can carry (kubelets send only Basic).
        if (own := self._registry_token_identity(password)) is not None:
            return own
        if self.tokens is not None and identity_.looks_like_jwt(password):
            # The user name is whatever the client had to send (docker login wants one); the token says who.
            return await self._token_identity(password)
        if await self.verify(user, password, client=client):
            return Identity(user=user)
        raise BadCredentialsError("invalid username or password")

    def _registry_token_identity(self, token: str) -> Identity | None:
        """The identity of one of this registry's own tokens; None when it is not one of ours."""
        issuer = self.registry_tokens
        if issuer is None or not identity_.looks_like_jwt(token) or not issuer.owns(token):
            return None
        try:
            verified = issuer.verify(token)
        except tokens_.RegistryTokenError as exc:
            raise BadCredentialsError(str(exc)) from None
        self.counts["token"] += 1
        return Identity(user=verified.subject, grants=verified.grants)

    async def _token_identity(self, token: str) -> Identity:
        assert self.tokens is not None
        try:
            principal = await self.tokens.verify(token)
        except identity_.TokenError as exc:
            self.counts["token_failure"] += 1
            log.info("token refused (%s): %s", exc.check, exc)
            raise BadCredentialsError(str(exc)) from None
        self.counts["token"] += 1
        user = principal.subject
        if principal.kind == "oidc":
            user = f"oidc:{principal.issuer}:{principal.subject}"
        return Identity(user=user, principal=principal)

    async def verify(self, user: str, password: str, *, client: str = "") -> bool:
        hashed = self._htpasswd.get().get(user)
        mac = hmac.new(self._key, user.encode() + b"\0" + password.encode(), "sha256").digest()
        cached = self._verified.get(user)
        if (
            hashed is not None
            and cached is not None
            and cached[0] == hashed
            and hmac.compare_digest(cached[1], mac)
        ):
            self.counts["hit"] += 1
            return True
        self.counts["miss"] += 1
        # One bcrypt per fresh credential however many requests bring it at once (a client opening many
        # connections right after login): the others wait for that check instead of queueing their own,
        # and only the client that started it is charged for it.
        inflight = self._inflight.get(mac)
        if inflight is None:
            self._admit(client)
            inflight = asyncio.ensure_future(
                self._check(user, password, hashed=hashed, mac=mac, client=client)
            )
            self._inflight[mac] = inflight
            inflight.add_done_callback(lambda _done: self._inflight.pop(mac, None))
        # Shielded: a client that disconnects must not cancel the check others are waiting for.
        ok = await asyncio.shield(inflight)
        if not ok:
            self.counts["failure"] += 1
        return ok

    def _admit(self, client: str) -> None:
        """Charge one fresh-credential check to `client`, or refuse it when over a budget."""
        if self._pending_by_client[client] >= self.max_pending_per_client:
            raise TooManyVerificationsError("too many password checks from this client; retry shortly")
        if self._pending >= self.max_pending:
            raise TooManyVerificationsError("too many password checks in progress; retry shortly")
        self._pending += 1
        self._pending_by_client[client] += 1

    def _discharge(self, client: str) -> None:
        self._pending -= 1
        self._pending_by_client[client] -= 1
        if self._pending_by_client[client] <= 0:
            del self._pending_by_client[client]  # no entry per address ever seen

    async def _check(self, user: str, password: str, *, hashed: str | None, mac: bytes, client: str) -> bool:
        try:
            # Unknown user: same bcrypt work against a dummy hash, so timing does not reveal who exists.
            if hashed is None:
                target = await asyncio.to_thread(self._dummy, self._typical_cost())
            else:
                target = hashed
            async with self._bcrypt_slots.turn(client):
                ok = await asyncio.to_thread(_bcrypt_verify, password, target)
        finally:
            self._discharge(client)
        if ok and hashed is not None:
            self._verified[user] = (hashed, mac)
            return True
        return False

    def _typical_cost(self) -> int:
        for hashed in self._htpasswd.get().values():
            m = _BCRYPT_COST_RE.match(hashed)
            if m:
                return int(m.group(1))
        return _DEFAULT_COST

    def _dummy(self, cost: int) -> str:
        if cost not in self._dummies:
            self._dummies[cost] = hash_password(secrets.token_urlsafe(16), rounds=cost)
        return self._dummies[cost]

    def permits(self, identity: Identity, repository: str, action: Action) -> bool:
        if identity.grants is not None:
            # A grant's repository is a name (from /token) or a glob (minted for a pull secret).
            return any(
                action.value in g.actions and glob_match(g.repository, repository) for g in identity.grants
            )
        rules = self._access.get()
        if identity.user is None:
            return action is Action.PULL and (
                self._force_anonymous_pull
                or rules.anonymous_pull
                or any(glob_match(g, repository) for g in self.anonymous_pull_repositories)
            )
        principal = identity.principal
        if principal is None:
            rule = rules.users.get(identity.user, UserRule())
            return rule.permits(repository, action)
        # A token holder has exactly what the rules naming it grant: no rule, no access.
        token_rules: tuple[ServiceAccountRule | OidcRule, ...] = (*rules.service_accounts, *rules.oidc)
        return any(r.matches(principal) and r.rule.permits(repository, action) for r in token_rules)


class FairSlots:
    """At most `size` holders at once; waiters are served round-robin over the keys they wait under.

    One FIFO queue per key (a client address), and the keys themselves in a rotation: a freed slot goes
    to the oldest waiter of the key at the front, and that key moves to the back if it still waits. A
    key with a thousand waiters therefore delays another key's first waiter by one turn, not a thousand.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._holders = 0
        self._waiting: dict[str, collections.deque[asyncio.Future[None]]] = {}  # insertion order: rotation

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    @contextlib.asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[None]:
        await self._acquire(key)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, key: str) -> None:
        if self._holders < self._size and not self._waiting:
            self._holders += 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, collections.deque()).append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()  # the slot was handed over just as we were cancelled: pass it on
            else:
                self._forget(key, granted)
            raise

    def _forget(self, key: str, granted: asyncio.Future[None]) -> None:
        queue = self._waiting.get(key)
        if queue is not None and granted in queue:
            queue.remove(granted)
            if not queue:
                del self._waiting[key]

    def _release(self) -> None:
        while self._waiting:
            key = next(iter(self._waiting))
            queue = self._waiting.pop(key)
            granted = queue.popleft()
            if queue:
                self._waiting[key] = queue  # to the back of the rotation
            if not granted.done():
                granted.set_result(None)  # the slot passes straight to it: holders unchanged
                return
        self._holders -= 1


def _bcrypt_verify(password: str, hashed: str) -> bool:
    if len(password.encode()) > htpasswd_file.MAX_PASSWORD_BYTES:
        return False
    try:
        return bool(bcrypt.verify(password, hashed))
    except ValueError:
        # A malformed htpasswd entry is a failed login, never a crash; the message has no secret.
        return False


def hash_password(password: str, *, rounds: int = _DEFAULT_COST) -> str:
    """An htpasswd -B compatible bcrypt hash ($2y$); `htpasswd.PasswordError` for an unusable password."""
    htpasswd_file.check_password(password.encode())
    return str(bcrypt.using(ident="2y", rounds=rounds).hash(password))
