"""Pictures and a page to review a detection (``thce detect --plots DIR``).

Per file ``DIR/<stem>.png``: the spectrogram (log power, 0-8 kHz, pooled to at most ~2000 columns so an hour stays
light), each class's score over time with its threshold (dashed), and the detected events as bands, with the
reference events (``--reference``) as bands underneath. ``DIR/index.html`` lists the files with their picture, an
``<audio>`` player (a link to the file as given, relative to DIR) and the event table, and the skipped files.
The audio is read again in blocks (:func:`thce.audio.read.stream_audio`): memory does not grow with the file.
"""

from __future__ import annotations

import html
import os
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from thce.detection.events import DetectionResult, Event
from thce.errors import ConfigError
from thce.io import (
    PNG_SIGNATURE,
    atomic_write,
    check_output_path,
    ensure_dir,
    read_head,
    refuse_other_kind,
    starts_with,
)

if TYPE_CHECKING:
    from thce.detection.detect import FileDetection

GENERATOR = '<meta name="generator" content="thce detect --plots">'
PLOT_RATE_HZ = 16000
MAX_COLUMNS = 2000


def _is_our_page(path: Path) -> bool:
    return GENERATOR.encode() in read_head(path, 2048)


def check_plots_dir(
    folder: str | os.PathLike, paths: Sequence[str | os.PathLike], *, overwrite: bool = False,
    reference: dict[str, list[Event]] | None = None,
) -> DetectionPages:
    """Before any work: ``folder`` can hold the pages, picture names are unique, and nothing there of another kind
    would be replaced (unless ``overwrite``). Returns the page writer."""
    folder = Path(folder)
    check_output_path(folder, directory=True)
    names: dict[str, str] = {}
    for p in paths:
        name = Path(p).stem + ".png"
        if names.setdefault(name, os.fspath(p)) != os.fspath(p):
            raise ConfigError(f"{p} and {names[name]} would both be drawn as {folder / name}: rename one")
        refuse_other_kind(folder / name, looks_ours=starts_with(PNG_SIGNATURE), what="a PNG picture", overwrite=overwrite)
    refuse_other_kind(folder / "index.html", looks_ours=_is_our_page, what="a thce detection page", overwrite=overwrite)
    return DetectionPages(folder, reference or {})


