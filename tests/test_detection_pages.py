"""Detection pages (``thce detect --plots``): long files as panels, hit / missed / false alarm marks and each file's
event F from thce's event matching, skipped files counted at the top, the player seeking to an event, and the page
as headless chromium renders it (issue 32, must-have 7)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from thce.detection.detect import FileScores, detect_in_scores
from thce.detection.events import DetectionResult, Event, EventList
from thce.detection.metrics import evaluate_events
from thce.detection.pages import check_plots_dir, panel_spans, picture_names
from thce.errors import ConfigError, OutputError

SR = 16000
CLASSES = ("dog", "baby", "gun")
TONE_HZ = {"dog": 900, "baby": 2500, "gun": 5000}


def recording(path: Path, seconds: float, events: list[tuple[str, float, float]]) -> Path:
    """Quiet noise with a tone per event (its class's pitch)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.01 * rng.standard_normal(t.size)
    for label, on, off in events:
        inside = (t >= on) & (t < off)
        x[inside] += 0.3 * np.sin(2 * np.pi * TONE_HZ[label] * t[inside])
    sf.write(path, x.astype(np.float32), SR, subtype="PCM_16")
    return path


def detection(path: Path, seconds: float, detected: list[tuple[str, float, float]]):
    """What ``thce detect`` would find if its windows (1 s, hop 0.25 s) scored 0.9 where they overlap one of
    ``detected`` and 0.1 elsewhere (threshold 0.5)."""
    hop, window = 0.25, 1.0
    starts = np.arange(int((seconds - window) / hop) + 1) * hop
    scores = np.full((starts.size, len(CLASSES)), 0.1, dtype=np.float32)
    for label, on, off in detected:
        scores[(starts < off) & (starts + window > on), CLASSES.index(label)] = 0.9
    found = FileScores(str(path), scores, CLASSES, hop, window, (0.0, window), seconds)
    return detect_in_scores(found, np.full(len(CLASSES), 0.5), median_filter_s=0.0)


TRUTH = [("dog", 2.0, 3.0), ("baby", 6.0, 8.0), ("gun", 11.0, 11.5)]
FOUND = [("dog", 2.1, 3.0), ("baby", 6.2, 8.0), ("dog", 14.0, 15.0)]  # gun missed, a dog false alarm


def write_pages(tmp_path: Path, *, reference: bool = True, panel_s: float = 120.0):
    """Pages of a 20 s file with :data:`TRUTH` and :data:`FOUND`, a 50 s file the reference does not list, and a
    skipped file."""
    audio = tmp_path / "audio"
    audio.mkdir(exist_ok=True)
    short = recording(audio / "street.wav", 20.0, TRUTH)
    long = recording(audio / "night.wav", 50.0, [("dog", 30.0, 31.0)])
    ref = EventList(("street.wav",), tuple(Event("street.wav", on, off, label) for label, on, off in TRUTH), "ref.txt")
    pages = check_plots_dir(tmp_path / "pages", [short, long], reference=ref if reference else None, panel_s=panel_s)
    files = [detection(short, 20.0, FOUND), detection(long, 50.0, [("dog", 30.0, 31.0)])]
    for found in files:
        pages.add(found)
    result = DetectionResult(
        files=[{"file": f.scores.path, "duration_s": f.scores.duration_s, "windows": 1} for f in files],
        events=[e for f in files for e in f.events], thresholds=dict.fromkeys(CLASSES, 0.5),
        skipped=[{"file": str(audio / "broken.wav"), "reason": "cannot read as audio"}],
    )  # fmt: skip
    return pages.finish(result), files, ref


@pytest.fixture(scope="module")
def with_reference(tmp_path_factory):
    """``(index.html, detections, reference)`` of :func:`write_pages` with the reference."""
    return write_pages(tmp_path_factory.mktemp("pages"))


def test_panel_spans_and_names():
    assert panel_spans(20.0) == [(0.0, 20.0)]
    assert panel_spans(120.0) == [(0.0, 120.0)]
    assert panel_spans(21 * 60.0) == [(120.0 * k, 120.0 * (k + 1)) for k in range(11)]  # the last one past the end
    assert picture_names("a/rec.flac", 20.0) == ["rec.png"]
    assert picture_names("rec.wav", 250.0) == ["rec.01.png", "rec.02.png", "rec.03.png"]
    assert picture_names("rec.wav", 1300 * 120.0)[0] == "rec.0001.png"


def test_page_marks_hits_misses_false_alarms_and_file_f(with_reference):
    index, files, ref = with_reference
    page = index.read_text()
    # the F of thce evaluate-events on the same lists: 2 hits of 3 reference and 3 detected events
    estimated = EventList(("street.wav",), tuple(e._replace(file="street.wav") for e in files[0].events))
    f_score = evaluate_events(ref, estimated)["overall"]["f_score"]
    assert f_score == pytest.approx(2 * 2 / (3 + 3))
    files_table = page[page.index('<table id="files">') : page.index("</table>")]
    assert f'<td class="f">{100 * f_score:.1f} %</td>' in files_table
    assert "not in the reference" in files_table  # night.wav
    assert f'id="total-f">{100 * f_score:.1f} %<' in page  # over the listed files only
    street = page[page.index('id="f0"') : page.index('id="f1"')]
    assert street.count('<tr class="hit">') == 2
    assert street.count('<tr class="missed">') == 1 and street.count('<tr class="false-alarm">') == 1
    rows = re.findall(r'<tr class="(\w[\w-]*)"><td class="mark l">[^<]+</td><td class="l">(\w+)</td>', street)
    assert rows == [("hit", "dog"), ("hit", "baby"), ("missed", "gun"), ("false-alarm", "dog")]  # by onset
    assert 'href="#f0@11.000"' in street  # the missed gun's onset seeks the player
    # skipped files counted at the top, listed before the first file
    assert page.index("1 file skipped") < page.index('id="skipped"') < page.index('<section class="file"')


def test_long_file_drawn_as_panels_of_one_scale(tmp_path):
    from matplotlib.image import imread

    index, _, _ = write_pages(tmp_path, reference=False, panel_s=20.0)
    pages = index.parent
    assert sorted(p.name for p in pages.iterdir()) == ["index.html", "night.01.png", "night.02.png", "night.03.png",
                                                       "street.png"]  # fmt: skip
    panels = [imread(pages / f"night.{k:02d}.png") for k in (1, 2, 3)]
    assert len({p.shape for p in panels}) == 1 and panels[0].shape[1] == 1248
    page = index.read_text()
    images = re.findall(r'<img class="panel"[^>]*>', page)
    assert len(images) == 4
    x0, x1 = (float(v) for v in re.search(r'data-x0="([\d.]+)" data-x1="([\d.]+)"', images[1]).groups())
    assert 0.02 < x0 < 0.3 and 0.7 < x1 < 0.98  # the time axis inside the picture, the legends to its right
    assert 'data-start="40.000" data-stop="60.000"' in images[3]  # the last panel at the same scale
    # without a reference: the detected events only, no hit / miss columns
    assert "event F" not in page and '<th class="l">result</th>' not in page


def test_picture_names_unique_and_a_users_png_kept(tmp_path):
    a, b = tmp_path / "x" / "rec.wav", tmp_path / "y" / "rec.01.wav"
    for path, seconds in ((a, 130.0), (b, 5.0)):
        path.parent.mkdir()
        recording(path, seconds, [])
    with pytest.raises(ConfigError, match=r"would both be drawn as .*rec\.01\.png"):
        check_plots_dir(tmp_path / "pages", [a, b])
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "rec.02.png").write_text("my notes")
    with pytest.raises(OutputError, match=r"rec\.02\.png: exists and is not a picture thce drew"):
        check_plots_dir(tmp_path / "pages", [a])


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def test_page_in_headless_chromium(tmp_path, with_reference):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium here (apt-get install chromium): the page was not opened in a headless browser")
    from matplotlib.image import imread

    index = with_reference[0]
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
              "--autoplay-policy=no-user-gesture-required", "--virtual-time-budget=8000"]  # fmt: skip
    shot = tmp_path / "shot.png"
    done = subprocess.run([*common, f"--screenshot={shot}", "--window-size=1400,1800", index.as_uri()],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    assert pixels.shape == (1800, 1400, 3)
    assert pixels.std() > 0.05 and (pixels < 0.5).mean() > 0.005  # not blank: text, pictures
    # the page opened at the missed gun (#f0@11): the player seeks there; the marks and F are in the page's DOM
    done = subprocess.run([*common, "--dump-dom", index.as_uri() + "#f0@11.000"], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert "✓ hit" in dom and "✗ missed" in dom and "✗ false alarm" in dom and 'id="total-f">66.7 %' in dom
    at = re.search(r'<audio[^>]*data-at="([0-9.]+)"', dom)  # where the player was once seeked (it plays on at once)
    assert at and 11.0 <= float(at.group(1)) < 11.05, re.findall(r"<audio[^>]*>", dom)
