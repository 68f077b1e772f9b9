"""The model object users hold: ``SpeakerModel`` loads a pretrained folder
(``inference.pretrained``) or an exported ``.onnx`` file
(``inference.export``) behind one encoder contract (``inference.backends``)
and offers what speaker verification needs:

* embeddings of files (length-batched, cached by content:
  ``extraction.embed_files``) or of signals;
* the cosine score of a pair;
* the calibrated log-likelihood ratio of a score, with the model's own
  calibration (``<folder>/calibration.json``, or the one an exported file
  recorded);
* the decision at an operating point, by the model's own threshold: the
  EER or minDCF point of its calibration, the Bayes rule of its
  calibration, or (uncalibrated) the EER threshold of the last trial list
  the folder was scored on (``<folder>/verification.json``, which
  ``record_threshold`` writes), else 0.5. Nothing is read from outside the
  model's folder or file;
* its export to one ONNX or TorchScript file that records the calibration
  and the threshold (``export``).

A calibration is bound to its model: one fitted on other weights than the
folder's (or than those an exported file recorded at export) is refused.
A folder's ``hyperparams.yaml`` runs when it loads: by default only folders
that pass ``trust.check_trusted`` load, checked when the model object is
made (``trust_folder=True`` for a folder whose author you trust).

The model is loaded on first use, so every bad file or option is reported
before it loads. Messages name the command-line options of ``python -m
speechbrain_mrmha`` (``--threshold``, ``--operating-point``, ``--backend``),
the keyword arguments of the same names here.

Authors
 * speechbrain-mrmha developers
"""

import json
import logging
import math
from pathlib import Path
from typing import NamedTuple, Optional

import torch

from speechbrain_mrmha.dataio.audio import audio_seconds, load_audio
from speechbrain_mrmha.dataio.problems import raise_problems
from speechbrain_mrmha.inference import backends, extraction, pretrained
from speechbrain_mrmha.inference.pretrained import (
    CALIBRATION_FILE,
    THRESHOLD_FILE,
    check_pretrained,
    load_calibration,
    load_threshold,
    weights_fingerprint,
    write_threshold,
)
from speechbrain_mrmha.inference.trust import check_trusted
from speechbrain_mrmha.layers.lengths import level_problem, signal_levels
from speechbrain_mrmha.scoring.calibration import Calibration

__all__ = [
    "DEFAULT_THRESHOLD",
    "DecisionRule",
    "Verification",
    "Embedded",
    "Attention",
    "utterance_attention",
    "read_calibration",
    "read_threshold",
    "check_threshold",
    "SpeakerModel",
]

logger = logging.getLogger(__name__)
PROG = "python -m speechbrain_mrmha"
DEFAULT_THRESHOLD = 0.5  # cosine, when a model records none
SAMPLE_RATE = 16000  # of every model here (Fbank and lengths.HOP_SAMPLES)
# backend names (the command line's --backend) -> the class that runs them
BACKENDS = {
    "pytorch": backends.TorchEncoder,
    "onnxruntime": backends.OnnxEncoder,
}
POINT_NAMES = {"eer": "EER", "min_dcf": "minDCF"}
# metadata key of an exported file: the weights its folder had at export
# (``pretrained.weights_fingerprint``), which its calibration must match
WEIGHTS_KEY = "weights"


def check_threshold(threshold, option="--threshold"):
    """A cosine decision threshold as a float: finite and inside the range
    of cosine scores, [-1, 1] (outside it every trial, a file against
    itself included, gets the same verdict).

    Arguments
    ---------
    threshold : float
    option : str
        What it was given as, for the message.

    Returns
    -------
    threshold : float

    Example
    -------
    >>> check_threshold(0.25)
    0.25
    >>> check_threshold(5)
    Traceback (most recent call last):
    ...
    ValueError: --threshold 5: must be a finite cosine score in [-1, 1]
    """
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(threshold, bool) or not (
        math.isfinite(value) and -1.0 <= value <= 1.0
    ):
        raise ValueError(
            f"{option} {threshold!r}: must be a finite cosine score in [-1, 1]"
        )
    return value


