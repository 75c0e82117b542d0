"""ModelConfig: the hyperparameters of one Transformer, as a frozen, validated dataclass.

Run settings (batch size, learning rate, data) live in `configs/*.py` (ml_collections); this
dataclass holds only what defines the network, so two runs with equal ModelConfigs have
interchangeable parameters.

The root holds what every model has (architecture, vocabulary, width, depth, position limit,
padding, numerics); small frozen groups hold what varies between families, one group per
component, and each module is built from its group only:

    attention   AttentionConfig     heads, key/value heads, head size, score scale, biases,
                                    dropout, per-layer global/local pattern
    positions   LearnedPositions | SinusoidalPositions | RotaryPositions | RelativePositions |
                NoPositions         (a variant with its own parameters; once per stack call)
    ffn         FeedForwardConfig   width, activation, gating, biases
    norm        NormConfig          kind, eps, residual wiring (post / pre / parallel), final norm
    embed       EmbeddingConfig     sqrt(d) scaling, norm, token types, factorised size
    output      OutputConfig        tying, bias, hidden-state scale before the projection
    heads       HeadsConfig         encoder-only heads: pooler, MLM transform, classifier

`to_dict` gives plain JSON types (with "version"); `from_dict` reads that, rejects unknown
keys, and also reads the flat form of version 1 (workdirs written before the groups).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import jax.numpy as jnp

Arch = Literal["encoder", "decoder", "encoder_decoder", "two_stream"]

CONFIG_VERSION = 2  # the layout of to_dict(); 1 = the flat form of transformer_jax 0.1
# two_stream: XLNet's bidirectional relative-attention stack with a content and a query stream
ARCHS = ("encoder", "decoder", "encoder_decoder", "two_stream")
ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu")
NORMS = ("layernorm", "rmsnorm")
RESIDUALS = ("post", "pre", "parallel")
LAYER_KINDS = ("global", "local")
SINUSOIDAL_LAYOUTS = ("interleaved", "halves")
ROTARY_LAYOUTS = ("half", "interleaved")
DTYPES = ("float32", "bfloat16")
REMATS = ("none", "full", "dots")
# How attention is computed (nn/attention.py): "auto" picks per platform and length; "einsum"
# the reference path; "blockwise" memory-efficient pure JAX; "xla" jax.nn.dot_product_attention;
# "cudnn" its cuDNN kernel (GPU only). Same parameters and results for all of them.
ATTENTION_IMPLS = ("auto", "einsum", "blockwise", "xla", "cudnn")


# ------------------------------------------------------------------------------- checks
def _fail(where: str, value: Any, rule: str) -> None:
    raise ValueError(f"ModelConfig.{where}={value!r} {rule}")


def _choice(where: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        _fail(where, value, f"is not one of {allowed}.")


def _positive_int(where: str, value: Any, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        _fail(where, value, "must be a positive integer." + (" (or None)" if optional else ""))


def _rate(where: str, value: Any) -> None:
    if not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        _fail(where, value, "must be in [0, 1).")


class _Group:
    """Shared behaviour of the frozen groups: replace, dict round trip, checks by name."""

    _prefix: ClassVar[str] = ""

    def replace(self, **changes: Any):
        """A copy with `changes` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str):
        values = dict(values)
        fields = {f.name for f in dataclasses.fields(cls)}
        _reject_unknown(values, fields, where)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _reject_unknown(values: Mapping[str, Any], fields: set[str], where: str) -> None:
    unknown = sorted(set(values) - fields)
    if unknown:
        hints = {u: difflib.get_close_matches(u, fields, 1) for u in unknown}
        hint = "; ".join(f"{u!r}: did you mean {h[0]!r}?" for u, h in hints.items() if h)
        raise ValueError(
            f"Unknown {where} fields {unknown}; known: {sorted(fields)}."
            + (f" ({hint})" if hint else "")
        )


