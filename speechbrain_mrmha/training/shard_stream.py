"""Training crops streamed from WebDataset shards (``dataio.shards``): each
epoch reads every utterance once across all DDP processes and loader
workers, in an order drawn from (seed, epoch), with the crops of
``RandomCrops``, so a rerun of an epoch reads the very batches of the
first, and a run resumed in the middle of an epoch goes on with the next
batch of it.

The epoch rule (``epoch_pieces``):

1. the shards are put in an order drawn from (seed, epoch) and read as
   one sequence of utterances;
2. with n utterances and P processes, each process takes a contiguous
   run of ``n // P`` of them; the last ``n % P`` (fewer than P, at the
   end of the epoch's last shard: other ones each epoch) are left out of
   the epoch, with a warning when the stream is built. Every process then
   takes the same number of steps, which DDP needs (a process with one
   batch more would wait forever for the others);
3. a process' run is cut into contiguous parts, one per DataLoader worker,
   of whole batches (a worker with fewer of them takes the partial
   batch; each worker batches its own part): the loader then yields
   ``ceil((n // P) / batch_size)`` batches, what ``len`` of the DataLoader
   says (SpeechBrain's Brain plans its schedules by it). The parts do not
   depend on the process, so with any batch size every process yields as
   many batches;
4. a worker reads its part (whole shards, but for at most one partial
   shard at each end) through a shuffle buffer drawn from (seed, epoch,
   process, worker): webdataset's ``shuffle``, whose order depends on its
   random draws and the number of utterances only, so it is drawn over
   their positions and the audio is read when its turn comes.

So any number of shards works with any number of processes and workers:
no utterance is read twice in an epoch, and none is dropped but the
``n % P`` of rule 2.

The resume rule (``ShardLoader``, ``resume_point``). A DataLoader with W
workers scans them in a cycle, worker 0 first, and yields the next batch
of each that has one left (PyTorch's in-order round robin); worker w
yields ``b_w = ceil(part_w / batch_size)`` batches (rule 3). So when a
process has taken k batches of an epoch, running that scan over
``b_0, ..., b_{W-1}`` for k batches says how many each worker has given,
``c_w``, and whose turn is next, ``t``. A run resumed from a checkpoint
taken after k batches of epoch e (SpeechBrain's intra-epoch checkpoint,
every ``ckpt_interval_minutes``; ``ShardLoader`` records (e, k), as the
Brain records its ``step``) reads epoch e again with loader worker j
reading the part of worker ``w = (j + t) mod W`` without its first
``c_w * batch_size`` utterances (of its shuffled order): the new scan
starts where the old one stood, so the loader yields batch k + 1 of the
uninterrupted order next, with the same crops, and the run trains on
exactly the batches of an uninterrupted one. Skipped utterances are not
decoded, and a shard holding none of a worker's remaining utterances is
not opened. A run resumed again counts k from the epoch's start. Under
DDP only the main process writes checkpoints: its k is every process'
k, as all take the same number of steps and SpeechBrain decides on the
main process when all of them checkpoint. A checkpoint at the end of an
epoch resumes nothing: the next epoch starts at its first batch. The rule
counts by W and the batch size, so a checkpoint records both, and an
intra-epoch one taken with others is refused on recovery, naming the old
and new values (rerun with the old ones to finish the epoch; they may
change at an epoch boundary); one that records neither (older) resumes.
``SpeakerEmbeddingBrain`` makes the ``ShardLoader`` of a ``ShardStream``
given to ``fit`` and registers it with the checkpointer, as SpeechBrain
does for the loader of a map-style dataset.

Audio: each utterance's bytes are decoded in memory by
``dataio.audio.load_audio`` (through ``RandomCrops.read``), by the
extension they were stored under.

Authors
 * speechbrain-mrmha developers
"""

import bisect
import itertools
import json
import logging
import random
from pathlib import Path

import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from torch.utils.data import DataLoader
from webdataset import shuffle, tarfile_samples

from speechbrain_mrmha.dataio.problems import list_problems, raise_problems
from speechbrain_mrmha.dataio.shards import read_manifest
from speechbrain_mrmha.training.crops import speaker_labels

__all__ = [
    "epoch_pieces",
    "resume_point",
    "worker_batches",
    "ShardLoader",
    "ShardStream",
]

logger = logging.getLogger(__name__)


