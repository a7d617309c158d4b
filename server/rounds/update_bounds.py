"""Whether one merchant's decoded reply may enter the aggregate, and with what weight.

Pure numpy (no ``flwr``): the coordinator's round loop (:mod:`server.rounds`)
calls :func:`check_update` on every decoded train reply and :func:`check_global`
on every aggregate before it becomes the global model. A rejected reply is
left out of the aggregate; a rejected aggregate leaves the global model as it
was. Nothing non-finite is ever aggregated, checkpointed or sent to merchants.

What is checked, per reply
--------------------------
1. Shape: the reply carries exactly the global model's arrays, same shapes.
2. Finiteness: every value of every array is finite (no NaN, no +-Inf).
3. Size: the update ``reply - global`` (the global model the merchant was sent;
   compressed replies are first decoded against it, as :mod:`common.compression`
   defines) has L2 norm at most :attr:`UpdateBounds.max_norm`.
4. Weight: with privacy on (``privacy-unit`` user, interaction or client) every
   accepted reply weighs 1: FedAvg is uniform, whatever ``num-examples`` the
   merchant reported (honest merchants report 1; Flower's client-level DP
   wrapper accounts only uniform weights). Without privacy the reported
   ``num-examples`` must be a finite integer in ``[1, max-merchant-examples]``.

The bound on the update (derived, not guessed)
----------------------------------------------
Every merchant trains its shared parameters with ``torch.optim.Adam`` (default
``betas = (0.9, 0.999)``, ``eps = 1e-8``, no weight decay in the optimizer),
created afresh for each round: :class:`client.training.loop.NonPrivateStep` without
DP, :class:`client.training.private.PrivateStep` with DP, where Opacus's
optimizer (:mod:`client.training.dp_optimizer`) first turns the sum of per-user gradients
clipped to ``C`` into ``(sum + N(0, (sigma C)^2)) / (q n)``. Adam divides each
coordinate's first moment by the square root of its second moment, so the
*scale* of that gradient (``C``, ``sigma``, the expected batch ``q n``) cancels:
Adam step ``t`` moves each coordinate by at most ``lr * B_t``, for any
gradients, with

    B_t = (1 - b1) / (1 - b1^t) * sqrt((1 - b2^t) / (1 - b2)) * sqrt((1 - g^t) / (1 - g)),
    g = b1^2 / b2

(Cauchy-Schwarz on ``m_t = (1 - b1) sum_i b1^(t-i) g_i`` against
``v_t = (1 - b2) sum_i b2^(t-i) g_i^2``, then Adam's bias corrections; ``eps``
only shrinks the step). ``B_1 = 1``, ``B_100 = 2.24``, ``B_t -> 7.27``. After
``T`` steps from the global model, over ``d`` shared parameters,

    ||update||_2 <= lr * sqrt(d) * S(T),   S(T) = B_1 + ... + B_T        (deterministic)

and the coordinator accepts up to ``MARGIN`` (1.05) times that: the 5 % covers
float32 rounding over ``T`` steps while every ``|parameter| < 0.05 * lr * 2^24``.
An honest merchant is therefore **never** rejected (false-rejection probability
0, not merely small): the bound holds for every gradient and every noise draw.
Being ``sqrt(d)`` times a per-coordinate bound, it also holds for a compressed
update once decoded: an int8 value is at most its row's largest ``|delta|``, a
top-k value is a value of the delta.
A plain-SGD step would instead give ``lr * T * (|batch| C + k sigma C sqrt(d)) / (q n)``
with a probabilistic ``k``; it does not apply, because the step is Adam's.

``T``, the most steps a merchant takes in a round, comes from the run settings
the coordinator itself sent, and the largest merchant it admits,
``N = max-merchant-examples`` (users under user-level DP, interactions
otherwise):

* DP-SGD at the merchant (privacy-unit user or interaction, or client with
  device-epsilon) and ``local-steps > 0``: ``T = local-steps`` exactly;
* DP-SGD otherwise: ``T = ceil(local-epochs / min(1, batch-users / N))``, as
  :func:`common.privacy.accountant.plan_privacy` counts for a population ``N``
  (it grows with the population, so smaller merchants take fewer steps);
* no DP-SGD: ``T = local-epochs * ceil(N / batch-users)`` (one step per batch of
  users, ``local-epochs`` passes; a merchant has no more users than examples).

``max-update-norm > 0`` replaces the derived bound by the operator's.

What this bounds: with uniform weights and ``m`` accepted merchants, one
merchant moves the global model by at most ``max_norm / m`` in L2 (weighted:
by its weight share times ``max_norm``). The bound is as tight as ``N`` (or
``local-steps``) is: set ``max-merchant-examples`` to the largest merchant's
size. Per value, ``MARGIN * lr * S(T)`` is, at the private defaults (lr 0.1,
one local epoch, batch-users 512): 1.5e5 for the default ``N = 1e8`` (``T =
195,313``: it stops NaN, Inf and absurd updates such as 1e6 everywhere, little
more), 44 for ``N = 1e5`` (``T = 196``), 1.07 for ``N = 5,000`` (``T = 10``).
Honest private merchants measured in the tests use about 40 % of their bound.
Rejecting a DP release for its size is post-processing of it: it costs no
privacy. The bound assumes each round's Adam starts afresh (as the merchants'
code does); were its state kept across rounds, ``T * B_inf`` would bound it.

Under SecAgg+
-------------
The coordinator sees only the mean delta, never one merchant's. Per merchant,
the range check is SecAgg+'s own: Flower's quantiser clips every value of a
(weighted) delta to ``+-secagg-clip-range`` (and fedrec's merchants refuse to
send a delta outside it rather than have it clipped), so one merchant moves
each coordinate of the mean by at most ``secagg-clip-range / m``. On the
unmasked aggregate the coordinator checks (:func:`check_secure_aggregate`) that
it is finite, within ``+-secagg-clip-range`` per value (a mean of clipped values
with weights 1 is; a merchant sending a weight below 1, or one overflowing the
field, can break it), and within ``max_norm`` (a mean of updates each within it
is).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from common.config import TrainConfig
from common.privacy.config import PrivacyConfig

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which every merchant's step uses
MARGIN = 1.05  # float32 rounding over T steps (see the module docstring)

Arrays = Mapping[str, npt.NDArray[Any]]


def adam_step_bound(t: int, *, betas: tuple[float, float] = ADAM_BETAS) -> float:
    """``B_t``: the most one coordinate moves, in units of ``lr``, at Adam's step ``t`` (>= 1)."""
    if t < 1:
        raise ValueError(f"Adam steps count from 1, got {t}")
    b1, b2 = betas
    g = b1 * b1 / b2
    return (
        (1 - b1) / (1 - b1**t) * math.sqrt((1 - b2**t) / (1 - b2)) * math.sqrt((1 - g**t) / (1 - g))
    )