class DecisionRule(NamedTuple):
    """How a trial is decided: same speaker when its score on ``scale`` is
    above ``threshold``.

    Arguments
    ---------
    threshold : float
    scale : str
        "cosine" (the raw score) or "llr" (the calibrated log-likelihood
        ratio).
    source : str
        Where the threshold came from, for the user.

    Example
    -------
    >>> DecisionRule(0.5, "cosine", "default").scale
    'cosine'
    """

    threshold: float
    scale: str
    source: str


class Verification(NamedTuple):
    """The verdict on one trial (``SpeakerModel.verify``).

    Arguments
    ---------
    cosine : float
        The cosine score of the two embeddings.
    llr : float or None
        The calibrated log-likelihood ratio (nats, > 0 favours the same
        speaker); None when the model has no calibration.
    decision : bool
        True: same speaker.
    threshold : float
        The threshold the decision used.
    scale : str
        What the threshold is on: "cosine" or "llr".
    source : str
        Where the threshold came from.

    Example
    -------
    >>> v = Verification(0.7, None, True, 0.5, "cosine", "default")
    >>> v.decision, v.llr
    (True, None)
    """

    cosine: float
    llr: Optional[float]
    decision: bool
    threshold: float
    scale: str
    source: str


class Embedded(NamedTuple):
    """Embeddings of files (``SpeakerModel.embed_files``).

    Arguments
    ---------
    embeddings : dict
        File path -> (emb_dim,) embedding.
    entropies : dict
        File path -> (heads,) attention entropy (empty for poolings
        without attention, and for the onnxruntime backend).

    Example
    -------
    >>> Embedded({"a.wav": torch.ones(3)}, {}).embeddings["a.wav"].shape
    torch.Size([3])
    """

    embeddings: dict
    entropies: dict


class Attention(NamedTuple):
    """The attention of a model's pooling over one utterance.

    Example
    -------
    >>> Attention(torch.ones(1, 4) / 4, "SelfAttentivePooling", None, 1.0).pooling
    'SelfAttentivePooling'
    """

    weights: torch.Tensor
    """(heads, frames) on the CPU; each row sums to 1."""
    pooling: str
    """The pooling's class name."""
    temperatures: Optional[list]
    """The temperature of each head (MRMHA), or None."""
    seconds: float
    """The utterance's length."""


def utterance_attention(encoder, signal):
    """(heads, time) attention weights of one utterance under a loaded model.

    Computes the features, the sentence normalisation and the ResNet frames
    exactly as ``encode_batch`` does, then ``pooling.attention``.

    Arguments
    ---------
    encoder : speechbrain_mrmha.inference.backends.TorchEncoder
        A pretrained folder run by PyTorch (``backends.load_backend``; a
        loaded ``speechbrain.inference.EncoderClassifier`` also does) whose
        pooling is one of the attention poolings.
    signal : torch.Tensor
        (samples,) waveform at the model's sample rate.

    Returns
    -------
    weights : torch.Tensor
        (heads, time') on the CPU; each row sums to 1.

    Example
    -------
    >>> from speechbrain_mrmha.inference.backends import TorchEncoder
    >>> from speechbrain_mrmha.inference.pretrained import example_folder
    >>> encoder = TorchEncoder(example_folder(num_heads=2))  # MRMHA, 2 heads
    >>> utterance_attention(encoder, torch.randn(16000)).shape
    torch.Size([2, 13])
    """
    pooling = encoder.mods.embedding_model.pooling
    if not hasattr(pooling, "attention"):
        raise ValueError(
            f"the model's pooling {type(pooling).__name__} has no attention weights"
        )
    signal = torch.as_tensor(signal)
    if signal.dim() != 1:
        raise ValueError(
            f"utterance_attention: expected a (samples,) signal, got shape "
            f"{tuple(signal.shape)}"
        )
    wavs = signal[None].float().to(encoder.device)
    lengths = torch.ones(1, device=encoder.device)
    with torch.no_grad():
        feats = encoder.mods.compute_features(wavs)
        feats = encoder.mods.mean_var_norm(feats, lengths)
        frames, frame_lengths = encoder.mods.embedding_model.frames(
            feats, lengths
        )
        weights = pooling.attention(frames, frame_lengths)
    return weights[0].cpu()


def _exported(source):
    """True for an exported file, False for a pretrained folder (or a
    path that does not exist: a folder's errors name it)."""
    return Path(source).is_file()


def _read_metadata(path):
    """The metadata an exported file records (``export.read_metadata``)."""
    from speechbrain_mrmha.inference.export import read_metadata

    return read_metadata(path)


