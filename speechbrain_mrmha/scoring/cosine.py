"""Cosine scoring of trial lists and score normalisation, in plain torch
tensor code (CPU or GPU, no Python loop over trials).

* :func:`index_trials` and :func:`cosine_score_trials` score a trial list
  against the embeddings of its unique files, L2-normalised once.
* :func:`cohort_statistics` and :func:`normalize_scores` give symmetric
  score normalisation (s-norm) and its adaptive variant (AS-norm) against a
  cohort of impostor embeddings.

Authors
 * speechbrain-mrmha contributors
"""

import torch
import torch.nn.functional as F

__all__ = [
    "index_trials",
    "cosine_score_trials",
    "cohort_statistics",
    "normalize_scores",
]


def index_trials(enrol_names, test_names):
    """Maps the two sides of a trial list to rows of a unique-file table.

    Arguments
    ---------
    enrol_names : list of str
        Enrolment file of each trial.
    test_names : list of str
        Test file of each trial (same length).

    Returns
    -------
    unique_names : list of str
        Each file once, in order of first appearance (enrolment side first
        within a trial).
    enrol_index : torch.LongTensor
        (n_trials,) row of each trial's enrolment file in ``unique_names``.
    test_index : torch.LongTensor
        (n_trials,) row of each trial's test file in ``unique_names``.

    Example
    -------
    >>> names, e, t = index_trials(["a", "a", "b"], ["b", "c", "c"])
    >>> names, e.tolist(), t.tolist()
    (['a', 'b', 'c'], [0, 0, 1], [1, 2, 2])
    """
    if len(enrol_names) != len(test_names):
        raise ValueError(
            f"index_trials: {len(enrol_names)} enrolment names but "
            f"{len(test_names)} test names"
        )
    rows = {}
    enrol_rows, test_rows = [], []
    for enrol_name, test_name in zip(enrol_names, test_names):
        enrol_rows.append(rows.setdefault(enrol_name, len(rows)))
        test_rows.append(rows.setdefault(test_name, len(rows)))
    unique_names = list(rows)
    enrol_index = torch.tensor(enrol_rows, dtype=torch.long)
    test_index = torch.tensor(test_rows, dtype=torch.long)
    return unique_names, enrol_index, test_index


INDEX_DTYPES = (torch.int32, torch.int64)
NORM_EPS = 1e-12  # F.normalize's


def _check_index(index, n_rows, name, label):
    """Checks a 1-D int32 / int64 tensor of row indexes into n_rows rows."""
    if not isinstance(index, torch.Tensor) or index.dtype not in INDEX_DTYPES:
        raise ValueError(
            f"{name}: {label} must be a torch.LongTensor or torch.IntTensor"
        )
    if index.dim() != 1:
        raise ValueError(
            f"{name}: {label} must be 1-D, got shape {tuple(index.shape)}"
        )
    if index.numel() and (index.min() < 0 or index.max() >= n_rows):
        raise ValueError(f"{name}: {label} has rows outside [0, {n_rows - 1}]")


def _check_embeddings(embeddings, name, label):
    """Checks a 2-D floating tensor with at least one row."""
    if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 2:
        raise ValueError(f"{name}: {label} must be a 2-D tensor (rows, dim)")
    if not embeddings.dtype.is_floating_point:
        raise ValueError(f"{name}: {label} must be floating point")