def adam_path_bound(steps: int, *, betas: tuple[float, float] = ADAM_BETAS) -> float:
    """``S(T) = B_1 + ... + B_T``: the most one coordinate moves in ``T`` fresh Adam steps / lr."""
    b_inf = adam_step_bound(10**9, betas=betas)
    head = min(steps, 100_000)  # past that, B_t equals its limit to 1e-40
    total = math.fsum(adam_step_bound(t, betas=betas) for t in range(1, head + 1))
    return total + (steps - head) * b_inf


def max_local_steps(train: TrainConfig, privacy: PrivacyConfig, *, max_examples: int) -> int:
    """``T``: the most local steps a merchant of at most ``max_examples`` takes in a round."""
    dp_sgd = privacy.merchant_dp or (privacy.unit == "client" and privacy.device_epsilon > 0)
    if privacy.local_steps > 0:  # DP-SGD and plain training alike take exactly this many
        return privacy.local_steps
    plain = train.local_epochs * math.ceil(max_examples / train.batch_users)
    if not dp_sgd:
        return plain
    # As plan_privacy counts (same float expression: it grows with the population).
    return max(1, math.ceil(train.local_epochs / min(1.0, train.batch_users / max_examples)))


@dataclass(frozen=True)
class UpdateBounds:
    """What the coordinator accepts from one merchant in a round; stated once per run."""

    max_norm: float  # L2 bound on reply - global model
    uniform_weights: bool  # privacy on: every accepted reply weighs 1
    max_weight: int  # privacy off: the largest num-examples a merchant may report
    derivation: str  # how max_norm was obtained, with the numbers

    def __post_init__(self) -> None:
        if not self.max_norm > 0 or not math.isfinite(self.max_norm):
            raise ValueError(f"max_norm must be a positive finite number, got {self.max_norm}")
        if self.max_weight < 1:
            raise ValueError(f"max_weight must be >= 1, got {self.max_weight}")

    def describe(self) -> str:
        weights = (
            "uniform (privacy on)"
            if self.uniform_weights
            else f"num-examples, an integer in [1, {self.max_weight:g}]"
        )
        return f"update L2 norm <= {self.max_norm:.4g} ({self.derivation}); weights {weights}"


