"""A minimal plain PyTorch training loop, the reference the recipe must match.

Same model (the recipe yaml's Fbank, mean normalisation, ResNet-34 + pooling,
cosine classifier and loss, built by ``load_hyperpyyaml`` with the same
overrides), same data (the recipe's train annotation CSV, a random crop of
``sentence_len`` s per utterance and epoch), same budget (epochs, batch
size, drop_last), but RAdam at a constant learning rate (2e-3), no warm-up,
no decay, no validation. Then every trial file is embedded whole and the
trials are scored by cosine: EER (%) and minDCF (p_target 0.01, normalised)
as ``speaker_verification_cosine.py`` reports them.

    python bench/reference_loop.py --data-folder CORPUS \\
        --train-annotation PREPARED/train.csv --output OUT [--seed 1]

Writes OUT/metrics.json. With ``--compare OTHER/metrics.json ...`` it also
prints those runs' EER / minDCF next to its own.
"""

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain_mrmha.dataio.annotation import read_annotation
from speechbrain_mrmha.dataio.audio import load_audio
from speechbrain_mrmha.dataio.trials import read_trials
from speechbrain_mrmha.scoring.metrics import EER, minDCF

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "VoxCeleb1"


def parse_args(argv):
    """Command-line options (defaults: the demo's sizes)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-folder", required=True)
    parser.add_argument("--train-annotation", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument(
        "--config", default=str(RECIPE / "hparams" / "mrmha.yaml")
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--sentence-len", type=float, default=1.5)
    parser.add_argument("--channels", default="[8,16,32,64]")
    parser.add_argument("--emb-dim", type=int, default=128)
    parser.add_argument("--margin", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--compare", nargs="*", default=[])
    return parser.parse_args(argv)


def random_crop(path, seconds, rng, sample_rate=16000):
    """A random ``seconds`` crop of a file (a shorter file is repeated)."""
    sig = load_audio(path, sample_rate, min_seconds=0)
    length = int(round(seconds * sample_rate))
    if sig.shape[0] <= length:
        return sig.repeat(-(-length // sig.shape[0]))[:length]
    start = rng.randint(0, sig.shape[0] - length)
    return sig[start : start + length]


def main(argv=None):
    """Train, embed, score, print."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    rows = read_annotation(args.train_annotation, args.data_folder)
    speakers = sorted({row["spk_id"] for row in rows.values()})
    label = {speaker: i for i, speaker in enumerate(speakers)}
    items = [(row["wav"], label[row["spk_id"]]) for row in rows.values()]
    overrides = {
        "data_folder": args.data_folder,
        "output_folder": str(output),
        "channels": json.loads(args.channels),
        "emb_dim": args.emb_dim,
        "n_classes": len(speakers),
        "margin": args.margin,
        "seed": args.seed,
    }
    with open(args.config) as fin:
        hp = load_hyperpyyaml(fin, overrides)  # seeds torch, random, numpy
    fbank, norm = hp["compute_features"], hp["mean_var_norm"]
    model, classifier, loss_fn = (
        hp["embedding_model"],
        hp["classifier"],
        hp["compute_cost"],
    )
    params = [*model.parameters(), *classifier.parameters()]
    optimizer = torch.optim.RAdam(
        params, lr=args.lr, weight_decay=hp["weight_decay"]
    )
    rng = random.Random(args.seed)
    start = time.monotonic()
    for epoch in range(1, args.epochs + 1):
        model.train()
        rng.shuffle(items)
        total = 0.0
        steps = len(items) // args.batch_size  # drop_last
        for step in range(steps):
            batch = items[step * args.batch_size : (step + 1) * args.batch_size]
            wavs = torch.stack(
                [random_crop(w, args.sentence_len, rng) for w, _ in batch]
            )
            targets = torch.tensor([[y] for _, y in batch])
            lens = torch.ones(len(batch))
            feats = norm(fbank(wavs), lens)
            loss = loss_fn(classifier(model(feats, lens)), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        print(f"epoch {epoch}: train loss {total / steps:.3f}", flush=True)
    train_minutes = (time.monotonic() - start) / 60

    model.eval()
    trials = read_trials(Path(args.data_folder) / "meta" / "veri_test2.txt")
    names = sorted({name for t in trials for name in (t.enrol, t.test)})
    embeddings = {}
    with torch.no_grad():
        for name in names:
            sig = load_audio(Path(args.data_folder) / "wav" / name)[None]
            feats = norm(fbank(sig), torch.ones(1))
            embeddings[name] = model(feats, torch.ones(1)).flatten()
    scores = torch.stack(
        [
            torch.nn.functional.cosine_similarity(
                embeddings[t.enrol], embeddings[t.test], dim=0
            )
            for t in trials
        ]
    )
    labels = torch.tensor([bool(t.label) for t in trials])
    eer, _ = EER(scores[labels], scores[~labels])
    dcf, _ = minDCF(scores[labels], scores[~labels], p_target=0.01)
    metrics = {
        "EER": round(100 * float(eer), 3),
        "minDCF": round(float(dcf) / 0.01, 4),
        "n_trials": len(trials),
        "seed": args.seed,
        "epochs": args.epochs,
        "lr": args.lr,
        "train_minutes": round(train_minutes, 2),
    }
    (output / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(
        f"reference loop (RAdam, constant lr {args.lr}): EER {metrics['EER']:.2f} %, minDCF {metrics['minDCF']:.3f}"
    )
    for path in args.compare:
        other = json.loads(Path(path).read_text())
        print(f"{path}: EER {other['EER']:.2f} %, minDCF {other['minDCF']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
