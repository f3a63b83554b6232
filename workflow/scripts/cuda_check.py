"""The CUDA check of issue 18, in one command on a machine with a GPU (from the repository root):

    .venv/bin/python workflow/scripts/cuda_check.py            # tests, then the two timings
    .venv/bin/python workflow/scripts/cuda_check.py --no-tests # timings only

1. tests/test_cuda.py: every algorithm's smoke PointNav run on CUDA against the CPU (float
   tolerance), a same-seed CUDA rerun (same bytes), a CUDA-trained model evaluated on the CPU.
2. One paper-preset training iteration (sample the batch, then update) of TrMRL and of PEARL on
   HalfCheetahVel on `--device` (default cuda), after a small warm-up (CUDA's start-up is not
   an iteration's cost), measured and priced as workflow/scripts/measure_cost.py does for the
   CPU (`measure`, `run_cost`: PEARL's update timed on 40 gradient steps and scaled), with the
   device-hours of a paper run it implies.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TIMED = (("trmrl", "HalfCheetahVel"), ("pearl", "HalfCheetahVel"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="device to time on (default cuda)")
    parser.add_argument("--threads", type=int, default=1, help="torch (and environment) threads (default 1)")
    parser.add_argument("--no-tests", action="store_true", help="skip tests/test_cuda.py")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("cuda_check: torch sees no CUDA device; nothing to check here", file=sys.stderr)
        return 2
    status = 0
    if not args.no_tests:
        status = subprocess.call([sys.executable, "-m", "pytest", "-v", "-rs", "tests/test_cuda.py"], cwd=REPO)
    sys.path.insert(0, str(REPO / "workflow" / "scripts"))
    from measure_cost import measure, run_cost

    from metarl.bench import measure_algo

    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"torch {torch.__version__}, device {args.device} ({name}), {args.threads} thread(s)")
    for algo, bench_id in TIMED:
        measure_algo(algo, "PointNav", "smoke", 1.0, 1.0, count_flops=False, threads=args.threads, device=args.device)
        r = run_cost(algo, bench_id, 1, [], measure(algo, bench_id, args.device, args.threads))
        print(f"{bench_id} {algo} paper: {r['batch_steps']} steps/iteration, {r['iteration_s']:.2f} s/iteration; "
              f"x {r['iterations']} iterations = {r['train_h']:.1f} {args.device}-hours of training per seed "
              f"({r['run_h']:.1f} with evaluation)")
    return status


if __name__ == "__main__":
    sys.exit(main())
