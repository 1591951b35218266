"""Synthetic pretraining corpus: seeded, reproducible generators of univariate series.

Three sources, all numpy, all deterministic given a seed:

* ``kernel_synth``: KernelSynth-style Gaussian-process samples. A kernel is a random
  sum/product of 1-5 kernels drawn from :data:`KERNEL_KINDS` (periodic at the common
  periods in :data:`PERIODS`, RBF, rational quadratic, linear, white noise, constant),
  sampled exactly by circulant embedding (FFT) rather than an O(n^3) Cholesky, so
  they are generated on the fly (~0.3 ms a series of 640) and no pool is cached.
* ``structural``: on-the-fly structural series, vectorised over a batch:
  ``level (random walk / trend / level shifts) + seasonality (1-2 periods, e.g.
  daily+weekly at 15-min or hourly resolution: 96+672, 24+168) x amplitude drift
  + AR(1) noise with heteroscedastic scale + sparse spikes``; sometimes multiplicative,
  sometimes clipped at zero (solar-like).
* ``tsmixup``: convex mixtures (Dirichlet weights) of 2-3 standardised series.

:func:`make_batch` draws a training batch for a step from ``(seed, step)`` alone, so
resuming at a step reproduces exactly the batches an uninterrupted run would see.
All outputs are float32 arrays of shape ``(batch, length)``.

Corpus versions (:data:`CORPORA`, ``PretrainConfig.corpus``): ``v1`` is the corpus
``nano`` was trained on and is kept bit for bit; ``v2`` widens it (more kernel kinds,
more periods drawn with weights that favour the 96-step day of 15-minute data, a
weekday/weekend modulation of daily profiles, more resolutions); see :class:`Corpus`.
"""
from __future__ import annotations


import numpy as np

#: Periods (in steps) used by the periodic kernels and the seasonal generator:
#: hourly (24 day, 168 week), 15-min (96 day, 672 week), 30-min (48), 10-min (144),
#: 5-min (288), daily (7 week, 30 month, 365 year), weekly (52), monthly (12),
#: minutely (60) and a few irregular ones.
PERIODS = (24, 168, 12, 7, 96, 672, 52, 48, 144, 288, 30, 60, 365, 4, 6, 14, 28, 36, 336)

#: Kernel kinds of the KernelSynth bank.
KERNEL_KINDS = ("periodic", "rbf", "rational_quadratic", "linear", "white", "constant")

#: Resolutions of the structural generator: (name, weight, seasonal periods).
RESOLUTIONS = (
    ("15min", 0.30, (96, 672)),
    ("hourly", 0.30, (24, 168)),
    ("30min", 0.08, (48, 336)),
    ("10min", 0.06, (144, 1008)),
    ("5min", 0.04, (288, 2016)),
    ("daily", 0.10, (7, 365)),
    ("weekly", 0.04, (52,)),
    ("monthly", 0.05, (12,)),
    ("minutely", 0.03, (60, 1440)),
)

SOURCES = ("kernel_synth", "structural", "tsmixup")

#: v2 periods and their draw weights (96, the day of 15-minute data, first): the
#: v1 periods plus 2-hourly/8-hour/4-hour harmonics of days (12, 8, 32, 48, 72),
#: 720 (hourly month), 1440 (minutely day), 120, 180, 91 (daily quarter), 10, 20, 16.
PERIODS_V2 = (96, 24, 168, 672, 48, 288, 12, 7, 144, 336, 52, 30, 60, 365, 32, 72, 8, 4, 6, 14,
              28, 36, 720, 1440, 120, 180, 91, 10, 20, 16)
_PERIOD_W_V2 = np.array([10, 8, 5, 4, 4, 3, 3, 3, 2, 2, 2, 1.5, 1.5, 1.5, 1.5, 1.5, 1, 1, 1,
                         1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], dtype=np.float64)

#: v2 kernel kinds: v1 plus Matern 1/2, 3/2, 5/2 (rough, OU-like to smooth), a
#: spectral-mixture component (damped cosine) and a locally periodic kernel
#: (periodic x RBF, a seasonality whose shape drifts).
KERNEL_KINDS_V2 = KERNEL_KINDS + ("matern12", "matern32", "matern52", "spectral", "local_periodic")
_KIND_P_V2 = np.array([0.30, 0.10, 0.07, 0.07, 0.07, 0.04, 0.06, 0.06, 0.06, 0.08, 0.09])

