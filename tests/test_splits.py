"""data/splits.py: grouped stratified splits, ratio parsing, re-ratio subsampling, counts (exact numbers)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from thce.data.manifest import ManifestRow
from thce.data.splits import assign_splits, largest_remainder, parse_ratio, rebalance, split_counts
from thce.errors import ConfigError


def clips(label: str, n: int, *, per_group: int = 1, split: str = "", prefix: str | None = None) -> list[ManifestRow]:
    prefix = prefix if prefix is not None else (label or "bg")
    return [
        ManifestRow(path=Path(f"/data/{prefix}_{i}.wav"), label=label, split=split, group=f"{prefix}_g{i // per_group}")
        for i in range(n)
    ]


def test_largest_remainder_is_exact():
    assert largest_remainder(100, (0.7, 0.2, 0.1)) == [70, 20, 10]
    assert largest_remainder(7, (0.7, 0.2, 0.1)) == [5, 1, 1]  # 4.9, 1.4, 0.7 -> 4,1,0 + two largest remainders
    assert sum(largest_remainder(37, (0.7, 0.2, 0.1))) == 37


def test_largest_remainder_ties_go_to_the_earlier_split_whatever_the_rounding():
    # 8.4 / 2.4 / 1.2: train and val tie at 0.4. In binary floating point the two remainders differ in their last
    # bits, and by Python version (3.12's sum() is compensated, so fractions summing to 0.999... then sum to 1.0):
    # a split of the same manifest must not depend on either.
    assert largest_remainder(12, (0.7, 0.2, 0.1)) == [9, 2, 1]
    assert largest_remainder(108, (0.7, 0.2, 0.1)) == [76, 21, 11]
    assert largest_remainder(108, (0.7, 0.2, 0.1 + 1e-12)) == [76, 21, 11]


def test_single_clip_groups_split_70_20_10():
    out = assign_splits(clips("dog", 100), seed=0)
    assert split_counts(out) == {"train": {"dog": 70}, "val": {"dog": 20}, "test": {"dog": 10}}
    assert [r.path for r in out] == [r.path for r in clips("dog", 100)]


def test_groups_never_straddle_splits():
    rows = clips("", 90, per_group=3) + clips("gun", 40, per_group=4)
    out = assign_splits(rows, seed=3)
    split_of_group = defaultdict(set)
    for row in out:
        split_of_group[row.group].add(row.split)
    assert all(len(s) == 1 for s in split_of_group.values())
    counts = split_counts(out)
    # 30 groups of 3 background clips -> 21/6/3 groups; 10 groups of 4 gun clips -> 28/8/4 clips
    assert counts["train"] == {"background": 63, "gun": 28}
    assert counts["val"] == {"background": 18, "gun": 8}
    assert counts["test"] == {"background": 9, "gun": 4}


def test_uneven_groups_land_close_to_target():
    rows = [
        ManifestRow(path=Path(f"/d/{g}_{k}.wav"), label="baby", group=f"g{g}")
        for g, size in enumerate([5, 1, 3, 2, 4, 1, 1, 6, 2, 3, 1, 1])
        for k in range(size)
    ]
    counts = split_counts(assign_splits(rows, seed=11))
    assert sum(sum(c.values()) for c in counts.values()) == 30
    assert abs(counts["train"]["baby"] - 21) <= 1 and abs(counts["val"]["baby"] - 6) <= 1
    assert counts["test"]["baby"] == 3


def test_stratified_per_label():
    rows = clips("dog", 60) + clips("baby", 10) + clips("gun", 20) + clips("", 160)
    counts = split_counts(assign_splits(rows, seed=5))
    assert counts == {
        "train": {"background": 112, "baby": 7, "dog": 42, "gun": 14},
        "val": {"background": 32, "baby": 2, "dog": 12, "gun": 4},
        "test": {"background": 16, "baby": 1, "dog": 6, "gun": 2},
    }


def test_deterministic_per_seed_and_order_independent():
    rows = clips("dog", 50) + clips("", 50)
    a = assign_splits(rows, seed=7)
    assert a == assign_splits(rows, seed=7)
    assert [r.split for r in a] != [r.split for r in assign_splits(rows, seed=8)]
    shuffled = assign_splits(rows[::-1], seed=7)
    assert {r.path: r.split for r in shuffled} == {r.path: r.split for r in a}


def test_existing_splits_are_kept_and_groups_follow_them():
    given = clips("dog", 10, split="test", prefix="fixed")
    # an unassigned row of a group that already has a split joins it
    extra = ManifestRow(path=Path("/data/fixed_extra.wav"), label="dog", group="fixed_g0")
    out = assign_splits(given + [extra] + clips("dog", 10), seed=0)
    assert all(r.split == "test" for r in out[:11])
    assert split_counts(out[11:]) == {"train": {"dog": 7}, "val": {"dog": 2}, "test": {"dog": 1}}


def test_bad_fractions():
    with pytest.raises(ConfigError, match="summing to 1"):
        assign_splits(clips("dog", 3), fractions=(0.5, 0.2, 0.1), seed=0)
    with pytest.raises(ConfigError, match="3 values"):
        assign_splits(clips("dog", 3), fractions=(0.8, 0.2), seed=0)


def test_parse_ratio():
    assert parse_ratio("2:2:1:26") == (2, 2, 1, 26)
    assert parse_ratio(" 6 : 1:2:16 ") == (6, 1, 2, 16)
    for bad, message in [
        ("2,2,1,26", "colon-separated"),
        ("2:x:1", "'x' is not a non-negative integer"),
        ("2:-1:1", "'-1' is not a non-negative integer"),
        ("2::1", "'' is not"),
        ("0:0", "at least one part must be positive"),
        ("", "colon-separated"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_ratio(bad)


def paper_like() -> list[ManifestRow]:
    """6:1:2:16 in every split (dog, baby, gun, background)."""
    rows = []
    for split, scale in (("train", 10), ("val", 4), ("test", 2)):
        for label, r in (("dog", 6), ("baby", 1), ("gun", 2), ("", 16)):
            rows += clips(label, r * scale, split=split, prefix=f"{label or 'bg'}_{split}")
    return rows


def test_rebalance_to_2_2_1_26():
    rows = paper_like()
    before = split_counts(rows)
    # train: dog 60, baby 10, gun 20, bg 160 -> limiting scale min(30, 5, 20, 160/26) = 5 -> 10, 10, 5, 130
    out = rebalance(rows, labels=["dog", "baby", "gun", "background"], ratio=parse_ratio("2:2:1:26"), seed=0)
    counts = split_counts(out)
    assert counts["train"] == {"background": 130, "baby": 10, "dog": 10, "gun": 5}
    # val: dog 24, baby 4, gun 8, bg 64 -> scale min(12, 2, 8, 64/26) = 2 -> 4, 4, 2, 52
    assert counts["val"] == {"background": 52, "baby": 4, "dog": 4, "gun": 2}
    assert counts["test"] == before["test"]
    assert [r for r in out if r.split == "test"] == [r for r in rows if r.split == "test"]
    assert set(out) <= set(rows)
    # deterministic per seed; a different seed keeps other clips
    assert rebalance(rows, labels=["dog", "baby", "gun", ""], ratio=(2, 2, 1, 26), seed=0) == out
    other = rebalance(rows, labels=["dog", "baby", "gun", ""], ratio=(2, 2, 1, 26), seed=1)
    assert split_counts(other) == counts and other != out


def test_rebalance_rounds_when_not_divisible():
    rows = clips("dog", 7, split="train") + clips("", 30, split="train")
    # ratio 1:3 -> scale min(7, 10) = 7 -> 7 dog, 21 background
    counts = split_counts(rebalance(rows, labels=["dog", ""], ratio=(1, 3), seed=0))
    assert counts == {"train": {"background": 21, "dog": 7}}
    # ratio 2:5 -> scale min(3.5, 6) = 3.5 -> 7 dog, round(17.5) = 18 background
    counts = split_counts(rebalance(rows, labels=["dog", ""], ratio=(2, 5), seed=0))
    assert counts == {"train": {"background": 18, "dog": 7}}


def test_rebalance_errors():
    rows = paper_like()
    with pytest.raises(ConfigError, match="not in the ratio's labels"):
        rebalance(rows, labels=["dog", "baby", "gun"], ratio=(2, 2, 1), seed=0)
    with pytest.raises(ConfigError, match="4 labels .* 3 ratio parts"):
        rebalance(rows, labels=["dog", "baby", "gun", ""], ratio=(2, 2, 1), seed=0)
    with pytest.raises(ConfigError, match="no clips of \\['cat'\\]"):
        rebalance(rows, labels=["dog", "baby", "gun", "", "cat"], ratio=(2, 2, 1, 26, 1), seed=0)
    with pytest.raises(ConfigError, match="listed twice"):
        rebalance(rows, labels=["", "background"], ratio=(1, 1), seed=0)


def test_split_counts_unassigned():
    assert split_counts(clips("dog", 2) + clips("", 1, split="val")) == {
        "val": {"background": 1},
        "unassigned": {"dog": 2},
    }


def test_rebalance_shrinking_only_dog_and_gun_as_the_paper_did():
    # Issue 13: the paper "downsampled the dog barking and gun shot classes" to reach 2:2:1:26; baby and
    # background keep every clip. train: dog 60, baby 10, gun 20, bg 160 -> scale 5 -> dog 10, gun 5, rest kept
    rows = paper_like()
    out = rebalance(rows, labels=["dog", "baby", "gun", ""], ratio=(2, 2, 1, 26), seed=0, shrink=["dog", "gun"])
    counts = split_counts(out)
    assert counts["train"] == {"background": 160, "baby": 10, "dog": 10, "gun": 5}
    assert counts["val"] == {"background": 64, "baby": 4, "dog": 4, "gun": 2}
    assert counts["test"] == split_counts(rows)["test"]
    with pytest.raises(ConfigError, match="to shrink"):
        rebalance(rows, labels=["dog", "baby", "gun", ""], ratio=(2, 2, 1, 26), seed=0, shrink=["cat"])
