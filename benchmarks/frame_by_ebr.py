"""Which test events a frame-level run finds, by event-to-background ratio: recall per class and EBR band.

    python benchmarks/frame_by_ebr.py RUN_DIR [RUN_DIR ...] [--bands -6,-2,2,6] [--note TEXT] [--out JSON]

Each RUN_DIR is a finished frame-level run on the built-in synthetic scenes (``data.source = "synth"``,
``data.strong_labels``), or a folder of ``seed_N/`` runs. The synthetic manifest does not record an event's EBR, so
it is drawn again from the generator (:func:`thce.data.synth.events.event_placement` with the clip's own random
stream, the run's seed and synth settings): the redrawn onset must equal the manifest's, or the script stops.

Per method, test event clips are counted as the run counted them: an event is found when its clip's own class has
a true positive in the run's saved per-clip counts (``event_counts.npz``:
:func:`thce.detection.frame_events.clip_counts` with the run's post-processing and DCASE 2017 Task 2's onset
collar, the counts behind its event F). The JSON holds, per method, class and band, the reference events and those found, per run and summed over the runs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling frame_post_processing, also when imported

#: A synthetic clip's file name: ``test_`` for the clips of ``synth.test_counts``, else a clip of ``synth.counts``.
CLIP_NAME = re.compile(r"(?P<test>test_)?(?P<label>[a-z]+)_(?P<index>\d+)\.wav$")


def runs_of(path: Path) -> list[Path]:
    """``path``'s ``seed_N`` runs in seed order (a folder of seeds), else ``path`` itself if it is a run."""
    seeds = sorted(path.glob("seed_*/clips.json"), key=lambda p: int(p.parent.name.split("_")[1]))
    if seeds:  # resolved: a seed_N link to a run elsewhere must name the run's own folder, as its paths do
        return [p.parent.resolve() for p in seeds]
    if not (path / "clips.json").is_file():
        sys.exit(f"{path}: not a finished run (no clips.json here or in seed_N/ folders)")
    return [path.resolve()]


def event_ebrs(run: Path, names: list[str], onsets: dict[str, float]) -> dict[int, tuple[str, float]]:
    """Test clip position -> (class, EBR dB) for each test event clip, redrawn from the generator; ``onsets``: each
    event clip's onset (s) from the run's strong labels, which the redrawn onset must equal."""
    import dataclasses

    from thce.config import load_config
    from thce.data.synth import clip_rng, source_of
    from thce.data.synth.events import event_placement

    config = load_config(run / "config.toml")
    if config.data.source != "synth":
        sys.exit(f"{run}: data.source is {config.data.source!r}; EBRs are redrawn only for the synthetic scenes")
    synth = dataclasses.replace(config.synth, seed=config.seed)
    out = {}
    for i, name in enumerate(names):
        match = CLIP_NAME.search(name)
        if match is None or match["label"] == "background":
            continue
        label, index, test = match["label"], int(match["index"]), bool(match["test"])
        found = source_of(synth, label, index, test=test)
        _, ev_rng, mix_rng = clip_rng(synth.seed, label, index, test=test).spawn(3)
        _, start, ebr_db = event_placement(label, ev_rng, mix_rng, synth, found[1] if found else None)
        onset_s = start / synth.sample_rate_hz
        if abs(onset_s - onsets[name]) > 1e-5:
            sys.exit(f"{run}: {name}: the redrawn onset {onset_s:.6f} s is not the manifest's; other generator code?")
        out[i] = (label, ebr_db)
    return out


def run_counts(run: Path, bands: list[float]) -> dict[str, Any]:
    """Per method, class and band of one run: ``{"n": reference events, "found": events found}``, from the run's own
    per-clip event counts (``event_counts.npz``: what its test event F is summed from)."""
    from frame_post_processing import clip_key
    from thce.config import load_config
    from thce.data.strong import read_strong_labels
    from thce.run_data import run_manifest
    from thce.rundir import EVENT_COUNTS

    config = load_config(run / "config.toml")
    classes = tuple(config.data.classes)
    names = json.loads((run / "clips.json").read_text())["test"]
    strong = read_strong_labels(run_manifest(config, run), events_path=config.data.events or None)
    # clips.json names the clips where the run was made; a copied run's manifest names them in the copy
    onsets = {clip_key(clip): events[0].onset_s for clip, events in strong.items() if events}
    ebrs = event_ebrs(run, names, {n: onsets[clip_key(n)] for n in names if clip_key(n) in onsets})
    out: dict[str, Any] = {}
    with np.load(run / EVENT_COUNTS) as saved:
        for method in saved.files:
            counts = saved[method]  # (clips, classes, [true positives, reference events, detected events])
            table = {label: [{"n": 0, "found": 0} for _ in bands[1:]] for label in classes}
            for i, (label, ebr_db) in ebrs.items():
                band = min(int(np.searchsorted(bands, ebr_db, side="right")) - 1, len(bands) - 2)
                c = classes.index(label)
                if counts[i, c, 1] != 1:
                    sys.exit(f"{run}: {names[i]}: expected one {label} reference event, the counts say {counts[i, c, 1]}")
                table[label][band]["n"] += 1
                table[label][band]["found"] += int(counts[i, c, 0])
            out[method] = table
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--bands", default="-6,-2,2,6", help="band edges in dB (ascending; the last band is closed)")
    parser.add_argument("--note", default="", help="what the runs are (their command lines)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    bands = [float(v) for v in args.bands.split(",")]
    if len(bands) < 2 or any(b >= a for a, b in zip(bands[1:], bands)):
        parser.error("--bands: at least two ascending edges")
    per_run = {str(run): run_counts(run, bands) for path in args.runs for run in runs_of(path)}
    total: dict[str, Any] = {}
    for counts in per_run.values():
        for method, table in counts.items():
            into = total.setdefault(method, {label: [{"n": 0, "found": 0} for _ in rows] for label, rows in table.items()})
            for label, rows in table.items():
                for acc, row in zip(into[label], rows):
                    acc["n"] += row["n"]
                    acc["found"] += row["found"]
    labels = [f"[{a:g}, {b:g}{']' if i == len(bands) - 2 else ')'} dB" for i, (a, b) in enumerate(zip(bands, bands[1:]))]
    recall = {method: {label: {band: (row["found"] / row["n"] if row["n"] else None) for band, row in zip(labels, rows)}
                       for label, rows in table.items()} for method, table in total.items()}  # fmt: skip
    out = {"command": "python benchmarks/frame_by_ebr.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "note": args.note, "bands": labels, "recall": recall, "total": total, "per_run": per_run}  # fmt: skip
    text = json.dumps(out, indent=1)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
