#!/usr/bin/env python3
"""Train a speaker-embedding ResNet-34 with attention pooling on VoxCeleb1,
as in Wang et al., "Multi-Resolution Multi-Head Attention in Deep Speaker
Embedding", ICASSP 2020.

To run:
    python train_speaker_embeddings.py hparams/mrmha.yaml --data_folder=DIR
    torchrun --nproc_per_node=4 train_speaker_embeddings.py \\
        hparams/mrmha.yaml --data_folder=DIR

With --skip_prep=True it trains on the annotation CSVs given by
--train_annotation and --valid_annotation (columns ID, duration, wav,
spk_id) instead of preparing VoxCeleb1. Rerunning an interrupted command
resumes from its newest checkpoint. The learning rate warms up and decays
by optimizer steps. Beyond the paper (keys off in its configurations, on in
hparams/mrmha_modern.yaml): additive angular margin, margin warm-up, speed
perturbation with perturbed copies as new speakers, SpecAugment-style
feature masking, and --init_from for a large-margin fine-tuning stage.
At the end, <output_folder>/pretrained/ holds a folder that
speechbrain.inference.EncoderClassifier.from_hparams loads.

Authors
 * speechbrain-mrmha developers
"""

import logging
import math
import random
import re
import sys
from pathlib import Path

import speechbrain as sb
import torch
import torchaudio
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.utils.distributed import run_on_main
from voxceleb1_prepare import check_training_audio, prepare_voxceleb1

from speechbrain_mrmha.dataio.annotation import read_annotation
from speechbrain_mrmha.dataio.audio import load_audio, write_text_atomic
from speechbrain_mrmha.inference.pretrained import (
    calibrate_pretrained,
    write_pretrained,
)
from speechbrain_mrmha.layers.margins import MarginWarmup
from speechbrain_mrmha.layers.pooling import attention_entropy
from speechbrain_mrmha.training.config import (
    model_definition,
    parse_overrides,
    plain_values,
    save_resolved,
)
from speechbrain_mrmha.training.runs import hold_run_lock

logger = logging.getLogger(__name__)


