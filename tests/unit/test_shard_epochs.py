"""The epoch rule of ``speechbrain_mrmha.training.shard_stream`` on its own
(``epoch_pieces``: any shard count, processes, workers and batch size) and
the stream in one process: the crops are those of the files, errors name
the shard, the utterance and its original file; shards of another count
than the training annotation's, and an epoch ending with a batch of one,
are refused with every other problem of the shards in one error. Two DDP
processes with loader workers: tests/integration/test_shard_stream.py."""

import io
import logging
import math
import shutil
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import noise_shards

from speechbrain_mrmha.dataio.shards import write_shards
from speechbrain_mrmha.training import shard_stream as stream_module
from speechbrain_mrmha.training.crops import RandomCrops
from speechbrain_mrmha.training.shard_stream import ShardStream, epoch_pieces

CASES = [  # shard sizes, processes, workers, batch size
    ([5, 5, 5, 5, 4], 2, 2, 4),
    ([7] * 9 + [3], 3, 2, 5),
    ([100], 4, 3, 8),
    ([1, 2, 3, 4, 5, 6, 7], 2, 4, 3),
    ([10] * 13, 1, 1, 32),
    ([3, 3], 2, 4, 16),
]


def positions(counts, epoch, world, workers, batch, seed=0):
    """{(rank, worker): [(shard, index), ...]} of one epoch."""
    return {
        (r, w): [
            (shard, i)
            for shard, start, stop in epoch_pieces(
                counts, seed, epoch, r, world, w, workers, batch
            )
            for i in range(start, stop)
        ]
        for r in range(world)
        for w in range(workers)
    }


@pytest.mark.parametrize("counts, world, workers, batch", CASES)
def test_an_epoch_reads_each_utterance_once_but_n_mod_processes(
    counts, world, workers, batch
):
    parts = positions(counts, 0, world, workers, batch)
    read = [p for part in parts.values() for p in part]
    assert len(read) == len(set(read))  # nothing twice
    n = sum(counts)
    assert len(read) == n - n % world  # only n % world left out
    assert read  # (the left out are a shard's end)


