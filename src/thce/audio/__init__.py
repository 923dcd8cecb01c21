"""Audio in, log-mel out: the first step of the data flow (audio -> features -> model -> loss -> report).

- :mod:`thce.audio.read`: one diagnosis of a bad file (:func:`audio_info`, :func:`probe_audio`), clips
  (:func:`load_audio`), long recordings in blocks (:func:`stream_audio`, :class:`StreamResampler`);
  :mod:`thce.audio.wav`: WAV chunk headers.
- :mod:`thce.audio.logmel`: the paper's features (:class:`LogMelConfig`, :class:`LogMel`).

The names below are the package's public interface, defined in those modules.
"""

from thce.audio.logmel import LogMel, LogMelConfig, mel_filterbank, mel_frequencies
from thce.audio.read import (
    AUDIO_EXTENSIONS,
    SILENCE_PEAK,
    AudioInfo,
    ClipChecks,
    StreamResampler,
    audio_info,
    load_audio,
    probe_audio,
    stream_audio,
)

__all__ = [
    "AUDIO_EXTENSIONS",
    "SILENCE_PEAK",
    "AudioInfo",
    "ClipChecks",
    "LogMel",
    "LogMelConfig",
    "StreamResampler",
    "audio_info",
    "load_audio",
    "mel_filterbank",
    "mel_frequencies",
    "probe_audio",
    "stream_audio",
]
