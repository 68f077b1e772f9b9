"""Training crops and speed copies.

Each training utterance is read as a crop of ``sentence_len`` seconds whose
start, and with speed perturbation the speed it is read at, is drawn from
(seed, epoch, utterance) alone: a resumed run, a DDP process or a loader
worker reads the very crops of an uninterrupted single-process run. A copy
at another speed is a new speaker (Yamamoto et al. 2019; WeSpeaker's
``speed_perturb``): with n speakers and speeds s_0 = 1, s_1, ..., copy j of
speaker k has label k + n * j (``speaker_labels``).

Built in the yaml::

    crops: !new:speechbrain_mrmha.training.crops.RandomCrops
        seed: !ref <seed>
        sentence_len: !ref <sentence_len>
        sample_rate: !ref <sample_rate>
        speeds: !apply:speechbrain_mrmha.training.crops.training_speeds
            speed_perturb: !ref <speed_perturb>
            speeds: !ref <speed_perturb_speeds>

Authors
 * speechbrain-mrmha developers
"""

import random

import torchaudio
from speechbrain.dataio.encoder import CategoricalEncoder

from speechbrain_mrmha.dataio.audio import load_audio

__all__ = [
    "RandomCrops",
    "crop",
    "change_speed",
    "training_speeds",
    "speaker_labels",
]


def training_speeds(speed_perturb, speeds):
    """The speeds training reads audio at: [1.0], plus ``speeds`` when
    ``speed_perturb`` is on (each one a copy of every speaker).

    Arguments
    ---------
    speed_perturb : bool
        The switch.
    speeds : list of float
        The perturbation speeds (e.g. [0.9, 1.1]).

    Returns
    -------
    speeds : list of float
        The original speed first.

    Example
    -------
    >>> training_speeds(True, [0.9, 1.1]), training_speeds(False, [0.9, 1.1])
    ([1.0, 0.9, 1.1], [1.0])
    """
    if not speed_perturb:
        return [1.0]
    return [1.0, *map(float, speeds)]


def speaker_labels(speakers, speeds):
    """Label encoder of the training classes: the n speakers, then their
    copies at each other speed, so copy j of speaker k is k + n * j.

    Arguments
    ---------
    speakers : list of str
        The training speakers, in label order.
    speeds : list of float
        As ``training_speeds`` (the original speed first).

    Returns
    -------
    encoder : speechbrain.dataio.encoder.CategoricalEncoder
        Copies are named ``<speaker>@speed<s>``; its expected length is
        set (SpeechBrain checks it on first use).

    Example
    -------
    >>> labels = speaker_labels(["id1", "id2"], [1.0, 0.9, 1.1])
    >>> len(labels), labels.encode_label("id2"), labels.encode_label("id2@speed1.1")
    (6, 1, 5)
    """
    encoder = CategoricalEncoder()
    encoder.update_from_iterable(speakers)
    for speed in speeds[1:]:
        encoder.update_from_iterable(
            f"{speaker}@speed{speed:g}" for speaker in speakers
        )
    # SpeechBrain checks (and warns until told) the size of an encoder when
    # it is used: one class per speaker and speed, so repeated speakers or
    # speeds fail here
    encoder.expect_len(len(speakers) * len(speeds))
    return encoder


