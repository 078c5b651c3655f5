"""Helpers shared by tests and benchmarks: a small feature spec and planted-signal batches."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tamor.models.config import ModelConfig
from tamor.models.feature_spec import CategoricalField, FeatureSpec, NumericField, TaskSpec

REPO = Path(__file__).resolve().parents[1]
CENSUS_SAMPLE = REPO / "tests" / "data" / "census-income-5k.csv.gz"  # see tests/data/README.md

TIERS = ["new", "low", "high"]
TINY = ModelConfig(embedding_dim=4, expert_dims=[16], tower_dims=[8], bias_dim=4, num_experts=2, ple_levels=1)  # the tests' model: fast
SCENARIOS = ["money_market", "fund", "gold", "insurance"]


def no_teacher(schema):
    """``schema`` (a ``LogSchema``) with the tree teacher off: a fit per preprocess, which only the tests of the
    teacher and the runs that distil from it need."""
    return schema.model_copy(update={"preprocess": schema.preprocess.model_copy(update={"teacher": False})})


def preprocessed_world(root: Path, teacher: bool = True, **world) -> Path:
    """Generate a synthetic world of the given ``WorldConfig`` fields under ``root`` and preprocess it
    (Ray Data; needs Ray started), with or without the teacher: returns the preprocessed directory."""
    from tamor.platform.generate import generate
    from tamor.platform.preprocess import preprocess
    from tamor.platform.schema import load_schema
    from tamor.platform.world import WorldConfig

    generate(WorldConfig(**world), root)
    schema = load_schema("synthetic")
    preprocess(str(root / "logs"), schema if teacher else no_teacher(schema), root / "data")
    return root / "data"


def make_spec(task_tiers: dict[str, list[str]] | None = None) -> FeatureSpec:
    task_tiers = task_tiers or {}
    tasks = [("click", "item"), ("conversion", "item"), ("invest", "item"), ("large_invest", "item"), ("high_holding", "user")]
    return FeatureSpec(
        dataset="test",
        categorical=[
            CategoricalField(name="age_band", side="user", vocab_size=6),
            CategoricalField(name="risk_pref", side="user", vocab_size=4),
            CategoricalField(name="item_id", side="item", vocab_size=30),
            CategoricalField(name="page", side="context", vocab_size=4),
        ],
        numeric=[
            NumericField(name="activity", side="user", mean=0, std=1),
            NumericField(name="promo", side="item", mean=0, std=1),
        ],
        tiers=TIERS,
        tier_thresholds=[0.01, 100],
        scenarios=SCENARIOS,
        tasks=[TaskSpec(name=n, level=lvl, tiers=task_tiers.get(n, TIERS)) for n, lvl in tasks],
    )


def planted_columns(spec: FeatureSpec, n: int, seed: int) -> dict[str, np.ndarray]:
    """Random features whose labels follow a planted rule mixing item id, tier and a numeric."""
    rng = np.random.default_rng(seed)
    cols = {}
    for f in spec.categorical:
        cols[f"f_{f.name}"] = rng.integers(0, f.vocab_size, n)
    for f in spec.numeric:
        cols[f"f_{f.name}"] = rng.normal(size=n).astype(np.float32)
    cols["tier"] = rng.integers(0, len(spec.tiers), n)
    cols["scenario"] = cols["f_item_id"] % len(spec.scenarios)
    item_effect = np.sin(cols["f_item_id"] * 1.7) * 1.5
    tier_flip = np.where(cols["tier"] == 2, -1.0, 1.0)  # tiers disagree on items: tier awareness pays
    signal = item_effect * tier_flip + cols["f_activity"]
    for t, task in enumerate(spec.task_names):
        shift = 0.6 * t if task != "high_holding" else 0.0
        logit = (signal - shift) if task != "high_holding" else (1.5 * cols["f_activity"] + cols["tier"] - 1)
        cols[f"label_{task}"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-2 * logit))).astype(np.float32)
        cols[f"mask_{task}"] = np.ones(n, dtype=np.float32)
    return cols


def as_json(value):
    """A raw value as a JSON client sends it: numbers stay numbers, missing is null."""
    import json
    import math

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    return json.loads(json.dumps(value))


def census_json_value(text: str):
    """A census CSV cell as a JSON client would send it: a number when it is one, else the text."""
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


def encoded_rows(data):
    """Every encoded row of a preprocessed ``DataDir``'s splits, in one frame."""
    import pandas as pd

    from tamor.platform.data_dir import SPLITS

    return pd.concat([pd.read_parquet(data.split(s)) for s in SPLITS if any(data.split(s).iterdir())], ignore_index=True)


def promote_many(root: str, alias: str, rounds: int) -> None:
    """Point ``alias`` at v0001 of the registry at ``root`` ``rounds`` times: a process racing others (spawned, it
    imports only this module and the registry, not torch)."""
    from tamor.platform.registry import Registry

    for _ in range(rounds):
        Registry(root).promote("v0001", alias)


def wait_until(check: Callable[[], object], timeout_s: float) -> float:
    """Seconds until ``check()`` is true, polled every 0.1 s (an HTTP error counts as not yet); raises after ``timeout_s``."""
    import httpx

    start = time.time()
    while time.time() - start < timeout_s:
        try:
            if check():
                return time.time() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"not true within {timeout_s} s")


