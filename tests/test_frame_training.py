"""Algorithm 1 and the baseline over frames (strong labels): the training stages treat every output frame as an
item when ``TrainingData.frame_targets`` is set. Where every clip is one frame, the frame-level run is the
clip-level run, number for number."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from thce.models import ClusterLayer, DetectorHead, EventDetector, LSTMEncoder, l2_normalise
from thce.training.algorithm1 import EmbeddingConfig, DetectorConfig, learn_embedding, train_baseline, train_detector
from thce.training.data import TrainingData, predict_scores
from thce.training.engine import RunContext, StageConfig, TrainConfig
from thce.training.metrics_log import MetricsLog

CLASSES = ("dog", "baby", "gun")


class OneFrame(nn.Module):
    """A clip encoder's embedding as the only frame of the clip: (B, T, F) -> (B, 1, D)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.embedding_dim = encoder.embedding_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x).unsqueeze(1)


class PerFrame(nn.Module):
    """A tiny frame encoder: one linear map per input frame, L2-normalised. (B, T, F) -> (B, T, D)."""

    def __init__(self, n_mels: int, dim: int = 8) -> None:
        super().__init__()
        self.linear = nn.Linear(n_mels, dim)
        self.embedding_dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return l2_normalise(torch.tanh(self.linear(x)))


def clip_data(seed: int = 0) -> TrainingData:
    rng = np.random.default_rng(seed)
    counts = [8, 8, 4, 52]
    class_index = np.repeat(np.arange(4), counts)
    rng.shuffle(class_index)
    means = rng.normal(size=(4, 1, 6)).astype(np.float32)
    features = (means[class_index] + rng.normal(size=(len(class_index), 5, 6))).astype(np.float32)
    order = rng.permutation(len(class_index))
    splits = {"train": np.sort(order[:56]), "val": np.sort(order[56:])}
    return TrainingData(features=features, class_index=class_index, splits=splits, classes=CLASSES)


def as_one_frame(data: TrainingData) -> TrainingData:
    """The same clips with strong labels of one frame per clip (the clip's label over the whole clip)."""
    targets = np.eye(4, dtype=np.uint8)[data.class_index][:, None, :3]
    return TrainingData(data.features, data.class_index, data.splits, data.classes, frame_targets=targets)


def context(seed: int = 0) -> RunContext:
    return RunContext(train=TrainConfig(batch_size=16), seed=seed, log=MetricsLog())


EMBEDDING = EmbeddingConfig(n_iter=2, epochs=2, last_epochs=2, head_only_epochs=1, kmeans_max_iter=20)
DETECTOR = DetectorConfig(max_epochs=2, head_only_max_epochs=2, patience=5)


def train_all(data: TrainingData, wrap) -> tuple[dict, MetricsLog, nn.Module]:
    """Algorithm 1 then the detectors, and the baseline, on ``data`` with the LSTM wrapped by ``wrap``."""
    torch.manual_seed(0)
    ctx = context()
    result = learn_embedding(wrap(LSTMEncoder(n_mels=6, hidden_size=8)), data, EMBEDDING, ctx)
    model = EventDetector(result.encoder, DetectorHead(result.cluster_layer.num_clusters, 3), result.cluster_layer)
    models = train_detector(model, data, DETECTOR, ctx, end_to_end=True)
    torch.manual_seed(1)
    baseline = EventDetector(wrap(LSTMEncoder(n_mels=6, hidden_size=8, normalise=False)), DetectorHead(8, 3))
    models["baseline"] = train_baseline(baseline, data, StageConfig(max_epochs=2, patience=5), ctx)
    return models, ctx.log, result


