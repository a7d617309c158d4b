"""Per-user clipping of shared-parameter gradients in one backward pass.

DP-SGD bounds each *user's* contribution: user ``u``'s gradient ``g_u`` of all
shared parameters (concatenated) is scaled by ``min(1, max_norm / (||g_u|| +
1e-6))`` and the scaled gradients are summed (the ``1e-6`` keeps the factor
finite for a zero gradient, as in Opacus).

Opacus builds per-sample ``nn.Embedding`` gradients as dense (batch, catalog,
dim) tensors; here every cost is proportional to the rows the batch touches.
Forward hooks on the modules owning shared parameters record each row's inputs
while those parameters stop requiring grad (so autograd never builds a
catalog-sized gradient); one ``.backward()`` gives the gradient of every hooked
output per row, row ``r`` belongs to user ``row_slot[r]``, and per-user norms
and the clipped sum follow in closed form, module by module
(:mod:`client.training.captures`: ``nn.Embedding``, ``nn.Linear``,
``nn.LayerNorm`` and :class:`~common.models.layers.Offset`). Parameter-free
operations between them (attention's softmax, activations, dropout) need
nothing: autograd carries each row's gradient through them. A module called
on (B, L, features) inputs (a sequence model) gives L rows per user.

Local (user-owned) parameters get their ordinary, unclipped gradient. Shared
parameters must be used only through their module's forward: a direct use of
``module.weight`` inside ``loss_fn`` would silently get no gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from client.training.captures import (
    Capture,
    EmbeddingCapture,
    LayerNormCapture,
    LinearCapture,
    OffsetCapture,
)
from common.models.base import Recommender
from common.models.layers import Offset

CLIP_EPSILON = 1e-6  # added to each norm before dividing, as Opacus does
CAPTURES: dict[type[nn.Module], type[Capture]] = {
    nn.Embedding: EmbeddingCapture,
    nn.Linear: LinearCapture,
    nn.LayerNorm: LayerNormCapture,
    Offset: OffsetCapture,
}
SUPPORTED_MODULES = tuple(CAPTURES)


@dataclass(frozen=True)
class ClipResult:
    per_user_loss: torch.Tensor  # (B,) detached
    norms: torch.Tensor  # (B,) L2 norm of each user's full shared-parameter gradient, unclipped


def _problem(name: str, module: nn.Module, local: tuple[str, ...]) -> str | None:
    """Why per-user clipping cannot handle the shared parameters of ``module``, if it cannot."""
    owned = [f"{name}.{n}" if name else n for n, _ in module.named_parameters(recurse=False)]
    if not isinstance(module, SUPPORTED_MODULES):
        return f"{owned} (owned by {type(module).__name__})"
    if any(n in local for n in owned):
        return f"{owned} (their {type(module).__name__} also owns local parameters)"
    if isinstance(module, nn.Embedding) and (
        module.max_norm is not None or module.scale_grad_by_freq or module.sparse
    ):
        return f"{owned} (nn.Embedding with max_norm, scale_grad_by_freq or sparse)"
    return None


class PerUserClipper:
    """Per-user clipped sum of shared-parameter gradients with one backward pass.

    Every shared parameter must be owned directly by a plain ``nn.Embedding``,
    an ``nn.Linear``, an ``nn.LayerNorm`` or an :class:`~common.models.layers.Offset`
    holding no local parameter; anything else is refused at construction,
    naming the parameters.
    """

    def __init__(self, model: Recommender, *, max_norm: float) -> None:
        if not 0 < max_norm < float("inf"):
            raise ValueError(
                f"The clipping norm should be a positive finite value, got {max_norm}."
            )
        self.model = model
        self.max_norm = float(max_norm)
        modules = dict(model.named_modules())
        owners: dict[str, nn.Module] = {}
        for param_name in model.shared_parameters():
            owner = param_name.rpartition(".")[0]
            owners[owner] = modules[owner]
        problems = [
            problem
            for name, module in owners.items()
            if (problem := _problem(name, module, model.LOCAL_PARAMETERS)) is not None
        ]
        if problems:
            supported = ", ".join(t.__name__ for t in SUPPORTED_MODULES)
            raise ValueError(
                "Per-user clipping cannot attribute the gradient of shared parameters "
                f"{'; '.join(problems)}. Each shared parameter must belong directly to one of "
                f"{supported} (plain, with no local parameter in the same module)."
            )
        self._captures = [
            CAPTURES[next(t for t in CAPTURES if isinstance(module, t))](name, module)
            for name, module in owners.items()
        ]

    def backward(
        self, loss_fn: Callable[[], torch.Tensor], *, row_slot: torch.Tensor, num_users: int
    ) -> ClipResult:
        """Run ``loss_fn`` (returns (B,) per-user losses) and backpropagate their sum once.

        Local parameters get the ordinary gradient of the summed loss; every
        shared parameter ``p`` that requires grad gets
        ``sum_u min(1, max_norm / (||g_u|| + 1e-6)) * g_u`` (dense, zero where no
        user touched it). Both are *added* to an existing ``.grad``, as autograd
        does, so zero the grads first; with disjoint users this also sums clipped
        gradients over several physical batches.
        """
        if row_slot.dim() != 1 or row_slot.dtype != torch.int64:
            raise ValueError(
                "row_slot must be a 1-D int64 tensor, "
                f"got {row_slot.dtype} of shape {tuple(row_slot.shape)}."
            )
        if len(row_slot) and not 0 <= int(row_slot.min()) <= int(row_slot.max()) < num_users:
            raise ValueError(f"row_slot values must lie in [0, {num_users}).")
        active = [
            capture
            for capture in self._captures
            if any(p.requires_grad for p in capture.module.parameters(recurse=False))
        ]
        installed: list[Capture] = []
        try:
            try:
                for capture in active:
                    installed.append(capture)  # first: remove() undoes a partial install
                    capture.install(row_slot)
                losses = loss_fn()
                if losses.shape != (num_users,):
                    raise ValueError(
                        f"loss_fn must return one loss per user, shape ({num_users},), "
                        f"got {tuple(losses.shape)}."
                    )
                losses.sum().backward()
            finally:
                for capture in installed:
                    capture.remove()
            terms = [capture.per_user(num_users) for capture in active]
            norm_sq = torch.zeros(num_users, dtype=losses.dtype)  # (B,)
            for user_norm_sq, _ in terms:
                norm_sq += user_norm_sq.to(norm_sq.dtype)
            norms = norm_sq.sqrt()  # (B,)
            factor = (self.max_norm / (norms + CLIP_EPSILON)).clamp(max=1.0)  # (B,)
            for _, accumulate in terms:
                accumulate(factor)
        finally:
            for capture in installed:
                capture.calls = []  # drop the recorded activations
        return ClipResult(per_user_loss=losses.detach(), norms=norms)
