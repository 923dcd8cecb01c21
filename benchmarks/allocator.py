"""What :func:`thce.allocator.reuse_freed_memory` (the CLI's start-up setting) buys on CPU, against glibc's default
allocator in the same run.

Each measurement runs in a fresh process (the setting is process-wide), alternating default and reuse,
``--repeats`` times; the median is reported with all runs:

- ``train_clips_per_s``: training steps (forward, backward, Adam) of the paper's CNN encoder, L2-normalised with
  centring, at ``--batch`` clips of 1000 x 64 (the demo's batch is 16, the paper's 64);
- ``eval_clips_per_s``: eval-mode passes of the same encoder at that batch (what calibration, clustering,
  validation and scoring run), and at batch 1 (what ``thce detect`` runs on the CPU);
- ``speedup``: reuse / default of each median.

Usage: ``python benchmarks/allocator.py [--batch 16] [--repeats 3] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def child(setting: str, batch: int) -> dict:
    """One process: the allocator as ``setting`` says, then timed steps; returns clips per second."""
    import torch

    from thce.allocator import reuse_freed_memory
    from thce.config import config_from_dict
    from thce.methods import build_method_encoder

    if setting == "reuse":
        reuse_freed_memory()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    config = config_from_dict({"methods": ["proposed1", "proposed2"], "model": {"encoder": "cnn"}})
    encoder = build_method_encoder(config, "proposed2")
    optimiser = torch.optim.Adam(encoder.parameters(), lr=1e-3)
    x = torch.randn(batch, 1000, 64)
    weights = torch.randn(encoder.embedding_dim)

    def train_step() -> None:
        optimiser.zero_grad()
        (encoder(x) @ weights).sum().backward()
        optimiser.step()

    def rate(step, clips: int, steps: int) -> float:
        step()  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return clips * steps / (time.perf_counter() - start)

    encoder.train()
    out = {"train_clips_per_s": rate(train_step, batch, 6)}
    encoder.eval()
    with torch.inference_mode():
        out["eval_clips_per_s"] = rate(lambda: encoder(x), batch, 6)
        one = x[:1]
        out["eval_batch1_clips_per_s"] = rate(lambda: encoder(one), 1, 48)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--child", nargs=2, metavar=("SETTING", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    from thce.machine import describe_machine

    runs: dict[str, list[dict]] = {"default": [], "reuse": []}
    for _ in range(args.repeats):
        for setting in runs:
            done = subprocess.run([sys.executable, __file__, "--child", setting, str(args.batch)],
                                  capture_output=True, text=True, check=True)  # fmt: skip
            runs[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
    report: dict = {"benchmark": "allocator", "baseline": "glibc's default allocator", "batch": args.batch,
                    "input": [1000, 64], "encoder": "paper CNN, L2-normalised, centred"}  # fmt: skip
    for key in ("train_clips_per_s", "eval_clips_per_s", "eval_batch1_clips_per_s"):
        medians = {s: statistics.median(r[key] for r in runs[s]) for s in runs}
        report[key] = {s: round(v, 1) for s, v in medians.items()}
        report[key]["all_runs"] = {s: [round(r[key], 1) for r in runs[s]] for s in runs}
        report[key]["speedup"] = round(medians["reuse"] / medians["default"], 2)
    report["machine"] = describe_machine(threads=2)
    report["machine"].pop("allocator")  # both settings ran; the parent's own is irrelevant
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
