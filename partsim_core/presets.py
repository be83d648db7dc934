"""One table of presets (``smoke``, ``default``, ``paper``) for every chapter.

``paper`` holds the thesis's settings (44.1 kHz, window 2048, hop 512, 128 mel bins, 3-s segments; thesis 3.3.1).
``smoke`` proves every code path in minutes on 2 CPU cores (what CI builds); ``default`` is the smallest setting
whose results mean something on 2 CPU cores. Later chapters add their own sections to :class:`Preset`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from partsim_core.errors import PartsimError


@dataclass(frozen=True)
class FrontendConfig:
    """Log-mel front end settings (thesis 3.3.1)."""

    sample_rate: int = 44100
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    top_db: float = 80.0


@dataclass(frozen=True)
class SynthConfig:
    """Size of the generated mini-Slakh dataset (``partsim data synth``)."""

    n_train: int
    n_validation: int
    n_test: int
    min_seconds: float
    max_seconds: float
    #: Sample rate of the written flac files. Real Slakh2100 is 44.1 kHz; smaller presets write less to disk.
    sample_rate: int


@dataclass(frozen=True)
class PartNetworkConfig:
    """Chapter 3: per-part CNN trained with the triplet loss (thesis 3.2.2, 3.3.1)."""

    #: Training tracks used (thesis: 1,200 of the 1,289 redux train tracks); ``None`` = all of the split.
    n_train_tracks: int | None
    #: First non-silent 3-s segments of each track that serve as anchors (thesis: 40).
    anchors_per_track: int
    batch_size: int
    epochs: int
    #: Channel width of the first convolution block (later blocks double it); see ``models.PartCNN``.
    width: int
    lr: float = 1e-3
    margin: float = 0.2
    embedding_dim: int = 128
    #: Epochs without a validation improvement before a network stops early; ``None`` = never (the thesis trains
    #: 200 epochs and does not mention early stopping, so ``paper`` has none).
    early_stopping_patience: int | None = 10


@dataclass(frozen=True)
class SeparatorConfig:
    """Chapter 3: our spectrogram U-Net separator (Spleeter's architecture), trained on the train split."""

    epochs: int
    batch_size: int
    #: Length of the training excerpts (seconds).
    segment_seconds: float
    #: Channels of the first encoder layer (Spleeter: 16).
    width: int
    steps_per_epoch: int
    lr: float = 1e-3
    #: First training tracks whose separation quality Table 3.1's "train" columns average; ``None`` = every one
    #: (the thesis's average over the training tracks; BSS Eval costs about one part network per 30 tracks).
    metric_train_tracks: int | None = 30


@dataclass(frozen=True)
class CSNConfig:
    """Chapter 4: the CSN's training (thesis 4.4.1; paper: batch 32, 1,000 epochs, 5,000 triplets, lambda 0.1).
    """

    #: Channels of the first block of ``models.CSNEncoder`` (later blocks double them).
    width: int
    batch_size: int
    #: Epochs of triplet training of a condition.
    epochs: int
    #: Pseudo-piece (or dataset-piece) triplets drawn afresh every epoch.
    triplets_per_epoch: int
    #: Epochs of the pre-training (4.3.5; not in the thesis: our setting).
    pretrain_epochs: int
    #: Training tracks whose segments are pre-trained on (thesis: 200); ``None`` = all of the train split.
    pretrain_tracks: int | None
    #: Fixed validation triplets drawn from the validation split.
    validation_triplets: int = 64
    #: Tempo classes for pseudo pieces (thesis: 36; fewer on small sets).
    n_tempo_classes: int = 36
    lr: float = 1e-3
    margin: float = 0.2
    #: lambda of the total loss triplet + lambda x norm (eq. 4.6).
    norm_weight: float = 0.1


@dataclass(frozen=True)
class Preset:
    """Every size and setting a chapter needs, under one name."""

    name: str
    description: str
    synth: SynthConfig
    frontend: FrontendConfig
    #: Segment length for training and the chapter-3 test set (seconds).
    part_network: PartNetworkConfig
    separator: SeparatorConfig
    csn: CSNConfig
    segment_seconds: float = 3.0
    #: Mean power below which a segment counts as silent (thesis ch. 3).
    silence_threshold: float = 1e-4
    #: Training seeds the book runs per model (``partsim book build``); the intervals include their spread.
    seeds: int = 1
    #: Mixed precision of every training (:class:`partsim_core.training.TrainConfig`'s ``amp``): ``auto`` = bf16
    #: autocast on CUDA, float32 on the CPU; ``native`` = bf16 autocast wherever the device computes bf16 natively.
    amp: str = "auto"

    def to_dict(self) -> dict:
        """Plain-dict form, for configs saved beside results."""
        return asdict(self)


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke",
        description="Proves every code path in minutes: 24 short generated tracks, small front end.",
        synth=SynthConfig(n_train=16, n_validation=4, n_test=4, min_seconds=12.0, max_seconds=16.0,
                          sample_rate=22050),
        frontend=FrontendConfig(sample_rate=16000, n_fft=1024, hop_length=512, n_mels=64),
        part_network=PartNetworkConfig(n_train_tracks=None, anchors_per_track=8, batch_size=16, epochs=1, width=8),
        separator=SeparatorConfig(epochs=1, batch_size=4, segment_seconds=3.0, width=8, steps_per_epoch=10),
        csn=CSNConfig(width=4, batch_size=8, epochs=1, triplets_per_epoch=32, pretrain_epochs=1, pretrain_tracks=8,
                      validation_triplets=16),
    ),
    "default": Preset(
        name="default",
        description="Smallest setting with meaningful results on 2 CPU cores: ~200 generated tracks of 30-40 s.",
        synth=SynthConfig(n_train=140, n_validation=30, n_test=30, min_seconds=30.0, max_seconds=40.0,
                          sample_rate=22050),
        frontend=FrontendConfig(sample_rate=22050, n_fft=1024, hop_length=512, n_mels=96),
        # Epochs of the part networks and of the CSN: where validation loss stops improving
        # (partsim_core.convergence, curves in data/presets/default_epochs.json), not tuned on the test split.
        part_network=PartNetworkConfig(n_train_tracks=None, anchors_per_track=40, batch_size=64, epochs=11,
                                       width=16),
        # 150 steps of batch 8 at Spleeter's width: ~1.4 s per step on 2 idle cores (~3.5 min in all).
        separator=SeparatorConfig(epochs=3, batch_size=8, segment_seconds=3.0, width=16, steps_per_epoch=50),
        # Measured with bf16 on one thread (the other core busy): one epoch (32 steps of 32 triplets) ~17 s, so
        # one condition ~7.5 min; a part-network epoch ~31 s (~5.7 min for 11).
        csn=CSNConfig(width=8, batch_size=32, epochs=26, triplets_per_epoch=1000, pretrain_epochs=8,
                      pretrain_tracks=60, validation_triplets=128),
        # The findings rest on these models: three seeds, so that every interval includes the seed spread.
        seeds=3,
        # bf16 autocast on CPUs with native bf16 (AVX512-BF16 / AMX; float32 elsewhere), as the GPU trains: measured
        # one thread, 2026-12-06, forward + backward + Adam: CSN (96 pieces) 0.75 -> 0.34 s, part network (64
        # triplets) 1.06 -> 0.40 s; the validation curves of data/presets/default_epochs.json were measured so.
        amp="native",
    ),
    "paper": Preset(
        name="paper",
        description="The thesis's settings (44.1 kHz, window 2048, hop 512, 128 mels); meant for real Slakh2100.",
        synth=SynthConfig(n_train=1289, n_validation=270, n_test=151, min_seconds=120.0, max_seconds=240.0,
                          sample_rate=44100),
        frontend=FrontendConfig(sample_rate=44100, n_fft=2048, hop_length=512, n_mels=128),
        part_network=PartNetworkConfig(n_train_tracks=1200, anchors_per_track=40, batch_size=256, epochs=200,
                                       width=32, early_stopping_patience=None),
        # 11.9-s excerpts = Spleeter's T = 512 frames at 44.1 kHz / hop 1024.
        separator=SeparatorConfig(epochs=100, batch_size=16, segment_seconds=11.9, width=16,
                                  steps_per_epoch=1000, metric_train_tracks=None),
        csn=CSNConfig(width=32, batch_size=32, epochs=1000, triplets_per_epoch=5000, pretrain_epochs=100,
                      pretrain_tracks=200, validation_triplets=256),
        seeds=3,
    ),
}


def get_preset(name: str) -> Preset:
    """Return the preset called ``name``.

    Raises:
        PartsimError: when ``name`` is not one of :data:`PRESETS`.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise PartsimError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
