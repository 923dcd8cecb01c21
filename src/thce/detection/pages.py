"""Pages to review a detection (``thce detect --plots DIR``).

Each file is drawn as panels of at most :data:`PANEL_S` seconds, all at one time scale (a shorter file is one panel
as wide as the page): ``DIR/<stem>.png`` for a file of one panel, ``DIR/<stem>.01.png``, ``.02.png``, ... for a
longer one. A panel shows the spectrogram (log power, 0-8 kHz, colours from the panel's background, its 30th
percentile, to its loudest 0.1 %), each class's score over time with its threshold (dashed), and a lane of detected
events per class; with a reference (``--reference``), a lane of the class's reference events under it, events
matched within the 500 ms onset collar (:func:`thce.detection.metrics.match_events`, the matching of
``thce evaluate-events``) filled, missed ones and false alarms crossed.

``DIR/index.html``: the counts (files, events, skipped files) and, with a reference, the event-based F-score of every
file and of all; the skipped files with the reason; per file its panels, an ``<audio>`` player (a link to the file as
given, relative to DIR) and the event table (reference events beside the detected ones they match, hit / missed /
false alarm). Clicking an event's time or a point of a panel plays the file from there; ``index.html#f0@12.5``
opens the page with the first file's player at 12.5 s. The audio is read again in blocks
(:func:`thce.audio.read.stream_audio`), one panel at a time: memory does not grow with the file.
"""

from __future__ import annotations

import html
import io
import math
import os
import sys
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from thce.detection.events import DetectionResult, Event, EventList
from thce.detection.metrics import DCASE_COLLAR_S, EventMatch, match_events, pooled_rates
from thce.errors import ConfigError
from thce.io import atomic_write, check_output_file, check_output_path, ensure_dir, read_head, thce_png

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from thce.detection.detect import FileDetection

GENERATOR = '<meta name="generator" content="thce detect --plots">'
PLOT_RATE_HZ = 16000
#: Longest stretch of a file drawn in one picture, seconds (about 10 pixels a second).
PANEL_S = 120.0
#: Spectrogram columns of a full panel (at least 32 ms each).
PANEL_COLUMNS = 1200
_HOP = 256  # STFT hop at PLOT_RATE_HZ, samples
_FIGURE_WIDTH_IN, _DPI = 13.0, 96  # pictures 1,248 pixels wide
_RANGE_DECADES = (2.0, 7.0)
_CROSS = {"marker": "x", "color": "black", "markersize": 7, "markeredgewidth": 1.8, "linestyle": "none"}  # the spectrogram's colours span 20 to 70 dB of power


def _is_our_page(path: Path) -> bool:
    return GENERATOR.encode() in read_head(path, 2048)


def panel_spans(duration_s: float, panel_s: float = PANEL_S) -> list[tuple[float, float]]:
    """``[(start, stop), ...]`` seconds of the panels of a file: ``[(0, duration)]`` up to ``panel_s``, else
    ``panel_s`` apart (the last one reaching past the end, drawn at the same scale)."""
    if duration_s <= panel_s:
        return [(0.0, duration_s)]
    return [(k * panel_s, (k + 1) * panel_s) for k in range(math.ceil(duration_s / panel_s - 1e-9))]


def picture_names(path: str | os.PathLike, duration_s: float, panel_s: float = PANEL_S) -> list[str]:
    """The names of a file's panels: ``<stem>.png`` for one, ``<stem>.01.png``, ... for several."""
    stem, count = Path(path).stem, len(panel_spans(duration_s, panel_s))
    if count == 1:
        return [f"{stem}.png"]
    width = max(2, len(str(count)))
    return [f"{stem}.{k:0{width}d}.png" for k in range(1, count + 1)]


def _duration_s(path: str | os.PathLike) -> float:
    """The file's length from its header; 0 (one panel) where it cannot be read (detection skips or names it)."""
    from thce.audio.read import audio_info
    from thce.errors import AudioError

    try:
        info = audio_info(path)
    except AudioError:
        return 0.0
    return info.frames / info.sample_rate_hz


def _refuse_other_picture(path: Path, overwrite: bool, inputs: Sequence[str | os.PathLike] = ()) -> None:
    """Replace only a picture thce drew (its PNG marker, :func:`thce.io.thce_png`), never an input."""
    check_output_file(path, looks_ours=thce_png, what="a picture thce drew", overwrite=overwrite, inputs=inputs)


