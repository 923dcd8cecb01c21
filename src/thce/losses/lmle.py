"""LMLE (Huang, Li, Loy, Tang: "Learning Deep Representation for Imbalanced Classification", CVPR 2016): quintuplet
sampling and the triple-header hinge loss, the method our paper (ref. [6] there) compares its cost against. Its
training schedule (clustering, table rebuilds, class-balanced anchors) is :mod:`thce.training.lmle`.

The paper, Sec. 3, as we read it (equation numbers of the CVPR version):

- The embedding is L2-normalised, ``||f(x)||_2 = 1``, and ``D(f(x_i), f(x_j)) = ||f(x_i) - f(x_j)||_2^2`` is the
  squared Euclidean distance (``= 2 - 2 cos`` on the sphere).
- Every class is clustered with k-means. For every anchor ``x_i`` a *quintuplet* is sampled (Sec. 3.1):
  ``x_i^{p+}`` the most distant within-cluster neighbour, ``x_i^{p-}`` the nearest within-class neighbour of a
  different cluster, ``x_i^{p--}`` the most distant within-class neighbour, ``x_i^n`` the nearest between-class
  neighbour.
- Eq. (1), the order the embedding must respect:
  ``D(f(x_i), f(x_i^{p+})) < D(f(x_i), f(x_i^{p-})) < D(f(x_i), f(x_i^{p--})) < D(f(x_i), f(x_i^n))``.
- Eq. (2), the triple-header hinge loss: ``min sum_i (eps_i + tau_i + sigma_i) + lambda ||W||_2^2`` subject to
  ``max(0, g1 + D(i, p+) - D(i, p-)) <= eps_i``, ``max(0, g2 + D(i, p-) - D(i, p--)) <= tau_i``,
  ``max(0, g3 + D(i, p--) - D(i, n)) <= sigma_i``, all slacks ``>= 0``. At the optimum every slack equals its hinge,
  so Eq. (2) is ``sum_i`` of the three hinges, plus weight decay.
- Training: mini-batches of quintuplets drawn with class-balanced resampling; the quintuplet table is computed
  offline from a random half of the training data (harder "hardest" members would be dominated by outliers and
  mislabelled samples); clustering and table are refreshed periodically (every 5000 iterations in the paper),
  alternating with the network updates.
- Eq. (3) is the LMLE-kNN classifier. It is not used here: like every other method of this project, the learned
  embedding is evaluated by a sigmoid detector trained on it.

Where the paper is silent or ambiguous, our reading (each one tested):

1. ``p--`` is taken among the *other* clusters of the anchor's class whenever the class has any. Taken literally
   ("the most distant within-class neighbour"), ``p--`` would be ``p+`` whenever the farthest class member lies
   in the anchor's own cluster, and Eq. (1) would then ask ``D(p+) < D(p-) < D(p+)``. For a class with a single
   cluster the literal definition is used, so ``p-- = p+``: then the cluster headers (g1, g2) have nothing to
   compare, but the class header g3 (``D(p--) < D(n)``) still applies. Otherwise a single-cluster class (the
   rarest class under the K_c rule) would get no loss at all.
2. A singleton cluster has ``p+ =`` the anchor itself (``D = 0``, a one-point cluster has zero diameter), so
   header 1 still asks the nearest other cluster to be ``g1`` away.
3. An empty set gives index ``-1`` and drops the headers that use it: ``p- = -1`` for a class with one cluster
   (headers 1 and 2), ``n = -1`` when there is a single class (header 3).
4. Members are searched among *candidates* (the paper's random half); anchors are all training samples.
5. ``lambda ||W||^2`` is weight decay and is left to the optimiser, as for the triple-header CE (Adam, none).
6. Margins: we found no values for g1, g2, g3 in the text available to us. Our defaults ``(0.1, 0.1, 0.2)`` on
   squared distances (range [0, 4]) keep the class margin larger than the cluster margins (like beta' > beta''
   of the triple-header CE) and keep g1 small: for the 2:2:1:26 setting clusters are 1/31 of the data.
7. Clustering: thce's per-class spherical k-means with the K_c rule (``cluster_per_class``), so LMLE and the
   triple-header CE see the same clusters. On unit vectors spherical and Euclidean k-means rank points alike.

Cost: building the table needs every anchor's distance to every candidate, ``O(I^2 D)`` time; :func:`quintuplets`
chunks the anchors so memory is ``O(chunk_size * I)``. The triple-header CE needs ``O(I K D)`` (Eqs. 4-9).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from thce.errors import ConfigError, DataError

#: Default margins (g1, g2, g3) of Eq. (2) on squared distances of unit vectors; our choice (see module notes).
DEFAULT_MARGINS: tuple[float, float, float] = (0.1, 0.1, 0.2)

#: Columns of a quintuplet table.
P_PLUS, P_MINUS, P_MINUS2, NEGATIVE = 0, 1, 2, 3


# ------------------------------------------------------------------------------------- quintuplet sampling


def _check_inputs(embeddings: Tensor, class_index: Tensor, cluster_index: Tensor, candidates: Tensor | None) -> None:
    if embeddings.ndim != 2 or not torch.is_floating_point(embeddings):
        raise DataError(f"quintuplets: embeddings must be a float (N, D) tensor, got {tuple(embeddings.shape)} "
                        f"{embeddings.dtype}")  # fmt: skip
    if not bool(torch.isfinite(embeddings).all()):
        raise DataError("quintuplets: embeddings contain NaN or infinite values")
    n = embeddings.shape[0]
    for name, value in (("class_index", class_index), ("cluster_index", cluster_index), ("candidates", candidates)):
        if value is not None and tuple(value.shape) != (n,):
            raise DataError(f"quintuplets: {name} must have shape ({n},) like the embeddings, got {tuple(value.shape)}")
    if n and int(cluster_index.min()) < 0:
        raise DataError("quintuplets: cluster_index must be >= 0")
    if n:
        # Every cluster must lie inside one class (per-class clustering): check one class per cluster id.
        owner = torch.full((int(cluster_index.max()) + 1,), -1, dtype=torch.long, device=cluster_index.device)
        owner.scatter_(0, cluster_index, class_index)
        if not torch.equal(owner[cluster_index], class_index):
            raise DataError("quintuplets: a cluster holds samples of several classes; cluster each class apart "
                            "(thce.cluster.cluster_per_class)")  # fmt: skip


class _Distances:
    """``D(a, x_j) - ||a||^2 = ||x_j||^2 - 2 a.x_j`` for a chunk of anchors against a set of columns, written into
    one reused buffer (fresh large allocations cost more than the matrix product on a CPU).

    The anchor's own squared norm is constant along a row, so every row ranks its columns as ``D`` does.
    """

    def __init__(self, x: Tensor, sq_norms: Tensor, chunk_size: int) -> None:
        self.x, self.sq_norms, self.chunk_size = x, sq_norms, chunk_size
        self.buffer = torch.empty(0, dtype=x.dtype, device=x.device)

    def columns(self, cols: Tensor) -> tuple[Tensor, Tensor]:
        """Gathered (m, D) rows and (m,) squared norms of the column indices ``cols``."""
        return self.x[cols], self.sq_norms[cols]

    def __call__(self, anchors: Tensor, columns: tuple[Tensor, Tensor]) -> Tensor:
        x_cols, sq_cols = columns
        b, m = anchors.shape[0], x_cols.shape[0]
        if self.buffer.numel() < b * m:
            self.buffer = torch.empty(max(b * m, self.chunk_size * m), dtype=self.x.dtype, device=self.x.device)
        out = self.buffer[: b * m].view(b, m)
        return torch.addmm(sq_cols.unsqueeze(0), anchors, x_cols.t(), beta=1.0, alpha=-2.0, out=out)


@torch.no_grad()
def quintuplets(
    embeddings: Tensor,
    class_index: Tensor,
    cluster_index: Tensor,
    *,
    candidates: Tensor | None = None,
    chunk_size: int = 4096,
) -> Tensor:
    """LMLE's quintuplet table (Huang et al. 2016, Sec. 3.1): members of every anchor's quintuplet.

    For anchor i of class c_i and cluster k_i, with ``D`` the squared Euclidean distance of the rows of
    ``embeddings`` and every set restricted to the ``candidates`` other than i:

    - column 0, ``p+``: argmax D over i's cluster; ``i`` itself if i's cluster has no other candidate;
    - column 1, ``p-``: argmin D over the other clusters of class c_i; ``-1`` if there are none;
    - column 2, ``p--``: argmax D over the other clusters of class c_i; equal to ``p+`` if there are none
      (then "the most distant within-class neighbour" of the paper is the most distant within-cluster one);
    - column 3, ``n``: argmin D over the other classes; ``-1`` if there are none.

    Ties go to the lowest index. Every anchor meets every candidate once, in two blocks in index order (its
    class, the other classes); anchors go cluster by cluster in chunks of ``chunk_size``, so excluding the own
    cluster from the class block costs ``O(chunk_size * cluster size)``. Time ``O(N * M * D)`` for M
    candidates, memory ``O(chunk_size * M)``. Pass L2-normalised embeddings (the paper's ``||f(x)|| = 1``);
    they are used as given, in their dtype (half precision is computed in float32).

    Args:
        embeddings: (N, D) embeddings, on any device (the table is returned on the same device).
        class_index: (N,) class of each sample (any integers).
        cluster_index: (N,) cluster of each sample, ``>= 0``; every cluster must lie inside one class.
        candidates: (N,) bool, the samples that may be chosen as members (the paper's random half); ``None``: all.
        chunk_size: anchors per block of the distance matrix.

    Returns:
        (N, 4) long tensor of sample indices ``(p+, p-, p--, n)``, ``-1`` where the set is empty.

    >>> x = torch.tensor([[0.0], [1.0], [3.0], [4.0], [10.0]])
    >>> quintuplets(x, torch.tensor([0, 0, 0, 0, 1]), torch.tensor([0, 0, 1, 1, 2])).tolist()[0]
    [1, 2, 3, 4]
    """
    if chunk_size < 1:
        raise ConfigError(f"quintuplets: chunk_size must be >= 1, got {chunk_size}")
    device = embeddings.device
    class_index = torch.as_tensor(class_index, device=device).long()
    cluster_index = torch.as_tensor(cluster_index, device=device).long()
    if candidates is not None:
        candidates = torch.as_tensor(candidates, device=device).bool()
    _check_inputs(embeddings, class_index, cluster_index, candidates)
    x = embeddings.detach()
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    n = x.shape[0]
    table = torch.full((n, 4), -1, dtype=torch.long, device=device)
    if n == 0:
        return table
    is_candidate = torch.ones(n, dtype=torch.bool, device=device) if candidates is None else candidates
    distances = _Distances(x, (x * x).sum(dim=1), chunk_size)
    neg_inf, pos_inf = float("-inf"), float("inf")
    for c in torch.unique(class_index).tolist():
        in_class = class_index == c
        # n: nearest candidate of another class.
        cols_other = torch.nonzero(~in_class & is_candidate).flatten()  # ascending: ties go to the lowest index
        if len(cols_other):
            other = distances.columns(cols_other)
            for rows in torch.nonzero(in_class).flatten().split(chunk_size):
                table[rows, NEGATIVE] = cols_other[distances(x[rows], other).argmin(dim=1)]
        # p+, p-, p--: anchors cluster by cluster against the candidates of the class.
        cols_class = torch.nonzero(in_class & is_candidate).flatten()
        same = distances.columns(cols_class)
        cluster_of_col = cluster_index[cols_class]
        for k in torch.unique(cluster_index[in_class]).tolist():
            own_pos = torch.nonzero(cluster_of_col == k).flatten()  # positions in cols_class, ascending
            cols_own = cols_class[own_pos]
            has_rest = len(own_pos) < len(cols_class)
            for rows in torch.nonzero(cluster_index == k).flatten().split(chunk_size):
                p_plus = rows.clone()  # no other candidate in the cluster: the anchor itself
                if len(cols_class) == 0:
                    table[rows, P_PLUS] = table[rows, P_MINUS2] = p_plus
                    continue
                d = distances(x[rows], same)  # (b, m_c)
                if len(own_pos):
                    d_own = d[:, own_pos]  # (b, s_k) copy
                    pos = torch.searchsorted(cols_own, rows).clamp_max(len(cols_own) - 1)
                    is_self = cols_own[pos] == rows
                    d_own[torch.nonzero(is_self).flatten(), pos[is_self]] = neg_inf
                    best, arg = d_own.max(dim=1)
                    p_plus = torch.where(torch.isfinite(best), cols_own[arg], p_plus)
                table[rows, P_PLUS] = p_plus
                if has_rest:
                    table[rows, P_MINUS] = cols_class[d.index_fill_(1, own_pos, pos_inf).argmin(dim=1)]
                    table[rows, P_MINUS2] = cols_class[d.index_fill_(1, own_pos, neg_inf).argmax(dim=1)]
                else:
                    table[rows, P_MINUS2] = p_plus  # single-cluster class: the most distant class member
    return table


def header_validity(table: Tensor) -> Tensor:
    """(N, 3) bool: which of the three headers of Eq. (2) apply, from a (N, 4) table with ``-1`` for empty sets.

    Header 1 compares p+ with p-, header 2 p- with p--, header 3 p-- with n.
    """
    present = table >= 0
    return torch.stack(
        [present[:, P_PLUS] & present[:, P_MINUS], present[:, P_MINUS] & present[:, P_MINUS2],
         present[:, P_MINUS2] & present[:, NEGATIVE]],
        dim=1,
    )  # fmt: skip


# ------------------------------------------------------------------------------------- triple-header hinge


def check_margins(margins: tuple[float, float, float] | list[float]) -> tuple[float, float, float]:
    """The margins (g1, g2, g3) of Eq. (2) as floats; a :class:`ConfigError` unless three finite values >= 0."""
    values = tuple(float(m) for m in margins)
    if len(values) != 3:
        raise ConfigError(f"LMLE margins: need three values (g1, g2, g3), got {list(margins)}")
    if any(not math.isfinite(m) or m < 0 for m in values):
        raise ConfigError(f"LMLE margins: need finite values >= 0, got {list(values)}")
    return values  # type: ignore[return-value]


def hinge_headers(
    anchor: Tensor,
    p_plus: Tensor,
    p_minus: Tensor,
    p_minus2: Tensor,
    negative: Tensor,
    *,
    margins: tuple[float, float, float] = DEFAULT_MARGINS,
    valid: Tensor | None = None,
) -> Tensor:
    """The three hinges of Eq. (2) per anchor, (B, 3): ``eps_i, tau_i, sigma_i`` at their optimum.

    ``[max(0, g1 + D(a, p+) - D(a, p-)), max(0, g2 + D(a, p-) - D(a, p--)), max(0, g3 + D(a, p--) - D(a, n))]``
    with ``D`` the squared Euclidean distance; a header that ``valid`` (B, 3) marks False is 0 (no gradient).
    All five inputs are (B, D), normally L2-normalised embeddings.
    """
    shapes = {tuple(t.shape) for t in (anchor, p_plus, p_minus, p_minus2, negative)}
    if len(shapes) != 1 or anchor.ndim != 2:
        raise ValueError(f"triple_header_hinge: the five inputs must share one (B, D) shape, got {sorted(shapes)}")
    g1, g2, g3 = check_margins(margins)
    d_plus = (anchor - p_plus).pow(2).sum(dim=1)
    d_minus = (anchor - p_minus).pow(2).sum(dim=1)
    d_minus2 = (anchor - p_minus2).pow(2).sum(dim=1)
    d_negative = (anchor - negative).pow(2).sum(dim=1)
    headers = torch.stack(
        [g1 + d_plus - d_minus, g2 + d_minus - d_minus2, g3 + d_minus2 - d_negative], dim=1
    ).clamp_min(0.0)
    if valid is not None:
        if tuple(valid.shape) != (anchor.shape[0], 3):
            raise ValueError(
                f"triple_header_hinge: valid must be (B, 3) = ({anchor.shape[0]}, 3), got {tuple(valid.shape)}"
            )
        headers = torch.where(valid.to(headers.device, torch.bool), headers, torch.zeros_like(headers))
    return headers


def triple_header_hinge(
    anchor: Tensor,
    p_plus: Tensor,
    p_minus: Tensor,
    p_minus2: Tensor,
    negative: Tensor,
    *,
    margins: tuple[float, float, float] = DEFAULT_MARGINS,
    valid: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """LMLE's triple-header hinge loss, Eq. (2) of Huang et al. (2016), without the weight decay term.

    Per anchor ``eps_i + tau_i + sigma_i`` with
    ``eps_i = max(0, g1 + D(a, p+) - D(a, p-))`` (cluster margin: own cluster inside the nearest other cluster),
    ``tau_i = max(0, g2 + D(a, p-) - D(a, p--))`` (within-class spread between clusters),
    ``sigma_i = max(0, g3 + D(a, p--) - D(a, n))`` (class margin), ``D`` the squared Euclidean distance.

    Args:
        anchor, p_plus, p_minus, p_minus2, negative: (B, D) embeddings of the quintuplet members.
        margins: (g1, g2, g3), each >= 0.
        valid: (B, 3) bool, which headers apply (see :func:`header_validity`); ``None``: all.
        reduction: ``"mean"`` (over the B anchors), ``"sum"`` (Eq. 2 literally) or ``"none"`` ((B,) per anchor).

    >>> a = torch.tensor([[1.0, 0.0]]); p = torch.tensor([[0.0, 1.0]]); o = torch.tensor([[-1.0, 0.0]])
    >>> round(triple_header_hinge(a, p, a, o, a, margins=(0.1, 0.2, 0.3)).item(), 4)  # 2.1 + 0 + 4.3
    6.4
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"triple_header_hinge: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    per_anchor = hinge_headers(anchor, p_plus, p_minus, p_minus2, negative, margins=margins, valid=valid).sum(dim=1)
    if reduction == "none":
        return per_anchor
    if reduction == "sum":
        return per_anchor.sum()
    return per_anchor.mean() if per_anchor.numel() else per_anchor.sum()


class TripleHeaderHinge(nn.Module):
    """Eq. (2) as a module over a batch of embeddings and quintuplet rows that index it.

    ::

        loss_fn = TripleHeaderHinge(margins=(0.1, 0.1, 0.2))
        loss = loss_fn(encoder(x), rows)  # rows (B, 5): anchor, p+, p-, p--, n as row indices into encoder(x)

    ``-1`` in ``rows`` marks an empty set; the headers that need it are dropped (:func:`header_validity`).
    """

    def __init__(self, margins: tuple[float, float, float] = DEFAULT_MARGINS, *, reduction: str = "mean") -> None:
        super().__init__()
        self.margins = check_margins(margins)
        self.reduction = reduction

    def forward(self, embeddings: Tensor, rows: Tensor) -> Tensor:
        """``embeddings`` (M, D), ``rows`` (B, 5) long with entries in ``[-1, M)`` -> loss."""
        if rows.ndim != 2 or rows.shape[1] != 5:
            raise ValueError(
                f"TripleHeaderHinge: rows must be (B, 5) (anchor, p+, p-, p--, n), got {tuple(rows.shape)}"
            )
        rows = rows.to(embeddings.device).long()
        if bool((rows[:, 0] < 0).any()):
            raise ValueError("TripleHeaderHinge: every row needs an anchor (column 0 >= 0)")
        valid = header_validity(rows[:, 1:])
        filled = torch.where(rows >= 0, rows, rows[:, :1])  # empty sets point at the anchor; their headers are off
        e = embeddings[filled]  # (B, 5, D)
        return triple_header_hinge(
            e[:, 0], e[:, 1], e[:, 2], e[:, 3], e[:, 4], margins=self.margins, valid=valid, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        return f"margins={self.margins}, reduction={self.reduction!r}"


def eq1_fraction(embeddings: Tensor, table: Tensor, *, chunk_size: int = 65536) -> float:
    """Fraction of anchors for which every applicable inequality of Eq. (1) holds (strictly, no margins).

    ``embeddings`` (N, D), ``table`` (N, 4) from :func:`quintuplets`; memory ``O(chunk_size * D)``.
    """
    with torch.no_grad():
        if len(table) == 0:
            return float("nan")
        held = 0
        for rows in torch.arange(len(table), device=table.device).split(chunk_size):
            sub = table[rows]
            valid = header_validity(sub)
            filled = torch.where(sub >= 0, sub, rows.unsqueeze(1))
            d = (embeddings[rows].unsqueeze(1) - embeddings[filled]).pow(2).sum(dim=2)  # (b, 4)
            holds = torch.stack([d[:, 0] < d[:, 1], d[:, 1] < d[:, 2], d[:, 2] < d[:, 3]], dim=1)
            held += int((holds | ~valid).all(dim=1).sum())
        return held / len(table)
