"""A corpus of text-to-speech voices in the VoxCeleb1 layout, for measuring
training defaults on speech of another nature than the demo's synthetic
corpus (issue: "Training that holds up beyond our corpus").

Each speaker is a voice drawn once from the seed: an espeak-ng accent
(en-us, en-gb, Scottish, Caribbean, ...) with a voice variant (m1..m8,
f1..f5, named variants), a pitch, a speaking rate and word gaps; a few
speakers are festival's kal_diphone voice at their own pitch and rate.
Utterances are random sentences from a word list. Each video adds a channel:
a random spectral colouring, band limits, background noise at a random SNR
and a level, so that verifying across videos is a real task.

Needs the Debian packages (never CI's)::

    apt-get install -y espeak-ng festival

Run::

    python bench/tts_corpus.py bench/_data/tts --speakers 48 --test-speakers 8

Layout written: ``OUT/wav/idNNNNN/<video>/NNNNN.wav`` (16 kHz mono PCM
16-bit), ``OUT/meta/veri_test2.txt`` (test speakers only, cross-video
targets, balanced) and ``OUT/meta/vox1_meta.csv``. The folder is written
whole or not at all; rerunning with the same options reuses it.

Authors
 * speechbrain-mrmha developers
"""

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from speechbrain_mrmha.app.synthetic import add_keyword_options, make_trials
from speechbrain_mrmha.dataio.files import replace_folder
from speechbrain_mrmha.dataio.trials import write_trials

SAMPLE_RATE = 16000
OPTIONS_FILE = "tts_options.json"
ACCENTS = [
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
]
VARIANTS = (
    [f"m{i}" for i in range(1, 9)]
    + [f"f{i}" for i in range(1, 6)]
    + "adam Alex Alicia Andrea Andy Annie antonio aunty belinda benjamin "
    "boris caleb david ed edward Gene gustave Henrique Hugo iven Jacky john "
    "Lee linda marcelo Marco Mario max Michael michel miguel Mike Nguyen "
    "pablo paul pedro quincy rob robert steph Storm travis victor zac anika "
    "norbert sandro shelby grandma grandpa klatt klatt2 klatt3".split()
)
WORDS = (
    "the a of to and in is it you that he was for on are with as his they "
    "be at one have this from or had by hot word but what some we can out "
    "other were all there when up use your how said an each she which do "
    "their time if will way about many then them write would like so these "
    "her long make thing see him two has look more day could go come did "
    "number sound no most people my over know water than call first who "
    "may down side been now find any new work part take get place made live "
    "where after back little only round man year came show every good me "
    "give our under name very through just form sentence great think say "
    "help low line differ turn cause much mean before move right boy old too "
    "same tell does set three want air well also play small end put home "
    "read hand port large spell add even land here must big high such follow "
    "act why ask men change went light kind off need house picture try us "
    "again animal point mother world near build self earth father head stand "
    "own page should country found answer school grow study still learn "
    "plant cover food sun four between state keep eye never last let thought "
    "city tree cross farm hard start might story saw far sea draw left late "
    "run while press close night real life few north open seem together next "
    "white children begin got walk example ease paper group always music "
    "those both mark often letter until mile river car feet care second book "
    "carry took science eat room friend began idea fish mountain stop once "
    "base hear horse cut sure watch color face wood main enough plain girl "
    "usual young ready above ever red list though feel talk bird soon body "
    "dog family direct pose leave song measure door product black short "
    "numeral class wind question happen complete ship area half rock order "
    "fire south problem piece told knew pass since top whole king space"
).split()


def _speaker(rng, index, festival_every):
    """The voice of one speaker, drawn from the seed."""
    if festival_every and index % festival_every == festival_every - 1:
        return {
            "engine": "festival",
            "f0_mean": float(rng.uniform(85, 230)),
            "f0_std": float(rng.uniform(8, 40)),
            "stretch": float(rng.uniform(0.8, 1.25)),
        }
    return {
        "engine": "espeak-ng",
        "voice": f"{rng.choice(ACCENTS)}+{rng.choice(VARIANTS)}",
        "pitch": int(rng.integers(15, 85)),
        "speed": int(rng.integers(125, 210)),
        "gap": int(rng.integers(0, 6)),
    }


def _sentence(rng, seconds):
    """Random words, about ``seconds`` of speech at 2.5 words per second."""
    count = max(3, int(round(seconds * 2.5)))
    return " ".join(rng.choice(WORDS, count))


def _say(voice, text, folder):
    """The voice speaking ``text``: float32 samples at 16 kHz."""
    out = Path(folder) / "say.wav"
    if voice["engine"] == "espeak-ng":
        command = [
            "espeak-ng",
            "-v",
            voice["voice"],
            "-p",
            str(voice["pitch"]),
            "-s",
            str(voice["speed"]),
            "-g",
            str(voice["gap"]),
            "-w",
            str(out),
            text,
        ]
    else:
        (Path(folder) / "say.txt").write_text(text)
        command = [
            "text2wave",
            "-eval",
            f"(Parameter.set 'Duration_Stretch {voice['stretch']:.3f})",
            "-eval",
            "(set! int_lr_params '((target_f0_mean "
            f"{voice['f0_mean']:.1f}) (target_f0_std {voice['f0_std']:.1f}) "
            "(model_f0_mean 170) (model_f0_std 34)))",
            "-o",
            str(out),
            str(Path(folder) / "say.txt"),
        ]
    subprocess.run(command, check=True, capture_output=True)
    if not out.is_file():  # espeak-ng exits 0 on a bad option
        raise RuntimeError(f"{command[0]} wrote nothing: {' '.join(command)}")
    samples, rate = sf.read(str(out), dtype="float32")
    if samples.ndim > 1:
        samples = samples.mean(axis=1)
    if rate != SAMPLE_RATE:
        import torch
        import torchaudio

        samples = torchaudio.functional.resample(
            torch.from_numpy(samples), rate, SAMPLE_RATE
        ).numpy()
    return samples


