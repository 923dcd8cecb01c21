"""Tests of thce.metrics: hand-computed EERs, agreement with scikit-learn, one-vs-all semantics, input errors."""

from __future__ import annotations

import numpy as np
import pytest

from thce.metrics import (
    det_curve,
    det_points,
    eer_threshold,
    equal_error_rate,
    per_class_det_points,
    per_class_eer,
)


# ---------------------------------------------------------------------------------------------------- EER by hand
def test_eer_perfect_separation_is_zero() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.2])
    labels = np.array([True, True, True, False, False])
    assert equal_error_rate(scores=scores, is_positive=labels) == 0.0
    # the threshold detects every positive and no negative
    threshold = eer_threshold(scores=scores, is_positive=labels)
    assert 0.3 < threshold <= 0.7


def test_eer_fully_inverted_is_one() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    labels = np.array([1, 1, 1, 0, 0])
    assert equal_error_rate(scores=scores, is_positive=labels) == 1.0


def test_eer_interpolated_on_a_tie_segment() -> None:
    # positives 0.9, 0.6, 0.6; negatives 0.6, 0.2, 0.1, 0.0  (P = 3, N = 4)
    # operating points by increasing threshold: t=0.6 -> FAR 1/4, MR 0;  t=0.9 -> FAR 0, MR 2/3
    # d = FAR - MR: 1/4 then -2/3, so t = (1/4) / (1/4 + 2/3) = 3/11 and EER = 1/4 * (1 - 3/11) = 2/11 = 2/3 * 3/11
    scores = np.array([0.9, 0.6, 0.6, 0.6, 0.2, 0.1, 0.0])
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    assert equal_error_rate(scores=scores, is_positive=labels) == pytest.approx(2 / 11)
    assert eer_threshold(scores=scores, is_positive=labels) == pytest.approx(0.6 + 3 / 11 * 0.3)


def test_eer_symmetric_tie_is_a_quarter() -> None:
    # points (FAR 1/2, MR 0) at 0.5 and (FAR 0, MR 1/2) at 0.9: the segment meets the diagonal at 1/4
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    labels = np.array([1, 1, 0, 0])
    assert equal_error_rate(scores=scores, is_positive=labels) == pytest.approx(0.25)
    assert eer_threshold(scores=scores, is_positive=labels) == pytest.approx(0.7)


def test_eer_exactly_on_an_operating_point() -> None:
    # t=0.4: FAR 1/2, MR 0; t=0.6: FAR 1/2, MR 1/2 (on the diagonal); t=0.9: FAR 0, MR 1/2
    scores = np.array([0.9, 0.4, 0.6, 0.1])
    labels = np.array([1, 1, 0, 0])
    assert equal_error_rate(scores=scores, is_positive=labels) == 0.5
    assert eer_threshold(scores=scores, is_positive=labels) == 0.6


def test_eer_threshold_finite_when_top_score_is_negative() -> None:
    # one positive tied with one negative at the top: crossing between t=1.0 and the +inf point
    scores = np.array([1.0, 1.0])
    labels = np.array([1, 0])
    assert equal_error_rate(scores=scores, is_positive=labels) == pytest.approx(0.5)
    assert eer_threshold(scores=scores, is_positive=labels) == 1.0


def test_eer_is_symmetric_under_label_and_score_flip() -> None:
    rng = np.random.default_rng(3)
    scores = rng.normal(size=200)
    labels = rng.random(200) < 0.3
    scores = scores + labels
    eer = equal_error_rate(scores=scores, is_positive=labels)
    flipped = equal_error_rate(scores=-scores, is_positive=~labels)
    assert eer == pytest.approx(flipped)
    assert 0.0 < eer < 0.5


# ---------------------------------------------------------------------------------------------- det_curve vs sklearn
@pytest.mark.parametrize("seed", range(12))
def test_det_curve_matches_sklearn_with_ties(seed: int) -> None:
    sklearn = pytest.importorskip("sklearn")
    from sklearn.metrics import det_curve as sk_det_curve

    major, minor = (int(x) for x in sklearn.__version__.split(".")[:2])
    if (major, minor) < (1, 7):
        pytest.skip("scikit-learn >= 1.7 adds the +inf threshold that thce.metrics.det_curve follows")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    labels = rng.random(n) < rng.uniform(0.1, 0.9)
    labels[0], labels[1] = True, False  # both classes present
    # coarse scores -> many ties, some across classes; sometimes the top score belongs to a negative
    scores = rng.integers(0, 8, size=n).astype(float) / 7 + 0.5 * labels * (seed % 2)
    ours = det_curve(scores=scores, is_positive=labels)
    theirs = sk_det_curve(labels.astype(int), scores)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b)


