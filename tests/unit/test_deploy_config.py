"""Credentials files, the permission table, ``ringmaster nats-config`` and replicas."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from services.orchestrator.supervisor import Supervisor
from shared.cli import main
from shared.cluster import ClusterFile, ClusterSettings, ServiceEntry
from shared.credentials import (
    TlsFiles,
    UserFile,
    credential_options,
    parse_user_file,
    redact_url,
    tls_options,
    write_user_file,
)
from shared.errors import ConfigError
from shared.natsconf import bcrypt_hash
from shared.permissions import KINDS, ORCHESTRATOR, allowed, rules_for
from shared.subjects import Subjects

S = Subjects("rm")


def test_user_file_round_trip_is_private_and_never_shows_the_password(tmp_path: Path) -> None:
    path = tmp_path / "s" / "job_manager.user"
    user = UserFile("rm-job_manager", "s3cret-pw", "_INBOX.rm-job_manager")
    write_user_file(path, user)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert parse_user_file(path.read_text()) == user
    assert "s3cret-pw" not in repr(user)
    assert credential_options(str(path)) == {
        "user": "rm-job_manager",
        "password": "s3cret-pw",
        "inbox_prefix": "_INBOX.rm-job_manager",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-----BEGIN NATS USER JWT-----\nabc\n", "user_credentials"),
        ("SUAM5Q3EXAMPLESEED\n", "nkeys_seed"),
    ],
)
def test_creds_and_nkey_files_are_passed_to_nats_py(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "f"
    path.write_text(text)
    assert credential_options(str(path)) == {expected: str(path)}


def test_a_bad_credentials_file_names_the_line_not_its_content(tmp_path: Path) -> None:
    path = tmp_path / "bad.user"
    path.write_text("user=a\npasswd=hunter2\n")
    with pytest.raises(ConfigError, match="line 2") as info:
        credential_options(str(path))
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError, match=r"missing\.user"):
        credential_options(str(tmp_path / "missing.user"))
    assert credential_options("") == {}


def test_urls_lose_their_passwords_in_logs() -> None:
    url = "nats://u:pw@a:4222,nats://b:4222,tls://x:y@c:1"
    assert redact_url(url) == "nats://u:***@a:4222,nats://b:4222,tls://x:***@c:1"


def test_tls_needs_cert_and_key_together(tmp_path: Path) -> None:
    assert tls_options(TlsFiles()) == {}
    with pytest.raises(ConfigError, match="go together"):
        tls_options(TlsFiles(cert_file="c.pem"))
    with pytest.raises(ConfigError, match="TLS files"):
        tls_options(TlsFiles(ca_file=str(tmp_path / "none.pem")))


def test_a_bad_tls_file_is_named_in_one_line(tmp_path: Path) -> None:
    from shared.tlsgen import make_tls

    make_tls(tmp_path / "tls", [])
    good = {n: str(tmp_path / "tls" / n) for n in ("ca.crt", "client.crt", "client.key")}
    assert "tls" in tls_options(TlsFiles(good["ca.crt"], good["client.crt"], good["client.key"]))
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    for files, named in [
        (TlsFiles(ca_file=str(tmp_path / "nope.crt")), "nope.crt"),
        (TlsFiles(ca_file=str(garbage)), "garbage.crt"),
        (TlsFiles(good["ca.crt"], str(garbage), good["client.key"]), "garbage.crt"),
        (TlsFiles(good["ca.crt"], good["client.crt"], good["ca.crt"]), "client.crt"),
    ]:
        with pytest.raises(ConfigError, match=named) as info:
            tls_options(files)
        assert "\n" not in str(info.value) and "_ssl.c" not in str(info.value)


def test_nats_config_makes_node_users_and_tls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, secrets = tmp_path / "o", tmp_path / "s"
    args = ["nats-config", "--prefix", "rm", "--out", str(out), "--secrets", str(secrets)]
    args += ["--cost", "4", "--nodes", "gpu1:cpu+gpu,cpu1", "--tls"]
    assert main(args) == 0
    assert (secrets / "node-gpu1.user").exists() and (secrets / "node-cpu1.user").exists()
    assert parse_user_file((secrets / "node-gpu1.user").read_text()).user == "rm-node-gpu1"
    conf = (out / "auth.conf").read_text()
    assert '"rm.api.job_manager.report.gpu1"' in conf
    assert '"$JS.API.CONSUMER.CREATE.rm_JOBS.cap-gpu.rm.jobs.cap.gpu"' in conf
    made = sorted(p.name for p in (out / "tls").iterdir())
    assert made == sorted(
        f"{stem}.{ext}"
        for stem in ("ca", "server", "client", "node-gpu1", "node-cpu1")
        for ext in ("crt", "key")
    )
    assert stat.S_IMODE((out / "tls" / "server.key").stat().st_mode) == 0o600
    before = (out / "tls" / "ca.crt").read_bytes()
    assert main(args) == 0  # again: everything kept
    assert (out / "tls" / "ca.crt").read_bytes() == before
    assert (out / "auth.conf").read_text() == conf
    capsys.readouterr()
    assert main([*args[:-3], "--nodes", "bad node!"]) == 2
    err = capsys.readouterr().err
    assert "--nodes: node id" in err and "Traceback" not in err


def test_a_node_user_publishes_only_its_own() -> None:
    from shared.node_permissions import NodeSpec, node_allowed

    published = set(node_allowed(S, NodeSpec("n1", ("cpu",)), "publish"))
    assert {"rm.node.n1", "$KV.rm_nodes.n1", "rm.api.job_manager.report.n1"} <= published
    assert not {p for p in published if "*" in p and p.startswith(("rm.node", "$KV", "rm.api.job"))}
    js = {p for p in published if p.startswith("$JS.API.")}
    # Object gets run ephemeral consumers it may clean up; nothing else is deleted.
    ephemeral = "$JS.API.CONSUMER.DELETE.OBJ_rm_data.*"
    assert not {p for p in js - {ephemeral} if "DELETE" in p or "PURGE" in p or "UPDATE" in p}
    assert not {p for p in js if "CONSUMER" in p and "rm_JOBS" in p and p.endswith(".*")}
    # The object store: its own chunks only, never a meta message (name or delete marker).
    objects = {p for p in published if p.startswith("$O.")}
    assert objects == {"$O.rm_data.C.n1.*"}
    assert "rm.api.sync_planner.seal" in published


def test_bcrypt_hash_is_stable_and_verifies() -> None:
    first = bcrypt_hash("rm-node_agent", "pw", cost=4)
    assert first == bcrypt_hash("rm-node_agent", "pw", cost=4)
    assert first != bcrypt_hash("rm-node_agent", "other", cost=4)
    assert bcrypt.checkpw(b"pw", first.encode())


def test_only_the_orchestrator_may_publish_control() -> None:
    for kind in KINDS:
        may = [p for p in allowed(S, kind, "publish") if p.startswith("rm.ctl.")]
        assert may == (["rm.ctl.>"] if kind == ORCHESTRATOR else []), kind


def test_node_agent_publishes_only_what_it_owns() -> None:
    mine = {
        "rm.beacon.node_agent.*",
        "rm.log.node_agent.*",
        "rm.event.node_agent.>",
        "rm.node.*",
        "rm.api.node_agent.*.metrics",
        "rm.api.job_manager.report.*",
        "$KV.rm_nodes.>",
        "$O.rm_data.>",
        "rm.api.sync_planner.seal",
        "$JS.ACK.rm_JOBS.>",
        "$JS.ACK.OBJ_rm_data.>",
        "_INBOX.>",
    }
    published = set(allowed(S, "node_agent", "publish"))
    assert mine <= published
    others = {p for p in published - mine if not p.startswith("$JS.API.")}
    assert others == set()
    # Its JetStream calls: only look up or create its streams, and consume jobs and data.
    js = {p for p in published if p.startswith("$JS.API.")}
    assert not {p for p in js if ".DELETE." in p and "CONSUMER" not in p}
    assert not {p for p in js if ".PURGE." in p or ".UPDATE." in p}


def test_every_rule_says_why() -> None:
    for kind in KINDS:
        for rule in rules_for(S, kind):
            assert rule.why and rule.subject, (kind, rule)


def test_nats_config_is_deterministic_and_reuses_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["nats-config", "--prefix", "rm", "--out", str(tmp_path / "o"), "--cost", "4"]
    args += ["--secrets", str(tmp_path / "s")]
    assert main(args) == 0
    first = (tmp_path / "o" / "auth.conf").read_text()
    assert main(args) == 0
    assert (tmp_path / "o" / "auth.conf").read_text() == first
    users = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert users == sorted(f"{k}.user" for k in ("operator", *KINDS))
    for path in (tmp_path / "s").iterdir():
        assert parse_user_file(path.read_text()).password not in first
    assert main(["nats-config", "--cost", "99"]) == 2
    assert "usage: ringmaster nats-config" in capsys.readouterr().err


def test_the_cluster_files_replicas_reach_every_child(tmp_path: Path) -> None:
    cluster = ClusterFile(
        cluster=ClusterSettings(replicas=3),
        services={"job_manager": ServiceEntry(), "node_agent": ServiceEntry(instances=2)},
    )

    async def emit(_: Any) -> bool:
        return True

    supervisor = Supervisor(cluster, nats_url="nats://x:4222", emit=emit, log_dir=tmp_path)
    envs = [child.env for child in supervisor._children]
    assert len(envs) == 3
    for env, name in zip(envs, ["JOB_MANAGER", "NODE_AGENT", "NODE_AGENT"], strict=True):
        assert env[f"RINGMASTER_{name}_REPLICAS"] == "3"


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("conf", "env"),
    [
        ("server.conf", {}),
        ("cluster.conf", {"NATS_SERVER_NAME": "nats-1"}),
        (
            "leaf.conf",
            {
                "NATS_SERVER_NAME": "leaf-1",
                "LEAF_USER": "u",
                "LEAF_PASSWORD": "p",
                "LEAF_HUB": "h",
                "LEAF_CA_FILE": "ca.crt",
                "LEAF_CERT_FILE": "node-n1.crt",
                "LEAF_KEY_FILE": "node-n1.key",
            },
        ),
    ],
)
def test_shipped_nats_configs_parse_with_the_generated_users(
    tmp_path: Path, conf: str, env: dict[str, str]
) -> None:
    """``nats-server -t`` checks each config file, with auth.conf and tls/ beside it."""
    import os
    import subprocess

    from shared.embedded import find_nats_server_binary
    from shared.testing.cluster import TLS_DIR, generate_auth
    from shared.tlsgen import make_tls

    tls = tmp_path / "tls"
    make_tls(tls, ["n1"])
    text = (REPO / "deploy" / "nats" / conf).read_text()
    assert "tls {" in text, f"{conf} runs without TLS"
    (tmp_path / conf).write_text(text.replace(TLS_DIR, f"{tls}/"))
    (tmp_path / "auth.conf").write_text(generate_auth("ringmaster", tmp_path / "secrets"))
    env = {k: str(tls / v) if k.endswith("_FILE") else v for k, v in env.items()}
    done = subprocess.run(
        [str(find_nats_server_binary()), "-t", "-c", str(tmp_path / conf)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def with_token_file(env: dict[str, str], token: Path) -> dict[str, str]:
    """``env`` with its HTTP token files (secrets mounted in the container) made real."""
    token.write_text("t0ken\n")
    out = dict(env)
    for key in env:
        if key.endswith("_TOKEN_FILE"):
            assert env[key].startswith(("/run/secrets/", "/etc/ringmaster/")), key
            out[key] = str(token)
    return out


def test_compose_environments_are_valid_service_configs(tmp_path: Path) -> None:
    """Every variable compose gives a service is a field its config accepts."""
    import importlib

    import yaml

    from shared.config import load_config

    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
    kinds = set()
    for name, spec in compose["services"].items():
        if name.startswith("nats-"):
            continue
        env = {k: str(v) for k, v in spec["environment"].items()}
        env = with_token_file(env, tmp_path / "http.token")
        kind = env["RINGMASTER_SERVICE"]
        kinds.add(kind)
        module = importlib.import_module(f"services.{kind}.config")
        (cls,) = [
            v
            for k, v in vars(module).items()
            if k.endswith("Config") and v.__module__ == module.__name__
        ]
        config = load_config(cls, kind, [], env=env)
        assert config.replicas == 3, name
        assert env["NATS_URL"].startswith("tls://")
        secrets = {s["target"]: s["source"] for s in spec["secrets"]}
        assert {"nats-user", "nats-ca", "nats-cert", "nats-key"} <= set(secrets)
        if kind == "node_agent":  # its own node's user and certificate, no kind-wide one
            node = env["RINGMASTER_NODE_AGENT_NODE_ID"]
            assert secrets["nats-user"] == f"node-{node}"
            assert secrets["nats-cert"] == f"tls-{node}-cert"
        else:
            assert secrets["nats-user"] == kind
    assert kinds == set(KINDS)


def test_kubernetes_pods_get_valid_service_configs(tmp_path: Path) -> None:
    """Each pod's env (its own plus the ConfigMap) is a valid config of its service."""
    import importlib

    import yaml

    from shared.config import load_config

    k8s = REPO / "deploy" / "k8s"
    shared_env = yaml.safe_load((k8s / "configmap.yaml").read_text())["data"]
    docs = [*yaml.safe_load_all((k8s / "managers.yaml").read_text())]
    docs.append(yaml.safe_load((k8s / "node-agent.yaml").read_text()))
    kinds = set()
    for doc in docs:
        if doc["kind"] not in ("Deployment", "DaemonSet"):
            continue
        pod = doc["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        own = {e["name"]: e.get("value", "from-field") for e in container["env"]}
        kind = own["RINGMASTER_SERVICE"]
        kinds.add(kind)
        module = importlib.import_module(f"services.{kind}.config")
        (cls,) = [
            v
            for k, v in vars(module).items()
            if k.endswith("Config") and v.__module__ == module.__name__
        ]
        env = {**shared_env, **own, f"RINGMASTER_{kind.upper()}_INSTANCE": "pod-1"}
        env.pop(f"RINGMASTER_{kind.upper()}_NODE_ID", None)  # from the node's name
        env = with_token_file(env, tmp_path / "http.token")
        assert load_config(cls, kind, [], env=env).replicas == 3
        assert env["NATS_URL"].startswith("tls://") and env["RINGMASTER_TLS_CERT_FILE"]
        if kind == "node_agent":  # the host's own identity, never the shared Secret
            (volume,) = [v for v in pod["volumes"] if v["name"] == "node-identity"]
            assert "hostPath" in volume and "secret" not in volume
            assert own["RINGMASTER_CREDENTIALS_FILE"].startswith("/etc/ringmaster/identity/")
            assert own["RINGMASTER_TLS_CERT_FILE"].startswith("/etc/ringmaster/identity/")
        else:
            (volume,) = [v for v in pod["volumes"] if v["name"] == "nats-user"]
            assert volume["secret"]["items"] == [{"key": f"{kind}.user", "path": "nats-user"}]
        probes = (container["livenessProbe"], container["readinessProbe"])
        assert [p["exec"]["command"][-1] for p in probes] == ["--probe", "--readiness"]
    assert kinds == set(KINDS)


def shell_defaults() -> list[str]:
    """Where compose or Kubernetes makes ``shell`` (any command) a node's capability."""
    import json

    import yaml

    found = []
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
    configmap = yaml.safe_load((REPO / "deploy" / "k8s" / "configmap.yaml").read_text())
    envs = {f"compose {n}": s.get("environment", {}) for n, s in compose["services"].items()}
    envs["k8s configmap"] = configmap["data"]
    for where, env in envs.items():
        for key, value in env.items():
            if key.endswith("_CAPABILITIES") and "shell" in json.loads(value):
                found.append(f"{where}: {key}")
    return found


def test_shell_is_no_default_capability_in_the_deploy_files() -> None:
    """Only the local `make run` (ringmaster.toml) serves shell jobs."""
    assert shell_defaults() == []
    from services.node_agent.config import NodeAgentConfig
    from shared.config import convert_config

    assert not convert_config(NodeAgentConfig, {}).runs_shell


def test_probe_metrics_needs_an_instance(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "job_manager", "--metrics"]) == 2
    assert "--metrics needs --instance" in capsys.readouterr().err
