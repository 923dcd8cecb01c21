"""Train/val/test splits and re-ratio subsampling.

- :func:`assign_splits`: grouped, label-stratified 70/20/10 split (the paper's partition) of the rows that have none.
- :func:`rebalance`: subsample the train and val splits to a class ratio, e.g. the paper's 2:2:1:26 made from its
  6:1:2:16 data ("we downsampled the dog barking and gun shot classes in training and validation sets").
- :func:`split_counts`: clips per split and label, for reports.

Background is the empty label; :func:`split_counts` and :func:`rebalance` call it ``"background"``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from collections import Counter, defaultdict
from collections.abc import Sequence

from thce.data.manifest import SPLITS, ManifestRow
from thce.errors import ConfigError

log = logging.getLogger(__name__)

BACKGROUND = "background"


def label_name(label: str) -> str:
    """The label as shown in counts and ratios: ``""`` -> ``"background"``."""
    return label if label else BACKGROUND


def largest_remainder(total: int, fractions: Sequence[float]) -> list[int]:
    """Split the integer ``total`` into parts proportional to ``fractions`` that sum exactly to ``total``.

    Each part gets ``floor(total * fraction)``; the leftover units go to the largest remainders (ties: earlier first).

    >>> largest_remainder(10, (0.7, 0.2, 0.1))
    [7, 2, 1]
    >>> largest_remainder(4, (0.7, 0.2, 0.1))
    [3, 1, 0]
    """
    weight = sum(fractions)
    exact = [total * f / weight for f in fractions]
    parts = [math.floor(x + 1e-9) for x in exact]
    leftover = total - sum(parts)
    # remainders equal but for rounding (8.4 and 2.4 of 12 x (0.7, 0.2, 0.1)) tie: the earlier split wins
    remainders = [round(x - part, 9) for x, part in zip(exact, parts)]
    order = sorted(range(len(fractions)), key=lambda i: (-remainders[i], i))
    for i in order[:leftover]:
        parts[i] += 1
    return parts


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != len(SPLITS):
        raise ConfigError(f"split fractions: expected 3 values (train, val, test), got {list(fractions)}")
    if any(not math.isfinite(f) or f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ConfigError(f"split fractions: expected 3 non-negative values summing to 1, got {list(fractions)}")
    return (float(fractions[0]), float(fractions[1]), float(fractions[2]))


def assign_splits(
    rows: Sequence[ManifestRow], *, fractions: Sequence[float] = (0.7, 0.2, 0.1), seed: int
) -> list[ManifestRow]:
    """Fill the empty ``split`` of rows: grouped, stratified by label, deterministic for ``seed``.

    - Rows that already have a split keep it. A row without one whose ``group`` already has a split elsewhere
      joins that split (the group's most common one), so a group never straddles splits because of a partial manifest.
    - The remaining groups (rows with an empty ``group`` are each their own group) are stratified by label: a group's
      stratum is its most common label (ties: alphabetically first). Within each stratum the clip count of each split
      is the largest-remainder rounding of ``clips * fractions``; groups, in a seeded shuffle, larger groups first, are
      each put in the split furthest below its target. With one clip per group the counts are exact (100 clips ->
      70/20/10); larger groups are packed as closely as their sizes allow.

    Args:
        rows: manifest rows.
        fractions: (train, val, test) fractions, non-negative, summing to 1.
        seed: random seed; the result depends on the rows' content, not their order.

    Returns:
        New rows (``dataclasses.replace``), in the input order, each with a split.
    """
    fractions = _check_fractions(fractions)
    keys = [row.group or f"\0row{i}" for i, row in enumerate(rows)]
    fixed: dict[str, Counter[str]] = defaultdict(Counter)
    free: dict[str, list[int]] = defaultdict(list)
    for i, (row, key) in enumerate(zip(rows, keys)):
        if row.split:
            fixed[key][row.split] += 1
        else:
            free[key].append(i)

    group_split: dict[str, str] = {}
    strata: dict[str, list[str]] = defaultdict(list)
    for key, members in free.items():
        if key in fixed:
            group_split[key] = min(fixed[key].items(), key=lambda kv: (-kv[1], kv[0]))[0]
            continue
        labels = Counter(rows[i].label for i in members)
        stratum = min(labels.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        strata[stratum].append(key)

    for stratum in sorted(strata):
        groups = sorted(strata[stratum], key=lambda k: (str(min(rows[i].path for i in free[k])), k))
        random.Random(f"{seed}:{stratum}").shuffle(groups)
        groups.sort(key=lambda k: -len(free[k]))  # stable: shuffled order within equal sizes
        n_clips = sum(len(free[k]) for k in groups)
        target = largest_remainder(n_clips, fractions)
        filled = [0, 0, 0]
        for key in groups:
            size = len(free[key])
            # Furthest below target after adding; ties go to the split with the larger target, then train, val, test.
            best = max(range(3), key=lambda s: (target[s] - filled[s] - size, target[s], -s))
            filled[best] += size
            group_split[key] = SPLITS[best]
        log.debug("splits: stratum %r, %d groups, %d clips -> %s", label_name(stratum), len(groups), n_clips, filled)

    return [
        row if row.split else dataclasses.replace(row, split=group_split[key]) for row, key in zip(rows, keys)
    ]


def parse_ratio(text: str) -> tuple[int, ...]:
    """Parse a class ratio such as ``"2:2:1:26"`` into ``(2, 2, 1, 26)``.

    Raises:
        ConfigError: not colon-separated non-negative integers with at least one positive.

    >>> parse_ratio("6:1:2:16")
    (6, 1, 2, 16)
    """
    parts = str(text).strip().split(":")
    if len(parts) < 2:
        raise ConfigError(f"ratio {text!r}: expected colon-separated integers such as '2:2:1:26'")
    values = []
    for part in parts:
        part = part.strip()
        if not part.isdigit():
            raise ConfigError(f"ratio {text!r}: {part!r} is not a non-negative integer (expected e.g. '2:2:1:26')")
        values.append(int(part))
    if not any(values):
        raise ConfigError(f"ratio {text!r}: at least one part must be positive")
    return tuple(values)


def rebalance(
    rows: Sequence[ManifestRow],
    *,
    labels: Sequence[str],
    ratio: Sequence[int],
    seed: int,
    splits: Sequence[str] = ("train", "val"),
    shrink: Sequence[str] | None = None,
) -> list[ManifestRow]:
    """Subsample each of ``splits`` (separately) to the class ratio, keeping as many clips as possible.

    For one split with ``available_l`` clips of label ``l``: ``s = min_l available_l / ratio_l`` (the largest scale
    at which every label has enough clips) and label ``l`` keeps ``round(s * ratio_l)`` clips (half up; never more than
    available), chosen at random (seeded per split and label). The counts are exactly proportional to the ratio when
    ``s * ratio_l`` are integers (e.g. 6:1:2:16 -> 2:2:1:26 when the limiting class count is divisible). Labels with
    ratio 0 are dropped from these splits. Rows of other splits are returned untouched.

    Args:
        rows: manifest rows, splits assigned.
        labels: label names in the order of ``ratio``; ``""`` or ``"background"`` means background.
        ratio: non-negative integers, one per label (see :func:`parse_ratio`).
        seed: random seed.
        splits: splits to subsample.
        shrink: if given, only these labels are subsampled; the others keep all their clips (the paper's 2:2:1:26
            "downsampled the dog barking and gun shot classes": baby and background were left as they were, so
            background then holds at least its ratio's share).

    Returns:
        The kept rows, in input order.

    Raises:
        ConfigError: lengths differ, a label is listed twice, a row of a rebalanced split has a label that is not
            listed, or a label with a positive ratio has no clips in a rebalanced split.
    """
    names = [label_name(label) for label in labels]
    if len(names) != len(ratio):
        raise ConfigError(f"rebalance: {len(names)} labels {names} but {len(ratio)} ratio parts {list(ratio)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"rebalance: labels listed twice in {names}")
    if any(r < 0 for r in ratio) or not any(ratio):
        raise ConfigError(f"rebalance: ratio {list(ratio)} must be non-negative with at least one positive part")
    want = dict(zip(names, (int(r) for r in ratio)))
    may_shrink = set(names) if shrink is None else {label_name(label) for label in shrink}
    if not may_shrink <= set(names):
        raise ConfigError(f"rebalance: labels to shrink {sorted(may_shrink - set(names))} are not among {names}")

    keep = [True] * len(rows)
    for split in splits:
        by_label: dict[str, list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            if row.split == split:
                by_label[label_name(row.label)].append(i)
        if not by_label:
            continue
        unknown = sorted(set(by_label) - set(want))
        if unknown:
            raise ConfigError(f"rebalance: split {split!r} has label(s) {unknown} not in the ratio's labels {names}")
        empty = [name for name in names if want[name] > 0 and not by_label.get(name)]
        if empty:
            raise ConfigError(f"rebalance: split {split!r} has no clips of {empty}, which have a positive ratio")
        scale = min(len(by_label[name]) / want[name] for name in names if want[name] > 0)
        counts = {}
        for name in names:
            members = by_label.get(name, [])
            target = min(len(members), math.floor(scale * want[name] + 0.5 + 1e-9))
            if name not in may_shrink and want[name] > 0:
                target = len(members)
            chosen = set(random.Random(f"{seed}:{split}:{name}").sample(members, target))
            for i in members:
                keep[i] = i in chosen
            counts[name] = target
        log.info("rebalance %s: %s -> %s", split, {n: len(by_label.get(n, [])) for n in names}, counts)
    return [row for row, kept in zip(rows, keep) if kept]


def split_counts(rows: Sequence[ManifestRow]) -> dict[str, dict[str, int]]:
    """Clips per split and label: ``{split: {label: count}}``; background is ``"background"``, a row without a split
    counts under ``"unassigned"``. Splits in train/val/test order, labels sorted.
    """
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        counts[row.split or "unassigned"][label_name(row.label)] += 1
    order = [s for s in SPLITS if s in counts] + sorted(s for s in counts if s not in SPLITS)
    return {split: dict(sorted(counts[split].items())) for split in order}
