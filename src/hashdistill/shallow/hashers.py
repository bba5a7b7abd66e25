"""Shallow (non-deep) hashers with scikit-learn's estimator shape (docs/algorithms/shallow.md).

``ITQ(n_bits=64, random_state=0).fit(X[, y]).encode(X)`` -> ±1 ``int8`` of shape (N, n_bits).
``transform(X)`` gives the real-valued projections whose sign is the code. Parameters live in
``__init__``; learned state carries a trailing underscore. Deterministic for a ``random_state``.

Unsupervised: LSH (Charikar 2002, random hyperplanes), PCAH (PCA + sign), PCA-RR (PCA, a random
rotation, sign), SH (Weiss et al. 2008,
spectral hashing), ITQ (Gong & Lazebnik 2011). Supervised: SDH (Shen et al. 2015), KSH (Liu et al.
2012) - the non-deep rows of the DHD paper's Table 2. Labels ``y`` may be a class vector or a
multi-hot matrix (pairs sharing a label are similar).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from ..codes import binarize
from ..errors import HasherError
from ..labels import shares_label

__all__ = ["ITQ", "KSH", "LSH", "PCAH", "PCARR", "SDH", "SH", "SHALLOW_METHODS", "NotFittedError", "create_hasher"]


def _scipy_linalg() -> Any:
    """scipy.linalg, imported when a hasher is fitted (the CLI names the hashers without loading scipy)."""
    from scipy import linalg

    return linalg


class NotFittedError(RuntimeError):
    pass


class BaseHasher:
    """fit / transform / encode; subclasses implement ``_fit`` and ``transform``."""

    supervised = False

    def __init__(self, n_bits: int = 64, random_state: int | None = None) -> None:
        self.n_bits = n_bits
        self.random_state = random_state

    # scikit-learn style parameter access (clone, grid search, repr)
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    def set_params(self, **params: Any) -> BaseHasher:
        valid = self.get_params()
        for k, v in params.items():
            if k not in valid:
                raise HasherError(f"{type(self).__name__} has no parameter {k!r}; parameters: {', '.join(valid)}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def fit(self, X: Any, y: Any = None) -> BaseHasher:
        X = self._check_X(X, fitting=True)
        if not isinstance(self.n_bits, (int, np.integer)) or self.n_bits <= 0:
            raise HasherError(f"n_bits must be a positive integer, got {self.n_bits!r}")
        if self.supervised:
            if y is None:
                raise HasherError(f"{type(self).__name__} is supervised: fit(X, y) needs labels")
            y = np.asarray(y)
            if len(y) != len(X):
                raise HasherError(f"X has {len(X)} rows but y has {len(y)}")
        self.n_features_in_ = X.shape[1]
        self._fit(X, y, np.random.default_rng(self.random_state))
        return self

    def encode(self, X: Any) -> np.ndarray:
        """Binary codes in {-1, +1} as ``int8``, shape (N, n_bits)."""
        return binarize(self.transform(X))

    def fit_encode(self, X: Any, y: Any = None) -> np.ndarray:
        return self.fit(X, y).encode(X)

    def transform(self, X: Any) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fit(self, X: np.ndarray, y: Any, rng: np.random.Generator) -> None:  # pragma: no cover
        raise NotImplementedError

    def _check_X(self, X: Any, fitting: bool = False) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise HasherError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
        if not np.isfinite(X).all():
            raise HasherError("X contains NaN or infinity")
        if not fitting:
            if not hasattr(self, "n_features_in_"):
                raise NotFittedError(f"{type(self).__name__} is not fitted: call fit(X) first")
            if X.shape[1] != self.n_features_in_:
                raise HasherError(f"X has {X.shape[1]} features but {type(self).__name__} was fitted on {self.n_features_in_}")
        elif len(X) < 2:
            raise HasherError(f"need at least 2 samples to fit, got {len(X)}")
        return X

    def _check_bits_le(self, limit: int, what: str) -> None:
        if self.n_bits > limit:
            raise HasherError(f"{type(self).__name__} cannot make {self.n_bits} bits from {limit} {what}")


def _pca(Xc: np.ndarray, k: int) -> np.ndarray:
    """Top-k principal directions (d, k) of centred data, largest variance first, sign-fixed."""
    cov = Xc.T @ Xc / max(len(Xc) - 1, 1)
    vals, vecs = _scipy_linalg().eigh(cov, subset_by_index=[cov.shape[0] - k, cov.shape[0] - 1])
    vecs = vecs[:, ::-1]
    # deterministic sign: largest-magnitude entry of each direction positive
    signs = np.sign(vecs[np.abs(vecs).argmax(axis=0), np.arange(k)])
    return vecs * np.where(signs == 0, 1, signs)


def _label_matrix(y: np.ndarray) -> np.ndarray:
    """Class vector -> one-hot; multi-hot matrix -> itself (float)."""
    if y.ndim == 1:
        classes, inv = np.unique(y, return_inverse=True)
        return np.eye(len(classes))[inv]
    return (y != 0).astype(np.float64)


def _similarity(ya: np.ndarray, yb: np.ndarray) -> np.ndarray:
    """+1 where two items share a label, -1 otherwise."""
    return np.where(shares_label(ya, yb), 1.0, -1.0)


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.maximum(d, 0)


class LSH(BaseHasher):
    """Locality-sensitive hashing with random Gaussian hyperplanes through the data mean."""

    def _fit(self, X, y, rng):
        self.mean_ = X.mean(axis=0)
        self.projection_ = rng.standard_normal((X.shape[1], self.n_bits))

    def transform(self, X):
        X = self._check_X(X)
        return (X - self.mean_) @ self.projection_


class PCAH(BaseHasher):
    """PCA hashing: the sign of the top ``n_bits`` principal components."""

    def _fit(self, X, y, rng):
        self._check_bits_le(min(X.shape), "features/samples")
        self.mean_ = X.mean(axis=0)
        self.components_ = _pca(X - self.mean_, self.n_bits)

    def transform(self, X):
        X = self._check_X(X)
        return (X - self.mean_) @ self.components_


class PCARR(BaseHasher):
    """PCA to ``n_bits``, then a seeded random orthogonal rotation, then sign (Gong & Lazebnik's PCA-RR): spreads
    the variance over the bits, the training-free baseline ITQ refines."""

    def _fit(self, X, y, rng):
        self._check_bits_le(min(X.shape), "features/samples")
        self.mean_ = X.mean(axis=0)
        self.components_ = _pca(X - self.mean_, self.n_bits)
        self.rotation_, _ = np.linalg.qr(rng.standard_normal((self.n_bits, self.n_bits)))

    def transform(self, X):
        X = self._check_X(X)
        return (X - self.mean_) @ self.components_ @ self.rotation_


class ITQ(PCARR):
    """Iterative quantization: PCA-RR's rotation refined to minimise ||B - VR||_F by alternating B = sgn(VR) and
    the Procrustes solution for R (Gong & Lazebnik, Alg. 1)."""

    def __init__(self, n_bits: int = 64, n_iter: int = 50, random_state: int | None = None) -> None:
        super().__init__(n_bits, random_state)
        self.n_iter = n_iter

    def _fit(self, X, y, rng):
        super()._fit(X, y, rng)
        V = (X - self.mean_) @ self.components_
        R = self.rotation_
        for _ in range(self.n_iter):
            B = np.where(V @ R >= 0, 1.0, -1.0)
            U, _, Wt = np.linalg.svd(B.T @ V)
            R = (U @ Wt).T
        self.rotation_ = R


class SH(BaseHasher):
    """Spectral hashing: PCA, then the ``n_bits`` smallest-eigenvalue 1-D Laplacian eigenfunctions
    sin(pi/2 + k pi x / range) of a uniform distribution over the PCA box (Weiss et al., Sec. 3.1)."""

    def _fit(self, X, y, rng):
        npca = min(self.n_bits, X.shape[1], len(X))
        self.mean_ = X.mean(axis=0)
        self.components_ = _pca(X - self.mean_, npca)
        V = (X - self.mean_) @ self.components_
        eps = np.finfo(np.float64).eps
        self.min_ = V.min(axis=0) - eps
        span = V.max(axis=0) + eps - self.min_
        max_mode = np.ceil((self.n_bits + 1) * span / span.max()).astype(int)
        # every single-dimension mode (k along one axis), plus the constant mode first
        modes = [np.zeros(npca)]
        for i in range(npca):
            for k in range(1, max_mode[i]):
                m = np.zeros(npca)
                m[i] = k
                modes.append(m)
        modes = np.array(modes)
        omega = modes * (np.pi / span)
        order = np.argsort((omega**2).sum(axis=1), kind="stable")
        if len(order) < self.n_bits + 1:
            raise HasherError(f"SH cannot make {self.n_bits} bits from {X.shape[1]} features")
        self.omegas_ = omega[order[1 : self.n_bits + 1]]

    def transform(self, X):
        X = self._check_X(X)
        V = (X - self.mean_) @ self.components_ - self.min_
        # product over dimensions of sin(pi/2 + omega * v); only one omega per mode is non-zero
        out = np.empty((len(X), len(self.omegas_)))
        for b, w in enumerate(self.omegas_):
            out[:, b] = np.prod(np.sin(np.pi / 2 + V * w), axis=1)
        return out


class _KernelFeatures:
    """RBF features exp(-||x - a||^2 / (2 sigma^2)) to anchors drawn from the training set."""

    def __init__(self, X: np.ndarray, n_anchors: int, rng: np.random.Generator) -> None:
        m = min(n_anchors, len(X))
        self.anchors = X[np.sort(rng.choice(len(X), m, replace=False))]
        d = _sqdist(X, self.anchors)
        self.sigma2 = float(d.mean())  # sigma^2 = mean squared distance to the anchors
        self.train = np.exp(-d / (2 * self.sigma2))

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return np.exp(-_sqdist(X, self.anchors) / (2 * self.sigma2))


def _ridge(A: np.ndarray, B: np.ndarray, lam: float) -> np.ndarray:
    """argmin_W ||AW - B||^2 + lam ||W||^2 = (A'A + lam I)^-1 A'B."""
    return _scipy_linalg().solve(A.T @ A + lam * np.eye(A.shape[1]), A.T @ B, assume_a="pos")


class SDH(BaseHasher):
    """Supervised discrete hashing (Shen et al., CVPR 2015): min ||Y - BW||^2 + lambda ||W||^2
    + nu ||B - F(X)||^2 over B in {-1,1}, alternating the G-step (W, ridge), the F-step (RBF
    kernel projection P, ridge) and the B-step (discrete cyclic coordinate descent, Eq. 13).
    Defaults from the authors' demo: 1,000 anchors, lambda = 1, nu = 1e-5, F ridge 1e-2, 5 outer iterations."""

    supervised = True

    def __init__(
        self,
        n_bits: int = 64,
        n_anchors: int = 1000,
        lam: float = 1.0,
        nu: float = 1e-5,
        f_ridge: float = 1e-2,
        n_iter: int = 5,
        dcc_iter: int = 10,
        random_state: int | None = None,
    ) -> None:
        super().__init__(n_bits, random_state)
        self.n_anchors, self.lam, self.nu, self.f_ridge = n_anchors, lam, nu, f_ridge
        self.n_iter, self.dcc_iter = n_iter, dcc_iter

    def _phi(self, K: np.ndarray) -> np.ndarray:
        return np.hstack([K, np.ones((len(K), 1))])  # RBF features plus a bias column

    def _fit(self, X, y, rng):
        Y = _label_matrix(np.asarray(y))
        self.kernel_ = _KernelFeatures(X, self.n_anchors, rng)
        Phi = self._phi(self.kernel_.train)
        B = np.where(rng.standard_normal((len(X), self.n_bits)) >= 0, 1.0, -1.0)
        for _ in range(self.n_iter):
            W = _ridge(B, Y, self.lam)  # G-step: L x C
            P = _ridge(Phi, B, self.f_ridge)  # F-step
            Q = self.nu * (Phi @ P) + Y @ W.T
            for _ in range(self.dcc_iter):  # B-step: one bit at a time, others fixed
                B0 = B.copy()
                for k in range(self.n_bits):
                    v = W @ W[k]
                    B[:, k] = np.where(Q[:, k] - (B @ v - B[:, k] * v[k]) >= 0, 1.0, -1.0)
                if np.linalg.norm(B - B0) < 1e-6 * np.linalg.norm(B0):
                    break
        self.projection_ = _ridge(Phi, B, self.f_ridge)

    def transform(self, X):
        X = self._check_X(X)
        return self._phi(self.kernel_(X)) @ self.projection_


class KSH(BaseHasher):
    """Kernel-based supervised hashing (Liu et al., CVPR 2012): fit code inner products to
    r * S (S = +-1 pair labels of ``n_labeled`` samples) one bit at a time; each bit's kernel
    projection starts from the spectral relaxation (a generalised eigenproblem) and is refined by
    gradient descent on the sigmoid-smoothed objective, keeping whichever is better discretely.
    Defaults from the paper: 300 anchors, 1,000 labelled samples."""

    supervised = True

    def __init__(
        self,
        n_bits: int = 64,
        n_anchors: int = 300,
        n_labeled: int = 1000,
        n_iter: int = 300,
        random_state: int | None = None,
    ) -> None:
        super().__init__(n_bits, random_state)
        self.n_anchors, self.n_labeled, self.n_iter = n_anchors, n_labeled, n_iter

    def _fit(self, X, y, rng):
        y = np.asarray(y)
        sample = np.sort(rng.choice(len(X), min(self.n_labeled, len(X)), replace=False))
        if self.n_anchors > len(sample):
            raise HasherError(f"KSH needs n_anchors ({self.n_anchors}) <= labelled samples ({len(sample)})")
        self.kernel_ = _KernelFeatures(X, self.n_anchors, rng)
        K = self.kernel_(X[sample])
        self.kernel_mean_ = K.mean(axis=0)
        K = K - self.kernel_mean_
        n = len(sample)
        R = self.n_bits * _similarity(y[sample], y[sample])  # residual r*S - sum of earlier bits
        KK = K.T @ K + 1e-6 * np.eye(K.shape[1])
        A = np.zeros((K.shape[1], self.n_bits))
        for b in range(self.n_bits):
            M = K.T @ R @ K
            _, vecs = _scipy_linalg().eigh((M + M.T) / 2, KK, subset_by_index=[len(KK) - 1, len(KK) - 1])
            a0 = vecs[:, 0] * np.sqrt(n / (vecs[:, 0] @ KK @ vecs[:, 0]))
            a1 = self._descend(K, R, a0)
            h0, h1 = np.where(K @ a0 >= 0, 1.0, -1.0), np.where(K @ a1 >= 0, 1.0, -1.0)
            a, h = (a1, h1) if h1 @ R @ h1 > h0 @ R @ h0 else (a0, h0)
            A[:, b] = a
            R = R - np.outer(h, h)
        self.projection_ = A

    def _descend(self, K: np.ndarray, R: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Minimise -phi(Ka)' R phi(Ka), phi(x) = 2 / (1 + exp(-x)) - 1, by gradient descent with backtracking."""

        def value_grad(a: np.ndarray) -> tuple[float, np.ndarray]:
            z = K @ a
            p = 2 / (1 + np.exp(-np.clip(z, -50, 50))) - 1
            Rp = R @ p
            return -float(p @ Rp), -K.T @ (Rp * (1 - p * p))  # dphi/dz = (1 - phi^2) / 2, R symmetric

        f, g = value_grad(a)
        step = 1.0 / max(np.linalg.norm(g), 1e-12)
        for _ in range(self.n_iter):
            while True:
                a_new = a - step * g
                f_new, g_new = value_grad(a_new)
                if f_new <= f - 1e-4 * step * (g @ g) or step < 1e-12:
                    break
                step /= 2
            if abs(f - f_new) <= 1e-6 * max(abs(f), 1.0):
                a, f = a_new, f_new
                break
            a, f, g = a_new, f_new, g_new
            step *= 2
        return a

    def transform(self, X):
        X = self._check_X(X)
        return (self.kernel_(X) - self.kernel_mean_) @ self.projection_


SHALLOW_METHODS: dict[str, type[BaseHasher]] = {
    "lsh": LSH,
    "pcah": PCAH,
    "pcarr": PCARR,
    "sh": SH,
    "itq": ITQ,
    "sdh": SDH,
    "ksh": KSH,
}


def create_hasher(name: str, **params: Any) -> BaseHasher:
    """A shallow hasher by name (``lsh``, ``pcah``, ``pcarr``, ``sh``, ``itq``, ``sdh``, ``ksh``)."""
    key = name.lower()
    if key not in SHALLOW_METHODS:
        raise HasherError(f"unknown shallow method {name!r}; known: {', '.join(SHALLOW_METHODS)}")
    return SHALLOW_METHODS[key](**params)
