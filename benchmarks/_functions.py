"""Regression test functions from published formulas (for the benchmarks, not the package).

Each function is the one listed in the Virtual Library of Simulation Experiments
(VLSE, S. Surjanovic and D. Bingham, https://www.sfu.ca/~ssurjano/), evaluated on
inputs drawn from the published input ranges or distributions; the original paper is
cited with each.  Every number in a formula or a range is the published one.

``make_problem(name, n_samples, random_state)`` draws ``X`` from the function's input
distribution and returns ``X, y`` with the exact (noise-free) function values;
``PROBLEMS`` maps the names to :class:`RegressionFunction` records.

Checks against the literature are in ``tests/test_peers_script.py``: Ishigami's
analytic mean and variance, the Sobol' G function's analytic mean and variance,
Friedman's function against scikit-learn's ``make_friedman1``, Hartmann 6-D's
published global minimum, the robot arm's stretched-arm value, and point values of
the independent implementations in UQTestFuns 0.7.0 (Wicaksono and Hecht, JOSS 2023).
"""

from dataclasses import dataclass, field

import numpy as np
from sklearn.utils import check_random_state

from sklearn_slimtrain.datasets import peaks

__all__ = ["PROBLEMS", "RegressionFunction", "make_problem"]


@dataclass(frozen=True)
class RegressionFunction:
    """A test function ``f`` on inputs uniform on the box ``[low, high]``."""

    name: str
    func: callable = field(repr=False)
    low: tuple
    high: tuple
    reference: str
    input_names: tuple = ()

    @property
    def n_features(self) -> int:
        return len(self.low)

    def sample(self, n_samples, random_state=None):
        rng = check_random_state(random_state)
        return rng.uniform(np.asarray(self.low, float), np.asarray(self.high, float), size=(n_samples, self.n_features))

    def __call__(self, X):
        return self.func(np.asarray(X, dtype=np.float64))


def borehole(X):
    """Water flow through a borehole [m^3/yr] (Harper and Gupta 1983; VLSE ``borehole``).

    ``2 pi Tu (Hu - Hl) / (ln(r/rw) (1 + 2 L Tu / (ln(r/rw) rw^2 Kw) + Tu/Tl))``.
    """
    rw, r, Tu, Hu, Tl, Hl, L, Kw = X.T
    log_ratio = np.log(r / rw)
    return 2 * np.pi * Tu * (Hu - Hl) / (log_ratio * (1 + 2 * L * Tu / (log_ratio * rw**2 * Kw) + Tu / Tl))


def otl_circuit(X):
    """Midpoint voltage of an output-transformerless push-pull circuit [V] (Ben-Ari and Steinberg 2007).

    ``Vb1 = 12 Rb2 / (Rb1 + Rb2)``; with ``B = beta (Rc2 + 9)``,
    ``Vm = (Vb1 + 0.74) B / (B + Rf) + 11.35 Rf / (B + Rf) + 0.74 Rf B / ((B + Rf) Rc1)``.
    """
    Rb1, Rb2, Rf, Rc1, Rc2, beta = X.T
    vb1 = 12 * Rb2 / (Rb1 + Rb2)
    b = beta * (Rc2 + 9)
    return (vb1 + 0.74) * b / (b + Rf) + 11.35 * Rf / (b + Rf) + 0.74 * Rf * b / ((b + Rf) * Rc1)


def piston(X):
    """Cycle time of a piston [s] (Kenett and Zacks 1998; Ben-Ari and Steinberg 2007).

    ``A = P0 S + 19.62 M - k V0 / S``, ``V = S / (2k) (sqrt(A^2 + 4 k P0 V0 Ta / T0) - A)``,
    ``C = 2 pi sqrt(M / (k + S^2 P0 V0 Ta / (T0 V^2)))``.
    """
    M, S, V0, k, P0, Ta, T0 = X.T
    A = P0 * S + 19.62 * M - k * V0 / S  # 19.62 = 2 g, as published
    V = S / (2 * k) * (np.sqrt(A**2 + 4 * k * P0 * V0 * Ta / T0) - A)
    return 2 * np.pi * np.sqrt(M / (k + S**2 * P0 * V0 * Ta / (T0 * V**2)))


