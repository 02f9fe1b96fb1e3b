"""CURVE on both sides, and groups of brokers (one member; three and a
leader kill)."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import orderly
import pytest
from conftest import Broker, binary, free_port, wait_for


def keygen(tool: str, prefix) -> str:
    subprocess.run([binary(tool), "keygen", "--out", str(prefix)], check=True, capture_output=True, timeout=10)
    return open(f"{prefix}.pub").read().strip()


def test_curve_producer_and_worker(procs, tmp_path, python_worker_on):
    broker_pub = keygen("orderly-broker", tmp_path / "broker")
    shop_pub = keygen("orderly-producer", tmp_path / "shop")
    worker_pub = keygen("orderly-worker", tmp_path / "w1")
    keygen("orderly-producer", tmp_path / "stranger")
    (tmp_path / "authorized_keys").write_text(f"{shop_pub} producer shop\n{worker_pub} worker w1\n")
    broker = Broker(procs, extra=[
        "--curve-secret-key", str(tmp_path / "broker.key"), "--authorized-keys", str(tmp_path / "authorized_keys"),
    ]).start()
    got = []
    python_worker_on(broker, lambda order: got.append(order.items), worker_id="w1",
                     curve=orderly.Curve(tmp_path / "w1.key", str(tmp_path / "broker.pub")))
    curve = orderly.Curve(tmp_path / "shop.key", broker_pub)
    with orderly.Producer("shop", broker.intake, broker.fanout, curve=curve) as producer:
        producer.send("c1", [b'{"secret": true}']).wait(timeout=10)
    wait_for("the order handled over CURVE", lambda: got == [[b'{"secret": true}']], timeout=10)
    # An unknown key gets no answer at all (the broker's ZAP refuses it).
    stranger = orderly.Curve(tmp_path / "stranger.key", broker_pub)
    with pytest.raises(TimeoutError, match="no answer from a broker"):
        orderly.Producer("shop", broker.intake, broker.fanout, curve=stranger, handshake_timeout=1)
    assert broker.status()["zap_refused"] >= 1


def test_curve_key_files_are_checked(tmp_path):
    keygen("orderly-producer", tmp_path / "p")
    os.chmod(tmp_path / "p.key", 0o644)
    with pytest.raises(orderly.ConfigError, match="chmod 600"):
        orderly.Curve(tmp_path / "p.key", str(tmp_path / "p.pub"))
    os.chmod(tmp_path / "p.key", 0o600)
    with pytest.raises(orderly.ConfigError, match="not a Z85 CURVE key"):
        orderly.Curve(tmp_path / "p.key", "not-a-key")
    with pytest.raises(orderly.ConfigError, match="needs server_public_key"):
        orderly.Producer("p", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", curve=orderly.Curve(tmp_path / "p.key"))


def write_group(path, count: int) -> list:
    admins = []
    with open(path, "w") as f:
        for member in range(1, count + 1):
            admin = f"127.0.0.1:{free_port()}"
            admins.append(admin)
            f.write(
                f"[[member]]\nid = {member}\n"
                + "".join(f'{key} = "tcp://127.0.0.1:{free_port()}"\n' for key in ("intake", "fanout", "control", "peer"))
                + f'admin = "{admin}"\n\n'
            )
    return admins


def start_group(procs, tmp_path, count: int):
    group = tmp_path / "group.toml"
    admins = write_group(group, count)
    members = {}
    for member in range(1, count + 1):
        members[member] = procs.start(f"member{member}", [
            binary("orderly-broker"), "run", "--group", str(group), "--node-id", str(member),
            "--data-dir", str(tmp_path / f"data{member}"), "--heartbeat-interval-ms", "200",
        ])
    probe = Broker.__new__(Broker)

    def role(member):
        probe.admin = admins[member - 1]
        try:
            return probe.status()["group"]["role"]
        except OSError:
            return None

    def leader():
        return next((m for m in members if members[m].poll() is None and role(m) == "leader"), None)

    return group, members, admins, probe, leader


def acked_on(probe, admin) -> int:
    probe.admin = admin
    try:
        return probe.status()["counters"]["orders_acked"]
    except OSError:
        return -1


def test_group_of_one(procs, tmp_path):
    group, members, admins, probe, leader = start_group(procs, tmp_path, 1)
    wait_for("a leader", leader, timeout=30)
    got = []
    worker = orderly.Worker("gw", handler=lambda order: got.append(order.id), group=group, heartbeat_interval=0.2)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        with orderly.Producer("gp", group=group) as producer:
            for n in range(10):
                producer.send(f"g{n}", [b"1"]).wait(timeout=15)
        wait_for("every order acked", lambda: acked_on(probe, admins[0]) == 10, timeout=15)
        assert sorted(got) == sorted(f"g{n}" for n in range(10))
    finally:
        worker.stop()
        thread.join(timeout=10)


def test_group_of_three_survives_a_leader_kill(procs, tmp_path):
    group, members, admins, probe, leader = start_group(procs, tmp_path, 3)
    first = wait_for("a leader", leader, timeout=60)
    got = set()
    worker = orderly.Worker("gw", handler=lambda order: got.add(order.id), group=group, heartbeat_interval=0.2,
                            concurrency=4)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        with orderly.Producer("gp", group=group, confirm_timeout=30) as producer:
            for n in range(20):
                producer.send(f"a{n}", [b"1"]).wait(timeout=15)
            members[first].kill()
            members[first].wait(timeout=10)
            second = wait_for("a new leader", lambda: (l := leader()) not in (None, first) and l, timeout=60)
            # confirm_timeout is 30 s: these are confirmed in time only
            # because the producer follows the new leader at once.
            receipts = [producer.send(f"b{n}", [b"2"]) for n in range(20)]
            for receipt in receipts:
                receipt.wait(timeout=20)
        wanted = {f"a{n}" for n in range(20)} | {f"b{n}" for n in range(20)}
        wait_for("every order handled", lambda: wanted <= got, timeout=30)
        wait_for("the b orders acked on the new leader",
                 lambda: acked_on(probe, admins[second - 1]) >= 20, timeout=30)
    finally:
        worker.stop()
        thread.join(timeout=10)
