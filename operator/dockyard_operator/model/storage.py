"""Where a registry keeps its data."""

from __future__ import annotations

from typing import Annotated, Literal

import pydantic

from dockyard_operator.model.types import ApiModel, Quantity

ALMOST_FULL_PERCENT = 85
MAX_FILL_PERCENT = 95


class PvcStorage(ApiModel):
    """A PersistentVolumeClaim created by the operator; by default it outlives the registry."""

    size: Quantity = "10Gi"
    """Requested capacity; can grow later if the storage class allows expansion, never shrink."""
    storage_class_name: str | None = None
    """StorageClass of the claim; empty uses the cluster default."""
    access_modes: Annotated[
        list[Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"]], pydantic.Field(min_length=1)
    ] = ["ReadWriteOnce"]
    """Access modes of the claim; more than one replica needs ReadWriteMany."""
    deletion_policy: Literal["Retain", "Delete"] = "Retain"
    """Retain (the default): the claim has no owner reference, so deleting the registry keeps it (and every
    image); it is labelled dockyard.dev/retained-from=<registry> and a registry of the same name in the same
    namespace uses it again. Delete: the registry owns the claim and garbage collection deletes it, with
    every image, when the registry is deleted. Switching on a live registry adds or drops the owner
    reference."""


class EmptyDirStorage(ApiModel):
    """Pod-local scratch storage: every image is lost when the pod goes away. For tests and caches."""

    size_limit: Quantity | None = None
    """Upper bound of the emptyDir volume."""


class Storage(ApiModel):
    """Where the registry keeps blobs and manifests: at most one of pvc and emptyDir; pvc is the default."""

    model_config = pydantic.ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.pvc) && has(self.emptyDir))",
                    "message": "set at most one of pvc and emptyDir",
                },
                {
                    # Defaults apply per field, so either may be absent here (e.g. in the default object).
                    "rule": f"(has(self.almostFullPercent) ? self.almostFullPercent : {ALMOST_FULL_PERCENT})"
                    f" <= (has(self.maxFillPercent) ? self.maxFillPercent : {MAX_FILL_PERCENT})",
                    "message": "almostFullPercent must not be above maxFillPercent",
                },
            ]
        }
    )

    pvc: PvcStorage | None = None
    """Keep data on a PersistentVolumeClaim named <registry>-data (the default, 10Gi)."""
    empty_dir: EmptyDirStorage | None = None
    """Keep data in an emptyDir volume (lost with the pod)."""
    delete_enabled: bool = False
    """Allow DELETE of manifests, tags and blobs through the API (admin users only)."""
    almost_full_percent: Annotated[int, pydantic.Field(ge=1, le=100)] = ALMOST_FULL_PERCENT
    """Above this fill of the data volume, StorageReady turns False with reason StorageAlmostFull (a warning
    while pushes still work)."""
    max_fill_percent: Annotated[int, pydantic.Field(ge=1, le=100)] = MAX_FILL_PERCENT
    """Above this fill the registry refuses pushes (507) and its pods turn unready, so they leave the
    Service: pulls stop too until space is freed (delete images, let gc run, or grow the claim)."""

    @pydantic.model_validator(mode="after")
    def _one_kind(self) -> Storage:
        if self.pvc is not None and self.empty_dir is not None:
            raise ValueError("set at most one of pvc and emptyDir")
        if self.almost_full_percent > self.max_fill_percent:
            raise ValueError("almostFullPercent must not be above maxFillPercent")
        return self

    @property
    def kind(self) -> Literal["pvc", "emptyDir"]:
        return "emptyDir" if self.empty_dir is not None else "pvc"

    @property
    def effective_pvc(self) -> PvcStorage:
        return self.pvc if self.pvc is not None else PvcStorage()
