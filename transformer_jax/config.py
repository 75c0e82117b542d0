"""ModelConfig: the hyperparameters of one Transformer, as a frozen, validated dataclass.

Run settings (batch size, learning rate, data) live in `configs/*.py` (ml_collections); this
dataclass holds only what defines the network, so two runs with equal ModelConfigs have
interchangeable parameters.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax.numpy as jnp

Arch = Literal["encoder", "decoder", "encoder_decoder"]

ARCHS = ("encoder", "decoder", "encoder_decoder")
POSITIONS = ("sinusoidal", "learned", "none")
ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu")
NORMS = ("layernorm", "rmsnorm")
NORM_PLACEMENTS = ("post", "pre")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of an encoder-only, decoder-only or encoder-decoder Transformer.

    Families are switches on this one config (see `presets.py`):
      * paper Transformer: sinusoidal positions, embed_scale, post-LN, ReLU, tied embeddings;
      * BERT: learned positions, token types, embed_norm, post-LN, GELU, pooler + MLM head;
      * GPT-2: learned positions, pre-LN with final_norm, tanh-GELU, tied embeddings;
      * BART: learned positions with offset 2, embed_norm, post-LN, GELU, tied embeddings.
    """

    arch: Arch
    vocab_size: int
    d_model: int
    num_heads: int
    d_ff: int
    num_layers: int
    num_decoder_layers: int | None = None  # encoder_decoder only; defaults to num_layers
    num_kv_heads: int | None = None  # grouped-query attention; defaults to num_heads
    max_len: int = 512  # the position limit: longest sequence the model accepts
    # Embeddings.
    position: str = "learned"
    position_offset: int = 0  # BART reserves 2 rows before position 0 in its table
    type_vocab_size: int = 0  # BERT token types (segments A/B); 0 = none
    embed_scale: bool = False  # multiply token embeddings by sqrt(d_model) (paper)
    embed_norm: bool = False  # norm after summing the embeddings (BERT, BART)
    # Blocks.
    norm: str = "layernorm"
    norm_placement: str = "post"  # "post": x = norm(x + f(x)); "pre": x = x + f(norm(x))
    final_norm: bool = False  # norm after the last block of each stack (pre-LN models)
    norm_eps: float = 1e-5
    activation: str = "relu"
    gated_ffn: bool = False  # act(x W1) * (x W3) before W2 (LLaMA/T5 v1.1 style)
    use_bias: bool = True  # biases in attention and feed-forward projections
    # Regularisation.
    dropout_rate: float = 0.1  # embeddings and residual branches
    attention_dropout_rate: float = 0.0  # on attention weights
    # Output.
    tie_embeddings: bool = True  # logits = h @ token_embedding.T
    output_bias: bool = False  # a [vocab] bias on the logits
    # Encoder-only heads.
    pooler: bool = False  # dense + tanh on the first token (BERT)
    mlm_transform: bool = False  # dense + act + norm before the MLM decoder (BERT)
    num_labels: int = 0  # classification head on the pooled output (2 for NSP); 0 = none
    # Tokens and numerics.
    pad_id: int | None = 0  # keys holding this id are masked; None = no padding mask
    dtype: str = "float32"  # compute dtype; parameters are always float32
    init_std: float = 0.02

    def __post_init__(self) -> None:
        self._check_choice("arch", ARCHS)
        self._check_choice("position", POSITIONS)
        self._check_choice("activation", ACTIVATIONS)
        self._check_choice("norm", NORMS)
        self._check_choice("norm_placement", NORM_PLACEMENTS)
        self._check_choice("dtype", DTYPES)
        for name in ("vocab_size", "d_model", "num_heads", "d_ff", "num_layers", "max_len"):
            self._check_positive(name)
        if self.num_decoder_layers is not None:
            self._check_positive("num_decoder_layers")
        if self.num_kv_heads is not None:
            self._check_positive("num_kv_heads")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"ModelConfig.d_model={self.d_model} is not divisible by "
                f"num_heads={self.num_heads}; choose num_heads dividing d_model."
            )
        if self.num_heads % self.kv_heads:
            raise ValueError(
                f"ModelConfig.num_heads={self.num_heads} is not a multiple of "
                f"num_kv_heads={self.kv_heads}; each key/value head must serve a whole group."
            )
        for name in ("dropout_rate", "attention_dropout_rate"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"ModelConfig.{name}={value} must be in [0, 1).")
        for name in ("position_offset", "type_vocab_size", "num_labels"):
            if getattr(self, name) < 0:
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)} must be >= 0.")
        if self.pad_id is not None and not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(
                f"ModelConfig.pad_id={self.pad_id} must be in [0, vocab_size={self.vocab_size}) "
                "or None (no padding mask)."
            )
        if self.norm_eps <= 0 or self.init_std <= 0:
            raise ValueError("ModelConfig.norm_eps and init_std must be > 0.")
        if self.arch != "encoder" and (self.pooler or self.mlm_transform or self.num_labels):
            raise ValueError(
                f"ModelConfig.pooler/mlm_transform/num_labels are encoder-only heads; "
                f"arch={self.arch!r} has none. Set them to False/0."
            )
        if self.arch != "encoder_decoder" and self.num_decoder_layers is not None:
            raise ValueError(
                f"ModelConfig.num_decoder_layers is for arch='encoder_decoder', got "
                f"arch={self.arch!r}; use num_layers."
            )

    def _check_choice(self, name: str, allowed: tuple[str, ...]) -> None:
        value = getattr(self, name)
        if value not in allowed:
            raise ValueError(f"ModelConfig.{name}={value!r} is not one of {allowed}.")

    def _check_positive(self, name: str) -> None:
        value = getattr(self, name)
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"ModelConfig.{name}={value!r} must be a positive integer.")

    # Derived values.
    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def kv_heads(self) -> int:
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    @property
    def decoder_layers(self) -> int:
        return self.num_layers if self.num_decoder_layers is None else self.num_decoder_layers

    @property
    def compute_dtype(self) -> Any:
        return jnp.dtype(self.dtype)

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with `changes` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"Unknown ModelConfig fields {unknown}; known: {sorted(fields)}.")
        return cls(**values)
