"""Where a registry keeps its data."""

from __future__ import annotations

from typing import Annotated, Literal

import pydantic

from dockyard_operator.model.types import (
    BUCKET_PATTERN,
    OBJECT_PREFIX_PATTERN,
    REGION_PATTERN,
    RESOURCE_NAME_PATTERN,
    SECRET_KEY_PATTERN,
    URL_PATTERN,
    ApiModel,
    Quantity,
)

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
    """Access modes of the claim; more than one replica needs ReadWriteMany (or s3 storage)."""
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


ResourceName = Annotated[str, pydantic.StringConstraints(pattern=RESOURCE_NAME_PATTERN, max_length=253)]
DataKey = Annotated[str, pydantic.StringConstraints(pattern=SECRET_KEY_PATTERN, max_length=253)]


class S3Credentials(ApiModel):
    """The Secret holding the bucket's access key; the registry container reads both keys as environment
    variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) straight from the Secret, so their values never
    pass through the operator or this object."""

    name: ResourceName
    """Name of the Secret (same namespace as the registry)."""
    access_key_id_key: DataKey = "AWS_ACCESS_KEY_ID"
    """Key inside the Secret whose value is the access key id."""
    secret_access_key_key: DataKey = "AWS_SECRET_ACCESS_KEY"  # noqa: S105  # a key name, not a secret
    """Key inside the Secret whose value is the secret access key."""


class CaBundleRef(ApiModel):
    """A key of a Secret or ConfigMap in the registry's namespace holding PEM CA certificates."""

    name: ResourceName
    """Name of the Secret or ConfigMap (same namespace as the registry)."""
    key: DataKey = "ca.crt"
    """Key holding the PEM bundle."""


class S3Storage(ApiModel):
    """An S3-compatible bucket (AWS S3, MinIO, Ceph RGW, SeaweedFS, ...). Several replicas may share it.

    Deleting the registry never deletes the bucket or anything in it."""

    model_config = pydantic.ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.caSecret) && has(self.caConfigMap))",
                    "message": "set at most one of caSecret and caConfigMap",
                },
            ]
        }
    )

    endpoint: Annotated[str, pydantic.StringConstraints(pattern=URL_PATTERN, max_length=2048)]
    """URL of the S3 API, e.g. https://s3.eu-west-1.amazonaws.com or http://minio.storage.svc:9000."""
    bucket: Annotated[str, pydantic.StringConstraints(pattern=BUCKET_PATTERN, min_length=3, max_length=63)]
    """The bucket (it must exist; the operator never creates or deletes buckets)."""
    region: Annotated[str, pydantic.StringConstraints(pattern=REGION_PATTERN, max_length=64)] = "us-east-1"
    """Region the requests are signed for."""
    prefix: (
        Annotated[str, pydantic.StringConstraints(pattern=OBJECT_PREFIX_PATTERN, max_length=512)] | None
    ) = None
    """Key prefix inside the bucket (no leading or trailing slash), so several registries can share one."""
    addressing: Literal["path", "virtual"] = "path"
    """path: https://endpoint/bucket/key (works with every S3-compatible server); virtual:
    https://bucket.endpoint/key (AWS's preferred style; the bucket name must be a DNS label)."""
    credentials_secret: S3Credentials
    """The Secret with the access key id and secret access key."""
    ca_secret: CaBundleRef | None = None
    """A custom CA to trust for the endpoint, from a Secret (at most one of caSecret and caConfigMap)."""
    ca_config_map: CaBundleRef | None = None
    """A custom CA to trust for the endpoint, from a ConfigMap."""
    redirect: bool = True
    """Answer blob downloads with a redirect (307) to a short-lived presigned URL of the bucket, so bytes
    go from the bucket to the client directly. Turn it off when clients cannot reach the endpoint (an
    in-cluster MinIO behind a ClusterIP, a private network): the registry then streams blobs itself."""

    @pydantic.model_validator(mode="after")
    def _one_ca(self) -> S3Storage:
        if self.ca_secret is not None and self.ca_config_map is not None:
            raise ValueError("set at most one of caSecret and caConfigMap")
        return self

    @property
    def location(self) -> str:
        """`s3://bucket/prefix`: where the data lives, as status shows it."""
        return f"s3://{self.bucket}/{self.prefix or ''}"


class Storage(ApiModel):
    """Where the registry keeps blobs and manifests: at most one of pvc, emptyDir and s3 (pvc by default)."""

    model_config = pydantic.ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "[has(self.pvc), has(self.emptyDir), has(self.s3)].filter(x, x).size() <= 1",
                    "message": "set at most one of pvc, emptyDir and s3",
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
    s3: S3Storage | None = None
    """Keep data in an S3-compatible bucket: no volume, and spec.replicas may be above 1."""
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
        if sum(kind is not None for kind in (self.pvc, self.empty_dir, self.s3)) > 1:
            raise ValueError("set at most one of pvc, emptyDir and s3")
        if self.almost_full_percent > self.max_fill_percent:
            raise ValueError("almostFullPercent must not be above maxFillPercent")
        return self

    @property
    def kind(self) -> Literal["pvc", "emptyDir", "s3"]:
        if self.s3 is not None:
            return "s3"
        return "emptyDir" if self.empty_dir is not None else "pvc"

    @property
    def effective_pvc(self) -> PvcStorage:
        return self.pvc if self.pvc is not None else PvcStorage()