def test_frame_level_training_equals_clip_level_when_every_clip_is_one_frame():
    clips = clip_data()
    frames = as_one_frame(clips)
    clip_models, clip_log, clip_result = train_all(clips, lambda e: e)
    frame_models, frame_log, frame_result = train_all(frames, OneFrame)
    # the same clustering, the same losses epoch by epoch (THCE and Eq. 2), the same scores
    assert torch.equal(clip_result.clustering.assignment, frame_result.clustering.assignment)
    keys = ("method", "stage", "iteration", "epoch", "train_loss", "val_loss", "eq3_train", "eq3_val")
    assert [[r.get(k) for k in keys] for r in clip_log.rows] == [[r.get(k) for k in keys] for r in frame_log.rows]
    assert len(clip_log.rows) > 10
    ctx = context()
    for name in ("proposed1", "proposed2", "baseline"):
        clip_scores = predict_scores(clip_models[name], clips, clips.splits["val"], ctx)
        frame_scores = predict_scores(frame_models[name], frames, frames.splits["val"], ctx)
        assert frame_scores.shape == (len(clips.splits["val"]), 1, 3)
        np.testing.assert_array_equal(clip_scores, frame_scores[:, 0])


def strong_data(seed: int = 0) -> TrainingData:
    """Clips of 12 frames; an event of the clip's class over frames 4-7 (a louder band), background elsewhere."""
    rng = np.random.default_rng(seed)
    class_index = np.repeat(np.arange(4), [10, 10, 6, 30])
    rng.shuffle(class_index)
    n, frames, mels = len(class_index), 12, 6
    features = rng.normal(size=(n, frames, mels)).astype(np.float32)
    targets = np.zeros((n, frames, 3), dtype=np.uint8)
    for i, c in enumerate(class_index):
        if c < 3:
            features[i, 4:8, c] += 3.0
            targets[i, 4:8, c] = 1
    order = rng.permutation(n)
    splits = {"train": np.sort(order[:40]), "val": np.sort(order[40:])}
    return TrainingData(features, class_index, splits, CLASSES, frame_targets=targets)


def test_frame_level_items_counts_and_targets():
    data = strong_data()
    train = data.splits["train"]
    assert data.frame_level
    assert data.targets(train).shape == (40, 12, 3)
    assert data.item_class(train).shape == (40, 12)
    counts = data.class_counts("train")
    assert counts.sum() == 40 * 12  # every frame counted once
    expected = [4 * int((data.class_index[train] == c).sum()) for c in range(3)]
    assert counts[:3].tolist() == expected


def test_frame_level_algorithm1_clusters_frames_and_learns_where_events_are():
    data = strong_data()
    torch.manual_seed(0)
    ctx = context()
    config = EmbeddingConfig(n_iter=1, epochs=3, last_epochs=3, head_only_epochs=1, kmeans_max_iter=20)
    result = learn_embedding(PerFrame(6), data, config, ctx)
    counts = data.class_counts("train")
    # the K_c rule on frame counts: floor(I_c / min I_c') clusters per class, over frames
    assert result.clustering.clusters_per_class.tolist() == (counts // counts.min()).tolist()
    assert result.clustering.assignment.shape == (40 * 12,)
    rows = [r for r in ctx.log.rows if r["stage"] == "embedding"]
    assert rows and all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in rows)
    model = EventDetector(result.encoder, DetectorHead(result.cluster_layer.num_clusters, 3), result.cluster_layer)
    models = train_detector(model, data, DetectorConfig(max_epochs=20, head_only_max_epochs=40, patience=40), ctx, end_to_end=True)
    scores = predict_scores(models["proposed2"], data, data.splits["val"], ctx)
    truth = data.targets(data.splits["val"]).numpy()
    assert scores.shape == truth.shape
    # event frames score higher than background frames of the same class output (a learnt, frame-level detector)
    for c in range(3):
        positive, negative = scores[..., c][truth[..., c] == 1], scores[..., c][truth[..., c] == 0]
        assert positive.mean() > negative.mean() + 0.2, c


def test_frame_level_weighted_bce_counts_frames():
    from thce.errors import ConfigError
    from thce.training.algorithm1 import _bce_weights

    data = strong_data()
    weights = _bce_weights(data, context())
    counts = data.class_counts("train")
    total = counts.sum()
    expected = (total - counts[:3]).mean() / counts[:3]
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-6)
    tempered = RunContext(train=TrainConfig(batch_size=16, bce_weight_power=0.5), seed=0, log=MetricsLog())
    np.testing.assert_allclose(_bce_weights(data, tempered).numpy(), np.sqrt(expected), rtol=1e-6)
    assert _bce_weights(data, RunContext(train=TrainConfig(bce_weight_power=0.0), seed=0, log=MetricsLog())) is None
    with pytest.raises(ConfigError, match="train.bce_weight_power: must be in"):
        TrainConfig(bce_weight_power=2.0)


