"""Model FLOPs for MFU: matmul FLOPs of the executed shapes, training = 3 x forward.

Counted per row of a batch: 2·(multiply-adds) of every projection, the attention score and
value products (2·2·T·S·D per layer, full square even when causal, as PaLM's MFU does) and the
output projection. Embedding lookups, norms and softmax are left out (they are not matmuls).
Padding tokens are counted: MFU measures what the hardware executed; tokens/s counts only real
(non-pad) target tokens.
"""

from __future__ import annotations

from transformer_jax.config import ModelConfig


def _layer_flops(cfg: ModelConfig, q_len: int, kv_len: int, cross_len: int = 0) -> float:
    d, hd = cfg.d_model, cfg.head_dim
    q_dim, kv_dim = cfg.num_heads * hd, cfg.kv_heads * hd
    ffn_mats = 3 if cfg.ffn.gated else 2
    flops = 2 * q_len * d * (2 * q_dim) + 2 * q_len * d * (2 * kv_dim)  # q, out; k, v
    flops += 2 * 2 * q_len * kv_len * q_dim  # scores and weighted values
    flops += 2 * q_len * d * cfg.ffn.d_ff * ffn_mats
    if cross_len:
        flops += 2 * q_len * d * (2 * q_dim) + 2 * cross_len * d * (2 * kv_dim)
        flops += 2 * 2 * q_len * cross_len * q_dim
    return float(flops)


def forward_flops(cfg: ModelConfig, length: int, target_length: int | None = None) -> float:
    """Forward FLOPs of one row: `length` tokens (the source for encoder-decoder models, whose
    decoder runs `target_length` tokens)."""
    # The projection to the vocabulary (from E when tied to factorised embeddings), plus the
    # factorised embedding's projection E -> D of every input token.
    vocab_proj = 2 * (cfg.embed_size if cfg.output.tie else cfg.d_model) * cfg.vocab_size
    embed_proj = 2 * cfg.embed_size * cfg.d_model if cfg.embed_size != cfg.d_model else 0
    if cfg.arch == "encoder_decoder":
        tgt = target_length or length
        enc = cfg.num_layers * _layer_flops(cfg, length, length)
        dec = cfg.decoder_layers * _layer_flops(cfg, tgt, tgt, cross_len=length)
        return enc + dec + tgt * vocab_proj + (length + tgt) * embed_proj
    layers = cfg.num_layers * _layer_flops(cfg, length, length)
    return layers + length * (vocab_proj + embed_proj)


def train_flops(cfg: ModelConfig, length: int, target_length: int | None = None) -> float:
    """Forward + backward (2x forward) FLOPs of one row."""
    return 3.0 * forward_flops(cfg, length, target_length)