def check_plots_dir(
    folder: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    *,
    overwrite: bool = False,
    reference: EventList | None = None,
    panel_s: float = PANEL_S,
) -> DetectionPages:
    """Before any work: ``folder`` can hold the pages, picture names are unique, and nothing there of another kind
    would be replaced (unless ``overwrite``). Returns the page writer."""
    folder = Path(folder)
    check_output_path(folder, directory=True)
    names: dict[str, str] = {}
    for p in paths:
        for name in picture_names(p, _duration_s(p), panel_s):
            if names.setdefault(name, os.fspath(p)) != os.fspath(p):
                raise ConfigError(f"{p} and {names[name]} would both be drawn as {folder / name}: rename one")
            _refuse_other_picture(folder / name, overwrite, paths)
    check_output_file(folder / "index.html", looks_ours=_is_our_page, what="a thce detection page",
                      overwrite=overwrite, inputs=paths)  # fmt: skip
    return DetectionPages(folder, reference, checked=set(names), overwrite=overwrite, panel_s=panel_s)


def _power_columns(path: str | os.PathLike, frames_per_column: int) -> Iterator[np.ndarray]:
    """Power spectrogram of ``path`` at 16 kHz (512-point frames, hop 256) averaged over ``frames_per_column``
    frames: ``(257, n)`` blocks in time order, read in 30 s blocks (the last column may average fewer frames)."""
    from scipy.signal import stft

    from thce.audio.read import stream_audio

    pending = np.zeros((257, 0), dtype=np.float64)
    tail = np.zeros(0, dtype=np.float32)
    for block in stream_audio(path, sample_rate_hz=PLOT_RATE_HZ, block_s=30.0):
        x = np.concatenate([tail, block])
        usable = (x.size // _HOP) * _HOP
        if usable < 512:
            tail = x
            continue
        _, _, z = stft(x[:usable], nperseg=512, noverlap=512 - _HOP, boundary=None, padded=False)
        tail = x[usable - (512 - _HOP) :]
        pending = np.concatenate([pending, np.abs(z) ** 2], axis=1)
        n = pending.shape[1] // frames_per_column
        if n:
            yield pending[:, : n * frames_per_column].reshape(257, n, frames_per_column).mean(axis=2)
            pending = pending[:, n * frames_per_column :]
    if pending.shape[1]:
        yield pending.mean(axis=1, keepdims=True)


class _ColumnReader:
    """Takes the spectrogram columns of one panel after another from :func:`_power_columns`."""

    def __init__(self, blocks: Iterator[np.ndarray], column_s: float) -> None:
        self.blocks, self.column_s = blocks, column_s
        self.buffer = np.zeros((257, 0))
        self.first = 0  # index of the buffer's first column

    def until(self, stop_s: float, *, last: bool = False) -> tuple[np.ndarray, float]:
        """``(log10 power (257, n), start of its first column in seconds)``: the columns starting before
        ``stop_s`` (``last``: all that are left)."""
        want = sys.maxsize if last else math.ceil(stop_s / self.column_s - 1e-9)
        while self.first + self.buffer.shape[1] < want:
            block = next(self.blocks, None)
            if block is None:
                break
            self.buffer = np.concatenate([self.buffer, block], axis=1)
        take = max(0, min(want - self.first, self.buffer.shape[1]))
        columns, start = self.buffer[:, :take], self.first * self.column_s
        self.buffer, self.first = self.buffer[:, take:], self.first + take
        return np.log10(columns + 1e-10), start


def clock(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour) of a time in seconds, rounded down."""
    whole = int(math.floor(seconds + 1e-6))
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass(frozen=True)
class Panel:
    """One picture of a file: its name, the seconds it covers, and where its time axis lies across the picture
    (fractions of its width), so that a click can be turned into a time."""

    name: str
    start_s: float
    stop_s: float
    axis_x0: float
    axis_x1: float
    width_px: int
    height_px: int


@dataclass(frozen=True)
class DrawnFile:
    """A file on the page: its panels, detected events, and reference events with their matching (None: no
    reference given, or the reference does not list the file)."""

    path: str
    duration_s: float
    panels: list[Panel]
    events: list[Event]
    reference: list[Event] | None
    match: EventMatch | None


class DetectionPages:
    """Draws each file as it is detected (:meth:`add`) and writes ``index.html`` at the end (:meth:`finish`)."""

    def __init__(
        self,
        folder: Path,
        reference: EventList | None,
        *,
        checked: set[str] | None = None,
        overwrite: bool = False,
        panel_s: float = PANEL_S,
        collar_s: float = DCASE_COLLAR_S,
    ) -> None:
        self.folder = folder
        self.reference = reference
        self.reference_events: dict[str, list[Event]] = {}
        for e in reference.events if reference is not None else ():
            self.reference_events.setdefault(e.file, []).append(e)
        self.checked = checked or set()
        self.overwrite = overwrite
        self.panel_s = panel_s
        self.collar_s = collar_s
        self.drawn: list[DrawnFile] = []

    def _reference_of(self, path: str) -> list[Event] | None:
        """The reference events of ``path`` (by base name, as event lists key files); None where not listed."""
        name = Path(path).name
        if self.reference is None or name not in self.reference.all_files:
            return None
        return sorted(self.reference_events.get(name, []), key=lambda e: (e.onset_s, e.label))

    def add(self, found: FileDetection) -> list[Path]:
        """Draw one file's panels; returns their paths."""
        fs = found.scores
        names = picture_names(fs.path, fs.duration_s, self.panel_s)
        for name in names:  # the header's length may differ from the decoded one: check names not checked before
            if name not in self.checked:
                _refuse_other_picture(self.folder / name, self.overwrite)
        ensure_dir(self.folder)
        reference = self._reference_of(fs.path)
        events = list(found.events)
        match = None if reference is None else match_events(reference, events, collar_s=self.collar_s)
        est_hit = {s for _, s in match.hits} if match else set()
        ref_hit = {r for r, _ in match.hits} if match else set()
        classes = list(fs.classes)
        lanes = classes + sorted({e.label for e in reference or []} - set(classes))
        spans = panel_spans(fs.duration_s, self.panel_s)
        frames = max(2, round((spans[0][1] - spans[0][0]) * PLOT_RATE_HZ / _HOP / PANEL_COLUMNS))
        columns = _ColumnReader(_power_columns(fs.path, frames), frames * _HOP / PLOT_RATE_HZ)
        picture = _PanelPicture(lanes, classes, found, events, reference, est_hit, ref_hit, self.collar_s,
                                minutes=fs.duration_s >= 60.0)  # fmt: skip
        panels, written = [], []
        for k, (name, span) in enumerate(zip(names, spans)):
            logpow, first_s = columns.until(span[1], last=k == len(spans) - 1)
            title = f"{Path(fs.path).name}   {clock(span[0])} – {clock(min(span[1], fs.duration_s))} of "
            title += f"{clock(fs.duration_s)}" + (f"   (panel {k + 1} of {len(spans)})" if len(spans) > 1 else "")
            png, x0, x1, size = picture.render(span, logpow, first_s, columns.column_s, title=title)
            out = self.folder / name
            with atomic_write(out, "wb") as handle:
                handle.write(png)
            panels.append(Panel(name, span[0], span[1], x0, x1, *size))
            written.append(out)
        self.drawn.append(DrawnFile(fs.path, fs.duration_s, panels, events, reference, match))
        return written

    def finish(self, result: DetectionResult) -> Path:
        """Write ``index.html`` for the drawn files, their events and the skipped files; returns its path."""
        ensure_dir(self.folder)
        out = self.folder / "index.html"
        with atomic_write(out, "w", encoding="utf-8") as handle:
            handle.write(_page(self, result))
        return out


class _PanelPicture:
    """The figure of one panel: spectrogram, scores with thresholds, event lanes."""

    def __init__(
        self,
        lanes: list[str],
        classes: list[str],
        found: FileDetection,
        events: list[Event],
        reference: list[Event] | None,
        est_hit: set[int],
        ref_hit: set[int],
        collar_s: float,
        *,
        minutes: bool,
    ) -> None:
        self.lanes, self.classes, self.found = lanes, classes, found
        self.events, self.reference, self.est_hit, self.ref_hit = events, reference, est_hit, ref_hit
        self.collar_s, self.minutes = collar_s, minutes
        self.boxes: list[Any] | None = None  # the axes' places, laid out for the first panel, kept for the others

    def colour(self, label: str) -> str:
        return f"C{self.lanes.index(label) % 10}"

    def render(
        self, span: tuple[float, float], logpow: np.ndarray, first_s: float, column_s: float, *, title: str
    ) -> tuple[bytes, float, float, tuple[int, int]]:
        """``(PNG bytes, x0, x1, (width, height) pixels)`` of the panel ``span`` (seconds); ``logpow`` its
        spectrogram columns from ``first_s``; ``x0``, ``x1`` where the time axis starts and ends, as fractions of
        the width (the same for every panel of the file)."""
        from matplotlib import rc_context
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        rows = len(self.lanes) * (2 if self.reference is not None else 1)
        heights = [1.8, 1.3, 0.3 * rows + 0.25]
        with rc_context({"font.size": 11, "axes.titlesize": 12}):
            layout = "constrained" if self.boxes is None else None  # constrained layout: half the drawing time
            fig = Figure(figsize=(_FIGURE_WIDTH_IN, sum(heights) + 0.9), dpi=_DPI, layout=layout)
            FigureCanvasAgg(fig)
            axes = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": heights})
            spec, scores, lanes = axes
            for ax, box in zip(axes, self.boxes or []):
                ax.set_position(box)
            self._spectrogram(spec, logpow, first_s, column_s, title)
            self._scores(scores, span)
            self._lanes(lanes)
            lanes.set_xlim(*span)
            self._time_axis(lanes)
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": "thce detect --plots"})
        self.boxes = [ax.get_position() for ax in axes]
        box = lanes.get_position()
        width, height = fig.canvas.get_width_height()
        return buffer.getvalue(), float(box.x0), float(box.x1), (int(width), int(height))

    def _spectrogram(self, ax: Axes, logpow: np.ndarray, first_s: float, column_s: float, title: str) -> None:
        ax.set_facecolor("0.85")  # past the end of the file
        if logpow.shape[1]:
            floor, top = np.percentile(logpow, [30.0, 99.9])  # the background dark, the loudest 0.1 % bright
            floor = float(np.clip(floor, top - _RANGE_DECADES[1], top - _RANGE_DECADES[0]))
            ax.imshow(logpow, origin="lower", aspect="auto", cmap="magma", vmin=floor, vmax=top,
                      extent=(first_s, first_s + logpow.shape[1] * column_s, 0, PLOT_RATE_HZ / 2000),
                      interpolation="nearest")  # fmt: skip
        ax.set_ylim(0, PLOT_RATE_HZ / 2000)
        ax.set_ylabel("kHz")
        ax.set_title(title, loc="left")

    def _scores(self, ax: Axes, span: tuple[float, float]) -> None:
        edges, curve = self.found.edges, self.found.curve
        inside = np.flatnonzero((edges[1:] > span[0]) & (edges[:-1] < span[1]))
        lo, hi = (int(inside[0]), int(inside[-1]) + 1) if inside.size else (0, 0)
        for i, label in enumerate(self.classes):
            values = np.where(np.isfinite(curve[lo:hi, i]), curve[lo:hi, i], 0.0)
            if hi > lo:
                ax.stairs(values, edges[lo : hi + 1], color=self.colour(label), linewidth=1.4, label=label)
            ax.axhline(self.found.thresholds[i], color=self.colour(label), linestyle="--", linewidth=1.0)
        ax.plot([], [], color="0.3", linestyle="--", linewidth=1.0, label="threshold")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("score")
        ax.grid(True, axis="y", color="0.9")
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), borderaxespad=0.0, frameon=False)

    def _lanes(self, ax: Axes) -> None:
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        with_reference = self.reference is not None
        step = 2 if with_reference else 1
        top = step * len(self.lanes)

        def lane_y(label: str, reference: bool) -> float:  # first class at the top; a class's reference under it
            return top - step * self.lanes.index(label) - 1 - (1 if reference else 0)

        def draw(e: Event, y: float, matched: bool) -> None:
            style = ({"facecolor": self.colour(e.label)} if matched or not with_reference
                     else {"facecolor": "white", "hatch": "xxx"})  # fmt: skip
            ax.broken_barh([(e.onset_s, max(e.offset_s - e.onset_s, 0.0))], (y + 0.15, 0.7),
                           edgecolor=self.colour(e.label), linewidth=1.2, **style)  # fmt: skip
            if not matched and with_reference:
                crosses.append((e.onset_s, y + 0.5))

        crosses: list[tuple[float, float]] = []  # at the onsets of missed and false alarms
        for i, e in enumerate(self.events):
            draw(e, lane_y(e.label, False), i in self.est_hit)
        for i, e in enumerate(self.reference or []):
            draw(e, lane_y(e.label, True), i in self.ref_hit)
        if crosses:  # visible on an event a few pixels wide, where the hatching is not
            ax.plot(*zip(*crosses), **_CROSS)
        ticks = []
        for label in self.lanes:
            ticks.append((lane_y(label, False) + 0.5, f"{label} detected" if with_reference else label))
            if with_reference:
                ticks.append((lane_y(label, True) + 0.5, f"{label} reference"))
        ax.set_yticks([t for t, _ in ticks], [name for _, name in ticks])
        for y in range(step, top, step):
            ax.axhline(y, color="0.75", linewidth=0.8)
        ax.set_ylim(0, top)
        ax.tick_params(axis="y", length=0)
        if with_reference:
            handles = [
                Patch(facecolor="0.45", edgecolor="0.45"),
                (Patch(facecolor="white", edgecolor="0.45", hatch="xxx"),
                 Line2D([], [], **_CROSS)),
            ]
            ax.legend(handles=handles, labels=["matched", "missed /\nfalse alarm"], loc="upper left",
                      bbox_to_anchor=(1.005, 1.0), borderaxespad=0.0, frameon=False,
                      title=f"onset ±{1000 * self.collar_s:.0f} ms")  # fmt: skip

    def _time_axis(self, ax: Axes) -> None:
        from matplotlib.ticker import AutoMinorLocator, FuncFormatter, MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(nbins=13, steps=[1, 2, 5, 10]))
        ax.xaxis.set_minor_locator(AutoMinorLocator())
        if self.minutes:
            ax.xaxis.set_major_formatter(FuncFormatter(lambda t, _: clock(t)))
            ax.set_xlabel("time (m:ss)")
        else:
            ax.set_xlabel("time (s)")
        for axis in ax.figure.axes[1:]:  # not over the spectrogram, where lines would look like clicks
            axis.grid(True, axis="x", which="major", color="0.8", linewidth=0.6)


