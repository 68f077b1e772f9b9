"""Learning-rate schedules planned in optimizer steps as fractions of the
run, so that a 12-epoch and a 150-epoch run follow the same curve.

Authors
 * speechbrain-mrmha developers
"""

import math

import torch
from speechbrain.utils import checkpoints

__all__ = ["WarmHoldDecay"]


@checkpoints.register_checkpoint_hooks
class WarmHoldDecay:
    """Linear warm-up over ``n_warmup_steps``, the peak rate ``lr`` held,
    then a cosine decay to ``lr_final`` over the last ``decay_fraction`` of
    the ``total_steps``. ``decay_fraction`` 0 holds ``lr`` to the end
    (constant after the warm-up); 1 decays over the whole run after the
    warm-up (warm-up + cosine).

    Called with the optimizer before each step, as SpeechBrain's
    ``WarmAndExpDecayLRSchedule``; ``current_step`` counts the steps taken
    (``StepSchedules.replan`` gives a resumed run with more epochs the plan
    of a run that long, keeping the step count).

    Arguments
    ---------
    lr : float
        The peak learning rate.
    n_warmup_steps : int
        Steps of the linear warm-up from 0.
    total_steps : int
        Steps of the whole run.
    lr_final : float
        The rate at the last step.
    decay_fraction : float
        The last part of the run, in [0, 1], over which the rate decays.

    Example
    -------
    >>> schedule = WarmHoldDecay(1.0, n_warmup_steps=2, total_steps=10,
    ...                          lr_final=0.0, decay_fraction=0.5)
    >>> [round(schedule.rate(s), 3) for s in range(11)]
    [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 0.905, 0.655, 0.345, 0.095, 0.0]
    """

    def __init__(
        self, lr, n_warmup_steps, total_steps, lr_final, decay_fraction
    ):
        if not 0.0 <= decay_fraction <= 1.0:
            raise ValueError(
                f"decay_fraction must lie in [0, 1], got {decay_fraction}"
            )
        self.lr = lr
        self.lr_final = lr_final
        self.n_warmup_steps = int(n_warmup_steps)
        self.decay_fraction = decay_fraction
        self.total_steps = int(total_steps)
        self.current_step = 0
        self.current_lr = 0.0

    def rate(self, step):
        """The learning rate of optimizer step ``step`` (0-based)."""
        if step < self.n_warmup_steps:
            return self.lr * step / self.n_warmup_steps
        decay_steps = round(self.decay_fraction * self.total_steps)
        start = max(self.n_warmup_steps, self.total_steps - decay_steps)
        if step < start or self.total_steps <= start:
            return self.lr
        progress = min(1.0, (step - start) / (self.total_steps - start))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.lr_final + (self.lr - self.lr_final) * cosine

    def __call__(self, optimizer):
        """Sets the rate of the next step on every parameter group."""
        self.current_lr = self.rate(self.current_step)
        for group in optimizer.param_groups:
            group["lr"] = self.current_lr
        self.current_step += 1

    @checkpoints.mark_as_saver
    def save(self, path):
        """Saves the step count and the plan."""
        torch.save(
            {
                "current_step": self.current_step,
                "total_steps": self.total_steps,
                "n_warmup_steps": self.n_warmup_steps,
            },
            path,
        )

    @checkpoints.mark_as_loader
    def load(self, path, end_of_epoch=False):
        """Restores the step count and the plan of a checkpoint."""
        del end_of_epoch
        data = torch.load(path, weights_only=True)
        self.current_step = int(data["current_step"])
        self.total_steps = int(data["total_steps"])
        self.n_warmup_steps = int(data["n_warmup_steps"])