def cosine_score_trials(embeddings, enrol_index, test_index, chunk_size=16384):
    """Cosine similarity of every trial, each file normalised once.

    Arguments
    ---------
    embeddings : torch.Tensor
        (n_unique_files, dim) one embedding per unique file.
    enrol_index : torch.LongTensor or torch.IntTensor
        (n_trials,) row of each trial's enrolment embedding (int32 keeps a
        list of millions of trials small, e.g. ``torch.from_numpy`` of a
        ``dataio.trials.TrialList``'s arrays).
    test_index : torch.LongTensor or torch.IntTensor
        (n_trials,) row of each trial's test embedding.
    chunk_size : int
        Trials scored at once; memory is about 4 * chunk_size * dim floats
        beyond the scores (the table is not copied).

    Returns
    -------
    scores : torch.Tensor
        (n_trials,) cosine scores in [-1, 1].

    Example
    -------
    >>> emb = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    >>> cosine_score_trials(emb, torch.tensor([0, 0]), torch.tensor([1, 2]))
    tensor([1., 0.])
    """
    name = "cosine_score_trials"
    _check_embeddings(embeddings, name, "embeddings")
    _check_index(enrol_index, embeddings.shape[0], name, "enrol_index")
    _check_index(test_index, embeddings.shape[0], name, "test_index")
    if enrol_index.shape != test_index.shape:
        raise ValueError(
            f"{name}: enrol_index {tuple(enrol_index.shape)} and test_index "
            f"{tuple(test_index.shape)} differ in shape"
        )
    if chunk_size < 1:
        raise ValueError(f"{name}: chunk_size must be >= 1, got {chunk_size}")
    # F.normalize row by row, its norms computed once: no normalised copy
    # of the table (hundreds of MB for a VoxCeleb1-E list), same values
    norms = embeddings.norm(2, 1, keepdim=True).clamp_min(NORM_EPS)
    enrol_index = enrol_index.to(embeddings.device)
    test_index = test_index.to(embeddings.device)
    scores = torch.empty(
        enrol_index.shape[0], dtype=embeddings.dtype, device=embeddings.device
    )
    # two reused buffers, rows divided in place (faster than fresh tensors);
    # a tensor that needs gradients takes the out-of-place way
    in_place = not (torch.is_grad_enabled() and embeddings.requires_grad)
    size = min(chunk_size, enrol_index.shape[0])
    buffers = [embeddings.new_empty((size, embeddings.shape[1])) for _ in "et"]
    for start in range(0, enrol_index.shape[0], chunk_size):
        stop = start + chunk_size
        sides = []
        for index, buffer in zip(
            (enrol_index[start:stop], test_index[start:stop]), buffers
        ):
            if in_place:
                rows = buffer[: index.shape[0]]
                torch.index_select(embeddings, 0, index, out=rows)
                sides.append(rows.div_(torch.index_select(norms, 0, index)))
            else:
                rows = torch.index_select(embeddings, 0, index)
                sides.append(rows / torch.index_select(norms, 0, index))
        scores[start:stop] = torch.einsum("td,td->t", *sides)
    return scores


def cohort_statistics(embeddings, cohort, top_k=None, chunk_size=4096):
    """Mean and standard deviation of each embedding's cohort scores.

    Each row of ``embeddings`` is scored (cosine) against every cohort row;
    the mean and unbiased standard deviation are taken over the whole cohort
    (``top_k=None``, s-norm) or over its ``top_k`` highest scores (adaptive
    s-norm, AS-norm), as SpeechBrain's verification recipe does per trial.

    Arguments
    ---------
    embeddings : torch.Tensor
        (n_files, dim) embeddings to normalise scores for.
    cohort : torch.Tensor
        (n_cohort, dim) impostor embeddings (e.g. training-speaker means).
    top_k : int or None
        Number of highest cohort scores to keep per file; None keeps all.
    chunk_size : int
        Files scored at once; memory is about chunk_size * n_cohort floats.

    Returns
    -------
    mean : torch.Tensor
        (n_files,) mean cohort score of each file.
    std : torch.Tensor
        (n_files,) standard deviation of those scores.

    Example
    -------
    >>> emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> cohort = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    >>> mean, std = cohort_statistics(emb, cohort, top_k=2)
    >>> mean, std
    (tensor([0.5000, 0.5000]), tensor([0.7071, 0.7071]))
    """
    name = "cohort_statistics"
    _check_embeddings(embeddings, name, "embeddings")
    _check_embeddings(cohort, name, "cohort")
    if embeddings.shape[1] != cohort.shape[1]:
        raise ValueError(
            f"{name}: embeddings have dim {embeddings.shape[1]} but the "
            f"cohort has dim {cohort.shape[1]}"
        )
    n_cohort = cohort.shape[0]
    if n_cohort == 0:
        raise ValueError(f"{name}: the cohort is empty")
    keep = n_cohort if top_k is None else top_k
    if isinstance(keep, bool) or not isinstance(keep, int):
        raise ValueError(f"{name}: top_k must be an int or None, got {top_k!r}")
    if keep > n_cohort:
        raise ValueError(
            f"{name}: top_k={top_k} exceeds the cohort size {n_cohort}"
        )
    if keep < 2:
        raise ValueError(
            f"{name}: need at least 2 cohort scores per file for a standard "
            f"deviation, got top_k={top_k} with cohort size {n_cohort}"
        )
    if chunk_size < 1:
        raise ValueError(f"{name}: chunk_size must be >= 1, got {chunk_size}")
    unit = F.normalize(embeddings, dim=1)
    unit_cohort = F.normalize(cohort.to(unit), dim=1)
    mean = torch.empty(unit.shape[0], dtype=unit.dtype, device=unit.device)
    std = torch.empty_like(mean)
    for start in range(0, unit.shape[0], chunk_size):
        stop = start + chunk_size
        scores = unit[start:stop] @ unit_cohort.T
        if top_k is not None:
            scores = torch.topk(scores, k=keep, dim=1).values
        std[start:stop], mean[start:stop] = torch.std_mean(scores, dim=1)
    return mean, std


