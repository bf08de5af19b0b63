"""The epsilon-scaling auction (Bertsekas) between uniform clouds, over row blocks of the cost, giving
both ends of W_2^2 at once. Pure tensor functions; transport.py schedules it.

- upper: the cost of the permutation it ends with (any coupling costs at least W_2^2);
- lower: the pair (f, g) = (c-transform of g, -prices) is feasible, f_i + g_j <= c_ij, so
  mean(f) + mean(g) <= W_2^2, and epsilon-complementary slackness makes upper - lower ~ epsilon
  (<= epsilon where no person's shortlist, below, is stale).
Each phase divides epsilon by at least THETA, so each unit of budget (a phase) buys a factor THETA.
A phase costs at most PHASE_BIDS bids per person (each a shortlist look-up) plus the full-row rescans of
stale shortlists; the shortlists themselves cost one O(M^2 k) scan.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import Tensor

U64 = 2.0 ** -53  # unit roundoff of float64
THETA = 4.0  # epsilon shrink factor between phases
PHASE_BIDS = 32  # bids per person after which a phase gives up: 1-10 in R^33, up to ~70 in R^2
SHORTLIST = 32  # cheapest objects remembered per person; a bid rescans the full row only when stale


def perm_cost(a: Tensor, b: Tensor, perm: Tensor) -> float:
    """mean_i |a_i - b_perm[i]|^2 for a, b: (M, k), from differences (no cancellation)."""
    return (a - b[perm]).pow(2).sum(1).mean().item()


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


def auction_phases(a: Tensor, b: Tensor, budget: int, block: int) -> Iterator[tuple]:
    """The auction's best (lower2, upper2, perm, f, g) so far, once before the first epsilon phase (the
    full scan that builds the shortlists: O(M^2 k)) and after each of up to `budget` phases; it stops
    early when nothing is left above rounding or a phase gives up."""
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
        yield lower2, upper2, perm, f, g
        if not complete or t == budget or upper2 - lower2 <= 2 * slack:  # nothing left above rounding
            return
        # the floor keeps p + eps > p in float64 (prices stay within a few cost scales)
        eps = max(min(eps, upper2 - lower2) / THETA, 1e-12 * scale)
        complete = auc.phase(eps, w)
