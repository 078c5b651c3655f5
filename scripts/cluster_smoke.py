"""The multi-node smoke test: `tamor pipeline` as a `ray job submit` job on a three-node cluster
(scripts/cluster.sh), a worker node killed mid-training, then the node of a Serve replica killed.

    python scripts/cluster_smoke.py            # brings the cluster up and down itself

Checks, each a failure (exit 1) when not met: the job succeeds; the two training workers ran on two
different nodes; after a worker node's raylet is killed (SIGKILL, by PID) during training, the run
resumes from its latest checkpoint on the surviving nodes and finishes with validation AUC > 0.6;
the gate promoted the model and Serve answers; after the node hosting a Serve replica is killed, Serve
reschedules it and requests succeed again within RECOVERY_LIMIT_S. Prints the figures it measured.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pandas as pd

from tamor.platform.run_files import read_epochs

os.environ["RAY_AUTH_MODE"] = "token"  # read when Ray is imported: the cluster's token (~/.ray/auth_token)
# `ray` and `tamor` are this interpreter's (the venv's) executables, activated or not
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ["bash", str(ROOT / "scripts" / "cluster.sh")]
GCS = "127.0.0.1:" + os.environ.get("TAMOR_CLUSTER_PORT", "6391")
JOBS = "http://127.0.0.1:" + os.environ.get("TAMOR_CLUSTER_DASHBOARD", "8267")
PORT = 8311
RECOVERY_LIMIT_S = 120.0


def check(ok: bool, what: str) -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)
    if not ok:
        raise SystemExit(1)


def node_names() -> dict[str, str]:
    """Node ID → head | node_a | node_b (from each node's custom resource), alive nodes only."""
    import ray

    return {n["NodeID"]: next(k[6:] for k in n["Resources"] if k.startswith("tamor_")) for n in ray.nodes() if n["Alive"]}


def kill_node(name: str) -> float:
    pid = int(subprocess.run([*CLUSTER, "pid", name], check=True, capture_output=True, text=True).stdout.split()[0])
    os.kill(pid, signal.SIGKILL)
    print(f"     killed {name} (raylet pid {pid})", flush=True)
    return time.monotonic()


def wait_for(condition, timeout: float, what: str, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    check(False, f"{what} within {timeout:.0f} s")


def job_status(job_id: str) -> str:
    from ray.job_submission import JobSubmissionClient

    return str(JobSubmissionClient(JOBS).get_job_status(job_id).value)


def epochs(run: Path) -> list[dict]:
    return read_epochs(run / "train" / "model")


def registered_checkpoints(run: Path) -> int:
    """How many checkpoints Ray Train's controller has registered (its snapshot beside them): a run
    resumes from these only. An epoch's log line comes before its checkpoint is uploaded and registered."""
    snapshot = run / "train" / "model" / "checkpoint_manager_snapshot.json"
    try:
        return len(json.loads(snapshot.read_text())["checkpoint_results"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def recommend(users: list[str], items: list[str]) -> int:
    body = {"user_id": users[0], "item_ids": items[:50], "top_n": 5}
    try:
        return httpx.post(f"http://127.0.0.1:{PORT}/recommend", json=body, timeout=5).status_code
    except httpx.HTTPError:
        return 0


def training_survives_a_node_loss(out: Path) -> Path:
    """Submit the pipeline job, kill the node of one training worker after the first checkpoint, and check the job
    resumes from it on the surviving nodes, gates and serves; the run's directory."""
    run = out / "run"
    job_id = f"tamor-pipeline-{int(time.time())}"
    # cache_data never: the train split streams from Parquet, so losing a node loses no cached blocks
    pipeline = ["tamor", "pipeline", "--rows", "40000", "--epochs", "6", "--out", str(run), "--registry", str(out / "registry"),
                "--port", str(PORT), "--set", "train.patience=6", "--set", "train.lr=0.003", "--set", "train.cache_data=never"]
    # tamor is installed on every node (one machine, one venv): no --working-dir upload. With one, Ray
    # 2.60 removed the job driver's working directory after the node loss (FileNotFoundError on getcwd).
    subprocess.run(["ray", "job", "submit", "--address", JOBS, "--no-wait", "--submission-id", job_id, "--", *pipeline],
                   check=True, capture_output=True, cwd=out)
    print(f"     job {job_id} submitted: {' '.join(pipeline)}", flush=True)

    first = wait_for(lambda: epochs(run), 1200, "the first epoch")[0]
    placed = [node_names().get(w["node"], "?") for w in first["workers"]]
    check(len(set(w["node"] for w in first["workers"])) == 2, f"the two training workers run on two nodes: {placed}")
    victim = next(n for n in placed if n != "head")
    wait_for(lambda: registered_checkpoints(run), 300, "the first checkpoint to be registered", every=0.5)
    killed_at = kill_node(victim)
    state = wait_for(lambda: (s := job_status(job_id)) not in ("PENDING", "RUNNING") and s, 1200, "the job to end", every=3)
    if state != "SUCCEEDED":
        from ray.job_submission import JobSubmissionClient

        print(JobSubmissionClient(JOBS).get_job_logs(job_id)[-4000:])
    check(state == "SUCCEEDED", f"the pipeline job succeeded after {victim} was lost ({time.monotonic() - killed_at:.0f} s after the kill)")
    history = epochs(run)
    seen = [e["epoch"] for e in history]
    check(seen.count(0) == 1 and seen[-1] >= 1 and history[-1]["workers"] != first["workers"],
          f"training resumed from its checkpoint on a new worker group, not from scratch: epochs logged {seen}")
    check(history[-1]["val_auc_mean"] > 0.6, f"validation AUC after recovery {history[-1]['val_auc_mean']:.4f} > 0.6")
    alive = node_names()
    last_nodes = [alive.get(w["node"], "dead") for w in history[-1]["workers"]]
    check(victim not in last_nodes and "dead" not in last_nodes, f"the last epoch ran on surviving nodes: {last_nodes}")
    record = json.loads((run / "pipeline.json").read_text())
    check(record["gate"]["promote"] and record["served"] == record["exported"], f"gate: {record['gate']['reason']}")
    return run


def serving_survives_a_node_loss(run: Path) -> None:
    """Kill the node of a Serve replica off the head and check Serve answers again within :data:`RECOVERY_LIMIT_S`."""
    from ray.util.state import list_actors

    users = pd.read_parquet(run / "data" / "online" / "users")["user_id"].astype(str).tolist()
    items = pd.read_parquet(run / "data" / "online" / "items")["item_id"].astype(str).tolist()
    check(wait_for(lambda: recommend(users, items) == 200, 120, "Serve to answer") is True, "Serve answers /recommend")
    alive = node_names()
    replicas = [a for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000) if a.class_name.startswith("ServeReplica")]
    hosts = {alive.get(a.node_id, "?"): a.class_name for a in replicas}
    target = next((n for n in hosts if n != "head"), None)
    check(target is not None, f"a Serve replica runs off the head node: {hosts}")
    killed_at = kill_node(target)
    failures = 0
    while recommend(users, items) == 200 and time.monotonic() - killed_at < 30:
        time.sleep(0.2)  # the replica's death takes a moment to show
    while recommend(users, items) != 200:
        failures += 1
        if time.monotonic() - killed_at > RECOVERY_LIMIT_S:
            break
        time.sleep(0.5)
    recovered = time.monotonic() - killed_at
    ok = all(recommend(users, items) == 200 for _ in range(5))
    check(ok and recovered < RECOVERY_LIMIT_S,
          f"Serve rescheduled {hosts[target]} off {target}: requests succeed again {recovered:.1f} s after the kill "
          f"({failures} failed meanwhile)")


def main() -> None:
    import ray

    subprocess.run([*CLUSTER, "up"], check=True)
    try:
        ray.init(address=GCS, logging_level="ERROR", log_to_driver=False)
        out = Path(tempfile.mkdtemp(prefix="tamor-cluster-"))
        serving_survives_a_node_loss(training_survives_a_node_loss(out))
        print(f"cluster smoke passed: {out}")
    finally:
        ray.shutdown()
        subprocess.run([*CLUSTER, "down"], check=False)


if __name__ == "__main__":
    sys.exit(main())