# ------------------------------------------------------------------------------- groups
@dataclasses.dataclass(frozen=True)
class AttentionConfig(_Group):
    """Multi-head attention of every layer (self and cross)."""

    num_heads: int  # query heads N
    num_kv_heads: int | None = None  # key/value heads K (grouped/multi-query); None = N
    head_dim: int | None = None  # H, size of one head; None = d_model // num_heads
    scale: float | None = None  # scores = q.k * scale; None = head_dim ** -0.5 (T5: 1.0)
    qkv_bias: bool = True  # biases on the query, key and value projections
    out_bias: bool = True  # bias on the output projection
    dropout_rate: float = 0.0  # dropout on the attention weights
    # Per-layer kind of self-attention, one entry for all layers or one per layer:
    # "global" sees every allowed key, "local" only keys q - window < k <= q.
    pattern: tuple[str, ...] = ("global",)
    window: int | None = None  # local layers' window (keys per query, itself included)
    impl: str = "auto"  # how scores are computed: one of ATTENTION_IMPLS (no parameters)

    def __post_init__(self) -> None:
        if isinstance(self.pattern, list):  # JSON and hand-written lists: keep it hashable
            object.__setattr__(self, "pattern", tuple(self.pattern))
        _positive_int("attention.num_heads", self.num_heads)
        _positive_int("attention.num_kv_heads", self.num_kv_heads, optional=True)
        _positive_int("attention.head_dim", self.head_dim, optional=True)
        _positive_int("attention.window", self.window, optional=True)
        if self.scale is not None and not (isinstance(self.scale, int | float) and self.scale > 0):
            _fail(
                "attention.scale", self.scale, "must be a number > 0, or None (1/sqrt(head_dim))."
            )
        if self.num_heads % self.kv_heads:
            raise ValueError(
                f"ModelConfig.attention.num_heads={self.num_heads} is not a multiple of "
                f"attention.num_kv_heads={self.kv_heads}; each key/value head must serve a "
                "whole group of query heads."
            )
        _rate("attention.dropout_rate", self.dropout_rate)
        _choice("attention.impl", self.impl, ATTENTION_IMPLS)
        if isinstance(self.pattern, str) or not self.pattern:
            _fail("attention.pattern", self.pattern, "must be a non-empty tuple of layer kinds.")
        for kind in self.pattern:
            _choice("attention.pattern", kind, LAYER_KINDS)
        if "local" in self.pattern and self.window is None:
            _fail("attention.window", None, "must be set: attention.pattern has local layers.")
        if "local" not in self.pattern and self.window is not None:
            _fail(
                "attention.window",
                self.window,
                "is set but attention.pattern has no 'local' layer; add one or set window=None.",
            )

    @property
    def kv_heads(self) -> int:
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    def layer_kind(self, layer: int) -> str:
        """'global' or 'local' for layer `layer` of a stack."""
        return self.pattern[0] if len(self.pattern) == 1 else self.pattern[layer]


@dataclasses.dataclass(frozen=True)
class LearnedPositions(_Group):
    """A learned table [max_len + offset, D] added to the token embeddings."""

    kind: ClassVar[str] = "learned"
    offset: int = 0  # rows reserved before position 0 (BART: 2; RoBERTa: pad_id + 1)
    # Positions count real tokens only (RoBERTa): a real token's position is the number of
    # real tokens before it, padding reads row offset - 1 (HF's padding_idx row). Applies
    # when no positions are passed; False: position t is the index t.
    skip_padding: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.offset, int) or self.offset < 0:
            _fail("positions.offset", self.offset, "must be an integer >= 0.")
        if not isinstance(self.skip_padding, bool):
            _fail("positions.skip_padding", self.skip_padding, "must be True or False.")
        if self.skip_padding and self.offset < 1:
            _fail(
                "positions.offset",
                self.offset,
                "must be >= 1 with positions.skip_padding (padding reads row offset - 1; "
                "RoBERTa uses offset = pad_id + 1).",
            )


@dataclasses.dataclass(frozen=True)
class SinusoidalPositions(_Group):
    """The paper's fixed table added to the token embeddings (no parameters)."""

    kind: ClassVar[str] = "sinusoidal"
    # "interleaved": [sin, cos, sin, cos, ...] (the paper); "halves": [sin ... | cos ...].
    layout: str = "interleaved"

    def __post_init__(self) -> None:
        _choice("positions.layout", self.layout, SINUSOIDAL_LAYOUTS)


