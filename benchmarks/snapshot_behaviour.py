"""A behaviour snapshot: what the tiny preset run and the tiny default ablation store.

    python benchmarks/snapshot_behaviour.py OUT.json [--work DIR]
    python benchmarks/snapshot_behaviour.py --compare BEFORE.json AFTER.json

Runs ``experiments/run.py with tiny`` and ``experiments/matrix.py run default --preset tiny``
(both fp32, deterministic on the CPU) into a fresh folder and writes, per completed run: its
cell key, its result (every stored metric), its logged scalars and a SHA-256 of every final
generator's tensors. ``--compare`` says what differs between two snapshots: a restructuring
that changes no behaviour leaves them equal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tensor_digest(path: Path) -> dict[str, str]:
    """SHA-256 of each weight set (params, params_ema) of a generator file, by tensor bytes."""
    from esrgan.weights import load_checkpoint

    obj = load_checkpoint(path)
    out = {}
    for name in ("params", "params_ema"):
        state = obj.get(name) if isinstance(obj, dict) else None
        if not isinstance(state, dict):
            continue
        h = hashlib.sha256()
        for key in sorted(state):
            h.update(key.encode())
            h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
        out[name] = h.hexdigest()
    return out


def snapshot(work: Path) -> dict:
    env = {**os.environ, "ESRGAN_RUNS": str(work / "runs"), "OMP_NUM_THREADS": "1"}
    for cmd in ([sys.executable, str(REPO / "experiments" / "run.py"), "with", "tiny",
                 "progress=False"],
                [sys.executable, str(REPO / "experiments" / "matrix.py"), "run", "default",
                 "--preset", "tiny", "--jobs", "1"]):
        subprocess.run(cmd, cwd=work, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    runs = {}
    for folder in sorted((work / "runs").iterdir()):
        run_file = folder / "run.json"
        if not run_file.is_file():
            continue
        run = json.loads(run_file.read_text())
        if run.get("status") != "COMPLETED":
            continue
        info = json.loads((folder / "info.json").read_text()).get("esrgan", {})
        scalars = json.loads((folder / "metrics.json").read_text())
        key = f"{info.get('kind')}:{info.get('cell_key')}"
        runs[key] = {
            "result": run.get("result"),
            "scalars": {n: s.get("values") for n, s in sorted(scalars.items())},
            "generators": {p.name: tensor_digest(p) for p in sorted(folder.glob("G_*.pth"))},
        }
    return runs


def compare(before: dict, after: dict) -> list[str]:
    problems = []
    for key in sorted(set(before) | set(after)):
        if key not in after or key not in before:
            problems.append(f"{key}: only in {'before' if key in before else 'after'}")
            continue
        for part in ("result", "scalars", "generators"):
            a, b = before[key][part], after[key][part]
            if part == "result":  # wall-clock seconds differ run to run
                a = {k: v for k, v in (a or {}).items() if k != "seconds"}
                b = {k: v for k, v in (b or {}).items() if k != "seconds"}
            if part == "scalars":  # timings are not behaviour
                a = {k: v for k, v in a.items() if not k.endswith("_seconds")}
                b = {k: v for k, v in b.items() if not k.endswith("_seconds")}
            if a != b:
                problems.append(f"{key}: {part} differ")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--compare", nargs=2, type=Path, default=None)
    args = parser.parse_args()
    if args.compare:
        before, after = (json.loads(p.read_text()) for p in args.compare)
        problems = compare(before, after)
        runs = len(before)
        gens = sum(len(r["generators"]) for r in before.values())
        print(f"{runs} runs, {gens} generator files compared: "
              + ("identical (results, scalars, generator tensors)" if not problems
                 else f"{len(problems)} differences"))
        for line in problems:
            print("  " + line)
        return 1 if problems else 0
    work = args.work or Path(tempfile.mkdtemp(prefix="snapshot-"))
    work.mkdir(parents=True, exist_ok=True)
    data = snapshot(work)
    args.out.write_text(json.dumps(data, indent=1, sort_keys=True))
    print(f"{len(data)} completed runs -> {args.out} (work in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
