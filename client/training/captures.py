"""What each hooked module saw in one step, and its users' gradients in closed form.

One capture per module owning shared parameters (:class:`~client.training.clipping.PerUserClipper`
installs them): a forward hook records each call's inputs and the user slot of
every row, and the output's gradient comes back from the one backward pass.
:meth:`_Capture.per_user` turns these into each user's squared gradient norm
and a function adding the factor-weighted sum of users' gradients to
``.grad``; every cost is proportional to the rows the batch touched, never to
the catalog:

* ``nn.Embedding``: rows of one (user, item) pair are summed (over every call,
  so a table read as input and as tied output is one gradient), then squared.
* ``nn.Linear``: ``G_u = sum_r b_r a_r^T`` (output grad times input), by
  batched matmuls over padded blocks of users; the clipped sum is one matmul.
* ``nn.LayerNorm``: ``weight`` gets ``sum_r b_r * xhat_r`` (elementwise, with
  ``xhat`` the normalised input) and ``bias`` ``sum_r b_r``.
* :class:`~common.models.layers.Offset`: a row's gradient of the scalar is the
  sum of its output's gradient.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from common.models.layers import Offset

LINEAR_CHUNK_FLOATS = 1_000_000  # bound on each padded block of per-user linear gradients


@dataclass
class _Call:
    """One forward call of a hooked module: what went in, and the gradient that came back."""

    slot: torch.Tensor  # (m,) user slot of each flattened row
    inputs: torch.Tensor | None  # embedding: (m,) ids; linear: (m, in); offset: None
    leaf: torch.Tensor | None = None  # detached stand-in for the output, when one was made
    grad: torch.Tensor | None = None  # gradient of the output, set by a tensor hook

    def output_grad(self) -> torch.Tensor | None:
        return self.leaf.grad if self.leaf is not None else self.grad


def _row_slots(row_slot: torch.Tensor, leading: int, rows: int, *, name: str) -> torch.Tensor:
    """User slot of each row once an (n, ..., features) tensor is flattened to (rows, features)."""
    n = len(row_slot)
    if leading != n:
        raise ValueError(
            f"{name} was called on {leading} rows but the batch has {n} rows (row_slot): "
            "inside loss_fn every call of a module owning shared parameters must be aligned "
            "with row_slot, one row per example row."
        )
    if rows == n or n == 0:
        return row_slot
    return row_slot.repeat_interleave(rows // n)  # (rows,)


Accumulate = Callable[[torch.Tensor], None]  # adds sum_u factor[u] * g_u to the .grad fields


def _cat(parts: list[torch.Tensor | None], empty: torch.Tensor) -> torch.Tensor:
    """Rows of all parts (``empty`` if there are none)."""
    tensors = [t for t in parts if t is not None]
    if len(tensors) == 1:  # one call (a sequence model's layers): no copy
        return tensors[0]
    return torch.cat(tensors) if tensors else empty


class Capture(ABC):
    """Hooks one module owning shared parameters; turns its row grads into per-user terms.

    Per step: :meth:`install`, forward and backward, :meth:`remove`, :meth:`per_user`.
    """

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name = name
        self.module = module
        self.calls: list[_Call] = []
        self.row_slot = torch.empty(0, dtype=torch.int64)
        self._handle: RemovableHandle | None = None
        self.trained: dict[str, torch.Tensor] = {}

    def install(self, row_slot: torch.Tensor) -> None:
        self.calls, self.row_slot = [], row_slot
        params = self.module.named_parameters(recurse=False)
        self.trained = {n: p for n, p in params if p.requires_grad}
        for p in self.trained.values():
            p.requires_grad_(False)
        self._handle = self.module.register_forward_hook(self._hook)

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        for p in self.trained.values():
            p.requires_grad_(True)

    def _record(self, output: torch.Tensor, call: _Call) -> torch.Tensor:
        """Arrange to receive the gradient of ``output``; return what the model should see."""
        self.calls.append(call)
        if output.requires_grad:  # an upstream input needs its grad: keep the graph, observe
            output.register_hook(lambda grad: setattr(call, "grad", grad))
            return output
        call.leaf = output.detach().requires_grad_(True)  # nothing upstream: a fresh leaf
        return call.leaf

    def _done(self) -> list[tuple[_Call, torch.Tensor]]:
        """The calls whose output reached the loss, with their output gradients."""
        return [(c, g) for c in self.calls if (g := c.output_grad()) is not None]

    def _add_grad(self, name: str, value: torch.Tensor) -> None:
        param = self.trained[name]
        if param.grad is None:
            param.grad = value
        else:
            param.grad += value

    @abstractmethod
    def _hook(
        self, module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> torch.Tensor:
        """Forward hook: record the call, return the (possibly replaced) output."""

    @abstractmethod
    def per_user(self, num_users: int) -> tuple[torch.Tensor, Accumulate]:
        """(B,) squared norms of each user's gradient of the trained parameters, and the
        function that adds the factor-weighted sum of those gradients to ``.grad``."""


class EmbeddingCapture(Capture):
    module: nn.Embedding

    def _hook(
        self, module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> torch.Tensor:
        ids = args[0]
        slot = _row_slots(self.row_slot, ids.shape[0], ids.numel(), name=self.name)
        return self._record(output, _Call(slot=slot, inputs=ids.reshape(-1)))  # ids (m,)

    def per_user(self, num_users: int) -> tuple[torch.Tensor, Accumulate]:
        weight = self.module.weight
        items_n, dim = weight.shape
        done = self._done()
        ids = _cat([c.inputs for c, _ in done], torch.empty(0, dtype=torch.int64))  # (m,)
        slot = _cat([c.slot for c, _ in done], torch.empty(0, dtype=torch.int64))  # (m,)
        grads = _cat([g.reshape(-1, dim) for _, g in done], weight.new_zeros(0, dim))  # (m, dim)
        if self.module.padding_idx is not None:  # autograd gives that row no gradient
            grads = grads * (ids != self.module.padding_idx).unsqueeze(1).to(grads.dtype)
        key = slot * items_n + ids  # (m,) one int64 per (user, item) pair
        unique, inverse = torch.unique(key, return_inverse=True)  # (P,), (m,)
        pair_grads = grads.new_zeros(len(unique), dim).index_add_(0, inverse, grads)  # (P, dim)
        pair_slot, pair_items = unique // items_n, unique % items_n  # (P,), (P,)

        def accumulate(factor: torch.Tensor) -> None:
            scaled = pair_grads * factor.to(grads.dtype)[pair_slot].unsqueeze(1)  # (P, dim)
            self._add_grad("weight", torch.zeros_like(weight).index_add_(0, pair_items, scaled))

        norm_sq = grads.new_zeros(num_users).index_add_(0, pair_slot, pair_grads.pow(2).sum(1))
        return norm_sq, accumulate


class LinearCapture(Capture):
    module: nn.Linear

    def _hook(
        self, module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> torch.Tensor:
        x = args[0]
        in_f = self.module.in_features
        slot = _row_slots(self.row_slot, x.shape[0], x.numel() // in_f, name=self.name)
        return self._record(output, _Call(slot=slot, inputs=x.detach().reshape(-1, in_f)))

    def per_user(self, num_users: int) -> tuple[torch.Tensor, Accumulate]:
        weight = self.module.weight
        out_f, in_f = weight.shape
        done = self._done()
        slot = _cat([c.slot for c, _ in done], torch.empty(0, dtype=torch.int64))  # (m,)
        a = _cat([c.inputs for c, _ in done], weight.new_zeros(0, in_f))  # (m, in)
        b = _cat([g.reshape(-1, out_f) for _, g in done], weight.new_zeros(0, out_f))  # (m, out)
        norm_sq = b.new_zeros(num_users)  # (B,)
        if "weight" in self.trained:
            norm_sq += _outer_sum_norm_sq(slot, a, b, num_users)
        if "bias" in self.trained:
            bias_per_user = b.new_zeros(num_users, out_f).index_add_(0, slot, b)  # (B, out)
            norm_sq += bias_per_user.pow(2).sum(1)

        def accumulate(factor: torch.Tensor) -> None:
            scaled = b * factor.to(b.dtype)[slot].unsqueeze(1)  # (m, out)
            if "weight" in self.trained:
                self._add_grad("weight", scaled.T @ a)  # (out, in)
            if "bias" in self.trained:
                self._add_grad("bias", scaled.sum(0))  # (out,)

        return norm_sq, accumulate


def _outer_sum_norm_sq(
    slot: torch.Tensor, a: torch.Tensor, b: torch.Tensor, num_users: int
) -> torch.Tensor:
    """(B,) squared Frobenius norm of ``G_u = sum_{r: slot[r] = u} b_r a_r^T``.

    Users are ordered by row count and cut into blocks of similar counts; a
    block's rows are zero-padded to (users, width, features) and its ``G``
    comes from one batched matmul. Each padded tensor stays within
    ``LINEAR_CHUNK_FLOATS``; the work is about ``rows * out * in``. When every
    user has the same rows, in user order (a layer called on (B, L, features)),
    the rows are already that block and are viewed, not copied.
    """
    in_f, out_f = a.shape[1], b.shape[1]
    counts = torch.bincount(slot, minlength=num_users)  # (B,)
    width = int(counts[0]) if num_users else 0
    if (
        width
        and len(slot) == width * num_users
        and bool((slot[::width] == torch.arange(num_users)).all())
        and bool((slot[1:] >= slot[:-1]).all())
    ):
        return _uniform_outer_norm_sq(
            a.view(num_users, width, in_f), b.view(num_users, width, out_f)
        )
    by_count = torch.argsort(counts, stable=True)  # (B,) users, fewest rows first
    rank = torch.empty_like(by_count)
    rank[by_count] = torch.arange(num_users)  # (B,) position of each user in by_count
    row_rank = rank[slot]  # (m,)
    order = torch.argsort(row_rank, stable=True)  # (m,) row ids grouped by user, in that order
    sorted_counts = counts[by_count]  # (B,) ascending
    first_row = torch.cumsum(sorted_counts, 0) - sorted_counts  # (B,) in ``order``
    pos = torch.arange(len(order)) - first_row[row_rank[order]]  # (m,) row within its user
    widths, starts = sorted_counts.tolist(), first_row.tolist() + [len(order)]
    total = a.new_zeros(num_users)  # (B,)
    first = next((u for u, c in enumerate(widths) if c > 0), num_users)
    while first < num_users:
        last = first + 1  # grow the block of users while its padded tensors fit the budget
        while (
            last < num_users
            and (last + 1 - first) * max(widths[last] * max(in_f, out_f), out_f * in_f)
            <= LINEAR_CHUNK_FLOATS
        ):
            last += 1
        users, width = last - first, widths[last - 1]
        rows = order[starts[first] : starts[last]]  # (k,) row ids of the block
        dest = (row_rank[rows] - first) * width + pos[starts[first] : starts[last]]  # (k,)
        a_pad = a.new_zeros(users * width, in_f).index_copy_(0, dest, a.index_select(0, rows))
        b_pad = b.new_zeros(users * width, out_f).index_copy_(0, dest, b.index_select(0, rows))
        grads = torch.bmm(  # (users, out, in)
            b_pad.view(users, width, out_f).transpose(1, 2), a_pad.view(users, width, in_f)
        )
        total[by_count[first:last]] = torch.linalg.vector_norm(grads.flatten(1), dim=1).square()
        first = last
    return total


def _uniform_outer_norm_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,) ``||b_u^T a_u||_F^2`` for a (B, L, in) and b (B, L, out), in blocks of users
    whose (users, out, in) gradients stay within ``LINEAR_CHUNK_FLOATS``."""
    users, _, in_f = a.shape
    out_f = b.shape[2]
    step = max(1, LINEAR_CHUNK_FLOATS // (in_f * out_f))
    total = a.new_zeros(users)
    for first in range(0, users, step):
        block = slice(first, first + step)
        grads = torch.bmm(b[block].transpose(1, 2), a[block])  # (users, out, in)
        total[block] = torch.linalg.vector_norm(grads.flatten(1), dim=1).square()
    return total


class OffsetCapture(Capture):
    module: Offset

    def _hook(
        self, module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> torch.Tensor:
        slot = _row_slots(self.row_slot, args[0].shape[0], args[0].shape[0], name=self.name)
        return self._record(output, _Call(slot=slot, inputs=None))

    def per_user(self, num_users: int) -> tuple[torch.Tensor, Accumulate]:
        bias = self.module.bias
        grad_per_user = bias.new_zeros(num_users)  # (B,) each user's gradient of the scalar
        for call, grad in self._done():  # grad (n, ...): the scalar was added to every element
            row_grad = grad.flatten(1).sum(1) if grad.dim() > 1 else grad  # (n,)
            grad_per_user.index_add_(0, call.slot, row_grad)

        def accumulate(factor: torch.Tensor) -> None:
            total = (grad_per_user * factor.to(grad_per_user.dtype)).sum()
            self._add_grad("bias", total.reshape(bias.shape))

        return grad_per_user.pow(2), accumulate


class LayerNormCapture(Capture):
    module: nn.LayerNorm

    def _hook(
        self, module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> torch.Tensor:
        x = args[0]
        shape = self.module.normalized_shape
        features = self.module.weight.numel()
        slot = _row_slots(self.row_slot, x.shape[0], x.numel() // features, name=self.name)
        xhat = F.layer_norm(x.detach(), shape, None, None, self.module.eps)  # no affine
        return self._record(output, _Call(slot=slot, inputs=xhat.reshape(-1, features)))

    def per_user(self, num_users: int) -> tuple[torch.Tensor, Accumulate]:
        weight = self.module.weight
        features = weight.numel()
        done = self._done()
        slot = _cat([c.slot for c, _ in done], torch.empty(0, dtype=torch.int64))  # (m,)
        xhat = _cat([c.inputs for c, _ in done], weight.new_zeros(0, features))  # (m, f)
        b = _cat([g.reshape(-1, features) for _, g in done], weight.new_zeros(0, features))
        per_row = {"weight": b * xhat, "bias": b}  # (m, f) each: a row's gradient
        norm_sq = b.new_zeros(num_users)  # (B,)
        for name in self.trained:
            per_user = b.new_zeros(num_users, features).index_add_(0, slot, per_row[name])
            norm_sq += per_user.pow(2).sum(1)

        def accumulate(factor: torch.Tensor) -> None:
            scale = factor.to(b.dtype)[slot].unsqueeze(1)  # (m, 1)
            for name in self.trained:
                param = self.trained[name]
                self._add_grad(name, (per_row[name] * scale).sum(0).view_as(param))

        return norm_sq, accumulate
