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
resumes from its newest checkpoint. At the end, <output_folder>/pretrained/
holds a folder that speechbrain.inference.EncoderClassifier.from_hparams
loads.

Authors
 * speechbrain-mrmha developers
"""

import logging
import random
import re
import sys
from pathlib import Path

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.utils.distributed import run_on_main
from voxceleb1_prepare import check_training_audio, prepare_voxceleb1

from speechbrain_mrmha.annotation import read_annotation
from speechbrain_mrmha.config import (
    model_definition,
    parse_overrides,
    plain_values,
    save_resolved,
)
from speechbrain_mrmha.export import write_pretrained
from speechbrain_mrmha.io import load_audio, write_text_atomic
from speechbrain_mrmha.pooling import attention_entropy
from speechbrain_mrmha.runs import hold_run_lock

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
        embeddings = self.modules.embedding_model(feats, lens)
        return self.modules.classifier(embeddings)

    def compute_objectives(self, predictions, batch, stage):
        """CosAMS loss (+ the Eq. 3 penalty for structured attention)."""
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
        if stage != sb.Stage.TRAIN:
            self.error_metrics.append(batch.id, predictions, spk_id)
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

    def on_fit_start(self):
        """Recover, then drop log lines of epochs the recovered checkpoint
        does not hold (they are trained again)."""
        super().on_fit_start()
        if sb.utils.distributed.if_main_process():
            keep_logged_epochs(
                self.hparams.train_log, self.hparams.epoch_counter.current
            )

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
            old_lr, new_lr = self.hparams.lr_annealing(epoch)
            sb.nnet.schedulers.update_learning_rate(self.optimizer, new_lr)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": old_lr},
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


def dataio_prep(hparams, train_rows, valid_rows, speakers, crops):
    """Train / valid DynamicItemDatasets with crops and encoded speaker ids."""
    label_encoder = CategoricalEncoder()
    label_encoder.update_from_iterable(speakers)
    sentence_len, sample_rate = hparams["sentence_len"], hparams["sample_rate"]

    @sb.utils.data_pipeline.takes("id", "wav", "duration")
    @sb.utils.data_pipeline.provides("sig")
    def train_audio(utterance, wav, duration):
        def start(span):
            return crops.start(utterance, span)

        return crop(wav, duration, sentence_len, sample_rate, start)

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
    for rows, audio in ((train_rows, train_audio), (valid_rows, valid_audio)):
        data = DynamicItemDataset(
            {
                key: {k: row[k] for k in ("wav", "duration", "spk_id")}
                for key, row in rows.items()
            },
            dynamic_items=[audio, label_pipeline],
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
    speakers, or unchanged when they agree; an explicit --n_classes that
    disagrees with the data is an error."""
    overrides = parse_overrides(overrides)
    if len(speakers) == settings["n_classes"]:
        return overrides, False
    if "n_classes" in overrides:
        raise ValueError(
            f"--n_classes={overrides['n_classes']} but train_annotation "
            f"{settings['train_annotation']} has {len(speakers)} speakers"
        )
    logger.info(
        "n_classes: %d training speakers (the yaml says %d)",
        len(speakers),
        settings["n_classes"],
    )
    overrides["n_classes"] = len(speakers)
    return overrides, True


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
            },
        )
    train_rows, valid_rows, speakers = speakers_of(settings)
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
    train_data, valid_data, label_encoder = dataio_prep(
        hparams, train_rows, valid_rows, speakers, hparams["crops"]
    )
    hparams["augment"] = build_augmentation(hparams)

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


if __name__ == "__main__":
    main(sys.argv[1:])
