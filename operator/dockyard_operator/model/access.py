"""Who may use a registry: users, anonymous pulls, and pull Secrets for other namespaces."""

from __future__ import annotations

from typing import Annotated, Literal

import pydantic

from dockyard_operator.model.types import (
    REPOSITORY_GLOB_PATTERN,
    RESOURCE_NAME_PATTERN,
    SECRET_KEY_PATTERN,
    USER_NAME_PATTERN,
    ApiModel,
    Duration,
    parse_duration,
)


class SecretKeyRef(ApiModel):
    """A key of a Secret in the registry's namespace."""

    name: Annotated[str, pydantic.StringConstraints(pattern=RESOURCE_NAME_PATTERN, max_length=253)]
    """Name of the Secret (same namespace as the registry)."""
    key: Annotated[str, pydantic.StringConstraints(pattern=SECRET_KEY_PATTERN, max_length=253)] = "password"
    """Key inside the Secret whose value is the password."""


class User(ApiModel):
    """A registry user; the password is read from a Secret and stored only as a bcrypt hash."""

    name: Annotated[str, pydantic.StringConstraints(pattern=USER_NAME_PATTERN, max_length=128)]
    """Login name (no colon)."""
    password_secret_ref: SecretKeyRef
    """The Secret key holding this user's password; never put a password in the registry object itself."""
    access: Literal["pull", "push", "admin"] = "pull"
    """pull: read only; push: pull and push; admin: pull, push and delete."""
    repositories: Annotated[
        list[Annotated[str, pydantic.StringConstraints(pattern=REPOSITORY_GLOB_PATTERN, max_length=255)]],
        pydantic.Field(min_length=1, max_length=64),
    ] = ["**"]
    """Repository globs this user may access: * matches within a path segment, ** across segments."""


Level = Literal["pull", "push", "admin"]
Repositories = Annotated[
    list[Annotated[str, pydantic.StringConstraints(pattern=REPOSITORY_GLOB_PATTERN, max_length=255)]],
    pydantic.Field(min_length=1, max_length=64),
]
NAME_OR_PATTERN = r"^[a-z0-9*?]([-a-z0-9.*?]*[a-z0-9*?])?$"
"""A namespace or ServiceAccount name, or a shell-style pattern of one (`team-*`, `*`)."""
CLAIM_VALUE_PATTERN = r"^[^\s]+$"


class ServiceAccountRule(ApiModel):
    """Access for Kubernetes ServiceAccounts presenting a token for this registry's audience."""

    namespace: Annotated[str, pydantic.StringConstraints(pattern=NAME_OR_PATTERN, max_length=63)] | None = (
        None
    )
    """The ServiceAccounts' namespace, or a pattern (`team-*`; `*` for every namespace)."""
    namespace_selector: dict[str, str] | None = None
    """Instead of `namespace`: every namespace carrying all these labels (matchLabels), as the operator
    sees them; a namespace labelled later is added within one resync period."""
    name: Annotated[str, pydantic.StringConstraints(pattern=NAME_OR_PATTERN, max_length=253)] = "*"
    """The ServiceAccount's name, or a pattern; default every ServiceAccount of the namespace."""
    access: Level = "pull"
    """pull: read only; push: pull and push; admin: pull, push and delete."""
    repositories: Repositories = ["**"]
    """Repository globs: * matches within a path segment, ** across segments."""

    @pydantic.model_validator(mode="after")
    def _one_namespace_choice(self) -> ServiceAccountRule:
        if (self.namespace is None) == (self.namespace_selector is None):
            raise ValueError("a serviceAccounts rule names exactly one of namespace and namespaceSelector")
        return self


class ServiceAccounts(ApiModel):
    """ServiceAccount tokens as credentials: verified offline against the cluster's own issuer."""

    audience: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=253)] | None = None
    """The audience tokens must be requested for (projected token `audience`, `kubectl create token
    --audience`); default `dockyard.dev/<namespace>/<registry>`."""
    token_review: bool = False
    """Also check each token with a TokenReview on first use, so a token of a deleted Pod or
    ServiceAccount stops working within tokenReviewCacheSeconds. Needs the registry Pods' ServiceAccount
    bound to system:auth-delegator (docs/security.md)."""
    token_review_cache_seconds: Annotated[int, pydantic.Field(ge=0, le=3600)] = 60
    """How long a TokenReview's answer is reused."""
    rules: Annotated[list[ServiceAccountRule], pydantic.Field(max_length=256)] = []
    """Who gets which access; a ServiceAccount no rule names has none."""


class OidcRule(ApiModel):
    """Access for users or groups of one OIDC issuer (patterns with `*` allowed)."""

    users: Annotated[
        list[Annotated[str, pydantic.StringConstraints(pattern=CLAIM_VALUE_PATTERN, max_length=512)]],
        pydantic.Field(max_length=64),
    ] = []
    """Values of the issuer's user claim this rule grants access to (or patterns: `*@example.com`)."""
    groups: Annotated[
        list[Annotated[str, pydantic.StringConstraints(pattern=CLAIM_VALUE_PATTERN, max_length=512)]],
        pydantic.Field(max_length=64),
    ] = []
    """Groups (values of the issuer's groups claim) this rule grants access to."""
    access: Level = "pull"
    """pull: read only; push: pull and push; admin: pull, push and delete."""
    repositories: Repositories = ["**"]
    """Repository globs: * matches within a path segment, ** across segments."""

    @pydantic.model_validator(mode="after")
    def _names_someone(self) -> OidcRule:
        if not self.users and not self.groups:
            raise ValueError("an oidc rule names at least one user or group")
        return self


