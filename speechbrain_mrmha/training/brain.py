"""The generic part of a speaker-embedding Brain: what every recipe that
trains an embedding with a margin loss and step schedules needs, so that
its own Brain holds only ``compute_forward``, ``compute_objectives``,
``on_stage_start`` and ``on_stage_end``.

Authors
 * speechbrain-mrmha developers
"""

import math

import speechbrain as sb
import torch
from speechbrain.dataio.dataloader import LoopedLoader
from torch.utils.data import DataLoader

from speechbrain_mrmha.layers.pooling import attention_entropy
from speechbrain_mrmha.training.runs import keep_logged_epochs
from speechbrain_mrmha.training.shard_stream import ShardLoader, ShardStream

__all__ = ["AttentionEntropy", "SpeakerEmbeddingBrain"]


class AttentionEntropy:
    """Mean attention entropy of each head over a stage (the paper's
    Fig. 2), from the weights a pooling keeps as ``last_attention``.

    Example
    -------
    >>> stats = AttentionEntropy()
    >>> stats.append(torch.full((2, 1, 4), 0.25))
    >>> stats.summarize()
    {'entropy_head1': 1.3863}
    >>> AttentionEntropy().summarize()
    {}
    """

    def __init__(self):
        self.sum, self.count = 0.0, 0

    def append(self, weights):
        """Add a batch of (batch, heads, time) weights; None adds nothing
        (a pooling without attention)."""
        if weights is None:
            return
        self.sum += attention_entropy(weights.detach()).sum(dim=0).cpu()
        self.count += weights.shape[0]

    def summarize(self):
        """``{"entropy_head<i>": mean}`` in nats, rounded to 4 digits."""
        if not self.count:
            return {}
        mean = (self.sum / self.count).tolist()
        return {f"entropy_head{i + 1}": round(v, 4) for i, v in enumerate(mean)}


class SpeakerEmbeddingBrain(sb.core.Brain):
    """SpeechBrain's ``Brain`` with what speaker-embedding training adds:

    * the learning rate and margin of every optimizer step from
      ``hparams["step_schedules"]`` (a ``StepSchedules``), built when the
      training loader gives the steps per epoch and checkpointed;
    * after a checkpoint is recovered, the train log lines of the epochs it
      does not hold are dropped (they are trained again);
    * on CPU under DDP (gloo), plain ``DistributedDataParallel``, as
      SpeechBrain's wrapping adds ``SyncBatchNorm``, which runs on GPUs only;
    * ``pooling``, the embedding model's pooling also under DDP;
    * on a GPU, data loaders that pin memory;
    * a ``ShardStream`` trains through a ``ShardLoader`` registered with the
      checkpointer, so a run resumed from an intra-epoch checkpoint goes
      on with the next batch of the epoch, as SpeechBrain does for
      map-style datasets.

    The configuration must hold ``step_schedules``, ``compute_cost`` (a
    margin loss), ``embedding_model``, ``epoch_counter`` and
    ``train_logger`` (a ``FileTrainLogger``).

    Arguments
    ---------
    modules, opt_class, hparams, run_opts, checkpointer
        As SpeechBrain's ``Brain``.

    Example
    -------
    >>> issubclass(SpeakerEmbeddingBrain, sb.core.Brain)
    True
    """

    @property
    def pooling(self):
        """The pooling module, also when the model is wrapped by DDP."""
        return self.hparams.embedding_model.pooling

    def fit(
        self,
        epoch_counter,
        train_set,
        valid_set=None,
        progressbar=None,
        train_loader_kwargs=None,
        valid_loader_kwargs=None,
    ):
        """SpeechBrain's ``fit``; the training loader is made first, so the
        schedules know the optimizer steps per epoch (this process' share
        under DDP). On a GPU the loaders pin memory."""
        train_loader_kwargs = dict(train_loader_kwargs or {})
        valid_loader_kwargs = dict(valid_loader_kwargs or {})
        if str(self.device).startswith("cuda"):  # faster copies to the GPU
            train_loader_kwargs["pin_memory"] = True
            valid_loader_kwargs["pin_memory"] = True
        if not isinstance(train_set, (DataLoader, LoopedLoader)):
            train_set = self.make_dataloader(
                train_set, stage=sb.Stage.TRAIN, **train_loader_kwargs
            )
        self.steps_per_epoch = math.ceil(
            len(train_set) / self.grad_accumulation_factor
        )
        return super().fit(
            epoch_counter,
            train_set,
            valid_set,
            progressbar,
            valid_loader_kwargs=valid_loader_kwargs,
        )

    def make_dataloader(
        self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs
    ):
        """SpeechBrain's, but a training ``ShardStream`` gets a
        ``ShardLoader``, checkpointed under the key SpeechBrain gives the
        training loader."""
        if stage != sb.Stage.TRAIN or not isinstance(dataset, ShardStream):
            return super().make_dataloader(
                dataset, stage, ckpt_prefix, **loader_kwargs
            )
        loader = ShardLoader(dataset, **loader_kwargs)
        if self.checkpointer is not None and ckpt_prefix is not None:
            self.checkpointer.add_recoverable(ckpt_prefix + stage.name, loader)
        return loader

    def on_fit_start(self):
        """Build the step schedules, recover, plan the schedules for this
        run's length again (a rerun may add epochs), then drop the log
        lines of epochs the recovered checkpoint does not hold."""
        self.checkpointer.add_recoverable(
            "lr_schedule",
            self.hparams.step_schedules.start(self.steps_per_epoch),
        )
        super().on_fit_start()
        self.hparams.step_schedules.replan()
        if sb.utils.distributed.if_main_process():
            keep_logged_epochs(
                self.hparams.train_logger.save_file,
                self.hparams.epoch_counter.current,
            )

    def on_fit_batch_start(self, batch, should_step):
        """Learning rate and margin of this optimizer step."""
        if should_step:
            self.hparams.step_schedules(
                self.optimizer, self.hparams.compute_cost
            )

    def _wrap_distributed(self):
        """On GPUs SpeechBrain's DDP wrapping (with SyncBatchNorm); on CPU
        (gloo) plain DDP, as SyncBatchNorm only runs on GPUs."""
        if not (self.distributed_launch and self.device == "cpu"):
            return super()._wrap_distributed()
        for name, module in self.modules.items():
            if any(p.requires_grad for p in module.parameters()):
                self.modules[name] = torch.nn.parallel.DistributedDataParallel(
                    module, device_ids=None
                )
