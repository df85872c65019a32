#!/usr/bin/env python3
"""Independent reference for the known-answer values in rdp_accountant_test.cc.

Computes A_alpha of the Poisson-subsampled Gaussian mechanism by direct
numerical integration in multi-precision arithmetic (mpmath), with no series,
no log-space tricks and no code shared with privacy/rdp_accountant.cc:

  A_alpha = E_{z ~ N(0, sigma^2)} [((1 - q) + q exp((2z - 1) / (2 sigma^2)))^alpha]

then RDP = steps * log(A_alpha) / (alpha - 1), minimised over an order grid
with either conversion. Run with Debian's interpreter (mpmath ships with
python3-sympy): /usr/bin/python3 tests/privacy/reference_rdp.py
Takes a few minutes; pass part of a case name to run only that case
(e.g. `Test0`, `MNIST`, `hetero`).
"""
import math

import mpmath as mp

mp.mp.dps = 40


def log_a(q, sigma, alpha):
    q, sigma, alpha = mp.mpf(q), mp.mpf(sigma), mp.mpf(alpha)
    if q == 1:
        return alpha * (alpha - 1) / (2 * sigma**2)

    def integrand(z):
        ratio = (1 - q) + q * mp.exp((2 * z - 1) / (2 * sigma**2))
        return mp.npdf(z, 0, sigma) * ratio**alpha

    # The integrand's mass sits near 0 and, for large alpha, far to the
    # right; splitting the line at several scales keeps quad accurate.
    points = [-mp.inf, -10 * sigma, 0, 0.5, 10 * sigma, 40 * sigma,
              alpha * 2, mp.inf]
    points = sorted(set(points), key=lambda p: float(p))
    try:
        return mp.log(mp.quad(integrand, points, maxdegree=10))
    except ZeroDivisionError:
        # tanh-sinh's error estimate divides by zero when successive levels
        # agree exactly (nearly constant integrand, tiny q); Gauss-Legendre
        # has no such step.
        return mp.log(mp.quad(integrand, points, method="gauss-legendre"))


def epsilon(orders, per_step, steps, delta, conversion):
    best = (math.inf, None)
    for a in orders:
        rdp = steps * per_step[a]
        a_mp = mp.mpf(a)
        if conversion == "balle2020":
            eps = rdp + mp.log1p(-1 / a_mp) - (mp.log(delta) + mp.log(a_mp)) / (a_mp - 1)
        else:
            eps = rdp - mp.log(delta) / (a_mp - 1)
        if eps < best[0]:
            best = (eps, a)
    return float(best[0]), best[1]


def phases_epsilon(orders, phases, delta, conversion):
    per_order = {a: 0 for a in orders}
    for q, sigma, steps in phases:
        for a in orders:
            per_order[a] += steps * log_a(q, sigma, a) / (mp.mpf(a) - 1)
    return epsilon(orders, per_order, 1, delta, conversion)


def single(orders, q, sigma, steps, delta, conversion):
    return phases_epsilon(orders, [(q, sigma, steps)], delta, conversion)


TF_GRID = [1.25, 1.5, 1.75, 2., 2.25, 2.5, 3., 3.5, 4., 4.5] + \
    list(range(5, 64)) + [128, 256, 512]
TF_TUTORIAL_GRID = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
OPACUS_GRID = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
COHORT_GRID = OPACUS_GRID + [128, 256, 512, 1024]

CASES = [
    ("TF compute_dp_sgd_privacy Test0", TF_GRID, 150 / 60000, 1.3, 6000, 1e-5, "balle2020"),
    ("TF compute_dp_sgd_privacy Test1", TF_GRID, 100 / 100000, 1.0, 30000, 1e-7, "balle2020"),
    ("MNIST sigma 1.1 (TF grid, ceil steps)", TF_GRID, 256 / 60000, 1.1, 14063, 1e-5, "balle2020"),
    ("MNIST sigma 1.1 (Opacus grid)", OPACUS_GRID, 256 / 60000, 1.1, 14063, 1e-5, "balle2020"),
    ("MNIST sigma 1.1 (Cohort grid)", COHORT_GRID, 256 / 60000, 1.1, 14063, 1e-5, "balle2020"),
    ("MNIST sigma 1.1 classic (Cohort grid)", COHORT_GRID, 256 / 60000, 1.1, 14063, 1e-5, "mironov2017"),
    ("MNIST sigma 1.12 classic (TF tutorial)", TF_TUTORIAL_GRID, 256 / 60000, 1.12, 14062, 1e-5, "mironov2017"),
    ("Opacus README sigma 1.1 sr 0.004 classic", OPACUS_GRID, 0.004, 1.1, 15000, 1e-5, "mironov2017"),
    ("TF issue 97 classic", TF_GRID, 250 / 15000, 1.3, 900, 1e-5, "mironov2017"),
    ("q=0.01 sigma=1 steps=1000", COHORT_GRID, 0.01, 1.0, 1000, 1e-5, "balle2020"),
    ("q=0.01 sigma=2 steps=10000", COHORT_GRID, 0.01, 2.0, 10000, 1e-5, "balle2020"),
]

if __name__ == "__main__":
    import sys
    selected = sys.argv[1:]
    for name, grid, q, sigma, steps, delta, conv in CASES:
        if selected and not any(s in name for s in selected):
            continue
        eps, order = single(grid, q, sigma, steps, delta, conv)
        print(f"{name}: epsilon={eps!r} order={order}", flush=True)
    if not selected or "hetero" in selected:
        eps, order = phases_epsilon(list(range(2, 33)),
                                    [(1e-5, 1.0, 10), (1e-4, 3.0, 4)], 1e-5,
                                    "balle2020")
        print(f"Opacus docstring heterogeneous: epsilon={eps!r} order={order}")
