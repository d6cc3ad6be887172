"""Run every benchmark in this folder, one after the other, and print their tables (`make bench`).

    python benchmarks/run_all.py            # the full cases (several minutes on 2 cores)
    python benchmarks/run_all.py --quick    # small cases, a smoke run

Each benchmark alternates its contenders inside one process tree and reports ratios measured in the same
run, so a noisy machine shifts both sides alike. Results go to stdout; README.md quotes them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {
    "simulator": (["bench_simulator.py"], ["--quick"]),
    "executor": (["bench_executor.py"], ["--rounds", "2", "--steps", "3"]),
    "recording": (["bench_recording.py"], ["--quick"]),
    "published": (["bench_published.py"], []),
    "dashboard": (["bench_dashboard.py"], ["--quick"]),
    "traces": (["bench_traces.py"], ["--quick"]),
    "accuracy": (["bench_accuracy.py"], ["--quick"]),
    "gpu": (["bench_gpu.py"], ["--model", "small", "--steps", "3"]),
}
"""name: (script, its flags for --quick). `gpu` runs only where torch sees a CUDA device."""


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small cases")
    args = parser.parse_args()
    failed = []
    for name, (script, quick) in BENCHMARKS.items():
        print(f"== {name} ==", flush=True)
        if name == "gpu" and not has_cuda():
            print("skipped: no CUDA device visible")
            continue
        command = [sys.executable, str(HERE / script[0]), *(quick if args.quick else [])]
        if subprocess.run(command, check=False).returncode:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
