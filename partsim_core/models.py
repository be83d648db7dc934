"""Networks of the book: the per-part CNN of chapter 3 (and the separator U-Net, in its own section below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from partsim_core.errors import PartsimError

# ==============================================================================================================
# Chapter 3: per-part feature extractor (thesis Fig. 3.1)
# ==============================================================================================================

#: Convolution blocks of :class:`PartCNN`; each halves both axes, so 2 ** PART_CNN_BLOCKS is the total pooling.
PART_CNN_BLOCKS = 4


def _part_cnn_block(in_channels: int, out_channels: int, first: bool) -> nn.Sequential:
    """One block of :class:`PartCNN`; every block halves both axes.

    The first block is a stride-2 3x3 convolution + batch norm + ReLU; later blocks are a 3x3 convolution, 2x2 max
    pooling, batch norm and ReLU. Why this order: on the CPU the batch norm and ReLU of a full-resolution feature
    map cost more than the convolution itself (memory bound); striding the first convolution and pooling before
    the normalisation runs them on a quarter of the values (measured on 2 cores, width 16, 64 triplets of
    96 x 130: ~600 ms per step with conv-BN-ReLU-pool blocks, ~180 ms with these).
    """
    convolution_stride = 2 if first else 1
    # No bias: the batch norm that follows has one.
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=convolution_stride,
                                         padding=1, bias=False)]
    if not first:
        # ceil_mode: an odd (or tiny) axis keeps its last row/column instead of failing or dropping it.
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
    layers += [nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def pooled_size(size: int, blocks: int = PART_CNN_BLOCKS) -> int:
    """Length of an axis of ``size`` bins after ``blocks`` halvings (stride-2 padded conv or ceil-mode pooling)."""
    for _ in range(blocks):
        size = (size + 1) // 2
    return size


class PartCNN(nn.Module):
    """Per-instrument feature extractor: log-mel ``(batch, n_mels, frames)`` -> ``(batch, embedding_dim)``.

    Thesis Fig. 3.1 (the figure itself is not in our text; only "convolutional networks ... extract a
    128-dimensional embedding from a mel spectrogram", 3.3.1). Our layer sizes and why:

    * 4 blocks of 3x3 convolution + batch norm + ReLU, each halving time and frequency, with ``width, 2 width,
      4 width, 8 width`` channels: the building blocks of the chapter-4 encoder (thesis Fig. 4.6: conv + batch
      norm + ReLU, max-pooling, channels doubling), with one convolution per halving instead of two and 4 halvings
      instead of 5, so that a part network trains in about a minute on 2 CPU cores at the ``default`` preset
      (``benchmarks/training.py``). The first block halves by a stride-2 convolution, the others by 2x2 max
      pooling placed before the batch norm (see :func:`_part_cnn_block` for why).
      After the 4 poolings one output frame covers 16 input frames (~0.37 s at 22.05 kHz / hop 512) and each of
      the ``ceil(n_mels / 16)`` frequency rows about 16 mel bands.
    * Average over time ("Time Ave." of Fig. 4.6), keeping the frequency rows: the embedding does not depend on
      where in the segment a sound occurs and any number of frames (3-, 5- or 10-s segments) is accepted, while
      *which* register a part plays in (bass vs piano) stays visible to the last layer.
    * One fully connected layer from ``8 width x ceil(n_mels / 16)`` features to ``embedding_dim`` (128).
    * The embedding is L2-normalised (``normalize=True``): the thesis uses Euclidean distance with a triplet margin
      of 0.2, the FaceNet setting, which is only meaningful on the unit sphere; without it the network can satisfy
      any margin by scaling its output up. Distances then lie in [0, 2].

    Presets set ``width`` (``part_network.width``): 8 (smoke), 16 (default), 32 (paper); the thesis's own width is
    unknown. At 16 and the default preset's 96 x 130 input the network has 196k parameters.

    Args:
        n_mels: Mel bands of the input (the preset's ``frontend.n_mels``); fixes the size of the last layer.
        width: Channels of the first block; later blocks double it.
        embedding_dim: Size of the output embedding (thesis: 128).
        normalize: Divide each embedding by its L2 norm.

    Raises:
        PartsimError: a non-positive size.
    """

    def __init__(self, n_mels: int, width: int = 16, embedding_dim: int = 128, normalize: bool = True) -> None:
        super().__init__()
        for name, value in (("n_mels", n_mels), ("width", width), ("embedding_dim", embedding_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise PartsimError(f"PartCNN {name} must be a positive integer, got {value!r}")
        self.n_mels = n_mels
        self.width = width
        self.embedding_dim = embedding_dim
        self.normalize = normalize
        channels = [1] + [width * 2 ** block for block in range(PART_CNN_BLOCKS)]
        self.features = nn.Sequential(*(_part_cnn_block(channels[i], channels[i + 1], first=i == 0)
                                        for i in range(PART_CNN_BLOCKS)))
        self.frequency_rows = pooled_size(n_mels)
        self.projection = nn.Linear(channels[-1] * self.frequency_rows, embedding_dim)
        # channels_last: oneDNN's (CPU) and cuDNN's fast convolution layout; measured ~3x faster per step on 2 cores.
        self.to(memory_format=torch.channels_last)

    def extra_repr(self) -> str:
        return f"n_mels={self.n_mels}, width={self.width}, embedding_dim={self.embedding_dim}, " \
               f"normalize={self.normalize}"

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Embed a batch of log-mel spectrograms.

        Args:
            mel: ``(batch, n_mels, frames)`` or ``(batch, 1, n_mels, frames)``, values in [0, 1].

        Returns:
            ``(batch, embedding_dim)`` embeddings (unit length when ``normalize``).

        Raises:
            PartsimError: wrong number of dimensions or of mel bands.
        """
        if mel.dim() == 3:
            mel = mel.unsqueeze(1)
        if mel.dim() != 4 or mel.shape[1] != 1 or mel.shape[2] != self.n_mels:
            raise PartsimError(f"PartCNN expects log-mel shaped (batch, {self.n_mels}, frames), got "
                               f"{tuple(mel.shape)}")
        features = self.features(mel.contiguous(memory_format=torch.channels_last))  # (batch, 8w, rows, frames)
        features = features.mean(dim=3).flatten(1)     # time average -> (batch, 8 width * rows)
        embedding = self.projection(features)
        if self.normalize:
            embedding = nn.functional.normalize(embedding, p=2.0, dim=1, eps=1e-12)
        return embedding


# ==============================================================================================================
# End of the chapter-3 part network section.
# ==============================================================================================================


# ==============================================================================================================
# Chapter 3: separator U-Net (Spleeter's architecture, Jansson et al. 2017), written for partsim_core.baseline.separators
# ==============================================================================================================

#: Spleeter's STFT at 44.1 kHz: 4096-sample window, hop 1024, the lowest 1024 of 2049 bins (0-11 kHz) modelled.
SPLEETER_SAMPLE_RATE, SPLEETER_N_FFT = 44100, 4096

#: Encoder layers of one U-Net; each halves both axes, so frequency bins and frames must be multiples of 2 ** 6.
SEPARATOR_DEPTH = 6

#: Spleeter's LeakyReLU slope and dropout rate of the first three decoder layers.
SEPARATOR_LEAKY_SLOPE, SEPARATOR_DROPOUT = 0.2, 0.5

#: Added to numerator and denominator of the ratio masks (Spleeter's EPSILON) so silent bins split evenly.
MASK_EPSILON = 1e-10


@dataclass(frozen=True)
class SeparatorSTFT:
    """STFT of the separator at one sample rate: Spleeter's settings scaled from 44.1 kHz.

    ``n_fft`` is the power of two nearest (in log scale) to ``4096 * sample_rate / 44100`` so that the window
    lasts about Spleeter's 93 ms; ``hop_length = n_fft / 4`` as in Spleeter; the U-Net sees the lowest
    ``n_bins = n_fft / 4`` bins (Spleeter: 1024 of 2049), i.e. up to a quarter of the sample rate (11 kHz at
    44.1 kHz, 5.5 kHz at 22.05 kHz). Bins above get the frame's average mask (see
    :meth:`SeparatorUNet.soft_masks`).
    """

    n_fft: int
    hop_length: int
    n_bins: int

    @classmethod
    def for_sample_rate(cls, sample_rate: int) -> SeparatorSTFT:
        """Spleeter's settings scaled to ``sample_rate`` (44.1 kHz: 4096 / 1024 / 1024; 22.05 kHz: 2048 / 512 /
        512; 16 kHz: 2048 / 512 / 512)."""
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise PartsimError(f"separator sample_rate must be a positive integer, got {sample_rate!r}")
        n_fft = 2 ** round(math.log2(SPLEETER_N_FFT * sample_rate / SPLEETER_SAMPLE_RATE))
        n_fft = max(n_fft, 4 * 2 ** SEPARATOR_DEPTH)  # n_bins must hold at least one multiple of 64
        return cls(n_fft=n_fft, hop_length=n_fft // 4, n_bins=n_fft // 4)

    def frames(self, samples: int) -> int:
        """STFT frames of a signal of ``samples`` samples (centred frames, as :func:`torch.stft` with center)."""
        return 1 + samples // self.hop_length

    def spectrogram(self, audio: torch.Tensor) -> torch.Tensor:
        """Complex STFT ``(..., n_fft // 2 + 1, frames)`` of waveforms ``(..., samples)`` (Hann window, centred)."""
        shape = audio.shape
        flat = audio.reshape(-1, shape[-1]).float()
        window = torch.hann_window(self.n_fft, device=audio.device, dtype=flat.dtype)
        spec = torch.stft(flat, self.n_fft, self.hop_length, window=window, center=True, return_complex=True)
        return spec.reshape(*shape[:-1], *spec.shape[-2:])

    def waveform(self, spec: torch.Tensor, samples: int) -> torch.Tensor:
        """Inverse of :meth:`spectrogram`: waveforms ``(..., samples)`` from complex ``(..., bins, frames)``."""
        shape = spec.shape
        flat = spec.reshape(-1, *shape[-2:])
        window = torch.hann_window(self.n_fft, device=spec.device, dtype=torch.float32)
        audio = torch.istft(flat, self.n_fft, self.hop_length, window=window, center=True, length=samples)
        return audio.reshape(*shape[:-2], samples)


class SpleeterUNet(nn.Module):
    """One source's U-Net of Spleeter (Jansson et al. 2017, as implemented in Spleeter's ``apply_unet``).

    Input: a mixture magnitude ``(batch, 1, bins, frames)`` (bins and frames multiples of 64). Output: the source's
    estimated magnitude = sigmoid mask x input. Layers, exactly Spleeter's (mono instead of stereo):

    * encoder: 6 x [5x5 convolution, stride 2] with ``width x (1, 2, 4, 8, 16, 32)`` channels (Spleeter: width 16),
      each but the last followed by batch norm and LeakyReLU(0.2);
    * decoder: 6 x [5x5 transposed convolution, stride 2, ReLU, batch norm] with ``width x (16, 8, 4, 2, 1)`` and
      finally 1 channel, dropout 0.5 after the first three; after each of the first five the output is
      concatenated with the encoder convolution (before its batch norm) of the same size (skip connections);
    * a 4x4 convolution with dilation 2 and a sigmoid gives the mask, multiplied with the input magnitude.

    Spleeter computes a batch norm + activation after the 6th convolution and discards it; we leave it out (an
    unused parameter would break DistributedDataParallel).
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        channels = [1] + [width * 2 ** layer for layer in range(SEPARATOR_DEPTH)]
        self.encoder = nn.ModuleList(
            nn.Conv2d(channels[i], channels[i + 1], kernel_size=5, stride=2, padding=2)
            for i in range(SEPARATOR_DEPTH))
        self.encoder_norms = nn.ModuleList(nn.BatchNorm2d(channels[i + 1]) for i in range(SEPARATOR_DEPTH - 1))
        # Decoder layer j maps (encoder output j levels deep, doubled by the skip except for the first) upwards.
        decoder_out = [channels[SEPARATOR_DEPTH - 1 - j] for j in range(SEPARATOR_DEPTH)]  # 8w, 4w, ..., w, 1
        decoder_in = [channels[SEPARATOR_DEPTH]] + [2 * c for c in decoder_out[:-1]]
        self.decoder = nn.ModuleList(
            nn.ConvTranspose2d(decoder_in[j], decoder_out[j], kernel_size=5, stride=2, padding=2, output_padding=1)
            for j in range(SEPARATOR_DEPTH))
        self.decoder_norms = nn.ModuleList(nn.BatchNorm2d(c) for c in decoder_out)
        self.dropout = nn.Dropout(SEPARATOR_DROPOUT)
        self.mask = nn.Conv2d(1, 1, kernel_size=4, dilation=2, padding="same")

    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        """Estimated source magnitude ``(batch, 1, bins, frames)`` from the mixture's."""
        skips = []
        hidden = magnitude
        for layer, conv in enumerate(self.encoder):
            convolved = conv(hidden)
            skips.append(convolved)
            if layer < SEPARATOR_DEPTH - 1:
                hidden = nn.functional.leaky_relu(self.encoder_norms[layer](convolved), SEPARATOR_LEAKY_SLOPE)
        hidden = skips[-1]
        for layer, (deconv, norm) in enumerate(zip(self.decoder, self.decoder_norms)):
            hidden = norm(torch.relu(deconv(hidden)))
            if layer < 3:
                hidden = self.dropout(hidden)
            if layer < SEPARATOR_DEPTH - 1:
                hidden = torch.cat([skips[SEPARATOR_DEPTH - 2 - layer], hidden], dim=1)
        return torch.sigmoid(self.mask(hidden)) * magnitude


class SeparatorUNet(nn.Module):
    """Our re-implementation of Spleeter: one :class:`SpleeterUNet` per source on the STFT magnitude, soft masks.

    Training (``partsim_core.baseline.separator_training.train_separator``): :meth:`forward` maps mixture magnitudes to the five
    sources' estimated magnitudes, compared with the ideal ones by an L1 loss (Spleeter's). Separation
    (:meth:`separate`): the estimates become ratio masks normalised across sources with exponent 2 (Spleeter's
    Wiener-like "soft" masking, so the five outputs sum to the mixture), applied to the complex mixture STFT
    (mixture phase) and inverted. Sources are in :data:`~partsim_core.INSTRUMENTS` order.

    Args:
        sample_rate: Rate of the audio the model works at (fixes the STFT, :class:`SeparatorSTFT`).
        width: Channels of each U-Net's first layer (Spleeter: 16).
        n_sources: Number of sources (one U-Net each).
        chunk_frames: Frames per excerpt the U-Nets see when separating a whole track (Spleeter: 512); a
            multiple of 64, normally the training excerpt's.

    Raises:
        PartsimError: a non-positive size or ``chunk_frames`` not a multiple of 64.
    """

    def __init__(self, sample_rate: int, width: int = 16, n_sources: int = 5, chunk_frames: int = 512) -> None:
        super().__init__()
        for name, value in (("width", width), ("n_sources", n_sources), ("chunk_frames", chunk_frames)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise PartsimError(f"SeparatorUNet {name} must be a positive integer, got {value!r}")
        if chunk_frames % 2 ** SEPARATOR_DEPTH:
            raise PartsimError(f"SeparatorUNet chunk_frames must be a multiple of {2 ** SEPARATOR_DEPTH}, "
                               f"got {chunk_frames}")
        self.stft = SeparatorSTFT.for_sample_rate(sample_rate)
        self.sample_rate = sample_rate
        self.width = width
        self.n_sources = n_sources
        self.chunk_frames = chunk_frames
        self.unets = nn.ModuleList(SpleeterUNet(width) for _ in range(n_sources))

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, width={self.width}, n_sources={self.n_sources}, "
                f"chunk_frames={self.chunk_frames}, n_fft={self.stft.n_fft}, hop={self.stft.hop_length}, "
                f"n_bins={self.stft.n_bins}")

    def forward(self, mix_magnitude: torch.Tensor) -> torch.Tensor:
        """Estimated magnitudes ``(batch, n_sources, n_bins, frames)`` from mixture magnitudes.

        Args:
            mix_magnitude: ``(batch, bins, frames)`` with ``bins >= n_bins`` (only the lowest ``n_bins`` are used)
                and ``frames`` a multiple of 64.

        Raises:
            PartsimError: wrong shape.
        """
        if (mix_magnitude.dim() != 3 or mix_magnitude.shape[1] < self.stft.n_bins
                or mix_magnitude.shape[2] % 2 ** SEPARATOR_DEPTH or mix_magnitude.shape[2] == 0):
            raise PartsimError(f"SeparatorUNet expects magnitudes shaped (batch, >= {self.stft.n_bins} bins, "
                               f"frames multiple of {2 ** SEPARATOR_DEPTH}), got {tuple(mix_magnitude.shape)}")
        magnitude = mix_magnitude[:, None, : self.stft.n_bins, :]
        return torch.cat([unet(magnitude) for unet in self.unets], dim=1)

    def soft_mask(self, estimates: torch.Tensor, source: int, total_bins: int) -> torch.Tensor:
        """Ratio mask ``(total_bins, frames)`` of one source from the estimated magnitudes ``(n_sources, n_bins,
        frames)``: ``(e_i^2 + eps / n) / (sum_j e_j^2 + eps)``, so the masks of all sources sum to 1 (Spleeter's
        soft masking, separation exponent 2). Bins above ``n_bins`` get the frame's mask averaged over frequency
        (Spleeter's ``mask_extension="average"``), which keeps the sum at 1 there too."""
        power = estimates.float() ** 2
        mask = (power[source] + MASK_EPSILON / self.n_sources) / (power.sum(dim=0) + MASK_EPSILON)
        extra = total_bins - mask.shape[0]
        if extra > 0:
            average = mask.mean(dim=0, keepdim=True)
            mask = torch.cat([mask, average.expand(extra, mask.shape[1])], dim=0)
        return mask

    @torch.inference_mode()
    def separate(self, audio: torch.Tensor, chunks_per_batch: int = 8) -> torch.Tensor:
        """Separate one mixture ``(samples,)`` at :attr:`sample_rate` into ``(n_sources, samples)``.

        The whole track's STFT is cut into excerpts of :attr:`chunk_frames` frames (the last zero-padded), run
        through the U-Nets ``chunks_per_batch`` at a time in eval mode, masked and inverted once per source, so
        a long track needs no overlap handling (as Spleeter does).
        """
        if audio.dim() != 1:
            raise PartsimError(f"SeparatorUNet.separate expects one mono signal (samples,), got {tuple(audio.shape)}")
        was_training = self.training
        self.eval()
        try:
            samples = audio.shape[0]
            spec = self.stft.spectrogram(audio)                       # (total_bins, frames)
            total_bins, frames = spec.shape
            n_chunks = -(-frames // self.chunk_frames)
            magnitude = spec.abs()[: self.stft.n_bins]
            padded = nn.functional.pad(magnitude, (0, n_chunks * self.chunk_frames - frames))
            chunks = padded.reshape(self.stft.n_bins, n_chunks, self.chunk_frames).permute(1, 0, 2)
            estimates = torch.cat([self(chunks[i: i + chunks_per_batch]).float()
                                   for i in range(0, n_chunks, chunks_per_batch)])   # (chunks, S, bins, T)
            estimates = estimates.permute(1, 2, 0, 3).reshape(self.n_sources, self.stft.n_bins, -1)[..., :frames]
            outputs = []
            for source in range(self.n_sources):
                # One source at a time keeps the peak memory at a few track-sized spectrograms.
                outputs.append(self.stft.waveform(self.soft_mask(estimates, source, total_bins) * spec, samples))
            return torch.stack(outputs)
        finally:
            self.train(was_training)


# ==============================================================================================================
# End of the separator U-Net section.
# ==============================================================================================================


# ==============================================================================================================
# Chapter 4: CSN encoder (thesis Fig. 4.6), one network with five instrument subspaces
# ==============================================================================================================

#: Blocks of :class:`CSNEncoder`: two 3x3 convolutions each, then 2x2 max pooling (10 convolutions, 5 poolings).
CSN_BLOCKS = 5

#: Convolutions per block of :class:`CSNEncoder` (U-Net's encoder: two per resolution).
CSN_CONVOLUTIONS_PER_BLOCK = 2


def _csn_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """One block of :class:`CSNEncoder`: 2 x [3x3 convolution (stride 1, padding 1) + batch norm + ReLU], then
    2x2 max pooling (stride 2), as in U-Net's encoder (thesis Fig. 4.6).

    ``ceil_mode`` pooling keeps an odd axis's last row/column, so any number of frames (and of mel bands) works.
    """
    layers: list[nn.Module] = []
    for index in range(CSN_CONVOLUTIONS_PER_BLOCK):
        # No bias: the batch norm that follows has one.
        layers += [nn.Conv2d(in_channels if index == 0 else out_channels, out_channels, kernel_size=3, stride=1,
                             padding=1, bias=False),
                   nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
    return nn.Sequential(*layers)


def subspace_mask(part_index: int, n_parts: int = 5, dim: int = 128) -> torch.Tensor:
    """Binary mask ``m_c`` of thesis eq. 4.3: ``(n_parts * dim,)`` floats, 1 on ``[c D, (c + 1) D)``, else 0.

    Subspace ``c`` belongs to instrument ``INSTRUMENTS[c]`` (drums, bass, piano, guitar, others). Used by the
    chapter-4 losses (``partsim_core.losses.masked_triplet_loss``) and evaluations.

    Args:
        part_index: Instrument index ``c`` in ``[0, n_parts)``.
        n_parts: Number of subspaces (5).
        dim: Size ``D`` of one subspace (128).

    Raises:
        PartsimError: an index outside ``[0, n_parts)`` or non-positive sizes.
    """
    for name, value in (("n_parts", n_parts), ("dim", dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise PartsimError(f"subspace_mask {name} must be a positive integer, got {value!r}")
    if isinstance(part_index, bool) or not isinstance(part_index, int) or not 0 <= part_index < n_parts:
        raise PartsimError(f"subspace_mask part_index must be an integer in [0, {n_parts}), got {part_index!r}")
    mask = torch.zeros(n_parts * dim)
    mask[part_index * dim: (part_index + 1) * dim] = 1.0
    return mask


def masked(embedding: torch.Tensor, part_index: int, n_parts: int = 5) -> torch.Tensor:
    """``f(x) m_c``: the embedding ``(..., n_parts * D)`` with every dimension outside subspace ``c`` set to 0.

    The result keeps all ``n_parts * D`` dimensions (as in eq. 4.1), so Euclidean distances between masked
    embeddings equal distances within the subspace. Used by chapter 4's evaluations and losses.

    Raises:
        PartsimError: the last axis is not divisible by ``n_parts`` or the index is out of range.
    """
    if embedding.dim() < 1 or embedding.shape[-1] % n_parts:
        raise PartsimError(f"masked expects embeddings whose last axis is a multiple of {n_parts}, "
                           f"got shape {tuple(embedding.shape)}")
    mask = subspace_mask(part_index, n_parts, embedding.shape[-1] // n_parts).to(device=embedding.device, dtype=embedding.dtype)
    return embedding * mask


class CSNEncoder(nn.Module):
    """Conditional similarity network of chapter 4: log-mel of a mix ``(batch, n_mels, frames)`` -> ``(batch, 640)``.

    Thesis Fig. 4.6 ("10 convolutional layers with batch normalization and ReLU, and max pooling applied every two
    convolutional layers"; "the encoder portion of U-Net was referenced"). The figure's channel numbers and kernel
    sizes are not in our text of the thesis; our choices and why:

    * 5 blocks of [3x3 conv + batch norm + ReLU] x 2 followed by 2x2 max pooling (stride 2): U-Net's encoder
      (Ronneberger et al. 2015) uses 3x3 kernels, two per resolution, and 2x2 pooling; padding 1 keeps the size
      within a block. Channels ``width x (1, 2, 4, 8, 16)`` double per block as in U-Net (U-Net: 64 ... 1024;
      presets choose ``width``, e.g. 16 -> 16 ... 256). Unlike :class:`PartCNN` the first block is *not*
      strided: Fig. 4.6 has the pooling after every two convolutions, so we keep that order.
    * Average over time ("Time Ave."), keeping the ``ceil(n_mels / 32)`` frequency rows, which are flattened with
      the channels (``16 width x rows`` features). As in :class:`PartCNN`: any number of frames (3-, 5-, 10-s
      segments) is accepted and the register a part plays in stays visible to the last layer; averaging over
      frequency as well would throw that away.
    * One fully connected layer to ``n_parts x subspace_dim`` = 5 x 128 = 640 dimensions; subspace ``c`` holds
      ``[128 c, 128 (c + 1))`` for drums, bass, piano, guitar, others (thesis: "in order of increasing
      dimensions"), selected by :func:`subspace_mask` / :func:`masked`.
    * The output is **not** L2-normalised: the norm loss (eq. 4.4) reads each subspace's norm, which must be free
      to go to zero for an absent part. (The pre-training target, eq. 4.7, is normalised over the 640 dims.)

    Args:
        n_mels: Mel bands of the input (fixes the size of the last layer).
        width: Channels of the first block; each later block doubles them.
        n_parts: Number of instrument subspaces (5).
        subspace_dim: Dimensions per subspace (128).

    Raises:
        PartsimError: a non-positive size.
    """

    def __init__(self, n_mels: int, width: int = 16, n_parts: int = 5, subspace_dim: int = 128) -> None:
        super().__init__()
        for name, value in (("n_mels", n_mels), ("width", width), ("n_parts", n_parts),
                            ("subspace_dim", subspace_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise PartsimError(f"CSNEncoder {name} must be a positive integer, got {value!r}")
        self.n_mels = n_mels
        self.width = width
        self.n_parts = n_parts
        self.subspace_dim = subspace_dim
        self.embedding_dim = n_parts * subspace_dim
        channels = [1] + [width * 2 ** block for block in range(CSN_BLOCKS)]
        self.features = nn.Sequential(*(_csn_block(channels[i], channels[i + 1]) for i in range(CSN_BLOCKS)))
        self.frequency_rows = pooled_size(n_mels, CSN_BLOCKS)
        self.projection = nn.Linear(channels[-1] * self.frequency_rows, self.embedding_dim)
        # channels_last: oneDNN's (CPU) and cuDNN's fast convolution layout (see PartCNN).
        self.to(memory_format=torch.channels_last)

    def extra_repr(self) -> str:
        return (f"n_mels={self.n_mels}, width={self.width}, n_parts={self.n_parts}, "
                f"subspace_dim={self.subspace_dim}")

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Embed a batch of log-mel spectrograms of mixes.

        Args:
            mel: ``(batch, n_mels, frames)`` or ``(batch, 1, n_mels, frames)``, values in [0, 1], any frames >= 1.

        Returns:
            ``(batch, n_parts * subspace_dim)`` embeddings, not normalised.

        Raises:
            PartsimError: wrong number of dimensions or of mel bands.
        """
        if mel.dim() == 3:
            mel = mel.unsqueeze(1)
        if mel.dim() != 4 or mel.shape[1] != 1 or mel.shape[2] != self.n_mels or mel.shape[3] == 0:
            raise PartsimError(f"CSNEncoder expects log-mel shaped (batch, {self.n_mels}, frames), got "
                               f"{tuple(mel.shape)}")
        features = self.features(mel.contiguous(memory_format=torch.channels_last))  # (batch, 16w, rows, t)
        features = features.mean(dim=3).flatten(1)     # time average -> (batch, 16 width * rows)
        return self.projection(features)

    def subspaces(self, embedding: torch.Tensor) -> torch.Tensor:
        """View ``(batch, 640)`` embeddings as ``(batch, n_parts, subspace_dim)``, subspaces in INSTRUMENTS order."""
        return embedding.reshape(*embedding.shape[:-1], self.n_parts, self.subspace_dim)


# ==============================================================================================================
# End of the chapter-4 CSN encoder section.
# ==============================================================================================================
