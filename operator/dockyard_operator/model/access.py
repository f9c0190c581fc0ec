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


class Auth(ApiModel):
    """Who may use the registry."""

    users: Annotated[list[User], pydantic.Field(max_length=256)] = []
    """Registry users; names must be unique."""
    anonymous_pull: bool = False
    """Allow pulls without credentials (pushes still need a user with push or admin access)."""

    @pydantic.model_validator(mode="after")
    def _unique_names(self) -> Auth:
        seen: set[str] = set()
        for user in self.users:
            if user.name in seen:
                raise ValueError(f"duplicate user name {user.name!r}")
            seen.add(user.name)
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
