"""Where a registry keeps its data."""

from __future__ import annotations

from typing import Annotated, Literal

import pydantic

from dockyard_operator.model.types import ApiModel, Quantity


class PvcStorage(ApiModel):
    """A PersistentVolumeClaim created and owned by the operator (deleted with the registry)."""

    size: Quantity = "10Gi"
    """Requested capacity; can grow later if the storage class allows expansion, never shrink."""
    storage_class_name: str | None = None
    """StorageClass of the claim; empty uses the cluster default."""
    access_modes: Annotated[
        list[Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"]], pydantic.Field(min_length=1)
    ] = ["ReadWriteOnce"]
    """Access modes of the claim; more than one replica needs ReadWriteMany."""


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
                }
            ]
        }
    )

    pvc: PvcStorage | None = None
    """Keep data on a PersistentVolumeClaim named <registry>-data (the default, 10Gi)."""
    empty_dir: EmptyDirStorage | None = None
    """Keep data in an emptyDir volume (lost with the pod)."""
    delete_enabled: bool = False
    """Allow DELETE of manifests, tags and blobs through the API (admin users only)."""

    @pydantic.model_validator(mode="after")
    def _one_kind(self) -> Storage:
        if self.pvc is not None and self.empty_dir is not None:
            raise ValueError("set at most one of pvc and emptyDir")
        return self

    @property
    def kind(self) -> Literal["pvc", "emptyDir"]:
        return "emptyDir" if self.empty_dir is not None else "pvc"

    @property
    def effective_pvc(self) -> PvcStorage:
        return self.pvc if self.pvc is not None else PvcStorage()
