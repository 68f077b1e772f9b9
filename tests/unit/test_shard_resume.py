"""Mid-epoch resume of speechbrain_mrmha/training/shard_stream.py: the
round robin ``resume_point`` models is PyTorch's DataLoader's own order;
a loader resumed from an intra-epoch checkpoint taken after k batches
yields exactly the batches (ids, crops, labels) an uninterrupted epoch
yields after its first k, for every k, 0 to 2 loader workers, one or two
processes (each rank simulated); skipped utterances are never decoded,
and a shard holding none of the rest is never opened; a checkpoint at an
epoch's end, or of another epoch, resumes nothing; an intra-epoch
checkpoint taken with another worker count or batch size is refused (the
rule counts by them), one at an epoch's end or from before they were
recorded is not. Training through the Brain:
tests/integration/test_shard_training_resume.py."""

import json
import logging

import pytest
import torch
from conftest import noise_shards
from speechbrain.utils.checkpoints import Checkpointer
from webdataset import shuffle, tarfile_samples

from speechbrain_mrmha.training import shard_stream as stream_module
from speechbrain_mrmha.training.crops import RandomCrops
from speechbrain_mrmha.training.shard_stream import (
    ShardLoader,
    ShardStream,
    epoch_pieces,
    resume_point,
    worker_batches,
)

BATCH, EPOCH = 2, 3


