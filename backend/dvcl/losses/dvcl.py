"""Distance-aware voxel-wise contrastive loss L_dvcl on unreliable voxels (METHOD.md 3.6).

Unreliable voxels have no trustworthy pseudo-label, so instead of classes the loss uses *feature-space
neighbourhoods*: a query voxel's probabilities are pulled towards those of its K most similar voxels
(close neighbours C_i, weighted by the NPS affinity) and pushed from its K' least similar ones (distant
outsiders D_i). Per query, from the supplementary's bound psi-bar (Sec. G) [given]:

    l_i = - sum_{n in C_i} A_in p_i . p_n  +  sum_{k in D_i} p_i . p_k

with neighbour/outsider probabilities detached [decided] (as AaD does with its score bank). The constant
(K - K')(log|U_R| + 1) has no gradient and is left out, so the loss can be negative.

Cost is bounded [decided]: a pool of P unreliable voxels is sampled, queries are drawn from that pool, and
similarities are only computed as queries x pool (for C_i, D_i and QDS) and neighbours x pool (for NPS),
never all-pairs over every unreliable voxel of the batch. Drawing queries from the pool keeps everything in
one candidate set, so "i is among n's K nearest" is well defined for NPS.

Neighbour selection uses the (projected, L2-normalised) voxel features and carries no gradient; the loss
itself trains the segmentation output (p). The pieces are separate functions so each can be tested alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from dvcl.losses.sampling import rand

_QDS_TOLERANCE = 1e-6
SIMILARITIES = ("cosine", "dot")
_NPS_BLOCK = 256
"""Rows of the neighbour x pool similarity matrix computed at a time in :func:`nps_affinity` (256 x 4096 floats,
4 MB: cache-sized on a CPU)."""


@dataclass
class DVCLSelection:
    """The sets L_dvcl uses, as positions into the pool (kept queries only, except ``kept``)."""

    queries: Tensor
    """(M,) pool positions of the queries that survived QDS."""
    neighbours: Tensor
    """(M, K) pool positions of each query's close neighbours C_i (most similar first)."""
    affinity: Tensor
    """(M, K) NPS weight A_in of each neighbour."""
    outsiders: Tensor
    """(M, K') pool positions of each query's distant outsiders D_i."""
    kept: Tensor
    """(M_all,) bool, which of the sampled queries QDS kept."""
    scores: Tensor
    """(M_all,) QDS score: mean cosine similarity of each sampled query to its K neighbours."""


def cosine_similarity_matrix(a: Tensor, b: Tensor) -> Tensor:
    """(Na, Nb) cosine similarities (features are normalised here, so any scale is accepted)."""
    return F.normalize(a.float(), dim=1) @ F.normalize(b.float(), dim=1).T


def query_denoising(scores: Tensor, std_factor: float = 1.0) -> Tensor:
    """QDS [decided rule]: keep queries whose score is at least ``mean - std_factor * std`` over the queries.

    ``scores`` is each query's mean similarity to its K nearest neighbours; a query far from every other
    unreliable voxel (noise, a stray artefact) has a low score and is dropped. Population std, so one query is
    always kept.
    """
    if scores.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=scores.device)
    std, mean = torch.std_mean(scores, correction=0)
    return scores >= mean - std_factor * std - _QDS_TOLERANCE


