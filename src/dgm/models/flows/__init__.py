"""Normalizing flows: exact likelihood by change of variables through invertible transforms.

* ``nsf`` -- neural spline flow, autoregressive or coupling RQ-spline layers (Durkan et al. 2019);
* ``realnvp`` -- affine coupling layers for vectors (Dinh et al. 2017).

Shared pieces: :mod:`.splines` (the RQ spline), :mod:`.coupling` and :mod:`.autoregressive`
(the two ways to condition an elementwise map), :mod:`dgm.core.transforms` (interface,
permutations, composition) and :mod:`dgm.core.distributions` (base and flow).
"""

from dgm.models.flows.autoregressive import MaskedAutoregressive
from dgm.models.flows.coupling import Coupling
from dgm.models.flows.nsf import NSF, NSFConfig
from dgm.models.flows.realnvp import RealNVP, RealNVPConfig
from dgm.models.flows.splines import RQSpline, rational_quadratic_spline

__all__ = [
    "NSF",
    "Coupling",
    "MaskedAutoregressive",
    "NSFConfig",
    "RQSpline",
    "RealNVP",
    "RealNVPConfig",
    "rational_quadratic_spline",
]
