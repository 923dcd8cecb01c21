"""audio.py: load_audio (formats, resampling, length, errors) and LogMel against a plain numpy implementation."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from thce.audio import LogMel, LogMelConfig, load_audio, mel_filterbank, mel_frequencies
from thce.errors import ConfigError, DataError

# --------------------------------------------------------------------------------------------------------------------
# Independent reference: a loop over frames and filters, written from the definition, not from the module's code.


def _slaney_hz_to_mel(f: float) -> float:
    return f / (200.0 / 3.0) if f < 1000.0 else 15.0 + np.log(f / 1000.0) * 27.0 / np.log(6.4)


def _slaney_mel_to_hz(m: float) -> float:
    return m * (200.0 / 3.0) if m < 15.0 else 1000.0 * 6.4 ** ((m - 15.0) / 27.0)


def reference_mel_matrix(sr: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    lo, hi = _slaney_hz_to_mel(f_min), _slaney_hz_to_mel(f_max)
    edges = [_slaney_mel_to_hz(lo + (hi - lo) * k / (n_mels + 1)) for k in range(n_mels + 2)]
    bins = n_fft // 2 + 1
    matrix = np.zeros((bins, n_mels))
    for m in range(n_mels):
        left, centre, right = edges[m], edges[m + 1], edges[m + 2]
        for b in range(bins):
            f = b * sr / n_fft
            if left <= f <= centre:
                w = (f - left) / (centre - left)
            elif centre < f <= right:
                w = (right - f) / (right - centre)
            else:
                w = 0.0
            matrix[b, m] = w * 2.0 / (right - left)
    return matrix


def reference_logmel(x: np.ndarray, cfg: LogMelConfig) -> np.ndarray:
    win, hop, n_fft = cfg.win_samples, cfg.hop_samples, cfg.n_fft
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann
    padded = np.concatenate([np.zeros(win // 2), x.astype(np.float64), np.zeros(win)])
    n_frames = 1 + len(x) // hop
    mel = reference_mel_matrix(cfg.sample_rate_hz, n_fft, cfg.n_mels, cfg.f_min_hz, cfg.f_max_hz or cfg.nyquist_hz)
    out = np.empty((n_frames, cfg.n_mels))
    for t in range(n_frames):
        frame = padded[t * hop : t * hop + win] * window  # centred on sample t * hop
        power = np.abs(np.fft.rfft(frame, n=n_fft)) ** 2
        out[t] = np.log(np.maximum(power @ mel, cfg.log_floor))
    return out


# --------------------------------------------------------------------------------------------------------------------


def test_filterbank_matches_loop_reference_and_has_unit_area():
    ours = mel_filterbank(sample_rate_hz=16000, n_fft=512, n_mels=64)
    ref = reference_mel_matrix(16000, 512, 64, 0.0, 8000.0)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)
    # Slaney normalisation: each triangle has area 1 in Hz (exact for wide filters, on the FFT grid).
    wide = ours[:, -20:]
    np.testing.assert_allclose(wide.sum(axis=0) * (16000 / 512), 1.0, rtol=0.02)
    assert (ours.max(axis=0) > 0).all(), "no empty filter at the paper's setting"


def test_mel_scale_is_slaney():
    freqs = mel_frequencies(3, 0.0, 2000.0)
    assert freqs[0] == pytest.approx(0.0)
    assert freqs[-1] == pytest.approx(2000.0)
    # 1 kHz is 15 mel, 2 kHz is 15 + 27*log(2)/log(6.4) mel; the midpoint lies between.
    mid_mel = (15 + 27 * np.log(2) / np.log(6.4)) / 2
    assert freqs[1] == pytest.approx(_slaney_mel_to_hz(mid_mel))


@pytest.mark.parametrize("samples", [16000, 12345])
def test_logmel_matches_numpy_reference(samples):
    cfg = LogMelConfig(duration_s=1.0, n_mels=40, f_min_hz=50.0, f_max_hz=7600.0)
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(samples)).astype(np.float32)
    ours = LogMel(cfg)(torch.from_numpy(x)[None])[0].numpy()
    ref = reference_logmel(x, cfg)
    expected_frames = cfg.num_frames if samples == cfg.clip_samples else 1 + samples // cfg.hop_samples
    assert ours.shape == (expected_frames, cfg.n_mels)
    # relative 1e-4 in the energy domain = 1e-4 absolute in the log domain
    np.testing.assert_allclose(ours, ref[:expected_frames], atol=1e-4, rtol=0)


def test_logmel_batch_equals_per_clip_and_default_shape():
    cfg = LogMelConfig()
    assert (cfg.win_samples, cfg.hop_samples, cfg.num_frames, cfg.n_mels) == (400, 160, 1000, 64)
    x = torch.randn(3, cfg.clip_samples) * 0.1
    module = LogMel(cfg)
    batch = module(x)
    assert batch.shape == (3, 1000, 64)
    assert batch.dtype == torch.float32
    torch.testing.assert_close(batch[1], module(x[1]), rtol=0, atol=1e-5)


def test_pure_tone_lands_in_its_mel_band():
    cfg = LogMelConfig(duration_s=1.0)
    t = np.arange(cfg.clip_samples) / cfg.sample_rate_hz
    centres = mel_frequencies(cfg.n_mels + 2, 0.0, cfg.nyquist_hz)[1:-1]
    module = LogMel(cfg)
    for band in (10, 30, 50):
        tone = np.sin(2 * np.pi * centres[band] * t).astype(np.float32)
        feats = module(torch.from_numpy(tone)[None])[0].numpy()
        assert np.bincount(feats.argmax(axis=1)).argmax() == band


def test_silence_hits_log_floor():
    cfg = LogMelConfig(duration_s=1.0, n_mels=16)
    out = LogMel(cfg)(torch.zeros(1, cfg.clip_samples))
    torch.testing.assert_close(out, torch.full_like(out, np.log(cfg.log_floor)))


def test_config_round_trip_and_errors():
    cfg = LogMelConfig(n_mels=32, f_max_hz=7000.0)
    assert LogMelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown config key 'features.n_mel'; did you mean 'n_mels'"):
        LogMelConfig.from_dict({"n_mel": 64})
    with pytest.raises(ConfigError, match="hop_ms"):
        LogMelConfig(hop_ms=0.0)
    with pytest.raises(ConfigError, match="n_fft"):
        LogMelConfig(frame_length_ms=64.0)  # 1024 samples > n_fft 512
    with pytest.raises(ConfigError, match="f_max_hz"):
        LogMelConfig(f_max_hz=9000.0)


# --------------------------------------------------------------------------------------------------------------------
# load_audio


def test_load_audio_resamples_stereo_int16(tmp_path):
    sr_in, freq = 44100, 1000.0
    t = np.arange(int(2.0 * sr_in)) / sr_in
    tone = 0.5 * np.sin(2 * np.pi * freq * t)
    stereo = np.stack([tone, tone], axis=1)
    path = tmp_path / "tone.wav"
    sf.write(path, (stereo * 32767).astype(np.int16), sr_in, subtype="PCM_16")

    out = load_audio(path, sample_rate_hz=16000, duration_s=None)
    assert out.dtype == np.float32 and out.ndim == 1
    assert len(out) == 32000
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    peak_hz = spectrum.argmax() * 16000 / len(out)
    assert peak_hz == pytest.approx(freq, abs=1.0)
    assert np.abs(out[1000:-1000]).max() == pytest.approx(0.5, abs=0.01)


def test_load_audio_channels_are_averaged(tmp_path):
    path = tmp_path / "lr.flac"
    data = np.stack([np.full(800, 0.5), np.full(800, -0.25)], axis=1)
    sf.write(path, data, 8000)
    out = load_audio(path, sample_rate_hz=8000, duration_s=None)
    np.testing.assert_allclose(out, 0.125, atol=1e-4)


def test_load_audio_pads_and_crops(tmp_path):
    path = tmp_path / "short.wav"
    sf.write(path, np.full(8000, 0.25, dtype=np.float32), 16000, subtype="FLOAT")
    padded = load_audio(path, sample_rate_hz=16000, duration_s=1.0)
    assert padded.shape == (16000,)
    np.testing.assert_array_equal(padded[:8000], 0.25)
    np.testing.assert_array_equal(padded[8000:], 0.0)
    cropped = load_audio(path, sample_rate_hz=16000, duration_s=0.25)
    assert cropped.shape == (4000,)
    np.testing.assert_array_equal(cropped, 0.25)


def test_load_audio_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.wav"
    with pytest.raises(DataError, match=r"nope\.wav.*not found"):
        load_audio(missing)

    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(DataError, match=r"empty\.wav.*empty"):
        load_audio(empty)

    zero_bytes = tmp_path / "zero.wav"
    zero_bytes.write_bytes(b"")
    with pytest.raises(DataError, match=r"zero\.wav.*cannot read"):
        load_audio(zero_bytes)

    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    with pytest.raises(DataError, match=r"notes\.wav.*cannot read as audio"):
        load_audio(text)

    nan = tmp_path / "nan.wav"
    data = np.zeros(1600, dtype=np.float32)
    data[100] = np.nan
    sf.write(nan, data, 16000, subtype="FLOAT")
    with pytest.raises(DataError, match=r"nan\.wav.*NaN"):
        load_audio(nan)

    with pytest.raises(DataError, match="not a file"):
        load_audio(tmp_path)


def test_partial_read_of_long_file_equals_full_read_then_crop(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / "long.wav"
    sf.write(path, (0.1 * rng.standard_normal(3 * 22050)).astype(np.float32), 22050, subtype="FLOAT")
    part = load_audio(path, sample_rate_hz=16000, duration_s=1.0)
    full = load_audio(path, sample_rate_hz=16000, duration_s=None)
    np.testing.assert_allclose(part, full[:16000], atol=1e-6)
