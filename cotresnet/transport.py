"""Certified brackets of W_2 between uniform point clouds and of the conditional OT distance
W_COT(mu, nu)^2 = (1/L) sum_l W_2^2(mu_l, nu_l) between two networks' particles. Pure tensor functions.

Exact assignment (scipy, O(M^3), dense M x M cost) is used up to EXACT_MAX_M points. Above, an
epsilon-scaling auction (Bertsekas) over row blocks of the cost gives both ends at once:
- upper: the cost of the permutation it ends with (any coupling costs at least W_2^2);
- lower: the pair (f, g) = (c-transform of g, -prices) is feasible, f_i + g_j <= c_ij, so
  mean(f) + mean(g) <= W_2^2, and epsilon-complementary slackness makes upper - lower ~ epsilon
  (<= epsilon where no person's shortlist, below, is stale).
Each phase divides epsilon by at least THETA, so each unit of budget (a phase) buys a factor THETA.
Cheap extra ends: the identity coupling (particles keep their labels) and sliced 1-D bounds.
Every end is rounded outward by an a-priori bound on the float64 error, so it holds for exact costs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

U64 = 2.0 ** -53  # unit roundoff of float64
# scipy's assignment in R^33, one thread: <= 0.12 s at M = 1024, 0.2-0.8 s at 2048, 1.1-4.7 s at 4096
# (where the auction takes 2-3 s), on a dense 8 M^2-byte cost matrix
EXACT_MAX_M = 2048
DEFAULT_BUDGET = 6  # auction phases (and random bases for the sliced bound)
DEFAULT_BLOCK = 2 ** 22  # cost-matrix entries held at once: 32 MB of float64
THETA = 4.0  # epsilon shrink factor between phases
PHASE_BIDS = 32  # bids per person after which a phase gives up: 1-10 in R^33, up to ~70 in R^2
SHORTLIST = 32  # cheapest objects remembered per person; a bid rescans the full row only when stale


@dataclass
class W2Bracket:
    """lower2 <= W_2^2(mu, nu) <= upper2 for uniform clouds a, b: (M, k). upper2 is the cost of the
    coupling a_i -> b_perm[i], perm: (M,). On the auction path f, g: (M,) are a feasible dual pair,
    f_i + g_j <= |a_i - b_j|^2, with mean(f) + mean(g) <= lower2 (equal unless the sliced bound won)."""
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


def perm_cost(a: Tensor, b: Tensor, perm: Tensor) -> float:
    """mean_i |a_i - b_perm[i]|^2 for a, b: (M, k), from differences (no cancellation)."""
    return (a - b[perm]).pow(2).sum(1).mean().item()


def exact_w2(a: Tensor, b: Tensor) -> W2Bracket:
    """Exact W_2^2 by scipy's assignment on the dense (M, M) cost."""
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


