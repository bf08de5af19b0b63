"""Certified brackets of W_2 between uniform point clouds and of the conditional OT distance
W_COT(mu, nu)^2 = (1/L) sum_l W_2^2(mu_l, nu_l) between two networks' particles. Pure tensor functions.

Exact assignment (scipy, O(M^3), dense M x M cost) is used up to EXACT_MAX_M points. Above, each layer's
bracket is refined in steps, cheapest first (`_refinements`):
  0. identity coupling (particles keep their labels) against the layer-mean bound: O(M k);
  1. the nearest-neighbour dual f_i = min_j c_ij, g = 0 (a k-d tree): it closes the bracket as soon as
     every particle's nearest neighbour is its own initial position, the typical state of training;
     a layer still wider than WIDE after it (clouds far from each other, e.g. independent draws) is
     solved exactly while M <= EXACT_FALLBACK_M, where the assignment is cheaper than the auction;
  2. the sliced bound (2 + budget orthonormal bases, sorts of M points);
  3. the epsilon-scaling auction (auction.py): one full O(M^2 k) scan, then one step per phase.
`cot_distance_bracket` advances the layers step by step (cheapest step, then widest layer, first) until
W_COT's relative width is <= `target`. So `budget` bounds the work of the expensive end: at most `budget`
auction phases (each shrinking the layer's width ~THETA-fold) and `budget` random sliced bases per layer;
`target` stops the refinement as soon as the bracket is tight enough (0: spend the whole budget).
Every end is rounded outward by an a-priori bound on the float64 error, so it holds for exact costs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch
from torch import Tensor

from .auction import U64, auction_phases, perm_cost

# scipy's assignment in R^33, one thread, particles after training / independent clouds: 0.03 / 0.17 s
# at M = 1024, 0.11 / 1.6 s at 2048, 0.7 / 12 s at 4096 (a dense 8 M^2-byte cost). Above 1024 the bracket
# is cheaper: ~0.1 s a layer at M = 16384 while particles moved less than their spacing
EXACT_MAX_M = 1024
# after the cheap steps, a layer's W_2 bracket wider than WIDE (relative) means clouds far apart, where the
# auction needs many phases (15-27 s a layer measured at M = 2048, against 1.6 s for the assignment): up to
# EXACT_FALLBACK_M the exact assignment is the cheaper certificate
WIDE, EXACT_FALLBACK_M = 0.1, 4096
DEFAULT_BUDGET = 6  # auction phases (and random bases for the sliced bound) per layer
DEFAULT_BLOCK = 2 ** 22  # cost-matrix entries held at once: 32 MB of float64
NEAREST_CHUNKS = 16  # the nearest-neighbour dual queries the particles in chunks, least moved first


@dataclass
class W2Bracket:
    """lower2 <= W_2^2(mu, nu) <= upper2 for uniform clouds a, b: (M, k). upper2 is the cost of the
    coupling a_i -> b_perm[i], perm: (M,). Once a dual step ran, f, g: (M,) are a feasible dual pair,
    f_i + g_j <= |a_i - b_j|^2, with mean(f) + mean(g) <= lower2 (equal unless another bound won)."""
    lower2: float
    upper2: float
    exact: bool
    perm: Tensor
    f: Optional[Tensor] = None
    g: Optional[Tensor] = None


@dataclass
class CotBracket:
    """lower <= W_COT(mu, nu) <= upper (not squared); exact is set when every layer was solved exactly."""
    lower: float
    upper: float
    exact: Optional[float]
    relative_width: float
    method: str
    layers: List[W2Bracket]


def exact_w2(a: Tensor, b: Tensor) -> W2Bracket:
    """Exact W_2^2 by scipy's assignment on the dense (M, M) cost."""
    from scipy.optimize import linear_sum_assignment  # imported here: jobs without distances never pay

    C = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
    perm = torch.from_numpy(linear_sum_assignment(C.numpy())[1])
    w = perm_cost(a, b, perm)
    return W2Bracket(w, w, True, perm)


def _sorted_w2(x: Tensor, y: Tensor) -> float:
    """sum over columns of the exact 1-D W_2^2 between the columns of x, y: (M, n)."""
    return (x.sort(0).values - y.sort(0).values).pow(2).mean(0).sum().item()


