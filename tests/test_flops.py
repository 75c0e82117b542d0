"""MFU's FLOP count against the closed forms (PaLM appendix B style)."""

from transformer_jax import presets
from transformer_jax.train import flops


def test_decoder_flops_closed_form():
    cfg = presets.get("gpt2-small")  # d_ff = 4 d_model, no GQA
    t, d, v, n = 1024, cfg.d_model, cfg.vocab_size, cfg.num_layers
    per_layer = 24 * t * d * d + 4 * t * t * d  # projections + FFN, then QK^T and AV
    forward = n * per_layer + 2 * t * d * v  # + the output projection
    assert flops.forward_flops(cfg, t) == forward
    assert flops.train_flops(cfg, t) == 3 * forward
    # ~6 N per token plus attention: the usual back-of-envelope agrees to a few percent.
    params_no_embed = n * 12 * d * d + d * v
    approx = 6 * params_no_embed * t + 3 * n * 4 * t * t * d
    assert abs(flops.train_flops(cfg, t) - approx) / approx < 0.01


def test_encoder_decoder_flops_closed_form():
    cfg = presets.get("transformer-base")
    s, t, d, v, n = 40, 30, cfg.d_model, cfg.vocab_size, cfg.num_layers
    f = cfg.ffn.d_ff
    enc = n * (8 * s * d * d + 4 * s * d * f + 4 * s * s * d)
    cross = 4 * t * d * d + 4 * s * d * d + 4 * t * s * d  # q, o on T; k, v on S; scores
    dec = n * (8 * t * d * d + 4 * t * d * f + 4 * t * t * d + cross)
    assert flops.forward_flops(cfg, s, t) == enc + dec + 2 * t * d * v


def test_gated_and_grouped_variants():
    base = presets.get("gpt-tiny")
    gated = base.replace(ffn={"gated": True})
    t, d, f, n = 16, base.d_model, base.ffn.d_ff, base.num_layers
    assert flops.forward_flops(gated, t) - flops.forward_flops(base, t) == n * 2 * t * d * f
    gqa = base.replace(attention={"num_kv_heads": 1})  # k, v: one head of head_dim
    saved = n * 2 * 2 * t * d * (d - base.head_dim)
    assert flops.forward_flops(base, t) - flops.forward_flops(gqa, t) == saved


def test_factorised_embedding_flops():
    """E < D: the projection E -> D of every input token, and a tied output decodes from E
    (the MLM transform projects D -> E first)."""
    base = presets.get("bert-tiny")
    e, t, d, v = 16, 12, base.d_model, base.vocab_size
    fact = base.replace(embed={"size": e})
    layers = flops.forward_flops(base, t) - t * 2 * d * v  # identical layers in both
    assert flops.forward_flops(fact, t) == layers + t * (2 * e * v + 2 * e * d)