def nps_affinity(pool_features: Tensor, query_positions: Tensor, neighbours: Tensor, k: int,
                 mutual: float = 1.0, oneway: float = 0.1, normalized: bool = False) -> Tensor:
    """NPS affinity [inferred, NRC]: ``mutual`` where query i is also among neighbour n's K nearest, else ``oneway``.

    Neighbour sets are over the pool, excluding the voxel itself. Only the distinct neighbours' rows of the
    similarity matrix are computed (at most M*K x P), in blocks of rows so that each block's similarities stay
    in cache (the rows' top-K is all that is kept). ``normalized``: ``pool_features`` rows are already unit
    vectors (as :func:`select_dvcl_sets` passes them), so they are not normalised again.
    """
    if neighbours.numel() == 0:
        return neighbours.new_zeros(neighbours.shape, dtype=torch.float32)
    if mutual == oneway:
        # every neighbour gets the same weight (the default, nps_oneway = nps_mutual = 1): the reciprocity test,
        # a top-K over the pool for every distinct neighbour (about 60 ms per DVCL step on a CPU core), decides
        # nothing
        return torch.full(neighbours.shape, float(mutual), dtype=torch.float32, device=neighbours.device)
    unit = pool_features.float() if normalized else F.normalize(pool_features.float(), dim=1)
    unique, inverse = torch.unique(neighbours, return_inverse=True)
    k_eff = min(k, unit.shape[0] - 1)
    their_neighbours = torch.empty(unique.numel(), k_eff, dtype=torch.long, device=unit.device)  # (U, k)
    for s in range(0, unique.numel(), _NPS_BLOCK):
        rows = unique[s:s + _NPS_BLOCK]
        sim = unit.index_select(0, rows) @ unit.T
        sim[torch.arange(rows.numel(), device=sim.device), rows] = float("-inf")
        their_neighbours[s:s + _NPS_BLOCK] = sim.topk(k_eff, dim=1).indices
    reciprocal = (their_neighbours[inverse] == query_positions.view(-1, 1, 1)).any(dim=-1)  # (M, K)
    return torch.where(reciprocal, torch.full_like(reciprocal, mutual, dtype=torch.float32),
                       torch.full_like(reciprocal, oneway, dtype=torch.float32))


@torch.no_grad()
def select_dvcl_sets(pool_features: Tensor, query_positions: Tensor, k: int = 10, k_out: int = 15,
                     outsider_mode: str = "farthest", nps_mutual: float = 1.0, nps_oneway: float = 1.0,
                     qds: bool = True, qds_std_factor: float = 1.0,
                     generator: Optional[torch.Generator] = None, similarity: str = "cosine") -> DVCLSelection:
    """Choose C_i, D_i and A_in for queries drawn from the pool (no gradient).

    Args:
        pool_features: (P, D) what neighbours are ranked by: projected features, or probability vectors.
        query_positions: (M,) distinct positions of the queries in the pool.
        k, k_out: K and K'. With a small pool they shrink to what exists: K <= P - 1 and K' <= P - 1 - K, so
            a query is never its own neighbour and C_i and D_i never overlap.
        outsider_mode: "farthest" (K' least similar) or "random" (K' uniform among the rest of the pool).
        nps_mutual, nps_oneway: NPS affinities.
        qds, qds_std_factor: query denoising.
        generator: RNG for the random outsider mode.
        similarity: "cosine" (features: cosine similarity) or "dot" (probabilities: p_m . p_n, the
            supplementary's O_mn ranking); used for C_i, D_i, QDS scores and NPS alike.
    """
    if similarity not in SIMILARITIES:
        raise ValueError(f"unknown similarity {similarity!r}")
    device = pool_features.device
    p = pool_features.shape[0]
    m = query_positions.shape[0]
    k_eff = max(0, min(k, p - 1))
    k_out_eff = max(0, min(k_out, p - 1 - k_eff))
    empty = torch.zeros(0, dtype=torch.long, device=device)
    if m == 0 or k_eff == 0:
        return DVCLSelection(empty, empty.view(0, 0), torch.zeros(0, 0, device=device), empty.view(0, 0),
                             torch.zeros(m, dtype=torch.bool, device=device), torch.zeros(m, device=device))

    rows = torch.arange(m, device=device)
    # once, for the query rows and for NPS (for "dot" the rows are used as they are)
    unit = F.normalize(pool_features.float(), dim=1) if similarity == "cosine" else pool_features.float()
    sim = unit[query_positions] @ unit.T  # (M, P) similarities
    sim[rows, query_positions] = float("-inf")
    top = sim.topk(k_eff, dim=1)
    neighbours = top.indices
    scores = top.values.mean(dim=1)
    kept = query_denoising(scores, qds_std_factor) if qds else torch.ones(m, dtype=torch.bool, device=device)

    if k_out_eff == 0:
        outsiders = empty.view(1, 0).expand(m, 0)
    else:
        if outsider_mode == "farthest":
            key = -sim  # least similar first; self and neighbours pushed to the end below
        elif outsider_mode == "random":
            key = rand((m, p), device, generator)
        else:
            raise ValueError(f"unknown outsider_mode {outsider_mode!r}")
        key[rows, query_positions] = float("-inf")
        key.scatter_(1, neighbours, float("-inf"))
        outsiders = key.topk(k_out_eff, dim=1).indices

    affinity = nps_affinity(unit, query_positions[kept], neighbours[kept], k_eff, nps_mutual, nps_oneway,
                            normalized=True)
    return DVCLSelection(queries=query_positions[kept], neighbours=neighbours[kept], affinity=affinity,
                         outsiders=outsiders[kept], kept=kept, scores=scores)


