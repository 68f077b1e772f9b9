"""Training augmentation beyond the paper: SpecAugment-style feature masks
(Park et al. 2019) that never touch padded frames, and SpeechBrain's noise
and reverberation from local folders of wav files (nothing downloaded).

Built in the yaml::

    feature_masking: !new:speechbrain_mrmha.training.augment.FeatureMasking
        time_masks: !ref <time_masks>
        time_mask_width: !ref <time_mask_width>
        freq_masks: !ref <freq_masks>
        freq_mask_width: !ref <freq_mask_width>
        seed: !ref <seed>
    wav_augment: !apply:speechbrain_mrmha.training.augment.noise_and_reverb
        noise_folder: !ref <noise_folder>
        rir_folder: !ref <rir_folder>
        csv_folder: !ref <save_folder>
        probability: !ref <augment_probability>

Authors
 * speechbrain-mrmha developers
"""

from pathlib import Path

import torch
from speechbrain.utils.distributed import run_on_main

from speechbrain_mrmha.dataio.files import write_text_atomic

__all__ = ["mask_features", "FeatureMasking", "noise_and_reverb"]

_STEP_SEED = 1_000_003  # masks of step s are drawn from seed * this + s


def mask_features(
    feats, lengths, time_masks, time_width, freq_masks, freq_width, generator
):
    """SpecAugment-style masking (Park et al. 2019) of normalised features:
    per utterance ``time_masks`` bands of up to ``time_width`` frames inside
    its valid frames and ``freq_masks`` bands of up to ``freq_width`` Mel
    channels are set to 0 (the sentence mean); padded frames are never
    changed. Returns a new tensor.

    Arguments
    ---------
    feats : torch.Tensor
        (batch, time, n_mels) features.
    lengths : torch.Tensor
        (batch,) relative lengths in (0, 1].
    time_masks, time_width, freq_masks, freq_width : int
        Number and widest width of the time and frequency masks.
    generator : torch.Generator
        CPU generator the masks are drawn from.

    Returns
    -------
    masked : torch.Tensor
        Same shape as ``feats``.

    Example
    -------
    >>> feats = torch.ones(2, 50, 8)
    >>> out = mask_features(feats, torch.tensor([1.0, 0.5]), 2, 10, 1, 3,
    ...                     torch.Generator().manual_seed(0))
    >>> out.shape, bool(out[1, 25:].eq(1).all()), bool(out.eq(0).any())
    (torch.Size([2, 50, 8]), True, True)
    """
    batch, frames, bands = feats.shape
    valid = (lengths.cpu() * frames).round().long().clamp(1, frames)

    def bands_of(count, width, size):
        width = torch.randint(0, width + 1, (batch, count), generator=generator)
        width = torch.minimum(width, size[:, None])
        start = (
            torch.rand(batch, count, generator=generator)
            * (size[:, None] - width + 1)
        ).long()
        return start, start + width

    def covered(start, end, size):
        index = torch.arange(size)[None, None]
        inside = (index >= start[..., None]) & (index < end[..., None])
        return inside.any(dim=1)

    valid_frames = torch.arange(frames)[None] < valid[:, None]
    mask = covered(*bands_of(time_masks, time_width, valid), frames)
    freq = covered(
        *bands_of(freq_masks, freq_width, torch.full((batch,), bands)), bands
    )
    mask = mask[:, :, None] | (valid_frames[:, :, None] & freq[:, None, :])
    return feats.masked_fill(mask.to(feats.device), 0.0)