class Tagged(torch.utils.data.IterableDataset):
    """Worker w yields ``batches[w]`` batches tagged (w, its batch index)."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = info.id if info else 0
        return iter([(worker, j) for j in range(self.batches[worker])])


def first(items):
    return items[0]


@pytest.mark.parametrize(
    "batches", [[3, 3], [3, 2, 1], [2, 1], [1, 0, 0], [4, 4, 3]]
)
@pytest.mark.parametrize("prefetch", [1, 3])
def test_the_round_robin_is_the_order_of_pytorch_dataloader(batches, prefetch):
    """Workers in turn, worker 0 first, passing over a worker with none
    left, whatever the prefetching; ``resume_point`` counts each worker's
    batches among the first k of that order and says whose turn is next."""
    loader = torch.utils.data.DataLoader(
        Tagged(batches),
        batch_size=1,
        num_workers=len(batches),
        collate_fn=first,
        prefetch_factor=prefetch,
    )
    order = list(loader)
    assert order == [
        (w, r)
        for r in range(max(batches))
        for w in range(len(batches))
        if r < batches[w]
    ]
    for k in range(len(order) + 1):
        counts = [
            sum(w == v for v, _ in order[:k]) for w in range(len(batches))
        ]
        taken, turn = resume_point(k, batches)
        assert taken == counts
        assert turn == (order[k - 1][0] + 1) % len(batches) if k else turn == 0
    with pytest.raises(ValueError, match="cannot resume after"):
        resume_point(sum(batches) + 1, batches)


@pytest.mark.parametrize(
    "samples, workers, batch", [(11, 2, 2), (5, 2, 2), (12, 3, 5), (3, 4, 16)]
)
def test_worker_batches_add_up_to_len_of_the_dataloader(
    samples, workers, batch
):
    batches = worker_batches(samples, workers, batch)
    assert sum(batches) == -(-samples // batch)
    assert batches == sorted(batches, reverse=True)  # as the round robin


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """11 utterances of 3 speakers, 0.3 to 0.8 s, in shards of 3."""
    folder = tmp_path_factory.mktemp("resume")
    return noise_shards(folder, 11, seed=2, first=0.3, step=0.05)[0]


def make_loader(folder, workers, rank=0, world=1, buffer=4, batch=BATCH):
    crops = RandomCrops(5, sentence_len=0.2, speeds=[1.0, 0.9, 1.1])
    crops.epoch = EPOCH
    stream = ShardStream(
        folder, crops, batch, shuffle_buffer=buffer, rank=rank, world_size=world
    )
    return ShardLoader(stream, num_workers=workers)


def content(batches):
    """What training sees of each batch."""
    return [
        (b.id, b.sig.data, b.sig.lengths, b.spk_id_encoded.data)
        for b in batches
    ]


def assert_same(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a[0] == b[0]
        assert all(torch.equal(x, y) for x, y in zip(a[1:], b[1:]))


@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.parametrize("rank, world", [(0, 1), (0, 2), (1, 2)])
def test_a_resumed_epoch_goes_on_with_the_next_batch(
    corpus, tmp_path, workers, rank, world
):
    """For every k: k batches taken, an intra-epoch checkpoint, the run
    "killed"; a new stream and loader recover it and yield the batches of
    the uninterrupted epoch after its first k."""
    epoch = content(make_loader(corpus, workers, rank, world))
    assert len(epoch) == -(-(11 // world) // BATCH)
    for k in range(len(epoch) + 1):
        loader = make_loader(corpus, workers, rank, world)
        save = tmp_path / f"save{k}"
        batches = iter(loader)
        taken = content(next(batches) for _ in range(k))
        Checkpointer(save, {"loader": loader}).save_checkpoint(
            end_of_epoch=False
        )
        del batches  # killed
        resumed = make_loader(corpus, workers, rank, world)
        Checkpointer(save, {"loader": resumed}).recover_if_possible()
        rest = content(resumed)
        assert_same(taken + rest, epoch)
        assert resumed.batches == len(epoch)
        assert_same(content(resumed), epoch)  # the next one reads it all


def test_skipped_utterances_are_not_decoded_nor_their_shards_opened(
    corpus, tmp_path, monkeypatch
):
    """Without shuffling (buffer 1) the part is read in shard order: resumed
    before the last batch, only the last shard is opened and only the last
    utterance decoded."""
    opened, decoded = [], []
    monkeypatch.setattr(
        stream_module,
        "tarfile_samples",
        lambda urls: opened.append(urls[0]["url"]) or tarfile_samples(urls),
    )
    loader = make_loader(corpus, 0, buffer=1)
    read = loader.dataset.crops.read
    loader.dataset.crops.read = lambda *a, **k: (
        decoded.append(a[0]) or read(*a, **k)
    )
    stream = loader.dataset
    epoch = [b.id for b in loader]
    assert len(opened) == 4 and len(decoded) == 11
    opened.clear()
    decoded.clear()
    stream.batches_done = len(epoch) - 1
    rest = [item["id"] for item in stream]
    assert rest == epoch[-1] and decoded == epoch[-1]
    pieces = epoch_pieces(stream.counts, 5, EPOCH, 0, 1, 0, 1, BATCH)
    assert opened == [stream.urls[pieces[-1][0]]]


def test_the_order_is_webdatasets_shuffle_of_the_part(corpus):
    """Drawn over positions, the order is the one webdataset's shuffle
    buffer gives over the part's samples read in sequence (what each epoch
    read before resuming was possible)."""
    loader = make_loader(corpus, 0, buffer=4)
    stream = loader.dataset
    pieces = epoch_pieces(stream.counts, 5, EPOCH, 0, 1, 0, 1, BATCH)
    samples = [
        sample["__key__"]
        for shard, start, stop in pieces
        for sample in list(tarfile_samples([{"url": stream.urls[shard]}]))[
            start:stop
        ]
    ]
    import random

    rng = random.Random(f"5:{EPOCH}:0:0:buffer")
    expected = list(shuffle(4, initial=4, rng=rng)(iter(samples)))
    assert [i for b in loader for i in b.id] == expected
    assert expected != samples


def test_an_end_of_epoch_checkpoint_or_another_epoch_resumes_nothing(
    corpus, tmp_path, caplog
):
    epoch = [b.id for b in make_loader(corpus, 0)]
    loader = make_loader(corpus, 0)
    batches = iter(loader)
    next(batches)
    Checkpointer(tmp_path / "end", {"loader": loader}).save_checkpoint(
        end_of_epoch=True
    )
    Checkpointer(tmp_path / "mid", {"loader": loader}).save_checkpoint(
        end_of_epoch=False
    )
    resumed = make_loader(corpus, 0)
    Checkpointer(tmp_path / "end", {"loader": resumed}).recover_if_possible()
    assert [b.id for b in resumed] == epoch
    resumed = make_loader(corpus, 0)
    Checkpointer(tmp_path / "mid", {"loader": resumed}).recover_if_possible()
    resumed.dataset.crops.epoch = EPOCH + 1
    with caplog.at_level(logging.WARNING, logger=stream_module.__name__):
        assert len(list(resumed)) == len(epoch)
    assert "after 1 batches of epoch 3, but training goes on with epoch 4" in (
        caplog.text
    )


def test_shard_loader_refuses_what_breaks_the_epoch_rule(corpus):
    stream = make_loader(corpus, 0).dataset
    with pytest.raises(ValueError) as error:
        ShardLoader(stream, batch_size=3, drop_last=True, persistent_workers=1)
    assert str(error.value).splitlines()[1:] == [
        "  batch_size=3: the stream's is 2 (its epoch rule batches by it)",
        "  drop_last=True: each worker would drop its partial batch, fewer "
        "batches than len() says",
        "  persistent_workers=True: workers must see each epoch and where it "
        "resumes",
    ]
    with pytest.raises(TypeError, match="reads a ShardStream, got list"):
        ShardLoader([1, 2])
    assert len(ShardLoader(stream, batch_size=2)) == 6


def checkpoint_after(loader, k, folder, end_of_epoch=False):
    """A checkpoint of ``loader`` taken after ``k`` batches of the epoch."""
    batches = iter(loader)
    for _ in range(k):
        next(batches)
    Checkpointer(folder, {"loader": loader}).save_checkpoint(
        end_of_epoch=end_of_epoch
    )
    (checkpoint,) = folder.glob("CKPT+*")
    return checkpoint


@pytest.mark.parametrize(
    "new_workers, new_batch, named",
    [
        (1, BATCH, ["num_workers: 2 -> 1", "rerun with num_workers=2 "]),
        (2, 3, ["batch_size: 2 -> 3", "rerun with batch_size=2 "]),
        (0, 3, ["num_workers: 2 -> 0", "batch_size: 2 -> 3"]),
    ],
)
def test_another_worker_count_or_batch_size_mid_epoch_is_refused(
    corpus, tmp_path, new_workers, new_batch, named
):
    """Resumed with other workers, the rule would skip other utterances
    than those taken: some read twice in the epoch, others never."""
    checkpoint = checkpoint_after(make_loader(corpus, 2), 2, tmp_path)
    resumed = make_loader(corpus, new_workers, batch=new_batch)
    with pytest.raises(ValueError) as error:
        Checkpointer(tmp_path, {"loader": resumed}).recover_if_possible()
    message = str(error.value)
    assert f"{checkpoint}: an intra-epoch checkpoint" in message
    assert "after 2 batches of epoch 3" in message
    assert all(text in message for text in named), message
    assert "epoch boundary" in message
    record = json.loads((checkpoint / "loader.ckpt").read_text())
    assert record == {
        "epoch": EPOCH,
        "batches": 2,
        "num_workers": 2,
        "batch_size": BATCH,
    }


def test_the_worker_count_may_change_at_an_epoch_boundary(corpus, tmp_path):
    epoch = content(make_loader(corpus, 1))
    checkpoint_after(make_loader(corpus, 2), 6, tmp_path, end_of_epoch=True)
    resumed = make_loader(corpus, 1)
    Checkpointer(tmp_path, {"loader": resumed}).recover_if_possible()
    assert_same(content(resumed), epoch)


def test_no_worker_process_resumes_one_worker_and_back(corpus, tmp_path):
    """0 workers or 1: one part per process, the same utterances, crops
    and labels (a worker process resamples speed copies with one thread:
    the samples agree to float rounding, resumed or not)."""
    for old, new in ((1, 0), (0, 1)):
        epoch = content(make_loader(corpus, old))
        save = tmp_path / f"{old}to{new}"
        checkpoint_after(make_loader(corpus, old), 2, save)
        resumed = make_loader(corpus, new)
        Checkpointer(save, {"loader": resumed}).recover_if_possible()
        rest = content(resumed)
        assert [b[0] for b in rest] == [b[0] for b in epoch[2:]]
        for ours, theirs in zip(rest, epoch[2:]):
            assert torch.allclose(ours[1], theirs[1], atol=1e-6)
            assert torch.equal(ours[2], theirs[2])
            assert torch.equal(ours[3], theirs[3])


def test_a_checkpoint_recording_no_worker_count_still_resumes(corpus, tmp_path):
    """Checkpoints written before the worker count was recorded."""
    epoch = content(make_loader(corpus, 2))
    checkpoint = checkpoint_after(make_loader(corpus, 2), 3, tmp_path)
    (checkpoint / "loader.ckpt").write_text(
        json.dumps({"epoch": EPOCH, "batches": 3}) + "\n"
    )
    resumed = make_loader(corpus, 2)
    Checkpointer(tmp_path, {"loader": resumed}).recover_if_possible()
    assert_same(epoch[:3] + content(resumed), epoch)
