"""Training from shards under DDP: a tiny synthetic corpus is written to 5
shards (24 utterances: 5, 5, 5, 5, 4, not divisible among 2 processes x 2
loader workers), then two gloo processes (torch.distributed.run), each
with a DataLoader of 2 workers, read epochs 0, 1 and 0 again. Every
utterance is read exactly once per epoch across processes and workers,
the next epoch reads them in another order, a rerun of an epoch reads the
same batches, every process takes the same number of steps (what ``len``
of its DataLoader says), and the crops have the crop length and equal
``RandomCrops.read`` of the original files.

Run as a script, this file is the program of one process."""

import json
import sys
from pathlib import Path

BATCH, WORKERS, SEED, SENTENCE_LEN = 5, 2, 11, 1.0
EPOCHS = (0, 1, 0)  # the last one: a resumed run reading epoch 0 again


def rank_main(shards, output):
    """One DDP process: read the epochs, write what it read as JSON."""
    import torch
    from speechbrain.dataio.batch import PaddedBatch
    from torch.utils.data import DataLoader

    from speechbrain_mrmha.training.crops import RandomCrops
    from speechbrain_mrmha.training.shard_stream import ShardStream

    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    crops = RandomCrops(SEED, sentence_len=SENTENCE_LEN)
    stream = ShardStream(shards, crops, batch_size=BATCH, shuffle_buffer=4)
    loader = DataLoader(
        stream, batch_size=BATCH, num_workers=WORKERS, collate_fn=PaddedBatch
    )
    record = {"len": len(loader), "epochs": []}
    for epoch in EPOCHS:
        crops.epoch = epoch
        ids, sums, shapes, lengths, batches = [], [], set(), set(), 0
        for batch in loader:
            batches += 1
            ids += batch.id
            sums += batch.sig.data.double().sum(dim=1).tolist()
            shapes.add(tuple(batch.sig.data.shape[1:]))
            lengths.update(batch.sig.lengths.tolist())
        record["epochs"].append(
            {
                "ids": ids,
                "sums": sums,
                "shapes": sorted(shapes),
                "lengths": sorted(lengths),
                "batches": batches,
            }
        )
    Path(output, f"rank{rank}.json").write_text(json.dumps(record))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def test_two_processes_with_two_workers_read_each_utterance_once(tmp_path):
    import os

    from conftest import run_process, small_corpus

    from speechbrain_mrmha.dataio.audio import audio_info
    from speechbrain_mrmha.dataio.shards import write_shards
    from speechbrain_mrmha.training.crops import RandomCrops

    corpus = small_corpus(tmp_path / "vox", 4, 3, (0.6, 1.4), seed=5)
    rows = {}
    for wav in sorted(Path(corpus.wav_folder).rglob("*.wav")):
        frames, rate = audio_info(wav)
        key = str(wav.relative_to(corpus.wav_folder).with_suffix(""))
        rows[key] = {
            "wav": str(wav),
            "spk_id": key.split("/")[0],
            "duration": frames / rate,
        }
    assert len(rows) == 24
    manifest = write_shards(rows, tmp_path / "shards", samples_per_shard=5)
    assert [s["samples"] for s in manifest["shards"]] == [5, 5, 5, 5, 4]
    output = tmp_path / "out"
    output.mkdir()
    run_process(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            __file__,
            str(tmp_path / "shards"),
            str(output),
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    ranks = [json.loads((output / f"rank{r}.json").read_text()) for r in (0, 1)]
    length = int(16000 * SENTENCE_LEN)
    for epoch_index, epoch in enumerate(EPOCHS):
        read = [rank["epochs"][epoch_index] for rank in ranks]
        ids = read[0]["ids"] + read[1]["ids"]
        assert len(ids) == len(set(ids)) == len(rows)  # each once
        assert set(ids) == set(rows)
        for part, rank in zip(read, ranks):
            assert part["batches"] == rank["len"] == 3  # ceil(12 / 5)
            assert part["shapes"] == [[length]]
            assert part["lengths"] == [1.0]
        crops = RandomCrops(SEED, sentence_len=SENTENCE_LEN)
        crops.epoch = epoch
        for part in read:
            for key, total in zip(part["ids"], part["sums"]):
                row = rows[key]
                sig, _ = crops.read(key, row["wav"], row["duration"])
                assert sig.double().sum().item() == total
    first, second, again = zip(*(rank["epochs"] for rank in ranks))
    order = [[p["ids"] for p in epoch] for epoch in (first, second, again)]
    assert order[1] != order[0]  # another order
    assert order[2] == order[0]  # the same epoch: the same batches
    assert [p["sums"] for p in again] == [p["sums"] for p in first]


if __name__ == "__main__":
    rank_main(*sys.argv[1:3])