def test_det_curve_matches_sklearn_doc_example_and_orders() -> None:
    far, mr, thr = det_curve(scores=np.array([0.1, 0.4, 0.35, 0.8]), is_positive=np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(far, [0.5, 0.5, 0.0])
    np.testing.assert_allclose(mr, [0.0, 0.5, 0.5])
    np.testing.assert_allclose(thr, [0.35, 0.4, 0.8])
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.2
    far, mr, thr = det_curve(scores=rng.normal(size=300) + labels, is_positive=labels)
    assert np.all(np.diff(thr) > 0)
    assert np.all(np.diff(far) <= 0) and np.all(np.diff(mr) >= 0)
    assert mr[0] == 0.0 and far[-1] == 0.0


# ------------------------------------------------------------------------------------------------- per-class EER
def test_per_class_eer_is_one_vs_all() -> None:
    classes = ["dog", "baby"]
    # clips: dog, dog, baby, background, background
    class_index = np.array([0, 0, 1, 2, 2])
    scores = np.array(
        [
            [0.9, 0.1],
            [0.6, 0.2],
            [0.7, 0.8],  # the baby clip outscores one dog clip in the dog column: a dog false alarm
            [0.1, 0.9],  # a background clip outscores the baby clip in the baby column
            [0.2, 0.3],
        ]
    )
    result = per_class_eer(scores=scores, class_index=class_index, classes=classes)
    # dog column: positives {0.9, 0.6}, negatives {0.7, 0.1, 0.2} (baby AND background are negatives)
    expected_dog = equal_error_rate(scores=scores[:, 0], is_positive=np.array([1, 1, 0, 0, 0]))
    # baby column: positive {0.8}, negatives {0.1, 0.2, 0.9, 0.3}
    expected_baby = equal_error_rate(scores=scores[:, 1], is_positive=np.array([0, 0, 1, 0, 0]))
    assert set(result) == {"dog", "baby", "overall"}
    assert result["dog"] == pytest.approx(expected_dog)
    assert result["baby"] == pytest.approx(expected_baby)
    # by hand: dog points t=0.6 (FAR 1/3, MR 0), t=0.7 (FAR 1/3, MR 1/2) -> crosses at 1/3 on the vertical step
    assert result["dog"] == pytest.approx(1 / 3)
    # baby: t=0.8 (FAR 1/4, MR 0), t=0.9 (FAR 1/4, MR 1) -> 1/4
    assert result["baby"] == pytest.approx(1 / 4)
    assert result["overall"] == pytest.approx((1 / 3 + 1 / 4) / 2)  # unweighted, not pooled by clip count


def test_per_class_eer_names_class_without_positives() -> None:
    scores = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"class 'gun'.*0 positive"):
        per_class_eer(scores=scores, class_index=np.array([0, 2, 2]), classes=["dog", "gun"])


def test_per_class_eer_names_class_without_negatives() -> None:
    scores = np.zeros((2, 1))
    with pytest.raises(ValueError, match=r"class 'dog'.*0 negative"):
        per_class_eer(scores=scores, class_index=np.array([0, 0]), classes=["dog"])


def test_per_class_eer_shape_and_index_errors() -> None:
    with pytest.raises(ValueError, match=r"expected 3 columns.*got shape \(4, 2\)"):
        per_class_eer(scores=np.zeros((4, 2)), class_index=np.zeros(4, int), classes=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"class_index: expected shape \(4,\).*got \(3,\)"):
        per_class_eer(scores=np.zeros((4, 2)), class_index=np.zeros(3, int), classes=["a", "b"])
    with pytest.raises(ValueError, match=r"class_index: expected integers in \[0, 2\].*got values in \[0, 5\]"):
        per_class_eer(scores=np.zeros((2, 2)), class_index=np.array([0, 5]), classes=["a", "b"])
    with pytest.raises(ValueError, match=r"scores: expected a 2-D array"):
        per_class_eer(scores=np.zeros(4), class_index=np.zeros(4, int), classes=["a"])


def test_per_class_det_points_keys() -> None:
    rng = np.random.default_rng(1)
    class_index = np.r_[np.zeros(10, int), np.ones(10, int), np.full(30, 2)]
    scores = rng.random((50, 2))
    det = per_class_det_points(scores=scores, class_index=class_index, classes=["dog", "gun"], max_points=20)
    assert set(det) == {"dog", "gun"}
    assert all(len(d["far"]) == len(d["mr"]) <= 20 for d in det.values())