class FeatureMasking(torch.nn.Module):
    """``mask_features`` with the widths of a configuration, its masks
    drawn from (seed, optimizer step): a resumed run masks its steps as an
    uninterrupted one does.

    Arguments
    ---------
    time_masks : int
        Time masks per utterance.
    time_mask_width : int
        Widest time mask, in frames.
    freq_masks : int
        Frequency masks per utterance.
    freq_mask_width : int
        Widest frequency mask, in Mel channels.
    seed : int
        The experiment seed.

    Example
    -------
    >>> masking = FeatureMasking(2, 10, 2, 5, seed=1)
    >>> feats, lengths = torch.ones(2, 50, 8), torch.tensor([1.0, 0.5])
    >>> out = masking(feats, lengths, step=7)
    >>> torch.equal(out, masking(feats, lengths, step=7)), bool(out[1, 25:].eq(1).all())
    (True, True)
    """

    def __init__(
        self, time_masks, time_mask_width, freq_masks, freq_mask_width, seed
    ):
        super().__init__()
        self.time_masks = int(time_masks)
        self.time_mask_width = int(time_mask_width)
        self.freq_masks = int(freq_masks)
        self.freq_mask_width = int(freq_mask_width)
        self.seed = int(seed)

    def forward(self, feats, lengths, step):
        """Masked copy of (batch, time, n_mels) ``feats`` with relative
        ``lengths``, the masks of optimizer step ``step``."""
        generator = torch.Generator().manual_seed(self.seed * _STEP_SEED + step)
        return mask_features(
            feats,
            lengths,
            self.time_masks,
            self.time_mask_width,
            self.freq_masks,
            self.freq_mask_width,
            generator,
        )


def noise_and_reverb(noise_folder, rir_folder, csv_folder, probability):
    """SpeechBrain's noise / reverberation augmentation from local folders
    of wav files, or None when neither folder is given.

    The files of each folder are listed in ``<csv_folder>/noise.csv`` and
    ``rir.csv`` (written by the main process) for SpeechBrain's ``AddNoise``
    (SNR 0-15 dB) and ``AddReverb``; each training batch gets one or both
    with probability ``probability``.

    Arguments
    ---------
    noise_folder : str or None
        Folder searched recursively for noise .wav files.
    rir_folder : str or None
        Folder searched recursively for room impulse response .wav files.
    csv_folder : str
        Where the file lists are written.
    probability : float
        Of augmenting a batch.

    Returns
    -------
    augmenter : speechbrain.augment.augmenter.Augmenter or None

    Raises
    ------
    FileNotFoundError
        A folder given holds no .wav file.

    Example
    -------
    >>> import tempfile, soundfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> soundfile.write(folder / "n.wav", torch.zeros(1600).numpy(), 16000)
    >>> print(noise_and_reverb(None, None, folder, 0.6))
    None
    >>> augment = noise_and_reverb(folder, None, folder / "save", 0.6)
    >>> type(augment).__name__, (folder / "save" / "noise.csv").is_file()
    ('Augmenter', True)
    """
    from speechbrain.augment.augmenter import Augmenter
    from speechbrain.augment.time_domain import AddNoise, AddReverb

    folders = {"noise": noise_folder, "rir": rir_folder}
    if not any(folders.values()):
        return None
    augmentations = []
    for kind, folder in folders.items():
        if not folder:
            continue
        files = sorted(Path(folder).rglob("*.wav"))
        if not files:
            raise FileNotFoundError(
                f"{kind}_folder {folder}: no .wav files found"
            )
        csv = Path(csv_folder) / f"{kind}.csv"
        rows = [f"{kind}{i},0,{path},wav," for i, path in enumerate(files)]
        header = "ID,duration,wav,wav_format,wav_opts\n"
        run_on_main(
            write_text_atomic, args=[csv, header + "\n".join(rows) + "\n"]
        )
        if kind == "noise":
            augmentations.append(
                AddNoise(csv_file=str(csv), snr_low=0, snr_high=15)
            )
        else:
            augmentations.append(AddReverb(csv_file=str(csv)))
    return Augmenter(
        parallel_augment=False,
        concat_original=False,
        min_augmentations=1,
        max_augmentations=len(augmentations),
        augment_prob=probability,
        augmentations=augmentations,
    )
