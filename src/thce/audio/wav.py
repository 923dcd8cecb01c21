"""WAV (RIFF) chunk headers, read without libsndfile: a WAV file's format, where its samples are, and the structural
problems libsndfile does not report (an unsupported codec; a data chunk cut short, whose remains libsndfile silently
decodes). :mod:`thce.audio.read` uses them to diagnose files and to read 16-bit PCM directly."""

from __future__ import annotations

import os
import struct
from typing import NamedTuple

#: WAV format tags libsndfile decodes; any other tag is reported as an unsupported codec.
WAV_CODECS_SUPPORTED = frozenset(
    {0x0001, 0x0002, 0x0003, 0x0006, 0x0007, 0x0011, 0x0031, 0x0040, 0x0050, 0x0055, 0xFFFE}
)
_WAV_CODEC_NAMES = {
    0x0022: "DSP Group TrueSpeech", 0x0092: "Dolby AC-3 SPDIF", 0x00FF: "AAC", 0x0133: "G.729",
    0x0160: "WMA v1", 0x0161: "WMA v2", 0x0162: "WMA Pro", 0x0163: "WMA Lossless", 0x1610: "HE-AAC",
    0x2000: "AC-3", 0x2001: "DTS", 0x704F: "Opus",
}  # fmt: skip


class Riff(NamedTuple):
    """What :func:`scan_riff` learns from a WAV file's chunk headers: its structural ``problem`` in words (``None``
    if fine), the format chunk (``tag``, ``channels``, ``rate`` in Hz, ``bits`` per sample, ``block_align`` in
    bytes per frame) and the data chunk (``data_offset``, ``data_bytes``)."""

    problem: str | None = None
    tag: int = 0
    channels: int = 0
    rate: int = 0
    bits: int = 0
    block_align: int = 0
    data_offset: int = 0
    data_bytes: int = 0

    @property
    def is_pcm16(self) -> bool:
        """Plain 16-bit PCM with a consistent header and a data chunk of known size (read without libsndfile)."""
        return (
            self.tag == 1 and self.bits == 16 and self.channels > 0 and self.rate > 0
            and self.block_align == 2 * self.channels and 0 < self.data_bytes < 0xFFFFFFFF
        )  # fmt: skip


def scan_riff(path: str) -> Riff | None:
    """Chunk headers of a WAV (RIFF) file: format and data chunk, or its structural problem (unsupported codec, data
    chunk cut short, unreadable). ``None``: not a RIFF WAVE file."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            size = os.fstat(handle.fileno()).st_size
            pos = 12
            fmt = (0, 0, 0, 0, 0)
            while pos + 8 <= size:
                handle.seek(pos)
                chunk = handle.read(8)
                chunk_id, chunk_size = chunk[:4], int.from_bytes(chunk[4:8], "little")
                if chunk_id == b"fmt " and chunk_size >= 2:
                    body = handle.read(min(chunk_size, 16))
                    tag = int.from_bytes(body[:2], "little")
                    if tag not in WAV_CODECS_SUPPORTED:
                        name = _WAV_CODEC_NAMES.get(tag, "unknown")
                        return Riff(
                            f"unsupported codec: WAV format tag 0x{tag:04x} ({name}); supported are PCM, float, A-law, "
                            "mu-law, ADPCM, GSM 6.10 and MPEG (convert it, e.g. ffmpeg -i IN -c:a pcm_s16le OUT.wav)"
                        )
                    if len(body) >= 16:
                        channels, rate, _, align, bits = struct.unpack("<HIIHH", body[2:16])
                        fmt = (tag, channels, rate, bits, align)
                elif chunk_id == b"data":
                    available = size - pos - 8
                    if 0 < chunk_size < 0xFFFFFFFF and chunk_size > available:
                        return Riff(
                            f"truncated file: its data chunk promises {chunk_size} bytes but only {available} are "
                            f"present ({100 * available / chunk_size:.0f}%)"
                        )
                    tag, channels, rate, bits, align = fmt
                    return Riff(None, tag, channels, rate, bits, align, pos + 8, chunk_size)
                pos += 8 + chunk_size + (chunk_size & 1)
    except OSError as exc:
        return Riff(f"cannot open ({exc})")
    return Riff()