def change_speed(sig, speed, sample_rate, length):
    """``sig`` played ``speed`` times faster (tempo and pitch, as sox
    ``speed``), cut or repeated to ``length`` samples.

    Arguments
    ---------
    sig : torch.Tensor
        (samples,) waveform.
    speed : float
        1.0 leaves the signal as it is.
    sample_rate : int
        Of ``sig`` and of the result.
    length : int
        Samples of the result.

    Returns
    -------
    sig : torch.Tensor
        (length,) waveform.

    Example
    -------
    >>> import torch
    >>> sig = torch.randn(17600)
    >>> change_speed(sig, 1.1, 16000, 16000).shape
    torch.Size([16000])
    >>> torch.equal(change_speed(sig, 1.0, 16000, 16000), sig[:16000])
    True
    """
    if speed != 1.0:
        sig = torchaudio.functional.resample(
            sig, int(round(sample_rate * speed)), sample_rate
        )
    if sig.shape[0] < length:
        sig = sig.repeat(-(-length // max(1, sig.shape[0])))
    return sig[:length]


def crop(
    wav, duration, sentence_len, sample_rate, start, extension=None, name=None
):
    """Read ``sentence_len`` seconds of ``wav`` from sample ``start``; a
    shorter file is repeated to the length.

    Arguments
    ---------
    wav : str, Path, bytes or binary file object
        The audio file, or its content in memory (with ``extension``): what
        ``dataio.audio.load_audio`` reads.
    duration : float
        Its duration in seconds (from the annotation).
    sentence_len : float
        Seconds to read.
    sample_rate : int
        The rate to read at.
    start : int or callable
        First sample, or a function of the free span (samples the start can
        move over) giving it.
    extension : str, optional
        The audio's format as a file extension (needed for audio in memory).
    name : str, optional
        What error messages call the audio (default: the path).

    Returns
    -------
    sig : torch.Tensor
        (round(sentence_len * sample_rate),) waveform.

    Example
    -------
    >>> import tempfile, soundfile, torch
    >>> from pathlib import Path
    >>> wav = str(Path(tempfile.mkdtemp()) / "a.wav")
    >>> soundfile.write(wav, torch.arange(8000).numpy() / 8000, 16000, subtype="FLOAT")
    >>> crop(wav, 0.5, 0.25, 16000, start=100)[:2] * 8000
    tensor([100., 101.])
    >>> crop(wav, 0.5, 1.0, 16000, start=0).shape  # repeated
    torch.Size([16000])
    >>> data = Path(wav).read_bytes()  # the same, from memory
    >>> torch.equal(crop(data, 0.5, 0.25, 16000, 100, extension="wav"),
    ...             crop(wav, 0.5, 0.25, 16000, 100))
    True
    """
    length = int(round(sentence_len * sample_rate))
    total = int(duration * sample_rate)
    if total <= length:
        sig = load_audio(
            wav, sample_rate, min_seconds=0, extension=extension, name=name
        )
        return sig.repeat(-(-length // max(1, sig.shape[0])))[:length]
    if callable(start):
        start = start(total - length)
    sig = load_audio(
        wav,
        sample_rate,
        min_seconds=0,
        offset=start,
        num_samples=length,
        extension=extension,
        name=name,
    )
    if sig.shape[0] < length:  # header duration rounded up: pad by repeating
        sig = sig.repeat(-(-length // max(1, sig.shape[0])))[:length]
    return sig


class RandomCrops:
    """The training crops of a run: where each crop starts and which speed
    copy it is read as, drawn from (seed, epoch, utterance), so a resumed
    run reads the very crops of an uninterrupted one. The Brain sets
    ``epoch`` at the start of each training epoch.

    Arguments
    ---------
    seed : int
        The experiment seed.
    sentence_len : float
        Seconds of a training crop.
    sample_rate : int
        The rate audio is read at.
    speeds : list of float
        The speeds of the copies (``training_speeds``), the original first.

    Example
    -------
    >>> crops = RandomCrops(seed=3)
    >>> crops.epoch = 2
    >>> crops.start("utt1", 1000) == RandomCrops(3).start("utt1", 1000)
    False
    >>> crops.start("utt1", 1000) == crops.start("utt1", 1000)
    True
    >>> RandomCrops(3, speeds=[1.0, 0.9, 1.1]).copy("utt1") in (0, 1, 2)
    True
    """

    def __init__(self, seed, sentence_len=3.0, sample_rate=16000, speeds=None):
        self.seed = seed
        self.sentence_len = float(sentence_len)
        self.sample_rate = int(sample_rate)
        self.speeds = [1.0] if speeds is None else list(speeds)
        self.epoch = 0

    @property
    def length(self):
        """Samples of a crop."""
        return int(round(self.sentence_len * self.sample_rate))

    def start(self, utterance, span):
        """A start in [0, span] for ``utterance`` in the current epoch."""
        key = f"{self.seed}:{self.epoch}:{utterance}"
        return random.Random(key).randint(0, span)

    def copy(self, utterance):
        """Which speed copy ``utterance`` is read as in the current epoch
        (0: the original), each equally likely."""
        key = f"{self.seed}:{self.epoch}:{utterance}:speed"
        return random.Random(key).randrange(len(self.speeds))

    def read(self, utterance, wav, duration, extension=None, name=None):
        """The training crop of ``utterance`` in the current epoch and the
        index of its speed copy.

        Arguments
        ---------
        utterance : str
            The utterance ID (seeds the draws).
        wav : str, Path, bytes or binary file object
            Its audio file, or the file's content in memory (with
            ``extension``), as ``crop`` reads it.
        duration : float
            Its duration in seconds.
        extension : str, optional
            The audio's format as a file extension (for audio in memory).
        name : str, optional
            What error messages call the audio (default: the path).

        Returns
        -------
        sig : torch.Tensor
            (length,) waveform: ``sentence_len * speed`` seconds of the file
            played at ``speed``.
        copy : int
            Index of the speed in ``speeds``.
        """
        copy = self.copy(utterance)
        speed = self.speeds[copy]
        sig = crop(
            wav,
            duration,
            self.sentence_len * speed,
            self.sample_rate,
            lambda span: self.start(utterance, span),
            extension=extension,
            name=name,
        )
        return change_speed(sig, speed, self.sample_rate, self.length), copy

    def centre(self, wav, duration):
        """The fixed validation crop: ``sentence_len`` seconds from the
        middle of the file, at the original speed."""
        free = max(0.0, duration - self.sentence_len)
        start = int(free / 2 * self.sample_rate)
        return crop(wav, duration, self.sentence_len, self.sample_rate, start)
