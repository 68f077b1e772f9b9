"""Step schedules: the learning rate and the margin of every optimizer step.
A configuration gives the warm-ups as fractions of the run's optimizer
steps (so a 12-epoch and a 150-epoch run behave alike), turned into steps
once the training loader says how many steps an epoch has.

The learning rate follows SpeechBrain's ``WarmAndExpDecayLRSchedule``
(linear warm-up, then exponential decay to ``lr_final`` at the last step);
or ``WarmHoldDecay`` (warm-up, the peak held, a cosine decay over the
last part of the run; a candidate default measured by
``bench/schedules.py``); the margin follows ``MarginWarmup``. The
learning-rate schedule is
checkpointed (as ``lr_schedule``), so a resumed run continues at its step.

Built in the yaml::

    step_schedules: !new:speechbrain_mrmha.training.schedules.StepSchedules
        lr_schedule: !ref <lr_schedule>
        number_of_epochs: !ref <number_of_epochs>
        lr_warmup_fraction: !ref <lr_warmup_fraction>
        margin: !ref <margin>
        margin_warmup_start_fraction: !ref <margin_warmup_start_fraction>
        margin_warmup_end_fraction: !ref <margin_warmup_end_fraction>

Authors
 * speechbrain-mrmha developers
"""

import math

import torch
from speechbrain.utils import checkpoints

__all__ = ["MarginWarmup", "StepSchedules", "WarmHoldDecay"]


class MarginWarmup:
    """Margin warm-up by optimizer steps: 0 for the first ``start_step``
    steps, then rising linearly to ``margin`` at ``end_step``, then constant
    (WeSpeaker's schedule, linear instead of exponential). With
    ``end_step <= start_step`` the margin is ``margin`` from step 0 on.

    Arguments
    ---------
    margin : float
        The final margin m.
    start_step : int
        Last step with margin 0.
    end_step : int
        First step with the full margin.

    Example
    -------
    >>> warmup = MarginWarmup(margin=0.2, start_step=10, end_step=30)
    >>> [round(warmup(step), 3) for step in (0, 10, 20, 30, 99)]
    [0.0, 0.0, 0.1, 0.2, 0.2]
    >>> MarginWarmup(margin=0.2, start_step=0, end_step=0)(0)
    0.2
    """

    def __init__(self, margin, start_step, end_step):
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin = float(margin)
        self.start_step = int(start_step)
        self.end_step = int(end_step)

    def __call__(self, step):
        """The margin at optimizer step ``step`` (0 for the first step)."""
        if self.end_step <= self.start_step or step >= self.end_step:
            return self.margin
        if step <= self.start_step:
            return 0.0
        return (
            self.margin
            * (step - self.start_step)
            / (self.end_step - self.start_step)
        )


