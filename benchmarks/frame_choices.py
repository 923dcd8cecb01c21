"""Frame-level runs of one config's variants side by side, validation first: what a setting was chosen on.

    python benchmarks/frame_choices.py LABEL=RUN_DIR [LABEL=RUN_DIR ...] [--reference JSON] [--note TEXT] [--out JSON]

Each RUN_DIR is a finished single-seed frame-level run (``data.strong_labels``) of one variant. Per variant and
method the JSON holds: the validation event F per class and its class average (each class's post-processing chosen
again from the saved scores with today's grids, :func:`frame_post_processing.run_figures`, so that runs made with
older grids compare), the validation frame EER, then the test figures (class-average event F and error rate, frame
EER) for the record, the kept epochs, the minutes each stage took and the config differences from the first
variant. ``--note``: how the runs were made (their command lines). ``--reference``: an earlier report of this
script whose variants the new ones are compared with (runs no longer on disk): its variants' figures are copied
under ``reference``, with its command. Decide on ``val``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _flat(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def variant_figures(run: Path) -> dict[str, Any]:
    """One run's validation and test figures per method."""
    from frame_post_processing import run_figures

    results = json.loads((run / "results.json").read_text())
    events = run_figures(run)
    methods = {}
    for method, entry in results["methods"].items():
        val_f = events[method]["val_f"]
        methods[method] = {
            "val_event_f": val_f,
            "val_event_f_class_average": sum(val_f.values()) / len(val_f),
            "val_frame_eer": entry["val_eer"]["overall"],
            "test_event_f_class_average": events[method]["class_average"]["f_score"],
            "test_error_rate_class_average": events[method]["class_average"]["error_rate"],
            "test_frame_eer": entry["eer"]["overall"],
        }
    minutes = {stage: round(seconds / 60.0, 1) for stage, seconds in results["timing_s"].items()}
    return {"methods": methods, "selected_epochs": results["selected_epochs"], "minutes": minutes,
            "git_commit": results.get("provenance", {}).get("git_commit")}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import tomllib

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    parser.add_argument("--note", default="")
    parser.add_argument("--reference", type=Path, action="append", default=[], metavar="JSON")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    variants: dict[str, Any] = {}
    first: dict[str, Any] | None = None
    for text in args.runs:
        label, _, folder = text.partition("=")
        if not folder:
            parser.error(f"{text!r}: expected LABEL=RUN_DIR")
        run = Path(folder)
        config = _flat(tomllib.loads((run / "config.toml").read_text()))
        first = config if first is None else first
        figures = variant_figures(run)
        figures["config_changes"] = {k: v for k, v in config.items() if first.get(k) != v and "dir" not in k}
        variants[label] = figures
    report = {"command": "python benchmarks/frame_choices.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "note": args.note, "variants": variants}  # fmt: skip
    if args.reference:
        earlier = {str(path): json.loads(path.read_text()) for path in args.reference}
        report["reference"] = {path: {"command": r["command"], "variants": r["variants"]} for path, r in earlier.items()}
    text = json.dumps(report, indent=1)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main()
