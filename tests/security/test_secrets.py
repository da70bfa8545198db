"""Item 12: secrets never reach printed config, and come from files or the environment.

``threatseer hub --print-config`` is Salt's ``check_cmd`` (its output lands in job returns):
Elasticsearch, Kafka SASL and Redis passwords must not be in it. Secrets can stay out of
hub.yaml as with Beats: ``password_file`` and ``${ENV}``; a real hub authenticates to a real
redis-server (``requirepass``) with a password read from a file.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import redis
import yaml
from security_helpers import WireSensor, exec_event
from transport_helpers import THREATSEER, HubProc, free_port, hub_cfg, wait_for

SECRETS = ("es-pass-123", "es-api-key-456", "kafka-sasl-789", "redis-url-pw-000")


def _config(tmp_path, **redis_opts):  # type: ignore[no-untyped-def]
    (tmp_path / "es.pass").write_text(SECRETS[0] + "\n")
    return hub_cfg(tmp_path, None, outputs=[
        {"type": "elasticsearch", "name": "es", "options": {
            "hosts": ["https://es.example:9200"], "username": "ts",
            "password_file": str(tmp_path / "es.pass"), "api_key": SECRETS[1]}},
        {"type": "kafka", "name": "kafka", "options": {
            "config": {"sasl.username": "ts", "sasl.password": "${TS_TEST_SASL}"}}},
        {"type": "redis", "name": "redis", "options": {
            "url": f"redis://:{SECRETS[3]}@127.0.0.1:1/0", **redis_opts}}])


def test_print_config_shows_no_secret(tmp_path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path)))
    env = {**os.environ, "TS_TEST_SASL": SECRETS[2]}
    r = subprocess.run([*THREATSEER, "hub", "--print-config", "-c", str(path)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    for secret in SECRETS:
        assert secret not in r.stdout + r.stderr
    shown = yaml.safe_load(r.stdout)["outputs"]
    assert shown[0]["options"]["api_key"] == "<redacted>"
    assert shown[1]["options"]["config"]["sasl.password"] == "<redacted>"
    assert shown[2]["options"]["url"] == "redis://:<redacted>@127.0.0.1:1/0"
    # an unset variable is a clear one-line error naming the file, line and key
    r = subprocess.run([*THREATSEER, "hub", "--print-config", "-c", str(path)],
                       capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if k != "TS_TEST_SASL"})
    assert r.returncode == 2
    assert "outputs[1].options.config.sasl.password: environment variable TS_TEST_SASL is " \
           "not set" in r.stderr and "Traceback" not in r.stderr


def test_a_hub_authenticates_with_a_password_from_a_file(tmp_path, procs) -> None:
    port = free_port()
    password = "redis-file-pw-1"
    server = subprocess.Popen([shutil.which("redis-server") or "/usr/bin/redis-server",
                               "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--requirepass", password],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        (tmp_path / "redis.pass").write_text(password + "\n")
        cfg = hub_cfg(tmp_path, None, outputs=[{"type": "redis", "name": "redis",
                                                "flush_interval_s": 0.05, "options": {
            "url": f"redis://127.0.0.1:{port}/0",
            "password_file": str(tmp_path / "redis.pass"), "key": "events"}}])
        hub = HubProc(tmp_path, cfg).start()
        procs.append(hub)
        sensor = WireSensor(cfg["ingest"]["endpoint"], "s")
        try:
            assert sensor.wait_ack(sensor.send([exec_event("s", 0)]), 10)
        finally:
            sensor.close()
        client = redis.Redis(port=port, password=password)
        wait_for(lambda: client.llen("events") == 1, 15, "the event in redis")
        assert password not in hub.log_text()
        assert hub.stop() == 0
    finally:
        server.terminate()
        server.wait(10)


def test_webhook_and_cluster_secrets_are_never_printed_and_come_from_files(tmp_path) -> None:
    """A webhook's url (its token is in the path) and headers, and the cluster's librdkafka
    secrets: redacted by ``hub``, ``gateway`` and ``scorer --print-config``; the url, a header
    and the SASL password may come from files or the environment."""
    token, header, sasl, pem = "T0KEN-in-path-1", "Bearer hdr-2", "sasl-file-3", "PEM-KEY-4"
    (tmp_path / "hook.url").write_text(f"https://hooks.example:8443/services/{token}\n")
    (tmp_path / "auth").write_text(header + "\n")
    (tmp_path / "sasl.pass").write_text(sasl + "\n")
    cfg = hub_cfg(tmp_path, None, outputs=[
        {"type": "webhook", "name": "hook", "options": {
            "url_file": str(tmp_path / "hook.url"),
            "headers": {"Authorization_file": str(tmp_path / "auth"),
                        "X-Team": "${TS_TEST_TEAM}"}}},
        {"type": "webhook", "name": "hook2", "options": {
            "url": f"https://hooks.example/services/{token}?key={token}",
            "headers": {"Authorization": header}}}],
        cluster={"bootstrap_servers": "127.0.0.1:9", "kafka": {
            "sasl.username": "ts", "sasl.password_file": str(tmp_path / "sasl.pass"),
            "ssl.key.pem": pem}})
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "TS_TEST_TEAM": "team-secret-5"}
    for role in ("hub", "gateway", "scorer", "output-worker"):
        r = subprocess.run([*THREATSEER, role, "--print-config", "-c", str(path)],
                           capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        for secret in (token, header, sasl, pem, "hdr-2", "team-secret-5"):
            assert secret not in r.stdout + r.stderr, (role, secret)
        shown = yaml.safe_load(r.stdout)
        assert shown["outputs"][1]["options"]["url"] == "https://hooks.example/<redacted>"
        assert shown["outputs"][1]["options"]["headers"] == {"Authorization": "<redacted>"}
        assert shown["outputs"][0]["options"]["headers"]["X-Team"] == "<redacted>"
        assert shown["cluster"]["kafka"]["ssl.key.pem"] == "<redacted>"
    # ... and what the hub uses is the secret itself
    from threatseer.common import configfile
    from threatseer.hub.config import HubConfig

    os.environ["TS_TEST_TEAM"] = "team-secret-5"
    try:
        loaded = configfile.load(path, HubConfig)
    finally:
        del os.environ["TS_TEST_TEAM"]
    hook = loaded.outputs[0].typed_options()
    assert hook.url == f"https://hooks.example:8443/services/{token}"
    assert hook.headers == {"Authorization": header, "X-Team": "team-secret-5"}
    assert loaded.cluster.client()["sasl.password"] == sasl
    assert "sasl.password_file" not in loaded.cluster.client()