#: v2 resolutions: v1's plus 15-min with a daily period only (ETTm-like spans of a
#: few days), hourly with a 12-hour harmonic day, and 2-hourly; 15-min weighted most.
RESOLUTIONS_V2 = (
    ("15min", 0.26, (96, 672)),
    ("15min-day", 0.10, (96, 48)),
    ("hourly", 0.24, (24, 168)),
    ("hourly-12", 0.04, (24, 12)),
    ("30min", 0.07, (48, 336)),
    ("10min", 0.05, (144, 1008)),
    ("5min", 0.04, (288, 2016)),
    ("2hourly", 0.03, (12, 84)),
    ("daily", 0.08, (7, 365)),
    ("weekly", 0.03, (52,)),
    ("monthly", 0.04, (12,)),
    ("minutely", 0.02, (60, 1440)),
)


class Corpus:
    """A corpus version: the kernel bank, its periods and the structural resolutions.

    ``weekday`` is the probability that a structural series with a daily and a weekly
    period has its daily profile scaled per day by a weekday/weekend pattern.
    """

    def __init__(self, name, periods, period_p, kinds, kind_p, resolutions, weekday):
        self.name, self.periods, self.kinds, self.resolutions = name, periods, kinds, resolutions
        self.period_p = None if period_p is None else period_p / period_p.sum()
        self.kind_p, self.weekday = kind_p / kind_p.sum(), weekday

    def period(self, rng: np.random.Generator) -> int:
        if self.period_p is None:
            return int(rng.choice(self.periods))
        return int(self.periods[rng.choice(len(self.periods), p=self.period_p)])


