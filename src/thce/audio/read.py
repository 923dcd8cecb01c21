"""Audio files in: one diagnosis of a bad file, decoding, streaming, resampling (data flow: audio -> features ->
model -> loss -> report; and audio -> detect -> events).

- :func:`audio_info` opens a file's header (no decoding) and :func:`probe_audio` says what is wrong with it; every
  reader here (:func:`load_audio`, :func:`stream_audio`) rejects a bad file with the same words, so a file gets one
  diagnosis wherever it is opened (data import, feature computation, mixing, detection). A problem is an
  :class:`~thce.errors.AudioError`, ``"<path>: <problem>"``, whose ``problem`` lists of skipped clips show.
- :func:`load_audio` reads a clip: any file libsndfile supports (wav, flac, ogg, mp3, ...) as mono float32 at the
  target rate, padded with zeros or cropped to a fixed duration (the paper's clips are 10 s).
- :func:`stream_audio` reads a recording of any length in blocks, resampled with :class:`StreamResampler` so that
  the blocks join into what :func:`load_audio` returns for the whole file.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import soundfile as sf
import torch

from thce.audio.wav import Riff, scan_riff
from thce.errors import AudioError, ConfigError

#: Extra seconds read beyond ``duration_s`` so that resampling near the crop point sees real signal, not the file end.
_READ_MARGIN_S = 0.05
#: libsndfile's frame count for streams of unknown length (SF_COUNT_MAX).
_UNKNOWN_FRAMES = 2**62

#: Extensions :func:`load_audio` is documented and tested for (libsndfile reads more, e.g. aiff, au, caf, w64).
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")
#: Further extensions libsndfile reads (not in the test matrix): still audio where a file name must be recognised.
OTHER_SOUNDFILE_EXTENSIONS: tuple[str, ...] = (".aif", ".aiff", ".au", ".caf", ".w64")

#: Peak below which a clip counts as digital silence: one step of 16-bit PCM (quieter audio is all zeros in 16 bits).
SILENCE_PEAK = 2.0**-15


@dataclass(frozen=True)
class ClipChecks:
    """What :func:`load_audio` rejects besides unreadable files (each rejection is an
    :class:`~thce.errors.AudioError` naming the file and the problem, so that a caller can skip the clip and list it).

    Attributes:
        min_duration_fraction: a file shorter than this fraction of ``duration_s`` is rejected (mostly padding).
        max_duration_factor: a file longer than this many times ``duration_s`` is rejected (likely not a clip of this
            data set, e.g. a whole video instead of its 10 s segment). ``None``: any length (the first ``duration_s``
            is used).
        reject_silence: reject a clip whose read part is digital silence (peak below :data:`SILENCE_PEAK`).
    """

    min_duration_fraction: float | None = 0.1
    max_duration_factor: float | None = 10.0
    reject_silence: bool = True

    def __post_init__(self) -> None:
        for name in ("min_duration_fraction", "max_duration_factor"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0):
                raise ConfigError(f"ClipChecks.{name}: expected None or a non-negative number, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says: ``frames`` at ``sample_rate_hz`` (the file's rate), ``channels``."""

    path: str
    sample_rate_hz: int
    frames: int
    channels: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate_hz


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Open ``path`` as audio, header only (no decoding).

    Raises:
        AudioError: missing, not a file, a WAV with a structural problem (truncated data chunk, unsupported codec),
            not readable by libsndfile (why, in words: unknown format, corrupt, ...), or without samples.
    """
    path = os.fspath(path)
    _check_file(path)
    try:
        info = sf.info(path)
    except Exception as exc:  # libsndfile raises several types for unknown formats and truncated headers
        raise AudioError(path, f"cannot read as audio: {_diagnose(path, exc)}") from exc
    if info.frames == 0:
        raise AudioError(path, "audio file is empty (0 samples)")
    return AudioInfo(path, int(info.samplerate), int(info.frames), int(info.channels))


def probe_audio(path: str | os.PathLike) -> str | None:
    """:func:`audio_info`'s diagnosis in words (``None``: the file opens and has samples)."""
    try:
        audio_info(path)
    except AudioError as error:
        return error.problem
    return None