class SpeakerBrain(sb.core.Brain):
    """Speaker classification with CosAMS over the training speakers."""

    def compute_forward(self, batch, stage):
        """wav -> Fbank -> sentence mean norm -> ResNet-34 + pooling -> cosines."""
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        if stage == sb.Stage.TRAIN and self.hparams.augment is not None:
            wavs, lens = self.hparams.augment(wavs, lens)
        feats = self.modules.compute_features(wavs)
        feats = self.modules.mean_var_norm(feats, lens)
        if stage == sb.Stage.TRAIN and self.hparams.spec_augment:
            generator = torch.Generator().manual_seed(
                self.hparams.seed * 1_000_003 + self.lr_schedule.current_step
            )
            feats = mask_features(
                feats,
                lens,
                self.hparams.time_masks,
                self.hparams.time_mask_width,
                self.hparams.freq_masks,
                self.hparams.freq_mask_width,
                generator,
            )
        embeddings = self.modules.embedding_model(feats, lens)
        return self.modules.classifier(embeddings)

    def compute_objectives(self, predictions, batch, stage):
        """Margin loss (+ the Eq. 3 penalty for structured attention)."""
        spk_id, _ = batch.spk_id_encoded
        if stage == sb.Stage.TRAIN and self.hparams.augment is not None:
            spk_id = self.hparams.augment.replicate_labels(spk_id)
        loss = self.hparams.compute_cost(predictions, spk_id)
        if self.hparams.penalty_weight > 0:
            loss = loss + self.hparams.penalty_weight * self.pooling.penalty()
        weights = getattr(self.pooling, "last_attention", None)
        if weights is not None:
            entropy = attention_entropy(weights.detach()).sum(dim=0).cpu()
            self.entropy_sum += entropy
            self.entropy_count += weights.shape[0]
        if stage != sb.Stage.TRAIN:  # accuracy over the original speakers
            speakers = predictions.shape[-1] // self.hparams.speed_copies
            self.error_metrics.append(
                batch.id, predictions[..., :speakers], spk_id
            )
        return loss

    def _wrap_distributed(self):
        """On GPUs SpeechBrain's DDP wrapping (with SyncBatchNorm); on CPU
        (gloo) plain DDP, as SyncBatchNorm only runs on GPUs."""
        if not (self.distributed_launch and self.device == "cpu"):
            return super()._wrap_distributed()
        from torch.nn.parallel import DistributedDataParallel

        for name, module in self.modules.items():
            if any(p.requires_grad for p in module.parameters()):
                self.modules[name] = DistributedDataParallel(
                    module, device_ids=None
                )

    @property
    def pooling(self):
        """The pooling module, also when the model is wrapped by DDP."""
        return self.hparams.embedding_model.pooling

    def make_dataloader(self, dataset, stage, *args, **kwargs):
        """SpeechBrain's loaders; the training one sets the optimizer steps
        per epoch (this process' share under DDP) for the schedules."""
        loader = super().make_dataloader(dataset, stage, *args, **kwargs)
        if stage == sb.Stage.TRAIN:
            self.steps_per_epoch = math.ceil(
                len(loader) / self.grad_accumulation_factor
            )
        return loader

    def on_fit_start(self):
        """Build the step schedules (learning rate, margin), recover, then
        drop log lines of epochs the recovered checkpoint does not hold
        (they are trained again)."""
        steps = self.steps_per_epoch
        total = steps * self.hparams.number_of_epochs
        warmup = round(self.hparams.lr_warmup_epochs * steps)
        self.lr_schedule = self.hparams.lr_schedule(
            n_warmup_steps=warmup, total_steps=max(total, warmup + 1)
        )
        self.checkpointer.add_recoverable("lr_schedule", self.lr_schedule)
        self.margin_warmup = MarginWarmup(
            self.hparams.margin,
            round(self.hparams.margin_warmup_start_epoch * steps),
            round(self.hparams.margin_warmup_end_epoch * steps),
        )
        super().on_fit_start()
        if sb.utils.distributed.if_main_process():
            keep_logged_epochs(
                self.hparams.train_log, self.hparams.epoch_counter.current
            )

    def on_fit_batch_start(self, batch, should_step):
        """Learning rate and margin of this optimizer step."""
        if should_step:
            step = self.lr_schedule.current_step
            self.hparams.compute_cost.margin = self.margin_warmup(step)
            self.lr_schedule(self.optimizer)

    def on_stage_start(self, stage, epoch=None):
        """Reset the per-stage statistics; crops follow the epoch."""
        if stage == sb.Stage.TRAIN:
            self.hparams.crops.epoch = epoch
        self.entropy_sum, self.entropy_count = 0.0, 0
        if stage != sb.Stage.TRAIN:
            self.error_metrics = self.hparams.error_stats()

    def _entropies(self):
        """Mean attention entropy of each head over the stage."""
        if not self.entropy_count:
            return {}
        mean = (self.entropy_sum / self.entropy_count).tolist()
        return {f"entropy_head{i + 1}": round(v, 4) for i, v in enumerate(mean)}

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log loss, accuracy and per-head attention entropy; anneal; checkpoint."""
        stats = {"loss": stage_loss, **self._entropies()}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        error = self.error_metrics.summarize("average")
        stats.update(ErrorRate=error, accuracy=1.0 - error)
        if stage == sb.Stage.VALID:
            meta = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
            if self.hparams.margin_warmup_end_epoch > 0:
                meta["margin"] = self.hparams.compute_cost.margin
            self.hparams.train_logger.log_stats(
                stats_meta=meta,
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={"ErrorRate": error}, min_keys=["ErrorRate"], num_to_keep=2
            )


class RandomCrops:
    """Where each training crop starts: drawn from (seed, epoch, utterance),
    so a resumed run reads the very crops of an uninterrupted one.

    Arguments
    ---------
    seed : int
        The experiment seed.

    Example
    -------
    >>> crops = RandomCrops(seed=3)
    >>> crops.epoch = 2
    >>> crops.start("utt1", 1000) == RandomCrops(3).start("utt1", 1000)
    False
    >>> crops.start("utt1", 1000) == crops.start("utt1", 1000)
    True
    """

    def __init__(self, seed):
        self.seed = seed
        self.epoch = 0

    def start(self, utterance, span):
        """A start in [0, span] for ``utterance`` in the current epoch."""
        key = f"{self.seed}:{self.epoch}:{utterance}"
        return random.Random(key).randint(0, span)

    def copy(self, utterance, copies):
        """Which of ``copies`` speed copies ``utterance`` is read as in the
        current epoch (0: the original), each equally likely."""
        key = f"{self.seed}:{self.epoch}:{utterance}:speed"
        return random.Random(key).randrange(copies)


def change_speed(sig, speed, sample_rate, length):
    """``sig`` played ``speed`` times faster (tempo and pitch, as sox
    ``speed``), cut or repeated to ``length`` samples."""
    if speed != 1.0:
        sig = torchaudio.functional.resample(
            sig, int(round(sample_rate * speed)), sample_rate
        )
    if sig.shape[0] < length:
        sig = sig.repeat(-(-length // max(1, sig.shape[0])))
    return sig[:length]


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


def crop(wav, duration, sentence_len, sample_rate, start):
    """Read ``sentence_len`` seconds of ``wav`` from sample ``start`` (a
    function of the free span, or a number); a shorter file is repeated to
    the length."""
    length = int(round(sentence_len * sample_rate))
    total = int(duration * sample_rate)
    if total <= length:
        sig = load_audio(wav, sample_rate, min_seconds=0)
        return sig.repeat(-(-length // max(1, sig.shape[0])))[:length]
    if callable(start):
        start = start(total - length)
    sig = load_audio(
        wav, sample_rate, min_seconds=0, offset=start, num_samples=length
    )
    if sig.shape[0] < length:  # header duration rounded up: pad by repeating
        sig = sig.repeat(-(-length // max(1, sig.shape[0])))[:length]
    return sig


def keep_logged_epochs(train_log, last_epoch):
    """Remove the ``epoch: N`` lines of ``train_log`` with N > last_epoch."""
    path = Path(train_log)
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [
        line
        for line in lines
        if not (m := re.match(r"epoch: (\d+)", line)) or int(m[1]) <= last_epoch
    ]
    if kept != lines:
        write_text_atomic(path, "".join(kept))


def speakers_of(hparams):
    """Annotation rows of train / valid and the sorted training speakers;
    every problem of a CSV is reported in one error."""
    train = read_annotation(hparams["train_annotation"], hparams["data_folder"])
    valid = read_annotation(hparams["valid_annotation"], hparams["data_folder"])
    speakers = sorted({row["spk_id"] for row in train.values()})
    unknown = sorted({row["spk_id"] for row in valid.values()} - set(speakers))
    if unknown:
        raise ValueError(
            f"valid_annotation {hparams['valid_annotation']}: speakers absent from "
            f"train_annotation {hparams['train_annotation']}: {', '.join(unknown[:20])}"
        )
    return train, valid, speakers


def training_speeds(hparams):
    """The speeds training reads audio at: [1.0] plus the perturbation
    speeds when speed_perturb is on (each one a copy of every speaker)."""
    if not hparams["speed_perturb"]:
        return [1.0]
    return [1.0, *map(float, hparams["speed_perturb_speeds"])]


def speaker_labels(speakers, speeds):
    """Label encoder of the training classes: the n speakers, then their
    copies at each other speed, so copy j of speaker k is k + n * j."""
    label_encoder = CategoricalEncoder()
    label_encoder.update_from_iterable(speakers)
    for speed in speeds[1:]:
        label_encoder.update_from_iterable(
            f"{speaker}@speed{speed:g}" for speaker in speakers
        )
    return label_encoder


def dataio_prep(hparams, train_rows, valid_rows, speakers, crops):
    """Train / valid DynamicItemDatasets with crops and encoded speaker ids
    (a speed-perturbed training crop gets its copy's label)."""
    speeds = training_speeds(hparams)
    label_encoder = speaker_labels(speakers, speeds)
    sentence_len, sample_rate = hparams["sentence_len"], hparams["sample_rate"]
    length = int(round(sentence_len * sample_rate))

    @sb.utils.data_pipeline.takes("id", "wav", "duration", "spk_id")
    @sb.utils.data_pipeline.provides("sig", "spk_id_encoded")
    def train_item(utterance, wav, duration, spk_id):
        def start(span):
            return crops.start(utterance, span)

        copy = crops.copy(utterance, len(speeds))
        sig = crop(
            wav, duration, sentence_len * speeds[copy], sample_rate, start
        )
        yield change_speed(sig, speeds[copy], sample_rate, length)
        label = label_encoder.encode_label(spk_id) + len(speakers) * copy
        yield torch.LongTensor([label])

    @sb.utils.data_pipeline.takes("wav", "duration")
    @sb.utils.data_pipeline.provides("sig")
    def valid_audio(wav, duration):
        start = int(max(0.0, duration - sentence_len) / 2 * sample_rate)
        return crop(wav, duration, sentence_len, sample_rate, start=start)

    @sb.utils.data_pipeline.takes("spk_id")
    @sb.utils.data_pipeline.provides("spk_id_encoded")
    def label_pipeline(spk_id):
        return torch.LongTensor([label_encoder.encode_label(spk_id)])

    datasets = []
    for rows, items in (
        (train_rows, [train_item]),
        (valid_rows, [valid_audio, label_pipeline]),
    ):
        data = DynamicItemDataset(
            {
                key: {k: row[k] for k in ("wav", "duration", "spk_id")}
                for key, row in rows.items()
            },
            dynamic_items=items,
            output_keys=["id", "sig", "spk_id_encoded"],
        )
        datasets.append(data)
    return datasets[0], datasets[1], label_encoder


def build_augmentation(hparams):
    """SpeechBrain noise / reverberation augmentation from local folders, or None."""
    folders = {"noise": hparams["noise_folder"], "rir": hparams["rir_folder"]}
    if not any(folders.values()):
        return None
    from speechbrain.augment.augmenter import Augmenter
    from speechbrain.augment.time_domain import AddNoise, AddReverb

    augmentations = []
    for kind, folder in folders.items():
        if not folder:
            continue
        files = sorted(Path(folder).rglob("*.wav"))
        if not files:
            raise FileNotFoundError(
                f"{kind}_folder {folder}: no .wav files found"
            )
        csv = Path(hparams["save_folder"]) / f"{kind}.csv"
        rows = [f"{kind}{i},0,{path},wav," for i, path in enumerate(files)]
        run_on_main(
            write_text_atomic,
            args=[
                csv,
                "ID,duration,wav,wav_format,wav_opts\n"
                + "\n".join(rows)
                + "\n",
            ],
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
        augment_prob=hparams["augment_probability"],
        augmentations=augmentations,
    )


def class_count_overrides(settings, overrides, speakers):
    """The overrides with ``n_classes`` set to the number of training
    classes (speakers times speed copies), or unchanged when they agree; an
    explicit --n_classes that disagrees with the data is an error."""
    overrides = parse_overrides(overrides)
    copies = len(training_speeds(settings))
    classes = len(speakers) * copies
    if classes == settings["n_classes"]:
        return overrides, False
    if "n_classes" in overrides:
        raise ValueError(
            f"--n_classes={overrides['n_classes']} but train_annotation "
            f"{settings['train_annotation']} has {len(speakers)} speakers"
            + (f" x {copies} speed copies" if copies > 1 else "")
        )
    logger.info(
        "n_classes: %d training classes (the yaml says %d)",
        classes,
        settings["n_classes"],
    )
    overrides["n_classes"] = classes
    return overrides, True


def initialise_from(folder, hparams, label_encoder):
    """Copy the embedding model and classifier of a pretrained folder (or a
    CKPT+ checkpoint folder) into the new model: the start of a fine-tuning
    run. Its classes must be this run's (same label_encoder.txt, if any)."""
    folder = Path(folder)
    for name in ("embedding_model", "classifier"):
        path = folder / f"{name}.ckpt"
        if not path.is_file():
            raise FileNotFoundError(f"init_from {folder}: no {name}.ckpt")
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            hparams[name].load_state_dict(state)
        except RuntimeError as error:
            raise ValueError(
                f"init_from {path}: does not fit this configuration's "
                f"{name} ({str(error).splitlines()[0]} ...)"
            ) from None
    labels = folder / "label_encoder.txt"
    if labels.is_file():
        theirs = CategoricalEncoder()
        theirs.load(labels)
        if theirs.lab2ind != label_encoder.lab2ind:
            raise ValueError(
                f"init_from {folder}: its classes ({labels}) are not this "
                "run's training speakers (and speed copies)"
            )
    logger.info("initialised embedding_model and classifier from %s", folder)


def fractional_checkpoint_interval(argv):
    """SpeechBrain parses --ckpt_interval_minutes as a whole number; take it
    out of argv as a float (it reaches the Brain through the yaml key)."""
    rest, minutes = [], None
    args = iter(argv)
    for arg in args:
        if arg.startswith("--ckpt_interval_minutes"):
            value = arg.partition("=")[2] if "=" in arg else next(args, "")
            try:
                minutes = float(value)
            except ValueError:
                raise ValueError(
                    f"--ckpt_interval_minutes must be a number, got {value!r}"
                ) from None
        else:
            rest.append(arg)
    return rest, minutes


def calibration_utterances(settings, speakers):
    """ID -> (wav, duration, speaker) of the calibration annotation, or None
    (with a warning) when there is none; a calibration speaker that is also
    a training speaker is an error."""
    path = settings["calibration_annotation"]
    if path is None or (settings["skip_prep"] and not Path(path).is_file()):
        logger.warning(
            "no calibration: calibration_annotation is %s; the pretrained "
            "folder will have no calibration.json (no calibrated scores)",
            "null" if path is None else f"{path}, which does not exist",
        )
        return None
    lines = Path(path).read_text(encoding="utf-8").split("\n")[1:]
    if not any(line.strip() for line in lines):  # only the header
        rows = {}
    else:
        rows = read_annotation(path, settings["data_folder"])
    shared = sorted({row["spk_id"] for row in rows.values()} & set(speakers))
    if shared:
        raise ValueError(
            f"calibration_annotation {path}: speakers also in train_annotation "
            f"{settings['train_annotation']}: {', '.join(shared[:20])}"
        )
    if settings["skip_prep"]:
        check_training_audio(
            [row["wav"] for row in rows.values()],
            settings["sample_rate"],
            settings["allow_resampling"],
            settings["prepare_workers"],
        )
    if len({row["spk_id"] for row in rows.values()}) < 2:
        logger.warning(
            "no calibration: calibration_annotation %s has fewer than 2 "
            "speakers (calibration_speakers=%s); the pretrained folder will "
            "have no calibration.json",
            path,
            settings["calibration_speakers"],
        )
        return None
    return {
        key: (row["wav"], row["duration"], row["spk_id"])
        for key, row in rows.items()
    }


def calibrate(hparams, utterances, device):
    """Fit the calibration of the pretrained folder on whole calibration
    utterances and save it there (calibration.json)."""
    if utterances is None:
        logger.warning(
            "%s has no calibration.json (see the warning at the start)",
            hparams["pretrained_folder"],
        )
        return
    calibration = calibrate_pretrained(
        hparams["pretrained_folder"],
        utterances,
        max_trials=hparams["calibration_max_trials"],
        quality=hparams["calibration_quality"],
        prior=hparams["calibration_prior"],
        seed=hparams["seed"],
        device=device,
        sample_rate=hparams["sample_rate"],
    )
    stats = calibration.statistics
    logger.info(
        "calibration on %d trials of %d speakers: llr = %.3f * cosine %+.3f, "
        "Cllr %.4f (raw cosine %.4f), actDCF %.4f, minDCF %.4f",
        stats["n_target"] + stats["n_nontarget"],
        stats["n_speakers"],
        calibration.slope,
        calibration.offset,
        stats["cllr"],
        stats["cllr_raw"],
        stats["act_dcf_normalized"],
        stats["min_dcf_normalized"],
    )


def main(argv):
    """Prepare, build the model once with the right class count, train, export."""
    argv, minutes = fractional_checkpoint_interval(argv)
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    overrides = parse_overrides(overrides)
    if minutes is not None:
        overrides["ckpt_interval_minutes"] = minutes
    # plain values only: a mistyped override stops here, before any work
    settings = plain_values(hparams_file, overrides)
    sb.utils.distributed.ddp_init_group(run_opts)
    if sb.utils.distributed.if_main_process():
        hold_run_lock(settings["output_folder"], "training")
    sb.create_experiment_directory(
        experiment_directory=settings["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    if not settings["skip_prep"]:
        run_on_main(
            prepare_voxceleb1,
            kwargs={
                "data_folder": settings["data_folder"],
                "save_folder": settings["prepare_folder"],
                "verification_file": settings["verification_file"],
                "valid_utterances_per_speaker": settings[
                    "valid_utterances_per_speaker"
                ],
                "seed": settings["seed"],
                "num_workers": settings["prepare_workers"],
                "sample_rate": settings["sample_rate"],
                "allow_resampling": settings["allow_resampling"],
                "calibration_speakers": settings["calibration_speakers"],
            },
        )
    train_rows, valid_rows, speakers = speakers_of(settings)
    calibration_set = calibration_utterances(settings, speakers)
    if settings["skip_prep"]:  # the checks preparation makes, on the CSVs
        check_training_audio(
            [
                row["wav"]
                for row in [*train_rows.values(), *valid_rows.values()]
            ],
            settings["sample_rate"],
            settings["allow_resampling"],
            settings["prepare_workers"],
        )
    overrides, changed = class_count_overrides(settings, overrides, speakers)
    if changed:  # the saved hyperparams.yaml records the model actually built
        run_on_main(
            save_resolved,
            args=[
                hparams_file,
                overrides,
                Path(settings["output_folder"]) / "hyperparams.yaml",
            ],
        )
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    hparams["crops"] = RandomCrops(hparams["seed"])
    hparams["speed_copies"] = len(training_speeds(hparams))
    train_data, valid_data, label_encoder = dataio_prep(
        hparams, train_rows, valid_rows, speakers, hparams["crops"]
    )
    hparams["augment"] = build_augmentation(hparams)
    if hparams["init_from"]:  # a resumed run then recovers its own checkpoint
        initialise_from(hparams["init_from"], hparams, label_encoder)

    if str(run_opts.get("device", "cpu")).startswith("cuda"):
        for key in ("dataloader_options", "valid_dataloader_options"):
            hparams[key] = {**hparams[key], "pin_memory": True}
    brain = SpeakerBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    if hparams["channels_last"]:
        # In place, before fit(): compiling, DDP wrapping and checkpoint
        # recovery (load_state_dict copies into the parameters) keep the layout.
        brain.modules.embedding_model.to(memory_format=torch.channels_last)
    brain.fit(
        brain.hparams.epoch_counter,
        train_data,
        valid_data,
        train_loader_kwargs=hparams["dataloader_options"],
        valid_loader_kwargs=hparams["valid_dataloader_options"],
    )
    run_on_main(
        write_pretrained,
        kwargs={
            "folder": hparams["pretrained_folder"],
            "model_yaml": model_definition(hparams_file, overrides),
            "embedding_model": hparams["embedding_model"],
            "classifier": hparams["classifier"],
            "label_encoder": label_encoder,
        },
    )
    run_on_main(calibrate, args=[hparams, calibration_set, brain.device])


if __name__ == "__main__":
    main(sys.argv[1:])
