"""The three Transformer architectures, wired from one set of modules.

* `EncoderOnly` (BERT): bidirectional stack; MLM logits, pooled output, classifier.
* `DecoderOnly` (GPT): causal stack; next-token logits; `decode` with a KV cache.
* `EncoderDecoder` (paper, BART): encoder + causal decoder with cross-attention; `encode`
  once, then `decode` (optionally with a KV cache).

Which keys are real: an explicit `valid` [B, S] bool (True = real token) where given, else
the packed rows' `segment_ids` > 0, else every position not holding `config.pad_id` (the
default). T5 and Marian start the decoder with the pad id itself, so their teacher-forced
targets pass `valid` (or segment ids) for the start token to be seen. Packed rows pass
`segment_ids` (and per-example `positions`) so that examples never attend to each other.
Positions not passed are 0, 1, 2, ... per row, or, with learned positions that skip padding
(RoBERTa), counted over the real tokens only (padding reads the table's row offset - 1).
Parameters are float32; activations use `config.dtype`; logits are returned as float32.
Token inputs are int [B, T] arrays (one sequence: `tokens[None]`). The attention masks built
from all this follow `transformer_jax.nn`'s convention: bool, broadcastable to [B, 1, T, S],
True where query t may attend key s.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from transformer_jax.config import LearnedPositions, ModelConfig
from transformer_jax.nn.attention import (
    cache_mask,
    causal_mask,
    combine_masks,
    padding_mask,
    segment_mask,
    window_mask,
)
from transformer_jax.nn.blocks import (
    ACTIVATIONS,
    LayerCache,
    TransformerLayer,
    init_layer_caches,
    make_norm,
)
from transformer_jax.nn.blocks import dense as _dense
from transformer_jax.nn.embeddings import InputEmbedding, token_embed
from transformer_jax.nn.partitioning import recording_axes
from transformer_jax.nn.two_stream import TwoStreamStack

Cache = list[LayerCache]


def dense(
    config: ModelConfig,
    features: int,
    name: str,
    use_bias: bool = True,
    axes: tuple[str | None, str | None] = (None, None),
) -> nn.Dense:
    return _dense(
        features,
        name,
        use_bias=use_bias,
        dtype=config.compute_dtype,
        init_std=config.init_std,
        axes=axes,
    )


def _check_length(config: ModelConfig, length: int, what: str) -> None:
    if length > config.max_len:
        raise ValueError(
            f"{what} length {length} exceeds the model's position limit "
            f"max_len={config.max_len}; truncate the input or use a config with a larger max_len."
        )


def _check_tokens(config: ModelConfig, tokens: Any, what: str) -> None:
    """Token ids must be an int array [B, T] within the position limit (checked at trace
    time, on shapes only)."""
    shape = getattr(tokens, "shape", None)
    if shape is None or len(shape) != 2:
        got = f"shape {tuple(shape)}" if shape is not None else f"a {type(tokens).__name__}"
        raise ValueError(
            f"{what} tokens must be an int array [batch, length]; got {got}. For one "
            "sequence add a batch axis: tokens[None] (or jnp.asarray([ids]))."
        )
    _check_length(config, shape[1], what)


def _positions(
    config: ModelConfig,
    tokens: jax.Array,  # [B, T]
    positions: jax.Array | None,  # [B, T] given positions (packed rows, cached decoding)
    real: jax.Array | None = None,  # [B, T] bool real tokens; None = all real
) -> jax.Array:
    """[B, T]: the given positions, else 0, 1, 2, ... per row; with learned positions that
    skip padding (RoBERTa), the count of real tokens before each real token, and -1 (row
    offset - 1 of the table) for padding."""
    if positions is not None:
        return positions
    p = config.positions
    if isinstance(p, LearnedPositions) and p.skip_padding and real is not None:
        real = real.astype(jnp.int32)  # [B, T]
        return (jnp.cumsum(real, axis=1) - 1) * real - (1 - real)  # [B, T]
    return jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)  # [B, T]


def _real(
    config: ModelConfig,
    tokens: jax.Array | None,  # [B, S]
    valid: jax.Array | None = None,  # [B, S] bool, True = real key
    segment_ids: jax.Array | None = None,  # [B, S] int, 0 = padding
) -> jax.Array | None:
    """[B, S] bool, the real tokens: `valid` if given, else segment ids > 0 (packed rows),
    else the tokens that do not hold the pad id (None if the config has no pad id)."""
    if valid is not None:
        return jnp.asarray(valid, bool)
    if segment_ids is not None:
        return segment_ids > 0
    if tokens is None:
        raise ValueError("Pass the tokens or their key validity (`valid` / `src_valid`).")
    return None if config.pad_id is None else tokens != config.pad_id


def _key_mask(
    config: ModelConfig,
    tokens: jax.Array | None,  # [B, S]
    valid: jax.Array | None = None,  # [B, S] bool, True = real key
    segment_ids: jax.Array | None = None,  # [B, S] int, 0 = padding
) -> jax.Array | None:
    """[B, 1, 1, S]: the real keys (`_real`), or None when every key is real."""
    real = _real(config, tokens, valid, segment_ids)
    return None if real is None else padding_mask(real)


def _segments(a: jax.Array | None, b: jax.Array | None) -> jax.Array | None:
    if (a is None) != (b is None):
        raise ValueError("Pass segment ids for both sides of a packed batch, or for neither.")
    return None if a is None else segment_mask(a, b)


# jax.checkpoint policies of ModelConfig.remat: what the backward pass keeps of a layer.
REMAT_POLICIES = {
    "full": None,  # nothing: the whole layer is recomputed
    "dots": jax.checkpoint_policies.checkpoint_dots,  # matmul outputs kept, the rest recomputed
}


class _LayerStep(TransformerLayer):
    """One layer called with positional arguments only, as nn.scan and nn.remat need:
    (x, (is_local, cache), global mask, local mask or None, encoding, encoded, cross mask,
    cache index, deterministic) -> (x, new cache). Same submodules and parameter paths as
    TransformerLayer; `is_local` (a scanned [] bool) picks the local mask where there is one."""

    def __call__(  # type: ignore[override]
        self, x, xs, global_mask, local_mask, encoding, encoded, cross_mask, cache_index,
        deterministic,
    ):  # fmt: skip
        is_local, cache = xs
        mask = global_mask if local_mask is None else jnp.where(is_local, local_mask, global_mask)
        return super().__call__(
            x,
            mask,
            encoding=encoding,
            encoded=encoded,
            cross_mask=cross_mask,
            cache=cache,
            cache_index=cache_index,
            deterministic=deterministic,
        )


def _layer_class(config: ModelConfig, num_layers: int) -> type[nn.Module]:
    """_LayerStep, under jax.checkpoint (config.remat) and nn.scan over the depth
    (config.scan_layers: parameters stacked on a leading `layers` axis)."""
    cls: type[nn.Module] = _LayerStep
    if config.remat != "none":
        cls = nn.remat(
            cls,
            policy=REMAT_POLICIES[config.remat],
            prevent_cse=not config.scan_layers,  # scan already keeps XLA from merging
            static_argnums=(9,),  # deterministic (argument 0 is the module)
        )
    if config.scan_layers:
        cls = nn.scan(
            cls,
            variable_axes={"params": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=(0,) + (nn.broadcast,) * 7,  # (is_local, cache) scanned; the rest shared
            length=num_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )
    return cls


class Stack(nn.Module):
    """Input embedding (which computes the position encoding once), `num_layers` Transformer
    layers (or `config.layer_groups` parameter sets applied in turn), optional final norm."""

    config: ModelConfig
    num_layers: int
    cross: bool = False
    causal: bool = False  # causal self-attention (decoders): causal relative buckets

    def setup(self) -> None:
        cfg = self.config
        self.embed = InputEmbedding(cfg, causal=self.causal)
        layer_cls = _layer_class(cfg, self.num_layers)
        if cfg.scan_layers:  # one module, parameters [num_layers, ...]
            self.scanned = layer_cls.from_config(cfg, cross=self.cross, name="layers")
        else:
            groups = self.num_layers if cfg.layer_groups is None else cfg.layer_groups
            self.layers = [
                layer_cls.from_config(cfg, cross=self.cross, name=f"layer_{g}")
                for g in range(groups)
            ]
        if cfg.norm.final:
            self.final_norm = make_norm(cfg.norm, cfg.compute_dtype, "final_norm")

    def _layer(self, i: int) -> TransformerLayer:
        """The parameter set of depth i: floor(i * groups / layers) (ALBERT's rule)."""
        return self.layers[i * len(self.layers) // self.num_layers]

    def __call__(
        self,
        tok: jax.Array,  # [B, T, E] token embeddings
        positions: jax.Array,  # [B, T]
        mask: jax.Array | None,  # [B, 1, T, S]
        *,
        token_types: jax.Array | None = None,  # [B, T]
        encoded: jax.Array | None = None,  # [B, S_enc, D]
        cross_mask: jax.Array | None = None,  # [B, 1, T, S_enc]
        cache: Cache | None = None,
        deterministic: bool = True,
    ) -> tuple[jax.Array, Cache | None]:
        att = self.config.attention
        if cache is not None and len(cache) != self.num_layers:
            raise ValueError(f"Cache has {len(cache)} layers; the model has {self.num_layers}.")
        # Key positions: the tokens themselves, or the cache slots (slot j = position j).
        keys = positions if cache is None else jnp.arange(cache[0]["self"].length)[None]
        x, encoding = self.embed(
            tok, positions, token_types, deterministic=deterministic, key_positions=keys
        )
        masks = {"global": mask}
        if "local" in att.pattern:  # keys q - window < k (causality comes with `mask`)
            masks["local"] = combine_masks(mask, window_mask(positions, keys, att.window))
        cache_index = None if cache is None else positions[:, 0]  # [B]
        shared = (encoding, encoded, cross_mask, cache_index, deterministic)
        if self.config.scan_layers:
            n = self.num_layers
            is_local = jnp.asarray([att.layer_kind(i) == "local" for i in range(n)])  # [L]
            # list of per-layer caches -> one cache with a leading [L] axis, and back
            stacked = None if cache is None else jax.tree.map(lambda *c: jnp.stack(c), *cache)
            x, ys = self.scanned(x, (is_local, stacked), mask, masks.get("local"), *shared)
            new_cache = None
            if cache is not None:
                new_cache = [jax.tree.map(lambda c, i=i: c[i], ys) for i in range(n)]
        else:
            new_cache = None if cache is None else []
            for i in range(self.num_layers):
                layer_cache = None if cache is None else cache[i]
                x, layer_cache = self._layer(i)(
                    x, (None, layer_cache), masks[att.layer_kind(i)], None, *shared
                )
                if new_cache is not None:
                    new_cache.append(layer_cache)
        if self.config.norm.final:
            x = self.final_norm(x)
        return x, new_cache


class _LogitsBias(nn.Module):
    """A [vocab] bias on the logits, created when first used (so that a backbone-only
    `init_params(heads=False)` has none); shares its parent's scope: path `logits_bias`."""

    vocab_size: int

    @nn.compact
    def __call__(self, logits: jax.Array) -> jax.Array:
        bias = self.param("logits_bias", nn.initializers.zeros, (self.vocab_size,))
        return logits + bias.astype(logits.dtype)


class _OutputMixin:
    """Vocabulary projection: tied to the token table or a separate dense, optional bias,
    optional scale of the hidden states first."""

    def _setup_output(self) -> None:
        cfg = self.config
        self.token_embed = token_embed(cfg)
        if not cfg.output.tie:
            self.lm_head = dense(
                cfg, cfg.vocab_size, "lm_head", use_bias=cfg.output.bias, axes=("embed", "vocab")
            )
        elif cfg.output.bias:
            self.add_logits_bias = _LogitsBias(cfg.vocab_size)
            nn.share_scope(self, self.add_logits_bias)

    def head(self, h: jax.Array) -> jax.Array:  # [..., D or E] -> [..., V] float32
        """The output head alone: the backbone's output (what `hidden_out=True` returns) to
        float32 logits."""
        return self._logits(h)

    def _logits(self, h: jax.Array) -> jax.Array:  # [B, T, D or E] -> [B, T, V] float32
        if self.hidden_out:
            return h
        out = self.config.output
        if out.scale != 1.0:
            h = h * jnp.asarray(out.scale, h.dtype)
        if out.tie:
            logits = self.token_embed.attend(h)  # [B, T, V]
            if out.bias:
                logits = self.add_logits_bias(logits)
        else:
            logits = self.lm_head(h)  # [B, T, V]
        return logits.astype(jnp.float32)


class EncoderOnly(_OutputMixin, nn.Module):
    """BERT-style: bidirectional self-attention; MLM logits, pooled output, classifier.

    The backbone is what `features` uses (embeddings, layers, pooler); the MLM transform,
    logits bias and classifier are heads on top of it.
    """

    config: ModelConfig
    # True: every method that returns logits returns the hidden states the output head would
    # take instead ([..., D or E]); `head` maps them to logits (the chunked loss, losses.py).
    hidden_out: bool = False

    def setup(self) -> None:
        cfg = self.config
        heads = cfg.heads
        self._setup_output()
        self.encoder = Stack(cfg, cfg.num_layers)
        if heads.pooler:
            self.pooler = dense(cfg, cfg.d_model, "pooler")
        if heads.mlm_transform:
            self.mlm_transform = dense(cfg, cfg.embed_size, "mlm_transform")  # D -> E
            self.mlm_norm = make_norm(cfg.norm, cfg.compute_dtype, "mlm_norm")
        if heads.num_labels:
            self.classifier = dense(cfg, heads.num_labels, "classifier")
            self.classifier_dropout = nn.Dropout(cfg.dropout_rate)

    def encode(
        self,
        tokens: jax.Array,  # [B, T]
        token_types: jax.Array | None = None,  # [B, T]
        *,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        valid: jax.Array | None = None,  # [B, T] bool real tokens; None: see the module doc
        deterministic: bool = True,
    ) -> jax.Array:
        """Hidden states [B, T, D]."""
        cfg = self.config
        _check_tokens(cfg, tokens, "Input")
        real = _real(cfg, tokens, valid, segment_ids)  # [B, T]
        mask = combine_masks(
            None if real is None else padding_mask(real), _segments(segment_ids, segment_ids)
        )
        h, _ = self.encoder(
            self.token_embed(tokens),
            _positions(cfg, tokens, positions, real),
            mask,
            token_types=token_types,
            deterministic=deterministic,
        )
        return h

    def features(
        self, tokens: jax.Array, token_types: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """The backbone's outputs: (hidden states [B, T, D], pooled first token [B, D])."""
        h = self.encode(tokens, token_types)
        return h, self.pool(h)

    def mlm_logits(self, h: jax.Array) -> jax.Array:  # [B, T, D] -> [B, T, V]
        if self.hidden_out:
            return h
        if self.config.heads.mlm_transform:
            act = ACTIVATIONS[self.config.ffn.activation]
            h = self.mlm_norm(act(self.mlm_transform(h)))  # [B, T, E]
        return self._logits(h)

    def head(self, h: jax.Array) -> jax.Array:  # [..., D] -> [..., V] float32
        """The MLM head alone (transform, norm, projection): see `hidden_out`."""
        return self.mlm_logits(h)

    def pool(self, h: jax.Array) -> jax.Array:
        """First-token summary [B, D]: tanh(dense(h[:, 0])) with a pooler, else h[:, 0]."""
        first = h[:, 0]  # [B, D]
        return jnp.tanh(self.pooler(first)) if self.config.heads.pooler else first

    def classify_hidden(self, h: jax.Array, deterministic: bool = True) -> jax.Array:
        if not self.config.heads.num_labels:
            raise ValueError("This model has no classifier: set ModelConfig.heads.num_labels > 0.")
        pooled = self.classifier_dropout(self.pool(h), deterministic=deterministic)
        return self.classifier(pooled).astype(jnp.float32)  # [B, num_labels]

    def __call__(
        self,
        tokens: jax.Array,
        token_types: jax.Array | None = None,
        *,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        valid: jax.Array | None = None,
        deterministic: bool = True,
    ) -> jax.Array:
        """MLM logits [B, T, V]."""
        h = self.encode(
            tokens,
            token_types,
            positions=positions,
            segment_ids=segment_ids,
            valid=valid,
            deterministic=deterministic,
        )
        return self.mlm_logits(h)

    def classify(
        self, tokens: jax.Array, token_types: jax.Array | None = None, *, deterministic: bool = True
    ) -> jax.Array:
        """Classification logits [B, num_labels] from the pooled first token."""
        h = self.encode(tokens, token_types, deterministic=deterministic)
        return self.classify_hidden(h, deterministic)

    def pretrain(
        self,
        tokens: jax.Array,
        token_types: jax.Array | None = None,
        *,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        deterministic: bool = True,
    ) -> tuple[jax.Array, jax.Array | None]:
        """One encoder pass, both heads: (MLM logits [B, T, V], class logits [B, L] or None)."""
        h = self.encode(
            tokens,
            token_types,
            positions=positions,
            segment_ids=segment_ids,
            deterministic=deterministic,
        )
        cls = self.classify_hidden(h, deterministic) if self.config.heads.num_labels else None
        return self.mlm_logits(h), cls


class DecoderOnly(_OutputMixin, nn.Module):
    """GPT-style: causal self-attention, next-token logits, KV-cached `decode`."""

    config: ModelConfig
    # True: every method that returns logits returns the hidden states the output head would
    # take instead ([..., D or E]); `head` maps them to logits (the chunked loss, losses.py).
    hidden_out: bool = False

    def setup(self) -> None:
        self._setup_output()
        self.decoder = Stack(self.config, self.config.num_layers, causal=True)

    def __call__(
        self,
        tokens: jax.Array,  # [B, T]
        *,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        valid: jax.Array | None = None,
        deterministic: bool = True,
    ) -> jax.Array:
        """Logits [B, T, V]; position t sees tokens 0..t only."""
        h = self.features(
            tokens,
            positions=positions,
            segment_ids=segment_ids,
            valid=valid,
            deterministic=deterministic,
        )
        return self._logits(h)

    def features(
        self,
        tokens: jax.Array,  # [B, T]
        *,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        valid: jax.Array | None = None,  # [B, T] bool real tokens; None: see the module doc
        deterministic: bool = True,
    ) -> jax.Array:
        """The backbone's output: final hidden states [B, T, D], before the projection."""
        cfg = self.config
        _check_tokens(cfg, tokens, "Input")
        real = _real(cfg, tokens, valid, segment_ids)  # [B, T]
        mask = combine_masks(
            causal_mask(tokens.shape[1]),
            None if real is None else padding_mask(real),
            _segments(segment_ids, segment_ids),
        )
        h, _ = self.decoder(
            self.token_embed(tokens),
            _positions(cfg, tokens, positions, real),
            mask,
            deterministic=deterministic,
        )
        return h

    def decode(
        self,
        tokens: jax.Array,  # [B, T] new tokens (a prompt, or one token per row)
        positions: jax.Array,  # [B, T] their absolute positions, contiguous per row
        cache: Cache,
    ) -> tuple[jax.Array, Cache]:
        """Cached forward pass: writes the tokens' keys/values at their positions and returns
        (logits [B, T, V], new cache). Slot j of the cache holds position j."""
        cache_len = cache[0]["self"].length
        h, new_cache = self.decoder(
            self.token_embed(tokens), positions, cache_mask(positions, cache_len), cache=cache
        )
        return self._logits(h), new_cache


class EncoderDecoder(_OutputMixin, nn.Module):
    """Paper/BART-style: bidirectional encoder, causal decoder with cross-attention.

    One token table serves the encoder input, the decoder input and (if tied) the output.
    """

    config: ModelConfig
    # True: every method that returns logits returns the hidden states the output head would
    # take instead ([..., D or E]); `head` maps them to logits (the chunked loss, losses.py).
    hidden_out: bool = False

    def setup(self) -> None:
        cfg = self.config
        self._setup_output()
        self.encoder = Stack(cfg, cfg.num_layers)
        self.decoder = Stack(cfg, cfg.decoder_layers, cross=True, causal=True)

    def encode(
        self,
        src: jax.Array,  # [B, S]
        *,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        valid: jax.Array | None = None,  # [B, S] bool real tokens; None: see the module doc
        deterministic: bool = True,
    ) -> jax.Array:
        """Encoder output [B, S, D]."""
        cfg = self.config
        _check_tokens(cfg, src, "Source")
        real = _real(cfg, src, valid, segment_ids)  # [B, S]
        mask = combine_masks(
            None if real is None else padding_mask(real), _segments(segment_ids, segment_ids)
        )
        h, _ = self.encoder(
            self.token_embed(src),
            _positions(cfg, src, positions, real),
            mask,
            deterministic=deterministic,
        )
        return h

    def decode(
        self,
        tgt: jax.Array,  # [B, T] decoder input tokens
        encoded: jax.Array | None,  # [B, S, D]; may be None once the cache holds cross K/V
        src: jax.Array | None,  # [B, S] source tokens (their pad ids mask the cross keys)
        *,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,  # [B, T] target segments (packed rows)
        src_segment_ids: jax.Array | None = None,  # [B, S]
        valid: jax.Array | None = None,  # [B, T] bool real target tokens (uncached)
        src_valid: jax.Array | None = None,  # [B, S] bool real source tokens (src may be None)
        cache: Cache | None = None,
        deterministic: bool = True,
    ) -> tuple[jax.Array, Cache | None]:
        """(logits [B, T, V], new cache or None). With a cache, `positions` are required and
        cross-attention keys/values are projected on the first call and kept in the cache;
        the cache's slots, not the pad id, decide which decoder keys are seen."""
        h, new_cache = self._decode_hidden(
            tgt,
            encoded,
            src,
            positions=positions,
            segment_ids=segment_ids,
            src_segment_ids=src_segment_ids,
            valid=valid,
            src_valid=src_valid,
            cache=cache,
            deterministic=deterministic,
        )
        return self._logits(h), new_cache

    def _decode_hidden(
        self,
        tgt,
        encoded,
        src,
        *,
        positions,
        segment_ids,
        src_segment_ids,
        cache,
        deterministic,
        valid=None,
        src_valid=None,
    ) -> tuple[jax.Array, Cache | None]:
        cfg = self.config
        cross_mask = combine_masks(
            _key_mask(cfg, src, src_valid, src_segment_ids),
            _segments(segment_ids, src_segment_ids),
        )
        if cache is None:
            _check_tokens(cfg, tgt, "Target")
            real = _real(cfg, tgt, valid, segment_ids)  # [B, T]
            mask = combine_masks(
                causal_mask(tgt.shape[1]),
                None if real is None else padding_mask(real),
                _segments(segment_ids, segment_ids),
            )
            positions = _positions(cfg, tgt, positions, real)
        else:
            if positions is None:
                raise ValueError("Cached decoding needs the tokens' absolute positions.")
            mask = cache_mask(positions, cache[0]["self"].length)
        h, new_cache = self.decoder(
            self.token_embed(tgt),
            positions,
            mask,
            encoded=encoded,
            cross_mask=cross_mask,
            cache=cache,
            deterministic=deterministic,
        )
        return h, new_cache

    def features(self, src: jax.Array, tgt: jax.Array) -> jax.Array:
        """The backbone's output: the decoder's final hidden states [B, T, D]."""
        h, _ = self._decode_hidden(
            tgt,
            self.encode(src),
            src,
            positions=None,
            segment_ids=None,
            src_segment_ids=None,
            cache=None,
            deterministic=True,
        )
        return h

    def __call__(
        self,
        src: jax.Array,  # [B, S]
        tgt: jax.Array,  # [B, T]
        *,
        src_positions: jax.Array | None = None,
        src_segment_ids: jax.Array | None = None,
        tgt_positions: jax.Array | None = None,
        tgt_segment_ids: jax.Array | None = None,
        src_valid: jax.Array | None = None,  # [B, S] bool real source tokens
        tgt_valid: jax.Array | None = None,  # [B, T] bool real target tokens
        deterministic: bool = True,
    ) -> jax.Array:
        """Teacher-forced logits [B, T, V]."""
        encoded = self.encode(
            src,
            positions=src_positions,
            segment_ids=src_segment_ids,
            valid=src_valid,
            deterministic=deterministic,
        )
        logits, _ = self.decode(
            tgt,
            encoded,
            src,
            positions=tgt_positions,
            segment_ids=tgt_segment_ids,
            src_segment_ids=src_segment_ids,
            valid=tgt_valid,
            src_valid=src_valid,
            deterministic=deterministic,
        )
        return logits


def two_stream_masks(
    real: jax.Array | None,  # [B, T] bool real tokens, or None
    perm_mask: jax.Array | None,  # [B, T, T], HF's meaning: 1 = i may NOT attend to j
) -> tuple[jax.Array | None, jax.Array | None]:
    """XLNet's masks as HF builds them: blocked[b, i, j] = perm_mask + (j is padding);
    the query stream sees the unblocked keys, the content stream those and itself unless
    doubly blocked (HF: blocked - eye > 0). -> (content [B, 1, T, T], query [B, 1, T, T]),
    None where everything is visible."""
    if perm_mask is None and real is None:
        return None, None
    length = (real if perm_mask is None else perm_mask).shape[-1]
    blocked = jnp.zeros((1, length, length), jnp.int32)  # [1, T, T]
    if perm_mask is not None:
        blocked = blocked + (perm_mask > 0).astype(jnp.int32)  # [B, T, T]
    if real is not None:
        blocked = blocked + (~real).astype(jnp.int32)[:, None, :]  # [B, T, T]
    eye = jnp.eye(length, dtype=jnp.int32)[None]  # [1, T, T]
    return (blocked - eye <= 0)[:, None], (blocked == 0)[:, None]  # [B, 1, T, T] each


def _check_two_stream_inputs(tokens: Any, perm_mask: Any, target_mapping: Any) -> None:
    """Shapes of XLNet's masks against tokens [B, T] (trace time)."""
    batch, length = tokens.shape
    if perm_mask is not None and tuple(perm_mask.shape) != (batch, length, length):
        raise ValueError(
            f"perm_mask has shape {tuple(perm_mask.shape)}; tokens {tuple(tokens.shape)} "
            f"need [batch, length, length] = {(batch, length, length)} "
            "(perm_mask[b, i, j] = 1: position i may not attend to j)."
        )
    if target_mapping is not None and (
        target_mapping.ndim != 3 or tuple(target_mapping.shape[::2]) != (batch, length)
    ):
        raise ValueError(
            f"target_mapping has shape {tuple(target_mapping.shape)}; tokens "
            f"{tuple(tokens.shape)} need [batch, num_predict, length] = [{batch}, P, {length}] "
            "(target_mapping[b, k, j] = 1: prediction k is for position j)."
        )


class TwoStream(_OutputMixin, nn.Module):
    """XLNet: a bidirectional stack of two-stream relative attention (nn/two_stream.py).

    `model(tokens)` -> content-stream logits [B, T, V];
    `model(tokens, perm_mask=..., target_mapping=...)` -> query-stream logits [B, P, V], with
    HF's meaning of both: perm_mask[b, i, j] = 1 means i may NOT attend to j;
    target_mapping[b, k, j] = 1 means prediction k is for position j. Padding (the pad id, or
    `valid`) hides keys as HF's attention_mask does; `token_types` [B, T] (any ints, only
    compared) give the segment term.
    """

    config: ModelConfig
    # True: every method that returns logits returns the hidden states the output head would
    # take instead ([..., D or E]); `head` maps them to logits (the chunked loss, losses.py).
    hidden_out: bool = False

    def setup(self) -> None:
        self._setup_output()
        self.encoder = TwoStreamStack(self.config)

    def features(
        self,
        tokens: jax.Array,  # [B, T]
        token_types: jax.Array | None = None,  # [B, T]
        *,
        perm_mask: jax.Array | None = None,  # [B, T, T]
        target_mapping: jax.Array | None = None,  # [B, P, T]
        valid: jax.Array | None = None,  # [B, T] bool real tokens; None: the pad-id rule
        deterministic: bool = True,
    ) -> jax.Array:
        """The query stream's final states [B, P, D] with a target_mapping, else the
        content stream's [B, T, D]."""
        cfg = self.config
        _check_tokens(cfg, tokens, "Input")
        _check_two_stream_inputs(tokens, perm_mask, target_mapping)
        content_mask, query_mask = two_stream_masks(_real(cfg, tokens, valid), perm_mask)
        seg_diff = None
        if token_types is not None:
            seg_diff = token_types[:, :, None] != token_types[:, None, :]  # [B, T, T]
        return self.encoder(
            self.token_embed(tokens),
            content_mask,
            query_mask,
            seg_diff,
            target_mapping,
            deterministic=deterministic,
        )

    def __call__(
        self,
        tokens: jax.Array,
        token_types: jax.Array | None = None,
        *,
        perm_mask: jax.Array | None = None,
        target_mapping: jax.Array | None = None,
        valid: jax.Array | None = None,
        deterministic: bool = True,
    ) -> jax.Array:
        """Query-stream logits [B, P, V] with a target_mapping, else content logits [B, T, V]."""
        h = self.features(
            tokens,
            token_types,
            perm_mask=perm_mask,
            target_mapping=target_mapping,
            valid=valid,
            deterministic=deterministic,
        )
        return self._logits(h)


_ARCH_TO_MODEL = {
    "encoder": EncoderOnly,
    "decoder": DecoderOnly,
    "encoder_decoder": EncoderDecoder,
    "two_stream": TwoStream,
}


def build(config: ModelConfig) -> nn.Module:
    """The flax module for `config.arch`."""
    if not isinstance(config, ModelConfig):
        raise TypeError(f"build() takes a ModelConfig, got {type(config).__name__}.")
    return _ARCH_TO_MODEL[config.arch](config)


def init_params(config: ModelConfig, rng: jax.Array, *, heads: bool = True) -> dict[str, Any]:
    """Float32 parameters of the model: every part (heads=True), or only the backbone that
    `features` uses (heads=False: no MLM transform, output bias, classifier or untied
    lm_head; a tied token table is part of the backbone, as in HF's *Model classes).

    A scanned model (config.scan_layers) gets the unscanned model's values, stacked on a
    leading `layers` axis (`stack_layers`): the same run with or without scan.

    Pure: under `jax.eval_shape(lambda r: init_params(config, r), rng)` it allocates nothing,
    which is how full-size presets are counted and checked, and under `jax.jit` it is one
    program (mesh mode creates the state in its shards that way). Called eagerly it runs
    flax's `lazy_init`: the forward pass is only traced, abstractly, and what executes is the
    parameters' own creation, each random draw a program compiled once per shape
    (`nn.initializers`) and shared by every model with that shape. The values are the same
    either way, bit for bit (tests/test_models.py); eagerly a tiny model is created in a
    fraction of a second instead of a 2-5 s compile of one program holding every draw.
    """
    if config.scan_layers:  # the unscanned model's values, stacked: scanning changes nothing
        per_layer = config.replace(scan_layers=False, remat="none")
        return stack_layers(init_params(per_layer, rng, heads=heads))
    if isinstance(rng, jax.core.Tracer):  # under jit / eval_shape: traced once per config
        return _traced_init(config, rng, heads)
    model, args = _init_model_and_args(config)
    args = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in args)  # only shapes are used
    return model.lazy_init(rng, *args, method=_init_method(model, config, heads))["params"]


def _init_model_and_args(config: ModelConfig) -> tuple[nn.Module, tuple[jax.Array, ...]]:
    model = build(config)
    tokens = jnp.ones((1, min(8, config.max_len)), jnp.int32)  # [B, T]
    return model, ((tokens, tokens) if config.arch == "encoder_decoder" else (tokens,))


@functools.partial(jax.jit, static_argnums=(0, 2))
def _traced_init(config: ModelConfig, rng: jax.Array, heads: bool) -> dict[str, Any]:
    """init_params inside a trace: one jit per config, so that the model is traced once and
    later `jax.eval_shape`s of the same config are free (the presets are checked that way)."""
    model, args = _init_model_and_args(config)
    return model.init(rng, *args, method=_init_method(model, config, heads))["params"]


def _init_encoder(model: EncoderOnly, tokens: jax.Array) -> tuple:
    """Every part of an encoder: the MLM head, the pooler (also without a classifier, as in
    the released RoBERTa and ALBERT masked-LM files) and the classifier."""
    h = model.encode(tokens)
    cls = model.classify_hidden(h) if model.config.heads.num_labels else None
    return model.mlm_logits(h), model.pool(h), cls


def _init_method(model: nn.Module, config: ModelConfig, heads: bool) -> Any:
    if not heads:
        return type(model).features
    if config.arch == "encoder":
        return _init_encoder
    return None


def init_cache(config: ModelConfig, batch: int, length: int) -> Cache:
    """An empty KV cache for `length` positions of the (decoder) stack: zeros, compute dtype.
    A two-stream (XLNet) model keeps no keys/values: its "cache" is the token buffer [B, S],
    every step recomputes the bidirectional stack (sampling.model_fns.two_stream_fns).

    Encoder-decoder caches gain their cross-attention keys/values on the first `decode`.
    """
    if config.arch == "encoder":
        raise ValueError("Encoder-only models do not decode; there is no KV cache to build.")
    if config.arch == "two_stream":  # no KV cache: XLNet recomputes; the cache is the tokens
        return jnp.zeros((batch, length), jnp.int32)  # [B, S] token buffer
    return init_layer_caches(config, config.decoder_layers, batch, length)


def count_params(params: Any) -> int:
    """Number of scalars in a parameter tree (works on ShapeDtypeStructs too)."""
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))