# ------------------------------------------------------------------------------ frame scores -> events


def test_clip_events_and_post_processing_chosen_on_validation(caplog):
    from thce.detection.frame_events import (
        PostProcessing, choose_post_processing, clip_counts, clip_events, detect_clips, evaluate_clips, reference_list,
    )

    hop = 0.05
    rng = np.random.default_rng(0)
    names = [f"clip_{i}.wav" for i in range(6)]
    truth = {name: [(1.0 + i * 0.5, 1.6 + i * 0.5, "dog")] for i, name in enumerate(names[:4])}  # two clips without
    scores = rng.uniform(0.0, 0.35, size=(6, 100, 1)).astype(np.float32)
    for i in range(4):
        on = int(round((1.0 + i * 0.5) / hop))
        scores[i, on : on + 12, 0] = 0.7
        scores[i, on + 5, 0] = 0.2  # a one-frame dip: without a median filter the event splits in two
    scores[5, 50, 0] = 0.9  # a one-frame spike: an insertion without a median filter
    reference = reference_list(names, truth)
    raw = PostProcessing({"dog": 0.5}, {"dog": 0.0})
    events = clip_events("clip_0.wav", scores[0], hop, ["dog"], raw)
    assert [(round(e.onset_s, 2), round(e.offset_s, 2)) for e in events] == [(1.0, 1.25), (1.3, 1.6)]
    assert evaluate_clips(names, scores, reference, hop, ["dog"], raw)["class_wise"]["dog"]["insertions"] == 5
    with caplog.at_level("WARNING"):
        post, f = choose_post_processing(names, scores, reference, hop, ["dog"])
        detected = detect_clips(names, scores, hop, ["dog"], post)
        counts = clip_counts(names, detected, reference, ["dog", "gun"])
    assert not caplog.records  # clip by clip, class by class: no note per call on labels absent from a side
    assert counts[:, 0, 1].tolist() == [1, 1, 1, 1, 0, 0] and counts[..., 1, :].sum() == 0
    assert f["dog"] == 1.0 and 0.35 <= post.thresholds["dog"] <= 0.7
    # the dip is bridged (a median filter or a merged gap) and the spike removed (a filter or a minimum length)
    assert post.median_filter_s["dog"] >= 0.15 or (post.min_gap_s["dog"] > 0 and post.min_event_s["dog"] > 0)
    result = evaluate_clips(names, scores, reference, hop, ["dog"], post)
    assert result["overall"]["f_score"] == 1.0 and result["overall"]["error_rate"] == 0.0


def test_post_processing_thresholds_reach_past_saturated_scores():
    """Class-weighted BCE pushes scores towards 1: background frames at 0.993-0.996, events at 0.9997. A grid that
    stops at 0.99 can only insert events everywhere; thresholds stepping on towards 0.9999 separate them."""
    from thce.detection.frame_events import choose_post_processing, evaluate_clips, reference_list

    hop, rng = 0.05, np.random.default_rng(1)
    names = [f"clip_{i}.wav" for i in range(4)]
    truth = {name: [(1.0 + i, 1.8 + i, "gun")] for i, name in enumerate(names[:2])}
    scores = rng.uniform(0.993, 0.996, size=(4, 100, 1)).astype(np.float32)
    scores[2:, ::10, 0] = 0.9975  # short loud spots in the clips without events
    for i in range(2):
        on = int(round((1.0 + i) / hop))
        scores[i, on : on + 16, 0] = 0.9997
    reference = reference_list(names, truth)
    post, f = choose_post_processing(names, scores, reference, hop, ["gun"])
    assert f["gun"] == 1.0 and 0.99 < post.thresholds["gun"] <= 0.9997
    assert evaluate_clips(names, scores, reference, hop, ["gun"], post)["overall"]["insertions"] == 0


