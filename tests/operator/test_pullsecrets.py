"""Pull secret content and placement (pure).

Covers: the dockerconfigjson has one entry per host with the user's credentials (`auth` is base64 of
user:password); the Secret is typed for image pulls and labelled so copies in other namespaces can be found
again, without the password in any label; namespaces are chosen by name or label selector and terminating
ones are skipped; adding the Secret to a ServiceAccount keeps its other pull secrets and is a no-op when
already present, and removing it keeps the others.
"""

from __future__ import annotations

import base64
import json

from dockyard_operator import pullsecrets

PASSWORD = b"s3cret-pull-pw"


def test_the_config_has_every_host_with_the_users_credentials() -> None:
    config = json.loads(
        pullsecrets.dockerconfigjson(
            hosts=["localhost:30500", "reg.example"], username="ci", password=PASSWORD
        )
    )

    assert set(config["auths"]) == {"localhost:30500", "reg.example"}
    entry = config["auths"]["localhost:30500"]
    assert entry["username"] == "ci" and entry["password"] == PASSWORD.decode()
    assert base64.b64decode(entry["auth"]) == b"ci:" + PASSWORD


def test_the_secret_is_a_dockerconfigjson_labelled_for_its_registry_and_nothing_leaks() -> None:
    config = pullsecrets.dockerconfigjson(hosts=["h"], username="ci", password=PASSWORD)
    secret = pullsecrets.secret(
        name="demo-pull", namespace="apps", registry_namespace="team", registry="demo", config=config
    )

    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert base64.b64decode(secret["data"][".dockerconfigjson"]) == config
    assert secret["metadata"]["labels"][pullsecrets.FOR_LABEL] == "team.demo"
    assert PASSWORD.decode() not in json.dumps(secret["metadata"])


def test_a_service_account_gains_the_secret_once_and_keeps_its_others() -> None:
    account = {"metadata": {"name": "default"}, "imagePullSecrets": [{"name": "theirs"}]}

    updated = pullsecrets.with_pull_secret(account, "demo-pull")

    assert updated is not None and updated["imagePullSecrets"] == [{"name": "theirs"}, {"name": "demo-pull"}]
    assert pullsecrets.with_pull_secret(updated, "demo-pull") is None
    assert account["imagePullSecrets"] == [{"name": "theirs"}], "the input is not modified"


def test_removing_the_secret_from_a_service_account_keeps_the_others() -> None:
    account = {
        "metadata": {"name": "default"},
        "imagePullSecrets": [{"name": "theirs"}, {"name": "demo-pull"}],
    }

    updated = pullsecrets.without_pull_secret(account, "demo-pull")

    assert updated is not None and updated["imagePullSecrets"] == [{"name": "theirs"}]
    assert pullsecrets.without_pull_secret(updated, "demo-pull") is None
