"""`--device cuda` (issue 18): every algorithm trains end to end on CUDA with the CPU's results
up to float tolerance, a same-seed CUDA rerun gives the same bytes, and a model trained on CUDA
evaluates on a machine without one. Skipped where torch sees no CUDA device; on a GPU machine
`workflow/scripts/cuda_check.py` runs it (and times two paper-preset iterations).

Tolerances. Both devices start from the same weights (initialised on the CPU, then moved) and
draw every random number from the same CPU generators, so they differ only by float rounding
(the GPU's kernels sum in another order). Calibrated on the CPU with smoke PointNav runs whose
matmul and sum outputs all got ±1-ulp relative noise (a TorchFunctionMode), against plain ones:
the untrained agent's evaluation returns moved by at most 2e-5 (returns are about −45..0), the
first iteration's progress row by at most 4e-5 relative (MAML-TRPO's `loss_before`, ~1e-8 by
construction, by 4e-8 absolute), and later rows drift, up to 6e-2 in one episode's return by
iteration 25 (MAML-TRPO's line search, VariBAD's PPO). Hence two tolerances:

- TIGHT, for what comes before any chaotic amplification: the untrained agent's evaluation
  (iteration 0), |Δ| ≤ 1e-4 + 1e-4·|return|, and the first iteration's progress row (its batch
  sampled by the initial policy, its metrics from one update), |Δ| ≤ 1e-5 + 1e-3·|value|: some
  25-100x the calibrated differences, while a device or random-stream bug moves them by O(1);
  TF32 (which would round every cuDNN matmul input to 10 bits) is checked directly;
- LOOSE, for every later row: the harness's columns (training returns, and each evaluation's
  mean return per episode index over the split) within 1.0 of a return: it catches a run that
  breaks, it does not pin chaos.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import pytest
import torch

from metarl.registry import BUILTIN_ALGORITHMS
from metarl.runs import run_dir_for

from conftest import files_of, run_cli

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="no CUDA device (torch.cuda.is_available() is False); on a GPU machine run workflow/scripts/cuda_check.py",
)

LEARNERS = [name for name in BUILTIN_ALGORITHMS if name != "random"]
EVAL_TIGHT = {"rel": 1e-4, "abs_": 1e-4}  # returns of the untrained agent, and of one model on two devices
ROW_TIGHT = {"rel": 1e-3, "abs_": 1e-5}  # the first iteration's progress row
LOOSE = {"rel": 0.0, "abs_": 1.0}  # later rows
HARNESS = ("train_return", "train_return_first", "train_return_last", "train_success")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _close(a: str, b: str, rel: float, abs_: float) -> bool:
    if a == b:
        return True
    x, y = float(a), float(b)
    return math.isfinite(x) and abs(x - y) <= abs_ + rel * abs(x)


def _eval_means(rows: list[dict[str, str]]) -> dict[tuple[int, str, int], float]:
    """Mean return over a split's tasks per (iteration, split, episode index)."""
    groups: dict[tuple[int, str, int], list[float]] = {}
    for r in rows:
        groups.setdefault((int(r["iteration"]), r["split"], int(r["episode"])), []).append(float(r["return"]))
    return {k: sum(v) / len(v) for k, v in groups.items()}


