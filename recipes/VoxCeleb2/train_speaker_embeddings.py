#!/usr/bin/env python3
"""Train a speaker-embedding ResNet-34 with attention pooling (Wang et al.,
"Multi-Resolution Multi-Head Attention in Deep Speaker Embedding", ICASSP
2020) on VoxCeleb2 dev, then score the VoxCeleb1 trial lists with it.

To run (torchrun --nproc_per_node=4 train_speaker_embeddings.py ... on GPUs):
    python train_speaker_embeddings.py hparams/mrmha.yaml \\
        --data_folder=/data/VoxCeleb2 --vox1_folder=/data/VoxCeleb1

Training reads the WebDataset shards preparation writes as a ShardStream
(each utterance once per epoch over all processes and loader workers), or
each file with use_shards: False; validation reads the valid.csv files;
--skip_prep=True trains on the CSVs and shards given. A rerun resumes from
the newest checkpoint (from shards, with the next batch of the epoch). At
the end <output_folder>/pretrained/ holds a calibrated folder that
speechbrain.inference.EncoderClassifier.from_hparams loads and, with
vox1_folder, <output_folder>/verification/ the results (results.json,
results.md) of every list in <vox1_folder>/meta/, scored in one run with
AS-norm against the VoxCeleb2 training speakers. The machinery is
speechbrain_mrmha's, built by the yaml.

Authors
 * speechbrain-mrmha developers
"""

import functools
import logging
import sys
from pathlib import Path

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.distributed import run_on_main
from voxceleb2_prepare import prepare_voxceleb2

from speechbrain_mrmha.dataio.annotation import read_training_annotations
from speechbrain_mrmha.dataio.preparation import (
    calibration_utterances,
    check_training_audio,
)
from speechbrain_mrmha.inference.model import SpeakerModel
from speechbrain_mrmha.inference.pretrained import (
    calibrate_pretrained,
    write_pretrained,
)
from speechbrain_mrmha.inference.verification import (
    ScoreNorm,
    check_score_norm,
    verify_trial_lists,
    voxceleb1_lists,
)
from speechbrain_mrmha.training.brain import (
    AttentionEntropy,
    SpeakerEmbeddingBrain,
)
from speechbrain_mrmha.training.config import model_definition, parse_arguments
from speechbrain_mrmha.training.crops import speaker_labels
from speechbrain_mrmha.training.finetune import initialise_from
from speechbrain_mrmha.training.runs import fit_class_count, start_run
from speechbrain_mrmha.training.shard_stream import ShardStream

logger = logging.getLogger(__name__)
COLUMNS = ("wav", "duration", "spk_id")  # what the pipelines read of a row