@dataclasses.dataclass(frozen=True)
class NoPositions(_Group):
    """No position information from the embeddings."""

    kind: ClassVar[str] = "none"


@dataclasses.dataclass(frozen=True)
class RotaryPositions(_Group):
    """Rotary embeddings (RoPE): queries and keys of self-attention are rotated by their
    token's absolute position; nothing is added to the embeddings."""

    kind: ClassVar[str] = "rotary"
    theta: float = 10000.0  # base of the frequencies theta^(-2i/R) (HF rope_theta)
    rotary_dim: int | None = None  # R: rotate the first R dims of each head; None = head_dim
    # "half": pairs (i, i + R/2), as LLaMA / GPT-NeoX / Falcon (rotate_half);
    # "interleaved": pairs (2i, 2i + 1), as GPT-J / CodeGen (rotate_every_two).
    layout: str = "half"

    def __post_init__(self) -> None:
        if not isinstance(self.theta, int | float) or self.theta <= 1:
            _fail("positions.theta", self.theta, "must be a number > 1.")
        _positive_int("positions.rotary_dim", self.rotary_dim, optional=True)
        if self.rotary_dim is not None and self.rotary_dim % 2:
            _fail("positions.rotary_dim", self.rotary_dim, "must be even (dims rotate in pairs).")
        _choice("positions.layout", self.layout, ROTARY_LAYOUTS)


@dataclasses.dataclass(frozen=True)
class RelativePositions(_Group):
    """T5's relative position bias: a learned [num_buckets, heads] table per stack, indexed by
    the log-spaced bucket of (key position - query position) and added to the self-attention
    scores (bidirectional buckets in an encoder, causal ones in a decoder); nothing is added
    to the embeddings, cross-attention gets no bias."""

    kind: ClassVar[str] = "relative"
    num_buckets: int = 32  # buckets per stack (half per direction when bidirectional)
    max_distance: int = 128  # distances >= this share the last bucket

    def __post_init__(self) -> None:
        _positive_int("positions.num_buckets", self.num_buckets)
        _positive_int("positions.max_distance", self.max_distance)
        if self.num_buckets < 4:
            _fail("positions.num_buckets", self.num_buckets, "must be >= 4 (T5 uses 32).")


@dataclasses.dataclass(frozen=True)
class RelativeSinusoidalPositions(_Group):
    """Transformer-XL / XLNet relative positions (attn_type "bi"): a sinusoidal encoding
    ([sin | cos] halves) of each query-key distance i - j, projected per layer and scored
    against the queries (plus learned content, position and segment biases); nothing is added
    to the embeddings. Needs arch='two_stream'."""

    kind: ClassVar[str] = "relative_sinusoidal"
    clamp_len: int = -1  # distances beyond +-clamp_len share its encoding; <= 0: no clamp

    def __post_init__(self) -> None:
        if not isinstance(self.clamp_len, int) or isinstance(self.clamp_len, bool):
            _fail("positions.clamp_len", self.clamp_len, "must be an integer (<= 0: no clamp).")


POSITION_VARIANTS = {
    v.kind: v
    for v in (
        LearnedPositions,
        SinusoidalPositions,
        RotaryPositions,
        RelativePositions,
        RelativeSinusoidalPositions,
        NoPositions,
    )
}
Positions = (
    LearnedPositions
    | SinusoidalPositions
    | RotaryPositions
    | RelativePositions
    | RelativeSinusoidalPositions
    | NoPositions
)


def positions_to_dict(p: Positions) -> dict[str, Any]:
    return {"kind": p.kind, **p.to_dict()}


def positions_from_dict(values: Mapping[str, Any], current: Positions | None = None) -> Positions:
    """{"kind": ..., params} -> a variant; without "kind", `current`'s kind with changes."""
    values = dict(values)
    kind = values.pop("kind", None if current is None else current.kind)
    if kind not in POSITION_VARIANTS:
        _fail("positions.kind", kind, f"is not one of {tuple(POSITION_VARIANTS)}.")
    variant = POSITION_VARIANTS[kind]
    if current is not None and current.kind == kind:
        values = {**current.to_dict(), **values}
    return variant.from_dict(values, f"positions ({kind})")