def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """A numpy Generator determined by ``seed`` and integer ``keys`` (e.g. a step)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, keys)]))


# --------------------------------------------------------------------------- KernelSynth
# A composite kernel is kept in the closed form  K = sum_r diag(g_r) S_r diag(g_r)
# with S_r stationary (a product of lag functions) and g_r a vector: a stationary
# kernel is one term with g = 1, the linear kernel s0 + c u u^T is two terms (S = 1),
# a sum concatenates terms and a product multiplies every pair of terms (S1*S2, g1*g2).
# A GP sample is then exactly  sum_r g_r * f_r  with independent f_r ~ GP(S_r), and
# each f_r is drawn by circulant embedding (FFT, O(n log n)) instead of an O(n^3)
# Cholesky: ~0.2 ms per series of length 640 against ~16 ms (measured, 1 core).
class _Term:
    """One term ``diag(g) S diag(g)``: ``g`` (n,) or None, ``S`` = product of ``fns`` of the lag."""

    __slots__ = ("g", "fns", "periods")

    def __init__(self, g, fns, periods):
        self.g, self.fns, self.periods = g, fns, periods

    def lag_function(self, lag: np.ndarray) -> np.ndarray:
        s = np.ones(len(lag))
        for fn in self.fns:
            s = s * fn(lag)
        return s


def _base_terms(kind: str, n: int, rng: np.random.Generator, corpus: "Corpus | None" = None) -> list[_Term]:
    """Terms of one base kernel of ``kind`` (see :data:`KERNEL_KINDS`, :data:`KERNEL_KINDS_V2`)."""
    if kind == "periodic":
        p = int(rng.choice(PERIODS)) if corpus is None else corpus.period(rng)
        ell = rng.uniform(0.5, 2.0)
        return [_Term(None, [lambda lag: np.exp(-2.0 * np.sin(np.pi * lag / p) ** 2 / ell**2)], (p,))]
    if kind in ("matern12", "matern32", "matern52"):
        ell = np.exp(rng.uniform(np.log(2.0), np.log(n)))
        return [_Term(None, [_MATERN[kind](ell)], ())]
    if kind == "spectral":  # damped cosine: one component of a spectral-mixture kernel
        p = corpus.period(rng) if corpus is not None else int(rng.choice(PERIODS))
        ell = p * np.exp(rng.uniform(np.log(1.0), np.log(20.0)))
        return [_Term(None, [lambda lag: np.cos(2 * np.pi * lag / p) * np.exp(-0.5 * (lag / ell) ** 2)], (p,))]
    if kind == "local_periodic":  # a periodic shape that drifts over a few cycles
        p = corpus.period(rng) if corpus is not None else int(rng.choice(PERIODS))
        ell, ell2 = rng.uniform(0.5, 2.0), p * np.exp(rng.uniform(np.log(2.0), np.log(30.0)))
        return [_Term(None, [lambda lag: np.exp(-2.0 * np.sin(np.pi * lag / p) ** 2 / ell**2
                                                - 0.5 * (lag / ell2) ** 2)], (p,))]
    if kind == "rbf":
        ell = np.exp(rng.uniform(np.log(4.0), np.log(n)))
        return [_Term(None, [lambda lag: np.exp(-0.5 * (lag / ell) ** 2)], ())]
    if kind == "rational_quadratic":
        ell = np.exp(rng.uniform(np.log(4.0), np.log(n)))
        alpha = float(rng.choice((0.1, 0.5, 1.0, 5.0)))
        return [_Term(None, [lambda lag: (1.0 + lag**2 / (2.0 * alpha * ell**2)) ** (-alpha)], ())]
    if kind == "white":
        var = float(rng.choice((0.01, 0.05, 0.1, 0.3))) ** 2
        return [_Term(None, [lambda lag: (lag == 0) * var], ())]
    if kind == "constant":
        c = rng.uniform(0.1, 1.0)
        return [_Term(None, [lambda lag: np.full(len(lag), c)], ())]
    if kind == "linear":
        u = np.arange(n) / n - rng.uniform(0.0, 1.0)
        s0, c = rng.uniform(0.0, 0.5), rng.uniform(0.5, 4.0)
        return [_Term(None, [lambda lag: np.full(len(lag), s0)], ()), _Term(u * np.sqrt(c), [], ())]
    raise ValueError(f"unknown kernel kind {kind!r}")


def _matern(nu2: int):
    """Matern kernel of smoothness ``nu2 / 2`` (1, 3, 5) as a function of the length scale."""
    def make(ell):
        def fn(lag):
            r = np.abs(lag) / ell
            if nu2 == 1:
                return np.exp(-r)
            if nu2 == 3:
                return (1 + np.sqrt(3) * r) * np.exp(-np.sqrt(3) * r)
            return (1 + np.sqrt(5) * r + 5 * r**2 / 3) * np.exp(-np.sqrt(5) * r)
        return fn
    return make


_MATERN = {"matern12": _matern(1), "matern32": _matern(3), "matern52": _matern(5)}

#: Draw probabilities of the kernel kinds (periodic kernels are the most useful).
_KIND_P = np.array([0.45, 0.17, 0.12, 0.1, 0.1, 0.06])


def random_kernel_terms(n: int, rng: np.random.Generator,
                        corpus: "Corpus | None" = None) -> tuple[list[_Term], list[str]]:
    """A random composite kernel (1-5 base kernels joined by + or *) as terms, and its expression.

    The expression is a list such as ``['periodic', '*', 'rbf', '+', 'white']``, applied
    left to right. ``corpus`` None (or v1) draws from the v1 bank exactly as before.
    """
    j = int(rng.integers(1, 6))
    if corpus is None or corpus.name == "v1":
        corpus = None
        kinds = list(rng.choice(KERNEL_KINDS, size=j, p=_KIND_P))
    else:
        kinds = list(rng.choice(corpus.kinds, size=j, p=corpus.kind_p))
    if not any(k not in ("white", "constant") for k in kinds):
        kinds[0] = "periodic"
    terms = _base_terms(kinds[0], n, rng, corpus)
    names = [kinds[0]]
    for kind in kinds[1:]:
        op = "+" if rng.random() < 0.5 else "*"
        new = _base_terms(kind, n, rng, corpus)
        if op == "+":
            terms = terms + new
        else:
            terms = [_Term(_mul(a.g, b.g), a.fns + b.fns, a.periods + b.periods) for a in terms for b in new]
        names += [op, str(kind)]
    return terms, names


def _mul(g1, g2):
    if g1 is None:
        return g2
    return g1 if g2 is None else g1 * g2


def dense_kernel(terms: list[_Term], n: int) -> np.ndarray:
    """The (n, n) covariance matrix of kernel ``terms`` (for tests and checks)."""
    lag = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]).astype(np.float64)
    k = np.zeros((n, n))
    for term in terms:
        m = term.lag_function(lag.ravel()).reshape(n, n)
        if term.g is not None:
            m = term.g[:, None] * m * term.g[None, :]
        k += m
    return k


def _embedding_size(n: int, periods: tuple[int, ...]) -> int:
    """Circulant size: >= 4n, a multiple of the term's periods when that stays <= 16n.

    With the periods dividing the size the periodic factors are embedded exactly.
    """
    m = 1
    for p in periods:
        m = m * p // np.gcd(m, p)
    if m > 16 * n:
        m = 1
    return int(-(-4 * n // m) * m)


def _circulant_sample(term: _Term, n: int, rng: np.random.Generator) -> np.ndarray:
    """One sample (n,) of GP(S) for the stationary part of ``term``, by circulant embedding.

    Negative eigenvalues of the embedding are clipped to zero (rare with the sizes of
    :func:`_embedding_size`): the sample is then exact for the nearest embeddable
    covariance, which is all a training corpus needs.
    """
    m = _embedding_size(n, term.periods)
    lag = np.minimum(np.arange(m), m - np.arange(m)).astype(np.float64)  # circulant first row
    lam = np.clip(np.fft.rfft(term.lag_function(lag)).real, 0.0, None)
    z = rng.standard_normal(len(lam)) + 1j * rng.standard_normal(len(lam))
    z[0] = z[0].real * np.sqrt(2.0)
    if m % 2 == 0:
        z[-1] = z[-1].real * np.sqrt(2.0)
    f = np.fft.irfft(np.sqrt(lam) * z, m) * np.sqrt(m / 2.0)
    return f[:n]


def kernel_sample(n: int, rng: np.random.Generator, corpus: "Corpus | None" = None) -> np.ndarray:
    """One KernelSynth series (n,) float64 drawn with ``rng`` from ``corpus``'s bank (default v1)."""
    terms, _ = random_kernel_terms(n, rng, corpus)
    x = np.zeros(n)
    for term in terms:
        f = _circulant_sample(term, n, rng)
        x += f if term.g is None else term.g * f
    return x


