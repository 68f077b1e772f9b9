#!/usr/bin/env python3
"""Train a speaker-embedding ResNet-34 with attention pooling on VoxCeleb1,
as in Wang et al., "Multi-Resolution Multi-Head Attention in Deep Speaker
Embedding", ICASSP 2020.

To run:
    python train_speaker_embeddings.py hparams/mrmha.yaml --data_folder=/path/to/VoxCeleb1
    torchrun --nproc_per_node=4 train_speaker_embeddings.py hparams/mrmha.yaml --data_folder=...

Rerunning an interrupted command resumes from its newest checkpoint. At the
end, <output_folder>/pretrained/ holds a folder that
speechbrain.inference.EncoderClassifier.from_hparams loads.

Authors
 * speechbrain-mrmha developers
"""

import random
import re
import sys
from pathlib import Path

import speechbrain as sb
import torch
import yaml
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.dataio import read_audio
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.utils.distributed import run_on_main

from speechbrain_mrmha.export import write_pretrained
from speechbrain_mrmha.pooling import attention_entropy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from voxceleb1_prepare import prepare_voxceleb1  # noqa: E402

INTERFACE_DIR = Path(__file__).resolve().parents[2] / "hparams"


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
        weights = getattr(self.pooling, "last_attention", None)
        if self.hparams.penalty_weight > 0:
            loss = loss + self.hparams.penalty_weight * self.pooling.penalty()
        if weights is not None:
            self.entropy_sum += attention_entropy(weights.detach()).sum(dim=0).cpu()
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
                self.modules[name] = DistributedDataParallel(module, device_ids=None)

    @property
    def pooling(self):
        """The pooling module, also when the model is wrapped by DDP."""
        return self.hparams.model["embedding_model"].pooling

    def on_stage_start(self, stage, epoch=None):
        """Reset the per-stage statistics."""
        self.entropy_sum, self.entropy_count = 0.0, 0
        if stage != sb.Stage.TRAIN:
            self.error_metrics = self.hparams.error_stats()

    def _entropies(self):
        if not self.entropy_count:
            return {}
        mean = (self.entropy_sum / self.entropy_count).tolist()
        return {f"entropy_head{i + 1}": round(value, 4) for i, value in enumerate(mean)}

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


def crop(wav, duration, sentence_len, sample_rate, start=None):
    """Read ``sentence_len`` seconds of ``wav`` from ``start`` (random if None);
    a shorter file is repeated to the length."""
    length = int(round(sentence_len * sample_rate))
    total = int(duration * sample_rate)
    if total <= length:
        sig = read_audio(wav)
        repeats = -(-length // sig.shape[0])
        return sig.repeat(repeats)[:length]
    if start is None:
        start = random.randint(0, total - length)
    sig = read_audio({"file": wav, "start": start, "stop": start + length})
    if sig.shape[0] < length:  # header duration rounded up: pad by repeating
        sig = torch.cat([sig, sig[: length - sig.shape[0]]])
    return sig


def dataio_prep(hparams):
    """Train / valid DynamicItemDatasets with crops and encoded speaker ids."""
    folder = Path(hparams["prepare_folder"])
    label_encoder = CategoricalEncoder()
    label_encoder.load(folder / "label_encoder.txt")
    label_encoder.ignore_len()  # its size is checked against n_classes in main()
    sentence_len, sample_rate = hparams["sentence_len"], hparams["sample_rate"]
    datasets = {}
    for split in ("train", "valid"):
        data = DynamicItemDataset.from_csv(csv_path=folder / f"{split}.csv")
        if split == "train":

            @sb.utils.data_pipeline.takes("wav", "duration")
            @sb.utils.data_pipeline.provides("sig")
            def audio_pipeline(wav, duration):
                return crop(wav, float(duration), sentence_len, sample_rate)

        else:

            @sb.utils.data_pipeline.takes("wav", "duration")
            @sb.utils.data_pipeline.provides("sig")
            def audio_pipeline(wav, duration):
                extra = max(0.0, float(duration) - sentence_len)
                start = int(extra / 2 * sample_rate)
                return crop(wav, float(duration), sentence_len, sample_rate, start=start)

        @sb.utils.data_pipeline.takes("spk_id")
        @sb.utils.data_pipeline.provides("spk_id_encoded")
        def label_pipeline(spk_id):
            return torch.LongTensor([label_encoder.encode_label(spk_id)])

        data.add_dynamic_item(audio_pipeline)
        data.add_dynamic_item(label_pipeline)
        data.set_output_keys(["id", "sig", "spk_id_encoded"])
        datasets[split] = data
    return datasets["train"], datasets["valid"], label_encoder


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
            raise FileNotFoundError(f"{kind}_folder {folder}: no .wav files found")
        csv = Path(hparams["prepare_folder"]) / f"{kind}.csv"
        rows = [f"{kind}{i},0,{path},wav," for i, path in enumerate(files)]
        csv.write_text("ID,duration,wav,wav_format,wav_opts\n" + "\n".join(rows) + "\n")
        if kind == "noise":
            augmentations.append(AddNoise(csv_file=str(csv), snr_low=0, snr_high=15))
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


def route_overrides(hparams_file, overrides):
    """Send command-line overrides of keys that live in the shared
    common.yaml (e.g. --margin, --seed, --num_workers) into the ``recipe``
    block; keys of the configuration file itself stay at the top."""
    overrides = yaml.safe_load(overrides) if isinstance(overrides, str) else overrides
    overrides = dict(overrides or {})
    text = Path(hparams_file).read_text(encoding="utf-8")
    top_level = set(re.findall(r"^([A-Za-z_]\w*)\s*:", text, flags=re.MULTILINE))
    routed = {key: value for key, value in overrides.items() if key in top_level}
    nested = {key: value for key, value in overrides.items() if key not in top_level}
    if nested:
        routed["recipe"] = nested
    return routed


def load_hparams(hparams_file, overrides):
    """Load a configuration and merge its shared ``recipe`` block to the top."""
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, route_overrides(hparams_file, overrides))
    return {**hparams, **hparams.pop("recipe")}


def main(argv):
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams = load_hparams(hparams_file, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=route_overrides(hparams_file, overrides),
    )
    run_on_main(
        prepare_voxceleb1,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_folder": hparams["prepare_folder"],
            "verification_file": hparams["verification_file"],
            "valid_utterances_per_speaker": hparams["valid_utterances_per_speaker"],
            "seed": hparams["seed"],
            "num_workers": hparams["prepare_workers"],
        },
    )
    train_data, valid_data, label_encoder = dataio_prep(hparams)
    if len(label_encoder) != hparams["n_classes"]:
        overrides = yaml.safe_load(overrides) if isinstance(overrides, str) else overrides
        overrides = dict(overrides or {})
        if "n_classes" in overrides:
            raise ValueError(
                f"--n_classes={hparams['n_classes']} but the training data has "
                f"{len(label_encoder)} speakers"
            )
        overrides["n_classes"] = len(label_encoder)
        hparams = load_hparams(hparams_file, overrides)
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
    sizes = {key: hparams[key] for key in ("n_mels", "channels", "block_counts", "emb_dim", "n_classes")}
    run_on_main(
        write_pretrained,
        kwargs={
            "folder": hparams["pretrained_folder"],
            "embedding_model": hparams["model"]["embedding_model"],
            "classifier": hparams["model"]["classifier"],
            "label_encoder": label_encoder,
            "sizes": sizes,
            "model_file": INTERFACE_DIR / "model.yaml",
            "interface_file": INTERFACE_DIR / "pretrained_interface.yaml",
        },
    )


if __name__ == "__main__":
    main(sys.argv[1:])