def outsider_weight_at(weight: float, decay: float, iteration: int, max_iterations: int) -> float:
    """Weight of the dispersion sum at ``iteration``: ``weight * (1 + 10 t / T) ** -decay`` (AaD's alpha(t)).

    ``decay = 0`` keeps ``weight`` for the whole run (the supplementary's bound: weight 1, no decay).
    """
    t = min(max(iteration, 0), max(1, max_iterations)) / max(1, max_iterations)
    return float(weight) * (1.0 + 10.0 * t) ** (-float(decay))


def dvcl_loss_from_sets(query_probs: Tensor, neighbour_probs: Tensor, affinity: Tensor,
                        outsider_probs: Tensor, outsider_weight: float = 1.0) -> Tensor:
    """Mean over queries of ``-sum_n A_in p_i.p_n + w sum_k p_i.p_k`` (w = ``outsider_weight``, 1 in the paper).

    ``query_probs`` (M, C) carries the gradient; ``neighbour_probs`` (M, K, C) and ``outsider_probs``
    (M, K', C) are detached here. No query gives a graph-connected zero.
    """
    if query_probs.shape[0] == 0:
        return query_probs.sum() * 0.0
    weights = affinity.to(query_probs.dtype)
    attract = (torch.einsum("mc,mkc->mk", query_probs, neighbour_probs.detach()) * weights).sum(1)
    disperse = torch.einsum("mc,mkc->mk", query_probs, outsider_probs.detach()).sum(1)
    if outsider_weight != 1.0:
        disperse = disperse * outsider_weight
    return (disperse - attract).mean()


def dvcl_loss(pool_probs: Tensor, pool_features: Tensor, query_positions: Tensor, k: int = 10, k_out: int = 15,
              outsider_mode: str = "farthest", nps_mutual: float = 1.0, nps_oneway: float = 1.0, qds: bool = True,
              qds_std_factor: float = 1.0, generator: Optional[torch.Generator] = None,
              neighbour_space: str = "features", outsider_weight: float = 1.0) -> tuple:
    """L_dvcl for one model over a pool of unreliable voxels -> ``(loss, selection)``.

    Args:
        pool_probs: (P, C) softmax probabilities at the pool voxels; gradient flows through the query rows.
        pool_features: (P, D) features at the pool voxels, used only to pick neighbours (no gradient) when
            ``neighbour_space`` is "features"; may be None for "probabilities".
        query_positions: (M,) distinct positions of the queries in the pool.
        neighbour_space: "features" (cosine of ``pool_features``) or "probabilities" (p_m . p_n of the detached
            ``pool_probs``, the supplementary's O_mn).
        outsider_weight: w of the dispersion sum (:func:`outsider_weight_at`).
        The rest: see :func:`select_dvcl_sets`.
    """
    if neighbour_space == "features":
        if pool_features is None:
            raise ValueError("neighbour_space 'features' needs pool_features")
        rank_by, similarity = pool_features.detach(), "cosine"
    elif neighbour_space == "probabilities":
        rank_by, similarity = pool_probs.detach(), "dot"
    else:
        raise ValueError(f"unknown neighbour_space {neighbour_space!r}")
    selection = select_dvcl_sets(rank_by, query_positions, k, k_out, outsider_mode, nps_mutual,
                                 nps_oneway, qds, qds_std_factor, generator, similarity)
    if selection.queries.numel() == 0:
        return pool_probs.sum() * 0.0, selection
    detached = pool_probs.detach()
    loss = dvcl_loss_from_sets(pool_probs[selection.queries], detached[selection.neighbours], selection.affinity,
                               detached[selection.outsiders], outsider_weight)
    return loss, selection
