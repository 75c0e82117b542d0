"""How the next token is chosen from logits: greedy, temperature, top-k, top-p, vocab limit,
suppressed ids.

`SamplingSettings` is a pytree: `temperature` and `top_p` are traced leaves (changing their
values never recompiles), while the mode flags (`greedy`, `top_k`, `nucleus`, `vocab_limit`,
`suppress`) are static metadata, part of the jit cache key.

Order of operations (as in Hugging Face / Flax): vocab-limit and suppressed-id mask ->
temperature -> top-k -> top-p on the tempered, top-k-truncated distribution -> draw.
`suppress` is HF's `suppress_tokens` plus the single-token `bad_words_ids` of a checkpoint's
generation config (hf.generation_defaults), e.g. Marian's `[[pad]]`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


@flax.struct.dataclass
class SamplingSettings:
    """Validated sampling settings; build with `SamplingSettings.create(...)`."""

    temperature: jax.Array  # [] float32; ignored when greedy
    top_p: jax.Array  # [] float32; used only when nucleus
    top_k: int = flax.struct.field(pytree_node=False, default=0)  # 0 = no top-k truncation
    greedy: bool = flax.struct.field(pytree_node=False, default=False)
    nucleus: bool = flax.struct.field(pytree_node=False, default=False)  # top_p < 1
    vocab_limit: int | None = flax.struct.field(pytree_node=False, default=None)
    suppress: tuple[int, ...] = flax.struct.field(pytree_node=False, default=())  # never drawn

    @classmethod
    def create(
        cls,
        *,
        vocab_size: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        vocab_limit: int | None = None,
        suppress_tokens: Sequence[int] = (),
    ) -> SamplingSettings:
        """Checks the values on the host. temperature=0 means greedy (argmax);
        `suppress_tokens`: ids never produced (HF's suppress_tokens / bad_words_ids)."""
        temperature = float(temperature)
        if not math.isfinite(temperature) or temperature < 0:
            raise ValueError(
                f"temperature={temperature} must be a finite number >= 0 (0 = greedy decoding)."
            )
        if isinstance(top_k, bool) or int(top_k) != top_k or top_k < 0:
            raise ValueError(f"top_k={top_k!r} must be an integer >= 0 (0 = no top-k filter).")
        top_p = float(top_p)
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p={top_p} must be in (0, 1] (1 = no nucleus filter).")
        if vocab_limit is not None and not 1 <= vocab_limit <= vocab_size:
            raise ValueError(
                f"vocab_limit={vocab_limit} must be in [1, vocab_size={vocab_size}] "
                "(the tokenizer's real vocabulary size)."
            )
        if vocab_limit == vocab_size:
            vocab_limit = None  # nothing to mask; one compile fewer
        suppress = tuple(sorted({int(i) for i in suppress_tokens}))
        bad = [i for i in suppress if not 0 <= i < vocab_size]
        if bad or any(isinstance(i, bool) or int(i) != i for i in suppress_tokens):
            raise ValueError(
                f"suppress_tokens={list(suppress_tokens)} must be token ids in "
                f"[0, vocab_size={vocab_size})."
            )
        allowed = vocab_size if vocab_limit is None else vocab_limit
        top_k = int(top_k)
        if top_k >= allowed:
            top_k = 0  # keeps every allowed token: the same as no top-k filter
        return cls(
            temperature=np.float32(temperature),
            top_p=np.float32(top_p),
            top_k=top_k,
            greedy=temperature == 0.0,
            nucleus=top_p < 1.0,
            vocab_limit=vocab_limit,
            suppress=suppress,
        )

    def mask_vocab(self, logits: jax.Array) -> jax.Array:
        """[..., V] -> [..., V] with ids >= vocab_limit and suppressed ids at -inf (never
        produced)."""
        if self.suppress:
            logits = logits.at[..., np.asarray(self.suppress)].set(-jnp.inf)  # [..., V]
        if self.vocab_limit is None:
            return logits
        allowed = jnp.arange(logits.shape[-1]) < self.vocab_limit  # [V]
        return jnp.where(allowed, logits, -jnp.inf)

    def log_probs(self, logits: jax.Array) -> jax.Array:
        """[..., V] float32 log-probabilities of the vocab-limited model (no temperature)."""
        return jax.nn.log_softmax(self.mask_vocab(logits.astype(jnp.float32)), axis=-1)

    def sample(self, rng: jax.Array, logits: jax.Array) -> jax.Array:
        """Draws one token per row: logits [B, V] -> ids [B] int32."""
        logits = self.mask_vocab(logits.astype(jnp.float32))  # [B, V]
        if self.greedy:
            return jnp.argmax(logits, axis=-1).astype(jnp.int32)  # [B]
        logits = logits / self.temperature  # [B, V]
        if self.top_k:
            values, ids = lax.top_k(logits, self.top_k)  # [B, k] sorted descending, [B, k]
        elif self.nucleus:
            ids = jnp.argsort(-logits, axis=-1)  # [B, V] descending order
            values = jnp.take_along_axis(logits, ids, axis=-1)  # [B, V]
        else:
            return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)  # [B]
        if self.nucleus:
            values = _nucleus(values, self.top_p)  # [B, k or V]
        choice = jax.random.categorical(rng, values, axis=-1)  # [B] index into the candidates
        return jnp.take_along_axis(ids, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)  # [B]


def _nucleus(sorted_logits: jax.Array, top_p: jax.Array) -> jax.Array:
    """Keeps the smallest prefix of descending logits [B, C] whose probability reaches top_p.

    A candidate is kept when the mass strictly before it is < top_p, so the first is always
    kept. Returns [B, C] with the dropped candidates at -inf.
    """
    probs = jax.nn.softmax(sorted_logits, axis=-1)  # [B, C]
    mass_before = jnp.cumsum(probs, axis=-1) - probs  # [B, C]
    return jnp.where(mass_before < top_p, sorted_logits, -jnp.inf)
