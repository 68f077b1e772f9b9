"""A seeded synthetic speech corpus in the official VoxCeleb1 layout.

For tests and demos without the real data. Each speaker has a voice drawn
once from the seed: mean pitch and its range (an f0 contour with
declination, intonation and jitter), vocal-tract length (formant scaling and
personal vowel targets), speaking rate, voice quality (open quotient,
breathiness, spectral tilt). Utterances are random phone sequences with
pauses: a glottal pulse train and noise sources shaped by time-varying
formant envelopes (frame-wise in the STFT domain, vectorised). Each video
adds its own channel: a random colouring filter with band limits, coloured
background noise at a random SNR and a random level. Verifying speakers
across videos is therefore a real but learnable task.

Layout written (as what vox1_dev_wav.zip and vox1_test_wav.zip unpack to)::

    OUT/wav/id10001/<11-char video id>/00001.wav   16 kHz mono PCM 16-bit
    OUT/meta/veri_test2.txt   label enrol test  (test speakers only)
    OUT/meta/iden_split.txt   split path        (1/2/3 = train/val/test)
    OUT/meta/vox1_meta.csv    official tab-separated columns, Set dev/test
    OUT/synthetic_options.json

The last ``test_speakers`` speakers form the test set: they are the only
speakers in the trial list and are marked ``test`` in vox1_meta.csv. As in
the official iden_split.txt, every file of every speaker is listed there.

Run as ``python -m speechbrain_mrmha.app.synthetic OUT --speakers 8 ...``.

Authors
 * speechbrain_mrmha contributors
"""

import argparse
import inspect
import json
import multiprocessing
import os
from typing import NamedTuple

import numpy as np
import soundfile as sf

from speechbrain_mrmha.dataio.files import replace_folder
from speechbrain_mrmha.dataio.trials import Trial, write_trials

__all__ = [
    "SAMPLE_RATE",
    "SyntheticCorpus",
    "add_keyword_options",
    "generate_corpus",
    "make_trials",
]

SAMPLE_RATE = 16000
OPTIONS_FILE = "synthetic_options.json"
_VERSION = 1
_N_FFT, _HOP = 512, 128
_FREQS = np.fft.rfftfreq(_N_FFT, 1.0 / SAMPLE_RATE)
_WINDOW = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(_N_FFT) / _N_FFT)
_ID_CHARS = np.array(
    list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
)
_NATIONS = [
    "USA",
    "UK",
    "Canada",
    "Australia",
    "India",
    "Ireland",
    "Germany",
    "Norway",
]
# Phones: (kind, five formant targets in Hz for an average adult male voice).
_VOWELS = [
    (270, 2290, 3010, 3600, 4500),
    (390, 1990, 2550, 3600, 4500),
    (530, 1840, 2480, 3600, 4500),
    (660, 1720, 2410, 3600, 4500),
    (730, 1090, 2440, 3600, 4500),
    (570, 840, 2410, 3600, 4500),
    (300, 870, 2240, 3600, 4500),
    (500, 1500, 2500, 3600, 4500),
]
_CONSONANTS = [
    ("nasal", (250, 1100, 2200, 3300, 4500)),
    ("nasal", (250, 1700, 2500, 3300, 4500)),
    ("fric", (4800, 6000, 6900, 7500, 7900)),  # s
    ("fric", (2600, 3500, 4500, 5800, 7000)),  # sh
    ("fric", (1500, 3000, 4500, 6000, 7200)),  # f
    ("vfric", (4800, 6000, 6900, 7500, 7900)),  # z
    ("stop", (3800, 5000, 6200, 7000, 7800)),  # t
    ("stop", (2000, 3000, 4200, 5600, 7000)),  # k
    ("stop", (800, 1800, 2800, 4000, 6000)),
]  # p
_BANDWIDTHS = {
    "vowel": (70, 90, 130, 200, 300),
    "nasal": (90, 200, 250, 300, 400),
    "fric": (700, 900, 1000, 1000, 1000),
    "vfric": (700, 900, 1000, 1000, 1000),
    "stop": (600, 800, 900, 1000, 1000),
    "silence": (70, 90, 130, 200, 300),
}
# (voiced gain, noise gain) per kind
_GAINS = {
    "vowel": (1.0, 0.0),
    "nasal": (0.4, 0.0),
    "fric": (0.0, 0.35),
    "vfric": (0.3, 0.15),
    "stop": (0.0, 0.5),
    "silence": (0.0, 0.0),
}
_PHONES = (
    [("vowel", f) for f in _VOWELS] + _CONSONANTS + [("silence", _VOWELS[-1])]
)
_SILENCE = len(_PHONES) - 1
_DURATIONS = {
    "vowel": 0.10,
    "nasal": 0.06,
    "fric": 0.09,
    "vfric": 0.07,
    "stop": 0.03,
}


