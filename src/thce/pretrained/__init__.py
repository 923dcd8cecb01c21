"""Pre-trained encoders: PANNs Cnn14 / Cnn14_16k / Cnn10 with the official state-dict layout
(:mod:`thce.pretrained.panns`) and safe loading of the released checkpoints (:mod:`thce.pretrained.checkpoints`)."""

from thce.pretrained.checkpoints import (
    convert_panns_checkpoint,
    detect_variant,
    load_panns_checkpoint,
    numpy_safe_globals,
    official_layout,
    safetensors_available,
)
from thce.pretrained.panns import (
    PANNS_VARIANTS,
    CachedPannsEncoder,
    Cnn10,
    Cnn14,
    Cnn14_16k,
    PannsCnn,
    PannsEncoder,
    PannsFeatureSettings,
    PannsVariant,
    logmel_config,
    parse_freeze,
    check_sample_rate,
    feature_settings,
    mel_matrix,
    panns_variant,
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
    "logmel_config",
    "parse_freeze",
    "check_sample_rate",
    "convert_panns_checkpoint",
    "detect_variant",
    "feature_settings",
    "load_panns_checkpoint",
    "mel_matrix",
    "numpy_safe_globals",
    "official_layout",
    "panns_variant",
    "safetensors_available",
    "stft_kernels",
]
