"""Training crops streamed from WebDataset shards (``dataio.shards``): each
epoch reads every utterance once across all DDP processes and loader
workers, in an order drawn from (seed, epoch), with the crops of
``RandomCrops``, so a resumed run reads the very batches of an
uninterrupted one.

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
   batch; each worker batches its own part): the loader then yields ``ceil((n // P) / batch_size)`` batches, what ``len`` of
   the DataLoader says (SpeechBrain's Brain plans its schedules by it).
   The parts do not depend on the process, so with any batch size every
   process yields as many batches;
4. a worker reads its part (whole shards, but for at most one partial
   shard at each end) through a shuffle buffer drawn from (seed, epoch,
   process, worker).

So any number of shards works with any number of processes and workers:
no utterance is read twice in an epoch, and none is dropped but the
``n % P`` of rule 2.

Audio: ``dataio.audio.load_audio`` reads paths only, so each utterance's
bytes are written to a file in a temporary folder of the worker (named
with the original extension) and read from there by ``RandomCrops.read``.

Authors
 * speechbrain-mrmha developers
"""

import itertools
import json
import logging
import os
import random
import tempfile
from pathlib import Path

import torch
from webdataset import shuffle, tarfile_samples

from speechbrain_mrmha.dataio.shards import read_manifest
from speechbrain_mrmha.training.crops import speaker_labels

__all__ = ["epoch_pieces", "ShardStream"]

logger = logging.getLogger(__name__)


def _worker_quotas(samples, workers, batch_size):
    """Utterances of each worker: whole batches shared out, the partial
    batch to the first worker with fewer batches (or the first)."""
    full, rest = divmod(samples, batch_size)
    batches = [full // workers + (w < full % workers) for w in range(workers)]
    quotas = [b * batch_size for b in batches]
    quotas[full % workers] += rest
    return quotas


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
    then. Give its DataLoader ``batch_size`` (the same as here), no
    ``shuffle`` and no ``persistent_workers`` (workers must see each
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
        unknown = sorted(set(manifest["speakers"]) - set(self.speakers))
        if unknown:
            raise ValueError(
                f"shards in {folder} hold {len(unknown)} speaker(s) absent "
                f"from the training speakers: {', '.join(unknown[:20])}"
            )
        self.label_encoder = speaker_labels(self.speakers, crops.speeds)
        self.label_encoder.expect_len(len(self.speakers) * len(crops.speeds))
        self.rank, self.world_size = _rank_and_size(rank, world_size)
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

    def _read(self, pieces):
        """The samples of the pieces, checked against the manifest."""
        for shard, start, stop in pieces:
            samples = tarfile_samples([{"url": self.urls[shard]}])
            read = 0
            for sample in itertools.islice(samples, start, stop):
                read += 1
                yield sample
            if read != stop - start:
                raise ValueError(
                    f"{self.urls[shard]}: holds fewer than the "
                    f"{self.counts[shard]} utterances its manifest says "
                    "(rerun write_shards)"
                )

    def _item(self, sample, spill, number):
        """Decode, crop and label one sample."""
        meta = json.loads(sample["json"])
        (ext,) = [k for k in sample if k != "json" and not k.startswith("__")]
        # a new file each time, removed at once: truncating a file to
        # overwrite it costs ms on file systems that discard freed blocks
        path = os.path.join(spill, f"{number}.{ext}")
        with open(path, "wb") as fout:
            fout.write(sample[ext])
        try:
            sig, copy = self.crops.read(meta["id"], path, meta["duration"])
        except ValueError as error:
            problem = str(error).removeprefix(f"{path}: ")
            raise ValueError(
                f"{sample['__url__']}: utterance {meta['id']} (from "
                f"{meta['wav']}): {problem}"
            ) from None
        finally:
            os.unlink(path)
        label = self.label_encoder.encode_label(meta["spk_id"])
        label += len(self.speakers) * copy
        return {
            "id": meta["id"],
            "sig": sig,
            "spk_id_encoded": torch.LongTensor([label]),
        }

    def __iter__(self):
        """This worker's part of the epoch ``crops.epoch``."""
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
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
        rng = random.Random(f"{seed}:{epoch}:{self.rank}:{worker}:buffer")
        samples = shuffle(
            self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng
        )(iter(self._read(pieces)))
        with tempfile.TemporaryDirectory(prefix="shard_stream_") as spill:
            for number, sample in enumerate(samples):
                yield self._item(sample, spill, number)