def wing_weight(X):
    """Weight of a light aircraft wing [lb] (Forrester, Sobester and Keane 2008, section 1.3).

    ``0.036 Sw^0.758 Wfw^0.0035 (A / cos^2 Lam)^0.6 q^0.006 lam^0.04 (100 tc / cos Lam)^-0.3
    (Nz Wdg)^0.49 + Sw Wp``, the sweep ``Lam`` in degrees.
    """
    Sw, Wfw, A, Lam, q, lam, tc, Nz, Wdg, Wp = X.T
    cos = np.cos(np.deg2rad(Lam))
    return (
        0.036 * Sw**0.758 * Wfw**0.0035 * (A / cos**2) ** 0.6 * q**0.006 * lam**0.04
        * (100 * tc / cos) ** -0.3 * (Nz * Wdg) ** 0.49 + Sw * Wp
    )


def robot_arm(X):
    """Distance of a 4-segment robot arm's end from its shoulder (An and Owen 2001).

    ``u = sum_i L_i cos(theta_1 + ... + theta_i)``, ``v`` the same with ``sin``,
    ``f = sqrt(u^2 + v^2)``; inputs ``theta_1..4, L_1..4``.
    """
    theta, L = X[:, :4], X[:, 4:]
    angle = np.cumsum(theta, axis=1)
    u = (L * np.cos(angle)).sum(axis=1)
    v = (L * np.sin(angle)).sum(axis=1)
    return np.sqrt(u**2 + v**2)


def friedman(X):
    """Friedman's function (Friedman, Grosse and Stuetzle 1983; Friedman 1991; VLSE ``fried``).

    ``10 sin(pi x1 x2) + 20 (x3 - 0.5)^2 + 10 x4 + 5 x5`` (scikit-learn's ``make_friedman1``).
    """
    return 10 * np.sin(np.pi * X[:, 0] * X[:, 1]) + 20 * (X[:, 2] - 0.5) ** 2 + 10 * X[:, 3] + 5 * X[:, 4]


# Ishigami's constants a = 7, b = 0.1 (Sobol' and Levitan 1999; Marrel et al. 2009; VLSE's choice).
ISHIGAMI_A, ISHIGAMI_B = 7.0, 0.1


def ishigami(X):
    """Ishigami function (Ishigami and Homma 1990): ``sin x1 + a sin^2 x2 + b x3^4 sin x1``."""
    return np.sin(X[:, 0]) + ISHIGAMI_A * np.sin(X[:, 1]) ** 2 + ISHIGAMI_B * X[:, 2] ** 4 * np.sin(X[:, 0])


def welch(X):
    """Welch et al. (1992), 20 inputs on ``[-0.5, 0.5]``, x8 and x16 inert (VLSE ``welchetal92``)."""
    x = {i + 1: X[:, i] for i in range(20)}
    return (
        5 * x[12] / (1 + x[1]) + 5 * (x[4] - x[20]) ** 2 + x[5] + 40 * x[19] ** 3 - 5 * x[19]
        + 0.05 * x[2] + 0.08 * x[3] - 0.03 * x[6] + 0.03 * x[7] - 0.09 * x[9] - 0.01 * x[10]
        - 0.07 * x[11] + 0.25 * x[13] ** 2 - 0.04 * x[14] + 0.06 * x[15] - 0.01 * x[17] - 0.03 * x[18]
    )


# Sobol' G coefficients a = (0, 1, 4.5, 9, 99, 99, 99, 99): Saltelli and Sobol' (1995), Marrel et al. (2009),
# one of the choices listed by VLSE (``gfunc``); 8 inputs.
SOBOL_G_A = (0.0, 1.0, 4.5, 9.0, 99.0, 99.0, 99.0, 99.0)