def _channel(rng):
    """One video's channel: colouring gains, band limits, SNR and level."""
    return {
        "tilt_db": float(rng.uniform(-6, 6)),
        "peaks": [
            (float(rng.uniform(200, 6000)), float(rng.uniform(-8, 8)))
            for _ in range(3)
        ],
        "low_hz": float(rng.uniform(50, 300)),
        "high_hz": float(rng.uniform(3400, 7800)),
        "snr_db": float(rng.uniform(5, 30)),
        "level": float(rng.uniform(0.1, 0.7)),
    }


def _apply_channel(samples, channel, rng):
    """The samples through the channel, with noise drawn from ``rng``."""
    spectrum = np.fft.rfft(samples)
    freqs = np.fft.rfftfreq(len(samples), 1.0 / SAMPLE_RATE)
    gain_db = channel["tilt_db"] * np.log2(np.maximum(freqs, 50) / 1000)
    for centre, peak_db in channel["peaks"]:
        gain_db += peak_db * np.exp(-0.5 * ((freqs - centre) / 400.0) ** 2)
    gain = 10 ** (gain_db / 20)
    gain[(freqs < channel["low_hz"]) | (freqs > channel["high_hz"])] = 0.0
    clean = np.fft.irfft(spectrum * gain, n=len(samples))
    noise = np.fft.irfft(
        np.fft.rfft(rng.standard_normal(len(samples))) * np.sqrt(gain + 0.05),
        n=len(samples),
    )
    power = np.mean(clean**2) + 1e-12
    noise *= np.sqrt(power / 10 ** (channel["snr_db"] / 10)) / (
        np.sqrt(np.mean(noise**2)) + 1e-12
    )
    mixed = clean + noise
    mixed *= channel["level"] / (np.abs(mixed).max() + 1e-9)
    return mixed.astype(np.float32)


def _write_speaker(job):
    """Every utterance of one speaker; returns its relative paths."""
    root, index, options, seed = job
    rng = np.random.default_rng([seed, index])
    voice = _speaker(rng, index, options["festival_every"])
    speaker = f"id{10001 + index}"
    paths = []
    with tempfile.TemporaryDirectory() as scratch:
        for video in range(options["videos"]):
            name = f"v{index:03d}{video:02d}tts"
            channel = _channel(rng)
            folder = Path(root) / "wav" / speaker / name
            folder.mkdir(parents=True)
            for utt in range(options["utterances"]):
                seconds = rng.uniform(
                    options["min_duration"], options["max_duration"]
                )
                samples = _say(voice, _sentence(rng, seconds), scratch)
                audio = _apply_channel(samples, channel, rng)
                rel = f"{speaker}/{name}/{utt + 1:05d}.wav"
                sf.write(str(Path(root) / "wav" / rel), audio, SAMPLE_RATE)
                paths.append(rel)
    return voice, paths


def build(
    output,
    speakers=48,
    test_speakers=8,
    videos=3,
    utterances=8,
    seed=7,
    min_duration=2.5,
    max_duration=5.0,
    trials=None,
    festival_every=6,
    workers=None,
):
    """Write the corpus to ``output`` (whole, or reused when its options
    match); returns the output folder."""
    options = {
        "speakers": speakers,
        "test_speakers": test_speakers,
        "videos": videos,
        "utterances": utterances,
        "seed": seed,
        "min_duration": min_duration,
        "max_duration": max_duration,
        "trials": trials,
        "festival_every": festival_every,
    }
    marker = Path(output) / OPTIONS_FILE
    if marker.is_file() and json.loads(marker.read_text()) == options:
        print(f"already up to date: {output}")
        return Path(output)
    for tool in ("espeak-ng", "text2wave"):
        if shutil.which(tool) is None:
            raise SystemExit(
                f"{tool} not found: apt-get install -y espeak-ng festival"
            )

    def fill(root):
        jobs = [(root, i, options, seed) for i in range(speakers)]
        with multiprocessing.Pool(workers or os.cpu_count()) as p:
            done = p.map(_write_speaker, jobs)
        (Path(root) / "meta").mkdir()
        test = [
            p for _, paths in done[speakers - test_speakers :] for p in paths
        ]
        write_trials(
            Path(root) / "meta" / "veri_test2.txt",
            make_trials(test, options["trials"], np.random.default_rng(seed)),
        )
        rows = ["VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet"]
        for i, (voice, _) in enumerate(done):
            kind = "test" if i >= speakers - test_speakers else "dev"
            rows.append(f"id{10001 + i}\t{json.dumps(voice)}\t-\t-\t{kind}")
        (Path(root) / "meta" / "vox1_meta.csv").write_text("\n".join(rows))
        (Path(root) / OPTIONS_FILE).write_text(json.dumps(options))

    replace_folder(output, fill)
    print(f"generated: {output}")
    return Path(output)


def main(argv=None):
    """Command line of the TTS corpus builder: an option for every keyword
    argument of ``build``, with its default."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output")
    add_keyword_options(parser, build)
    build(**vars(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