# ------------------------------------------------------------------------------------------------- input errors
def test_error_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"is_positive: expected the same shape as scores \(3,\), got shape \(2,\)"):
        equal_error_rate(scores=np.array([0.1, 0.2, 0.3]), is_positive=np.array([1, 0]))


def test_error_scores_not_1d() -> None:
    with pytest.raises(ValueError, match=r"scores: expected a 1-D array of shape \(N,\), got shape \(2, 2\)"):
        det_curve(scores=np.zeros((2, 2)), is_positive=np.zeros((2, 2)))


def test_error_non_finite_scores() -> None:
    with pytest.raises(ValueError, match=r"expected finite values, got 1 non-finite.*index 1"):
        equal_error_rate(scores=np.array([0.1, np.nan, 0.3]), is_positive=np.array([1, 0, 1]))


def test_error_labels_not_boolean() -> None:
    with pytest.raises(ValueError, match=r"expected booleans or 0/1 values, got values \{0, 1, 2\}"):
        equal_error_rate(scores=np.array([0.1, 0.2, 0.3]), is_positive=np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"expected booleans or 0/1 values, got dtype <U"):
        equal_error_rate(scores=np.array([0.1, 0.2]), is_positive=np.array(["yes", "no"]))


def test_error_single_class() -> None:
    with pytest.raises(ValueError, match=r"expected both positive and negative clips, got 3 positive and 0 negative"):
        equal_error_rate(scores=np.array([0.1, 0.2, 0.3]), is_positive=np.array([True, True, True]))
    with pytest.raises(ValueError, match=r"got an empty array"):
        equal_error_rate(scores=np.array([]), is_positive=np.array([], dtype=bool))


def test_float_zero_one_labels_accepted() -> None:
    assert equal_error_rate(scores=np.array([0.9, 0.1]), is_positive=np.array([1.0, 0.0])) == 0.0


# --------------------------------------------------------------------------------------------------- det_points
def test_det_points_short_curve_is_kept_whole() -> None:
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    labels = np.array([1, 1, 0, 0])
    far, mr, _ = det_curve(scores=scores, is_positive=labels)
    points = det_points(scores=scores, is_positive=labels)
    assert points == {"far": far.tolist(), "mr": mr.tolist()}


@pytest.mark.parametrize("max_points", [4, 10, 50])
def test_det_points_thinning_keeps_endpoints_and_eer(max_points: int) -> None:
    rng = np.random.default_rng(7)
    labels = rng.random(3000) < 0.2
    scores = rng.normal(size=3000) + 1.5 * labels
    far, mr, _ = det_curve(scores=scores, is_positive=labels)
    assert far.size > max_points
    points = det_points(scores=scores, is_positive=labels, max_points=max_points)
    assert len(points["far"]) == len(points["mr"]) <= max_points
    assert points["far"][0] == round(float(far[0]), 6) and points["mr"][0] == round(float(mr[0]), 6)
    assert points["far"][-1] == round(float(far[-1]), 6) and points["mr"][-1] == round(float(mr[-1]), 6)
    # the curve stays monotone and the EER can still be read off the kept points
    assert all(a >= b for a, b in zip(points["far"], points["far"][1:]))
    assert all(a <= b for a, b in zip(points["mr"], points["mr"][1:]))
    # the two points around the crossing are kept, so the same interpolation gives the same EER
    far_kept, mr_kept = np.array(points["far"]), np.array(points["mr"])
    diff = far_kept - mr_kept
    i = int(np.argmax(diff <= 0))
    if diff[i] == 0 or i == 0:
        eer_kept = far_kept[i]
    else:
        t = diff[i - 1] / (diff[i - 1] - diff[i])
        eer_kept = far_kept[i - 1] + t * (far_kept[i] - far_kept[i - 1])
    assert eer_kept == pytest.approx(equal_error_rate(scores=scores, is_positive=labels), abs=1e-5)
    # all values are plain floats rounded to 6 digits (JSON-friendly)
    assert all(isinstance(v, float) and v == round(v, 6) for v in points["far"] + points["mr"])


def test_det_points_rejects_bad_max_points() -> None:
    with pytest.raises(ValueError, match=r"max_points: expected an integer >= 4, got 2"):
        det_points(scores=np.array([0.9, 0.1]), is_positive=np.array([1, 0]), max_points=2)