def logical_axes(config: ModelConfig, *, heads: bool = True) -> Any:
    """The parameter tree of `config` with, at each leaf, the PartitionSpec of its logical
    axis names (`transformer_jax.nn.partitioning`; PartitionSpec() = no names: replicated).
    Traced with jax.eval_shape: nothing is allocated."""
    model = build(config)
    length = min(8, config.max_len)

    def boxed(rng):
        tokens = jnp.ones((1, length), jnp.int32)  # [B, T]
        args = (tokens, tokens) if config.arch == "encoder_decoder" else (tokens,)
        method = _init_method(model, config, heads)
        return model.init(rng, *args, method=method)["params"]

    with recording_axes():
        shapes = jax.eval_shape(boxed, jax.random.key(0))
    return nn.get_partition_spec(shapes)


# ------------------------------------------------------------ scanned <-> per-layer trees
_LAYER_KEY = re.compile(r"layer_(\d+)")


def _stack_leaves(*leaves: Any) -> Any:
    first = leaves[0]
    if isinstance(first, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct((len(leaves), *first.shape), first.dtype)
    if all(isinstance(x, np.ndarray | np.generic) for x in leaves):
        return np.stack(leaves)  # host trees stay on the host
    return jnp.stack(leaves)


def _take_leaf(x: Any, i: int) -> Any:
    if isinstance(x, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(x.shape[1:], x.dtype)
    return x[i]


def stack_layers(tree: Any) -> Any:
    """Per-layer tree -> scanned tree: wherever a dict holds `layer_0` ... `layer_{L-1}`,
    they become one `layers` entry whose leaves gain a leading [L] axis. Works on parameter
    trees, optimizer-state dicts and checkpoint trees alike (arrays or ShapeDtypeStructs).
    The inverse of `unstack_layers`."""
    if not isinstance(tree, dict):
        return tree
    out, layers = {}, {}
    for key, value in tree.items():
        m = _LAYER_KEY.fullmatch(str(key))
        if m:
            layers[int(m.group(1))] = value
        else:
            out[key] = stack_layers(value)
    if layers:
        if sorted(layers) != list(range(len(layers))):
            raise ValueError(f"Layers {sorted(layers)} are not numbered 0..{len(layers) - 1}.")
        if "layers" in out:
            raise ValueError("A tree holds both per-layer (layer_i) and stacked (layers) entries.")
        out["layers"] = jax.tree.map(_stack_leaves, *[layers[i] for i in range(len(layers))])
    return out


def unstack_layers(tree: Any) -> Any:
    """Scanned tree -> per-layer tree: every `layers` dict (leaves [L, ...]) becomes
    `layer_0` ... `layer_{L-1}`. The inverse of `stack_layers`."""
    if not isinstance(tree, dict):
        return tree
    out = {}
    for key, value in tree.items():
        if key == "layers" and isinstance(value, dict):
            leaves = jax.tree.leaves(value)
            n = leaves[0].shape[0] if leaves else 0
            for i in range(n):
                out[f"layer_{i}"] = jax.tree.map(lambda x, i=i: _take_leaf(x, i), value)
        else:
            out[key] = unstack_layers(value)
    return out


def convert_layers(tree: Any, scanned: bool) -> Any:
    """`tree` in the layout of a model with scan_layers=`scanned` (either layout in)."""
    return stack_layers(tree) if scanned else unstack_layers(tree)
