"""Normalizing flows: exact likelihood by change of variables through invertible transforms.

* ``nsf`` -- neural spline flow, autoregressive or coupling RQ-spline layers (Durkan et al. 2019);
* ``realnvp`` -- affine couplings for vectors and multi-scale images (Dinh et al. 2017);
* ``glow`` -- actnorm, invertible 1x1 convolutions and affine couplings, multi-scale
  (Kingma & Dhariwal 2018);
* ``maf`` / ``iaf`` -- MADE affine autoregressive flows: fast density / fast sampling
  (Papamakarios et al. 2017; Kingma et al. 2016);
* ``cnf`` -- continuous normalizing flow, FFJORD (Grathwohl et al. 2019), on the ODE solver of
  :mod:`dgm.samplers.ode`.

Shared pieces (import them from their modules): :mod:`.stack` (the layer loop of maf, iaf, nsf
and vector realnvp), :mod:`.splines` (the RQ spline), :mod:`.coupling` and :mod:`.autoregressive`
(the two ways to condition an elementwise map), :mod:`dgm.core.transforms` (interface,
permutations, composition) and :mod:`dgm.core.distributions` (base and flow); for images
:mod:`.affine` (checkerboard / channel couplings), :mod:`.actnorm`, :mod:`.conv1x1`,
:mod:`.multiscale` (squeeze, factor-out), :mod:`.elementwise` (logit / sigmoid) and
:mod:`.dequantization` (variational dequantization). Flows that take ``conditional=True`` are
conditioned on class labels through a one-hot context.
"""

from dgm.models.flows.cnf import CNF, CNFConfig
from dgm.models.flows.glow import Glow, GlowConfig
from dgm.models.flows.maf import IAF, MAF, MAFConfig
from dgm.models.flows.nsf import NSF, NSFConfig
from dgm.models.flows.realnvp import RealNVP, RealNVPConfig

__all__ = [
    "CNF",
    "IAF",
    "MAF",
    "NSF",
    "CNFConfig",
    "Glow",
    "GlowConfig",
    "MAFConfig",
    "NSFConfig",
    "RealNVP",
    "RealNVPConfig",
]