class SyntheticCorpus(NamedTuple):
    """Paths of a generated corpus and whether this call generated it.

    Arguments
    ---------
    root, wav_folder, verification_file, iden_split_file, meta_file : str
        The corpus root, its ``wav`` folder and its three meta files.
    generated : bool
        False when an identical corpus was already there (rerun no-op).

    Example
    -------
    >>> c = SyntheticCorpus("o", "o/wav", "o/meta/veri_test2.txt", "s", "m", True)
    >>> c.generated
    True
    """

    root: str
    wav_folder: str
    verification_file: str
    iden_split_file: str
    meta_file: str
    generated: bool


def _draw_voice(rng):
    """A speaker's voice parameters (drawn once per speaker)."""
    male = bool(rng.random() < 0.55)
    voice = {
        "gender": "m" if male else "f",
        "f0": float(np.exp(rng.normal(np.log(115 if male else 205), 0.17))),
        "f0_range": float(rng.uniform(1.0, 4.5)),  # semitones
        "jitter": float(rng.uniform(0.003, 0.02)),
        "vtl": float(rng.normal(1.0 if male else 1.17, 0.05)),  # formant scale
        "rate": float(rng.uniform(0.75, 1.35)),
        "pause_prob": float(rng.uniform(0.1, 0.4)),
        "breath": float(rng.uniform(0.0, 0.35)),
        "open_quotient": float(rng.uniform(0.4, 0.8)),
        "tilt": float(rng.uniform(0.0, 4.0)),  # dB per octave above 500 Hz
        "bw_scale": float(rng.uniform(0.8, 1.5)),
        "vowel_shift": rng.normal(1.0, 0.05, size=(len(_VOWELS), 5)),
    }
    voice["tables"] = _voice_tables(voice)
    return voice


def _voice_tables(voice):
    """Per-phone (log envelope at unit power, gains) for a voice."""
    formants = np.array([f for _, f in _PHONES], float)
    formants[: len(_VOWELS)] *= voice["vowel_shift"]  # personal vowel targets
    bands = np.array([_BANDWIDTHS[kind] for kind, _ in _PHONES], float)
    env = _resonances(formants * voice["vtl"], bands * voice["bw_scale"])
    env -= 0.5 * np.log(np.mean(np.exp(2 * env), axis=1, keepdims=True))
    gains = np.array([_GAINS[kind] for kind, _ in _PHONES], np.float32)
    return env.astype(np.float32), gains


def _draw_channel(rng, strength=1.0):
    """A video's channel: colouring, band limits, noise colour, SNR, level.
    ``strength`` in [0, 1] scales how far it departs from a clean channel."""
    logf = np.log2(np.maximum(_FREQS, 50.0) / 50.0) / np.log2(8000 / 50.0)
    ripple = strength * sum(
        rng.normal(0, 3.0) * np.cos(2 * np.pi * j * logf + rng.uniform(0, 6.3))
        for j in range(1, 5)
    )
    f = np.maximum(_FREQS, 1.0)
    high = 60 + strength * (rng.uniform(60, 300) - 60)
    low = 7800 - strength * (7800 - rng.uniform(3500, 7800))
    colour = (
        10 ** (ripple / 20)
        / np.sqrt(1 + (high / f) ** 4)
        / np.sqrt(1 + (f / low) ** 8)
    )
    return {
        "colour": colour,
        "noise_slope": float(rng.uniform(0.3, 2.0)),
        "snr_db": float(rng.uniform(10, 35) + 20 * (1 - strength)),
        "level_db": float(rng.uniform(-30, -18)),
    }