@dataclasses.dataclass(frozen=True)
class FeedForwardConfig(_Group):
    """FFN(x) = act(x Wi) Wo, or gated: (act(x Wi_gate) * (x Wi)) Wo."""

    d_ff: int  # hidden width F
    activation: str = "relu"  # relu | gelu (erf) | gelu_tanh | silu
    gated: bool = False  # the activated branch is `wi_gate` (HF gate_proj, T5 wi_0)
    bias: bool = True  # biases on the feed-forward projections

    def __post_init__(self) -> None:
        _positive_int("ffn.d_ff", self.d_ff)
        _choice("ffn.activation", self.activation, ACTIVATIONS)


@dataclasses.dataclass(frozen=True)
class NormConfig(_Group):
    """Normalisation and the residual wiring around each sublayer."""

    kind: str = "layernorm"  # layernorm (scale + bias) | rmsnorm (scale only)
    eps: float = 1e-5
    # post: x = norm(x + f(x)); pre: x = x + f(norm(x));
    # parallel: x = x + attn(n1(x)) + ffn(n2(x)) (decoder-only; n2 = n1 if parallel_norms=1)
    residual: str = "post"
    parallel_norms: int = 1  # parallel residual: one norm shared by both branches, or two
    final: bool = False  # a norm after the last layer of each stack (pre-LN models)

    def __post_init__(self) -> None:
        _choice("norm.kind", self.kind, NORMS)
        _choice("norm.residual", self.residual, RESIDUALS)
        _choice("norm.parallel_norms", self.parallel_norms, (1, 2))
        if not isinstance(self.eps, int | float) or self.eps <= 0:
            _fail("norm.eps", self.eps, "must be > 0.")
        if self.parallel_norms == 2 and self.residual != "parallel":
            _fail(
                "norm.parallel_norms",
                2,
                f"is for norm.residual='parallel', not {self.residual!r}; two norms feed the "
                "parallel attention and feed-forward branches (set parallel_norms=1).",
            )


@dataclasses.dataclass(frozen=True)
class EmbeddingConfig(_Group):
    """What happens between the token lookup and the first layer."""

    scale: bool = False  # multiply token embeddings by sqrt(d_model) (paper, mBART)
    norm: bool = False  # a norm after summing tokens, positions and types (BERT, BART)
    type_vocab_size: int = 0  # token types (BERT segments A/B); 0 = none
    size: int | None = None  # factorised embeddings of width E, projected to d_model (ALBERT)

    def __post_init__(self) -> None:
        if not isinstance(self.type_vocab_size, int) or self.type_vocab_size < 0:
            _fail("embed.type_vocab_size", self.type_vocab_size, "must be an integer >= 0.")
        _positive_int("embed.size", self.size, optional=True)


@dataclasses.dataclass(frozen=True)
class OutputConfig(_Group):
    """The vocabulary projection."""

    tie: bool = True  # logits = h @ token_embedding.T (else a separate lm_head)
    bias: bool = False  # a [vocab] bias on the logits
    scale: float = 1.0  # hidden states are multiplied by this first (T5 v1.0: d_model^-0.5)

    def __post_init__(self) -> None:
        if not isinstance(self.scale, int | float) or self.scale <= 0:
            _fail("output.scale", self.scale, "must be a number > 0.")


@dataclasses.dataclass(frozen=True)
class HeadsConfig(_Group):
    """Heads on an encoder-only backbone."""

    pooler: bool = False  # dense + tanh on the first token (BERT); part of the backbone
    mlm_transform: bool = False  # dense + activation + norm before the MLM projection (BERT)
    num_labels: int = 0  # classifier on the pooled output (2 for NSP); 0 = none

    def __post_init__(self) -> None:
        if not isinstance(self.num_labels, int) or self.num_labels < 0:
            _fail("heads.num_labels", self.num_labels, "must be an integer >= 0.")