# ------------------------------------------------------------------------ frame-level detection on a recording


class LoudFrames:
    """A stand-in frame-level model: scores each 50 ms output frame of a window by its loudness (1 where a tone
    burst plays, 0 in the quiet noise), as a frame-level run's scorer does (``frame_hop_s``; ``(B, T', L)``)."""

    classes = ("dog",)
    sample_rate_hz = 8000
    window_samples = 8000 * 4  # 4 s windows
    support_s = (0.0, 4.0)
    frame_hop_s = 0.05

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        hop = int(self.frame_hop_s * self.sample_rate_hz)
        frames = windows[:, : windows.shape[1] // hop * hop].reshape(len(windows), -1, hop)
        return (np.sqrt((frames**2).mean(axis=2)) > 0.1).astype(np.float32)[..., None]


def test_frame_level_detection_finds_known_onsets_within_the_collar(tmp_path):
    import soundfile as sf

    from thce.detection.detect import DetectConfig, detect_files
    from thce.detection.frame_events import PostProcessing

    rate, rng = 8000, np.random.default_rng(0)
    audio = 0.01 * rng.standard_normal(rate * 21).astype(np.float32)
    onsets = [1.3, 5.05, 9.72, 14.4, 18.9]
    for onset in onsets:
        start = int(onset * rate)
        t = np.arange(int(0.6 * rate)) / rate
        audio[start : start + len(t)] += 0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    path = tmp_path / "scene.wav"
    sf.write(path, audio, rate)
    scorer = LoudFrames()
    for hop_s in (2.0, 1.0, 4.0):  # any hop of whole frames; windows overlap or not
        result = detect_files([path], scorer, np.array([0.5]), config=DetectConfig(hop_s=hop_s),
                              frame_post=PostProcessing({"dog": 0.5}, {"dog": 0.15}))  # fmt: skip
        found = [e.onset_s for e in result.events]
        assert len(found) == len(onsets), (hop_s, found)
        assert max(abs(a - b) for a, b in zip(found, onsets)) <= 0.05, (hop_s, found)
        assert all(abs(e.offset_s - e.onset_s - 0.6) <= 0.1 for e in result.events)
    # the run's rules apply per class where the user gives none: a 4 s minimum gap merges the first two and the last two (gaps 3.15 and 3.9 s; the others 4.07, 4.08)
    merged = PostProcessing({"dog": 0.5}, {"dog": 0.15}, min_gap_s={"dog": 4.0})
    result = detect_files([path], scorer, np.array([0.5]), config=DetectConfig(hop_s=2.0), frame_post=merged)
    assert len(result.events) == 3 and result.settings["min_gap_s"] == {"dog": 4.0}
    from thce.detection.localise import EventRules

    given = DetectConfig(hop_s=2.0, events=EventRules(min_gap_s=0.5))  # the user's flags replace the run's rules
    assert len(detect_files([path], scorer, np.array([0.5]), config=given, frame_post=merged).events) == 5
    with pytest.raises(Exception, match="whole frames"):
        detect_files([path], scorer, np.array([0.5]), config=DetectConfig(hop_s=0.33))


def test_event_remixing_in_the_detector_stage_is_seeded_and_changes_the_training_clips():
    from thce.augment import AugmentConfig
    from thce.training.algorithm1 import train_end_to_end
    from thce.training.data import RemixedTraining

    data = strong_data()
    ctx = RunContext(train=TrainConfig(batch_size=16), seed=0, log=MetricsLog(), augment=AugmentConfig(remix_events=2))
    remixed = RemixedTraining(data, ctx, "baseline")
    clean_positive = remixed.targets.sum()
    remixed.start_epoch(0)
    first = (remixed.features.copy(), remixed.targets.copy())
    assert remixed.targets.sum() > clean_positive  # events were pasted, their frames labelled
    assert (remixed.targets >= remixed.clean_targets).all()  # the clips' own events keep their labels
    remixed.start_epoch(1)
    assert not np.array_equal(first[1], remixed.targets)  # another epoch, another draw
    remixed.start_epoch(0)
    np.testing.assert_array_equal(first[0], remixed.features)  # the same epoch, the same draw

    def losses(augment: AugmentConfig) -> list[float]:
        torch.manual_seed(1)
        run = RunContext(train=TrainConfig(batch_size=16), seed=0, log=MetricsLog(), augment=augment)
        model = EventDetector(PerFrame(6), DetectorHead(8, 3))
        train_end_to_end(model, data, StageConfig(max_epochs=3, patience=5), run, method="baseline")
        return [r["train_loss"] for r in run.log.rows]

    with_remix = losses(AugmentConfig(remix_events=1))
    assert with_remix == losses(AugmentConfig(remix_events=1))
    assert with_remix != losses(AugmentConfig())


def test_remixing_needs_strong_labels():
    from thce.config import load_config
    from thce.errors import ConfigError

    with pytest.raises(ConfigError, match="remix_events=1: needs strong labels"):
        load_config(None, ["augment.remix_events=1"])
    config = load_config(None, ["augment.remix_events=1", "data.strong_labels=true"])
    assert config.augment.remix_events == 1


# ------------------------------------------------------------------------------------- a frame-level run, whole

FRAME_RUN = """seed = 5
methods = ["baseline", "proposed1", "proposed2", "dcase2017_baseline"]
[data]
strong_labels = true
split_fractions = [0.5, 0.25, 0.25]
[synth]
counts = {dog = 8, baby = 8, gun = 8, background = 8}
duration_s = 2.0
[features]
duration_s = 2.0
n_mels = 16
[frame_model]
cnn_channels = [4, 8]
cnn_kernel = 3
cnn_pools = [[5, 2], [1, 2]]
[train]
batch_size = 8
[embedding]
n_iter = 1
epochs = 1
last_epochs = 1
head_only_epochs = 1
[detector]
max_epochs = 1
head_only_max_epochs = 2
patience = 2
[baseline]
max_epochs = 1
patience = 2
[dcase2017_baseline]
max_epochs = 1
patience = 2
"""


def test_frame_level_run_over_seeds_then_detect(tmp_path, capsys):
    import json

    from thce.checkpoint import load_run
    from thce.cli import main

    config = tmp_path / "frames.toml"
    config.write_text(FRAME_RUN)
    run = tmp_path / "run"
    assert main(["experiment", str(config), "--out", str(run), "--seeds", "2", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "Event-based figures on the test clips over 2 seeds" in printed
    assert "Class-average event F minus the baseline's" in printed
    summary = json.loads((run / "results.json").read_text())
    events = summary["seeds"]["events"]
    assert summary["seeds"]["bootstrap"] == {}  # no EER intervals over frames: the event-F ones are over clips
    assert set(events["figures"]) == {"baseline", "proposed1", "proposed2", "dcase2017_baseline"}
    assert set(events["bootstrap_f_seeds"]) == {"proposed1", "proposed2", "dcase2017_baseline"}
    assert set(events["bootstrap_f_sets_seeds"]) == {"proposed1", "proposed2", "dcase2017_baseline"}
    assert "each class on its own clips" in printed and "F class average, own clips (%)" in printed
    for figures in events["figures"].values():  # each class on its own clips: no insertions from other classes' clips
        assert figures["f_class_average_sets"]["mean"] >= figures["f_class_average"]["mean"] - 1e-12
    seed_run = run / "seed_5"
    results = json.loads((seed_run / "results.json").read_text())
    entry = results["methods"]["proposed2"]
    assert entry["frame_hop_s"] == 0.05 and set(entry["post_processing"]["thresholds"]) == {"dog", "baby", "gun"}
    test_clips = json.loads((seed_run / "clips.json").read_text())["test"]
    with np.load(seed_run / "scores.npz") as scores, np.load(seed_run / "event_counts.npz") as counts:
        assert scores["proposed2"].shape == (len(test_clips) * 40, 3)  # 2 s at 50 ms: 40 frames per clip
        assert counts["proposed2"].shape == (len(test_clips), 3, 3)
        # every test clip's reference events are counted once, whatever the method found
        assert counts["proposed2"][..., 1].sum() == entry["events"]["overall"]["n_ref"]
        assert entry["events_class_sets"]["overall"]["n_ref"] == entry["events"]["overall"]["n_ref"]
    loaded = load_run(seed_run, "proposed2")
    assert loaded.frames["hop_s"] == 0.05 and loaded.val_scores.shape[1] == 3
    out = tmp_path / "events.tsv"
    assert main(["detect", str(seed_run), *test_clips[:2], "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "thresholds (events)" in printed  # "auto" for a frame-level run
    post = entry["post_processing"]
    for key, words in (("min_gap_s", "min gap"), ("min_event_s", "min event")):  # the run's rules, said where used
        said = f"{words} " + ", ".join(f"{c} {v:g} s" for c, v in post[key].items())
        assert (said in printed) == any(post[key].values()), (said, printed)
    assert out.read_text().startswith("filename\tonset\toffset\tevent_label")
    from tests.conftest import load_benchmark

    again = load_benchmark("frame_post_processing").run_figures(seed_run)  # the choice redone from the saved scores
    assert set(again) == set(results["methods"])
    assert again["proposed2"]["post_processing"] == entry["post_processing"]  # same grids, same validation scores
    assert again["proposed2"]["class_average"] == entry["events"]["class_average"]
    by_ebr = load_benchmark("frame_by_ebr").run_counts(seed_run, [-6.0, -2.0, 2.0, 6.0])  # EBRs redrawn
    with np.load(seed_run / "event_counts.npz") as counts:
        for method, table in by_ebr.items():  # every test event once, found as the run's own counts say
            assert sum(row["n"] for rows in table.values() for row in rows) == counts[method][..., 1].sum()
            assert sum(row["found"] for rows in table.values() for row in rows) == counts[method][..., 0].sum()
    from thce.detection.frame_events import THRESHOLD_GRID

    grids = load_benchmark("frame_threshold_grid")
    chosen_on = grids.run_method_figures(seed_run, {"default": THRESHOLD_GRID}, repeats=2, seed=0)
    # the test figures with today's grid are the run's own; the held-out halves score every validation clip once
    assert chosen_on["proposed2"]["test_f"]["default"] == pytest.approx(entry["events"]["class_average"]["f_score"])
    classes, hop_s, clips, split_scores, references = load_benchmark("frame_post_processing").load_scores(seed_run)
    halves = grids.split_halves(grids.clip_classes(clips["val"], references["val"], classes), np.random.default_rng(0))
    held = grids.held_out_counts(clips["val"], split_scores["val"]["proposed2"], references["val"], hop_s, classes,
                                 THRESHOLD_GRID, halves)  # fmt: skip
    assert held[..., 1].sum() == len(references["val"].events) and set(np.unique(halves)) == {0, 1}
    exported = tmp_path / "model.pt"
    assert main(["export", str(seed_run), "--out", str(exported), "-q"]) == 0
    metadata = json.loads(exported.with_name("model.pt.json").read_text())
    assert metadata["output"]["shape"] == ["batch", 40, 3]  # a score per 50 ms frame of a 2 s window
    assert metadata["frames"]["post_processing"] == entry["post_processing"]


def test_grid_counts_equal_the_event_metrics_for_every_setting():
    """choose_post_processing counts its grid fast; each setting's F must be what evaluate_clips reports."""
    from thce.detection.frame_events import (
        PostProcessing, _grid_f, evaluate_clips, frame_edges, median_filter_curve, median_frames, reference_list,
    )

    hop, rng = 0.05, np.random.default_rng(7)
    names = [f"dir/clip_{i}.wav" for i in range(12)]
    truth = {}
    for i, name in enumerate(names[:9]):  # several events per clip, some close together; three clips without
        onsets = np.sort(rng.uniform(0.0, 9.0, size=int(rng.integers(1, 4))))
        truth[name] = [(float(on), float(on) + float(rng.uniform(0.1, 1.5)), "dog") for on in onsets]
    scores = rng.uniform(0.0, 1.0, size=(12, 200, 1)).astype(np.float32) ** 3
    for name, events in truth.items():
        for on, off, _ in events:
            i = names.index(name)
            scores[i, int(on / hop) + int(rng.integers(-8, 8)) : int(off / hop), 0] += 0.5
    reference = reference_list(names, truth)
    gaps, shortest = (0.0, 0.25, 1.0), (0.0, 0.1, 0.4)
    ref_onsets = [np.sort([on for on, _, _ in truth.get(name, [])]) for name in names]
    edges = frame_edges(200 * hop, hop)
    checked = 0
    for median_s in (0.0, 0.25):
        curves = median_filter_curve(scores[..., 0].T, median_frames(median_s, hop)).T
        for threshold in (0.3, 0.6, 0.9):
            fast = _grid_f(curves >= threshold, edges, ref_onsets, gaps, shortest, 0.5)
            for g, gap in enumerate(gaps):
                for m, minimum in enumerate(shortest):
                    post = PostProcessing({"dog": threshold}, {"dog": median_s}, {"dog": minimum}, {"dog": gap})
                    f = evaluate_clips(names, scores, reference, hop, ["dog"], post)["class_wise"]["dog"]["f_score"]
                    assert fast[g, m] == pytest.approx(-1.0 if f is None else f, abs=1e-12), (median_s, threshold, gap)
                    checked += 1
    assert checked == 54 and len({round(float(v), 6) for v in np.ravel(fast)}) > 1  # the settings differ


def test_figures_from_clip_counts_equal_the_event_metrics_and_class_sets_follow_dcase2017():
    """count_figures on clip_counts gives evaluate_events' class-wise and class-average figures; on
    class_set_counts, each class is scored on its own clips (its event clips and the clips without events)."""
    from thce.detection.events import Event, EventList
    from thce.detection.frame_events import class_set_counts, clip_counts, count_figures
    from thce.detection.metrics import evaluate_events

    classes = ("dog", "gun")
    names = ["d0.wav", "d1.wav", "g0.wav", "g1.wav", "bg0.wav", "bg1.wav"]
    reference = EventList(tuple(names), (Event("d0.wav", 1.0, 2.0, "dog"), Event("d1.wav", 4.0, 5.0, "dog"),
                                         Event("g0.wav", 2.0, 2.5, "gun"), Event("g1.wav", 7.0, 7.4, "gun")))
    detected = EventList(tuple(names), (
        Event("d0.wav", 1.2, 2.0, "dog"),  # hit
        Event("d1.wav", 6.0, 7.0, "dog"),  # onset 2 s late: a deletion and an insertion
        Event("d1.wav", 4.1, 4.6, "gun"),  # a gun in a dog clip: an insertion over all clips, not on gun's own clips
        Event("g0.wav", 2.3, 2.5, "gun"),  # hit
        Event("g1.wav", 1.0, 1.5, "dog"),  # a dog in a gun clip
        Event("bg0.wav", 3.0, 3.5, "gun"),  # a false alarm on a clip without events: counted on both sets
    ))  # fmt: skip
    counts = clip_counts(names, detected, reference, classes)
    everything = count_figures(counts, classes)
    metrics = evaluate_events(reference, detected, classes=classes)
    for label in classes:
        for key in ("tp", "n_ref", "n_sys", "f_score", "error_rate"):
            assert everything["class_wise"][label][key] == pytest.approx(metrics["class_wise"][label][key])
    assert everything["class_average"] == pytest.approx(metrics["class_average"])
    own = count_figures(class_set_counts(counts), classes)
    # dog on d0, d1, bg0, bg1: 1 hit of 2 references, 2 detections (g1's dog is not on dog's clips)
    assert own["class_wise"]["dog"] == {"tp": 1, "n_ref": 2, "n_sys": 2, "f_score": 0.5, "error_rate": 1.0}
    # gun on g0, g1, bg0, bg1: 1 hit of 2, 2 detections (the bg0 false alarm; d1's gun is not on gun's clips)
    assert own["class_wise"]["gun"] == {"tp": 1, "n_ref": 2, "n_sys": 2, "f_score": 0.5, "error_rate": 1.0}
    assert everything["class_wise"]["gun"]["n_sys"] == 3 and everything["class_wise"]["dog"]["n_sys"] == 3
    assert own["overall"] == {"tp": 2, "n_ref": 4, "n_sys": 4, "f_score": 0.5, "error_rate": 1.0}
    assert own["class_average"] == {"f_score": 0.5, "error_rate": 1.0}


def test_post_processing_read_back_from_a_checkpoint_of_either_form():
    from thce.detection.frame_events import PostProcessing

    post = PostProcessing({"dog": 0.9, "gun": 0.5}, {"dog": 0.25, "gun": 0.0}, {"dog": 0.1}, {"dog": 0.5, "gun": 1.0})
    assert PostProcessing.from_dict(post.to_dict(), ["dog", "gun"]) == post
    assert post.rules("gun").min_event_s == 0.0 and post.rules("gun").min_gap_s == 1.0
    older = {"thresholds": {"dog": 0.9}, "median_filter_s": {"dog": 0.0}, "min_event_s": 0.0, "min_gap_s": 0.5}
    assert PostProcessing.from_dict(older, ["dog"]).min_gap_s == {"dog": 0.5}
    with pytest.raises(KeyError, match="thresholds lacks gun"):
        PostProcessing.from_dict(older, ["dog", "gun"])


def test_methods_trained_in_worker_processes_give_one_processs_results(tmp_path):
    import csv
    import json

    from thce.cli import main

    config = tmp_path / "frames.toml"
    config.write_text(FRAME_RUN.replace("[train]\n", "[train]\nnum_threads = 1\n"))  # the same threads both ways
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["-q", "experiment", str(config), "--out", str(one)]) == 0
    assert main(["-q", "experiment", str(config), "--out", str(two), "--jobs", "2"]) == 0

    def read(run):
        results = json.loads((run / "results.json").read_text())
        with (run / "metrics.csv").open(newline="") as handle:  # every epoch once, the processes' rows interleaved
            rows = sorted(tuple(v for k, v in row.items() if k != "seconds") for row in csv.DictReader(handle))
        arrays = {}
        for name in ("scores.npz", "val_scores.npz", "event_counts.npz"):
            with np.load(run / name) as saved:
                arrays.update({f"{name}/{key}": saved[key] for key in saved.files})
        return results, rows, arrays, sorted(p.name for p in (run / "checkpoints").glob("*.pt"))

    first, second = read(one), read(two)
    for key in ("methods", "selected_epochs", "selection", "warnings", "embedding_diagnostics"):
        assert second[0][key] == first[0][key], key
    assert list(second[0]["methods"]) == ["baseline", "proposed1", "proposed2", "dcase2017_baseline"]
    assert second[0]["processes"] == 2 and "processes" not in first[0]
    assert set(second[0]["timing_s"]) == set(first[0]["timing_s"])
    assert second[1] == first[1] and len(first[1]) > 0
    assert second[2].keys() == first[2].keys() and all(np.array_equal(second[2][k], first[2][k]) for k in first[2])
    assert second[3] == first[3] == ["baseline.pt", "dcase2017_baseline.pt", "proposed1.pt", "proposed2.pt"]
    spent = json.loads((two / "checkpoints" / "resume" / "timing_s.json").read_text())
    assert set(spent) == set(second[0]["timing_s"])  # each process added its stages to the record a resume reads
    assert main(["-q", "experiment", str(config), "--out", str(two), "--jobs", "2", "--resume"]) == 0
    assert read(two)[0]["methods"] == first[0]["methods"]


def test_jobs_usage_errors(tmp_path, capsys):
    from thce.cli import main

    config = tmp_path / "frames.toml"
    config.write_text(FRAME_RUN)
    assert main(["-q", "experiment", str(config), "--out", str(tmp_path / "run"), "--jobs", "0"]) == 2
    assert "--jobs: must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