class StepSchedules:
    """The learning rate and margin schedules of a run, in fractions of its
    optimizer steps until ``start`` gives the steps of an epoch.

    With ``S`` steps per epoch and ``E`` epochs, the run has ``T = E * S``
    steps; the learning rate warms up over ``round(lr_warmup_fraction * T)``
    steps, and the margin is 0 until step
    ``round(margin_warmup_start_fraction * T)`` and full from step
    ``round(margin_warmup_end_fraction * T)``.

    Arguments
    ---------
    lr_schedule : callable
        Makes the learning-rate schedule from ``n_warmup_steps`` and
        ``total_steps`` (e.g. SpeechBrain's ``WarmAndExpDecayLRSchedule``
        with its ``lr`` and ``decay_factor`` bound, a ``!name:`` entry); the
        schedule is called with the optimizer before each step and has
        ``current_step``.
    number_of_epochs : int
        Epochs of the run.
    lr_warmup_fraction : float
        The part of the run, in [0, 1), over which the learning rate rises
        linearly from 0.
    margin : float
        The final margin.
    margin_warmup_start_fraction, margin_warmup_end_fraction : float
        Parts of the run, in [0, 1]: the margin is 0 until the first, then
        rises linearly to ``margin`` at the second (0 and 0: the full
        margin from the first step).

    Example
    -------
    >>> import torch
    >>> from speechbrain.nnet.schedulers import WarmAndExpDecayLRSchedule
    >>> from speechbrain_mrmha.layers.margins import CosAMSLoss
    >>> from functools import partial
    >>> schedules = StepSchedules(
    ...     partial(WarmAndExpDecayLRSchedule, lr=0.1, decay_factor=0.5),
    ...     number_of_epochs=2, lr_warmup_fraction=0.5, margin=0.2,
    ...     margin_warmup_start_fraction=0, margin_warmup_end_fraction=0.5)
    >>> lr_schedule = schedules.start(steps_per_epoch=10)
    >>> optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1)
    >>> loss = CosAMSLoss(margin=0.2)
    >>> for _ in range(15):
    ...     schedules(optimizer, loss)
    >>> schedules.current_step, round(loss.margin, 3)
    (15, 0.2)
    """

    def __init__(
        self,
        lr_schedule,
        number_of_epochs,
        lr_warmup_fraction,
        margin,
        margin_warmup_start_fraction=0.0,
        margin_warmup_end_fraction=0.0,
    ):
        self.make_lr_schedule = lr_schedule
        self.number_of_epochs = number_of_epochs
        self.lr_warmup_fraction = lr_warmup_fraction
        self.margin = margin
        self.margin_warmup_start_fraction = margin_warmup_start_fraction
        self.margin_warmup_end_fraction = margin_warmup_end_fraction
        self.lr_schedule = self.margin_warmup = self.steps_per_epoch = None

    def start(self, steps_per_epoch):
        """Build both schedules for ``steps_per_epoch`` optimizer steps per
        epoch; returns the learning-rate schedule, to be checkpointed.

        Arguments
        ---------
        steps_per_epoch : int
            Optimizer steps of an epoch (of this process, under DDP).

        Returns
        -------
        lr_schedule : object
            What ``lr_schedule`` made.
        """
        self.steps_per_epoch = steps_per_epoch
        self.lr_schedule = self._plan()
        self.margin_warmup = self._margin_plan()
        return self.lr_schedule

    def replan(self):
        """After a checkpoint is recovered: the plan of the learning-rate
        schedule (warm-up and total steps, e.g. ``decay_steps``) is this
        run's again, only its step count is the checkpoint's. So a rerun
        with more epochs trains the added steps at the rates of a run
        planned that long from the start, instead of following the old
        plan past its end (where an exponential decay reaches ~1e-15).

        Example
        -------
        >>> from functools import partial
        >>> from speechbrain.nnet.schedulers import WarmAndExpDecayLRSchedule
        >>> make = partial(WarmAndExpDecayLRSchedule, lr=1.0, decay_factor=0.01)
        >>> short = StepSchedules(make, 1, 0.0, margin=0.2).start(10)
        >>> long = StepSchedules(make, 3, 0.0, margin=0.2)
        >>> recovered = long.start(10)
        >>> recovered.__dict__.update(short.__dict__, current_step=10)
        >>> recovered.decay_steps  # the recovered plan: 10 steps
        10
        >>> long.replan()
        >>> recovered.decay_steps, recovered.current_step
        (30, 10)
        """
        fresh = self._plan()
        for key, value in vars(fresh).items():
            if key not in ("current_step", "current_lr"):
                setattr(self.lr_schedule, key, value)
        self.margin_warmup = self._margin_plan()

    @property
    def total_steps(self):
        """Optimizer steps of the whole run (after ``start``)."""
        return self.steps_per_epoch * self.number_of_epochs

    def _plan(self):
        """A new learning-rate schedule of this run's plan."""
        total = self.total_steps
        warmup = round(self.lr_warmup_fraction * total)
        return self.make_lr_schedule(
            n_warmup_steps=warmup, total_steps=max(total, warmup + 1)
        )

    def _margin_plan(self):
        """The margin warm-up of this run's plan."""
        return MarginWarmup(
            self.margin,
            round(self.margin_warmup_start_fraction * self.total_steps),
            round(self.margin_warmup_end_fraction * self.total_steps),
        )

    @property
    def current_step(self):
        """Optimizer steps taken so far (0 before the first)."""
        return self.lr_schedule.current_step

    def __call__(self, optimizer, loss):
        """Before an optimizer step: the margin of ``loss`` (a margin loss
        with a settable ``margin``) and the learning rate of ``optimizer``
        for this step."""
        loss.margin = self.margin_warmup(self.current_step)
        self.lr_schedule(optimizer)


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
