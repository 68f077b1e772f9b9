"""Training machinery (library ring) that every recipe composes from its
yaml: crops and speed copies, feature masks and augmentation, step
schedules of the learning rate and the margin, checkpoints and run locks,
fine-tuning starts and configuration reading. Imports only the rings
inside it (``layers``, ``scoring``, ``dataio``)."""
