"""SpeechBrain annotation CSVs (``ID,duration,wav,spk_id,...``) read with
clear errors: every problem of a file is reported at once, naming the file.

SpeechBrain's conventions hold: extra columns are ignored, spaces after the
commas of the header are ignored (``ID, duration``), and ``$data_root`` in a
``wav`` value is replaced by the data folder; any other path is used as
written (relative paths are relative to the working directory).

Authors
 * speechbrain-mrmha developers
"""

import csv
from pathlib import Path

from speechbrain_mrmha.dataio.problems import SHOWN, list_problems

__all__ = ["read_annotation", "read_training_annotations"]


def read_annotation(
    path,
    data_folder=None,
    columns=("ID", "duration", "wav", "spk_id"),
    check_files=True,
):
    """Read an annotation CSV into ``{ID: row}``.

    Arguments
    ---------
    path : str or Path
        The CSV file.
    data_folder : str or Path, optional
        Replaces ``$data_root`` in ``wav`` values.
    columns : tuple of str
        Columns that must be present (and non-empty in every row).
        ``duration`` is converted to float and must be > 0.
    check_files : bool
        Also check that every ``wav`` file exists.

    Returns
    -------
    rows : dict
        ID -> {column: value} in file order (``duration`` a float).

    Raises
    ------
    FileNotFoundError
        The CSV does not exist, or (``check_files``) listed audio files do
        not (all of them in one message).
    ValueError
        Missing columns, empty values, duplicate IDs or bad durations, all
        listed in one message naming the file and line.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.csv").write_text(
    ...     "ID, duration,wav,spk_id\\nu1,2.5,$data_root/u1.wav,s1\\n")
    >>> rows = read_annotation(folder / "a.csv", "/data", check_files=False)
    >>> rows["u1"]["wav"], rows["u1"]["duration"]
    ('/data/u1.wav', 2.5)
    >>> _ = (folder / "b.csv").write_text("ID,wav\\nu1,x.wav\\n")
    >>> read_annotation(folder / "b.csv", check_files=False)
    Traceback (most recent call last):
    ...
    ValueError: ... lacks the column(s) duration, spk_id (it has ID, wav)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation CSV {path} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as fin:
        reader = csv.DictReader(fin, skipinitialspace=True)
        header = [name.strip() for name in reader.fieldnames or []]
        absent = [name for name in columns if name not in header]
        if absent:
            raise ValueError(
                f"annotation CSV {path} lacks the column(s) {', '.join(absent)} "
                f"(it has {', '.join(header) or 'no header'})"
            )
        reader.fieldnames = header
        rows, problems = {}, []
        for line, row in enumerate(reader, start=2):
            row = {
                key: (value or "").strip() for key, value in row.items() if key
            }
            empty = [name for name in columns if not row.get(name)]
            if empty:
                problems.append(f"line {line}: empty {', '.join(empty)}")
                continue
            if "duration" in columns:
                try:
                    row["duration"] = float(row["duration"])
                except ValueError:
                    row["duration"] = float("nan")
                if not row["duration"] > 0:
                    problems.append(
                        f"line {line}: duration must be a number > 0"
                    )
                    continue
            if "wav" in columns and data_folder is not None:
                row["wav"] = row["wav"].replace("$data_root", str(data_folder))
            if row["ID"] in rows:
                problems.append(f"line {line}: duplicate ID {row['ID']!r}")
                continue
            rows[row["ID"]] = row
    if problems:
        raise ValueError(
            f"annotation CSV {path}: {len(problems)} bad row(s):\n"
            + list_problems(problems)
        )
    if not rows:
        raise ValueError(f"annotation CSV {path} holds no row")
    if check_files and "wav" in columns:
        missing = [
            f"{row['wav']} (ID {key})"
            for key, row in rows.items()
            if not Path(row["wav"]).is_file()
        ]
        if missing:
            raise FileNotFoundError(
                f"annotation CSV {path}: {len(missing)} of {len(rows)} audio files "
                f"do not exist:\n{list_problems(missing)}"
            )
    return rows


def read_training_annotations(train_annotation, valid_annotation, data_folder):
    """The training and validation annotation CSVs of a speaker-embedding
    recipe and the training speakers; a validation speaker who is not a
    training speaker is an error (the classifier has no class for them).

    Arguments
    ---------
    train_annotation, valid_annotation : str or Path
        CSVs with ``ID, duration, wav, spk_id`` (see ``read_annotation``).
    data_folder : str or Path
        Replaces ``$data_root`` in ``wav`` values.

    Returns
    -------
    train, valid : dict
        ID -> row, as ``read_annotation``.
    speakers : list of str
        The training speakers, sorted.

    Example
    -------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "t.csv").write_text("ID,duration,wav,spk_id\\n"
    ...     "u1,1.0,$data_root/x.wav,s2\\nu2,1.0,$data_root/x.wav,s1\\n")
    >>> _ = (folder / "v.csv").write_text("ID,duration,wav,spk_id\\n"
    ...     "u3,1.0,$data_root/x.wav,s9\\n")
    >>> (folder / "x.wav").touch()
    >>> read_training_annotations(folder / "t.csv", folder / "t.csv", folder)[2]
    ['s1', 's2']
    >>> read_training_annotations(folder / "t.csv", folder / "v.csv", folder)
    Traceback (most recent call last):
    ...
    ValueError: valid_annotation ...v.csv: speakers absent from train_annotation ...t.csv: s9
    """
    train = read_annotation(train_annotation, data_folder)
    valid = read_annotation(valid_annotation, data_folder)
    speakers = sorted({row["spk_id"] for row in train.values()})
    unknown = sorted({row["spk_id"] for row in valid.values()} - set(speakers))
    if unknown:
        raise ValueError(
            f"valid_annotation {valid_annotation}: speakers absent from "
            f"train_annotation {train_annotation}: {', '.join(unknown[:SHOWN])}"
        )
    return train, valid, speakers