def read_calibration(source):
    """The calibration of a model: ``<folder>/calibration.json``, or the
    one an exported ``.onnx`` file recorded from its folder. Either must
    have been fitted on the model's weights (the folder's, or those the
    file recorded at export): another model's is refused; one that records
    no weights (an older file) loads with a warning.

    Arguments
    ---------
    source : str or Path
        A pretrained folder or an exported ``.onnx`` file.

    Returns
    -------
    calibration : Calibration or None
        None when the model has none.
    where : str or None
        Where it was read, for the user (None without calibration).

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_mrmha.inference.pretrained import write_calibration
    >>> folder = Path(tempfile.mkdtemp())
    >>> read_calibration(folder)
    (None, None)
    >>> _ = write_calibration(folder, Calibration(slope=10.0, offset=-5.0))
    >>> calibration, where = read_calibration(folder)
    >>> calibration.slope, where == str(folder / "calibration.json")
    (10.0, True)
    """
    source = Path(source)
    if not _exported(source):
        calibration = load_calibration(source)
        where = str(source / CALIBRATION_FILE)
    else:
        text = _read_metadata(source).get("calibration")
        if text is None:
            return None, None
        where = f"{source} (recorded calibration)"
        try:
            data = json.loads(text)
        except ValueError as error:
            raise ValueError(f"{where}: not valid JSON ({error})") from None
        calibration = Calibration.from_dict(data, source=where)
        recorded = _read_metadata(source).get(WEIGHTS_KEY)
        if recorded is None:
            if calibration.fitted_on:
                raise ValueError(
                    f"{where}: fitted on {calibration.fitted_on}, but "
                    f"{source} records no weights to check it against; "
                    "export the folder again"
                )
            calibration.check_model({}, where, str(source))  # warns
        else:
            try:
                weights = json.loads(recorded)
            except ValueError:
                weights = None
            if not isinstance(weights, dict):
                raise ValueError(
                    f"{source}: recorded {WEIGHTS_KEY} {recorded!r} is not "
                    "a JSON object"
                )
            calibration.check_model(weights, where, f"{source} (recorded)")
    return calibration, (None if calibration is None else where)


def read_threshold(source):
    """The cosine decision threshold of an uncalibrated model: the one its
    folder records (``pretrained.load_threshold``: the EER threshold of the
    last trial list the folder was scored on), or the one an exported file
    recorded from its folder; else ``DEFAULT_THRESHOLD``.

    Arguments
    ---------
    source : str or Path
        A pretrained folder or an exported ``.onnx`` file.

    Returns
    -------
    threshold : float
    where : str
        Where the value came from, for the user.

    Example
    -------
    >>> read_threshold("/nonexistent/pretrained")
    (0.5, 'default; no /nonexistent/pretrained/verification.json')
    """
    source = Path(source)
    if not _exported(source):
        recorded = load_threshold(source)
        if recorded is None:
            return DEFAULT_THRESHOLD, f"default; no {source / THRESHOLD_FILE}"
        return recorded
    metadata = _read_metadata(source)
    if "threshold" not in metadata:
        return DEFAULT_THRESHOLD, f"default; {source} records none"
    threshold = check_threshold(
        metadata["threshold"], f"{source}: recorded threshold"
    )
    where = metadata.get("threshold_source", "recorded")
    return threshold, f"{where}; recorded in {source}"


def _check_backend(source, backend, device, precision):
    """The name of the backend that runs ``source``: "pytorch" for a
    pretrained folder, "onnxruntime" for an exported file; a ``backend``
    asked for that cannot run it, or not on ``device`` or in ``precision``
    (the backend class's ``device`` and ``precisions``), fails here, before
    anything is read."""
    if backend is None:
        backend = "onnxruntime" if _exported(source) else "pytorch"
    if backend not in BACKENDS:
        raise ValueError(
            f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}"
        )
    if backend == "onnxruntime" and source.is_dir():
        raise ValueError(
            f"--backend onnxruntime takes an exported .onnx file as "
            f"--model ('{PROG} export --model {source} --format onnx "
            "--out FILE'), got the folder " + str(source)
        )
    if backend == "pytorch" and _exported(source):
        raise ValueError(
            f"--model {source} is a file; the pytorch backend takes a "
            "pretrained folder (for an exported .onnx file add --backend "
            "onnxruntime)"
        )
    runs_on = getattr(BACKENDS[backend], "device", None)
    if runs_on is not None and device != runs_on:
        raise ValueError(
            f"--backend {backend} runs on the {runs_on} here, got --device "
            f"{device}; use --backend pytorch for {device}"
        )
    if precision not in BACKENDS[backend].precisions:
        raise ValueError(
            f"--backend {backend} runs in "
            f"{', '.join(BACKENDS[backend].precisions)}, got --precision "
            f"{precision}"
        )
    return backend