def sliced_lower2(a: Tensor, b: Tensor, n_random: int = DEFAULT_BUDGET, seed: int = 0) -> float:
    """max over orthonormal bases E of sum_e W_2^2(e#mu, e#nu) <= W_2^2(mu, nu), since under any coupling
    |x - y|^2 = sum_e <e, x - y>^2. Bases: the axes, the principal axes of the pooled cloud, and n_random
    seeded rotations (a prefix of one sequence, so more is never worse). In 1-D this is exact."""
    k = a.shape[1]
    pooled = torch.cat([a, b]) - torch.cat([a, b]).mean(0)
    bases = [torch.eye(k, dtype=a.dtype), torch.linalg.eigh(pooled.T @ pooled).eigenvectors]
    for t in range(n_random):
        z = np.random.default_rng([seed, t]).standard_normal((k, k))
        bases.append(torch.linalg.qr(torch.from_numpy(z).to(a.dtype)).Q)
    # E is orthonormal to ~k u and the sums lose ~log2(M) u; each projected coordinate is off by
    # <= 2k u |x| and sorting is 1-Lipschitz, so the root moves by <= 2k u max|x| per direction
    s = math.sqrt(max(_sorted_w2(a @ E, b @ E) for E in bases) / (1 + 8 * (k + math.log2(len(a))) * U64))
    radius = max(a.norm(dim=1).max().item(), b.norm(dim=1).max().item())
    return max(s - 4 * k ** 1.5 * U64 * radius, 0.0) ** 2


def mean_lower2(a: Tensor, b: Tensor) -> float:
    """|mean a - mean b|^2 <= W_2^2 (Jensen), rounded down: each mean coordinate is off by
    <= (log2 M + 1) u max|x|, the norm by k u."""
    M, k = a.shape
    s = (a.mean(0) - b.mean(0)).norm().item()
    radius = max(a.abs().max().item(), b.abs().max().item())
    return max(s * (1 - (k + 2) * U64) - 2 * math.sqrt(k) * (math.log2(M) + 2) * U64 * radius, 0.0) ** 2


def nearest_dual(a: Tensor, b: Tensor) -> Tensor:
    """f: (M,) with f_i <= min_j |a_i - b_j|^2: with g = 0 a feasible dual pair, worth mean(f) <= W_2^2 as
    computed (the mean's rounding is in f), and worth the identity coupling when each a_i's nearest b_j is
    b_i. Exact nearest neighbours from a k-d tree of b, least moved particles first: fast while particles
    moved less than their spacing (0.1 s at M = 16384 in R^33 after training), towards M^2 k work when not,
    so the search stops after the first chunk where most nearest neighbours are not the particle's own
    (f = 0 from there: still feasible)."""
    from scipy.spatial import cKDTree

    M, k = a.shape
    A, B = a.numpy(), b.numpy()
    moved = (a - b).norm(dim=1).numpy()
    tree = cKDTree(B)
    f = np.zeros(M)
    for rows in np.array_split(np.argsort(moved, kind="stable"), min(NEAREST_CHUNKS, M)):
        dist, j = tree.query(A[rows], k=1, workers=torch.get_num_threads())
        f[rows] = dist ** 2
        if 2 * int((j != rows).sum()) > len(rows):
            break
    # squared distances from differences are off by (k + 2) u relative, and mean(f) by log2(M) u; the
    # k-d tree's pruning and the caller's centring by a few k u (|a| + |b|)^2 absolute
    scale = (a.norm(dim=1).max() + b.norm(dim=1).max()).item() ** 2
    shrink = 1 - (2 * k + math.log2(M) + 12) * U64
    return torch.from_numpy(np.maximum(f * shrink - 4 * (k + 4) * U64 * scale, 0.0))


def _tighter(br: W2Bracket, lower2: float = -math.inf, upper2: float = math.inf, perm: Optional[Tensor] = None,
             f: Optional[Tensor] = None, g: Optional[Tensor] = None) -> W2Bracket:
    """br with the better of its ends and the new ones, and the dual pair that certifies more."""
    dual = (lambda f, g: (f.mean() + g.mean()).item())
    keep = f is None or (br.f is not None and dual(br.f, br.g) >= dual(f, g))
    return W2Bracket(max(br.lower2, lower2), min(br.upper2, upper2), False,
                     perm if upper2 < br.upper2 else br.perm, *((br.f, br.g) if keep else (f, g)))


def _refinements(a: Tensor, b: Tensor, budget: int, block: int, seed: int,
                 exact_fallback_m: int = EXACT_FALLBACK_M) -> Iterator[W2Bracket]:
    """Ever tighter certified brackets of W_2^2 between the centred clouds a, b: (M, k), one per step of
    the module doc; it ends early once the identity coupling is certified optimal up to rounding."""
    M, k = a.shape
    labels = torch.arange(M)
    br = W2Bracket(mean_lower2(a, b), perm_cost(a, b, labels) * (1 + (k + math.log2(M) + 4) * U64), False, labels)
    yield br
    f = nearest_dual(a, b)
    br = _tighter(br, f.mean().item(), f=f, g=torch.zeros_like(f))
    yield br
    if M <= exact_fallback_m and math.sqrt(max(br.lower2, 0.0)) < (1 - WIDE) * math.sqrt(br.upper2):
        yield exact_w2(a, b)
        return
    scale = (a.norm(dim=1).max() + b.norm(dim=1).max()).item() ** 2
    if br.upper2 - br.lower2 <= 8 * (k + math.log2(M) + 8) * U64 * (br.upper2 + scale):
        return
    br = _tighter(br, sliced_lower2(a, b, budget, seed))
    yield br
    for lower2, upper2, perm, f, g in auction_phases(a, b, budget, block):
        br = _tighter(br, lower2, upper2, perm, f, g)
        yield br