def _check_file(path: str) -> Riff | None:
    """What every reader checks first: ``path`` is a file and, if a WAV, structurally sound. Returns its RIFF
    headers (``None``: not a WAV); raises :class:`AudioError` otherwise."""
    if not os.path.isfile(path):
        raise AudioError(path, "audio file not found" if not os.path.exists(path) else "not a file")
    riff = scan_riff(path)
    if riff is not None and riff.problem:
        raise AudioError(path, riff.problem)
    return riff


def load_audio(
    path: str | os.PathLike,
    *,
    sample_rate_hz: int = 16000,
    duration_s: float | None = 10.0,
    offset_s: float = 0.0,
    checks: ClipChecks | None = None,
) -> np.ndarray:
    """Read an audio file as mono float32 at ``sample_rate_hz``.

    Any format libsndfile reads (wav, flac, ogg/vorbis/opus, mp3, aiff, ...), any sample rate, bit depth and channel
    count. Channels are averaged; a different file rate is converted with :func:`scipy.signal.resample_poly`
    (polyphase, ``up/down`` reduced by their gcd, Kaiser-windowed FIR); the result is padded with zeros or cropped to
    ``round(duration_s * sample_rate_hz)`` samples (``duration_s=None`` keeps the full length). Only ``duration_s``
    (plus a small margin) from ``offset_s`` on is read, so a long file costs no more than a short one.

    Args:
        path: audio file.
        sample_rate_hz: output rate.
        duration_s: output length in seconds, or ``None`` for the whole file (from ``offset_s``).
        offset_s: where to start reading in the file, in seconds.
        checks: optional extra rejections (too short, too long, digital silence), see :class:`ClipChecks`.

    Returns:
        float32 array of shape ``(samples,)``, values in [-1, 1] for integer formats.

    Raises:
        AudioError: the file is missing, empty, truncated, not audio or in an unsupported codec, holds NaN/infinite
            samples, or fails one of ``checks`` (:func:`audio_info`'s words for a bad header).
        ConfigError: ``sample_rate_hz`` or ``duration_s`` is not positive, or ``offset_s`` is negative.

    >>> import tempfile, pathlib, soundfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     wav = pathlib.Path(tmp) / "a.wav"
    ...     soundfile.write(wav, np.zeros((8000, 2), dtype="float32"), 8000)  # 1 s stereo at 8 kHz
    ...     load_audio(wav, sample_rate_hz=16000, duration_s=2.0).shape
    (32000,)
    """
    if sample_rate_hz <= 0:
        raise ConfigError(f"sample_rate_hz must be positive, got {sample_rate_hz}")
    if duration_s is not None and not duration_s > 0:
        raise ConfigError(f"duration_s must be positive or None, got {duration_s}")
    if not offset_s >= 0:
        raise ConfigError(f"offset_s must be >= 0, got {offset_s}")
    path = os.fspath(path)
    riff = _check_file(path)
    try:
        if riff is not None and riff.is_pcm16:
            # the common case, read directly: 16-bit PCM WAV (libsndfile's int->float conversion is the slow part)
            data, file_rate, file_frames = _read_pcm16_wav(path, riff, offset_s, duration_s)
            start = round(offset_s * file_rate)
            frames = data.shape[0] if duration_s is not None else -1
            if checks is not None and duration_s is not None:
                _check_length(path, file_frames / file_rate, duration_s, checks)
        else:
            data, file_rate, file_frames, start, frames = _read_libsndfile(path, offset_s, duration_s, checks)
    except AudioError:
        raise
    except Exception as exc:  # libsndfile reports unknown formats, truncated files, ... in several exception types
        raise AudioError(path, f"cannot read as audio: {_diagnose(path, exc)}") from exc
    if data.shape[0] == 0:
        raise AudioError(path, "audio file is empty (0 samples)")
    if 0 < file_frames < _UNKNOWN_FRAMES:
        expected = file_frames - start if frames < 0 else min(frames, file_frames - start)
        _check_decoded(path, expected, data.shape[0], start, file_frames, file_rate)
    mono = mean_channels(data)
    if not np.isfinite(mono).all():  # a NaN/inf in any channel survives the channel mean
        raise AudioError(path, "audio contains NaN or infinite samples")
    if checks is not None and checks.reject_silence and float(np.abs(mono).max()) < SILENCE_PEAK:
        raise AudioError(
            path, f"digital silence (peak below {SILENCE_PEAK:.1e} in the {data.shape[0] / file_rate:.2f} s read)"
        )
    if file_rate != sample_rate_hz:
        from scipy.signal import resample_poly  # imported here: scipy.signal takes most of a second to import

        g = math.gcd(file_rate, sample_rate_hz)
        mono = resample_poly(mono, sample_rate_hz // g, file_rate // g)
    mono = np.asarray(mono, dtype=np.float32)
    if duration_s is not None:
        mono = fit_length(mono, round(duration_s * sample_rate_hz))
    return np.ascontiguousarray(mono)


def _read_libsndfile(
    path: str, offset_s: float, duration_s: float | None, checks: ClipChecks | None
) -> tuple[np.ndarray, int, int, int, int]:
    """Read with libsndfile: ``(float32 (frames, channels), file rate, file frames, start frame, frames asked or
    -1)``; libsndfile's exceptions propagate."""
    with sf.SoundFile(path) as handle:
        file_rate = int(handle.samplerate)
        file_frames = int(handle.frames)
        start = round(offset_s * file_rate)
        if checks is not None and duration_s is not None and 0 < file_frames < _UNKNOWN_FRAMES:
            _check_length(path, file_frames / file_rate, duration_s, checks)
        if start:
            if start >= file_frames:
                raise _past_the_end(path, offset_s, file_frames / file_rate)
            handle.seek(start)
        frames = -1 if duration_s is None else math.ceil((duration_s + _READ_MARGIN_S) * file_rate)
        data = handle.read(frames=frames, dtype="float32", always_2d=True)
    return data, file_rate, file_frames, start, frames


def _read_pcm16_wav(path: str, riff: Riff, offset_s: float, duration_s: float | None) -> tuple[np.ndarray, int, int]:
    """Samples of a 16-bit PCM WAV read straight from its data chunk (what libsndfile does, without its slower float
    conversion): ``(float32 (frames, channels) scaled by 1/32768 like libsndfile, file rate, file frames)``."""
    rate, channels, align = riff.rate, riff.channels, riff.block_align
    file_frames = riff.data_bytes // align
    start = round(offset_s * rate)
    if start and start >= file_frames:
        raise _past_the_end(path, offset_s, file_frames / rate)
    frames = file_frames - start
    if duration_s is not None:
        frames = min(frames, math.ceil((duration_s + _READ_MARGIN_S) * rate))
    raw = np.fromfile(path, dtype="<i2", count=frames * channels, offset=riff.data_offset + start * align)
    raw = raw[: (raw.size // channels) * channels].reshape(-1, channels)
    return torch.from_numpy(raw).to(torch.float32).mul_(1.0 / 32768.0).numpy(), rate, file_frames


def _past_the_end(path: str, offset_s: float, file_s: float) -> AudioError:
    return AudioError(path, f"offset {offset_s:.3f} s is past the end of the file ({file_s:.3f} s)")


def _check_length(path: str, file_s: float, duration_s: float, checks: ClipChecks) -> None:
    """Raise :class:`AudioError` when a file of ``file_s`` seconds is far shorter/longer than ``duration_s``."""
    if checks.min_duration_fraction is not None and file_s < checks.min_duration_fraction * duration_s:
        raise AudioError(
            path,
            f"far shorter than the clip duration ({file_s:.2f} s, below "
            f"{checks.min_duration_fraction:g} x {duration_s:g} s); it would be mostly padding"
        )
    if checks.max_duration_factor is not None and file_s > checks.max_duration_factor * duration_s:
        raise AudioError(
            path,
            f"far longer than the clip duration ({file_s:.1f} s, above {checks.max_duration_factor:g} x "
            f"{duration_s:g} s); probably not a clip of this data set (cut it, or raise max_duration_factor)"
        )


def _diagnose(path: str, exc: Exception) -> str:
    """Say why libsndfile could not read ``path``, in words a user can act on."""
    message = str(exc).replace(f"Error opening {path!r}: ", "").strip()
    try:
        size = os.path.getsize(path)
    except OSError:
        size = -1
    if size == 0:
        return "empty file (0 bytes)"
    ext = os.path.splitext(path)[1].lower()
    if "not recognised" in message.lower() or "unknown format" in message.lower():
        if ext in (".m4a", ".mp4", ".aac", ".wma", ".amr", ".ape", ".webm", ".mka", ".3gp"):
            return (
                f"unsupported format {ext!r} (libsndfile reads wav, flac, ogg, mp3, aiff, ...; convert it, "
                "e.g. ffmpeg -i IN OUT.flac)"
            )
        return f"not an audio file in a format libsndfile knows (libsndfile: {message})"
    if "malformed" in message.lower() or "lost sync" in message.lower() or "unexpected end" in message.lower():
        return f"corrupt or truncated file (libsndfile: {message})"
    return f"libsndfile: {message}"


def mean_channels(data: np.ndarray) -> np.ndarray:
    """``(samples, channels)`` -> ``(samples,)`` mean; a loop over channels (numpy's reduce over a short last axis is
    several times slower than the file read)."""
    if data.shape[1] == 1:
        return data[:, 0]
    mono = data[:, 0].copy()
    for channel in range(1, data.shape[1]):
        mono += data[:, channel]
    mono *= np.float32(1.0 / data.shape[1])
    return mono


def fit_length(samples: np.ndarray, length: int) -> np.ndarray:
    """Crop or zero-pad the last axis of ``samples`` to ``length``."""
    have = samples.shape[-1]
    if have >= length:
        return samples[..., :length]
    pad = [(0, 0)] * (samples.ndim - 1) + [(0, length - have)]
    return np.pad(samples, pad)


# ----------------------------------------------------------------------------------------------------------------------
# Long recordings in blocks


class StreamResampler:
    """Chunk-consistent polyphase resampling: feeding blocks to :meth:`push` and calling :meth:`finish` gives the
    same samples as ``scipy.signal.resample_poly(whole, up, down)`` (to float rounding).

    Each call resamples a segment that starts on the polyphase grid (a multiple of ``down`` input samples) and
    reaches ``margin`` input samples (the filter's half length, ``10 * max(up, down) / up``, plus slack) beyond
    every output it returns; segments overlap by the margin, and the zero padding ``resample_poly`` applies at a
    segment's edges is only used at the true start and end of the signal. Memory: one block plus two margins.

    >>> from scipy.signal import resample_poly
    >>> x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    >>> r = StreamResampler(2, 3)
    >>> y = np.concatenate([r.push(x[i:i + 77]) for i in range(0, 1000, 77)] + [r.finish()])
    >>> bool(np.allclose(y, resample_poly(x, 2, 3), atol=1e-6)), y.shape
    (True, (667,))
    """

    def __init__(self, up: int, down: int) -> None:
        g = math.gcd(up, down)
        self.up, self.down = up // g, down // g
        self.margin = -(-10 * max(self.up, self.down) // self.up) + 2  # input samples the filter reaches, + slack
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # input index of _buf[0]
        self._n_in = 0  # input samples pushed so far
        self._next_out = 0  # output index of the next sample to return

    def push(self, block: np.ndarray) -> np.ndarray:
        """Add input samples ``(n,)``; return the output samples that no later input can change."""
        block = np.asarray(block, dtype=np.float32)
        self._buf = np.concatenate([self._buf, block]) if self._buf.size else block
        self._n_in += block.size
        ready = (self._n_in - self.margin - 1) * self.up // self.down  # outputs whose filter support is all in
        return self._emit(max(ready, self._next_out), final=False)

    def finish(self) -> np.ndarray:
        """The remaining output, up to ``ceil(total_in * up / down)`` samples (the end zero-padded as scipy does)."""
        return self._emit(-(-self._n_in * self.up // self.down), final=True)

    def _emit(self, stop: int, *, final: bool) -> np.ndarray:
        from scipy.signal import resample_poly  # ~1 s to import; only needed when rates differ

        if stop <= self._next_out:
            return np.zeros(0, dtype=np.float32)
        lo = self._grid_floor(self._next_out)
        hi = self._n_in if final else min(self._n_in, -(-stop * self.down // self.up) + self.margin)
        segment = self._buf[lo - self._buf_start : hi - self._buf_start]
        resampled = resample_poly(segment, self.up, self.down)
        first = lo * self.up // self.down  # output index of resampled[0] (exact: lo is a multiple of down)
        out = np.asarray(resampled[self._next_out - first : stop - first], dtype=np.float32)
        self._next_out = stop
        keep_from = self._grid_floor(stop)
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start :]
            self._buf_start = keep_from
        return out

    def _grid_floor(self, out_index: int) -> int:
        """First input sample of a segment computing output ``out_index``: on the grid, ``margin`` before it."""
        lo = out_index * self.down // self.up - self.margin
        return max(0, lo // self.down * self.down)


def stream_audio(
    path: str | os.PathLike, *, sample_rate_hz: int, block_s: float = 10.0, info: AudioInfo | None = None
) -> Iterator[np.ndarray]:
    """Mono float32 blocks ``(n,)`` of ``path`` at ``sample_rate_hz``; their concatenation equals
    :func:`load_audio` ``(path, sample_rate_hz=..., duration_s=None)`` (channels averaged, polyphase resampling) to
    float rounding. Reads ``block_s`` seconds of the file at a time (never the whole file).

    Args:
        info: the file's :func:`audio_info`, when the caller has it already.

    Raises:
        AudioError: as :func:`audio_info`, or NaN/infinite samples or a read failing part way (with the time).
    """
    info = info or audio_info(path)
    resampler = None if info.sample_rate_hz == sample_rate_hz else StreamResampler(sample_rate_hz, info.sample_rate_hz)
    block_frames = max(1, round(block_s * info.sample_rate_hz))
    done = 0
    try:
        with sf.SoundFile(info.path) as handle:
            while True:
                data = handle.read(frames=block_frames, dtype="float32", always_2d=True)
                if data.shape[0] == 0:
                    break
                mono = mean_channels(data)
                bad = np.flatnonzero(~np.isfinite(mono))
                if bad.size:
                    first_s = (done + int(bad[0])) / info.sample_rate_hz
                    raise AudioError(info.path, f"audio contains NaN or infinite samples (the first at {first_s:.3f} s)")
                done += data.shape[0]
                out = mono if resampler is None else resampler.push(mono)
                if out.size:
                    yield out
    except AudioError:
        raise
    except Exception as exc:  # a truncated or corrupt file fails mid-read: the words load_audio uses, and when
        where = f" after {done / info.sample_rate_hz:.1f} s" if done else ""
        raise AudioError(info.path, f"cannot read as audio{where}: {_diagnose(info.path, exc)}") from exc
    if done == 0:
        raise AudioError(info.path, "audio file is empty (0 samples)")
    if 0 < info.frames < _UNKNOWN_FRAMES:
        _check_decoded(info.path, info.frames, done, 0, info.frames, info.sample_rate_hz)
    if resampler is not None:
        tail = resampler.finish()
        if tail.size:
            yield tail


def _check_decoded(path: str, expected: int, decoded: int, start: int, file_frames: int, file_rate: int) -> None:
    """Raise AudioError when clearly fewer frames than ``expected`` (of the header's ``file_frames``) were decoded
    from frame ``start`` on: a truncated file whose decoder stops early instead of failing (e.g. FLAC)."""
    if expected - decoded > max(0.01 * expected, 0.05 * file_rate):
        raise AudioError(
            path,
            f"truncated file: its header promises {file_frames / file_rate:.2f} s but only "
            f"{(start + decoded) / file_rate:.2f} s can be decoded",
        )


def resampled_length(frames: int, file_rate_hz: int, sample_rate_hz: int) -> int:
    """Samples after resampling ``frames`` from ``file_rate_hz`` to ``sample_rate_hz`` (as resample_poly)."""
    g = math.gcd(file_rate_hz, sample_rate_hz)
    up, down = sample_rate_hz // g, file_rate_hz // g
    return -(-frames * up // down)