class _Auction:
    """Jacobi auction: persons a_i bid for objects b_j at price p_j, each wanting min_j c_ij + p_j.
    Prices only rise, so an object off a person's shortlist never becomes cheaper than the value tau_i
    that followed the shortlist at its scan: min(shortlist minimum, tau_i) <= min_j c_ij + p_j exactly."""

    def __init__(self, a: Tensor, b: Tensor, block: int):
        self.a, self.b, self.block, M = a, b, block, a.shape[0]
        self.nb = b.pow(2).sum(1)
        self.p = torch.zeros(M, dtype=a.dtype)
        self.assign, self.owner = torch.arange(M), torch.arange(M)  # start from the labels' coupling
        self.n = min(SHORTLIST, M)  # M >= 2 here, so there is always a second-best
        self.short = torch.empty(M, self.n, dtype=torch.long)
        self.tau = torch.full((M,), math.inf, dtype=a.dtype)
        self.rescan(torch.arange(M))

    def rescan(self, rows: Tensor) -> None:
        """Refresh the shortlists of `rows` with full-row scans (GEMMs over row blocks)."""
        for r in rows.split(max(1, self.block // self.a.shape[0])):
            x = self.a[r]
            V = torch.addmm(self.nb + self.p, x, self.b.T, alpha=-2).add_(x.pow(2).sum(1, keepdim=True))
            v, j = V.topk(min(self.n + 1, V.shape[1]), 1, largest=False)
            self.short[r] = j[:, : self.n]
            if v.shape[1] > self.n:
                self.tau[r] = v[:, self.n]

    def values(self, rows: Tensor, objs: Tensor) -> Tensor:
        """c_ij + p_j for persons rows: (r,) and objects objs: (r, n), from differences: (r, n)."""
        step = max(1, self.block // (objs.shape[1] * self.a.shape[1]))
        return torch.cat([(self.a[r, None] - self.b[j]).pow_(2).sum(-1) + self.p[j]
                          for r, j in zip(rows.split(step), objs.split(step))])

    def cmin(self) -> Tensor:
        """A lower estimate of min_j c_ij + p_j for every person: (M,); exact unless the shortlist is
        stale (rescanning those costs more than it gains: the next phase tightens anyway)."""
        everyone = torch.arange(self.a.shape[0])
        w = self.values(everyone, self.short).min(1).values
        return torch.minimum(w, self.tau)

    def phase(self, eps: float, w: Tensor) -> bool:
        """Drop the objects of persons violating eps-slackness (w = cmin()), then bid until all hold one
        (True) or PHASE_BIDS bids per person were spent (False: price wars between near-identical points)."""
        everyone = torch.arange(self.a.shape[0])
        bids = 0
        drop = everyone[self.values(everyone, self.assign[:, None])[:, 0] > w + eps]
        self.owner[self.assign[drop]], self.assign[drop] = -1, -1
        U = drop
        while len(U):
            bids += len(U)
            if bids > PHASE_BIDS * len(everyone):
                return False
            v = self.values(U, self.short[U])
            stale = v.min(1).values > self.tau[U]
            if stale.any():
                self.rescan(U[stale])
                v[stale] = self.values(U[stale], self.short[U[stale]])
            v2, k2 = v.topk(2, 1, largest=False)
            j = self.short[U].gather(1, k2[:, :1])[:, 0]
            second = torch.minimum(v2[:, 1], self.tau[U])
            # bidding up to second-best + eps keeps eps-slackness (a low second-best estimate only bids
            # less); the clamp keeps prices rising when rounding puts the best above tau
            bid = self.p[j] + (second - v2[:, 0]).clamp(min=0) + eps
            # the highest bid per object wins: sort by bid, then stably by object, take each run's head
            order = bid.argsort(descending=True)
            order = order[j[order].argsort(stable=True)]
            head = torch.ones(len(order), dtype=torch.bool)
            head[1:] = j[order[1:]] != j[order[:-1]]
            win = order[head]
            objs, winners = j[win], U[win]
            losers = self.owner[objs]
            self.assign[losers[losers >= 0]] = -1
            self.owner[objs], self.assign[winners], self.p[objs] = winners, objs, bid[win]
            lost = torch.ones(len(U), dtype=torch.bool)
            lost[win] = False
            U = torch.cat([U[lost], losers[losers >= 0]])
        return True


def _auction_bracket(a: Tensor, b: Tensor, budget: int, block: int) -> tuple:
    """(lower2, upper2, perm, f, g) after up to `budget` epsilon phases of the auction."""
    M, k = a.shape
    scale = (a.norm(dim=1).max() + b.norm(dim=1).max()).item() ** 2
    up_round = 1 + (k + math.log2(M) + 4) * U64
    auc = _Auction(a, b, block)
    perm, upper2 = torch.arange(M), perm_cost(a, b, torch.arange(M)) * up_round
    lower2, f, g, eps, complete = -math.inf, None, None, math.inf, True
    for t in range(budget + 1):
        w = auc.cmin()
        # a-priori float64 error of the GEMM costs, the value sums and the means, all relative to scale
        slack = 4 * (k + math.log2(M) + 8) * U64 * (scale + auc.p.abs().max().item())
        f_t, g_t = w - slack, -auc.p
        dual = (f_t.mean() + g_t.mean()).item()
        if dual > lower2:
            lower2, f, g = dual, f_t, g_t.clone()
        cost = perm_cost(a, b, auc.assign) * up_round if complete else math.inf
        if cost < upper2:
            perm, upper2 = auc.assign.clone(), cost
        if not complete or t == budget or upper2 - lower2 <= 2 * slack:  # nothing left above rounding
            break
        # the floor keeps p + eps > p in float64 (prices stay within a few cost scales)
        eps = max(min(eps, upper2 - lower2) / THETA, 1e-12 * scale)
        complete = auc.phase(eps, w)
    return lower2, upper2, perm, f, g


def w2_bracket(a: Tensor, b: Tensor, budget: int = DEFAULT_BUDGET, block: int = DEFAULT_BLOCK,
               seed: int = 0, exact_max_m: int = EXACT_MAX_M) -> W2Bracket:
    """Certified bracket of W_2^2 between the uniform clouds a, b: (M, k). Exact when M <= exact_max_m;
    otherwise `budget` auction phases, each ending with width ~ epsilon, epsilon shrinking by THETA
    per phase, holding at most `block` cost entries at once; `seed` picks the sliced bound's rotations.
    A larger budget never widens the bracket (same seed); a phase that gives up (price wars between
    near-identical points) ends the auction early, the bracket still certified."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    M, k = a.shape
    if M <= max(exact_max_m, 1):
        return exact_w2(a, b)
    centre = torch.cat([a, b]).mean(0)  # translation-invariant cost; centring shrinks the GEMM error
    a, b = a - centre, b - centre
    lower2, upper2, perm, f, g = _auction_bracket(a, b, budget, block)
    lower2 = max(lower2, sliced_lower2(a, b, budget, seed), 0.0)
    return W2Bracket(lower2, upper2, False, perm, f, g)


def cot_distance_bracket(p: Dict[str, Tensor], q: Dict[str, Tensor], exact_max_m: int = EXACT_MAX_M,
                         budget: int = DEFAULT_BUDGET, block: int = DEFAULT_BLOCK,
                         seed: int = 0) -> CotBracket:
    """Certified bracket of W_COT between particle sets {u: (L, M, d), w: (L, M, d), b: (L, M)}: the
    per-layer squared bounds averaged over layers, then square-rooted."""
    a, b = (torch.cat([x["u"], x["w"], x["b"][..., None]], -1).detach().double().cpu() for x in (p, q))
    layers = [w2_bracket(a[l], b[l], budget, block, seed, exact_max_m) for l in range(a.shape[0])]
    lower = math.sqrt(sum(x.lower2 for x in layers) / len(layers))
    upper = math.sqrt(sum(x.upper2 for x in layers) / len(layers))
    exact = all(x.exact for x in layers)
    return CotBracket(lower, upper, upper if exact else None, (upper - lower) / upper if upper > 0 else 0.0,
                      "exact" if exact else "auction", layers)