def _phones(rng, voice, n_samples):
    """Random syllables and pauses: (phone index, start, stop) per segment."""
    rate, lead = (
        voice["rate"],
        min(rng.uniform(0.05, 0.25) * SAMPLE_RATE, 0.15 * n_samples),
    )
    segments, t = [], int(lead)
    end = n_samples - int(
        min(rng.uniform(0.05, 0.2) * SAMPLE_RATE, 0.1 * n_samples)
    )
    n_vowels, n_consonants = len(_VOWELS), len(_CONSONANTS)
    while t < end:
        syllable = (
            [n_vowels + int(rng.integers(n_consonants))]
            if rng.random() < 0.7
            else []
        )
        syllable.append(int(rng.integers(n_vowels)))
        if rng.random() < 0.35:
            syllable.append(n_vowels + int(rng.integers(n_consonants)))
        for phone in syllable:
            kind = _PHONES[phone][0]
            length = int(
                _DURATIONS[kind]
                * np.exp(rng.normal(0, 0.3))
                / rate
                * SAMPLE_RATE
            )
            if kind == "stop":  # closure then burst
                segments.append((_SILENCE, t, t + 2 * length))
                t += 2 * length
            segments.append((phone, t, t + length))
            t += length
        if rng.random() < voice["pause_prob"] / 2:
            pause = int(rng.uniform(0.08, 0.4) / rate * SAMPLE_RATE)
            segments.append((_SILENCE, t, t + pause))
            t += pause
    return [seg for seg in segments if seg[1] < end]


