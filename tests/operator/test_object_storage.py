"""spec.storage.s3: model, pure builders, storage policy and the reconcile pass, without a cluster.

Covers:
- the model: one storage kind at most (pvc, emptyDir, s3), at most one CA source, endpoint/bucket/prefix
  patterns, defaults (region us-east-1, path addressing, redirect on, the AWS key names), `location`;
- the Deployment with S3: the registry's --storage-driver s3 --s3-* arguments per the CLI contract (prefix and
  CA only when set, --no-s3-redirect when redirect is off), no --data-dir and no --accel-redirect, the access
  key as env secretKeyRefs to the credentials Secret, no data volume in either container, the CA mounted as
  ca.crt from a Secret or a ConfigMap, a RollingUpdate strategy; the filesystem arguments are unchanged;
- nginx: the S3 variant has no internal blob location and no alias to the data directory; the ConfigMap and
  the config hash use the variant; the hash changes with the credentials' version and the CA;
- replicas 2 on S3: StorageReady is fine, a PodDisruptionBudget and the default topology spread;
- status.storage.location for pvc, emptyDir and s3;
- the pass: Deployment with env refs and no claim; a missing credentials Secret, a missing key, a missing or
  unusable CA bundle block it with a condition naming them (Degraded, and StorageReady) and write no child;
  the credentials' values appear nowhere in what the operator writes; fixing the Secret completes the pass;
- the Secrets an S3 spec references are watched (handlers.referenced_secrets); a blocked bucket reference
  turns StorageReady False and never CertificateReady (also with a bring-your-own TLS Secret);
- no bucket operation anywhere in the operator: it has no S3 client and never names one.
"""

from __future__ import annotations

import ast
import base64
import datetime
import json
import pathlib
from typing import Any

import pydantic
import pytest

from dockyard_common import pki
from dockyard_operator import builders, model, names, policies, reconcile, settings
from dockyard_operator import handlers as operator_handlers
from dockyard_operator.builders import deployment, inputs, nginx_configmap, pod_disruption_budget
from dockyard_operator.conditions import Reason
from dockyard_operator.reconcile import context
from dockyard_operator.reconcile import status as status_step
from tests.operator import fakes
from tests.operator.test_builders import container, make_inputs, mounts, volumes

N = names.Names.of("demo")
ACCESS_KEY = b"AKIAEXAMPLEKEYID0001"
SECRET_KEY = b"s3cr3t/Access+Key-value-never-copied"
S3: dict[str, Any] = {
    "endpoint": "https://minio.storage.svc:9000",
    "bucket": "team-images",
    "credentialsSecret": {"name": "bucket-creds"},
}


def s3_spec(**s3: Any) -> dict[str, Any]:
    return {"storage": {"s3": {**S3, **s3}}}


def with_bucket(spec: dict[str, Any], **overrides: Any) -> inputs.Inputs:
    return make_inputs(spec, object_storage=inputs.ObjectStorage(digest="v1"), **overrides)


# ------------------------------------------------------------------------------------------ model


