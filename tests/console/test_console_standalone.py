"""``threatseer console --hub``: its own process, a CURVE subscriber with its own key, that
keeps showing alerts across a hub restart; and the command's and config's errors."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
import zmq
from console_helpers import default_bundle, request, shadow_read, wait_until
from hub_helpers import Sender, free_port, hub_config

from tests.conftest import stop_processes
from threatseer.cli.demo import curve_keys
from threatseer.common.configfile import ConfigError, load
from threatseer.hub.config import HubConfig
from threatseer.hub.daemon import Hub


class ConsoleProcess:
    def __init__(self, cmd: list[str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(cmd, stderr=open(log, "w"))  # noqa: SIM115

    def stop(self) -> None:
        stop_processes(self.proc, timeout=10)


@pytest.fixture
def consoles():  # type: ignore[no-untyped-def]
    made: list[ConsoleProcess] = []
    yield made
    for c in made:
        c.stop()


def _curve_hub_config(tmp_path: Path, keys: Path, allowed: list[Path]):  # type: ignore[no-untyped-def]
    hub_secret, hub_public = curve_keys(keys, "hub")
    _sensor_secret, sensor_public = curve_keys(keys, "sensor")
    subscribers = keys / "subscribers"
    subscribers.write_text("".join(p.read_text().strip() + "\n" for p in allowed))
    cfg = hub_config(tmp_path / "hub", plaintext=False,
                     curve_secret_key_file=str(hub_secret),
                     curve_allow_list=str(sensor_public),
                     curve_subscriber_allow_list=str(subscribers))
    return cfg, hub_public


def test_standalone_console_over_curve_survives_a_hub_restart(tmp_path, tokens, consoles,
                                                              threatseer_cmd):
    keys = tmp_path / "keys"
    keys.mkdir()
    console_secret, console_public = curve_keys(keys, "console")
    stranger_secret, _ = curve_keys(keys, "stranger")
    cfg, hub_public = _curve_hub_config(tmp_path, keys, [console_public])
    # The sensor side is a plaintext-free CURVE client too: the hub refuses anything else.
    sensor_secret = (keys / "sensor").read_text().strip().encode()
    ctx = zmq.Context()
    hub = Hub(cfg, bundle=default_bundle(), stop_timeout_s=5)
    try:
        hub.start()
        ports = [free_port(), free_port()]
        for port, key in zip(ports, (console_secret, stranger_secret), strict=True):
            consoles.append(ConsoleProcess([
                *threatseer_cmd, "console", "--hub", cfg.publish.endpoint,
                "--server-key", str(hub_public), "--key", str(key),
                "--listen", f"127.0.0.1:{port}", "--viewer-tokens", str(tokens.viewer_file),
                "--state-dir", cfg.state_dir], tmp_path / f"console-{port}.log"))
        good, stranger = (f"http://127.0.0.1:{p}" for p in ports)

        def feed(base):  # type: ignore[no-untyped-def]
            status, h = request(base, "/api/health", tokens.viewer)
            return h["console"]["feed"] if status == 200 else {}

        wait_until(lambda: feed(good).get("status") == "connected", 20,
                   what="the console's CURVE subscription")
        wait_until(lambda: feed(stranger).get("status", "").startswith("refused"), 20,
                   what="the stranger's refusal")

        sender = Sender(ctx, cfg.ingest.endpoint, "s-web1")
        from threatseer.common.keys import curve_client, read_key

        sender.sock.close(linger=0)  # again, as a CURVE client
        sender.sock = ctx.socket(zmq.DEALER)
        curve_client(sender.sock, read_key(sensor_secret.decode()), read_key(str(hub_public)))
        sender.sock.connect(cfg.ingest.endpoint)
        sender.send(shadow_read("web1", 1))

        def alerts(base):  # type: ignore[no-untyped-def]
            status, body = request(base, "/api/alerts", tokens.viewer)
            return body["alerts"] if status == 200 else []
        wait_until(lambda: len(alerts(good)) == 1, 10, what="the alert in the console")
        assert alerts(stranger) == []
        # The console reads the hub's status file (same host): the sensor's hub-side counters.
        h = request(good, "/api/health", tokens.viewer)[1]
        assert h["sensors"][0]["agent"] == "s-web1"
        wait_until(lambda: request(good, "/api/health", tokens.viewer)[1]["sensors"][0]
                   .get("hub"), 10, what="the hub's status in the console")

        # Restart the hub: the console stays up, its subscription comes back by itself and
        # what it held before is still there.
        hub.stop()
        wait_until(lambda: feed(good)["status"].startswith("disconnected"), 10,
                   what="the console noticing the hub is gone")
        hub = Hub(cfg, bundle=default_bundle(), stop_timeout_s=5)
        hub.start()
        wait_until(lambda: feed(good)["status"] == "connected", 20, what="reconnection")
        assert feed(good)["reconnects"] >= 1
        sender.send(shadow_read("web1", 2))
        wait_until(lambda: len(alerts(good)) == 2, 10, what="an alert after the restart")
    finally:
        hub.stop()
        ctx.destroy(linger=0)
    for c in consoles:
        c.stop()
        assert "Traceback" not in c.log.read_text(), c.log.read_text()


def test_console_command_errors_are_one_line(threatseer_cmd, tmp_path, tokens):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*threatseer_cmd, "console", *args], capture_output=True,
                              text=True, timeout=60)

    cases = [
        ((), "--hub"),
        (("--hub", "tcp://127.0.0.1:1"), "viewer_tokens"),
        (("--hub", "tcp://127.0.0.1:1", "--viewer-tokens", str(tokens.viewer_file),
          "--listen", "0.0.0.0:9180"), "tls_cert_file"),
        (("--hub", "tcp://127.0.0.1:1", "--viewer-tokens", str(tmp_path / "missing")),
         "does not exist"),
        (("--hub", "tcp://127.0.0.1:1", "--viewer-tokens", str(tokens.viewer_file),
          "--key", str(tokens.viewer_file)), "go together"),
    ]
    for args, needle in cases:
        proc = run(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert needle in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
    # A port in use: one line, exit 1.
    with __import__("socket").socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = run("--hub", "tcp://127.0.0.1:1", "--viewer-tokens", str(tokens.viewer_file),
                   "--listen", f"127.0.0.1:{port}")
    assert proc.returncode == 1 and "cannot serve" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_console_config_is_checked_where_it_is_read(tmp_path):
    def load_console(section: dict) -> HubConfig:  # type: ignore[type-arg]
        path = tmp_path / "hub.yaml"
        path.write_text(yaml.safe_dump({"console": section}))
        return load(path, HubConfig)

    assert load_console({}).console.listen == ""  # off by default
    assert load_console({"listen": "9180", "viewer_tokens": "/x"}).console.listen == "9180"
    for section, needle in [
        ({"listen": "0.0.0.0:9180", "viewer_tokens": "/x"}, "console.listen"),
        ({"listen": "127.0.0.1:9180"}, "console.viewer_tokens"),
        ({"listen": "127.0.0.1:99999", "viewer_tokens": "/x"}, "console.listen"),
        ({"tls_cert_file": "/c"}, "console.tls_cert_file"),
        ({"alerts_kept": 5}, "console.alerts_kept"),
    ]:
        with pytest.raises(ConfigError) as exc:
            load_console(section)
        assert needle in str(exc.value) and "hub.yaml:" in str(exc.value)


def test_keys_gen_console_writes_a_token_and_its_hash(threatseer_cmd, tmp_path):
    out = tmp_path / "alice.token"
    proc = subprocess.run([*threatseer_cmd, "keys", "gen", "--type", "console", "-o", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    token = out.read_text().strip()
    assert token.startswith("tsc_") and os.stat(out).st_mode & 0o777 == 0o600
    line = (tmp_path / "alice.token.pub").read_text()
    from threatseer.hub.console.tokens import Tokens, token_hash

    assert line.split()[0] == token_hash(token) and "# alice.token" in line
    ident = Tokens(str(tmp_path / "alice.token.pub"), "").identify(token)
    assert ident is not None and (ident.name, ident.role) == ("alice.token", "viewer")


def test_the_hubs_console_process_ends_with_the_hub_even_on_kill_9(tmp_path, tokens,
                                                                   threatseer_cmd):
    import json

    port = free_port()
    cfg = {"ingest": {"endpoint": f"tcp://127.0.0.1:{free_port()}"},
           "publish": {"endpoint": ""}, "metrics": {"listen": ""}, "plaintext": True,
           "state_dir": str(tmp_path / "hub"), "log_level": "warning",
           "console": {"listen": f"127.0.0.1:{port}",
                       "viewer_tokens": str(tokens.viewer_file)}}
    (tmp_path / "hub.yaml").write_text(yaml.safe_dump(cfg))
    hub = subprocess.Popen([*threatseer_cmd, "hub", "-c", str(tmp_path / "hub.yaml")],
                           stderr=open(tmp_path / "hub.log", "w"))  # noqa: SIM115
    try:
        def console_pid():  # type: ignore[no-untyped-def]
            try:
                status = json.loads((tmp_path / "hub" / "status.json").read_text())
            except (OSError, ValueError):
                return None
            return (status.get("console") or {}).get("pid")
        pid = wait_until(console_pid, 60, what="the console in the hub's status\n"
                         + (tmp_path / "hub.log").read_text())
        base = f"http://127.0.0.1:{port}"
        assert request(base, "/api/session", tokens.viewer)[0] == 200
        # publish.endpoint is empty: no outside subscriber, the console is fed all the same
        hub.kill()
        hub.wait(10)

        def gone():  # type: ignore[no-untyped-def]
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False
        wait_until(gone, 10, what="the console process ending with its hub")
        assert request(base, "/api/session", tokens.viewer)[0] == 0  # the port is free
    finally:
        if hub.poll() is None:
            hub.kill()
            hub.wait()