def _moving_average(x, width):
    """Centred moving average of ``x`` along its first axis (edges repeated)."""
    x = np.concatenate(
        [
            np.repeat(x[:1], width // 2, axis=0),
            x,
            np.repeat(x[-1:], width - 1 - width // 2, axis=0),
        ]
    )
    c = np.cumsum(x, axis=0)
    return (
        np.concatenate([c[width - 1 : width], c[width:] - c[:-width]]) / width
    )


def _resonances(formants, bandwidths):
    """Log-magnitude of cascaded 2-pole resonators on the STFT bins.

    ``formants``, ``bandwidths``: (rows, K) in Hz; returns (rows, bins),
    0 at 0 Hz and about log(F/B) at each peak.
    """
    f, fk, bk = (
        _FREQS[None, :, None],
        formants[:, None, :],
        (bandwidths[:, None, :] / 2) ** 2,
    )
    return np.sum(
        np.log(fk**2 + bk)
        - 0.5 * np.log(((f - fk) ** 2 + bk) * ((f + fk) ** 2 + bk)),
        axis=2,
    )


def _synthesize(voice, channel, n_samples, rng):
    """One utterance (float waveform) for a voice through a channel."""
    sr, n, f32 = SAMPLE_RATE, n_samples, np.float32
    envelopes, phone_gains = voice["tables"]
    segments = _phones(rng, voice, n)
    phone = np.array([seg[0] for seg in segments] + [_SILENCE])  # last: silence
    starts = np.array([seg[1] for seg in segments])
    stops = np.array([seg[2] for seg in segments])
    rows = len(phone)

    def segment_at(pos):
        idx = np.searchsorted(starts, pos, side="right") - 1
        return np.where(
            (idx >= 0) & (pos < stops[np.maximum(idx, 0)]), idx, rows - 1
        )

    # source: f0 contour (intonation, declination, jitter) -> glottal pulses
    t = np.arange(n, dtype=f32) / f32(sr)
    knots = np.arange(0, n / sr + 0.3, rng.uniform(0.2, 0.35) / voice["rate"])
    jitter = rng.normal(0, voice["jitter"], n // 80 + 2)
    semitones = (
        np.interp(t, knots, rng.normal(0, voice["f0_range"] / 2, len(knots)))
        + rng.normal(0, 1.0)
        - rng.uniform(1, 4) * (t / t[-1] - 0.5)
    )
    jitter = np.interp(
        t, np.arange(len(jitter)) * 80 / sr, jitter
    )  # ~1 value per 5 ms
    f0 = voice["f0"] * np.exp2(semitones / 12) * (1 + jitter)
    phase = (np.cumsum(f0) / sr % 1.0).astype(f32)
    tp, tn = (
        f32(0.6 * voice["open_quotient"]),
        f32(0.4 * voice["open_quotient"]),
    )
    flow = np.where(
        phase < tp,
        0.5 - 0.5 * np.cos(f32(np.pi) / tp * phase),
        np.where(
            phase < tp + tn,
            np.cos(f32(0.5 * np.pi) / tn * (phase - tp)),
            f32(0),
        ),
    )
    pulses = np.diff(flow, prepend=f32(0))
    pulses /= pulses.std() + f32(1e-9)
    # gains on a 1 ms grid, smoothed over 5 ms
    grid = _moving_average(
        phone_gains[phone[segment_at(np.arange(8, n + 16, 16))]], 5
    )
    voiced, unvoiced = (
        np.repeat(grid[:, 0], 16)[:n],
        np.repeat(grid[:, 1], 16)[:n],
    )
    breath = (
        f32(3 * voice["breath"])
        * rng.standard_normal(n, dtype=f32)
        * (f32(0.3) + flow)
    )
    excitation = voiced * (pulses + breath) + unvoiced * rng.standard_normal(
        n, dtype=f32
    )
    # filter: frame-wise formant envelope x tilt x channel colour, in the STFT domain
    padded = np.pad(excitation, (_N_FFT, _N_FFT))
    frames = np.lib.stride_tricks.sliding_window_view(padded, _N_FFT)[::_HOP]
    centres = np.clip(np.arange(len(frames)) * _HOP - _N_FFT // 2, 0, n - 1)
    # one envelope per phone, cross-faded over 40 ms (coarticulation)
    log_env = _moving_average(envelopes[phone[segment_at(centres)]], 5)
    tilt = (
        -voice["tilt"]
        * np.log2(np.maximum(_FREQS, 500.0) / 500.0)
        / 20
        * np.log(10)
    )
    response = np.exp(log_env + tilt.astype(f32)) * channel["colour"].astype(
        f32
    )
    spectra = np.fft.rfft(frames * _WINDOW.astype(f32), axis=1) * response
    out = np.fft.irfft(spectra, n=_N_FFT, axis=1) * _WINDOW.astype(f32)
    blocks = np.zeros((len(frames) + 3, _HOP), f32)
    for c in range(4):  # overlap-add, hop = N_FFT / 4; sum of hann^2 = 1.5
        blocks[c : c + len(frames)] += out[:, c * _HOP : (c + 1) * _HOP]
    speech = blocks.reshape(-1)[_N_FFT : _N_FFT + n] / 1.5
    # channel noise and level
    active = voiced + unvoiced > 0.1
    speech_rms = np.sqrt(np.mean(speech[active] ** 2)) if active.any() else 1e-3
    m = -(-n // 4096) * 4096  # an FFT-friendly length (a prime n is 10x slower)
    nf = np.fft.rfftfreq(m, 1.0 / sr)
    shape = np.maximum(nf, 50.0) ** (-channel["noise_slope"] / 2) / np.sqrt(
        1 + (60 / np.maximum(nf, 1.0)) ** 4
    )  # power law, rumble cut
    bg = np.fft.irfft(
        np.fft.rfft(rng.standard_normal(m, dtype=f32)) * shape.astype(f32), n=m
    )[:n]
    bg *= speech_rms / (bg.std() + 1e-12) / 10 ** (channel["snr_db"] / 20)
    wave = (speech + bg) * 10 ** (channel["level_db"] / 20) / speech_rms
    return np.clip(wave, -1.0, 32767 / 32768)


def _video_id(rng):
    return "".join(rng.choice(_ID_CHARS, 11))


def make_trials(files, n_trials, rng):
    """Draw a balanced trial list; target pairs always span two videos.

    Arguments
    ---------
    files : list of str
        Paths ``speaker/video/utterance.wav`` (speaker and video read from
        the first two components).
    n_trials : int or None
        Number of trials: ``n_trials // 2`` targets and the rest
        non-targets, all distinct unordered pairs. None takes as many as can
        be balanced.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    list of Trial
        Shuffled trials, each pair in random order.

    Example
    -------
    >>> files = [f"id{s}/v{v}/0000{u}.wav" for s in (1, 2) for v in (1, 2) for u in (1, 2)]
    >>> trials = make_trials(files, 6, np.random.default_rng(0))
    >>> sum(t.label for t in trials), len(trials)
    (3, 6)
    """
    spk = np.array([p.split("/")[0] for p in files])
    vid = np.array([p.split("/")[0] + "/" + p.split("/")[1] for p in files])
    i, j = np.triu_indices(len(files), k=1)
    same_spk = spk[i] == spk[j]
    targets = np.flatnonzero(same_spk & (vid[i] != vid[j]))
    n_nontarget_pairs = int((~same_spk).sum())
    if n_trials is None:
        n_trials = 2 * min(len(targets), n_nontarget_pairs)
    n_tar, n_non = n_trials // 2, n_trials - n_trials // 2
    if n_tar > len(targets) or n_non > n_nontarget_pairs or n_trials < 2:
        raise ValueError(
            f"cannot draw {n_trials} balanced trials: {len(targets)} cross-video "
            f"target pairs and {n_nontarget_pairs} non-target pairs available"
        )
    chosen = [(1, k) for k in rng.choice(targets, n_tar, replace=False)]
    nontargets = np.flatnonzero(~same_spk)
    chosen += [(0, k) for k in rng.choice(nontargets, n_non, replace=False)]
    order, flip = rng.permutation(len(chosen)), rng.random(len(chosen)) < 0.5
    trials = []
    for idx in order:
        label, k = chosen[idx]
        a, b = files[i[k]], files[j[k]]
        trials.append(Trial(label, *((b, a) if flip[idx] else (a, b))))
    return trials


def _keep_heap():
    """Pool initializer: let glibc keep freed memory (no mmap/munmap churn
    for the many same-sized temporaries); a no-op elsewhere."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 28)  # M_MMAP_THRESHOLD: 256 MiB
        libc.mallopt(-1, 1 << 29)  # M_TRIM_THRESHOLD: 512 MiB
    except (OSError, AttributeError):
        pass


def _write_speaker(args):
    """Generate and write every utterance of one speaker (pool worker)."""
    root, seed, s, videos, utterances, min_dur, max_dur, strength = args
    voice = _draw_voice(np.random.default_rng([seed, 0, s]))
    paths, seen = [], set()
    for v in range(videos):
        vrng = np.random.default_rng([seed, 1, s, v])
        video = _video_id(vrng)
        while video in seen:
            video = _video_id(vrng)
        seen.add(video)
        channel = _draw_channel(vrng, strength)
        os.makedirs(os.path.join(root, "wav", f"id{10001 + s}", video))
        for u in range(utterances):
            rng = np.random.default_rng([seed, 2, s, v, u])
            n = int(round(rng.uniform(min_dur, max_dur) * SAMPLE_RATE))
            rel = f"id{10001 + s}/{video}/{u + 1:05d}.wav"
            sf.write(
                os.path.join(root, "wav", rel),
                _synthesize(voice, channel, n, rng),
                SAMPLE_RATE,
                subtype="PCM_16",
            )
            paths.append(rel)
    return voice["gender"], paths


def generate_corpus(
    output_folder,
    speakers=8,
    videos=2,
    utterances=3,
    test_speakers=2,
    min_duration=1.0,
    max_duration=2.0,
    trials=None,
    seed=1234,
    num_workers=None,
    channel_strength=1.0,
):
    """Generate a synthetic VoxCeleb1-layout corpus (atomic, rerun-safe).

    Arguments
    ---------
    output_folder : str
        Corpus root; created by renaming a finished temporary folder into
        place. An identical existing corpus is kept (no-op); a different one
        is an error.
    speakers : int
        Number of speakers (id10001, id10002, ...).
    videos : int
        Videos per speaker, each with its own channel.
    utterances : int
        Utterances per video.
    test_speakers : int
        The last ``test_speakers`` speakers make the test set (>= 2).
    min_duration, max_duration : float
        Utterance duration range in seconds.
    trials : int or None
        Number of trials in veri_test2.txt; None for as many as can be
        balanced.
    seed : int
        Everything is a function of the seed and the options.
    channel_strength : float
        How strongly each video's channel (colouring, band limits, noise)
        departs from a clean one, 0 to 1 (default 1: hard, VoxCeleb-like).
    num_workers : int, optional
        Processes synthesising speakers (default: the CPU count); the
        output does not depend on it.

    Returns
    -------
    SyntheticCorpus
        The paths, and ``generated`` False when nothing had to be done.

    Example
    -------
    >>> import tempfile
    >>> out = os.path.join(tempfile.mkdtemp(), "vox")
    >>> c = generate_corpus(out, speakers=3, videos=2, utterances=1,
    ...                     min_duration=0.5, max_duration=0.6)
    >>> sorted(os.listdir(c.wav_folder)), generate_corpus(out, speakers=3,
    ...     videos=2, utterances=1, min_duration=0.5, max_duration=0.6).generated
    (['id10001', 'id10002', 'id10003'], False)
    """
    options = {
        "version": _VERSION,
        "speakers": int(speakers),
        "videos": int(videos),
        "utterances": int(utterances),
        "test_speakers": int(test_speakers),
        "min_duration": float(min_duration),
        "max_duration": float(max_duration),
        "trials": None if trials is None else int(trials),
        "seed": int(seed),
    }
    if (
        channel_strength != 1.0
    ):  # recorded only when used: older corpora stay valid
        options["channel_strength"] = float(channel_strength)
    if not 0.0 <= channel_strength <= 1.0:
        raise ValueError(
            f"need 0 <= channel_strength <= 1, got {channel_strength}"
        )
    if not 2 <= test_speakers < speakers or speakers > 89999:
        raise ValueError(
            f"need 2 <= test_speakers < speakers <= 89999, got "
            f"test_speakers={test_speakers}, speakers={speakers}"
        )
    if videos < 2 or utterances < 1:
        raise ValueError(
            f"need videos >= 2 (cross-video target trials) and utterances >= 1, "
            f"got videos={videos}, utterances={utterances}"
        )
    if not 0.3 <= min_duration <= max_duration:
        raise ValueError(
            f"need 0.3 <= min_duration <= max_duration, got "
            f"{min_duration}, {max_duration}"
        )
    output_folder = os.path.abspath(output_folder)
    meta = os.path.join(output_folder, "meta")
    result = SyntheticCorpus(
        output_folder,
        os.path.join(output_folder, "wav"),
        os.path.join(meta, "veri_test2.txt"),
        os.path.join(meta, "iden_split.txt"),
        os.path.join(meta, "vox1_meta.csv"),
        True,
    )
    if os.path.isdir(output_folder) and os.listdir(output_folder):
        options_path = os.path.join(output_folder, OPTIONS_FILE)
        if not os.path.isfile(options_path):
            raise FileExistsError(
                f"{output_folder!r} exists, is not empty and holds no "
                f"{OPTIONS_FILE}: not a synthetic corpus; choose another folder"
            )
        with open(options_path) as fh:
            old = json.load(fh)
        if old != options:
            diff = {
                k: (old.get(k), options[k])
                for k in options
                if old.get(k) != options[k]
            }
            raise ValueError(
                f"{output_folder!r} holds a synthetic corpus generated with other "
                f"options (existing, requested): {diff}; delete it or use "
                "another folder"
            )
        return result._replace(generated=False)

    def fill(staging):
        staging = str(staging)
        jobs = [
            (
                staging,
                seed,
                s,
                videos,
                utterances,
                min_duration,
                max_duration,
                channel_strength,
            )
            for s in range(speakers)
        ]
        workers = min(num_workers or os.cpu_count() or 1, speakers)
        if "fork" in multiprocessing.get_all_start_methods():
            # forked workers (even one) keep the caller's heap settings untouched
            with multiprocessing.get_context("fork").Pool(
                workers, _keep_heap
            ) as pool:
                done = pool.map(_write_speaker, jobs, chunksize=1)
        else:
            done = [_write_speaker(job) for job in jobs]
        _write_meta(staging, done, speakers - test_speakers, trials, seed)
        with open(os.path.join(staging, OPTIONS_FILE), "w") as fh:
            json.dump(options, fh, indent=1)

    # built under a temporary name and renamed into place (an empty folder
    # there is replaced); on any error nothing is left behind
    replace_folder(output_folder, fill)
    return result


def _write_meta(root, done, n_dev, n_trials, seed):
    """Write veri_test2.txt, iden_split.txt and vox1_meta.csv under root/meta."""
    os.makedirs(os.path.join(root, "meta"))
    rng = np.random.default_rng([seed, 3])
    test_files = [p for _, paths in done[n_dev:] for p in paths]
    write_trials(
        os.path.join(root, "meta", "veri_test2.txt"),
        make_trials(test_files, n_trials, rng),
    )
    lines, rows = [], ["VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"]
    for s, (gender, paths) in enumerate(done):
        spk = f"id{10001 + s}"
        vids = list(dict.fromkeys(p.split("/")[1] for p in paths))
        for p in paths:
            video, utt = p.split("/")[1], int(p.split("/")[2][:5])
            if (
                len(vids) >= 3
            ):  # held-out videos: last for test, second-last for val
                split = (
                    3 if video == vids[-1] else 2 if video == vids[-2] else 1
                )
            else:  # too few videos: hold out utterances instead
                n_utt = sum(q.split("/")[1] == video for q in paths)
                if utt == n_utt and n_utt > 1:
                    split = 3
                else:
                    split = 2 if utt == n_utt - 1 and n_utt > 2 else 1
            lines.append(f"{split} {p}\n")
        nation = _NATIONS[
            np.random.default_rng([seed, 4, s]).integers(len(_NATIONS))
        ]
        rows.append(
            f"{spk}\tSynthetic_Speaker_{s + 1:05d}\t{gender}\t{nation}\t"
            f"{'dev' if s < n_dev else 'test'}\n"
        )
    for name, content in (("iden_split.txt", lines), ("vox1_meta.csv", rows)):
        with open(os.path.join(root, "meta", name), "w") as fh:
            fh.writelines(content)


def add_keyword_options(parser, function):
    """An option ``--name-with-dashes`` for every keyword argument of
    ``function`` that has a default, typed by it (float for a float
    default, else int): one home for a command's options and defaults.

    Arguments
    ---------
    parser : argparse.ArgumentParser
    function : callable

    Example
    -------
    >>> def make(out, speakers=8, min_duration=1.0):
    ...     return out, speakers, min_duration
    >>> parser = argparse.ArgumentParser()
    >>> parser.add_argument("out")  # doctest: +ELLIPSIS
    _StoreAction(...)
    >>> add_keyword_options(parser, make)
    >>> make(**vars(parser.parse_args(["o", "--min-duration", "2"])))
    ('o', 8, 2.0)
    """
    for name, param in inspect.signature(function).parameters.items():
        if param.default is not inspect.Parameter.empty:
            kind = float if isinstance(param.default, float) else int
            flag = "--" + name.replace("_", "-")
            parser.add_argument(flag, type=kind, default=param.default)


def main(argv=None):
    """Command line: ``python -m speechbrain_mrmha.app.synthetic OUT [options]``.

    Arguments
    ---------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    SyntheticCorpus
        As :func:`generate_corpus`.

    Example
    -------
    >>> import tempfile
    >>> out = os.path.join(tempfile.mkdtemp(), "vox")
    >>> main([out, "--speakers", "3", "--utterances", "1", "--min-duration",
    ...       "0.5", "--max-duration", "0.5"]).generated  # doctest: +ELLIPSIS
    generated: ...
    True
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_folder")
    add_keyword_options(parser, generate_corpus)
    corpus = generate_corpus(**vars(parser.parse_args(argv)))
    print(
        f"{'generated' if corpus.generated else 'already up to date'}: {corpus.root}"
    )
    return corpus


if __name__ == "__main__":
    main()