class OidcClaims(ApiModel):
    """Which ID token claims name the user and its groups."""

    user: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=128)] = "sub"
    """The claim naming the user (e.g. sub, email, preferred_username)."""
    groups: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=128)] | None = None
    """The claim listing the user's groups; none by default."""


class OidcIssuer(ApiModel):
    """An external OIDC issuer (GitHub Actions, GitLab, Dex, Keycloak) whose ID tokens are credentials."""

    name: Annotated[str, pydantic.StringConstraints(pattern=RESOURCE_NAME_PATTERN, max_length=63)]
    """A name for the issuer, unique in this registry."""
    issuer: Annotated[str, pydantic.StringConstraints(pattern=r"^https://[^\s]+$", max_length=512)]
    """The issuer URL (the tokens' `iss`); its discovery document and JWKS are read from it."""
    audience: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=253)]
    """The `aud` tokens must carry for this registry."""
    claims: OidcClaims = OidcClaims()
    """Which claims name the user and its groups."""
    rules: Annotated[list[OidcRule], pydantic.Field(max_length=256)] = []
    """Who gets which access; an identity no rule names has none."""


class Auth(ApiModel):
    """Who may use the registry."""

    users: Annotated[list[User], pydantic.Field(max_length=256)] = []
    """Registry users; names must be unique."""
    anonymous_pull: bool = False
    """Allow pulls without credentials (pushes still need a user with push or admin access)."""
    service_accounts: ServiceAccounts | None = None
    """Kubernetes ServiceAccount tokens (for this registry's audience) as passwords, per these rules."""
    oidc: Annotated[list[OidcIssuer], pydantic.Field(max_length=8)] = []
    """External OIDC issuers whose ID tokens are passwords, per their rules."""

    @property
    def token_flow(self) -> bool:
        """Whether the registry offers the Docker token (Bearer) flow: whenever it accepts ServiceAccount or
        OIDC tokens, so clients that follow a Bearer challenge get a registry token for them at /token."""
        return self.service_accounts is not None or bool(self.oidc)

    @pydantic.model_validator(mode="after")
    def _unique_names(self) -> Auth:
        seen: set[str] = set()
        for user in self.users:
            if user.name in seen:
                raise ValueError(f"duplicate user name {user.name!r}")
            seen.add(user.name)
        issuers = [i.name for i in self.oidc]
        if len(set(issuers)) != len(issuers) or "kubernetes" in issuers:
            raise ValueError("oidc issuer names must be unique and not 'kubernetes'")
        return self


class PullSecrets(ApiModel):
    """Image pull Secrets (kubernetes.io/dockerconfigjson) for one registry user, in chosen namespaces."""

    user: Annotated[str, pydantic.StringConstraints(pattern=USER_NAME_PATTERN, max_length=128)]
    """The spec.auth.users entry whose credentials the Secrets carry (kept in sync with its password)."""
    secret_name: (
        Annotated[str, pydantic.StringConstraints(pattern=RESOURCE_NAME_PATTERN, max_length=253)] | None
    ) = None
    """Name of the Secret in each namespace; default <registry>-pull."""
    namespaces: Annotated[
        list[Annotated[str, pydantic.StringConstraints(pattern=RESOURCE_NAME_PATTERN, max_length=63)]],
        pydantic.Field(max_length=256),
    ] = []
    """Namespaces that get the Secret: this registry's own, and others only if labelled
    pull-secrets-from.dockyard.dev/<this namespace>: "true" (Degraded names any listed one that is not)."""
    namespace_selector: dict[str, str] | None = None
    """Also every namespace carrying all of these labels (matchLabels semantics) that opted in likewise."""
    service_account: (
        Annotated[str, pydantic.StringConstraints(pattern=RESOURCE_NAME_PATTERN, max_length=253)] | None
    ) = None
    """Add the Secret to this ServiceAccount's imagePullSecrets in each namespace (e.g. default)."""
    token_lifetime: Duration | None = None
    """Short-lived pull secrets: the copies carry a registry token instead of the user's password, granting
    only pull on the user's repositories and expiring after this long (e.g. 24h; at least 10m). A new token
    is written every half lifetime, so a copy is replaced well before it expires."""

    @pydantic.field_validator("token_lifetime")
    @classmethod
    def _lifetime_bounds(cls, value: str | None) -> str | None:
        if value is not None and not 600 <= parse_duration(value).total_seconds() <= 31 * 86400:
            raise ValueError("tokenLifetime must be between 10m and 744h")
        return value

    @property
    def token_lifetime_seconds(self) -> int | None:
        if self.token_lifetime is None:
            return None
        return int(parse_duration(self.token_lifetime).total_seconds())
