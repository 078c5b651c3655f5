"""Training-step throughput of every model (`tamor train`'s step, :func:`tamor.platform.step.train_step`, with its
default recipe), and batched vs looped experts, side by side in one run.

    python bench/model_step.py                       # CPU, batch 512 and 4096
    python bench/model_step.py --device cuda --bf16 --batch-sizes 4096 32768

Prints samples/s of the training step and rows/s of scoring (``predict_proba``) per model and batch size, and the
batched/looped experts ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import make_spec, planted_columns  # noqa: E402  (the tests' small spec and batches)
from tamor.models.config import ModelConfig  # noqa: E402
from tamor.models.factory import MODELS, build_model  # noqa: E402
from tamor.models.inputs import batch_from_columns  # noqa: E402
from tamor.models.layers import BatchedExperts  # noqa: E402
from tamor.platform.step import STEP_PHASES, Learner, train_step  # noqa: E402
from tamor.platform.train_config import TrainConfig  # noqa: E402


def timed(step, device: str, seconds: float) -> float:
    """Steps per second of ``step`` after warm-up, over at least ``seconds``."""
    for _ in range(3):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    if device == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true", help="autocast the experts' comparison to bfloat16 (the training step autocasts on GPUs, as `tamor train` does)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[512, 4096])
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--profile", type=int, default=0, metavar="STEPS",
                   help="also split TAMOR's step into its phases over this many steps with torch.profiler")
    args = p.parse_args()
    dev = args.device
    spec = make_spec()
    amp = torch.autocast(dev, dtype=torch.bfloat16, enabled=args.bf16)
    print(f"device={dev} bf16={args.bf16} torch={torch.__version__} threads={torch.get_num_threads()}")
    sizes, step_note = "".join(f"{'B=' + str(b):>14}" for b in args.batch_sizes), "   (samples/s, train step)"
    print(f"{'model':<16}{sizes}{step_note}{sizes}   (rows/s, predict_proba)")
    for name in sorted(MODELS):
        config = ModelConfig(name=name, num_experts=args.experts)
        learner = Learner.build(build_model(config, spec), spec, TrainConfig(model=config), torch.device(dev))
        steps, scores = [], []
        for b in args.batch_sizes:
            batch = batch_from_columns(spec, planted_columns(spec, b, seed=0), device=dev)
            steps.append(b * timed(lambda batch=batch: train_step(learner, batch), dev, args.seconds))
            learner.core.eval()  # scored as evaluation and serving score: eval mode, no autograd
            scores.append(b * timed(lambda batch=batch: learner.core.predict_proba(batch), dev, args.seconds))
            learner.core.train()
        print(f"{name:<16}" + "".join(f"{r:>14,.0f}" for r in steps) + " " * len(step_note) + "".join(f"{r:>14,.0f}" for r in scores))

    print(f"\nexperts: {args.experts} MLPs 192 -> 256 -> 128, forward + backward (samples/s)")
    print(f"{'batch':<10}{'batched':>14}{'loop':>14}{'ratio':>10}")
    for b in args.batch_sizes:
        batched = BatchedExperts(args.experts, 192, [256, 128]).to(dev)
        loop = batched.loop_reference().to(dev)
        x = torch.randn(b, 192, device=dev)

        def run_batched():
            with amp:
                out = batched(x)
            torch.autograd.grad(out.float().sum(), list(batched.parameters()))  # the layer's gradients; no training step

        def run_loop():
            with amp:
                out = torch.stack([e(x) for e in loop])
            torch.autograd.grad(out.float().sum(), list(loop.parameters()))

        rb, rl = b * timed(run_batched, dev, args.seconds), b * timed(run_loop, dev, args.seconds)
        print(f"{b:<10}{rb:>14,.0f}{rl:>14,.0f}{rb / rl:>9.2f}x")
    if args.profile:
        profile_phases(spec, dev, args.batch_sizes, args.profile)


def profile_phases(spec, dev: str, batch_sizes: list[int], steps: int) -> None:
    """Each phase of TAMOR's training step (its ``record_function`` ranges) as a share of the step's wall time."""
    learner = Learner.build(build_model(ModelConfig(), spec), spec, TrainConfig(), torch.device(dev))
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if dev == "cuda" else [])
    print(f"\nTAMOR's step by phase, {steps} steps under torch.profiler (% of the step's wall time; ms per step)")
    print(f"{'batch':<10}" + "".join(f"{phase:>24}" for phase in STEP_PHASES))
    for b in batch_sizes:
        batch = batch_from_columns(spec, planted_columns(spec, b, seed=0), device=dev)
        for _ in range(3):
            train_step(learner, batch)
        with torch.profiler.profile(activities=activities) as prof:
            start = time.perf_counter()
            for _ in range(steps):
                train_step(learner, batch)
            wall_ms = (time.perf_counter() - start) * 1000 / steps
        spent = {e.key: e.cpu_time_total / 1000 / steps for e in prof.key_averages() if e.key in STEP_PHASES}  # ms per step
        print(f"{b:<10}" + "".join(f"{100 * spent.get(p, 0) / wall_ms:>17.0f}% {spent.get(p, 0):>5.1f}" for p in STEP_PHASES))


if __name__ == "__main__":
    main()