def test_s3_defaults_are_path_addressing_us_east_1_redirects_and_the_aws_key_names() -> None:
    s3 = model.parse_spec(s3_spec()).storage.s3
    assert s3 is not None
    assert (s3.region, s3.addressing, s3.redirect, s3.prefix) == ("us-east-1", "path", True, None)
    assert s3.credentials_secret.access_key_id_key == "AWS_ACCESS_KEY_ID"
    assert s3.credentials_secret.secret_access_key_key == "AWS_SECRET_ACCESS_KEY"
    assert model.parse_spec(s3_spec()).storage.kind == "s3"
    assert s3.location == "s3://team-images/"
    assert model.parse_spec(s3_spec(prefix="reg/demo")).storage.s3.location == "s3://team-images/reg/demo"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"storage": {"s3": S3, "pvc": {}}}, "at most one of pvc, emptyDir and s3"),
        ({"storage": {"s3": S3, "emptyDir": {}}}, "at most one of pvc, emptyDir and s3"),
        (
            s3_spec(caSecret={"name": "a"}, caConfigMap={"name": "b"}),
            "at most one of caSecret and caConfigMap",
        ),
        (s3_spec(endpoint="minio:9000"), "storage.s3.endpoint"),
        (s3_spec(bucket="Team_Images"), "storage.s3.bucket"),
        (s3_spec(prefix="/leading"), "storage.s3.prefix"),
        (s3_spec(prefix="trailing/"), "storage.s3.prefix"),
        (s3_spec(addressing="dns"), "storage.s3.addressing"),
        ({"storage": {"s3": {k: v for k, v in S3.items() if k != "credentialsSecret"}}}, "credentialsSecret"),
    ],
)
def test_bad_s3_specs_are_refused_with_a_message_naming_the_field(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        model.parse_spec(spec)
    assert message in model.spec_error_message(caught.value)


# --------------------------------------------------------------------------------------- builders


def test_the_registry_gets_the_bucket_per_the_cli_contract_and_no_accel_redirect() -> None:
    args = deployment.registry_args(with_bucket(s3_spec(region="eu-west-1", prefix="reg/demo")))
    assert args[args.index("--storage-driver") + 1] == "s3"
    assert args[args.index("--s3-endpoint") + 1] == "https://minio.storage.svc:9000"
    assert args[args.index("--s3-bucket") + 1] == "team-images"
    assert args[args.index("--s3-region") + 1] == "eu-west-1"
    assert args[args.index("--s3-prefix") + 1] == "reg/demo"
    assert args[args.index("--s3-addressing") + 1] == "path"
    assert "--s3-redirect" in args and "--no-s3-redirect" not in args
    assert "--accel-redirect" not in args and "--data-dir" not in args and "--body-file-dir" not in args
    assert "--s3-ca" not in args
    assert not any(ACCESS_KEY.decode() in a or "bucket-creds" in a for a in args)


def test_redirect_off_virtual_addressing_and_a_ca_reach_the_arguments() -> None:
    spec = s3_spec(redirect=False, addressing="virtual", caConfigMap={"name": "corp-ca", "key": "bundle.pem"})
    args = deployment.registry_args(with_bucket(spec))
    assert "--no-s3-redirect" in args and "--s3-redirect" not in args
    assert args[args.index("--s3-addressing") + 1] == "virtual"
    assert args[args.index("--s3-ca") + 1] == "/etc/dockyard/s3-ca/ca.crt"
    assert "--s3-prefix" not in args


def test_filesystem_storage_keeps_its_arguments_and_accel_redirect() -> None:
    args = deployment.registry_args(make_inputs())
    assert args[:10] == [
        "serve", "--listen", "127.0.0.1:5000", "--no-tls", "--data-dir", "/var/lib/registry",
        "--htpasswd", "/etc/dockyard/auth/htpasswd", "--access", "/etc/dockyard/auth/access.yaml",
    ]  # fmt: skip
    assert args[args.index("--accel-redirect") + 1] == nginx_configmap.BLOB_PREFIX
    assert "--storage-driver" not in args


def test_the_access_key_comes_from_the_credentials_secret_by_reference() -> None:
    spec = s3_spec(
        credentialsSecret={"name": "bucket-creds", "accessKeyIdKey": "id", "secretAccessKeyKey": "key"}
    )
    registry = container(deployment.build(with_bucket(spec)), "registry")
    assert registry["env"] == [
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "bucket-creds", "key": "id"}}},
        {
            "name": "AWS_SECRET_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {"name": "bucket-creds", "key": "key"}},
        },
    ]
    assert "env" not in container(deployment.build(make_inputs()), "registry")


def test_with_s3_no_container_mounts_a_data_volume_and_no_claim_is_wanted() -> None:
    built = with_bucket(s3_spec())
    dep = deployment.build(built)
    assert "data" not in volumes(dep) and "s3-ca" not in volumes(dep)
    for name in ("registry", "nginx"):
        assert "data" not in mounts(container(dep, name))
    assert "registry-tmp" in mounts(container(dep, "registry"))  # /tmp stays writable for it
    kinds = [c["kind"] for c in builders.desired_children(built)]
    assert "PersistentVolumeClaim" not in kinds