@pytest.mark.parametrize("counts, world, workers, batch", CASES)
def test_every_process_yields_len_of_its_dataloader_batches(
    counts, world, workers, batch
):
    """Batches per process: each worker batches its own part; all
    processes yield ceil((n // world) / batch), DataLoader's ``len``."""
    parts = positions(counts, 1, world, workers, batch)
    for r in range(world):
        batches = sum(
            math.ceil(len(parts[r, w]) / batch) for w in range(workers)
        )
        assert batches == math.ceil(sum(counts) // world / batch)


def test_the_order_is_drawn_from_seed_and_epoch():
    counts = [4] * 10
    first = positions(counts, 0, 2, 2, 4)
    assert positions(counts, 0, 2, 2, 4) == first
    assert positions(counts, 1, 2, 2, 4) != first
    assert positions(counts, 0, 2, 2, 4, seed=1) != first
    for epoch in (1, 2):
        again = positions(counts, epoch, 2, 2, 4)
        assert sorted(p for v in again.values() for p in v) == sorted(
            p for v in first.values() for p in v
        )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """7 utterances of 3 speakers, 0.3 to 0.9 s, in shards of 3."""
    folder = tmp_path_factory.mktemp("stream")
    return noise_shards(folder, 7, seed=1, first=0.3, step=0.1)


def test_the_crops_are_those_of_the_files(corpus):
    """Same (seed, epoch, utterance): the crop and speed copy read from the
    shard equal those ``RandomCrops.read`` gives from the original file."""
    folder, rows = corpus
    crops = RandomCrops(5, sentence_len=0.5, speeds=[1.0, 0.9, 1.1])
    stream = ShardStream(folder, crops, batch_size=2)
    speakers = sorted({row["spk_id"] for row in rows.values()})
    for epoch in (0, 3):
        crops.epoch = epoch
        items = list(stream)
        assert sorted(item["id"] for item in items) == sorted(rows)
        for item in items:
            row = rows[item["id"]]
            sig, copy = crops.read(item["id"], row["wav"], row["duration"])
            assert torch.equal(item["sig"], sig)
            assert item["sig"].shape == (8000,)
            label = speakers.index(row["spk_id"]) + len(speakers) * copy
            assert item["spk_id_encoded"].tolist() == [label]


def test_left_out_utterances_are_logged(corpus, caplog):
    folder, _ = corpus
    with caplog.at_level(logging.WARNING, logger=stream_module.__name__):
        stream = ShardStream(
            folder, RandomCrops(1), batch_size=2, rank=1, world_size=2
        )
    assert "7 utterances over 2 processes: 1 per epoch are left out" in (
        caplog.text
    )
    assert len(stream) == 3 and len(list(stream)) == 3


def test_a_bad_utterance_names_its_shard_and_file(tmp_path):
    path = tmp_path / "nan.wav"
    sf.write(path, np.full(8000, np.nan), 16000, subtype="FLOAT")
    rows = {"s/u": {"wav": str(path), "spk_id": "s", "duration": 0.5}}
    write_shards(rows, tmp_path / "shards", workers=1)
    stream = ShardStream(tmp_path / "shards", RandomCrops(1, 0.25), 1)
    with pytest.raises(ValueError) as caught:
        list(stream)
    assert str(caught.value) == (
        f"{tmp_path / 'shards' / 'shard-000000.tar'}: utterance s/u (from "
        f"{path}): audio has non-finite samples (4000 NaN or inf values)"
    )


def test_speakers_without_a_label_are_refused(corpus):
    folder, _ = corpus
    with pytest.raises(ValueError, match="1 speaker.*absent.*: spk2"):
        ShardStream(folder, RandomCrops(1), 2, speakers=["spk0", "spk1"])


def test_a_shard_shorter_than_its_manifest_is_an_error(corpus, tmp_path):
    """A shard replaced by a valid tar of fewer utterances (same size) is
    never read silently short."""
    folder, _ = corpus
    copy = tmp_path / "shards"
    shutil.copytree(folder, copy)
    shard = copy / "shard-000000.tar"
    size = shard.stat().st_size
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w", format=tarfile.PAX_FORMAT) as tar:
        for member, data in members[:2]:  # one utterance
            tar.addfile(member, io.BytesIO(data))
    with open(shard, "r+b") as fh:
        fh.truncate(size)  # zero blocks: still a valid tar
    stream = ShardStream(copy, RandomCrops(1, 0.25), 1, shuffle_buffer=1)
    with pytest.raises(ValueError, match="shard-000000.tar: holds fewer"):
        list(stream)


def test_shards_of_another_count_are_refused_naming_both(corpus):
    folder, _ = corpus
    with pytest.raises(ValueError) as error:
        ShardStream(
            folder,
            RandomCrops(1),
            2,
            expected_utterances=9,
            expected_from="train_annotation train.csv",
        )
    assert str(error.value) == (
        "1 problem with the training shards:\n"
        f"  shard_folder {folder}: holds 7 utterances, train_annotation "
        "train.csv 9 (shards of other rows: rerun preparation, or give the "
        "shards of these rows)"
    )
    ShardStream(folder, RandomCrops(1), 2, expected_utterances=7)


@pytest.mark.parametrize(
    "batch, world, refused",
    [(2, 1, True), (3, 1, True), (4, 1, False), (2, 2, True), (3, 2, False)],
)
def test_an_epoch_ending_with_a_batch_of_one_is_refused(
    corpus, batch, world, refused
):
    """Per process (7 utterances, or 3 of each of 2 processes), a last
    batch of one utterance, which BatchNorm cannot train on, is refused
    when asked; never by default."""
    folder, _ = corpus

    def stream(refuse):
        return ShardStream(
            folder,
            RandomCrops(1),
            batch,
            rank=0,
            world_size=world,
            refuse_batch_of_one=refuse,
        )

    assert len(stream(False)) == 7 // world
    if not refused:
        stream(True)
        return
    with pytest.raises(ValueError) as error:
        stream(True)
    assert str(error.value).splitlines()[1] == (
        f"  batch_size={batch}: the last batch of each epoch would hold 1 of "
        f"this process' {7 // world} utterances, on which BatchNorm cannot "
        "train; choose another batch_size"
    )


def test_every_problem_of_the_shards_is_named_at_once(corpus):
    folder, _ = corpus
    with pytest.raises(ValueError) as error:
        ShardStream(
            folder,
            RandomCrops(1),
            2,
            speakers=["spk0", "spk1"],
            expected_utterances=8,
            refuse_batch_of_one=True,
        )
    lines = str(error.value).splitlines()
    assert lines[0] == "3 problems with the training shards:"
    assert "absent from the training speakers: spk2" in lines[1]
    assert "holds 7 utterances, the training annotation 8" in lines[2]
    assert lines[3].startswith("  batch_size=2: the last batch")
