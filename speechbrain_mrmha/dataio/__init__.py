"""Data in and out (library ring): audio reading and WAV headers
(``audio``), atomic file writes (``files``), annotation CSVs, trial lists,
and one report of every bad input (``problems``). Like SpeechBrain's own
``speechbrain.dataio``; imports only ``layers`` and ``scoring``."""
