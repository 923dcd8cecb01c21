"""``thce sweep``: run variants of a config on identical features and splits; one table, best chosen on validation."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from thce.cli.progress import ProgressBars
from thce.errors import ConfigError

VARY_HELP = (
    "KEY=V1,V2,... values to try, each read as TOML like --set; commas inside [..], {..} or quotes belong to the "
    "value: model.cnn_channels=[8,16],[16,32] or data.ratio='\"2:2:1:26\",\"6:1:2:16\"' (repeatable: cartesian product)"
)
VARIANT_HELP = (
    "one more variant that sets several keys together, each value read as TOML like --set: "
    "'baseline.selection=\"val_auc\"; train.balanced_sampling=true' (repeatable; added to the --vary product)"
)


def run(args: argparse.Namespace) -> int:
    from thce.config import load_config
    from thce.io import check_output_path
    from thce.sweep import run_sweep
    from thce.variants import parse_value, parse_variant, parse_vary, product_variants

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("thce sweep runs its variants one after another in one process; do not use torchrun")
    check_output_path(args.out, directory=True)  # an unwritable --out: one line naming it, before any work
    if not args.vary and not args.variant:
        raise ConfigError("give the variants to run: --vary KEY=V1,V2 and/or --variant 'KEY=V; KEY2=V2'")
    axes = [parse_vary(text) for text in args.vary]
    explicit = [parse_variant(text) for text in args.variant]
    set_keys = {text.split("=", 1)[0].strip() for text in args.overrides}
    varied = [("--vary", key) for key, _ in axes] + [("--variant", k) for v in explicit for k, _ in v.assignments]
    for flag, key in varied:
        if key in set_keys:
            raise ConfigError(f"{flag} {key}: also given with --set; a key is either fixed or varied")
    reference = {}
    for text in args.reference:
        if "=" not in text:
            raise ConfigError(f"--reference {text!r}: expected KEY=VALUE, e.g. embedding.alpha=16")
        key, raw = text.split("=", 1)
        reference[key.strip()] = parse_value(raw)
    if args.draws < 1:
        raise ConfigError(f"--draws: must be >= 1, got {args.draws}")
    config = load_config(args.config, args.overrides)
    variants = product_variants(axes) if axes else []
    for variant in explicit:
        if any(variant.matches(dict(other.assignments)) and len(variant.assignments) == len(other.assignments)
               for other in variants):
            raise ConfigError(f"--variant {variant.name}: listed twice (or also made by --vary)")
        variants.append(variant)
    with ProgressBars(enabled=not args.quiet) as bars:
        run_sweep(
            config, variants, args.seeds, args.out, reference=reference or None,
            reference_runs=args.reference_runs, resume=args.resume, draws=args.draws, progress=bars,
        )  # fmt: skip
    print((args.out / "sweep.md").read_text(encoding="utf-8"))
    print(f"Sweep directory: {args.out} (sweep.json, sweep.md, <variant>/seed_<s>/, cache/)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    sweep = subparsers.add_parser(
        "sweep", help="ablation: variants of a config on identical data; mean ± std and paired bootstrap CI table"
    )
    sweep.add_argument("config", type=Path, help="base experiment config (TOML)")
    sweep.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2", help=VARY_HELP)
    sweep.add_argument("--variant", action="append", default=[], metavar="'KEY=V; KEY2=V2'", help=VARIANT_HELP)
    sweep.add_argument("--out", type=Path, required=True, help="sweep directory")
    sweep.add_argument("--seeds", type=int, default=1, help="seeds seed..seed+N-1 per variant (shared by variants)")
    sweep.add_argument("--reference", action="append", default=[], metavar="KEY=VALUE",
                       help="the variant the bootstrap compares against (repeatable; default: the first variant)")
    sweep.add_argument("--reference-runs", type=Path, metavar="DIR",
                       help="take the reference variant's runs from DIR/seed_<s>/ (e.g. a `thce experiment --seeds` "
                       "folder) instead of running them; read only")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value for every variant (repeatable)")
    sweep.add_argument("--draws", type=int, default=1000, help="bootstrap draws (default 1000)")
    sweep.add_argument("--resume", action="store_true", help="continue interrupted runs; finished runs are kept")
    sweep.set_defaults(func=run)