def sobol_g(X):
    """Sobol' G function: ``prod_i (|4 x_i - 2| + a_i) / (1 + a_i)``."""
    a = np.asarray(SOBOL_G_A)
    return np.prod((np.abs(4 * X - 2) + a) / (1 + a), axis=1)


def franke(X):
    """Franke's function (Franke 1979; VLSE ``franke2d``), on ``[0, 1]^2``.

    The second term's exponent is ``-(9 x1 + 1)^2 / 49 - (9 x2 + 1) / 10``, ``9 x2 + 1`` not
    squared, as in Franke's report and VLSE's code (UQTestFuns 0.7.0 squares it).
    """
    x1, x2 = 9 * X[:, 0], 9 * X[:, 1]
    return (
        0.75 * np.exp(-((x1 - 2) ** 2) / 4 - (x2 - 2) ** 2 / 4)
        + 0.75 * np.exp(-((x1 + 1) ** 2) / 49 - (x2 + 1) / 10)
        + 0.5 * np.exp(-((x1 - 7) ** 2) / 4 - (x2 - 3) ** 2 / 4)
        - 0.2 * np.exp(-((x1 - 4) ** 2) - (x2 - 7) ** 2)
    )


# Hartmann 6-D constants (Dixon and Szego 1978, as listed by VLSE ``hart6``).
_HART_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_HART_A = np.array([
    [10, 3, 17, 3.5, 1.7, 8],
    [0.05, 10, 17, 0.1, 8, 14],
    [3, 3.5, 1.7, 10, 17, 8],
    [17, 8, 0.05, 10, 0.1, 14],
])
_HART_P = 1e-4 * np.array([
    [1312, 1696, 5569, 124, 8283, 5886],
    [2329, 4135, 8307, 3736, 1004, 9991],
    [2348, 1451, 3522, 2883, 3047, 6650],
    [4047, 8828, 8732, 5743, 1091, 381],
])


def hartmann6(X):
    """Hartmann 6-D function ``-sum_i alpha_i exp(-sum_j A_ij (x_j - P_ij)^2)`` on ``[0, 1]^6``."""
    inner = (_HART_A[None] * (X[:, None, :] - _HART_P[None]) ** 2).sum(axis=2)
    return -(np.exp(-inner) * _HART_ALPHA).sum(axis=1)


def _peaks(X):
    return peaks(X[:, 0], X[:, 1])


_VLSE = "https://www.sfu.ca/~ssurjano/"

