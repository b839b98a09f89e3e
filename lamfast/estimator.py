"""The estimator: :class:`LinearLAM` (scikit-learn style) and :func:`fit`, which runs a solver and
wraps its :class:`~lamfast.solvers.fitted.FittedLAM` record.

Notation (``docs/theory.md``)::

    IDM  z  = C o + D o'               C, D: dz x do
    FDM  o^' = A o + B z               A: do x do, B: do x dz
    loss L  = E||o^' - o'||^2 / do     (per coordinate, no biases)
    head a^ = E z + h                  E: da x dz (action supervision only)

``fit(moments, dz, variant, solver="eig")`` returns a :class:`LinearLAM`. The ``eig`` solver
covers every case that has a closed form; the others raise an error naming ``moment-gd``.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np

from .errors import LamfastError
from .moments.core import Moments
from .probes.closed import probe_metrics
from .solvers.fitted import FittedLAM, recon_loss
from .solvers.solve import solve
from .solvers.variant import Variant
from .sources.arrays import (
    NOISE_NAMES,
    _check_finite,
    _same_rows,
    as_rows,
    is_source,
    moments_from_transitions,
    moments_of,
    split_transitions,
)
from .sources.world import LinearWorld


class NotFittedError(LamfastError, AttributeError):
    """A fitted attribute or method of an unfitted :class:`LinearLAM` was used.

    Also an ``AttributeError`` (like scikit-learn's), so ``hasattr(lam, "components_")`` is False
    before fitting.
    """


class LinearLAM:
    """A linear LAM: its options (constructor parameters) and, once fitted, its matrices.

    A scikit-learn-style estimator without a scikit-learn dependency: :meth:`fit` (arrays,
    ``Moments`` or a source such as a ``LinearWorld``), :meth:`transform`, :meth:`predict_next`,
    :meth:`score`, :meth:`get_params` / :meth:`set_params`; works with ``sklearn.base.clone`` and
    inside a ``Pipeline``. Array rules (dtypes, shapes, torch tensors):
    :mod:`lamfast.sources.arrays`.
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
        ``(i0, i1)``: eigenvalues ``i0..i1-1`` are tied and ``dz`` splits them (docs/theory.md,
        ties).
    draws_ : tuple of LinearLAM
        Optima drawn by random rotations inside the tied block; probes average over them.
    notes_ : tuple of str
        What the solver decided and why (closed form used, ties, ...).
    components_ : ndarray, shape (dz, do)
        Orthonormal directions of the frame difference that the latent reads.
    explained_variance_ : ndarray, shape (dz,)
        ``spectrum_[:dz]``.

    Examples
    --------
    Is the latent capturing the action or the noise? Structured noise twice as strong as the
    action takes the latent (docs/reproduce.md, fig3-right):

    >>> from lamfast import LinearWorld
    >>> world = LinearWorld(do=32, da=4, db=4, noise="exo", sigma=2.0)
    >>> lam = LinearLAM(dz=4).fit(world)
    >>> round(lam.score(world), 2)           # LLO: 2 is perfect; here z is nearly all noise
    0.08
    >>> lam.explained_variance_.round(1)     # sigma^2 = 4 > 1: noise eigenvalues come first
    array([4.3, 4.1, 4.1, 4. ])
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

    @classmethod
    def from_fitted(cls, record: FittedLAM) -> LinearLAM:
        """The fitted estimator of a solver's :class:`~lamfast.solvers.fitted.FittedLAM`."""
        lam = cls._fitted(
            record.dz,
            record.variant,
            record.solver,
            record.seed,
            record.A,
            record.B,
            record.C,
            record.D,
            record.spectrum,
            loss=record.loss,
            E=record.E,
            h=record.h,
            tie=record.tie,
            draws=tuple(cls.from_fitted(d) for d in record.draws),
            notes=record.notes,
        )
        for key, value in record.extra.items():  # converged_, steps_, losses_
            setattr(lam, key + "_", value)
        return lam

    def _check_fitted(self):
        if not hasattr(self, "A_"):
            raise NotFittedError("this LinearLAM is not fitted yet: call fit first")

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
        """Predicted next observation ``A o + B z``.

        Parameters
        ----------
        o : array_like, shape (n, do)
            Observations (dtype and shape rules of :mod:`lamfast.sources.arrays`).
        z : array_like, shape (n, dz)
            Latents, e.g. from :meth:`transform`.

        Returns
        -------
        ndarray, shape (n, do), float64
        """
        self._check_fitted()

        o = self._rows(as_rows(o, "o"), "o", self.A_.shape[1])
        z = self._rows(as_rows(z, "z", allow_1d=self.dz == 1), "z", self.B_.shape[1])
        _same_rows({"o": o, "z": z})
        return o @ self.A_.T + z @ self.B_.T

    # ------------------------------------------------------------ scikit-learn estimator API
    # No scikit-learn import: the methods below follow sklearn.base.BaseEstimator's contract
    # (constructor parameters stored unchanged, get_params/set_params, fitted attributes with a
    # trailing underscore, fit returns self), so sklearn.base.clone and Pipeline work
    # (tests/test_api.py).
    @classmethod
    def _get_param_names(cls) -> list[str]:
        params = inspect.signature(cls.__init__).parameters.values()
        return sorted(p.name for p in params if p.name != "self" and p.kind != p.VAR_KEYWORD)

    def get_params(self, deep: bool = True) -> dict:
        """Constructor parameters as a dict (scikit-learn semantics).

        Parameters
        ----------
        deep : bool
            Also return the parameters of parameters that are estimators (``name__sub``).

        Examples
        --------
        >>> LinearLAM(dz=4, kappa=0.1).get_params()["kappa"]
        0.1
        """
        out = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params) -> LinearLAM:
        """Set constructor parameters (validated at :meth:`fit`); returns ``self``.

        Examples
        --------
        >>> LinearLAM(dz=4).set_params(dz=2, encoder="free").dz
        2
        """
        valid = self._get_param_names()
        nested: dict[str, dict] = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise LamfastError(
                    f"invalid parameter {name!r} for LinearLAM; valid parameters are: "
                    f"{', '.join(valid)}"
                )
            if sub:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            getattr(self, name).set_params(**sub_params)
        return self

    def __sklearn_tags__(self):
        # Only scikit-learn calls this, so importing it here adds no dependency.
        from sklearn.utils import Tags, TargetTags, TransformerTags

        return Tags(
            estimator_type=None,
            target_tags=TargetTags(required=False),
            transformer_tags=TransformerTags(),
        )

    def _adopt(self, fitted: LinearLAM) -> LinearLAM:
        for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]:
            delattr(self, name)
        for name, value in vars(fitted).items():
            if name.endswith("_") and not name.startswith("_"):
                setattr(self, name, value)
        return self

    def fit(self, o, o_next=None, a=None) -> LinearLAM:
        """Fit the LAM to transitions, to moments, or to a moment source; returns ``self``.

        Parameters
        ----------
        o : Moments, source or array_like
            One of:

            - ``Moments`` with blocks ``o`` and ``delta`` (``a`` for action supervision);
            - a :class:`~lamfast.sources.world.LinearWorld` (fitted to its exact population
            moments) or
              any object with a ``moments()`` method returning ``Moments``;
            - observations ``(n, do)`` together with ``o_next``;
            - ``X`` of shape ``(n, 2 * do)``, ``[o | o_next]`` side by side (scikit-learn form;
              then the second argument, if any, holds the actions).
        o_next : array_like, shape (n, do), optional
            Next observations (or the actions ``y`` in the scikit-learn form).
        a : array_like, shape (n, da) or (n,), optional
            Actions; used by the fit only when ``label_fraction > 0``.

        Returns
        -------
        LinearLAM
            ``self``, fitted: ``A_ B_ C_ D_``, ``components_``, ``explained_variance_``, ...

        Notes
        -----
        Arrays are reduced to the moments of ``[o, delta, a]`` (float64, chunked, see
        :func:`~lamfast.sources.arrays.moments_from_transitions`) and solved by :func:`fit`; the
        estimator therefore costs one pass over the rows plus an O(do^3) eigenproblem.

        Examples
        --------
        >>> from lamfast import LinearWorld
        >>> rng = np.random.default_rng(0)
        >>> X = np.linalg.qr(rng.standard_normal((6, 2)))[0]   # action effects, do=6, da=2
        >>> o = rng.standard_normal((500, 6)).astype(np.float32)
        >>> a = rng.standard_normal((500, 2))
        >>> lam = LinearLAM(dz=2).fit(o, o + a @ X.T, a)
        >>> lam.components_.shape, round(lam.score(o, o + a @ X.T, a, noise="none"), 2)
        ((2, 6), 2.0)
        >>> LinearLAM(dz=2).fit(LinearWorld(do=6, da=2)).loss_ < 1e-15
        True
        """

        if is_source(o):
            if o_next is not None or a is not None:
                raise LamfastError("fit(moments or source) takes no o_next or a")
            moments = moments_of(o)
        else:
            moments = moments_from_transitions(*split_transitions(o, o_next, a))
        lam = fit(moments, self.dz, self.variant, solver=self.solver, seed=self.seed)
        self._adopt(lam)
        # scikit-learn's contract: the width of X in its [o | o_next] form
        self.n_features_in_ = 2 * moments.size("o")
        return self

    def fit_transform(self, o, o_next=None, a=None) -> np.ndarray:
        """:meth:`fit` on transitions, then :meth:`transform` them (arrays only)."""

        o, o_next, a = split_transitions(o, o_next, a)
        return self.fit(o, o_next, a).transform(o, o_next)

    def transform(self, o, o_next=None) -> np.ndarray:
        """Latents ``z = C o + D o_next`` of transitions.

        Parameters
        ----------
        o : array_like, shape (n, do), or (n, 2 * do) when ``o_next`` is None
            Observations, or ``[o | o_next]`` side by side (the form a Pipeline passes).
        o_next : array_like, shape (n, do), optional

        Returns
        -------
        ndarray, shape (n, dz), float64

        Examples
        --------
        >>> o = np.zeros((3, 4), dtype=np.float32)
        >>> o_next = o + np.array([[1.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0, 0]])
        >>> lam = LinearLAM(dz=1).fit(o, o_next)     # the strongest frame difference: axis 1
        >>> lam.transform(o, o_next).ravel().tolist()
        [0.0, 2.0, 0.0]
        >>> lam.predict_next(o, lam.transform(o, o_next))[1].tolist()
        [0.0, 2.0, 0.0, 0.0]
        """
        self._check_fitted()
        if o_next is None:
            self._check_width(as_rows(o, "X").shape[1])
            o, o_next, _ = split_transitions(o)
        else:
            o, o_next = as_rows(o, "o"), as_rows(o_next, "o_next")
            if o_next.shape != o.shape:
                raise LamfastError(
                    f"o_next must have the same shape as o, got {o_next.shape} and {o.shape}"
                )
            _same_rows({"o": o, "o_next": o_next})
        o = self._rows(o, "o", self.C_.shape[1])
        o_next = self._rows(o_next, "o_next", self.D_.shape[1])
        _check_finite(o, "o")
        _check_finite(o_next, "o_next")
        return o @ self.C_.T + o_next @ self.D_.T

    def score(self, o, o_next=None, a=None, *, noise=None, y=None) -> float:
        """LLO when the actions and the noise are known, else minus the reconstruction loss.

        Probes are the closed-form least-squares probes of docs/theory.md, scoring, fitted and
        scored on the
        data given (in-sample), averaged over tie draws. Higher is better either way: LLO
        ``= -act_mse + obs_mse + noi_mse`` peaks at 2; ``-recon`` peaks at 0.

        Parameters
        ----------
        o, o_next, a
            As in :meth:`fit` (``Moments``, a source, or arrays).
        noise : array_like or "none", optional
            Noise rows ``(n, k)`` when known (simulations), or ``"none"`` to declare noise-free
            transitions. With ``Moments``, a ``b`` or ``eps`` block counts as known noise; a
            ``LinearWorld`` always knows its noise.
        y : array_like, optional
            The actions in scikit-learn's ``score(X, y=...)`` form (``X = [o | o_next]``).

        Returns
        -------
        float

        Examples
        --------
        >>> from lamfast import LinearWorld
        >>> world = LinearWorld(do=16, da=4)                    # no noise
        >>> lam = LinearLAM(dz=2).fit(world)
        >>> round(lam.score(world), 6)                           # LLO: half the action is lost
        1.5
        >>> m = world.population_moments()                       # o, delta, a: noise unknown
        >>> round(lam.score(m), 6), round(lam.score(m, noise="none"), 6)
        (-0.125, 1.5)
        """
        self._check_fitted()
        if y is not None:
            if o_next is not None or a is not None:
                raise LamfastError("score(X, y=...) takes the actions as y or as a, not both")
            o_next = y
        xy_form = y is not None
        declared_none = isinstance(noise, str)
        if declared_none and noise != "none":
            raise LamfastError(f"noise must be an array or 'none', got {noise!r}")
        if is_source(o):
            if o_next is not None or a is not None or (noise is not None and not declared_none):
                raise LamfastError("score(moments or source) takes no o_next, a or noise arrays")
            m = moments_of(o)
            known = isinstance(o, LinearWorld)
        else:
            first = as_rows(o, "o")
            second = None if o_next is None else as_rows(o_next, "o_next", allow_1d=True)
            separate = not xy_form and second is not None and second.shape == first.shape
            self._check_width(2 * first.shape[1] if separate else first.shape[1])
            o, o_next, a = split_transitions(o, o_next, a)
            m = moments_from_transitions(o, o_next, a, None if declared_none else noise)
            known = False
        if m.size("o") != self.A_.shape[0]:
            raise LamfastError(f"data have do = {m.size('o')}, the LAM has do = {self.A_.shape[0]}")
        known = known or declared_none or any(m.has(k) for k in NOISE_NAMES)
        if m.has("a") and known:
            return float(probe_metrics(self, m)["llo"])
        return 0.0 - recon_loss(self, m)  # 0.0 - x: a perfect fit scores 0.0, not -0.0

    def _check_width(self, width: int) -> None:
        """scikit-learn's rule: ``X = [o | o_next]`` has the width fit saw (``2 * do``)."""
        expected = getattr(self, "n_features_in_", None)
        if expected is not None and int(width) != expected:
            raise LamfastError(
                f"X has {width} features, but LinearLAM is expecting {expected} features as "
                "input ([o | o_next] of the fitted do)"
            )

    @staticmethod
    def _rows(x: np.ndarray, name: str, cols: int) -> np.ndarray:
        if x.shape[1] != cols:
            raise LamfastError(f"{name} must have {cols} columns, got shape {x.shape}")
        return np.asarray(x, dtype=np.float64)

    @property
    def components_(self) -> np.ndarray:
        """Orthonormal directions of ``delta`` the latent reads, ``(dz, do)``.

        For the PCA variants ``D_`` has orthonormal rows, the top eigenvectors of
        ``E[delta delta^T]`` (or of the innovation's second moment): ``components_ = D_``, like
        PCA's ``components_`` of uncentred frame differences. With action supervision ``D_`` is
        not orthonormal; ``components_`` are then its right singular vectors, in decreasing order
        of singular value.
        """
        self._check_fitted()
        D = self.D_
        if np.allclose(D @ D.T, np.eye(D.shape[0]), rtol=0, atol=1e-10):
            return D
        _, _, Vt = np.linalg.svd(D, full_matrices=False)
        return Vt

    @property
    def explained_variance_(self) -> np.ndarray:
        """The leading ``dz`` eigenvalues that define the latent (``spectrum_[:dz]``).

        For the PCA variants, ``E[(v_i^T delta)^2]``: the uncentred second moment of the frame
        difference along each component (the LAM has no biases, so it is not centred, and rows are
        averaged with ``1/n``). For a learned decoder, the same for the innovation
        ``delta - K o``; with action supervision, eigenvalues of ``M_aux`` (docs/theory.md, closed
        forms).
        """
        self._check_fitted()
        return np.asarray(self.spectrum_[: self.dz])

    def __repr__(self) -> str:
        fitted = " (fitted)" if hasattr(self, "A_") else ""
        return (
            f"LinearLAM(dz={self.dz}, decoder={self.decoder!r}, encoder={self.encoder!r}, "
            f"kappa={self.kappa}, label_fraction={self.label_fraction}, "
            f"label_weighting={self.label_weighting!r}, solver={self.solver!r}){fitted}"
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
    labels: Moments | None = None,
    **variant_options,
) -> LinearLAM:
    """Fit a linear LAM to moments.

    Parameters
    ----------
    moments : Moments
        Needs blocks ``o`` and ``delta``; ``a`` too for action supervision without ``labels``.
    dz : int
        Latent dimension, ``1 <= dz <= do``.
    variant : Variant, optional
        The LAM variant; or pass its fields as keyword arguments (``decoder="learned"``, ...).
    solver : {"eig", "auto", "moment-gd", "sgd"}
        ``eig``: the closed forms (``docs/theory.md``). ``auto``: ``eig`` where a closed form
        exists, else ``moment-gd`` (the fitted estimator's ``solver`` and notes say which ran).
        ``moment-gd``: deterministic Adam/GD on the exact population objective
        (:func:`lamfast.solvers.gd.moment_gd_fit`), every variant. ``sgd``: the paper's minibatch
        protocol on rows drawn from ``world`` (:func:`lamfast.solvers.sgd.sgd_fit`).
    seed : int
        Seeds the random rotations drawn inside tied eigenvalue blocks (``eig``) or the
        initialisation (``moment-gd``, ``sgd``).
    world : LinearWorld, optional
        The world to sample minibatches from; required by ``sgd`` (moments are then unused).
    solver_options : dict, optional
        Extra keyword arguments of the solver (steps, lr, ...).
    labels : Moments, optional
        Moments of the labelled rows only (blocks ``delta`` and ``a``, plus ``o`` for
        ``moment-gd`` or a free encoder; ``count`` = number of labelled rows). The action head
        is trained on them, the reconstruction on every row of ``moments``. None: every row of
        ``moments`` is labelled. Where E[delta] != 0 or the labels cover only some rows, ``eig``
        refines the optimum from the closed form (docs/theory.md, item 5; the fit's notes say so).

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
    record = solve(
        moments, dz, variant, solver, seed, world=world, solver_options=solver_options,
        labels=labels,
    )  # fmt: skip
    return LinearLAM.from_fitted(record)
