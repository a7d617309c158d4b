"""What ``fedrec serve`` answers from: one immutable snapshot of a merchant's model.

A :class:`ServingIndex` joins the federation's global model with this
merchant's durable state (its users' vectors and interactions). It is built
once per global model version, off the request path, and then only read:
requests hold a reference to one snapshot, so a reload swaps the reference
and never disturbs a request in flight.

Recommend, for a user ID of this merchant (pseudonymised exactly as at
enrolment when the state has a pseudonymisation key):

* **personal**: a model of local user vectors (MF, NeuMF) scores with the
  vector fitted here; a recent-items model (SASRec, the history model) reads
  the user's stored history, every item they have here in time order, with
  the request's ``recent_item_ids`` (oldest first) after it;
* **fold-in**: an unseen user with recent items gets a vector folded in from
  them (:mod:`client.serving.foldin`), no retraining;
* **recent-items**: an unseen user with recent items, under a recent-items
  model: the items are the user's sequence, read as is, nothing fitted;
* **popularity**: an unseen user with no usable recent items gets the
  federation's private item counts after a private run, otherwise this
  merchant's own counts (which never leave it).

After a private run the merchant serves what it chose on its held-out items
(:mod:`common.source_choice`, saved with the model or in its state): the
model's scores as above, DP popularity for everyone, or a blend of the two.
Each answer says which source served it.

Items outside the federation catalog are never recommended; recent items
outside it are skipped and reported back, and ``Similar`` for one is
``not found``. After a private run, items the federation did not train rank
below every trained item by popularity (as in training and evaluation).
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from client.serving.defaults import MAX_K
from client.serving.foldin import fold_in
from client.serving.model_dir import GlobalModel
from client.serving.personalise import personalise
from client.state.store import MerchantStore
from common.constants import MERCHANT_CATALOG_DIGEST_FILE, MERCHANT_PSEUDONYM_KEY_FILE
from common.data.catalog import catalog_digest
from common.data.dataset import UserItemData
from common.errors import FedrecError, RunDirError
from common.models.base import Recommender, build_model
from common.models.recent_items import RecentItemsRecommender
from common.seeding import numpy_rng
from common.source_choice import (
    MODEL,
    SourceChoice,
    blend,
    describe_source,
    popularity_scores,
    shared_fingerprint,
)
from common.source_choice import (
    POPULARITY as POPULARITY_SOURCE,
)

logger = logging.getLogger(__name__)

PERSONAL, FOLD_IN, POPULARITY = "personal", "fold-in", "popularity"
SEQUENCE = "recent-items"  # an unseen user read from their recent items (recent-items models)


class ServingError(FedrecError):
    """A request the index cannot answer; ``status`` names the gRPC status code."""

    status = "INVALID_ARGUMENT"


class InvalidRequest(ServingError):
    status = "INVALID_ARGUMENT"


class UnknownItem(ServingError):
    status = "NOT_FOUND"


class UntrainedItem(ServingError):
    status = "FAILED_PRECONDITION"


@dataclass(frozen=True)
class Recommendation:
    items: tuple[tuple[str, float], ...]  # (item key, score), best first
    strategy: str
    unknown_items: tuple[str, ...]  # recent item IDs outside the federation catalog
    source: str = MODEL  # what served it: model, blend or popularity (common.source_choice)


@dataclass(frozen=True)
class ServingOptions:
    personalisation: float = (
        math.inf
    )  # proximal lambda; inf = global model (`fedrec serve` passes its measured default)
    fine_tune_epochs: int = 2
    max_k: int = MAX_K
    seed: int = 0


class ServingIndex:
    """A read-only snapshot: global model + this merchant's users. Thread-safe to query."""

    def __init__(
        self,
        model: Recommender,
        *,
        global_model: GlobalModel,
        data: UserItemData,
        options: ServingOptions,
        pseudonym_key: bytes | None,
        popularity: npt.NDArray[np.float64],
        popularity_source: str,
        users_fitted_here: bool,
        choice: SourceChoice | None = None,
    ) -> None:
        self.model = model.eval()
        self.version = global_model.version
        self.kind = global_model.run.model.kind
        self.keys = global_model.catalog.keys
        self.key_array = np.asarray(self.keys, dtype=object)
        self.index_of = {key: i for i, key in enumerate(self.keys)}
        self.options = options
        self.train_config = global_model.run.train
        self.data = data
        self.user_index = {key: i for i, key in enumerate(data.user_keys)}
        self.pseudonym_key = pseudonym_key
        self.popularity_source = popularity_source
        self.users_fitted_here = users_fitted_here
        self.max_k = min(options.max_k, len(self.keys))
        num_items = len(self.keys)
        prior = global_model.prior
        self.trained = np.ones(num_items, dtype=bool) if prior is None else prior.trained_mask()
        self.trained_items = np.flatnonzero(self.trained)
        # Untrained items sit below every trained one, in popularity order (ItemPrior.apply).
        order = np.argsort(np.argsort(popularity, kind="stable"), kind="stable")
        self._fallback_rank = (order / num_items).astype(np.float32)  # (items,) in [0, 1)
        self._popular = np.argsort(-popularity, kind="stable")  # (items,) most popular first
        self._popular_scores = popularity.astype(np.float32)
        self.choice = choice
        self._weight = 0.0 if choice is None else choice.weight  # popularity's weight served
        self._popularity_z = popularity_scores(popularity).astype(np.float32)
        # Every item a user interacted with (training and held out), as CSR by user.
        seen_users = np.concatenate([data.train_users, data.test_users])
        seen_items = np.concatenate([data.train_items, data.test_items])
        by_user = np.lexsort((seen_items, seen_users))
        self._seen_items = seen_items[by_user]
        self._seen_ptr = np.searchsorted(seen_users[by_user], np.arange(data.num_users + 1))
        with torch.no_grad():  # recent-items tables carry a padding row past the catalog
            vectors = torch.cat([t.weight[:num_items] for t in model.item_vectors()], 1).numpy()
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self._unit_items = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)  # (items, d)
        self._mf = self.kind == "mf"
        if self._mf:
            state = {n: p.detach().numpy() for n, p in model.named_parameters()}
            self._q = np.ascontiguousarray(state["item_embedding.weight"], dtype=np.float32)
            self._item_bias = (
                state["item_bias.weight"][:, 0] + state["global_bias.bias"][0]
            ).astype(np.float32)
            self._p = state["user_embedding.weight"].astype(np.float32)
            self._user_bias = state["user_bias.weight"][:, 0].astype(np.float32)
        self._fold_model = build_model(
            global_model.run.model,
            num_users=1,
            num_items=num_items,
            generator=torch.Generator().manual_seed(options.seed),
        )
        self._fold_model.load_shared({n: p.detach() for n, p in model.shared_parameters().items()})
        self._fold_model.eval()
        self._fold_lock = threading.Lock()
        self._sequences = isinstance(model, RecentItemsRecommender)
        # Each user's items in time order (training, then the held-out last one).
        self._history_ptr, self._history, self._history_events = data.histories()

    # --- building -------------------------------------------------------------------------
    @classmethod
    def build(cls, global_model: GlobalModel, state: Path, options: ServingOptions) -> ServingIndex:
        """Join ``global_model`` with the merchant state in ``state`` (fits users if needed)."""
        store = MerchantStore(state)
        data = store.load_data()
        catalog = global_model.catalog
        marker = state / MERCHANT_CATALOG_DIGEST_FILE
        if data.num_items != len(catalog) or (
            marker.is_file()
            and marker.read_text(encoding="utf-8").strip() != catalog_digest(catalog.keys)
        ):
            raise RunDirError(
                f"{state} was encoded with a different item catalog than the model in "
                f"{global_model.directory} ({data.num_items} vs {len(catalog)} items). Serve "
                "the global model of the federation this merchant trained with."
            )
        run = global_model.run
        model = build_model(
            run.model,
            num_users=data.num_users,
            num_items=data.num_items,
            generator=torch.Generator().manual_seed(options.seed),
        )
        try:
            model.load_shared(global_model.shared)
        except ValueError as exc:
            raise RunDirError(
                f"{global_model.directory}: the global model does not match its own settings "
                f"({exc})."
            ) from exc
        if isinstance(model, RecentItemsRecommender):  # training histories while users are fitted
            model.bind(data)
        local = store.load_local()
        wanted = {n: tuple(p.shape) for n, p in model.local_parameters().items()}
        fitted_here = local is None or {n: tuple(t.shape) for n, t in local.items()} != wanted
        if not fitted_here:
            assert local is not None
            model.load_local(local)
        else:  # a merchant new to this model: its users are fitted to it here, at no privacy cost
            from client.training.loop import fit_local

            logger.info("fitting %d users of %s to the global model", data.num_users, store.name)
            fit_local(
                model,
                data,
                run.train,
                epochs=max(3, run.train.user_epochs),
                rng=numpy_rng(options.seed, "serve-fit-users", global_model.version),
            )
        if not math.isinf(options.personalisation):
            personalise(
                model,
                data,
                run.train,
                lam=options.personalisation,
                epochs=options.fine_tune_epochs,
                rng=numpy_rng(options.seed, "personalise", global_model.version),
            )
        prior = global_model.prior
        if prior is not None:
            popularity, source = prior.counts.astype(np.float64), "federation DP item counts"
        else:
            items = np.concatenate([data.train_items, data.test_items])
            popularity = np.bincount(items, minlength=data.num_items).astype(np.float64)
            source = "this merchant's own item counts (local only)"
        if isinstance(model, RecentItemsRecommender):  # served from everything they did here
            indptr, items, events = data.histories()
            model.bind_histories(indptr, items, events=events)
        choice = serving_choice(global_model, store)
        key_path = state / MERCHANT_PSEUDONYM_KEY_FILE
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        return cls(
            model,
            global_model=global_model,
            data=data,
            options=options,
            pseudonym_key=key_path.read_bytes() if key_path.is_file() else None,
            popularity=popularity,
            popularity_source=source,
            users_fitted_here=fitted_here,
            choice=choice,
        )

    def warm_up(self) -> None:
        """Run each code path once (first use of autograd/L-BFGS costs about a second)."""
        popular = self._popular[:3].astype(np.int64)
        self.scores_for_items(popular)
        if self.data.num_users:
            self.scores_for_row(0)

    # --- queries --------------------------------------------------------------------------
    @property
    def source_note(self) -> str:
        """What serves a known or recent-items user, and why (one line)."""
        return "serves the model" if self.choice is None else self.choice.reason()

    @property
    def personalised(self) -> bool:
        return not math.isinf(self.options.personalisation)

    def _check_k(self, k: int) -> None:
        if not 1 <= k <= self.max_k:
            raise InvalidRequest(f"k must be between 1 and {self.max_k}, got {k}.")

    def user_row(self, user_id: str) -> int | None:
        """The local index of a raw user ID (pseudonymised when the state has a key)."""
        key = user_id
        if self.pseudonym_key is not None:
            from client.deploy.pseudonym import pseudonymise

            key = str(pseudonymise(self.pseudonym_key, [user_id])[0])
        return self.user_index.get(key)

    def seen_items(self, row: int) -> npt.NDArray[np.int64]:
        return self._seen_items[self._seen_ptr[row] : self._seen_ptr[row + 1]]

    def _finish(self, scores: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Untrained items below every trained one, in popularity order."""
        if self.trained.all():
            return scores
        floor = scores[self.trained].min() - 1.0
        return np.where(self.trained, scores, floor + self._fallback_rank).astype(np.float32)

    def scores_for_row(self, row: int) -> npt.NDArray[np.float32]:
        """Scores of every catalog item for a known user: (items,)."""
        if self._mf:
            raw = self._q @ self._p[row] + self._item_bias + self._user_bias[row]
        else:
            with torch.no_grad():
                raw = self.model.score_all(torch.tensor([row])).numpy()[0]
        return self._finish(raw.astype(np.float32, copy=False))

    def scores_for_sequence(
        self, items: npt.NDArray[np.int64], events: npt.NDArray[np.int64] | None = None
    ) -> npt.NDArray[np.float32]:
        """Scores of every catalog item for a recent-items model reading ``items`` (oldest
        first, with their event types when known) as a user's history: (items,). Nothing
        is fitted."""
        assert isinstance(self._fold_model, RecentItemsRecommender)
        with self._fold_lock, torch.no_grad():
            self._fold_model.bind_histories(np.asarray([0, len(items)]), items, events=events)
            raw = self._fold_model.score_all(torch.zeros(1, dtype=torch.int64)).numpy()[0]
        return self._finish(raw.astype(np.float32, copy=False))

    def history(self, row: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64] | None]:
        """A known user's items in time order, and their event types when stored."""
        span = slice(self._history_ptr[row], self._history_ptr[row + 1])
        events = None if self._history_events is None else self._history_events[span]
        return self._history[span], events

    def scores_for_items(self, items: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """Scores of every catalog item for a user folded in from ``items``: (items,)."""
        if self._sequences:
            return self.scores_for_sequence(items)
        with self._fold_lock:
            local = fold_in(
                self._fold_model,
                items,
                self.train_config,
                item_pool=None if self.trained.all() else self.trained_items,
            )
            if self._mf:
                p = local["user_embedding.weight"][0].numpy()
                bias = float(local["user_bias.weight"][0, 0])
                raw = self._q @ p + self._item_bias + bias
            else:
                with torch.no_grad():
                    raw = self._fold_model.score_all(torch.zeros(1, dtype=torch.int64)).numpy()[0]
        return self._finish(raw.astype(np.float32, copy=False))

    def _top(
        self, scores: npt.NDArray[np.float32], k: int, exclude: npt.NDArray[np.int64]
    ) -> tuple[tuple[str, float], ...]:
        if len(exclude):
            scores = scores.copy()
            scores[exclude] = -np.inf
        k = min(k, len(scores))
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        best = best[np.isfinite(scores[best])]
        return tuple((self.keys[i], float(scores[i])) for i in best)

    def recommend(
        self, user_id: str, k: int, *, exclude_seen: bool = True, recent: tuple[str, ...] = ()
    ) -> Recommendation:
        if not user_id:
            raise InvalidRequest("user_id is empty; pass the merchant's own user ID.")
        self._check_k(k)
        known = [self.index_of[key] for key in recent if key in self.index_of]
        unknown = tuple(key for key in recent if key not in self.index_of)
        recent_items = np.asarray(known, dtype=np.int64)
        row = self.user_row(user_id)
        if row is not None:
            if self._sequences and len(recent_items):  # the session continues the history
                items, events = self.history(row)
                if events is not None:  # a request's items have no event type: "not known"
                    events = np.concatenate([events, np.full(len(recent_items), -1)])
                scores = self.scores_for_sequence(np.concatenate([items, recent_items]), events)
            else:
                scores = self.scores_for_row(row)
            strategy = PERSONAL
            exclude = np.concatenate([self.seen_items(row), recent_items])
        elif len(recent_items) and self.trained[recent_items].any():
            strategy = SEQUENCE if self._sequences else FOLD_IN
            scores = self.scores_for_items(recent_items)
            exclude = recent_items
        else:
            strategy, scores = POPULARITY, self._popular_scores
            exclude = recent_items
        source = MODEL
        if strategy != POPULARITY and self._weight > 0:  # the merchant's choice (None: model)
            assert self.choice is not None
            source = self.choice.source
            scores = blend(scores, self._popularity_z, self._weight).astype(np.float32)
        elif strategy == POPULARITY:
            source = POPULARITY_SOURCE
        if not exclude_seen:
            exclude = np.zeros(0, dtype=np.int64)
        return Recommendation(self._top(scores, k, exclude), strategy, unknown, source)

    def similar(self, item_id: str, k: int) -> tuple[tuple[str, float], ...]:
        if not item_id:
            raise InvalidRequest("item_id is empty; pass a federation catalog item key.")
        self._check_k(k)
        item = self.index_of.get(item_id)
        if item is None:
            raise UnknownItem(
                f"item {item_id!r} is not in the federation catalog ({len(self.keys)} items); "
                "ask the coordinator operator to add it to the catalog."
            )
        if not self.trained[item]:
            raise UntrainedItem(
                f"item {item_id!r} was not trained by the federation (too few private "
                "interactions), so its embedding carries no signal; similar items are unavailable."
            )
        scores = self._unit_items @ self._unit_items[item]
        scores = np.where(self.trained, scores, -np.inf).astype(np.float32)
        return self._top(scores, k, np.asarray([item], dtype=np.int64))


def serving_choice(global_model: GlobalModel, store: MerchantStore) -> SourceChoice | None:
    """The merchant's serving-source choice for ``global_model``: published with it, or the
    one in its state measured on these very parameters; ``None`` (serve the model) otherwise."""
    if global_model.choice is not None:
        return global_model.choice
    saved = store.load_source_choice()
    if saved is None:
        return None
    if saved.model != shared_fingerprint(
        {n: t.detach().numpy() for n, t in global_model.shared.items()}
    ):
        logger.warning(
            "%s holds a serving-source choice for another model (%s); serving the model",
            store.source_choice_path,
            describe_source(saved.weight),
        )
        return None
    return saved