def compare_runs(cpu: Path, gpu: Path) -> list[str]:
    """What differs between two runs of one config beyond the tolerances above (empty: none)."""
    problems = []
    p_cpu, p_gpu = _rows(cpu / "progress.csv"), _rows(gpu / "progress.csv")
    if list(p_cpu[0]) != list(p_gpu[0]) or len(p_cpu) != len(p_gpu):
        return [f"progress.csv: columns or row counts differ ({len(p_cpu)} vs {len(p_gpu)} rows)"]
    first = {k: (p_cpu[0][k], p_gpu[0][k]) for k in p_cpu[0] if not _close(p_cpu[0][k], p_gpu[0][k], **ROW_TIGHT)}
    if first:
        problems.append(f"iteration 1 beyond float tolerance (cpu, cuda): {first}")
    for a, b in zip(p_cpu[1:], p_gpu[1:]):
        if (a["iteration"], a["env_steps"]) != (b["iteration"], b["env_steps"]):
            problems.append(f"progress rows out of step (iteration/env_steps): "
                            f"{a['iteration']}/{a['env_steps']} vs {b['iteration']}/{b['env_steps']}")
        far = {k: (a[k], b[k]) for k in HARNESS if k in a and not _close(a[k], b[k], **LOOSE)}
        if far:
            problems.append(f"iteration {a['iteration']} drifted apart: {far}")

    e_cpu, e_gpu = _rows(cpu / "eval.csv"), _rows(gpu / "eval.csv")
    key = ("iteration", "split", "task", "episode")
    if [[r[k] for k in key] for r in e_cpu] != [[r[k] for k in key] for r in e_gpu]:
        return problems + ["eval.csv: different (iteration, split, task, episode) rows"]
    untrained = [(r["task"], r["episode"], r["return"], s["return"]) for r, s in zip(e_cpu, e_gpu)
                 if r["iteration"] == "0" and not _close(r["return"], s["return"], **EVAL_TIGHT)]
    if untrained:
        problems.append(f"the untrained agent's evaluation (task, episode, cpu, cuda): {untrained[:5]}")
    m_cpu, m_gpu = _eval_means(e_cpu), _eval_means(e_gpu)
    far = {k: (m_cpu[k], m_gpu[k]) for k in m_cpu if abs(m_cpu[k] - m_gpu[k]) > LOOSE["abs_"]}
    if far:
        problems.append(f"mean evaluation returns drifted apart (iteration, split, episode): {far}")
    return problems


def _train(algo: str, device: str, cwd: Path) -> Path:
    cwd.mkdir(parents=True, exist_ok=True)
    run_cli(["train", "--algo", algo, "--env", "PointNav", "--seed", "1", "--preset", "smoke", "--quiet",
             "--device", device], cwd=cwd)
    return cwd / run_dir_for("PointNav", algo, "default", 1)


def test_cuda_settings_for_cpu_numerics():
    """build_agent on CUDA: a deterministic cuBLAS workspace and cuDNN, and no TF32 anywhere."""
    from metarl import config as cfg
    from metarl.setup import build_agent, prepare

    agent = build_agent(prepare(cfg.resolve("rl2", "PointNav", 1, "smoke", overrides={"device": "cuda"})))
    assert next(agent.net.parameters()).is_cuda
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32


@pytest.mark.parametrize("algo", LEARNERS)
def test_cuda_matches_cpu(tmp_path, algo):
    cpu = _train(algo, "cpu", tmp_path / "cpu")
    gpu = _train(algo, "cuda", tmp_path / "cuda")
    assert '"device": "cuda' in (gpu / "metadata.json").read_text()
    assert compare_runs(cpu, gpu) == []

    # a same-seed rerun on the same GPU: the same bytes
    assert files_of(_train(algo, "cuda", tmp_path / "cuda2")) == files_of(gpu)

    # the CUDA-trained model where torch sees no GPU: the run's final test rows again
    out = tmp_path / "eval_on_cpu.csv"
    run_cli(["evaluate", "--run", str(gpu), "--split", "test", "--device", "cpu", "--out", str(out)],
            cwd=tmp_path / "cuda", env={"CUDA_VISIBLE_DEVICES": ""})
    e_gpu = _rows(gpu / "eval.csv")
    final = max(int(r["iteration"]) for r in e_gpu)
    trained = [r for r in e_gpu if int(r["iteration"]) == final and r["split"] == "test"]
    on_cpu = _rows(out)
    assert [(r["task"], r["episode"]) for r in on_cpu] == [(r["task"], r["episode"]) for r in trained]
    moved = [(r["task"], r["episode"], r["return"], s["return"]) for r, s in zip(trained, on_cpu)
             if not _close(r["return"], s["return"], **EVAL_TIGHT)]
    assert not moved, f"the CUDA-trained model evaluates differently on the CPU (task, episode, cuda, cpu): {moved[:5]}"
