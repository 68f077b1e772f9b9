"""The application ring of speechbrain_mrmha: what a person runs.

* ``cli``: the command line, ``python -m speechbrain_mrmha <command>``; it
  parses arguments, calls the model object
  (``speechbrain_mrmha.inference.model.SpeakerModel``) and prints.
* ``demo``: the synthetic-corpus demo (drives the VoxCeleb1 recipe of a
  clone of the repository).
* ``plotting``: figures (attention weights, DET curves, score histograms).
* ``synthetic``: a seeded synthetic corpus in the VoxCeleb1 layout,
  ``python -m speechbrain_mrmha.app.synthetic``.

It builds on the library (``layers``, ``scoring``, ``dataio``,
``training``) and the services (``inference``); neither imports anything
from here.
"""