def _worker_quotas(samples, workers, batch_size):
    """Utterances of each worker: whole batches shared out, the partial
    batch to the first worker with fewer batches (or the first)."""
    full, rest = divmod(samples, batch_size)
    batches = [full // workers + (w < full % workers) for w in range(workers)]
    quotas = [b * batch_size for b in batches]
    quotas[full % workers] += rest
    return quotas


def worker_batches(samples, workers, batch_size):
    """Batches each DataLoader worker of a process yields in an epoch
    (rule 3 of the module docstring).

    Arguments
    ---------
    samples : int
        Utterances of the process in the epoch (``len`` of the stream).
    workers : int
        DataLoader workers (1 without worker processes).
    batch_size : int
        The DataLoader's batch size.

    Returns
    -------
    batches : list of int
        One count per worker; they add up to ``ceil(samples / batch_size)``.

    Example
    -------
    >>> worker_batches(11, 2, batch_size=2)  # 5 full batches and a partial
    [3, 3]
    >>> worker_batches(12, 3, batch_size=5)
    [1, 1, 1]
    """
    return [
        -(-quota // batch_size)
        for quota in _worker_quotas(samples, workers, batch_size)
    ]


def resume_point(done, batches):
    """Where the workers stand when a DataLoader has yielded ``done``
    batches of an epoch: it scans its workers in a cycle, worker 0 first,
    taking the next batch of each that has one left (the resume rule of
    the module docstring).

    Arguments
    ---------
    done : int
        Batches the DataLoader has yielded in the epoch.
    batches : list of int
        Batches of each worker in the epoch (``worker_batches``).

    Returns
    -------
    taken : list of int
        Per worker, its batches among the first ``done``.
    turn : int
        The worker the scan visits next.

    Raises
    ------
    ValueError
        When ``done`` is negative or more than the epoch's batches.

    Example
    -------
    >>> resume_point(5, [3, 2, 1])  # order: w0 w1 w2 w0 w1 | w0
    ([2, 2, 1], 2)
    >>> resume_point(1, [3, 3])
    ([1, 0], 1)
    >>> resume_point(0, [2, 1])
    ([0, 0], 0)
    """
    if not 0 <= done <= sum(batches):
        raise ValueError(
            f"cannot resume after {done} batches of an epoch of "
            f"{sum(batches)} ({len(batches)} loader workers)"
        )
    taken, turn = [0] * len(batches), 0
    for _ in range(done):
        while taken[turn] == batches[turn]:
            turn = (turn + 1) % len(batches)
        taken[turn] += 1
        turn = (turn + 1) % len(batches)
    return taken, turn


def epoch_pieces(
    counts, seed, epoch, rank, world_size, worker, workers, batch_size
):
    """What one loader worker of one process reads in an epoch (see the
    module docstring for the rule).

    Arguments
    ---------
    counts : list of int
        Utterances per shard, in manifest order.
    seed, epoch : int
        Draw the shards' order.
    rank, world_size : int
        The process and the number of processes.
    worker, workers : int
        The DataLoader worker and the number of workers (0 and 1 without
        worker processes).
    batch_size : int
        The DataLoader's batch size.

    Returns
    -------
    pieces : list of (int, int, int)
        ``(shard, start, stop)``: utterances [start, stop) of a shard, in
        reading order.

    Example
    -------
    >>> counts = [4, 4, 4, 3]  # 15 utterances, 2 processes x 2 workers
    >>> parts = [epoch_pieces(counts, 0, 0, r, 2, w, 2, batch_size=2)
    ...          for r in range(2) for w in range(2)]
    >>> [sum(stop - start for _, start, stop in p) for p in parts]
    [4, 3, 4, 3]
    >>> read = {(s, i) for p in parts for s, a, b in p for i in range(a, b)}
    >>> len(read)  # 15 // 2 * 2: one utterance left out of this epoch
    14
    """
    order = list(range(len(counts)))
    random.Random(f"{seed}:{epoch}:shards").shuffle(order)
    per_process = sum(counts) // world_size
    quotas = _worker_quotas(per_process, workers, batch_size)
    first = rank * per_process + sum(quotas[:worker])
    last = first + quotas[worker]
    pieces, position = [], 0
    for shard in order:
        start, stop = (
            max(first - position, 0),
            min(last - position, counts[shard]),
        )
        if start < stop:
            pieces.append((shard, start, stop))
        position += counts[shard]
        if position >= last:
            break
    return pieces


def _rank_and_size(rank, world_size):
    """This process and the number of processes: as given, or from
    ``torch.distributed`` when it is initialised, or 0 of 1."""
    if rank is None and world_size is None:
        if (
            torch.distributed.is_available()
            and torch.distributed.is_initialized()
        ):
            return (
                torch.distributed.get_rank(),
                torch.distributed.get_world_size(),
            )
        return 0, 1
    if rank is None or world_size is None or not 0 <= rank < world_size:
        raise ValueError(
            f"ShardStream needs 0 <= rank < world_size, got rank={rank}, "
            f"world_size={world_size}"
        )
    return int(rank), int(world_size)


class ShardStream(torch.utils.data.IterableDataset):
    """Training items of a shard folder: ``{"id", "sig", "spk_id_encoded"}``
    as the recipe's ``dataio_prep`` gives them (batch them with
    SpeechBrain's ``PaddedBatch``), one epoch per iteration, the epoch
    being ``crops.epoch`` (which the Brain sets at each stage start).

    Build it after ``torch.distributed`` is initialised (SpeechBrain's
    ``ddp_init_group``): it takes its process and the number of processes
    then. Train through a ``ShardLoader`` (what ``SpeakerEmbeddingBrain``
    makes of it), or give a DataLoader ``batch_size`` (the same as here),
    no ``shuffle`` and no ``persistent_workers`` (workers must see each
    epoch's ``crops.epoch``).

    Arguments
    ---------
    folder : str or Path
        A folder ``dataio.shards.write_shards`` finished.
    crops : RandomCrops
        Crop length, speeds, seed and epoch.
    batch_size : int
        The DataLoader's batch size (see ``epoch_pieces``).
    speakers : list of str, optional
        The training speakers in label order (default: the manifest's,
        sorted); every speaker of the shards must be among them.
    shuffle_buffer : int
        Utterances (their encoded bytes) held by each worker's shuffle
        buffer.
    rank, world_size : int, optional
        This process and the number of processes (default: from
        ``torch.distributed``, or 0 and 1).
    expected_utterances : int, optional
        The utterances the shards must hold (those of the training
        annotation): shards of other rows are refused.
    expected_from : str
        Where ``expected_utterances`` comes from, for the error.
    refuse_batch_of_one : bool
        Refuse a batch size that ends each epoch of this process with a
        batch of one utterance (on which BatchNorm cannot train).

    Raises
    ------
    ValueError
        Listing at once shard speakers absent from ``speakers``, a count
        other than ``expected_utterances`` and a batch of one.

    Attributes
    ----------
    batches_done : int
        Batches of the epoch this process has already taken (0: none): an
        iteration starts after them (the resume rule). Read when an
        iteration starts; ``ShardLoader`` sets it.

    Example
    -------
    >>> import tempfile, numpy, soundfile
    >>> from speechbrain_mrmha.dataio.shards import write_shards
    >>> from speechbrain_mrmha.training.crops import RandomCrops
    >>> tmp = Path(tempfile.mkdtemp())
    >>> rows = {}
    >>> for i in range(3):
    ...     soundfile.write(tmp / f"{i}.wav", numpy.zeros(8000), 16000)
    ...     rows[f"u{i}"] = {"wav": str(tmp / f"{i}.wav"),
    ...                      "spk_id": f"s{i % 2}", "duration": 0.5}
    >>> _ = write_shards(rows, tmp / "shards", samples_per_shard=2, workers=1)
    >>> stream = ShardStream(tmp / "shards", RandomCrops(1, 0.25), 2)
    >>> items = list(stream)
    >>> len(stream), sorted(item["id"] for item in items)
    (3, ['u0', 'u1', 'u2'])
    >>> items[0]["sig"].shape
    torch.Size([4000])
    >>> stream.batches_done = 1  # resumed after the first batch
    >>> [item["id"] for item in stream] == [item["id"] for item in items[2:]]
    True
    >>> ShardStream(tmp / "shards", RandomCrops(1), 2, expected_utterances=4,
    ...             expected_from="train.csv", refuse_batch_of_one=True)
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: 2 problems with the training shards:
      shard_folder ...shards: holds 3 utterances, train.csv 4 (shards of other rows: rerun preparation, or give the shards of these rows)
      batch_size=2: the last batch of each epoch would hold 1 of this process' 3 utterances, on which BatchNorm cannot train; choose another batch_size
    """

    def __init__(
        self,
        folder,
        crops,
        batch_size,
        speakers=None,
        shuffle_buffer=1000,
        rank=None,
        world_size=None,
        expected_utterances=None,
        expected_from="the training annotation",
        refuse_batch_of_one=False,
    ):
        super().__init__()
        manifest = read_manifest(folder)
        self.urls = [str(Path(folder) / s["name"]) for s in manifest["shards"]]
        self.counts = [s["samples"] for s in manifest["shards"]]
        self.crops = crops
        self.batch_size = int(batch_size)
        self.shuffle_buffer = int(shuffle_buffer)
        if self.batch_size < 1 or self.shuffle_buffer < 1:
            raise ValueError(
                "ShardStream needs batch_size >= 1 and shuffle_buffer >= 1, "
                f"got {batch_size} and {shuffle_buffer}"
            )
        self.speakers = list(
            manifest["speakers"] if speakers is None else speakers
        )
        self.rank, self.world_size = _rank_and_size(rank, world_size)
        problems = []
        unknown = sorted(set(manifest["speakers"]) - set(self.speakers))
        if unknown:
            problems.append(
                f"shards in {folder} hold {len(unknown)} speaker(s) absent "
                f"from the training speakers: {', '.join(unknown[:20])}"
            )
        held = sum(self.counts)
        if expected_utterances is not None and held != expected_utterances:
            problems.append(
                f"shard_folder {folder}: holds {held} utterances, "
                f"{expected_from} {expected_utterances} (shards of other "
                "rows: rerun preparation, or give the shards of these rows)"
            )
        if refuse_batch_of_one and len(self) % self.batch_size == 1:
            problems.append(
                f"batch_size={self.batch_size}: the last batch of each epoch "
                f"would hold 1 of this process' {len(self)} utterances, on "
                "which BatchNorm cannot train; choose another batch_size"
            )
        raise_problems(problems, "problems with the training shards")
        self.label_encoder = speaker_labels(self.speakers, crops.speeds)
        self.batches_done = 0
        self.left_out = sum(self.counts) % self.world_size
        if self.left_out:
            logger.warning(
                "%d utterances over %d processes: %d per epoch are left out "
                "(the end of the epoch's last shard), so that every process "
                "takes the same number of steps",
                sum(self.counts),
                self.world_size,
                self.left_out,
            )

    def __len__(self):
        """Utterances this process reads per epoch."""
        return sum(self.counts) // self.world_size

    def _read(self, pieces, needed):
        """(position, sample) of the pieces' utterances (numbered in reading
        order) whose position is in ``needed``; a piece is read up to the
        last one needed, and not opened when none is. Checked against the
        manifest."""
        wanted, position = sorted(needed), 0
        for shard, start, stop in pieces:
            first = bisect.bisect_left(wanted, position)
            last = bisect.bisect_left(wanted, position + stop - start)
            if first < last:
                end = start + wanted[last - 1] - position + 1
                samples = tarfile_samples([{"url": self.urls[shard]}])
                read = 0
                for sample in itertools.islice(samples, start, end):
                    if position + read in needed:
                        yield position + read, sample
                    read += 1
                if read != end - start:
                    raise ValueError(
                        f"{self.urls[shard]}: holds fewer than the "
                        f"{self.counts[shard]} utterances its manifest says "
                        "(rerun write_shards)"
                    )
            position += stop - start

    def _item(self, sample):
        """Decode (in memory), crop and label one sample."""
        meta = json.loads(sample["json"])
        (ext,) = [k for k in sample if k != "json" and not k.startswith("__")]
        sig, copy = self.crops.read(
            meta["id"],
            sample[ext],
            meta["duration"],
            extension=ext,
            name=f"{sample['__url__']}: utterance {meta['id']} (from "
            f"{meta['wav']})",
        )
        label = self.label_encoder.encode_label(meta["spk_id"])
        label += len(self.speakers) * copy
        return {
            "id": meta["id"],
            "sig": sig,
            "spk_id_encoded": torch.LongTensor([label]),
        }

    def _items(self, pieces, order):
        """The items of the pieces' utterances at positions ``order``, each
        read when its turn comes and held until then."""
        samples, held = self._read(pieces, set(order)), {}
        for position in order:
            while position not in held:
                found = next(samples, None)
                if found is None:  # _read raises first; a guard
                    raise RuntimeError(f"utterance {position} was not read")
                held[found[0]] = found[1]
            yield self._item(held.pop(position))

    def __iter__(self):
        """A worker's part of the epoch ``crops.epoch``, after its share of
        the ``batches_done`` of this process (the resume rule: loader
        worker j reads the part of worker ``(j + turn) % workers``)."""
        info = torch.utils.data.get_worker_info()
        loader_worker, workers = (info.id, info.num_workers) if info else (0, 1)
        batches = worker_batches(len(self), workers, self.batch_size)
        taken, turn = resume_point(self.batches_done, batches)
        worker = (loader_worker + turn) % workers  # whose part it reads
        seed, epoch = self.crops.seed, self.crops.epoch
        pieces = epoch_pieces(
            self.counts,
            seed,
            epoch,
            self.rank,
            self.world_size,
            worker,
            workers,
            self.batch_size,
        )
        size = sum(stop - start for _, start, stop in pieces)
        rng = random.Random(f"{seed}:{epoch}:{self.rank}:{worker}:buffer")
        order = list(
            shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(
                iter(range(size))
            )
        )
        return self._items(pieces, order[taken[worker] * self.batch_size :])


@register_checkpoint_hooks
class ShardLoader(DataLoader):
    """The training DataLoader of a ``ShardStream``, resumable in the
    middle of an epoch (the resume rule of the module docstring): it counts
    the batches it hands out, a checkpoint records (epoch, batches,
    num_workers, batch_size), and after recovering an intra-epoch
    checkpoint the next iteration of that epoch starts with the batch after
    them (one taken with another ``num_workers`` or batch size is refused).
    ``SpeakerEmbeddingBrain`` makes it of a ``ShardStream`` given to
    ``fit`` and registers it with the checkpointer (``dataloader-TRAIN``);
    built by hand, register it too.

    Arguments
    ---------
    dataset : ShardStream
        The stream; its ``batch_size`` is the loader's.
    batch_size : int, optional
        If given, must be the stream's.
    num_workers : int
        Worker processes.
    collate_fn : callable
        Makes a batch of items (SpeechBrain's ``PaddedBatch``).
    pin_memory, timeout, worker_init_fn, multiprocessing_context,
    prefetch_factor
        As PyTorch's ``DataLoader``.
    shuffle, drop_last, persistent_workers : bool
        Refused when True: the stream shuffles itself by (seed, epoch); a
        dropped partial batch per worker would yield fewer batches than
        ``len`` says; workers must see each epoch and resume point.

    Example
    -------
    >>> import tempfile, numpy, soundfile
    >>> from speechbrain.utils.checkpoints import Checkpointer
    >>> from speechbrain_mrmha.dataio.shards import write_shards
    >>> from speechbrain_mrmha.training.crops import RandomCrops
    >>> tmp = Path(tempfile.mkdtemp())
    >>> rows = {}
    >>> for i in range(5):
    ...     soundfile.write(tmp / f"{i}.wav", numpy.zeros(8000), 16000)
    ...     rows[f"u{i}"] = {"wav": str(tmp / f"{i}.wav"),
    ...                      "spk_id": "s", "duration": 0.5}
    >>> _ = write_shards(rows, tmp / "shards", samples_per_shard=2, workers=1)
    >>> loader = ShardLoader(ShardStream(tmp / "shards", RandomCrops(1), 2))
    >>> checkpointer = Checkpointer(tmp / "save", {"loader": loader})
    >>> epoch = [batch.id for batch in loader]
    >>> batches = iter(loader)
    >>> first = next(batches)  # a run killed after one batch ...
    >>> _ = checkpointer.save_checkpoint(end_of_epoch=False)
    >>> _ = checkpointer.recover_if_possible()  # ... and resumed
    >>> [batch.id for batch in loader] == epoch[1:]
    True
    >>> ShardLoader(loader.dataset, batch_size=4, shuffle=True)
    Traceback (most recent call last):
    ...
    ValueError: 2 ShardLoader options are refused:
      batch_size=4: the stream's is 2 (its epoch rule batches by it)
      shuffle=True: the stream shuffles itself by (seed, epoch)
    """

    def __init__(
        self,
        dataset,
        batch_size=None,
        num_workers=0,
        collate_fn=PaddedBatch,
        pin_memory=False,
        timeout=0,
        worker_init_fn=None,
        multiprocessing_context=None,
        prefetch_factor=None,
        shuffle=False,
        drop_last=False,
        persistent_workers=False,
    ):
        if not isinstance(dataset, ShardStream):
            raise TypeError(
                f"ShardLoader reads a ShardStream, got {type(dataset).__name__}"
            )
        problems = []
        if batch_size is not None and batch_size != dataset.batch_size:
            problems.append(
                f"batch_size={batch_size}: the stream's is "
                f"{dataset.batch_size} (its epoch rule batches by it)"
            )
        if shuffle:
            problems.append(
                "shuffle=True: the stream shuffles itself by (seed, epoch)"
            )
        if drop_last:
            problems.append(
                "drop_last=True: each worker would drop its partial batch, "
                "fewer batches than len() says"
            )
        if persistent_workers:
            problems.append(
                "persistent_workers=True: workers must see each epoch and "
                "where it resumes"
            )
        raise_problems(problems, "ShardLoader options are refused")
        super().__init__(
            dataset,
            batch_size=dataset.batch_size,
            num_workers=num_workers,
            collate_fn=collate_fn,
            pin_memory=pin_memory,
            timeout=timeout,
            worker_init_fn=worker_init_fn,
            multiprocessing_context=multiprocessing_context,
            prefetch_factor=prefetch_factor,
        )
        self.epoch, self.batches, self._resume = None, 0, None

    def __iter__(self):
        """The batches of the epoch ``crops.epoch``, from the first, or
        after those a recovered intra-epoch checkpoint of this epoch says
        were taken."""
        stream = self.dataset
        epoch, done = stream.crops.epoch, 0
        if self._resume is not None:
            (resumed, batches), self._resume = self._resume, None
            if resumed == epoch:
                done = batches
            else:
                logger.warning(
                    "the recovered checkpoint was taken after %d batches of "
                    "epoch %s, but training goes on with epoch %s: it is "
                    "read from its first batch",
                    batches,
                    resumed,
                    epoch,
                )
        if done:
            logger.info(
                "epoch %s resumes after %d of its %d batches",
                epoch,
                done,
                len(self),
            )
        stream.batches_done = done  # workers take it with the stream
        try:
            iterator = super().__iter__()
        finally:
            stream.batches_done = 0
        self.epoch, self.batches = epoch, done
        return self._count(iterator)

    def _count(self, iterator):
        """The batches, counted as they are handed out."""
        for batch in iterator:
            self.batches += 1
            yield batch

    @mark_as_saver
    def _save(self, path):
        """Record the epoch, the batches taken of it, and the worker count
        and batch size the resume rule counts them by."""
        position = {
            "epoch": self.epoch,
            "batches": self.batches,
            "num_workers": self.num_workers,
            "batch_size": self.batch_size,
        }
        Path(path).write_text(json.dumps(position) + "\n")

    @mark_as_loader
    def _recover(self, path, end_of_epoch):
        """After an intra-epoch checkpoint, resume where it was taken; one
        taken with another worker count or batch size is refused (an older
        checkpoint records neither)."""
        position = json.loads(Path(path).read_text())
        self._resume = None
        if end_of_epoch or not position["batches"]:
            return
        old = {
            "num_workers": position.get("num_workers", self.num_workers),
            "batch_size": position.get("batch_size", self.batch_size),
        }
        new = {"num_workers": self.num_workers, "batch_size": self.batch_size}
        changed = [  # 0 workers or 1: one part per process either way
            key for key in old if max(old[key], 1) != max(new[key], 1)
        ]
        if changed:
            differences = [f"{k}: {old[k]} -> {new[k]}" for k in changed]
            rerun = ", ".join(f"{k}={old[k]}" for k in changed)
            raise ValueError(
                f"{Path(path).parent}: an intra-epoch checkpoint, taken after "
                f"{position['batches']} batches of epoch {position['epoch']} "
                f"with other loader options:\n{list_problems(differences)}\n"
                "The batches left of the epoch depend on them: rerun with "
                f"{rerun} to go on with its next batch (a change is fine at "
                "an epoch boundary, once its end-of-epoch checkpoint is saved)"
            )
        self._resume = (position["epoch"], position["batches"])
