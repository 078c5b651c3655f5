"""Serving fixtures: a real redis-server, a model in a registry, and one running Serve app over HTTP."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import httpx
import pytest

from helpers import TINY
from tamor.models.factory import build_model, save_model
from tamor.platform.data_dir import DataDir
from tamor.platform.registry import Registry


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A real redis-server on a loopback port, stoppable and restartable (empty: no persistence)."""

    def __init__(self, workdir):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.skip("redis-server is not installed (scripts/setup.sh installs it)")
        self.port, self.workdir, self.proc = free_port(), workdir, None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        for _ in range(200):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server on a free loopback port for the session."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def registry_with_model(synthetic_data, tmp_path_factory):
    """A registry holding one untrained-but-valid TAMOR version for the synthetic data."""
    root = tmp_path_factory.mktemp("serving")
    data = DataDir(synthetic_data)
    path = root / "model.pt"
    save_model(build_model(TINY, data.spec(), data.encoder()), path)
    registry = Registry(root / "registry")
    registry.export(path, {"val_auc_mean": 0.5}, metric="val_auc_mean", source={"run": "fixture"})
    return registry


@pytest.fixture(scope="module")
def serve_url(ray_session, synthetic_data, registry_with_model):
    """The full graph running on a local Serve instance, reached over real HTTP."""
    from ray import serve

    from tamor.serve.app import AppArgs, start

    port = free_port()
    args = AppArgs(data_dir=str(synthetic_data), registry=str(registry_with_model.root), ranker_cpus=0.2)
    start(args, port=port)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield url, args
    serve.shutdown()