def session_actors(*filters: tuple[str, str, str], limit: int = 10_000) -> list:
    """The actors of this test session's Ray (State API records) matching ``filters``, asked of its own GCS: with no
    address Ray's State API looks for the machine's one Ray and fails if a benchmark runs another beside it."""
    import ray
    from ray.util.state import list_actors

    return list_actors(address=ray.get_runtime_context().gcs_address, filters=list(filters), limit=limit)


def ray_state_lines(tail: int = 15) -> list[str]:
    """What the test session's Ray holds now: free CPUs, every live actor, and the last log lines of each Tune trial,
    Train controller and Train worker."""
    import ray
    from ray.util.state import get_log

    actors, gcs = session_actors(("state", "=", "ALIVE"), limit=500), ray.get_runtime_context().gcs_address
    lines = [f"ray: {ray.available_resources().get('CPU', 0):.2f} CPUs free, {len(actors)} live actors"]
    lines += [f"ray:   {a.class_name} pid={a.pid} {a.actor_id}" for a in actors]
    for a in (a for a in actors if a.class_name.endswith(("ImplicitFunc", "TrainController", "RayTrainWorker"))):
        try:
            lines += [f"ray: {a.actor_id} | {line}" for line in "".join(get_log(address=gcs, actor_id=a.actor_id, tail=tail)).splitlines()]
        except Exception as e:  # a diagnostic must not hide the failure it explains
            lines.append(f"ray: no log for {a.actor_id}: {e}")
    return lines


class FailOnce:
    """`tamor train`'s per-worker loop whose rank-0 worker raises once, right after it reported ``epoch - 1``
    with its checkpoint: a worker failure at the start of ``epoch`` (``train(cfg, loop=FailOnce(1))``). The
    marker ``.failed_at_<epoch>`` in the run's directory records that it failed, so the recovered run goes on."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def __call__(self, config: dict) -> None:
        import ray.train

        from tamor.platform.train import train_loop_per_worker

        report, marker = ray.train.report, Path(config["run_dir"]) / f".failed_at_{self.epoch}"

        def report_then_fail(metrics: dict, checkpoint=None, **kw) -> None:
            report(metrics, checkpoint=checkpoint, **kw)
            if metrics["epoch"] + 1 == self.epoch and ray.train.get_context().get_world_rank() == 0 and not marker.exists():
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
                raise RuntimeError(f"injected worker failure at epoch {self.epoch}")

        ray.train.report = report_then_fail  # in this worker process only, for this run
        try:
            train_loop_per_worker(config)
        finally:
            ray.train.report = report


class Traffic:
    """Requests posted back to back from ``threads`` threads while a fault is injected (a context manager).

    Every answer is kept as ``(time, phase, status, json body or None, Retry-After header)``; ``phase``
    names the moment of the fault, set by the test as it goes, so counts can be asserted per phase.
    """

    def __init__(self, url: str, body: dict, threads: int = 2):
        import threading

        self.url, self.body, self.phase, self.answers, self.threads = url, body, "before", [], threads
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        import time

        import httpx

        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                phase = self.phase
                try:
                    r = client.post(f"{self.url}/recommend", json=self.body)
                    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else None
                    self.answers.append((time.time(), phase, r.status_code, body, r.headers.get("retry-after")))
                except Exception as e:  # a dropped connection counts as a failed request
                    self.answers.append((time.time(), phase, type(e).__name__, None, None))

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def wait_for_more(self, n: int = 5, timeout_s: float = 30) -> None:
        """Until ``n`` more answers than now have come: traffic flows, or goes on flowing after a fault."""
        seen = len(self.answers)
        wait_until(lambda: len(self.answers) >= seen + n, timeout_s)

    def statuses(self, phase: str | None = None) -> dict:
        """``{status: count}`` over the answers of one phase (all when None)."""
        from collections import Counter

        return dict(Counter(a[2] for a in self.answers if phase is None or a[1] == phase))


def read_offline_history(directory: str | Path) -> list[dict]:
    """The ``history`` rows (one per ``log`` call) of every offline W&B run under ``directory``.

    Reads the run's ``.wandb`` file (a LevelDB-style record log of W&B's protobuf records), so a
    test or a person can check what a run logged without uploading it.
    """
    import json
    import struct

    from wandb.proto import wandb_internal_pb2

    block, header = 32_768, 7
    rows = []
    for path in sorted(Path(directory).rglob("offline-run-*/*.wandb")):
        raw, pos, buf, records = path.read_bytes(), header, b"", []
        while pos + header <= len(raw):
            if block - pos % block < header:  # block trailer too short for a header: padding
                pos += block - pos % block
                continue
            _crc, length, kind = struct.unpack("<IHB", raw[pos : pos + header])
            pos += header
            if kind == 0 and length == 0:
                break
            buf += raw[pos : pos + length]
            pos += length
            if kind in (1, 4):  # a full record, or the last fragment of one
                records.append(buf)
                buf = b""
        for data in records:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
    return rows
