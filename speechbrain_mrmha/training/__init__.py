"""Training machinery (library ring) that every recipe composes from its
yaml: crops and speed copies (``crops``), feature masks and noise /
reverberation (``augment``), step schedules of the learning rate and the
margin (``schedules``), the generic speaker-embedding Brain (``brain``),
fine-tuning starts (``finetune``), checkpoints, run locks and log trimming
(``runs``) and configuration reading (``config``). Imports only the rings
inside it (``layers``, ``scoring``, ``dataio``)."""