# ---------------------------------------------------------------------------------------------------- the page

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1em 2em;color:#222;line-height:1.4}
img.panel{display:block;max-width:100%;height:auto;margin:0.4em 0;cursor:crosshair}
table{border-collapse:collapse;margin:0.5em 0 1em}
td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right;font-variant-numeric:tabular-nums}
td.l,th.l{text-align:left}
tr.hit td.mark{color:#176b2c}tr.missed td.mark,tr.false-alarm td.mark{color:#b3261e;font-weight:600}
tr.missed,tr.false-alarm{background:#fdf1f0}
.player{position:sticky;top:0;background:#fff;padding:0.4em 0;z-index:1;display:flex;gap:1em;align-items:center}
.player span{color:#666;font-size:90%}
section.file{border-top:2px solid #ccc;margin-top:1.5em}
.f{font-weight:600}
#skipped{background:#fff8e1;padding:0.3em 1em;border:1px solid #f0d98c}
"""

_SCRIPT = """
function seek(id, t) {
  const section = document.getElementById(id);
  const audio = section && section.querySelector('audio');
  if (!audio || !isFinite(t)) return;
  audio.addEventListener('seeked', () => { audio.dataset.at = audio.currentTime.toFixed(3); }, {once: true});
  const go = () => { audio.currentTime = t; audio.play().catch(() => {}); };
  if (audio.readyState >= 1) { go(); return; }
  audio.addEventListener('loadedmetadata', go, {once: true});
  audio.preload = 'auto';
  audio.load();
}
function follow(hash, scroll) {
  const m = /^#(f[0-9]+)@([0-9.]+)$/.exec(hash);
  if (!m) return;
  seek(m[1], parseFloat(m[2]));
  if (scroll) document.getElementById(m[1]).scrollIntoView();
}
document.addEventListener('click', (ev) => {
  const link = ev.target.closest('a.seek');
  if (link) {
    ev.preventDefault();
    history.replaceState(null, '', link.getAttribute('href'));
    follow(link.getAttribute('href'));
    return;
  }
  const img = ev.target.closest('img.panel');
  if (!img) return;
  const box = img.getBoundingClientRect(), d = img.dataset;
  const x = ((ev.clientX - box.left) / box.width - d.x0) / (d.x1 - d.x0);
  if (x < 0 || x > 1) return;
  const hash = '#' + d.file + '@' + (parseFloat(d.start) + x * (d.stop - d.start)).toFixed(3);
  history.replaceState(null, '', hash);
  follow(hash);
});
window.addEventListener('hashchange', () => follow(location.hash, true));
follow(location.hash, true);
"""


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100.0 * value:.1f} %"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _event_rows(index: int, drawn: DrawnFile) -> list[str]:
    """Table rows of a file's events: with a reference, each hit beside the reference event it matches, then the
    missed and the false alarms, in order of onset; else the detected events."""
    esc = html.escape
    minutes = drawn.duration_s >= 60.0

    def when(t: float) -> str:
        return _time_text(t, minutes)

    def seek(t: float) -> str:
        return f'<a class="seek" href="#f{index}@{t:.3f}">{when(t)}</a>'

    def score(e: Event) -> str:
        return "" if math.isnan(e.score) else f"{e.score:.3f}"

    if drawn.match is None or drawn.reference is None:
        return [f'<tr><td class="l">{esc(e.label)}</td><td>{seek(e.onset_s)}</td><td>{when(e.offset_s)}</td>'
                f"<td>{score(e)}</td></tr>" for e in drawn.events]  # fmt: skip
    ref, est = drawn.reference, drawn.events
    rows: list[tuple[float, str]] = []
    paired_ref = {r: s for r, s in drawn.match.hits}
    paired_est = set(paired_ref.values())
    blank = "<td></td><td></td>"
    for r, e in enumerate(ref):
        if r in paired_ref:
            d = est[paired_ref[r]]
            cells = f"<td>{seek(e.onset_s)}</td><td>{when(e.offset_s)}</td><td>{seek(d.onset_s)}</td><td>{when(d.offset_s)}</td><td>{score(d)}</td>"
            rows.append((min(e.onset_s, d.onset_s), f'<tr class="hit"><td class="mark l">✓ hit</td><td class="l">{esc(e.label)}</td>{cells}</tr>'))
        else:
            cells = f"<td>{seek(e.onset_s)}</td><td>{when(e.offset_s)}</td>{blank}<td></td>"
            rows.append((e.onset_s, f'<tr class="missed"><td class="mark l">✗ missed</td><td class="l">{esc(e.label)}</td>{cells}</tr>'))
    for s, d in enumerate(est):
        if s not in paired_est:
            cells = f"{blank}<td>{seek(d.onset_s)}</td><td>{when(d.offset_s)}</td><td>{score(d)}</td>"
            rows.append((d.onset_s, f'<tr class="false-alarm"><td class="mark l">✗ false alarm</td><td class="l">{esc(d.label)}</td>{cells}</tr>'))
    return [row for _, row in sorted(rows, key=lambda pair: pair[0])]


def _event_header(drawn: DrawnFile) -> str:
    unit = "m:ss" if drawn.duration_s >= 60.0 else "s"
    if drawn.match is None:
        return f'<tr><th class="l">class</th><th>onset ({unit})</th><th>offset ({unit})</th><th>score</th></tr>'
    return (f'<tr><th class="l">result</th><th class="l">class</th><th>reference onset ({unit})</th><th>reference '
            f'offset</th><th>detected onset ({unit})</th><th>detected offset</th><th>score</th></tr>')  # fmt: skip


def _time_text(seconds: float, minutes: bool) -> str:
    """``12.345`` (seconds), or ``1:02.345`` where ``minutes``."""
    if not minutes:
        return f"{seconds:.3f}"
    whole, millis = divmod(round(seconds * 1000), 1000)
    return f"{clock(whole)}.{millis:03d}"


def _page(pages: DetectionPages, result: DetectionResult) -> str:
    """The HTML of ``index.html``."""
    esc = html.escape
    with_reference = pages.reference is not None
    listed = [d for d in pages.drawn if d.match is not None]
    n_events = sum(len(d.events) for d in pages.drawn)
    skipped = result.skipped
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', GENERATOR,
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>thce detect: {_plural(len(pages.drawn), 'file')}</title>", f"<style>{_STYLE}</style>",
        "</head><body>",
        f"<h1>Detection: {_plural(n_events, 'event')} in {_plural(len(pages.drawn), 'file')}</h1>",
        f'<p id="counts">{_plural(len(pages.drawn), "file")} drawn'
        + (f', <a href="#skipped"><b>{_plural(len(skipped), "file")} skipped</b></a> (could not be read)' if skipped
           else ", none skipped") + ".</p>",
        "<p>Thresholds: " + esc(", ".join(f"{k} {v:.6g}" for k, v in result.thresholds.items())) + "</p>",
    ]  # fmt: skip
    if with_reference:
        assert pages.reference is not None
        rates = pooled_rates([d.match for d in listed if d.match is not None])
        source = esc(pages.reference.source or "the reference")
        parts.append(
            f'<p id="reference">Reference <code>{source}</code> lists {len(listed)} of {len(pages.drawn)} drawn '
            f'file(s). Event-based F-score over them (onset only, {1000 * pages.collar_s:.0f} ms collar, as '
            f'<code>thce evaluate-events</code>): <span class="f" id="total-f">{_percent(rates["f_score"])}</span>; '
            f'error rate {_percent(rates["error_rate"])}.</p>'
        )
    head = '<tr><th class="l">file</th><th>length</th><th>detected</th>'
    head += "<th>reference</th><th>hits</th><th>missed</th><th>false alarms</th><th>event F</th>" if with_reference else ""
    parts += ['<table id="files">', head + "</tr>"]
    for i, d in enumerate(pages.drawn):
        row = f'<tr><td class="l"><a href="#f{i}">{esc(d.path)}</a></td><td>{clock(d.duration_s)}</td><td>{len(d.events)}</td>'
        if d.match is not None:
            hits = len(d.match.hits)
            row += (f"<td>{d.match.n_ref}</td><td>{hits}</td><td>{d.match.n_ref - hits}</td><td>{d.match.n_sys - hits}</td>"
                    f'<td class="f">{_percent(pooled_rates([d.match])["f_score"])}</td>')  # fmt: skip
        elif with_reference:
            row += '<td class="l" colspan="5">not in the reference</td>'
        parts.append(row + "</tr>")
    parts.append("</table>")
    if skipped:
        parts += [f'<section id="skipped"><h2>Skipped: {_plural(len(skipped), "file")} could not be read</h2>', "<table>"]
        parts += [f'<tr><td class="l">{esc(s["file"])}</td><td class="l">{esc(s["reason"])}</td></tr>' for s in skipped]
        parts.append("</table></section>")
    for i, d in enumerate(pages.drawn):
        relative = os.path.relpath(os.path.abspath(d.path), os.path.abspath(pages.folder))
        src = urllib.parse.quote(Path(relative).as_posix())
        facts = [f"{clock(d.duration_s)} ({d.duration_s:.1f} s)", f"{_plural(len(d.events), 'event')} detected"]
        if d.match is not None:
            hits = len(d.match.hits)
            facts.append(f"{d.match.n_ref} in the reference: {hits} hit, {d.match.n_ref - hits} missed, "
                         f"{d.match.n_sys - hits} false alarm(s)")  # fmt: skip
            facts.append(f'<span class="f">event F {_percent(pooled_rates([d.match])["f_score"])}</span>')
        elif with_reference:
            facts.append("not in the reference")
        parts += [
            f'<section class="file" id="f{i}"><h2>{esc(d.path)}</h2>', f"<p>{' · '.join(facts)}</p>",
            f'<div class="player"><audio controls preload="none" src="{esc(src)}"></audio>'
            "<span>click a time in the table, or a point in a picture, to play from there</span></div>",
        ]  # fmt: skip
        for p in d.panels:
            parts.append(
                f'<img class="panel" loading="lazy" src="{esc(urllib.parse.quote(p.name))}" width="{p.width_px}" '
                f'height="{p.height_px}" alt="{esc(d.path)} {clock(p.start_s)}-{clock(p.stop_s)}" data-file="f{i}" '
                f'data-start="{p.start_s:.3f}" data-stop="{p.stop_s:.3f}" data-x0="{p.axis_x0:.5f}" '
                f'data-x1="{p.axis_x1:.5f}">'
            )
        parts += ['<table class="events">', _event_header(d), *_event_rows(i, d), "</table></section>"]
    parts += [f"<script>{_SCRIPT}</script>", "</body></html>"]
    return "\n".join(parts) + "\n"
