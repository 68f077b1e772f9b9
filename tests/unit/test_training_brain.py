"""The generic speaker-embedding Brain and its helpers
(speechbrain_mrmha.training.brain, .runs, .finetune): schedules by the
steps of the training loader, a resumed run ends like an uninterrupted one
with the log of the epochs its checkpoint holds, per-head attention
entropies, and fine-tuning starts that refuse what does not fit."""

import functools

import pytest
import speechbrain as sb
import torch
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.nnet.schedulers import WarmAndExpDecayLRSchedule
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.epoch_loop import EpochCounter
from speechbrain.utils.train_logger import FileTrainLogger

from speechbrain_mrmha.layers.margins import CosineClassifier, margin_loss
from speechbrain_mrmha.training.brain import (
    AttentionEntropy,
    SpeakerEmbeddingBrain,
)
from speechbrain_mrmha.training.finetune import initialise_from
from speechbrain_mrmha.training.runs import keep_logged_epochs
from speechbrain_mrmha.training.schedules import StepSchedules


class Embedder(torch.nn.Module):
    """A linear embedding with a ``pooling`` attribute, as ResNet34 has."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(6, 4)
        self.pooling = torch.nn.Identity()

    def forward(self, x):
        return self.linear(x)


class TinyBrain(SpeakerEmbeddingBrain):
    def compute_forward(self, batch, stage):
        x, _ = batch
        return self.modules.classifier(self.modules.embedding_model(x))

    def compute_objectives(self, predictions, batch, stage):
        _, y = batch
        if stage == sb.Stage.TRAIN:
            self.margins.append(self.hparams.compute_cost.margin)
        return self.hparams.compute_cost(predictions, y)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats(
                {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]},
                valid_stats={"loss": stage_loss},
            )
            self.checkpointer.save_checkpoint()


def run(folder, epochs, limit=None):
    """Train TinyBrain for ``epochs`` of 5 steps (batch 2 of 10 samples);
    with ``limit`` the epoch counter stops early (an interrupted run)."""
    torch.manual_seed(0)
    embedding_model, classifier = Embedder(), CosineClassifier(4, 3)
    counter = EpochCounter(limit or epochs)
    hparams = {
        "embedding_model": embedding_model,
        "compute_cost": margin_loss("cosams", margin=0.2, scale=10.0),
        "epoch_counter": counter,
        "train_logger": FileTrainLogger(folder / "train_log.txt"),
        "step_schedules": StepSchedules(
            functools.partial(
                WarmAndExpDecayLRSchedule, lr=0.1, decay_factor=0.1
            ),
            number_of_epochs=epochs,
            lr_warmup_fraction=1.0 / epochs,
            margin=0.2,
            margin_warmup_start_fraction=0.0,
            margin_warmup_end_fraction=2.0 / epochs,
        ),
    }
    modules = {"embedding_model": embedding_model, "classifier": classifier}
    brain = TinyBrain(
        modules=modules,
        opt_class=lambda params: torch.optim.SGD(params, lr=1.0),
        hparams=hparams,
        run_opts={"device": "cpu", "noprogressbar": True},
        checkpointer=Checkpointer(
            folder / "save",
            {"embedding_model": embedding_model, "classifier": classifier},
        ),
    )
    brain.checkpointer.add_recoverable("counter", counter)
    brain.margins = []
    generator = torch.Generator().manual_seed(1)
    data = [
        (torch.randn(6, generator=generator), torch.tensor([i % 3]))
        for i in range(10)
    ]
    brain.fit(
        counter,
        data,
        data,
        train_loader_kwargs={"batch_size": 2},
        valid_loader_kwargs={"batch_size": 2},
    )
    return brain


def test_schedules_follow_the_steps_of_the_training_loader(tmp_path):
    brain = run(tmp_path, epochs=3)
    assert brain.steps_per_epoch == 5
    schedules = brain.hparams.step_schedules
    assert schedules.current_step == 15
    # the margin of every step: linear from 0 at step 0 to 0.2 at step 10
    expected = [0.2 * min(1.0, step / 10) for step in range(15)]
    assert brain.margins == pytest.approx(expected)
    assert "lr_schedule" in brain.checkpointer.recoverables
    assert brain.pooling is brain.hparams.embedding_model.pooling


def test_a_resumed_run_ends_like_an_uninterrupted_one(tmp_path):
    reference = run(tmp_path / "once", epochs=3)
    run(tmp_path / "resumed", epochs=3, limit=2)  # "killed" after epoch 2
    log = tmp_path / "resumed" / "train_log.txt"
    # a line of an epoch the checkpoint does not hold (written after it)
    log.write_text(log.read_text() + "epoch: 3, lr: 1.00e-01 - valid loss: 9\n")
    resumed = run(tmp_path / "resumed", epochs=3)
    assert resumed.hparams.step_schedules.current_step == 15
    assert log.read_text() == (tmp_path / "once" / "train_log.txt").read_text()
    for ours, theirs in zip(
        resumed.modules.parameters(), reference.modules.parameters()
    ):
        assert torch.equal(ours, theirs)


def test_keep_logged_epochs(tmp_path):
    log = tmp_path / "train_log.txt"
    keep_logged_epochs(log, 3)  # no file: nothing to do
    assert not log.exists()
    lines = ["epoch: 1, a\n", "note\n", "epoch: 2, b\n", "epoch: 10, c\n"]
    log.write_text("".join(lines))
    keep_logged_epochs(log, 2)
    assert log.read_text() == "".join(lines[:3])
    keep_logged_epochs(log, 0)
    assert log.read_text() == "note\n"


def test_attention_entropy_per_head():
    stats = AttentionEntropy()
    uniform = torch.full((3, 1, 4), 0.25)
    peaked = torch.zeros(3, 1, 4)
    peaked[..., 0] = 1.0
    stats.append(torch.cat([uniform, peaked], dim=1))
    stats.append(None)  # a pooling without attention adds nothing
    summary = stats.summarize()
    assert summary == {
        "entropy_head1": round(float(torch.log(torch.tensor(4.0))), 4),
        "entropy_head2": 0.0,
    }


def test_initialise_from_copies_weights_and_checks_classes(tmp_path, caplog):
    trained = {
        "embedding_model": Embedder(),
        "classifier": CosineClassifier(4, 3),
    }
    for name, module in trained.items():
        torch.save(module.state_dict(), tmp_path / f"{name}.ckpt")
    labels = CategoricalEncoder()
    labels.update_from_iterable(["a", "b", "c"])
    labels.save(tmp_path / "label_encoder.txt")
    fresh = {
        "embedding_model": Embedder(),
        "classifier": CosineClassifier(4, 3),
    }
    with caplog.at_level("INFO"):
        initialise_from(tmp_path, fresh, labels)
    assert f"initialised embedding_model and classifier from {tmp_path}" in (
        caplog.text
    )
    for name in trained:
        for ours, theirs in zip(
            fresh[name].parameters(), trained[name].parameters()
        ):
            assert torch.equal(ours, theirs)
    other = CategoricalEncoder()
    other.update_from_iterable(["a", "b", "d"])
    with pytest.raises(ValueError, match="are not this run's training"):
        initialise_from(tmp_path, fresh, other)
    fresh["classifier"] = CosineClassifier(4, 5)
    with pytest.raises(ValueError, match="classifier.ckpt: does not fit"):
        initialise_from(tmp_path, fresh, labels)
    (tmp_path / "classifier.ckpt").unlink()
    with pytest.raises(FileNotFoundError, match="no classifier.ckpt"):
        initialise_from(tmp_path, fresh, labels)
