"""A run trained from shards, killed in the middle of an epoch and resumed
from its intra-epoch checkpoint, ends with the very weights of an
uninterrupted run: a tiny model trains through ``SpeakerEmbeddingBrain``
(which makes the ``ShardLoader`` of the ``ShardStream`` and registers it)
with 2 loader workers and a checkpoint after every batch, is killed by an
exception before a batch, and a new Brain, stream and loader resume it;
together the two runs train exactly the batches of the uninterrupted one,
in its order, and the final parameters are equal bit for bit. The resume
rule for every k, worker count and process: tests/unit/test_shard_resume.py.
"""

import functools

import pytest
import speechbrain as sb
import torch
from conftest import noise_shards
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.nnet.schedulers import WarmAndExpDecayLRSchedule
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.epoch_loop import EpochCounter
from speechbrain.utils.train_logger import FileTrainLogger

from speechbrain_mrmha.layers.margins import CosineClassifier, margin_loss
from speechbrain_mrmha.training.brain import SpeakerEmbeddingBrain
from speechbrain_mrmha.training.crops import RandomCrops
from speechbrain_mrmha.training.schedules import StepSchedules
from speechbrain_mrmha.training.shard_stream import ShardLoader, ShardStream

EPOCHS, BATCH, WORKERS, SPEEDS = 2, 2, 2, [1.0, 0.9, 1.1]
BATCHES = 6  # per epoch: 11 utterances in batches of 2


class Killed(Exception):
    """The process dies."""


class Embedder(torch.nn.Module):
    """Log energies of 32 frames -> a linear embedding (``pooling`` as the
    Brain expects of an embedding model)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(32, 8)
        self.pooling = torch.nn.Identity()

    def forward(self, sig):
        frames = sig.reshape(sig.shape[0], 32, -1)
        return self.linear(torch.log(frames.pow(2).mean(dim=-1) + 1e-6))


class TinyBrain(SpeakerEmbeddingBrain):
    def compute_forward(self, batch, stage):
        embeddings = self.modules.embedding_model(batch.sig.data)
        return self.modules.classifier(embeddings)

    def compute_objectives(self, predictions, batch, stage):
        if stage == sb.Stage.TRAIN:
            self.trained.append(list(batch.id))
        spk_id, _ = batch.spk_id_encoded
        return self.hparams.compute_cost(predictions, spk_id)

    def on_stage_start(self, stage, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.hparams.crops.epoch = epoch
            self.started_at.append(self.step)  # SpeechBrain's own count

    def on_fit_batch_start(self, batch, should_step):
        if len(self.trained) == self.kill_before:
            raise Killed
        super().on_fit_batch_start(batch, should_step)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats(
                {"epoch": epoch}, valid_stats={"loss": stage_loss}
            )
            self.checkpointer.save_checkpoint()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """11 utterances of 3 speakers, 0.4 to 0.9 s, in shards of 3."""
    folder = tmp_path_factory.mktemp("corpus")
    return noise_shards(  # the speakers differ in level
        folder,
        11,
        seed=4,
        first=0.4,
        step=0.05,
        gain=lambda i: 0.05 * (1 + i % 3),
    )


def run(folder, corpus, kill_before=None):
    """Train (or resume) the run in ``folder``; with ``kill_before`` the
    process dies before its batch of that number (counted in this run):
    the Brain says ``killed``."""
    shards, rows = corpus
    torch.manual_seed(0)
    embedding_model, classifier = Embedder(), CosineClassifier(8, 9)
    crops = RandomCrops(3, sentence_len=0.2, speeds=SPEEDS)
    counter = EpochCounter(EPOCHS)
    hparams = {
        "crops": crops,
        "embedding_model": embedding_model,
        "compute_cost": margin_loss("cosams", margin=0.2, scale=10.0),
        "epoch_counter": counter,
        "train_logger": FileTrainLogger(folder / "train_log.txt"),
        "step_schedules": StepSchedules(
            functools.partial(
                WarmAndExpDecayLRSchedule, lr=0.1, decay_factor=0.1
            ),
            number_of_epochs=EPOCHS,
            lr_warmup_fraction=0.25,
            margin=0.2,
            margin_warmup_start_fraction=0.0,
            margin_warmup_end_fraction=0.5,
        ),
    }
    modules = {"embedding_model": embedding_model, "classifier": classifier}
    brain = TinyBrain(
        modules=modules,
        opt_class=lambda params: torch.optim.SGD(params, lr=1.0, momentum=0.9),
        hparams=hparams,
        run_opts={
            "device": "cpu",
            "noprogressbar": True,
            "ckpt_interval_steps": 1,
        },
        checkpointer=Checkpointer(
            folder / "save", {**modules, "counter": counter}
        ),
    )
    brain.trained, brain.started_at, brain.kill_before = [], [], kill_before
    speakers = sorted({row["spk_id"] for row in rows.values()})
    valid = [
        {
            "id": key,
            "sig": crops.centre(row["wav"], row["duration"]),
            "spk_id_encoded": torch.LongTensor([speakers.index(row["spk_id"])]),
        }
        for key, row in sorted(rows.items())[:4]
    ]
    try:
        brain.fit(
            counter,
            ShardStream(shards, crops, BATCH, shuffle_buffer=4),
            valid,
            train_loader_kwargs={"num_workers": WORKERS},
            valid_loader_kwargs={
                "batch_size": BATCH,
                "collate_fn": PaddedBatch,
            },
        )
        brain.killed = False
    except Killed:
        brain.killed = True
    return brain


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """The uninterrupted run."""
    return run(tmp_path_factory.mktemp("once"), corpus)


# killed: in epoch 1 after 3 batches (worker 1's turn next), before
# epoch 2 (its first batch: the end-of-epoch checkpoint is the newest), in
# epoch 2 after 4 of its batches
@pytest.mark.parametrize("kill_before", [3, BATCHES, BATCHES + 4])
def test_a_run_resumed_mid_epoch_ends_with_the_weights_of_an_uninterrupted_one(
    corpus, reference, tmp_path, kill_before
):
    assert len(reference.trained) == EPOCHS * BATCHES
    loader = reference.checkpointer.recoverables["dataloader-TRAIN"]
    assert isinstance(loader, ShardLoader) and loader.num_workers == WORKERS
    killed = run(tmp_path / "run", corpus, kill_before=kill_before)
    assert killed.killed and len(killed.trained) == kill_before
    resumed = run(tmp_path / "run", corpus)
    assert not resumed.killed
    assert resumed.started_at[0] == kill_before % BATCHES
    assert killed.trained + resumed.trained == reference.trained
    for ours, theirs in zip(
        resumed.modules.parameters(), reference.modules.parameters()
    ):
        assert torch.equal(ours, theirs)
    log = reference.hparams.train_logger.save_file
    assert (tmp_path / "run" / "train_log.txt").read_text() == (
        open(log).read()
    )
