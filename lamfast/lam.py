"""Linear latent action models: the variants of the paper as data, and their solvers.

Notation (DESIGN 1)::

    IDM  z  = C o + D o'               C, D: dz x do
    FDM  o^' = A o + B z               A: do x do, B: do x dz
    loss L  = E||o^' - o'||^2 / do     (per coordinate, no biases)
    head a^ = E z + h                  E: da x dz (action supervision only)

``fit(moments, dz, variant, solver="eig")`` returns a :class:`LinearLAM`. The ``eig`` solver covers
every case of DESIGN 1.1 that has a closed form; the others raise an error naming ``moment-gd``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import config
from .eigen import top_eigh
from .errors import LamfastError
from .moments import Moments

DECODERS = ("identity", "learned")
ENCODERS = ("tied", "free")
WEIGHTINGS = ("paper", "batch")
SOLVERS = ("eig", "moment-gd", "sgd")


@dataclasses.dataclass(frozen=True)
class Variant:
    """Options of a linear LAM (STYLE 3: variants are data).

    Parameters
    ----------
    decoder : {"identity", "learned"}
        ``identity`` fixes ``A = I``; ``learned`` fits ``A``.
    encoder : {"tied", "free"}
        ``tied`` forces ``C = -D`` (the latent sees only the frame difference).
    kappa : float
        Augmentation scale (>= 0): Gaussian noise ``N(0, kappa^2 I)`` added to the inputs.
    label_fraction : float
        Fraction ``m`` in [0, 1] of rows with action labels (action supervision).
    label_weighting : {"paper", "batch"}
        Weight of the action loss: ``w = m`` (the paper's per-sample objective) or
        ``w = 1 - (1 - m)^128`` (the authors' scripts average over the labelled rows of a batch).
    """

    decoder: str = "identity"
    encoder: str = "tied"
    kappa: float = 0.0
    label_fraction: float = 0.0
    label_weighting: str = "paper"

    def __post_init__(self):
        if self.decoder not in DECODERS:
            raise LamfastError(
                f"decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}"
            )
        if self.encoder not in ENCODERS:
            raise LamfastError(
                f"encoder must be one of {', '.join(ENCODERS)}, got {self.encoder!r}"
            )
        if not np.isfinite(self.kappa) or self.kappa < 0:
            raise LamfastError(f"kappa must be a finite number >= 0, got {self.kappa!r}")
        if not np.isfinite(self.label_fraction) or not 0 <= self.label_fraction <= 1:
            raise LamfastError(f"label_fraction must be in [0, 1], got {self.label_fraction!r}")
        if self.label_weighting not in WEIGHTINGS:
            raise LamfastError(
                f"label_weighting must be one of {', '.join(WEIGHTINGS)}, "
                f"got {self.label_weighting!r}"
            )

    @property
    def label_weight(self) -> float:
        """Effective weight ``w`` of the action loss (DESIGN 1.1 item 4)."""
        m = float(self.label_fraction)
        if self.label_weighting == "paper":
            return m
        return 1.0 - (1.0 - m) ** config.BATCH_SIZE


class LinearLAM:
    """A linear LAM: its options (constructor parameters) and, once fitted, its matrices.

    Fitted attributes carry a trailing underscore (scikit-learn convention); the paper's names
    ``A, B, C, D, E, h`` are read-only aliases.

    Parameters
    ----------
    dz : int
        Latent dimension.
    decoder, encoder, kappa, label_fraction, label_weighting
        The variant (see :class:`Variant`).
    solver : str
        Solver used by :func:`fit`.
    seed : int
        Seeds random rotations inside tied eigenvalue blocks.

    Attributes
    ----------
    A_, B_, C_, D_ : ndarray
        FDM and IDM matrices (see module docstring).
    E_, h_ : ndarray or None
        Action head, when supervised.
    spectrum_ : ndarray
        Leading eigenvalues (descending) of the matrix whose eigenvectors define the latent:
        ``E[delta delta^T]`` (PCA), ``E[r r^T]`` (innovation) or ``M_aux`` (supervised).
    loss_ : float
        Reconstruction loss per coordinate on the fitted moments (the LAM loss, no penalty).
    tie_ : tuple of int or None
        ``(i0, i1)``: eigenvalues ``i0..i1-1`` are tied and ``dz`` splits them (DESIGN 1.1.5).
    draws_ : tuple of LinearLAM
        Optima drawn by random rotations inside the tied block; probes average over them.
    notes_ : tuple of str
        What the solver decided and why (closed form used, ties, ...).
    """

    def __init__(
        self,
        dz: int = 8,
        *,
        decoder: str = "identity",
        encoder: str = "tied",
        kappa: float = 0.0,
        label_fraction: float = 0.0,
        label_weighting: str = "paper",
        solver: str = "eig",
        seed: int = 0,
    ):
        self.dz = dz
        self.decoder = decoder
        self.encoder = encoder
        self.kappa = kappa
        self.label_fraction = label_fraction
        self.label_weighting = label_weighting
        self.solver = solver
        self.seed = seed

    @property
    def variant(self) -> Variant:
        """The options as a :class:`Variant` (validated)."""
        return Variant(
            self.decoder, self.encoder, self.kappa, self.label_fraction, self.label_weighting
        )

    @classmethod
    def _fitted(
        cls,
        dz,
        variant,
        solver,
        seed,
        A,
        B,
        C,
        D,
        spectrum,
        loss=float("nan"),
        E=None,
        h=None,
        tie=None,
        draws=(),
        notes=(),
    ) -> LinearLAM:
        lam = cls(dz, solver=solver, seed=seed, **dataclasses.asdict(variant))
        lam.A_, lam.B_, lam.C_, lam.D_ = A, B, C, D
        lam.E_, lam.h_ = E, h
        lam.spectrum_ = np.asarray(spectrum)
        lam.loss_ = float(loss)
        lam.tie_ = tie
        lam.draws_ = tuple(draws)
        lam.notes_ = tuple(notes)
        return lam

    def _check_fitted(self):
        if not hasattr(self, "A_"):
            raise LamfastError("this LinearLAM is not fitted yet")

    A = property(lambda self: self.A_, doc="FDM matrix on o (do x do).")
    B = property(lambda self: self.B_, doc="FDM matrix on z (do x dz).")
    C = property(lambda self: self.C_, doc="IDM matrix on o (dz x do).")
    D = property(lambda self: self.D_, doc="IDM matrix on o' (dz x do).")
    E = property(lambda self: self.E_, doc="Action head (da x dz) or None.")
    h = property(lambda self: self.h_, doc="Action-head intercept (da,) or None.")
    spectrum = property(lambda self: self.spectrum_, doc="Alias of spectrum_.")
    loss = property(lambda self: self.loss_, doc="Alias of loss_.")
    tie = property(lambda self: self.tie_, doc="Alias of tie_.")
    draws = property(lambda self: self.draws_, doc="Alias of draws_.")
    notes = property(lambda self: self.notes_, doc="Alias of notes_.")

    def encode(self, o, o_next) -> np.ndarray:
        """Latent ``z = C o + D o'`` for rows of ``o`` and ``o'`` (n x do each)."""
        self._check_fitted()
        o = np.asarray(o, dtype=np.float64)
        o_next = np.asarray(o_next, dtype=np.float64)
        return o @ self.C_.T + o_next @ self.D_.T

    def predict_next(self, o, z) -> np.ndarray:
        """Predicted next observation ``A o + B z``."""
        self._check_fitted()
        o = np.asarray(o, dtype=np.float64)
        return o @ self.A_.T + np.asarray(z, dtype=np.float64) @ self.B_.T

    def __repr__(self) -> str:
        fitted = " (fitted)" if hasattr(self, "A_") else ""
        return (
            f"LinearLAM(dz={self.dz}, decoder={self.decoder!r}, encoder={self.encoder!r}, "
            f"kappa={self.kappa}, label_fraction={self.label_fraction}, "
            f"label_weighting={self.label_weighting!r}, solver={self.solver!r}){fitted}"
        )


# ------------------------------------------------------------------------------------ helpers
def recon_loss(lam: LinearLAM, moments: Moments) -> float:
    """Exact LAM loss per coordinate: ``E||(A + BC + BD - I) o + (BD - I) delta||^2 / do``."""
    do = moments.size("o")
    eye = np.eye(do)
    BD = lam.B @ lam.D
    R = np.hstack([lam.A + lam.B @ lam.C + BD - eye, BD - eye])
    M = moments.select(["o", "delta"]).second_moment()
    return float(max(np.sum((R @ M) * R), 0.0) / do)


def _psd_power(S: np.ndarray, power: float) -> np.ndarray:
    """``S^power`` of a PSD matrix on its support (pseudo-inverse power when negative)."""
    w, V = np.linalg.eigh(0.5 * (S + S.T))
    cut = config.pinv_rtol(S.shape[0]) * max(w.max(initial=0.0), 0.0)
    keep = w > cut
    wp = np.zeros_like(w)
    wp[keep] = w[keep] ** power
    return (V * wp) @ V.T


def _pinv_psd(S: np.ndarray) -> np.ndarray:
    return _psd_power(S, -1.0)


def _haar(n: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random n x n orthogonal matrix (QR of a Gaussian, signs fixed by diag(R))."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.where(np.diag(r) == 0, 1.0, np.diag(r)))


def _top_with_ties(S, dz, rng, zero_block_inert):
    """Top-dz eigenvectors of S, the tied block that dz splits (if any), and rotated draws.

    ``zero_block_inert``: when the split block has eigenvalue 0 and the latent is the projection
    of the same matrix's variable, the extra directions carry no signal and no draw is needed.
    """
    d = S.shape[0]
    k = min(d, dz + 8)
    w, V = top_eigh(S, k)
    if dz == d:
        return w, V, None, []
    tol = config.TIE_RTOL * max(abs(w[0]), np.finfo(float).tiny)
    if w[dz - 1] - w[dz] > tol:
        return w, V[:, :dz], None, []
    while True:
        i1 = dz
        while i1 < k and w[dz - 1] - w[i1] <= tol:
            i1 += 1
        if i1 < k or k == d:
            break
        k = min(d, 2 * k)
        w, V = top_eigh(S, k)
    i0 = dz - 1
    while i0 > 0 and w[i0 - 1] - w[dz - 1] <= tol:
        i0 -= 1
    tie = (int(i0), int(i1))
    if zero_block_inert and abs(w[dz - 1]) <= tol:
        return w, V[:, :dz], tie, []
    draws = []
    for _ in range(config.TIE_DRAWS):
        Q = _haar(i1 - i0, rng)
        draws.append(np.hstack([V[:, :i0], V[:, i0:i1] @ Q[:, : dz - i0]]))
    return w, V[:, :dz], tie, draws


def _uncorrelated(moments: Moments, names) -> bool:
    """True when ``E[y o^T] = 0`` (to rounding) for every named block ``y``: a random policy."""
    Moo = moments.second_moment("o")
    for name in names:
        cross = moments.second_moment(name, "o")
        Myy = moments.second_moment(name)
        scale = np.sqrt(max(np.trace(Myy), 0.0) * max(np.trace(Moo), 0.0))
        if scale > 0 and np.linalg.norm(cross) > config.INDEPENDENCE_RTOL * scale:
            return False
    return True


def _mean_consistent_with_zero(moments: Moments, name: str) -> bool:
    """Whether the mean of block ``name`` is zero up to 6 standard errors (exactly, if n = inf)."""
    mu = moments.block_mean(name)
    tr = max(float(np.trace(moments.block_cov(name))), 0.0)
    if np.isinf(moments.count):
        return float(mu @ mu) <= config.INDEPENDENCE_RTOL * max(tr, np.finfo(float).tiny)
    # ||mu||^2 has expectation tr(Sigma)/n under a zero mean; 36 = (6 standard errors)^2.
    return float(mu @ mu) <= 36.0 * tr / moments.count


def _tie_note(tie, dz, draws) -> str:
    head = f"eigenvalues {tie[0] + 1}..{tie[1]} are tied and dz = {dz} splits them: "
    if not draws:
        return head + "they are zero, so the extra latent directions carry nothing"
    return head + f"the optimum is not unique; metrics average {len(draws)} random rotations"


def _no_closed_form(reason: str) -> LamfastError:
    return LamfastError(
        f"{reason} has no closed form; use the moment-gd solver (solver='moment-gd', "
        "--solver moment-gd)"
    )


# ------------------------------------------------------------------------------------ fit
def fit(
    moments: Moments,
    dz: int,
    variant: Variant | None = None,
    solver: str = "eig",
    seed: int = 0,
    *,
    world=None,
    solver_options: dict | None = None,
    **variant_options,
) -> LinearLAM:
    """Fit a linear LAM to moments.

    Parameters
    ----------
    moments : Moments
        Needs blocks ``o`` and ``delta``; ``a`` too for action supervision.
    dz : int
        Latent dimension, ``1 <= dz <= do``.
    variant : Variant, optional
        The LAM variant; or pass its fields as keyword arguments (``decoder="learned"``, ...).
    solver : {"eig", "moment-gd", "sgd"}
        ``eig``: closed forms of DESIGN 1.1. ``moment-gd``: deterministic Adam/GD on the exact
        population objective (:func:`lamfast.gd.moment_gd_fit`), every variant. ``sgd``: the
        paper's minibatch protocol on rows drawn from ``world`` (:func:`lamfast.sgd.sgd_fit`).
    seed : int
        Seeds the random rotations drawn inside tied eigenvalue blocks (``eig``) or the
        initialisation (``moment-gd``, ``sgd``).
    world : LinearWorld, optional
        The world to sample minibatches from; required by ``sgd`` (moments are then unused).
    solver_options : dict, optional
        Extra keyword arguments of the solver (steps, lr, ...).

    Examples
    --------
    >>> from lamfast import LinearWorld
    >>> m = LinearWorld(do=16, da=4).population_moments()
    >>> lam = fit(m, dz=4)
    >>> round(lam.loss, 12)
    0.0
    """
    if variant is None:
        variant = Variant(**variant_options)
    elif variant_options:
        variant = dataclasses.replace(variant, **variant_options)
    if not isinstance(moments, Moments):
        raise LamfastError(f"fit needs Moments, got {type(moments).__name__}")
    for name in ("o", "delta"):
        if not moments.has(name):
            raise LamfastError(f"fit needs a block {name!r}; moments have {list(moments.names)}")
    do = moments.size("o")
    if isinstance(dz, bool) or not isinstance(dz, int | np.integer) or not 1 <= dz <= do:
        raise LamfastError(f"dz must be an integer in [1, do={do}], got {dz!r}")
    if solver not in SOLVERS:
        raise LamfastError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    if not (np.isfinite(moments.cov).all() and np.isfinite(moments.mean).all()):
        raise LamfastError("moments contain NaN or inf")
    dz = int(dz)
    if solver == "moment-gd":
        from .gd import moment_gd_fit  # late import: gd builds on this module

        return moment_gd_fit(moments, dz, variant, seed=int(seed), **(solver_options or {}))
    if solver == "sgd":
        from .sgd import sgd_fit

        if world is None:
            raise LamfastError("the sgd solver samples rows: pass world=LinearWorld(...)")
        return sgd_fit(world, dz, variant, seed=int(seed), **(solver_options or {}))
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(3,)))
    w = variant.label_weight
    if w > 0:
        return _fit_supervised(moments, dz, variant, w, rng, int(seed))
    return _fit_unsupervised(moments, dz, variant, rng, int(seed))


def _make(moments, variant, dz, seed, spectrum, build, Vs, tie, notes):
    """Build the primary LAM and one LAM per tie draw from eigenvector sets ``Vs``."""
    lams = []
    for V in Vs:
        A, B, C, D, more = build(V)
        lam = LinearLAM._fitted(dz, variant, "eig", seed, A, B, C, D, spectrum, **more)
        lam.loss_ = recon_loss(lam, moments)
        lam.tie_, lam.notes_ = tie, tuple(notes)
        lams.append(lam)
    lams[0].draws_ = tuple(lams[1:])
    return lams[0]


def _fit_unsupervised(m: Moments, dz, variant, rng, seed) -> LinearLAM:
    do = m.size("o")
    eye = np.eye(do)
    M = m.second_moment("delta")
    learned = variant.decoder == "learned"
    notes = []
    if learned and variant.encoder == "free":
        if variant.kappa == 0:
            raise _no_closed_form(
                "a learned decoder with a free encoder and kappa = 0 (the o-content of z is a "
                "flat direction of the loss)"
            )
        if not _uncorrelated(m, ["delta"]):
            raise _no_closed_form(
                "a learned decoder, free encoder and kappa > 0 with o correlated to delta"
            )
        notes.append("kappa > 0 with a random policy forces A = I, C = -D: PCA of E[delta delta^T]")
        learned = False  # the optimum is the identity-decoder PCA
    if learned:
        Moo_inv = _pinv_psd(m.second_moment("o"))
        K = m.second_moment("delta", "o") @ Moo_inv
        Mr = M - K @ m.second_moment("o", "delta")
        Mr = 0.5 * (Mr + Mr.T)
        spectrum, V, tie, draws = _top_with_ties(Mr, dz, rng, zero_block_inert=False)
        notes.append(
            "innovation PCA: z = V^T delta, V = top eigenvectors of E[r r^T], r = delta - K o"
        )

        def build(V):
            P = V @ V.T
            return eye + (eye - P) @ K, V.copy(), -V.T.copy(), V.T.copy(), {}

    else:
        spectrum, V, tie, draws = _top_with_ties(M, dz, rng, zero_block_inert=True)
        notes.append("PCA of E[delta delta^T]: z = V^T delta")

        def build(V):
            return eye.copy(), V.copy(), -V.T.copy(), V.T.copy(), {}

    if tie is not None:
        notes.append(_tie_note(tie, dz, draws))
    return _make(m, variant, dz, seed, spectrum, build, [V, *draws], tie, tuple(notes))


def _fit_supervised(m: Moments, dz, variant, w, rng, seed) -> LinearLAM:
    if not m.has("a"):
        raise LamfastError("action supervision needs an 'a' block in the moments")
    identity_tied = variant.decoder == "identity" and variant.encoder == "tied"
    flat = variant.decoder == "learned" and variant.encoder == "free" and variant.kappa == 0
    if flat:
        raise _no_closed_form(
            "action supervision with a learned decoder, free encoder and kappa = 0"
        )
    if not identity_tied and not _uncorrelated(m, ["delta", "a"]):
        raise _no_closed_form(
            "action supervision with o correlated to (delta, a) and an encoder or decoder "
            "that can use o"
        )
    if not _mean_consistent_with_zero(m, "delta"):
        raise _no_closed_form("action supervision with a non-zero mean frame difference")
    do, da = m.size("o"), m.size("a")
    eye = np.eye(do)
    S = m.block_cov("delta")
    S_half_pinv = _psd_power(S, -0.5)
    Sda = m.block_cov("delta", "a")
    G = S_half_pinv @ Sda
    M_aux = S / do + (w / da) * (G @ G.T)
    M_aux = 0.5 * (M_aux + M_aux.T)
    spectrum, Y, tie, draws = _top_with_ties(M_aux, dz, rng, zero_block_inert=True)
    M = m.second_moment("delta")
    mu_a, mu_d = m.block_mean("a"), m.block_mean("delta")

    def build(Y):
        K = Y.T @ S_half_pinv
        B = M @ K.T @ _pinv_psd(K @ M @ K.T)
        E = Sda.T @ K.T @ _pinv_psd(K @ S @ K.T)
        h = mu_a - E @ (K @ mu_d)
        return eye.copy(), B, -K, K.copy(), {"E": E, "h": h}

    notes = [
        f"action supervision, weight w = {w:.6g}: z = K delta, "
        "K = Y^T Sigma^(+1/2), Y = top eigenvectors of M_aux"
    ]
    if tie is not None:
        notes.append(_tie_note(tie, dz, draws))
    return _make(m, variant, dz, seed, spectrum, build, [Y, *draws], tie, tuple(notes))