GRAM_TAIL = 12.0  # chi tail: P(noise norm > sigma (sqrt(d) + t)) <= exp(-t^2 / 2) = 5e-32


def statistics_bound(*, max_examples: int, noise_multiplier: float, size: int) -> tuple[float, str]:
    """The largest honest statistics release (``gram`` of a model=ease round), in L2.

    Its update is the noisy Gram (the global one is zero before the release
    and ``items`` do not move). Each of at most ``N = max-merchant-examples``
    users adds ``x_u x_u^T`` of Frobenius norm ``||x_u||^2 <= 1``; the noise is a
    symmetric matrix whose upper triangle (``d' <= d`` entries) is ``sigma`` times a
    standard normal vector, so its Frobenius norm is at most ``sqrt(2)`` times
    that vector's, which exceeds ``sigma (sqrt(d') + t)`` with probability at most
    ``exp(-t^2 / 2)`` (Gaussian concentration of a 1-Lipschitz function).
    With ``t = 12`` an honest merchant is rejected with probability below 1e-31.
    """
    noise = math.sqrt(2.0) * noise_multiplier * (math.sqrt(size) + GRAM_TAIL)
    max_norm = MARGIN * (max_examples + noise)
    derivation = (
        f"statistics release: {MARGIN:g} x (N = {max_examples} users x 1 + sqrt(2) x sigma "
        f"{noise_multiplier:.4g} x (sqrt(d = {size}) + {GRAM_TAIL:g})); an honest merchant "
        "exceeds it with probability < 1e-31"
    )
    return max_norm, derivation


def derive_bounds(
    *,
    train: TrainConfig,
    privacy: PrivacyConfig,
    num_parameters: int,
    max_examples: int,
    max_update_norm: float = 0.0,
    statistics_noise: float | None = None,
) -> UpdateBounds:
    """The run's bounds: ``max_update_norm`` if > 0, else ``MARGIN * lr * sqrt(d) * S(T)``,
    or for a statistics model (``statistics_noise`` = its sigma) :func:`statistics_bound`."""
    if num_parameters < 1:
        raise ValueError(f"the global model needs at least one parameter, got {num_parameters}")
    if max_update_norm > 0:
        max_norm, derivation = max_update_norm, "max-update-norm, set by the operator"
    elif statistics_noise is not None:
        max_norm, derivation = statistics_bound(
            max_examples=max_examples, noise_multiplier=statistics_noise, size=num_parameters
        )
    else:
        steps = max_local_steps(train, privacy, max_examples=max_examples)
        path = adam_path_bound(steps)
        max_norm = MARGIN * train.learning_rate * math.sqrt(num_parameters) * path
        derivation = (
            f"{MARGIN:g} x lr {train.learning_rate:g} x sqrt(d = {num_parameters}) x "
            f"S(T = {steps} Adam steps) {path:.4g}"
        )
    return UpdateBounds(
        max_norm=max_norm,
        uniform_weights=privacy.enabled,
        max_weight=max_examples,
        derivation=derivation,
    )


@dataclass(frozen=True)
class Verdict:
    """One reply judged: accepted with ``weight``, or rejected for ``reason``."""

    accepted: bool
    reason: str = ""
    weight: float = 1.0
    norm: float = float("nan")  # the update's L2 norm, when it was computed


def _structure_problems(arrays: Arrays, reference: Arrays) -> list[str]:
    problems = []
    if set(arrays) != set(reference):
        missing, extra = sorted(set(reference) - set(arrays)), sorted(set(arrays) - set(reference))
        problems.append(f"arrays differ from the global model's (missing {missing}, extra {extra})")
    for name in sorted(set(arrays) & set(reference)):
        got, want = np.shape(arrays[name]), np.shape(reference[name])
        if got != want:
            problems.append(f"{name} has shape {got}, the global model {want}")
        elif not np.issubdtype(np.asarray(arrays[name]).dtype, np.number):
            problems.append(f"{name} is not numeric ({np.asarray(arrays[name]).dtype})")
    return problems