def spectrogram(path: str | os.PathLike, duration_s: float) -> tuple[np.ndarray, float]:
    """``(log10 power (freqs, columns), seconds per column)`` of ``path`` at 16 kHz, 512-point frames, power
    averaged into columns of at least 32 ms (at most :data:`MAX_COLUMNS` for the file)."""
    from scipy.signal import stft

    from thce.audio.read import stream_audio

    hop = 256
    frames_per_col = max(1, int(np.ceil(duration_s * PLOT_RATE_HZ / hop / MAX_COLUMNS)), 2)
    cols: list[np.ndarray] = []
    pending = np.zeros((257, 0), dtype=np.float64)
    tail = np.zeros(0, dtype=np.float32)
    for block in stream_audio(path, sample_rate_hz=PLOT_RATE_HZ, block_s=30.0):
        x = np.concatenate([tail, block])
        usable = (x.size // hop) * hop
        if usable < 512:
            tail = x
            continue
        _, _, z = stft(x[:usable], nperseg=512, noverlap=512 - hop, boundary=None, padded=False)
        tail = x[usable - (512 - hop):]
        pending = np.concatenate([pending, np.abs(z) ** 2], axis=1)
        n = pending.shape[1] // frames_per_col
        if n:
            cols.append(pending[:, : n * frames_per_col].reshape(257, n, frames_per_col).mean(axis=2))
            pending = pending[:, n * frames_per_col :]
    if pending.shape[1]:
        cols.append(pending.mean(axis=1, keepdims=True))
    power = np.concatenate(cols, axis=1) if cols else np.zeros((257, 1))
    return np.log10(power + 1e-10), frames_per_col * hop / PLOT_RATE_HZ


class DetectionPages:
    """Draws each file as it is detected (:meth:`add`) and writes ``index.html`` at the end (:meth:`finish`)."""

    def __init__(self, folder: Path, reference: dict[str, list[Event]]) -> None:
        self.folder = folder
        self.reference = reference
        self.drawn: list[tuple[str, str, float]] = []  # (audio path, picture name, duration)
        self.thresholds: dict[str, float] = {}

    def add(self, found: FileDetection) -> Path:
        """Draw one file's picture; returns its path."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fs = found.scores
        ensure_dir(self.folder)
        name = Path(fs.path).stem + ".png"
        logpow, col_s = spectrogram(fs.path, fs.duration_s)
        ref = self.reference.get(Path(fs.path).name, [])
        classes = list(fs.classes)
        fig, axes = plt.subplots(3, 1, figsize=(14, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2, 1.5]})
        top = np.percentile(logpow, 99.5)
        axes[0].imshow(logpow, origin="lower", aspect="auto", cmap="magma", vmin=top - 6, vmax=top,
                       extent=(0, logpow.shape[1] * col_s, 0, PLOT_RATE_HZ / 2000))  # fmt: skip
        axes[0].set_ylabel("kHz")
        axes[0].set_title(f"{fs.path}  ({fs.duration_s:.1f} s, hop {fs.hop_s:g} s)", fontsize=10, loc="left")
        colours = plt.get_cmap("tab10")
        thresholds = found.thresholds
        for i, label in enumerate(classes):
            curve = np.where(np.isfinite(found.curve[:, i]), found.curve[:, i], 0.0)
            axes[1].stairs(curve, found.edges, color=colours(i % 10), label=label)
            axes[1].axhline(thresholds[i], color=colours(i % 10), linestyle="--", linewidth=0.8)
        axes[1].set_ylim(-0.02, 1.02)
        axes[1].set_ylabel("score")
        axes[1].legend(loc="upper right", fontsize=8, ncol=min(len(classes), 6))
        lanes = classes + sorted({e.label for e in ref} - set(classes))  # a lane per class: detected over reference
        for e in found.events:
            i = lanes.index(e.label)
            axes[2].broken_barh([(e.onset_s, e.offset_s - e.onset_s)], (2 * i + 1.1, 0.8), color=colours(i % 10))
        for e in ref:
            i = lanes.index(e.label)
            axes[2].broken_barh([(e.onset_s, e.offset_s - e.onset_s)], (2 * i + 0.1, 0.8), color=colours(i % 10),
                                alpha=0.45, hatch="//")  # fmt: skip
        ticks = [(2 * i + 1.5, f"{label}") for i, label in enumerate(lanes)]
        ticks += [(2 * i + 0.5, "reference") for i in range(len(lanes))] if ref else []
        axes[2].set_yticks([t for t, _ in ticks], [name for _, name in ticks], fontsize=7)
        axes[2].set_ylim(0, 2 * len(lanes))
        axes[2].set_xlim(0, fs.duration_s)
        axes[2].set_xlabel("time (s)")
        fig.tight_layout()
        out = self.folder / name
        with atomic_write(out, "wb") as handle:
            fig.savefig(handle, format="png", dpi=80)
        plt.close(fig)
        self.drawn.append((fs.path, name, fs.duration_s))
        return out

    def finish(self, result: DetectionResult) -> Path:
        """Write ``index.html`` for the drawn files, their events and the skipped files; returns its path."""
        ensure_dir(self.folder)
        by_file: dict[str, list[Event]] = {}
        for e in result.events:
            by_file.setdefault(e.file, []).append(e)
        esc = html.escape
        parts = [
            "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', GENERATOR,
            "<title>thce detect</title>",
            "<style>body{font-family:sans-serif;margin:1em 2em}img{max-width:100%}table{border-collapse:collapse}"
            "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}td.l,th.l{text-align:left}</style>",
            "</head><body>", f"<h1>Detection: {len(result.events)} events in {len(self.drawn)} file(s)</h1>",
            "<p>Thresholds: " + esc(", ".join(f"{k} {v:.3f}" for k, v in result.thresholds.items())) + "</p>",
            '<ul id="files">',
        ]
        parts += [f'<li><a href="#f{i}">{esc(path)}</a> ({len(by_file.get(path, []))} events)</li>'
                  for i, (path, _, _) in enumerate(self.drawn)]  # fmt: skip
        parts.append("</ul>")
        for i, (path, picture, duration) in enumerate(self.drawn):
            relative = os.path.relpath(os.path.abspath(path), os.path.abspath(self.folder))
            src = urllib.parse.quote(Path(relative).as_posix())
            parts += [
                f'<section class="file" id="f{i}"><h2>{esc(path)}</h2>',
                f'<p>{duration:.1f} s</p><img src="{esc(urllib.parse.quote(picture))}" alt="{esc(path)}">',
                f'<p><audio controls preload="none" src="{esc(src)}"></audio></p>',
                '<table><tr><th class="l">label</th><th>onset (s)</th><th>offset (s)</th><th>score</th></tr>',
            ]
            parts += [f'<tr><td class="l">{esc(e.label)}</td><td>{e.onset_s:.3f}</td><td>{e.offset_s:.3f}</td>'
                      f"<td>{e.score:.3f}</td></tr>" for e in by_file.get(path, [])]  # fmt: skip
            parts.append("</table></section>")
        if result.skipped:
            parts.append('<h2>Skipped</h2><table id="skipped">')
            parts += [f'<tr><td class="l">{esc(s["file"])}</td><td class="l">{esc(s["reason"])}</td></tr>'
                      for s in result.skipped]  # fmt: skip
            parts.append("</table>")
        parts.append("</body></html>")
        out = self.folder / "index.html"
        with atomic_write(out, "w", encoding="utf-8") as handle:
            handle.write("\n".join(parts) + "\n")
        return out