GROUPS: dict[str, type] = {
    "attention": AttentionConfig,
    "ffn": FeedForwardConfig,
    "norm": NormConfig,
    "embed": EmbeddingConfig,
    "output": OutputConfig,
    "heads": HeadsConfig,
}


# --------------------------------------------------------------------------------- root
@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of an encoder-only, decoder-only or encoder-decoder Transformer.

    Families are presets of this one config (transformer_jax/families/), e.g.
      * paper Transformer: sinusoidal positions, embed.scale, post-LN, ReLU, tied output;
      * BERT: learned positions, token types, embed.norm, post-LN, GELU, pooler + MLM head;
      * GPT-2: learned positions, pre-LN with a final norm, tanh-GELU, tied output;
      * BART: learned positions with offset 2, embed.norm, post-LN, GELU, tied output;
      * RoBERTa: BERT with positions counted over real tokens (skip_padding, offset
        pad_id + 1); ALBERT: factorised embeddings (embed.size) and one shared layer
        (layer_groups=1); DistilBERT: BERT without token types or pooler;
      * T5: relative positions, attention.scale 1, no biases, pre-RMSNorm + final norm,
        ReLU with a tied output scaled by d_model^-0.5 (v1.0) or gated GELU, untied (v1.1).
    """

    arch: Arch  # encoder | decoder | encoder_decoder
    vocab_size: int  # V, rows of the token table
    d_model: int  # D, the residual stream's width
    num_layers: int  # layers of the (encoder or decoder-only) stack
    attention: AttentionConfig
    ffn: FeedForwardConfig
    num_decoder_layers: int | None = None  # encoder_decoder only; None = num_layers
    layer_groups: int | None = None  # distinct layer parameter sets; layer i uses set
    # floor(i * groups / layers); None = one per layer; 1 = one layer shared (ALBERT)
    max_len: int = 512  # the position limit: longest sequence the model accepts
    positions: Positions = LearnedPositions()
    norm: NormConfig = NormConfig()
    embed: EmbeddingConfig = EmbeddingConfig()
    output: OutputConfig = OutputConfig()
    heads: HeadsConfig = HeadsConfig()
    dropout_rate: float = 0.1  # on embeddings and residual branches
    pad_id: int | None = 0  # keys holding this id are masked; None = no padding mask
    dtype: str = "float32"  # compute dtype; parameters are always float32
    init_std: float = 0.02  # normal init of kernels and embeddings
    # How the layer stack is built (same function, other program): one nn.scan over layers
    # (parameters stacked on a leading `layers` axis) and jax.checkpoint per layer.
    scan_layers: bool = False
    remat: str = "none"  # none | full (recompute everything) | dots (keep matmul outputs)

    def __post_init__(self) -> None:
        _choice("arch", self.arch, ARCHS)
        _choice("dtype", self.dtype, DTYPES)
        _choice("remat", self.remat, REMATS)
        if not isinstance(self.scan_layers, bool):
            _fail("scan_layers", self.scan_layers, "must be True or False.")
        for name in ("vocab_size", "d_model", "num_layers", "max_len"):
            _positive_int(name, getattr(self, name))
        _positive_int("num_decoder_layers", self.num_decoder_layers, optional=True)
        _positive_int("layer_groups", self.layer_groups, optional=True)
        _rate("dropout_rate", self.dropout_rate)
        for name, group in GROUPS.items():
            if not isinstance(getattr(self, name), group):
                _fail(name, getattr(self, name), f"must be a {group.__name__}.")
        if not isinstance(self.positions, tuple(POSITION_VARIANTS.values())):
            _fail("positions", self.positions, f"must be one of {list(POSITION_VARIANTS)}.")
        if self.pad_id is not None and not (
            isinstance(self.pad_id, int) and 0 <= self.pad_id < self.vocab_size
        ):
            _fail(
                "pad_id",
                self.pad_id,
                f"must be in [0, vocab_size={self.vocab_size}) or None (no padding mask).",
            )
        if not isinstance(self.init_std, int | float) or self.init_std <= 0:
            _fail("init_std", self.init_std, "must be > 0.")
        self._check_combinations()

    def _check_combinations(self) -> None:
        att = self.attention
        if att.head_dim is None and self.d_model % att.num_heads:
            raise ValueError(
                f"ModelConfig.d_model={self.d_model} is not divisible by "
                f"attention.num_heads={att.num_heads}; choose num_heads dividing d_model, or "
                "set attention.head_dim explicitly."
            )
        if self.arch != "encoder_decoder" and self.num_decoder_layers is not None:
            _fail(
                "num_decoder_layers",
                self.num_decoder_layers,
                f"is for arch='encoder_decoder', not arch={self.arch!r}; use num_layers.",
            )
        depths = (self.num_layers, self.decoder_layers)
        if self.scan_layers and self.layer_groups is not None:
            _fail(
                "scan_layers",
                True,
                f"stacks one parameter set per layer; layer_groups={self.layer_groups} shares "
                "them (ALBERT): set scan_layers=False.",
            )
        if self.layer_groups is not None and self.layer_groups > min(depths):
            _fail(
                "layer_groups",
                self.layer_groups,
                f"exceeds the number of layers ({min(depths)}); use at most that many.",
            )
        if len(att.pattern) not in (1, self.num_layers):
            _fail(
                "attention.pattern",
                att.pattern,
                f"has {len(att.pattern)} entries; give one "
                f"for all layers or one per layer (num_layers={self.num_layers}).",
            )
        if "local" in att.pattern and self.arch != "decoder":
            _fail(
                "attention.pattern",
                att.pattern,
                "has local layers; local (sliding-window) "
                f"attention is causal and needs arch='decoder', not {self.arch!r}.",
            )
        two_stream = self.arch == "two_stream"
        if two_stream != isinstance(self.positions, RelativeSinusoidalPositions):
            _fail(
                "positions",
                self.positions,
                f"does not fit arch={self.arch!r}: arch='two_stream' (XLNet) and "
                "RelativeSinusoidalPositions go together, each needs the other.",
            )
        if two_stream:  # what the two-stream stack (nn/two_stream.py) builds, and nothing else
            fixed = {
                "norm.residual": (self.norm.residual, "post"),
                "norm.final": (self.norm.final, False),
                "embed": (self.embed, EmbeddingConfig()),
                "layer_groups": (self.layer_groups, None),
                "attention.num_kv_heads": (att.num_kv_heads, None),
                "attention.scale": (att.scale, None),
                "attention.qkv_bias": (att.qkv_bias, False),
                "attention.out_bias": (att.out_bias, False),
                "attention.pattern": (att.pattern, ("global",)),
                "scan_layers": (self.scan_layers, False),
                "remat": (self.remat, "none"),
            }
            for where, (value, needed) in fixed.items():
                if value != needed:
                    _fail(
                        where,
                        value,
                        f"is not supported with arch='two_stream' (XLNet's post-LN relative "
                        f"two-stream layers); set {where}={needed!r}.",
                    )
        if self.norm.residual == "parallel" and self.arch == "encoder_decoder":
            _fail(
                "norm.residual",
                "parallel",
                "has no place for cross-attention; use 'pre' or "
                "'post' with arch='encoder_decoder'.",
            )
        if self.arch != "encoder" and self.heads != HeadsConfig():
            _fail(
                "heads",
                self.heads,
                f"are encoder-only heads; arch={self.arch!r} has none. Use HeadsConfig().",
            )
        if isinstance(self.positions, RotaryPositions):
            dim = self.positions.rotary_dim
            if dim is not None and dim > self.head_dim:
                _fail(
                    "positions.rotary_dim",
                    dim,
                    f"exceeds the head size {self.head_dim} "
                    "(attention.head_dim or d_model // num_heads).",
                )
            if self.positions.rotary_dim is None and self.head_dim % 2:
                _fail(
                    "positions",
                    self.positions,
                    f"rotates dims in pairs; head size "
                    f"{self.head_dim} is odd: set positions.rotary_dim to an even size.",
                )
        if (
            self.output.tie
            and self.embed.size not in (None, self.d_model)
            and not self.heads.mlm_transform
        ):
            _fail(
                "embed.size",
                self.embed.size,
                f"differs from d_model={self.d_model}: a tied "
                "output needs heads.mlm_transform (which projects to the embedding size) or "
                "output.tie=False.",
            )

    # Derived values.
    @property
    def head_dim(self) -> int:
        """H: attention.head_dim, or d_model // num_heads."""
        h = self.attention.head_dim
        return self.d_model // self.attention.num_heads if h is None else h

    @property
    def kv_heads(self) -> int:
        return self.attention.kv_heads

    @property
    def num_heads(self) -> int:
        return self.attention.num_heads

    @property
    def decoder_layers(self) -> int:
        return self.num_layers if self.num_decoder_layers is None else self.num_decoder_layers

    @property
    def embed_size(self) -> int:
        """E: width of the token (and position/type) embeddings."""
        return self.d_model if self.embed.size is None else self.embed.size

    @property
    def compute_dtype(self) -> Any:
        return jnp.dtype(self.dtype)

    @property
    def score_scale(self) -> float:
        """The multiplier of q.k: attention.scale, or 1/sqrt(head_dim)."""
        s = self.attention.scale
        return self.head_dim**-0.5 if s is None else float(s)

    # Copies and the dict round trip.
    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with `changes` applied (validated again). A group may be given as a group
        object or as a dict of the fields to change in it, e.g.
        `cfg.replace(d_model=32, attention={"num_heads": 2}, positions={"offset": 2})`."""
        fields = {f.name for f in dataclasses.fields(self)}
        _reject_unknown(changes, fields, "ModelConfig")
        resolved = {}
        for name, value in changes.items():
            if name == "positions" and isinstance(value, Mapping):
                value = positions_from_dict(value, self.positions)
            elif name in GROUPS and isinstance(value, Mapping):
                current = getattr(self, name).to_dict()
                value = GROUPS[name].from_dict({**current, **value}, name)
            resolved[name] = value
        return dataclasses.replace(self, **resolved)

    def override(self, overrides: Mapping[str, Any]) -> ModelConfig:
        """A copy with run-config style overrides: keys are root fields, groups (a dict of
        changes), dotted paths ("attention.num_heads") or the flat names of version 1
        ("num_heads", "gated_ffn", ...: recipes written for transformer_jax 0.1 still run)."""
        from transformer_jax.migrate import legacy_to_nested

        nested: dict[str, Any] = {}
        legacy: dict[str, Any] = {}
        for key, value in overrides.items():
            if "." in key:
                group, field = key.split(".", 1)
                nested.setdefault(group, {})[field] = value
            elif key in _ROOT_FIELDS and not (key == "norm" and isinstance(value, str)):
                if isinstance(value, Mapping):  # a group's changes
                    nested.setdefault(key, {}).update(value)
                else:
                    nested[key] = value
            else:  # a version-1 name ("norm" with a string value is the old norm kind)
                legacy[key] = value
        # Version-1 names are translated together: some depend on each other (a position
        # offset of 0 is dropped for a non-learned position kind).
        for group, changes in legacy_to_nested(legacy).items():
            if isinstance(changes, Mapping):
                nested.setdefault(group, {}).update(changes)
            else:
                nested[group] = changes
        return self.replace(**nested)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: root fields, one dict per group, and "version"."""
        out: dict[str, Any] = {"version": CONFIG_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "positions":
                value = positions_to_dict(value)
            elif isinstance(value, _Group):
                value = value.to_dict()
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
        """Reads `to_dict` output (any version this code knows; unknown keys are errors)."""
        from transformer_jax.migrate import config_dict_to_current

        values = config_dict_to_current(values)
        _reject_unknown(values, _ROOT_FIELDS, "ModelConfig")
        kwargs = dict(values)
        for name, group in GROUPS.items():
            if name in kwargs:
                kwargs[name] = group.from_dict(kwargs[name], name)
        if "positions" in kwargs:
            kwargs["positions"] = positions_from_dict(kwargs["positions"])
        return cls(**kwargs)


_ROOT_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}
