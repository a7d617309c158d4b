"""The recommender interface: how a model represents a user, and the few operations
the rest of fedrec needs of it.

A model declares ``USER_REPRESENTATION``:

* :data:`LOCAL_VECTOR`: each user has their own parameters (a vector, a bias),
  learnt from their interactions (MF, NeuMF; :mod:`common.models.local_vector`);
* :data:`RECENT_ITEMS`: a user is the items they interacted with, most recent
  first (the history model, sequence models; :mod:`common.models.recent_items`).

Everything else talks to a model through :class:`Recommender`: the examples
of a batch of users and their per-user loss (training), the scores of every
item for a batch of users (evaluation, serving), the shared/local split of its
parameters (federation), and fitting a new user from a few items (fold-in).

*Shared* parameters (item embeddings, item biases, MLP weights) are what the
federation trains together. *Local* parameters (user embeddings and biases)
stay with the party that owns the users: they are never sent and never logged.
A model knows nothing else about federation or privacy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Final, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from common.models.config import ModelConfig
from common.models.registry import model_class

if TYPE_CHECKING:
    from common.data.dataset import UserItemData
    from common.models.batches import Batch, TrainingSettings

UserRepresentation = Literal["local-vector", "recent-items"]
LOCAL_VECTOR: Final = "local-vector"
RECENT_ITEMS: Final = "recent-items"


class Recommender(nn.Module, ABC):
    """A recommender as the rest of fedrec sees it.

    Subclasses declare ``USER_REPRESENTATION`` and list their user-owned
    parameters in ``LOCAL_PARAMETERS`` (names as in ``named_parameters()``);
    every other parameter is shared. Most models subclass one of the two
    representations' bases, which implement :meth:`make_batch` (and, for local
    vectors, the loss and fold-in) once for all their models.
    """

    USER_REPRESENTATION: ClassVar[UserRepresentation]
    LOCAL_PARAMETERS: ClassVar[tuple[str, ...]]

    def __init__(self, *, num_users: int, num_items: int) -> None:
        super().__init__()
        self.num_users = num_users
        self.num_items = num_items

    # --- training ----------------------------------------------------------------------
    @abstractmethod
    def make_batch(
        self,
        data: UserItemData,
        users: npt.NDArray[np.int64],
        settings: TrainingSettings,
        *,
        rng: np.random.Generator,
        item_pool: npt.NDArray[np.int64] | None = None,
    ) -> Batch:
        """The training examples of ``users`` (local indices into ``data``), drawn with ``rng``.

        With ``item_pool``, examples use only pool items where the model can
        restrict them (private training on items frequent enough to learn).
        """

    @abstractmethod
    def user_losses(self, batch: Batch, settings: TrainingSettings) -> torch.Tensor:
        """Each user's training loss on ``batch``, shape (B,), weight decay included.

        The batch loss is their sum or mean: each term depends on its own user's
        examples only, which is what per-user clipping (DP-SGD) needs.
        """

    # --- scoring -----------------------------------------------------------------------
    @abstractmethod
    def score_all(self, users: torch.Tensor, *, chunk_items: int = 4096) -> torch.Tensor:
        """Logits of every catalog item for each user: (len(users), num_items)."""

    @abstractmethod
    def item_vectors(self) -> list[nn.Embedding]:
        """Embedding tables indexed by item (item-to-item similarity)."""

    # --- a new user --------------------------------------------------------------------
    @abstractmethod
    def fold_in_user(
        self,
        positives: npt.NDArray[np.int64],
        negatives: npt.NDArray[np.int64],
        settings: TrainingSettings,
        *,
        iterations: int,
    ) -> None:
        """Fit user 0 to a new user's ``positives`` (against ``negatives``); shared
        parameters stay as they are.

        Called on a one-user model whose local parameters are zero, with at
        least one positive (:func:`client.serving.foldin.fold_in`).
        """

    # --- the party's data and initialisation -------------------------------------------
    def bind(self, data: UserItemData) -> None:
        """Give the model this party's data, if it scores from it (recent items); else no-op.

        Called wherever a model is built for one party's users, before training or scoring.
        """

    def initialised(self) -> None:
        """Adjust the generic initialisation of :func:`build_model` (no-op by default)."""

    # --- shared and local parameters ----------------------------------------------------
    def shared_parameters(self) -> dict[str, torch.Tensor]:
        """Name → tensor for every parameter the federation trains together."""
        return {
            name: param
            for name, param in self.named_parameters()
            if name not in self.LOCAL_PARAMETERS
        }

    def local_parameters(self) -> dict[str, torch.Tensor]:
        """Name → tensor for the user-owned parameters that never leave their owner."""
        return {
            name: param for name, param in self.named_parameters() if name in self.LOCAL_PARAMETERS
        }

    def fits_shared(self, shapes: dict[str, tuple[int, ...]]) -> bool:
        """Whether shared parameters of these shapes can be loaded (default: exactly ours)."""
        return shapes == {n: tuple(p.shape) for n, p in self.shared_parameters().items()}

    def load_shared(self, arrays: dict[str, torch.Tensor]) -> None:
        """Overwrite shared parameters in place; names and shapes must match exactly."""
        shared = self.shared_parameters()
        if set(arrays) != set(shared):
            missing = sorted(set(shared) - set(arrays))
            extra = sorted(set(arrays) - set(shared))
            raise ValueError(f"shared parameters mismatch: missing {missing}, unexpected {extra}")
        with torch.no_grad():
            for name, tensor in arrays.items():
                if tensor.shape != shared[name].shape:
                    raise ValueError(
                        f"shared parameter {name!r}: shape {tuple(tensor.shape)} "
                        f"does not match the model's {tuple(shared[name].shape)}"
                    )
                shared[name].copy_(tensor)

    def clipping_problem(self) -> str | None:
        """Why exact per-user clipping (:mod:`client.training.clipping`) cannot cover this
        model as configured, or None when it can; private training refuses the model then."""
        return None

    def example_sizes(self) -> npt.NDArray[np.int64] | None:
        """Each user's training size when it sets a batch's cost (a sequence model: history
        length), so local steps can draw users of similar size together; None otherwise."""
        return None

    def load_local(self, arrays: dict[str, torch.Tensor]) -> None:
        """Overwrite local (user) parameters in place."""
        local = self.local_parameters()
        with torch.no_grad():
            for name, tensor in arrays.items():
                local[name].copy_(tensor)


def build_model(
    config: ModelConfig, *, num_users: int, num_items: int, generator: torch.Generator
) -> Recommender:
    """Construct the registered ``config.kind`` (:mod:`common.models.registry`) and
    initialise it from an explicit random generator."""
    model = model_class(config.kind)(config, num_users=num_users, num_items=num_items)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                if module.embedding_dim == 1:  # bias tables start at zero
                    module.weight.zero_()
                else:
                    module.weight.normal_(0.0, config.init_std, generator=generator)
            elif isinstance(module, nn.Linear):  # Xavier-uniform from the same generator
                bound = (6.0 / sum(module.weight.shape)) ** 0.5
                module.weight.uniform_(-bound, bound, generator=generator)
                module.bias.zero_()
    model.initialised()
    return model