class SpeakerBrain(SpeakerEmbeddingBrain):
    """Speaker classification with a margin loss over the training classes
    (schedules, shard loaders, DDP on CPU and log trimming come from the
    base class)."""

    def compute_forward(self, batch, stage):
        """wav -> Fbank -> sentence mean norm -> ResNet-34 + pooling -> cosines."""
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        if stage == sb.Stage.TRAIN and self.hparams.wav_augment is not None:
            wavs, lens = self.hparams.wav_augment(wavs, lens)
        feats = self.modules.compute_features(wavs)
        feats = self.modules.mean_var_norm(feats, lens)
        if stage == sb.Stage.TRAIN and self.hparams.spec_augment:
            step = self.hparams.step_schedules.current_step
            feats = self.hparams.feature_masking(feats, lens, step)
        embeddings = self.modules.embedding_model(feats, lens)
        return self.modules.classifier(embeddings)

    def compute_objectives(self, predictions, batch, stage):
        """Margin loss (+ the Eq. 3 penalty for structured attention)."""
        spk_id, _ = batch.spk_id_encoded
        if stage == sb.Stage.TRAIN and self.hparams.wav_augment is not None:
            spk_id = self.hparams.wav_augment.replicate_labels(spk_id)
        loss = self.hparams.compute_cost(predictions, spk_id)
        if self.hparams.penalty_weight > 0:
            loss = loss + self.hparams.penalty_weight * self.pooling.penalty()
        self.entropy.append(getattr(self.pooling, "last_attention", None))
        if stage != sb.Stage.TRAIN:  # accuracy over the original speakers
            speakers = predictions.shape[-1] // len(self.hparams.crops.speeds)
            self.error_metrics.append(
                batch.id, predictions[..., :speakers], spk_id
            )
        return loss

    def on_stage_start(self, stage, epoch=None):
        """Reset the per-stage statistics; crops (and shards) follow the
        epoch."""
        if stage == sb.Stage.TRAIN:
            self.hparams.crops.epoch = epoch
        self.entropy = AttentionEntropy()
        if stage != sb.Stage.TRAIN:
            self.error_metrics = self.hparams.error_stats()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log loss, accuracy and per-head attention entropy; checkpoint."""
        stats = {"loss": stage_loss, **self.entropy.summarize()}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        error = self.error_metrics.summarize("average")
        stats.update(ErrorRate=error, accuracy=1.0 - error)
        if stage == sb.Stage.VALID:
            meta = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
            if self.hparams.margin_warmup_end_fraction > 0:
                meta["margin"] = self.hparams.compute_cost.margin
            self.hparams.train_logger.log_stats(
                stats_meta=meta,
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={"ErrorRate": error}, min_keys=["ErrorRate"], num_to_keep=2
            )


def dataio_prep(hparams, train_rows, valid_rows, speakers):
    """Training crops (a ShardStream of the shard folder with use_shards,
    else a DynamicItemDataset of the files), validation centre crops of the
    valid files, and the label encoder (a speed-perturbed training crop
    gets its copy's label k + n * j)."""
    crops = hparams["crops"]
    label_encoder = speaker_labels(speakers, crops.speeds)

    @sb.utils.data_pipeline.takes("id", "wav", "duration", "spk_id")
    @sb.utils.data_pipeline.provides("sig", "spk_id_encoded")
    def train_item(utterance, wav, duration, spk_id):
        sig, copy = crops.read(utterance, wav, duration)
        yield sig
        label = label_encoder.encode_label(spk_id) + len(speakers) * copy
        yield torch.LongTensor([label])

    @sb.utils.data_pipeline.takes("wav", "duration", "spk_id")
    @sb.utils.data_pipeline.provides("sig", "spk_id_encoded")
    def valid_item(wav, duration, spk_id):
        yield crops.centre(wav, duration)
        yield torch.LongTensor([label_encoder.encode_label(spk_id)])

    def dataset(rows, items):
        data = {k: {c: row[c] for c in COLUMNS} for k, row in rows.items()}
        return DynamicItemDataset(data, items, ["id", "sig", "spk_id_encoded"])

    if hparams["use_shards"]:  # checked: the CSV's rows, no batch of one
        train_data = ShardStream(
            hparams["shard_folder"],
            crops,
            hparams["batch_size"],
            speakers=speakers,
            shuffle_buffer=hparams["shuffle_buffer"],
            expected_utterances=len(train_rows),
            expected_from=f"train_annotation {hparams['train_annotation']}",
            refuse_batch_of_one=True,
        )
    else:
        train_data = dataset(train_rows, [train_item])
    valid_data = dataset(valid_rows, [valid_item])
    return train_data, valid_data, label_encoder


def check_verification(hparams):
    """The verification options, before any work (preparation can take
    hours): the score normalisation and the VoxCeleb1 lists."""
    check_score_norm(hparams["score_norm"])
    voxceleb1_lists(
        hparams["vox1_folder"],
        hparams["score_norm"],
        hparams["cohort_top_k"],
        None,
    )


def prepare(hparams_file, run_opts, overrides):
    """Everything before the model is built, on the configuration's plain
    values (a mistyped override stops before any work): the run's folder,
    VoxCeleb2 preparation, the checks of the annotation CSVs and of the
    VoxCeleb1 lists, the class count of the data."""
    hparams = start_run(hparams_file, run_opts, overrides, check_verification)
    sb.create_experiment_directory(  # copies this script into the folder
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    valid_per_speaker = hparams["valid_utterances_per_speaker"]
    if not hparams["skip_prep"]:
        run_on_main(
            prepare_voxceleb2,
            kwargs={
                "data_folder": hparams["data_folder"],
                "save_folder": hparams["prepare_folder"],
                "valid_utterances_per_speaker": valid_per_speaker,
                "calibration_speakers": hparams["calibration_speakers"],
                "seed": hparams["seed"],
                "num_workers": hparams["prepare_workers"],
                "sample_rate": hparams["sample_rate"],
                "allow_resampling": hparams["allow_resampling"],
                "use_shards": hparams["use_shards"],
                "samples_per_shard": hparams["samples_per_shard"],
                "shard_format": hparams["shard_format"],
            },
        )
    train_rows, valid_rows, speakers = read_training_annotations(
        hparams["train_annotation"],
        hparams["valid_annotation"],
        hparams["data_folder"],
    )
    check_audio = None
    if hparams["skip_prep"]:  # the checks preparation makes (and shards had)
        check_audio = functools.partial(
            check_training_audio,
            sample_rate=hparams["sample_rate"],
            allow_resampling=hparams["allow_resampling"],
            num_workers=hparams["prepare_workers"],
        )
        rows = {**valid_rows, **({} if hparams["use_shards"] else train_rows)}
        check_audio([row["wav"] for row in rows.values()])
    calibration = calibration_utterances(
        hparams["calibration_annotation"],
        speakers,
        data_folder=hparams["data_folder"],
        train_annotation=hparams["train_annotation"],
        missing_ok=hparams["skip_prep"],
        check_audio=check_audio,
    )
    lists = voxceleb1_lists(  # with the cohort size, before any training
        hparams["vox1_folder"],
        hparams["score_norm"],
        hparams["cohort_top_k"],
        len(speakers),  # the cohort: the training speakers
    )
    overrides = fit_class_count(hparams_file, overrides, hparams, len(speakers))
    return (train_rows, valid_rows, speakers), calibration, lists, overrides


def verify(hparams, lists, device):
    """Score every VoxCeleb1 list with the pretrained folder (each file
    embedded once), normalised against the VoxCeleb2 training speakers."""
    score_norm = ScoreNorm.from_annotation(
        hparams["score_norm"],
        hparams["train_annotation"],
        hparams["data_folder"],
        hparams["cohort_utterances_per_speaker"],
        hparams["cohort_top_k"],
    )
    model = SpeakerModel(hparams["pretrained_folder"], device=device)
    folder = hparams["verification_folder"]
    verify_trial_lists(model, lists, hparams["vox1_folder"], folder, score_norm)
    results = Path(folder, "results.md").read_text(encoding="utf-8")
    logger.info("VoxCeleb1 verification:\n%s", results)


def main(argv):
    """Prepare, build the model once with the right class count, train,
    write the pretrained folder, calibrate it and score VoxCeleb1."""
    hparams_file, run_opts, overrides = parse_arguments(argv)
    data, calibration, lists, overrides = prepare(
        hparams_file, run_opts, overrides
    )
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    train_data, valid_data, label_encoder = dataio_prep(hparams, *data)
    if hparams["init_from"]:  # a resumed run then recovers its own checkpoint
        initialise_from(hparams["init_from"], hparams["modules"], label_encoder)
    brain = SpeakerBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    if hparams["channels_last"]:  # in place, before wrapping and recovery
        brain.modules.embedding_model.to(memory_format=torch.channels_last)
    train_options = dict(hparams["dataloader_options"])
    if not hparams["use_shards"]:  # files: SpeechBrain's loader shuffles
        train_options.update(shuffle=True, drop_last=True)
    brain.fit(
        brain.hparams.epoch_counter,
        train_data,
        valid_data,
        train_loader_kwargs=train_options,
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
            "training": {"hparams_file": hparams_file, "overrides": overrides},
        },
    )
    run_on_main(
        calibrate_pretrained,
        kwargs={
            "folder": hparams["pretrained_folder"],
            "utterances": calibration,
            "max_trials": hparams["calibration_max_trials"],
            "quality": hparams["calibration_quality"],
            "prior": hparams["calibration_prior"],
            "seed": hparams["seed"],
            "device": brain.device,
            "sample_rate": hparams["sample_rate"],
        },
    )
    if lists is not None:
        run_on_main(verify, args=[hparams, lists, brain.device])


if __name__ == "__main__":
    main(sys.argv[1:])