class SpeakerModel:
    """A speaker-verification model: a pretrained folder (PyTorch) or an
    exported ``.onnx`` file (onnxruntime), its calibration and its
    decision threshold. The encoder is loaded on first use.

    Arguments
    ---------
    source : str or Path
        A pretrained folder (``pretrained.write_pretrained``; read in place,
        nothing is written but by ``record_threshold``) or an ``.onnx`` file
        of ``export.export_model``.
    device : str
        "cpu" or "cuda:N" (an exported file runs on the CPU).
    precision : str
        "fp32", or "bf16" / "fp16" autocast (PyTorch only; see
        ``extraction.encode_signals``).
    backend : str or None
        "pytorch" (a folder) or "onnxruntime" (an ``.onnx`` file); None
        follows ``source``. A mismatch is an error.
    channels_last : bool
        Store the convolution weights channels-last (PyTorch; faster on
        CPU, same embeddings up to float rounding).
    trust_folder : bool
        Load a folder whose ``hyperparams.yaml`` calls objects outside the
        allow-list (``trust.check_trusted``; it can run any code). False
        (default): such a folder is refused here, naming the tag and line.

    Example
    -------
    >>> from speechbrain_mrmha.inference.pretrained import example_folder
    >>> model = SpeakerModel(example_folder())  # an untrained tiny model
    >>> signal = 0.1 * torch.randn(16000, generator=torch.Generator().manual_seed(0))
    >>> result = model.verify(signal, signal)
    >>> round(result.cosine, 4), result.llr, result.decision, result.threshold
    (1.0, None, True, 0.5)
    """

    def __init__(
        self,
        source,
        device="cpu",
        precision="fp32",
        backend=None,
        channels_last=True,
        trust_folder=False,
    ):
        extraction.check_device(device)
        backends.check_precision(precision)
        self.source = Path(source)
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        self.trust_folder = bool(trust_folder)
        self.backend = _check_backend(self.source, backend, device, precision)
        if self.backend == "pytorch":
            check_pretrained(self.source)
            check_trusted(self.source / "hyperparams.yaml", self.trust_folder)
        self.calibration, self.calibration_source = read_calibration(
            self.source
        )
        self.default_threshold = read_threshold(self.source)
        self._encoder = None

    @property
    def encoder(self):
        """The loaded encoder (``backends.load_backend``), on first use."""
        if self._encoder is None:
            if self.backend == "pytorch":  # the folder, as checked
                encoder = backends.TorchEncoder.from_encoder(
                    pretrained.load_encoder(
                        self.source,
                        device=self.device,
                        channels_last=self.channels_last,
                        trust_folder=self.trust_folder,
                    ),
                    source=str(self.source),
                )
            else:
                encoder = backends.load_backend(self.source, device=self.device)
            backends.check_precision(
                self.precision, encoder.precisions, encoder.source
            )
            self._encoder = encoder
        return self._encoder

    def cache(self, path=None, data_folder=None):
        """An embedding cache tied to this model's content, the data folder
        and the precision (``extraction.EmbeddingCache``).

        Arguments
        ---------
        path : str or Path or None
            The cache file; None keeps it in memory.
        data_folder : str or Path or None
            The folder the audio comes from.

        Returns
        -------
        cache : extraction.EmbeddingCache
        """
        fingerprint = extraction.cache_fingerprint(
            self.source, data_folder, self.precision
        )
        return extraction.EmbeddingCache(path, fingerprint)

    def embed_files(
        self,
        files,
        durations=None,
        cache=None,
        batch_seconds=None,
        max_batch_size=64,
        progress=False,
    ):
        """Embeddings of audio files, each distinct file once, in batches of
        similar length (``extraction.embed_files``). Every unreadable or too
        short file is listed in one error before the model loads, every file
        that cannot be embedded in one error after.

        Arguments
        ---------
        files : iterable of str or Path
            Audio files (repeats are embedded once).
        durations : dict or None
            File -> duration in seconds; None reads the headers.
        cache : extraction.EmbeddingCache or None
            Filled and saved (``cache``); None: a fresh one in memory.
        batch_seconds : float or None
            Padded audio per batch; None: 12 s on a CPU, 240 s on a GPU.
        max_batch_size : int
            Most files per batch.
        progress : bool
            Show progress bars.

        Returns
        -------
        embedded : Embedded
            Keyed by the files as given (``str``).
        """
        files = list(dict.fromkeys(str(path) for path in files))
        if durations is None:
            durations, problems = {}, []
            for path in files:
                try:
                    durations[path] = audio_seconds(path, SAMPLE_RATE)
                except ValueError as error:  # names the file
                    problems.append(str(error))
            raise_problems(problems, "files cannot be used")
        durations = {str(path): value for path, value in durations.items()}
        embeddings, entropies = extraction.embed_files(
            self.encoder,
            {path: path for path in files},
            {path: durations[path] for path in files},
            extraction.EmbeddingCache(None, None) if cache is None else cache,
            batch_seconds=batch_seconds,
            max_batch_size=max_batch_size,
            sample_rate=self.encoder.sample_rate,
            progress=progress,
            precision=self.precision,
        )
        return Embedded(embeddings, entropies)

    def embed_signals(self, signals, names=None):
        """Embeddings of waveforms, as one padded batch (every one the
        embedding of its signal alone). A signal with no usable signal
        (below ``layers.lengths.SILENCE_FLOOR_DBFS``) is refused, named.

        Arguments
        ---------
        signals : list of torch.Tensor
            (samples,) waveforms at the model's sample rate.
        names : list of str, optional
            What to call each signal in an error (e.g. its file); default
            "signal 1", "signal 2", ...

        Returns
        -------
        embeddings : torch.Tensor
            (len(signals), emb_dim) float32 on the CPU.
        """
        signals = [torch.as_tensor(s, dtype=torch.float32) for s in signals]
        if names is None:
            names = [f"signal {i}" for i in range(1, len(signals) + 1)]
        problems = []
        for name, signal in zip(names, signals):
            if signal.dim() != 1:
                problems.append(
                    f"{name}: expected (samples,), got shape "
                    f"{tuple(signal.shape)}"
                )
            elif signal.shape[0] < self.encoder.min_samples:
                problems.append(
                    f"{name}: {signal.shape[0]} samples, need at "
                    f"least {self.encoder.min_samples}"
                )
            else:
                count = torch.tensor([signal.shape[0]])
                level = float(signal_levels(signal[None], count)[0])
                problem = level_problem(level)
                if problem is not None:
                    problems.append(f"{name}: {problem}")
        raise_problems(problems, "signals cannot be embedded")
        embeddings, _ = extraction.encode_signals(
            self.encoder, signals, self.precision
        )
        return embeddings

    def embed_cohort(
        self, cohort, cache=None, batch_seconds=None, max_batch_size=64
    ):
        """The mean embedding of each speaker of a score-normalisation
        cohort (``trials.cohort_utterances``).

        Arguments
        ---------
        cohort : dict
            Speaker -> {audio path: duration in seconds}.
        cache, batch_seconds, max_batch_size
            See ``embed_files``.

        Returns
        -------
        means : torch.Tensor
            (speakers, emb_dim), speakers in the order of ``cohort``.
        """
        durations = {
            path: seconds
            for files in cohort.values()
            for path, seconds in files.items()
        }
        embedded = self.embed_files(
            durations, durations, cache, batch_seconds, max_batch_size
        ).embeddings
        return torch.stack(
            [
                torch.stack([embedded[path] for path in files]).mean(dim=0)
                for files in cohort.values()
            ]
        )

    def score(self, a, b):
        """The cosine score of two embeddings (or of matching rows).

        Arguments
        ---------
        a, b : torch.Tensor
            (emb_dim,) embeddings, or (n, emb_dim) rows.

        Returns
        -------
        cosine : float or torch.Tensor
            A float for two embeddings, (n,) for rows.
        """
        cosine = torch.nn.functional.cosine_similarity(
            torch.as_tensor(a), torch.as_tensor(b), dim=-1
        )
        return float(cosine) if cosine.dim() == 0 else cosine

    def llr(self, cosine, durations=None):
        """The calibrated log-likelihood ratio (nats) of cosine scores, by
        the model's calibration.

        Arguments
        ---------
        cosine : float or torch.Tensor
            A score, or (n,) scores.
        durations : sequence or torch.Tensor, optional
            (enrolment, test) seconds of the trial, or (n, 2) of each;
            needed when the calibration uses the durations.

        Returns
        -------
        llr : float or torch.Tensor
            A float for one score, (n,) float64 for several.
        """
        if self.calibration is None:
            raise ValueError(
                f"{self.source} has no calibration (calibration.json is "
                "written at the end of training when calibration speakers "
                "are held out)"
            )
        scores = torch.as_tensor(cosine, dtype=torch.float64)
        single = scores.dim() == 0
        if durations is not None:
            durations = torch.as_tensor(durations, dtype=torch.float64)
            durations = durations.reshape(-1, 2)
        llrs = self.calibration.llr(scores.reshape(-1), durations)
        return float(llrs[0]) if single else llrs

    def decision_rule(self, operating_point=None, threshold=None):
        """The threshold a decision uses: ``threshold`` (a cosine) if given,
        else the model's calibration at ``operating_point`` ("eer" by
        default, "min_dcf", or "bayes": llr > log((1 - p) / p) at its
        p_target), else (uncalibrated) ``read_threshold``.

        Arguments
        ---------
        operating_point : str or None
            "eer", "min_dcf" or "bayes"; needs a calibration.
        threshold : float or None
            A cosine threshold, finite and in [-1, 1]
            (``check_threshold``); not together with ``operating_point``.

        Returns
        -------
        rule : DecisionRule
        """
        if threshold is not None:
            if operating_point is not None:
                raise ValueError(
                    "--threshold and --operating-point: give one of them"
                )
            return DecisionRule(
                check_threshold(threshold), "cosine", "--threshold"
            )
        calibration = self.calibration
        if calibration is None:
            if operating_point is not None:
                raise ValueError(
                    f"--operating-point {operating_point}: {self.source} has "
                    "no calibration (calibration.json is written at the end "
                    "of training when calibration speakers are held out)"
                )
            return DecisionRule(
                self.default_threshold[0], "cosine", self.default_threshold[1]
            )
        point = operating_point or "eer"
        if point == "bayes":
            return DecisionRule(
                calibration.decision_threshold(),
                "llr",
                "Bayes decision of the model's calibration at p_target "
                f"{calibration.p_target:g}",
            )
        if point not in POINT_NAMES or point not in calibration.thresholds:
            raise ValueError(
                f"the model's calibration has no {point} threshold"
            )
        entry = calibration.thresholds[point]
        return DecisionRule(
            float(entry["cosine"]),
            "cosine",
            f"{POINT_NAMES[point]} point of the model's calibration trials; "
            f"llr {float(entry['llr']):.4f}",
        )

    def decide(
        self, cosine, durations=None, operating_point=None, threshold=None
    ):
        """The verdict on a trial of a given cosine score
        (``decision_rule``; the LLR when the model is calibrated).

        Arguments
        ---------
        cosine : float
        durations : sequence, optional
            (enrolment, test) seconds; see ``llr``.
        operating_point, threshold
            See ``decision_rule``.

        Returns
        -------
        verdict : Verification
        """
        rule = self.decision_rule(operating_point, threshold)
        cosine = float(cosine)
        llr = None
        if self.calibration is not None:
            llr = self.llr(cosine, durations)
        value = llr if rule.scale == "llr" else cosine
        return Verification(
            cosine,
            llr,
            value > rule.threshold,
            rule.threshold,
            rule.scale,
            rule.source,
        )

    def attention(self, audio):
        """The attention weights of every head of the model's pooling over
        one recording (PyTorch backend; an attention pooling).

        Arguments
        ---------
        audio : str or Path or torch.Tensor
            An audio file (any rate, mixed to mono), or a (samples,)
            waveform at the model's sample rate.

        Returns
        -------
        attention : Attention

        Example
        -------
        >>> from speechbrain_mrmha.inference.pretrained import example_folder
        >>> model = SpeakerModel(example_folder(num_heads=2))
        >>> found = model.attention(torch.randn(16000))
        >>> tuple(found.weights.shape), found.pooling, found.seconds
        ((2, 13), 'MultiResolutionMultiHeadAttentionPooling', 1.0)
        """
        signal = audio
        if isinstance(audio, (str, Path)):
            signal = load_audio(audio, SAMPLE_RATE)
        encoder = self.encoder
        pooling = encoder.mods.embedding_model.pooling
        temperatures = None
        if getattr(pooling, "has_temperatures", False):
            temperatures = [float(t) for t in pooling.temperatures]
        return Attention(
            utterance_attention(encoder, signal),
            type(pooling).__name__,
            temperatures,
            signal.shape[0] / encoder.sample_rate,
        )

    def verify(self, a, b, operating_point=None, threshold=None):
        """Whether two recordings are of the same speaker. Bad options come
        first, then every unreadable, too short or non-finite file in one
        error, before the model loads.

        Arguments
        ---------
        a, b : str or Path or torch.Tensor
            Audio files (any rate, mixed to mono), or (samples,) waveforms
            at the model's sample rate.
        operating_point, threshold
            See ``decision_rule``.

        Returns
        -------
        verdict : Verification
        """
        self.decision_rule(operating_point, threshold)
        names, signals, problems = [], [], []
        for index, item in enumerate((a, b), start=1):
            if isinstance(item, (str, Path)):
                names.append(str(item))
                try:
                    signals.append(load_audio(item, SAMPLE_RATE))
                except ValueError as error:  # names the file
                    problems.append(str(error))
            else:
                names.append(f"signal {index}")
                signals.append(item)
        raise_problems(problems, "files cannot be used")
        embeddings = self.embed_signals(signals, names)
        raise_problems(
            [
                f"{name}: the model gave a non-finite embedding (precision "
                f"{self.precision})"
                for name, row in zip(names, embeddings)
                if not torch.isfinite(row).all()
            ],
            "files cannot be used",
        )
        rate = self.encoder.sample_rate
        return self.decide(
            self.score(embeddings[0], embeddings[1]),
            [signal.shape[0] / rate for signal in signals],
            operating_point,
            threshold,
        )

    def record_threshold(self, target_scores, nontarget_scores, trials_file):
        """Record in the model's folder the EER threshold of its raw cosine
        scores on a trial list (``pretrained.write_threshold``): its
        decision threshold without calibration. A folder that cannot be
        written (read-only) is a warning, not an error.

        Arguments
        ---------
        target_scores, nontarget_scores : torch.Tensor
            Raw cosine scores (no score normalisation) of the target and
            non-target trials.
        trials_file : str or Path
            The trial list.

        Returns
        -------
        path : Path or None
            The file written; None when it could not be.
        """
        if _exported(self.source):
            raise ValueError(
                f"{self.source}: an exported file records its threshold "
                "when it is exported; score its pretrained folder"
            )
        try:
            return write_threshold(
                self.source, target_scores, nontarget_scores, trials_file
            )
        except OSError as error:
            logger.warning(
                "the EER threshold was not recorded in %s (%s); its "
                "decisions use its calibration, or %s",
                self.source,
                error,
                DEFAULT_THRESHOLD,
            )
            return None

    def export_metadata(self):
        """What an exported file of this model records besides its graph:
        the decision threshold of an uncalibrated model (``read_threshold``),
        the calibration, and the weights both belong to
        (``pretrained.weights_fingerprint``; ``read_calibration`` checks the
        calibration against them).

        Returns
        -------
        metadata : dict
            str -> str.
        """
        threshold, where = self.default_threshold
        metadata = {"threshold": repr(threshold), "threshold_source": where}
        if not _exported(self.source):
            metadata[WEIGHTS_KEY] = json.dumps(weights_fingerprint(self.source))
        if self.calibration is not None:
            metadata["calibration"] = json.dumps(self.calibration.to_dict())
        return metadata

    def export(self, out, format="onnx", features_input=False):
        """``export.export_model`` of the model's folder (``out``,
        ``format``, ``features_input`` as there), recording its calibration
        and threshold in the file; returns the file written."""
        from speechbrain_mrmha.inference.export import export_model

        if self.backend == "pytorch":  # refused before anything loads
            check_trusted(self.source / "hyperparams.yaml", self.trust_folder)
        return export_model(
            self.source,
            out,
            format=format,
            features_input=features_input,
            metadata=self.export_metadata(),
            trust_folder=self.trust_folder,
        )