def _ends(layers: List[W2Bracket]) -> tuple:
    """(lower, upper) of W_COT from the layers' squared ends, rounded outward (mean and root)."""
    lower2, upper2 = (sum(getattr(x, e) for x in layers) / len(layers) for e in ("lower2", "upper2"))
    r = (math.log2(len(layers)) + 4) * U64
    return math.sqrt(max(lower2, 0.0)) * (1 - r), math.sqrt(upper2) * (1 + r)


def _refine(steps: List[Iterator[W2Bracket]], target: float) -> List[W2Bracket]:
    """Advance the layers' refinements, the cheapest step first and among equals the widest layer, until
    W_COT's relative width is <= target or no layer has a step left."""
    layers = [next(s) for s in steps]
    taken = [0] * len(steps)
    live = {l for l, br in enumerate(layers) if br.upper2 > br.lower2}
    while live:
        lower, upper = _ends(layers)
        if upper - lower <= target * upper:
            break
        l = min(live, key=lambda l: (taken[l], layers[l].lower2 - layers[l].upper2))
        br = next(steps[l], None)
        if br is not None:
            layers[l], taken[l] = br, taken[l] + 1
        if br is None or br.upper2 <= br.lower2:
            live.discard(l)
    return layers


def _centre_(a: Tensor, b: Tensor) -> None:
    """Move a, b: (..., M, k) by their pooled mean, in place: the cost is translation invariant, and
    centring shrinks the GEMM error."""
    centre = (a.sum(-2, keepdim=True) + b.sum(-2, keepdim=True)) / (2 * a.shape[-2])
    a -= centre
    b -= centre


def w2_bracket(a: Tensor, b: Tensor, budget: int = DEFAULT_BUDGET, block: int = DEFAULT_BLOCK,
               seed: int = 0, exact_max_m: int = EXACT_MAX_M, target: float = 0.0,
               exact_fallback_m: int = EXACT_FALLBACK_M) -> W2Bracket:
    """Certified bracket of W_2^2 between the uniform clouds a, b: (M, k). Exact when M <= exact_max_m;
    otherwise the steps of the module doc until the relative width of W_2 is <= target: at most `budget`
    auction phases, each ending with width ~ epsilon, epsilon shrinking by THETA per phase, holding at
    most `block` cost entries at once; `seed` picks the sliced bound's rotations. A larger budget never
    widens the bracket (same seed); a phase that gives up (price wars between near-identical points)
    ends the auction early, the bracket still certified."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    if a.shape[0] <= max(exact_max_m, 1):
        return exact_w2(a, b)
    a, b = a.clone(), b.clone()
    _centre_(a, b)
    return _refine([_refinements(a, b, budget, block, seed, exact_fallback_m)], target)[0]


def cot_distance_bracket(p: Dict[str, Tensor], q: Dict[str, Tensor], exact_max_m: int = EXACT_MAX_M,
                         budget: int = DEFAULT_BUDGET, block: int = DEFAULT_BLOCK, seed: int = 0,
                         target: float = 0.0, exact_fallback_m: int = EXACT_FALLBACK_M) -> CotBracket:
    """Certified bracket of W_COT between particle sets {u: (L, M, d), w: (L, M, d), b: (L, M)}: the
    per-layer squared bounds averaged over layers, then square-rooted; refined (module doc) until its
    relative width is <= target, exact when M <= exact_max_m."""
    a, b = (torch.cat([x["u"], x["w"], x["b"][..., None]], -1).detach().double().cpu() for x in (p, q))
    if a.shape[1] <= max(exact_max_m, 1):
        layers = [exact_w2(a[l], b[l]) for l in range(a.shape[0])]
        exact = math.sqrt(sum(x.upper2 for x in layers) / len(layers))
        return CotBracket(exact, exact, exact, 0.0, "exact", layers)
    _centre_(a, b)  # a, b are this function's own copies (torch.cat)
    layers = _refine([_refinements(a[l], b[l], budget, block, seed, exact_fallback_m) for l in range(a.shape[0])],
                     target)
    if all(x.exact for x in layers):  # every layer far from the identity: solved exactly
        exact = math.sqrt(sum(x.upper2 for x in layers) / len(layers))
        return CotBracket(exact, exact, exact, 0.0, "exact", layers)
    lower, upper = _ends(layers)
    return CotBracket(lower, upper, None, (upper - lower) / upper if upper > 0 else 0.0, "bracket", layers)