def non_finite(arrays: Arrays) -> str:
    """Which arrays hold NaN or Inf, and how many; the empty string if every value is finite."""
    found = []
    for name in sorted(arrays):
        values = np.asarray(arrays[name])
        nan, inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
        if nan or inf:
            counts = ", ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "Inf")) if n)
            found.append(f"{name} ({counts})")
    return f"non-finite values in {'; '.join(found)}" if found else ""


def update_norm(arrays: Arrays, reference: Arrays) -> float:
    """L2 norm of ``arrays - reference`` over every array, in float64."""
    total = math.fsum(
        float(np.square(np.asarray(arrays[n], np.float64) - np.asarray(r, np.float64)).sum())
        for n, r in reference.items()
    )
    return math.sqrt(total)


def _weight_problem(weight: object, cap: int) -> str:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        return f"num-examples {weight!r} is not a number"
    if not math.isfinite(weight) or weight != math.floor(weight):
        return f"num-examples {weight!r} is not a finite integer"
    if weight < 1:
        return f"num-examples {weight:g} is not positive"
    if weight > cap:
        return f"num-examples {weight:g} > max-merchant-examples {cap:g}"
    return ""


def check_update(
    arrays: Arrays, reference: Arrays, *, weight: object, bounds: UpdateBounds
) -> Verdict:
    """Judge one decoded reply against the global model it was sent (``reference``).

    Every problem is named in the reason (shape, non-finite values, weight, norm),
    so one rejection says all that was wrong with the reply.
    """
    problems = _structure_problems(arrays, reference)
    if problems:
        return Verdict(accepted=False, reason="; ".join(problems))
    bad_values = non_finite(arrays)
    if bad_values:
        problems.append(bad_values)
    accepted_weight = 1.0
    if not bounds.uniform_weights:
        weight_problem = _weight_problem(weight, bounds.max_weight)
        if weight_problem:
            problems.append(weight_problem)
        else:
            accepted_weight = float(weight)  # type: ignore[arg-type]
    norm = float("nan") if bad_values else update_norm(arrays, reference)
    if not bad_values and not norm <= bounds.max_norm:
        problems.append(f"update norm {norm:.4g} > bound {bounds.max_norm:.4g}")
    if problems:
        return Verdict(accepted=False, reason="; ".join(problems), norm=norm)
    return Verdict(accepted=True, weight=accepted_weight, norm=norm)


def check_global(arrays: Arrays, reference: Arrays) -> str:
    """Why an aggregate may not become the global model (other arrays, non-finite); "" if none."""
    problems = _structure_problems(arrays, reference)
    return "; ".join(problems) if problems else non_finite(arrays)


def check_secure_aggregate(
    arrays: Arrays,
    reference: Arrays,
    *,
    bounds: UpdateBounds,
    clipping_range: float,
    quantization_range: int,
) -> str:
    """Why a SecAgg+ result (global + mean delta) may not become the global model; "" if none.

    The mean of deltas each clipped to ``+-clipping_range`` with weights 1 lies
    in that range, and within ``bounds.max_norm`` when each delta does; the
    quantiser adds at most one step ``2 clipping_range / quantization_range``
    per value.
    """
    problem = check_global(arrays, reference)
    if problem:
        return problem
    step = 2.0 * clipping_range / quantization_range
    peak = max(
        (
            float(np.max(np.abs(np.asarray(arrays[n], np.float64) - np.asarray(r, np.float64))))
            for n, r in reference.items()
            if np.size(r)
        ),
        default=0.0,
    )
    problems = []
    if peak > clipping_range * (1 + 1e-6) + step:
        problems.append(
            f"mean delta value {peak:.4g} outside +-secagg-clip-range {clipping_range:g} "
            "(a merchant's SecAgg+ weight was not 1)"
        )
    norm = update_norm(arrays, reference)
    size = sum(int(np.size(r)) for r in reference.values())
    if norm > bounds.max_norm * (1 + 1e-6) + step * math.sqrt(size):
        problems.append(f"mean update norm {norm:.4g} > bound {bounds.max_norm:.4g}")
    return "; ".join(problems)