@pytest.mark.parametrize(
    ("source", "volume"),
    [
        (
            {"caSecret": {"name": "corp-ca"}},
            {"secret": {"secretName": "corp-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        ),
        (
            {"caConfigMap": {"name": "corp-ca", "key": "bundle.pem"}},
            {"configMap": {"name": "corp-ca", "items": [{"key": "bundle.pem", "path": "ca.crt"}]}},
        ),
    ],
)
def test_a_custom_ca_is_mounted_read_only_as_ca_crt(source: dict[str, Any], volume: dict[str, Any]) -> None:
    dep = deployment.build(with_bucket(s3_spec(**source)))
    assert volumes(dep)["s3-ca"] == {"name": "s3-ca", **volume}
    assert mounts(container(dep, "registry"))["s3-ca"] == {
        "name": "s3-ca", "mountPath": "/etc/dockyard/s3-ca", "readOnly": True,
    }  # fmt: skip
    assert "s3-ca" not in mounts(container(dep, "nginx"))


def test_nginx_has_no_blob_location_with_s3_and_the_configmap_and_hash_use_that_variant() -> None:
    on_volume = nginx_configmap.render(nginx=model.Nginx(), body_files=True)
    bucket = nginx_configmap.render(nginx=model.Nginx(), blobs_from_volume=False)
    assert nginx_configmap.BLOB_PREFIX in on_volume and "alias /var/lib/registry/;" in on_volume
    assert nginx_configmap.BLOB_PREFIX not in bucket and "alias" not in bucket
    assert "location /v2/" in bucket and "auth_request /_dockyard_auth;" in bucket
    # No volume, no body files: upload bodies stream through the registry to the bucket.
    assert "client_body_in_file_only" in on_volume and "client_body_in_file_only" not in bucket
    assert 'proxy_set_header X-Dockyard-Body-File "";' in bucket
    built = with_bucket(s3_spec())
    assert nginx_configmap.build(built)["data"][nginx_configmap.CONFIG_KEY] == bucket
    assert nginx_configmap.build(make_inputs())["data"][nginx_configmap.CONFIG_KEY] == on_volume


def test_the_config_hash_changes_with_the_credentials_version_and_ca_but_not_for_filesystem() -> None:
    first = deployment.config_hash(with_bucket(s3_spec()))
    rotated = deployment.config_hash(make_inputs(s3_spec(), object_storage=inputs.ObjectStorage(digest="v2")))
    assert first != rotated
    assert deployment.config_hash(make_inputs()) == deployment.config_hash(make_inputs())


def test_two_replicas_on_s3_get_a_rolling_update_a_budget_and_the_default_spread() -> None:
    built = with_bucket({"replicas": 2, **s3_spec()})
    dep = deployment.build(built)
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }  # fmt: skip
    assert pod_disruption_budget.wanted(built)
    assert [c["kind"] for c in builders.desired_children(built)].count("PodDisruptionBudget") == 1
    spread = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread[0]["topologyKey"] == "kubernetes.io/hostname"
    assert policies.storage_verdict(built.spec, pvc_phase=None).ok


def test_storage_policy_and_location_for_every_kind() -> None:
    s3 = model.parse_spec({"replicas": 3, **s3_spec(prefix="demo")})
    verdict = policies.storage_verdict(s3, pvc_phase=None)
    assert (verdict.ok, verdict.reason) == (True, "ObjectStorage")
    assert "s3://team-images/demo" in verdict.message
    assert policies.storage_location(s3, claim=N.pvc) == "s3://team-images/demo"
    assert policies.storage_location(model.parse_spec({}), claim=N.pvc) == "pvc/demo-data"
    assert (
        policies.storage_location(model.parse_spec({"storage": {"emptyDir": {}}}), claim=N.pvc) == "emptyDir"
    )
    assert not policies.storage_verdict(model.parse_spec({"replicas": 2}), pvc_phase="Bound").ok


def test_the_secrets_an_s3_spec_reads_are_watched() -> None:
    spec = s3_spec(caSecret={"name": "corp-ca"})
    assert operator_handlers.referenced_secrets(spec) == {"bucket-creds", "corp-ca"}
    assert operator_handlers.referenced_secrets(s3_spec(caConfigMap={"name": "cm"})) == {"bucket-creds"}


def test_the_operator_never_talks_to_a_bucket() -> None:
    """Deleting a registry never deletes a bucket: the operator has no S3 client, never names a bucket
    operation, and only the Deployment builder and the storage policy's message read the endpoint."""
    package = pathlib.Path(operator_handlers.__file__).parent
    clients = {"boto3", "botocore", "aiobotocore", "aioboto3", "obstore", "minio", "s3fs", "fsspec"}
    readers = set()
    for source in package.rglob("*.py"):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported = {(node.module or "").split(".")[0]}
            else:
                imported = set()
            assert not imported & clients, f"{source.name} imports {imported & clients}"
            if isinstance(node, ast.Attribute) and node.attr == "endpoint" and _is_s3(node.value):
                readers.add(source.relative_to(package).as_posix())
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert "DeleteBucket" not in node.value and "delete_bucket" not in node.value, source.name
    assert readers == {"builders/deployment.py", "policies.py"}


def _is_s3(node: ast.expr) -> bool:
    """`s3` or `<anything>.s3`: the S3 storage model."""
    return (isinstance(node, ast.Name) and node.id == "s3") or (
        isinstance(node, ast.Attribute) and node.attr == "s3"
    )


# ------------------------------------------------------------------------------------------ pass


@pytest.fixture
def api() -> fakes.FakeKube:
    return fakes.FakeKube()


@pytest.fixture
def reconciler(api: fakes.FakeKube) -> reconcile.Reconciler:
    return reconcile.Reconciler(
        client=api,  # type: ignore[arg-type]  # duck-typed stand-in
        config=settings.Settings(bcrypt_rounds=4, registry_image="registry:test"),
        clock=lambda: datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    )


def credentials(**data: bytes) -> dict[str, Any]:
    values = data or {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "bucket-creds", "namespace": "ns"},
        "data": {k: base64.b64encode(v).decode() for k, v in values.items()},
    }


def ca_pem() -> bytes:
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    return pki.new_ca(common_name="corp ca", now=now, duration=datetime.timedelta(days=30)).cert_pem


def status(api: fakes.FakeKube) -> dict[str, Any]:
    return dict(api.obj(names.KIND, "demo")["status"])


def degraded(api: fakes.FakeKube) -> dict[str, Any]:
    return next(c for c in status(api)["conditions"] if c["type"] == "Degraded")


async def test_a_pass_renders_env_refs_no_claim_and_reports_the_bucket_as_location(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    api.put(credentials())
    api.put(fakes.registry(spec={"replicas": 2, **s3_spec(prefix="demo")}))
    await reconciler.reconcile(namespace="ns", name="demo")
    assert not api.has("PersistentVolumeClaim", N.pvc)
    assert api.has("PodDisruptionBudget", N.pod_disruption_budget)
    registry = container(api.obj("Deployment", N.deployment), "registry")
    assert {e["name"] for e in registry["env"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert status(api)["storage"]["location"] == "s3://team-images/demo"
    storage_ready = next(c for c in status(api)["conditions"] if c["type"] == "StorageReady")
    assert (storage_ready["status"], storage_ready["reason"]) == ("True", "ObjectStorage")
    others = [o for key, o in api.objects.items() if key != ("Secret", "ns", "bucket-creds")]
    written = json.dumps([others, api.events, api.status_patches], default=str)
    for value in (SECRET_KEY, ACCESS_KEY):
        assert value.decode() not in written and base64.b64encode(value).decode() not in written


async def test_a_missing_credentials_secret_blocks_the_pass_naming_it_until_it_exists(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    api.put(fakes.registry(spec=s3_spec()))
    await reconciler.reconcile(namespace="ns", name="demo")
    condition = degraded(api)
    assert (condition["status"], condition["reason"]) == ("True", "SecretNotFound")
    assert (
        "spec.storage.s3.credentialsSecret" in condition["message"]
        and "'bucket-creds'" in condition["message"]
    )
    assert api.child_writes() == []
    assert [e["reason"] for e in api.events if e["type"] == "Warning"] == ["SecretNotFound"]
    storage = next(c for c in status(api)["conditions"] if c["type"] == "StorageReady")
    assert (storage["status"], storage["reason"]) == ("False", "SecretNotFound")
    assert "'bucket-creds'" in storage["message"]

    api.put(credentials())
    await reconciler.reconcile(namespace="ns", name="demo")
    assert api.has("Deployment", N.deployment)
    assert degraded(api)["status"] == "False"


async def test_a_missing_or_empty_key_is_named(api: fakes.FakeKube, reconciler: reconcile.Reconciler) -> None:
    api.put(credentials(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=b""))
    api.put(fakes.registry(spec=s3_spec()))
    await reconciler.reconcile(namespace="ns", name="demo")
    condition = degraded(api)
    assert condition["reason"] == "SecretKeyMissing"
    assert (
        "'AWS_SECRET_ACCESS_KEY'" in condition["message"]
        and "'AWS_ACCESS_KEY_ID'" not in condition["message"]
    )
    assert not api.has("Deployment", N.deployment)


async def test_a_missing_or_unusable_ca_bundle_is_named(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    api.put(credentials())
    api.put(fakes.registry(spec=s3_spec(caConfigMap={"name": "corp-ca"})))
    await reconciler.reconcile(namespace="ns", name="demo")
    assert degraded(api)["reason"] == "ConfigMapNotFound" and "'corp-ca'" in degraded(api)["message"]

    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "corp-ca", "namespace": "ns"}}
    api.put({**configmap, "data": {"ca.crt": "not a certificate"}})
    await reconciler.reconcile(namespace="ns", name="demo")
    assert degraded(api)["reason"] == "InvalidCABundle"
    assert not api.has("Deployment", N.deployment)

    api.put({**configmap, "data": {"ca.crt": ca_pem().decode()}})
    await reconciler.reconcile(namespace="ns", name="demo")
    assert api.has("Deployment", N.deployment)
    assert volumes(api.obj("Deployment", N.deployment))["s3-ca"]["configMap"]["name"] == "corp-ca"


async def test_rotating_the_credentials_rolls_the_pods(
    api: fakes.FakeKube, reconciler: reconcile.Reconciler
) -> None:
    api.put(credentials())
    api.put(fakes.registry(spec=s3_spec()))
    await reconciler.reconcile(namespace="ns", name="demo")

    def pod_hash() -> str:
        template = api.obj("Deployment", N.deployment)["spec"]["template"]
        return str(template["metadata"]["annotations"][names.CONFIG_HASH])

    before = pod_hash()
    await reconciler.reconcile(namespace="ns", name="demo")
    assert pod_hash() == before
    api.put(credentials(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=b"rotated-secret-key-0002"))
    await reconciler.reconcile(namespace="ns", name="demo")
    assert pod_hash() != before


def test_a_blocked_bucket_reference_turns_storage_ready_false_but_never_certificate_ready() -> None:
    body = {
        "metadata": {"name": "demo", "namespace": "ns", "generation": 3},
        "spec": {"tls": {"mode": "Secret", "secretName": "mine"}, **s3_spec()},
    }
    problem = context.Problem(
        Reason.SECRET_NOT_FOUND, "Secret 'bucket-creds' not found", condition="StorageReady"
    )
    blocked = status_step.Status(client=None).blocked(  # type: ignore[arg-type]  # blocked() never writes
        body, (), [problem], now=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    )
    by_type = {c.type: c for c in blocked.conditions or []}
    assert "CertificateReady" not in by_type
    assert (by_type["StorageReady"].status, by_type["StorageReady"].reason) == ("False", "SecretNotFound")
    assert by_type["StorageReady"].message == "Secret 'bucket-creds' not found"
