"""Pre-trained encoders: PANNs Cnn14 / Cnn14_16k / Cnn10 with the official state-dict layout
(:mod:`thce.pretrained.panns`), safe loading of the released checkpoints (:mod:`thce.pretrained.checkpoints`), the
networks as thce encoders (:mod:`thce.pretrained.encoder`) and a frozen one's cached embeddings
(:mod:`thce.pretrained.frozen`)."""

from thce.pretrained.checkpoints import (
    convert_panns_checkpoint,
    detect_variant,
    load_panns_checkpoint,
    numpy_safe_globals,
    official_layout,
    safetensors_available,
)
from thce.pretrained.encoder import (
    CachedPannsEncoder,
    PannsEncoder,
    build_cached_panns_encoder,
    build_panns_encoder,
)
from thce.pretrained.panns import (
    PANNS_VARIANTS,
    Cnn10,
    Cnn14,
    Cnn14_16k,
    PannsCnn,
    PannsFeatureSettings,
    PannsVariant,
    check_sample_rate,
    feature_settings,
    logmel_config,
    mel_matrix,
    panns_variant,
    parse_freeze,
    stft_kernels,
)

__all__ = [
    "PANNS_VARIANTS",
    "CachedPannsEncoder",
    "Cnn10",
    "Cnn14",
    "Cnn14_16k",
    "PannsCnn",
    "PannsEncoder",
    "PannsFeatureSettings",
    "PannsVariant",
    "build_cached_panns_encoder",
    "build_panns_encoder",
    "check_sample_rate",
    "convert_panns_checkpoint",
    "detect_variant",
    "feature_settings",
    "load_panns_checkpoint",
    "logmel_config",
    "mel_matrix",
    "numpy_safe_globals",
    "official_layout",
    "panns_variant",
    "parse_freeze",
    "safetensors_available",
    "stft_kernels",
]