PROBLEMS = {
    f.name: f
    for f in [
        RegressionFunction(
            "borehole", borehole,
            # uniform ranges of Morris, Mitchell and Ylvisaker (1993) and An and Owen (2001), as in VLSE (which
            # also lists Harper and Gupta's normal rw and lognormal r for UQ); Hu <= 1110 and Kw >= 9855 as in
            # VLSE, where UQTestFuns 0.7.0 has 1100 and 9985
            low=(0.05, 100, 63070, 990, 63.1, 700, 1120, 9855),
            high=(0.15, 50000, 115600, 1110, 116, 820, 1680, 12045),
            reference=f"{_VLSE}borehole.html; W. V. Harper, S. K. Gupta, BMI/ONWI-516, Battelle (1983); "
                      "M. D. Morris, T. J. Mitchell, D. Ylvisaker, Technometrics 35(3):243-255 (1993)",
            input_names=("rw", "r", "Tu", "Hu", "Tl", "Hl", "L", "Kw"),
        ),
        RegressionFunction(
            "otl_circuit", otl_circuit,
            low=(50, 25, 0.5, 1.2, 0.25, 50), high=(150, 70, 3, 2.5, 1.2, 300),
            reference=f"{_VLSE}otlcircuit.html; S. Ben-Ari, D. M. Steinberg, Quality Engineering 19(4):351-361 (2007)",
            input_names=("Rb1", "Rb2", "Rf", "Rc1", "Rc2", "beta"),
        ),
        RegressionFunction(
            "piston", piston,
            low=(30, 0.005, 0.002, 1000, 90000, 290, 340), high=(60, 0.020, 0.010, 5000, 110000, 296, 360),
            reference=f"{_VLSE}piston.html; R. Kenett, S. Zacks, Modern Industrial Statistics, Duxbury (1998); "
                      "Ben-Ari and Steinberg (2007)",
            input_names=("M", "S", "V0", "k", "P0", "Ta", "T0"),
        ),
        RegressionFunction(
            "wing_weight", wing_weight,
            low=(150, 220, 6, -10, 16, 0.5, 0.08, 2.5, 1700, 0.025),
            high=(200, 300, 10, 10, 45, 1, 0.18, 6, 2500, 0.08),
            reference=f"{_VLSE}wingweight.html; A. Forrester, A. Sobester, A. Keane, Engineering Design via "
                      "Surrogate Modelling, Wiley (2008)",
            input_names=("Sw", "Wfw", "A", "Lam", "q", "lam", "tc", "Nz", "Wdg", "Wp"),
        ),
        RegressionFunction(
            "robot_arm", robot_arm,
            low=(0, 0, 0, 0, 0, 0, 0, 0), high=(2 * np.pi,) * 4 + (1,) * 4,
            reference=f"{_VLSE}robot.html; J. An, A. Owen, J. Complexity 17(4):588-607 (2001)",
            input_names=("theta1", "theta2", "theta3", "theta4", "L1", "L2", "L3", "L4"),
        ),
        RegressionFunction(
            "friedman", friedman, low=(0,) * 5, high=(1,) * 5,
            reference=f"{_VLSE}fried.html; J. H. Friedman, Ann. Statist. 19(1):1-67 (1991)",
        ),
        RegressionFunction(
            "ishigami", ishigami, low=(-np.pi,) * 3, high=(np.pi,) * 3,
            reference=f"{_VLSE}ishigami.html; T. Ishigami, T. Homma, Proc. ISUMA '90, 398-403 (1990)",
        ),
        RegressionFunction(
            "welch", welch, low=(-0.5,) * 20, high=(0.5,) * 20,
            reference=f"{_VLSE}welchetal92.html; W. J. Welch et al., Technometrics 34(1):15-25 (1992)",
        ),
        RegressionFunction(
            "sobol_g", sobol_g, low=(0,) * 8, high=(1,) * 8,
            reference=f"{_VLSE}gfunc.html; A. Saltelli, I. M. Sobol', Reliab. Eng. Syst. Saf. 50(3):225-239 (1995)",
        ),
        RegressionFunction(
            "franke", franke, low=(0, 0), high=(1, 1),
            reference=f"{_VLSE}franke2d.html; R. Franke, Naval Postgraduate School report NPS-53-79-003 (1979)",
        ),
        RegressionFunction(
            "hartmann6", hartmann6, low=(0,) * 6, high=(1,) * 6,
            reference=f"{_VLSE}hart6.html; L. C. W. Dixon, G. P. Szego, Towards Global Optimisation 2 (1978)",
        ),
        RegressionFunction(
            "peaks", _peaks, low=(-3, -3), high=(3, 3),  # sklearn_slimtrain.datasets.make_peaks's box
            reference="MATLAB peaks; E. Newman et al., SIAM J. Sci. Comput. 44(4) (2022), section 4.1",
        ),
    ]
}


def make_problem(name, n_samples, random_state=None):
    """``X`` drawn uniformly from problem ``name``'s input box and ``y = f(X)`` (no noise)."""
    try:
        problem = PROBLEMS[name]
    except KeyError:
        raise ValueError(f"unknown problem {name!r}; choose from {sorted(PROBLEMS)}") from None
    X = problem.sample(n_samples, random_state)
    return X, problem(X)