def normalize_scores(scores, enrol_index, test_index, mean, std):
    """Symmetric score normalisation with per-file cohort statistics.

    ``0.5 * ((s - mean[e]) / std[e] + (s - mean[t]) / std[t])`` for a trial
    with score ``s``, enrolment row ``e`` and test row ``t``.

    Arguments
    ---------
    scores : torch.Tensor
        (n_trials,) raw scores.
    enrol_index : torch.LongTensor or torch.IntTensor
        (n_trials,) row of each trial's enrolment file in ``mean`` / ``std``.
    test_index : torch.LongTensor or torch.IntTensor
        (n_trials,) row of each trial's test file.
    mean : torch.Tensor
        (n_files,) cohort score mean per file (see cohort_statistics).
    std : torch.Tensor
        (n_files,) cohort score standard deviation per file.

    Returns
    -------
    normalized : torch.Tensor
        (n_trials,) normalised scores.

    Example
    -------
    >>> s = torch.tensor([0.9])
    >>> mean, std = torch.tensor([0.1, 0.3]), torch.tensor([0.2, 0.3])
    >>> normalize_scores(s, torch.tensor([0]), torch.tensor([1]), mean, std)
    tensor([3.0000])
    """
    name = "normalize_scores"
    if not isinstance(scores, torch.Tensor) or scores.dim() != 1:
        raise ValueError(f"{name}: scores must be a 1-D tensor")
    for label, stat in (("mean", mean), ("std", std)):
        if not isinstance(stat, torch.Tensor) or stat.dim() != 1:
            raise ValueError(f"{name}: {label} must be a 1-D tensor")
    if mean.shape != std.shape:
        raise ValueError(
            f"{name}: mean {tuple(mean.shape)} and std {tuple(std.shape)} "
            "differ in shape"
        )
    _check_index(enrol_index, mean.shape[0], name, "enrol_index")
    _check_index(test_index, mean.shape[0], name, "test_index")
    if not (scores.shape == enrol_index.shape == test_index.shape):
        raise ValueError(
            f"{name}: scores {tuple(scores.shape)}, enrol_index "
            f"{tuple(enrol_index.shape)} and test_index "
            f"{tuple(test_index.shape)} must have the same shape"
        )
    enrol_index = enrol_index.to(mean.device)
    test_index = test_index.to(mean.device)
    enrol_term = (scores - mean[enrol_index]) / std[enrol_index]
    test_term = (scores - mean[test_index]) / std[test_index]
    return 0.5 * (enrol_term + test_term)