def kernel_synth(n_series: int, length: int, seed: int, start: int = 0) -> np.ndarray:
    """``(n_series, length)`` float32 KernelSynth series.

    Row ``i`` is series number ``start + i`` and depends only on ``(seed, start + i)``.
    """
    out = np.empty((n_series, length), dtype=np.float32)
    for i in range(n_series):
        out[i] = kernel_sample(length, rng_for(seed, 1, start + i))
    return out


# --------------------------------------------------------------------------- structural
def _smooth_noise(rng: np.random.Generator, b: int, n: int, knots: int) -> np.ndarray:
    """(b, n) smooth random curves: linear interpolation of ``knots`` N(0,1) values."""
    xs = np.linspace(0, n - 1, knots)
    vals = rng.standard_normal((b, knots))
    idx = np.arange(n)
    return np.stack([np.interp(idx, xs, v) for v in vals])


def _seasonal_profile(rng: np.random.Generator, b: int, n: int, period: int) -> np.ndarray:
    """(b, n) zero-mean, unit-variance periodic curves of integer ``period`` with random shapes.

    Shapes: a random Fourier series with decaying harmonics (smooth), a sum of 1-3
    Gaussian bumps per period (load-like peaks), or a daylight bump (zero "at night").
    One period is computed and tiled.
    """
    frac = np.arange(period, dtype=np.float64)[None, :] / period  # (1, p) phase in cycles
    kind = rng.choice(3, size=b, p=[0.55, 0.3, 0.15])
    prof = np.empty((b, period))
    rows = np.flatnonzero(kind == 0)
    if rows.size:  # Fourier series
        kmax = int(max(1, min(period // 2, 8)))
        k = np.arange(1, kmax + 1)
        amp = rng.standard_normal((rows.size, kmax)) / k ** rng.uniform(0.5, 2.0, size=(rows.size, 1))
        ph = rng.uniform(0, 2 * np.pi, size=(rows.size, kmax, 1))
        prof[rows] = np.einsum("rk,rkp->rp", amp, np.cos(2 * np.pi * k[None, :, None] * frac[:, None, :] + ph))
    rows = np.flatnonzero(kind == 1)
    if rows.size:  # Gaussian bumps on the circle
        acc = np.zeros((rows.size, period))
        for _ in range(3):
            c = rng.uniform(0, 1, size=(rows.size, 1))
            w = rng.uniform(0.03, 0.2, size=(rows.size, 1))
            h = rng.uniform(-0.5, 1.0, size=(rows.size, 1)) * (rng.random((rows.size, 1)) < 0.8)
            dd = np.abs(frac - c)
            dd = np.minimum(dd, 1 - dd)
            acc += h * np.exp(-0.5 * (dd / w) ** 2)
        prof[rows] = acc
    rows = np.flatnonzero(kind == 2)
    if rows.size:  # daylight
        day = np.maximum(0.0, np.sin(2 * np.pi * (frac - rng.uniform(0.15, 0.35, size=(rows.size, 1)))))
        prof[rows] = day ** rng.uniform(0.8, 2.0, size=(rows.size, 1))
    out = prof[:, np.arange(n) % period]
    out = out - out.mean(1, keepdims=True)
    return out / (out.std(1, keepdims=True) + 1e-8)


def _ar1(rng: np.random.Generator, b: int, n: int, phi: np.ndarray) -> np.ndarray:
    """(b, n) AR(1) noise with per-row coefficient ``phi`` (b,), unit innovations."""
    e = rng.standard_normal((b, n))
    x = np.empty((b, n))
    x[:, 0] = e[:, 0] / np.sqrt(1 - phi**2 + 1e-6)
    for i in range(1, n):
        x[:, i] = phi * x[:, i - 1] + e[:, i]
    return x * np.sqrt(1 - phi[:, None] ** 2)


def _weekday_factor(rng: np.random.Generator, m: int, n: int, day: int) -> np.ndarray:
    """(m, n) per-day scale: 1 on five days of a 7-day week, 0.3-0.9 on the other two."""
    k = (np.arange(n)[None, :] + rng.integers(0, 7 * day, size=(m, 1))) // day % 7  # day of week
    low = rng.uniform(0.3, 0.9, size=(m, 1))
    return np.where(k >= 5, low, 1.0)


def structural(b: int, n: int, rng: np.random.Generator, corpus: "Corpus | None" = None) -> np.ndarray:
    """(b, n) float32 structural series: level + seasonality + noise (see module doc).

    ``corpus`` selects the resolutions (default v1, drawn exactly as before).
    """
    t = np.arange(n, dtype=np.float64)
    resolutions = RESOLUTIONS if corpus is None else corpus.resolutions
    weekday = 0.0 if corpus is None else corpus.weekday
    names = [r[0] for r in resolutions]
    weights = np.array([r[1] for r in resolutions])
    res = rng.choice(len(names), size=b, p=weights / weights.sum())
    y = np.zeros((b, n))
    # Seasonality: main period always (90%), second period sometimes.
    for r_idx, (_, _, periods) in enumerate(resolutions):
        rows = np.flatnonzero(res == r_idx)
        if rows.size == 0:
            continue
        m = rows.size
        s = _seasonal_profile(rng, m, n, periods[0])
        s *= rng.uniform(0.2, 2.0, size=(m, 1)) * (rng.random((m, 1)) < 0.92)
        # Amplitude drift (slow multiplicative modulation).
        drift = 1.0 + rng.uniform(0, 0.5, size=(m, 1)) * _smooth_noise(rng, m, n, int(rng.integers(2, 8)))
        s *= np.clip(drift, 0.1, None)
        if weekday and len(periods) > 1 and periods[1] == 7 * periods[0]:
            wk = rng.random((m, 1)) < weekday
            s = np.where(wk, (s - s.min(1, keepdims=True)) * _weekday_factor(rng, m, n, periods[0]), s)
        if len(periods) > 1:
            s2 = _seasonal_profile(rng, m, n, periods[1])
            s += s2 * rng.uniform(0.1, 1.0, size=(m, 1)) * (rng.random((m, 1)) < 0.5)
        y[rows] = s
    # Level: random walk, smooth wander, linear trend, level shifts.
    rw = np.cumsum(rng.standard_normal((b, n)), 1) / np.sqrt(n)
    level = rw * rng.uniform(0, 1.5, size=(b, 1)) * (rng.random((b, 1)) < 0.6)
    level += _smooth_noise(rng, b, n, int(rng.integers(2, 10))) * rng.uniform(0, 1.0, size=(b, 1))
    level += (t[None, :] / n) * rng.normal(0, 1.0, size=(b, 1)) * (rng.random((b, 1)) < 0.5)
    shifts = (rng.random((b, n)) < rng.uniform(0, 3.0 / n, size=(b, 1))) * rng.normal(0, 1.0, size=(b, n))
    level += np.cumsum(shifts, 1)
    # Noise: AR(1), heteroscedastic scale, sparse spikes.
    phi = rng.choice([0.0, 0.3, 0.6, 0.8, 0.9, 0.95], size=b)
    noise = _ar1(rng, b, n, phi)
    hetero = np.exp(0.5 * _smooth_noise(rng, b, n, 4) * rng.uniform(0, 1, size=(b, 1)))
    hetero *= 1.0 + rng.uniform(0, 1, size=(b, 1)) * (y - y.min(1, keepdims=True)) / (np.ptp(y, 1)[:, None] + 1e-8)
    noise *= hetero * np.exp(rng.uniform(np.log(0.02), np.log(1.0), size=(b, 1)))
    spikes = (rng.random((b, n)) < rng.uniform(0, 0.005, size=(b, 1))) * rng.standard_t(3, size=(b, n)) * 2
    mult = rng.random((b, 1)) < 0.2
    base = np.where(mult, level * 0.3, level + y)
    out = np.where(mult, np.exp(0.3 * level) * (1.0 + 0.5 * y / (np.abs(y).max(1, keepdims=True) + 1e-8)), base)
    out = out + noise + spikes
    clip = rng.random((b, 1)) < 0.07  # non-negative series (solar, counts)
    out = np.where(clip, np.maximum(out - np.quantile(out, 0.3, axis=1, keepdims=True), 0.0), out)
    return out.astype(np.float32)


# --------------------------------------------------------------------------- mixing
def standardize(x: np.ndarray) -> np.ndarray:
    """Row-wise z-score of (b, n); constant rows become zero."""
    mu = x.mean(1, keepdims=True)
    sd = x.std(1, keepdims=True)
    return (x - mu) / np.where(sd < 1e-8, 1.0, sd)


def tsmixup(parts: np.ndarray, rng: np.random.Generator, k_max: int = 3) -> np.ndarray:
    """Convex mixtures: row i mixes 1..k_max standardised rows of ``parts`` with Dirichlet weights.

    ``parts`` is (m, n); returns (m, n) float32.
    """
    m, _ = parts.shape
    z = standardize(parts.astype(np.float64))
    out = np.zeros_like(z)
    k = rng.integers(2, k_max + 1, size=m)
    for i in range(m):
        idx = rng.choice(m, size=k[i], replace=False)
        w = rng.dirichlet(np.full(k[i], 1.5))
        out[i] = w @ z[idx]
    return out.astype(np.float32)


V1 = Corpus("v1", PERIODS, None, KERNEL_KINDS, _KIND_P, RESOLUTIONS, 0.0)
V2 = Corpus("v2", PERIODS_V2, _PERIOD_W_V2, KERNEL_KINDS_V2, _KIND_P_V2, RESOLUTIONS_V2, 0.4)
#: Corpus versions by name (``PretrainConfig.corpus``); ``v1`` is nano's.
CORPORA = {"v1": V1, "v2": V2}


def make_batch(seed: int, step: int, batch_size: int, length: int,
               p_kernel: float = 0.3, p_mixup: float = 0.15, p_flip: float = 0.5,
               corpus: str = "v1") -> np.ndarray:
    """The training batch of ``step``: float32 (batch_size, length), a function of (seed, step) only.

    Each row is a KernelSynth series (prob. ``p_kernel``) or a :func:`structural` one;
    with prob. ``p_mixup`` a row is replaced by a TSMixup of rows of the batch; each
    row is standardised, then negated with prob. ``p_flip`` (sign-flip augmentation)
    and shifted by a random offset. ``corpus`` names a version of :data:`CORPORA`.
    """
    spec = None if corpus == "v1" else CORPORA[corpus]
    rng = rng_for(seed, 2, step)
    kern = rng.random(batch_size) < p_kernel
    x = np.empty((batch_size, length))
    for i in np.flatnonzero(kern):
        x[i] = kernel_sample(length, rng, spec)
    if (~kern).any():
        x[~kern] = structural(int((~kern).sum()), length, rng, spec)
    x = standardize(x)
    mix = rng.random(batch_size) < p_mixup
    if mix.sum() >= 2:
        x[mix] = tsmixup(x, rng)[mix]
    flip = rng.random(batch_size) < p_flip
    x[flip] = -x[flip]
    # Scale and offset are irrelevant to the instance-normalised model; a random
    # offset keeps the inputs from always being zero-mean.
    x += rng.normal(0, 1.0, size=(batch_size, 1))
    return x.astype(np.float32)
