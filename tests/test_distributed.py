"""Data-parallel training: 2 gloo processes on CPU against one process with the same global batch."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from tests.conftest import TINY
from tests.test_resume import _comparable, _kill_when
from thce.cli import main
from thce.cluster import cluster_per_class
from thce.distributed import SINGLE, Distributed, init_distributed, shutdown

# An LSTM without the centring batch norm and without dropout: nothing in it depends on how a batch is split,
# so 2 x 4 clips per step must give what 1 x 8 gives, up to the order of floating-point sums.
LSTM = (
    TINY.replace('encoder = "cnn"', 'encoder = "lstm"\nlstm_hidden_size = 16\ncenter_embedding = false')
    .replace("cnn_channels = [8, 16]\ncnn_pools = [[5, 2], [20, 2]]\n", "")
    .replace("batch_size = 16", "batch_size = 8\nnum_threads = 1")
)
TOLERANCE = 1e-5  # scores; losses below to 1e-4 relative


TORCHRUN = ("torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m")


def _torchrun(config: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", *TORCHRUN, "thce", "-q", "experiment", str(config), "--out", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(out.parent)}  # torchrun's torchelastic_* folders
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    config = tmp_path / "lstm.toml"
    config.write_text(LSTM)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["-q", "experiment", str(config), "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    done = _torchrun(config, tmp_path / "two", "--set", "train.batch_size=4")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "terminate called" not in done.stderr, done.stderr[-3000:]  # issue 14: no rank dies at exit

    one, two = np.load(tmp_path / "one" / "scores.npz"), np.load(tmp_path / "two" / "scores.npz")
    assert sorted(one.files) == sorted(two.files) == ["baseline", "class_index", "proposed1", "proposed2"]
    for method in one.files:
        np.testing.assert_allclose(two[method], one[method], atol=TOLERANCE, err_msg=method)
    # every stage, epoch by epoch; written once (by rank 0 only), not once per rank
    rows_one, rows_two = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert [(r["method"], r["stage"], r["iteration"], r["epoch"]) for r in rows_two] == [
        (r["method"], r["stage"], r["iteration"], r["epoch"]) for r in rows_one
    ]
    for a, b in zip(rows_one, rows_two):
        for column in ("train_loss", "val_loss"):
            assert float(b[column]) == pytest.approx(float(a[column]), rel=1e-4), (a, b)
        for column in ("eq3_train", "eq3_val"):  # fractions over the whole epoch, not rank 0's share
            if a[column]:
                assert float(b[column]) == pytest.approx(float(a[column]), abs=1e-9, nan_ok=True), (column, a, b)
    assert "world_size" in (tmp_path / "two" / "results.json").read_text()


def _cluster_on_rank(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch_dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        dist = Distributed(rank=rank, world_size=world_size)
        embeddings, classes = _clustering_problem()
        for balanced in (False, True):
            result = cluster_per_class(embeddings, classes, num_classes=3, seed=5, balanced=balanced, dist=dist)
            torch.save(
                {"centroids": result.centroids, "assignment": result.assignment},
                Path(out_dir) / f"rank{rank}-{balanced}.pt",
            )
        # uneven shares are gathered in rank order
        rows = torch.arange(7 * 2, dtype=torch.float32).reshape(7, 2)
        assert torch.equal(dist.gather_rows(rows[dist.share(7)]), rows)
    finally:
        torch_dist.destroy_process_group()


def _clustering_problem() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.nn.functional.normalize(torch.randn(301, 8, generator=generator), dim=1)
    classes = torch.cat([torch.zeros(31), torch.ones(60), torch.full((210,), 2)]).long()  # K_c = 1, 1, 6
    return embeddings, classes[torch.randperm(301, generator=generator)]


def test_kmeans_over_ranks_gives_every_rank_the_single_process_centroids(tmp_path):
    mp.spawn(_cluster_on_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    embeddings, classes = _clustering_problem()
    for balanced in (False, True):
        ranks = [torch.load(tmp_path / f"rank{r}-{balanced}.pt", weights_only=True) for r in range(2)]
        assert torch.equal(ranks[0]["centroids"], ranks[1]["centroids"])  # identical, bit for bit
        assert torch.equal(ranks[0]["assignment"], ranks[1]["assignment"])
        single = cluster_per_class(embeddings, classes, num_classes=3, seed=5, balanced=balanced, dist=SINGLE)
        assert torch.equal(ranks[0]["assignment"], single.assignment)
        torch.testing.assert_close(ranks[0]["centroids"], single.centroids, atol=1e-6, rtol=0)


def _native_threads() -> list[str]:
    return [Path(f"/proc/self/task/{t}/comm").read_text().strip() for t in os.listdir("/proc/self/task")]


def _train_then_shut_down(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist = init_distributed("cpu")
    module = torch.nn.Linear(4, 2)
    forward = dist.data_parallel(module)  # as fit_stage: DDP, then collectives on temporary tensors
    forward(lambda: module(torch.randn(8, 4)).sum()).backward()
    dist.broadcast_module(module)
    del forward
    shutdown(dist)
    Path(out_dir, f"threads{rank}.txt").write_text("\n".join(_native_threads()))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="lists threads through /proc")
def test_shutdown_frees_the_process_group_before_exit(tmp_path):
    # Issue 14: a group that outlives shutdown is freed during interpreter finalisation, where its gloo worker
    # threads die in std::terminate when they take the GIL to drop a finished work (rank exit -6, a failed job).
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_train_then_shut_down, args=(port, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        threads = (tmp_path / f"threads{rank}.txt").read_text().split()
        assert not [t for t in threads if "gloo" in t], (rank, threads)  # joined in shutdown, not left for exit


def test_shares_cover_every_item_once():
    for n in (0, 1, 5, 64, 65):
        parts = [Distributed(rank=r, world_size=3).share(n) for r in range(3)]
        assert [i for part in parts for i in range(n)[part]] == list(range(n))
        sizes = [len(range(n)[part]) for part in parts]
        assert max(sizes) - min(sizes) <= 1


CNN_FAST = TINY.replace("[train]\nbatch_size = 16", "[train]\nbatch_size = 16\nnum_threads = 1")


def test_loader_workers_read_the_same_batches(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(CNN_FAST.replace("n_iter = 2", "n_iter = 1"))
    for workers in (0, 2):
        out = tmp_path / f"workers{workers}"
        assert main(["-q", "experiment", str(config), "--out", str(out), "--set", f"train.loader_workers={workers}"]) == 0
    zero, two = np.load(tmp_path / "workers0" / "scores.npz"), np.load(tmp_path / "workers2" / "scores.npz")
    for method in zero.files:
        np.testing.assert_array_equal(zero[method], two[method], err_msg=method)


def test_bf16_autocast_trains_on_cpu(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(CNN_FAST.replace("n_iter = 2", "n_iter = 1"))
    out = tmp_path / "bf16"
    assert main(["-q", "experiment", str(config), "--out", str(out), "--set", 'train.precision="bf16"']) == 0
    losses = [float(r["train_loss"]) for r in _rows(out) if r["train_loss"]]
    assert losses and all(np.isfinite(losses))
    assert np.isfinite(np.load(out / "scores.npz")["proposed2"]).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_smoke(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(CNN_FAST.replace("n_iter = 2", "n_iter = 1"))
    out = tmp_path / "cuda"
    overrides = ['train.device="cuda"', 'train.precision="bf16"', "train.loader_workers=2", "train.pin_memory=true"]
    assert main(["-q", "experiment", str(config), "--out", str(out), *[a for o in overrides for a in ("--set", o)]]) == 0
    assert np.isfinite(np.load(out / "scores.npz")["proposed2"]).all()


def test_sigkill_under_torchrun_then_resume_matches_uninterrupted(tmp_path):
    config = tmp_path / "lstm.toml"
    config.write_text(LSTM.replace("last_epochs = 2", "last_epochs = 4"))
    extra = ("--set", "train.batch_size=4")
    assert _torchrun(config, tmp_path / "reference", *extra).returncode == 0
    killed = tmp_path / "killed"
    _kill_when("proposed-embedding-2.pt", killed, config, TORCHRUN, *extra)
    assert not (killed / "results.json").exists()
    done = _torchrun(config, killed, *extra, "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert _comparable(killed) == _comparable(tmp_path / "reference")
