"""Linear probes of trained runs: how much of each method's EER its representation allows.

    python benchmarks/linear_probe.py RUNS [--seeds 0 1 2] [--methods baseline proposed1 proposed2]
                                      [--out benchmarks/results/probes/NAME.json] [--note TEXT]

``RUNS/seed_<s>/`` are finished runs (a ``thce experiment --seeds`` folder or a sweep's variant folder) whose data
and feature cache are still where their ``config.toml`` says. For each method's checkpoint the clips of every split
are embedded once with the trained encoder in eval mode (what its head sees at scoring time), and a probe is fitted
on them: ``logreg_stats``' one-vs-rest, class-weighted logistic regression (:func:`thce.reference.select_and_fit`,
C on validation), on features standardised with the training split's mean and std. Probes:

- ``embedding``: the encoder's (B, D) output E(x): what any head on this embedding could read linearly;
- ``cluster_outputs``: the cluster layer's (B, K) h = W^T E(x) (models that have one): Proposed1's head input.

Read against the method's own EER (``own``, from its test scores): a probe well below ``own`` says the head, not the
representation, loses the difference; a probe near ``own`` says the representation is the limit. The JSON gives
each seed's overall EER (%) on validation and test and the mean over seeds, to stdout and with ``--out`` to a file
(with the command that made it).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thce.checkpoint import load_run
from thce.config import load_config
from thce.run_data import prepare_data
from thce.io import read_json, write_json
from thce.metrics import per_class_eer
from thce.reference import LogRegStatsConfig, select_and_fit
from thce.rundir import checkpoint_path
from thce.training.data import embed
from thce.training.engine import RunContext

SPLITS = ("train", "val", "test")


def probe(
    features: dict[str, np.ndarray], class_index: dict[str, np.ndarray], classes: tuple[str, ...]
) -> dict[str, float]:
    """Overall EER (fractions) on ``val`` and ``test`` of a logistic-regression probe fitted on ``train``.

    ``features[split]`` (n, F), standardised here with the training split's per-column mean and std (a constant
    column stays as it is), so the C grid means the same whatever the features' scale; ``class_index[split]`` (n,)
    in ``[0, L]``, L = background. Returns ``{"val": eer, "test": eer, "c": chosen C}``."""
    mean = features["train"].mean(axis=0)
    std = features["train"].std(axis=0)
    std = np.where(std > 0, std, 1.0)
    scaled = {s: (np.asarray(features[s], dtype=np.float64) - mean) / std for s in SPLITS}
    models, _ = select_and_fit(
        (scaled["train"], class_index["train"]), (scaled["val"], class_index["val"]), classes, LogRegStatsConfig()
    )
    out = {
        s: float(per_class_eer(scores=models.predict(scaled[s]), class_index=class_index[s], classes=classes)["overall"])
        for s in ("val", "test")
    }
    return {**out, "c": models.c}


def probe_run(run_dir: Path, methods: list[str]) -> dict[str, Any]:
    """``{method: {"own": {...}, "embedding": {...}[, "cluster_outputs": {...}]}}`` for the ``methods`` of
    ``run_dir`` that have a checkpoint; EERs in %."""
    config = load_config(run_dir / "config.toml")
    data = prepare_data(config, run_dir, write_files=False).data
    results = read_json(run_dir / "results.json", what="run results")
    classes = tuple(results["classes"])
    labels = {s: data.class_index[data.splits[s]] for s in SPLITS}
    ctx = RunContext(train=config.train)
    out: dict[str, Any] = {}
    for method in methods:
        if not checkpoint_path(run_dir, method).is_file():
            continue
        model = load_run(run_dir, method).model
        with torch.no_grad():
            embedding = {s: embed(model.encoder, data, data.splits[s], ctx, desc=s) for s in SPLITS}
            probes = {"embedding": {s: e.numpy() for s, e in embedding.items()}}
            if model.cluster_layer is not None:  # the head's input: the cluster layer's outputs (load_run: eval mode)
                probes["cluster_outputs"] = {s: model.features_for_head(e).numpy() for s, e in embedding.items()}
        own = results["methods"][method]
        entry = {"own": {"val": 100 * own["val_eer"]["overall"], "test": 100 * own["eer"]["overall"]}}
        for name, features in probes.items():
            fitted = probe(features, labels, classes)
            entry[name] = {"val": 100 * fitted["val"], "test": 100 * fitted["test"], "c": fitted["c"],
                           "dims": int(features["train"].shape[1])}  # fmt: skip
        out[method] = entry
    return out


def summarise(per_seed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds of every (method, probe, split) EER that every seed has."""
    seeds = list(per_seed.values())
    means: dict[str, Any] = {}
    for method, probes in seeds[0].items():
        for name in probes:
            for split in ("val", "test"):
                values = [s[method][name][split] for s in seeds if name in s.get(method, {})]
                if len(values) == len(seeds):
                    means.setdefault(method, {}).setdefault(name, {})[split] = round(float(np.mean(values)), 2)
    return means


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="folder of seed_<s>/ finished runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["baseline", "proposed1", "proposed2"])
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--note", default="", help="what the runs are, kept in the JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    per_seed = {str(seed): probe_run(args.runs / f"seed_{seed}", args.methods) for seed in args.seeds}
    result: dict[str, Any] = {"runs": str(args.runs), "seeds": args.seeds, "eer_percent_mean": summarise(per_seed),
                              "per_seed": per_seed}  # fmt: skip
    if args.note:
        result["note"] = args.note
    result["command"] = "python benchmarks/linear_probe.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    print(json.dumps(result, indent=1))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
