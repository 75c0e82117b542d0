"""The `ref` fixture: an independent float64 NumPy re-implementation of the model core.

Written from the papers / the documented wiring, not from the library code, and shared by
test_attention, test_blocks and test_models. Parameter trees are read by their flax paths
(query/key/value kernels [D, N|K, H], out kernel [N, H, D]).
"""

from __future__ import annotations

import math
import types

import jax
import numpy as np
import pytest

# Float32 comparisons at ~1e-5 assume full-precision matmuls; on GPUs JAX's default is TF32.
jax.config.update("jax_default_matmul_precision", "highest")

_erf = np.vectorize(math.erf)

ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "gelu_tanh": lambda x: (
        0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    ),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
}


def f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def random_params(shapes, seed: int, scale: float = 0.1):
    """Float32 params shaped like `shapes` (ShapeDtypeStructs): norm scales 1 + noise, all
    other leaves (biases included, so that a dropped bias shows) scale * N(0, 1)."""
    rng = np.random.default_rng(seed)
    paths, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    leaves = []
    for path, leaf in paths:
        noise = scale * rng.standard_normal(leaf.shape)
        base = 1.0 if path[-1].key == "scale" else 0.0
        leaves.append(np.asarray(base + noise, np.float32))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def attention(q, k, v, mask=None):
    """softmax(q kᵀ / sqrt(H)) v. q [B, T, N, H]; k, v [B, S, K, H]; query head n uses
    key/value head n // (N // K). Fully masked rows come out NaN (they have no keys)."""
    num_heads, num_kv, head_dim = q.shape[2], k.shape[2], q.shape[3]
    k = np.repeat(k, num_heads // num_kv, axis=2)  # [B, S, N, H]
    v = np.repeat(v, num_heads // num_kv, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", q, k) / math.sqrt(head_dim)
    if mask is not None:
        logits = np.where(mask, logits, -np.inf)
    with np.errstate(invalid="ignore"):
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights = weights / weights.sum(-1, keepdims=True)
    return np.einsum("bnts,bsnh->btnh", weights, v)


def _bias(p):
    return p["bias"] if "bias" in p else 0.0


def mha(p, x, mask, kv_x=None):
    """Multi-head attention from a flax MultiHeadAttention param dict."""
    kv_x = x if kv_x is None else kv_x
    q = np.einsum("btd,dnh->btnh", x, p["query"]["kernel"]) + _bias(p["query"])
    k = np.einsum("bsd,dkh->bskh", kv_x, p["key"]["kernel"]) + _bias(p["key"])
    v = np.einsum("bsd,dkh->bskh", kv_x, p["value"]["kernel"]) + _bias(p["value"])
    o = attention(q, k, v, mask)
    return np.einsum("btnh,nhd->btd", o, p["out"]["kernel"]) + _bias(p["out"])


def norm(cfg, p, x):
    if cfg.norm == "rmsnorm":
        return x / np.sqrt(np.mean(x**2, -1, keepdims=True) + cfg.norm_eps) * p["scale"]
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + cfg.norm_eps) * p["scale"] + p["bias"]


def ffn(cfg, p, x):
    h = ACTIVATIONS[cfg.activation](x @ p["wi"]["kernel"] + _bias(p["wi"]))
    if cfg.gated_ffn:
        h = h * (x @ p["wi_gate"]["kernel"] + _bias(p["wi_gate"]))
    return h @ p["wo"]["kernel"] + _bias(p["wo"])


def layer(cfg, p, x, mask, encoded=None, cross_mask=None):
    """post-LN: x = norm(x + f(x)); pre-LN: x = x + f(norm(x))."""

    def sub(x, norm_p, f):
        if cfg.norm_placement == "pre":
            return x + f(norm(cfg, norm_p, x))
        return norm(cfg, norm_p, x + f(x))

    x = sub(x, p["self_attn_norm"], lambda h: mha(p["self_attn"], h, mask))
    if "cross_attn" in p:
        x = sub(x, p["cross_attn_norm"], lambda h: mha(p["cross_attn"], h, cross_mask, encoded))
    return sub(x, p["ffn_norm"], lambda h: ffn(cfg, p["ffn"], h))


def sinusoid(length, d):
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d))."""
    table = np.zeros((length, d))
    for pos in range(length):
        for j in range(d):
            angle = pos / 10000 ** ((j - j % 2) / d)
            table[pos, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return table


def embed(cfg, p, table, tokens, positions, token_types=None):
    x = table[tokens]
    if cfg.embed_scale:
        x = x * math.sqrt(cfg.d_model)
    if cfg.position == "sinusoidal":
        x = x + sinusoid(cfg.max_len, cfg.d_model)[positions]
    elif cfg.position == "learned":
        x = x + p["pos_embed"]["embedding"][positions + cfg.position_offset]
    if cfg.type_vocab_size:
        types_ = np.zeros_like(tokens) if token_types is None else token_types
        x = x + p["type_embed"]["embedding"][types_]
    if cfg.embed_norm:
        x = norm(cfg, p["embed_norm"], x)
    return x


def stack(cfg, p, table, tokens, mask, num_layers, *, token_types=None, encoded=None, xmask=None):
    positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
    x = embed(cfg, p.get("embed", {}), table, tokens, positions, token_types)
    for i in range(num_layers):
        x = layer(cfg, p[f"layer_{i}"], x, mask, encoded, xmask)
    return norm(cfg, p["final_norm"], x) if cfg.final_norm else x


def key_mask(cfg, tokens):  # [B, 1, 1, S]
    if cfg.pad_id is None:
        return np.ones(tokens.shape, bool)[:, None, None]
    return (tokens != cfg.pad_id)[:, None, None]


def causal(length):  # [1, 1, T, T]
    return np.tril(np.ones((length, length), bool))[None, None]


def logits(cfg, p, h):
    if cfg.tie_embeddings:
        out = h @ p["token_embed"]["embedding"].T
        return out + p["logits_bias"] if cfg.output_bias else out
    return h @ p["lm_head"]["kernel"] + _bias(p["lm_head"])


def decoder_only(cfg, p, tokens):
    p = f64(p)
    mask = causal(tokens.shape[1]) & key_mask(cfg, tokens)
    table = p["token_embed"]["embedding"]
    return logits(cfg, p, stack(cfg, p["decoder"], table, tokens, mask, cfg.num_layers))


def encoder_only(cfg, p, tokens, token_types=None):
    """(MLM logits, classifier logits or None)."""
    p = f64(p)
    table = p["token_embed"]["embedding"]
    mask = key_mask(cfg, tokens)
    h = stack(cfg, p["encoder"], table, tokens, mask, cfg.num_layers, token_types=token_types)
    cls = None
    if cfg.num_labels:
        pooled = h[:, 0]
        if cfg.pooler:
            pooled = np.tanh(pooled @ p["pooler"]["kernel"] + p["pooler"]["bias"])
        cls = pooled @ p["classifier"]["kernel"] + p["classifier"]["bias"]
    if cfg.mlm_transform:
        t = ACTIVATIONS[cfg.activation](
            h @ p["mlm_transform"]["kernel"] + p["mlm_transform"]["bias"]
        )
        h = norm(cfg, p["mlm_norm"], t)
    return logits(cfg, p, h), cls


def encoder_decoder(cfg, p, src, tgt):
    p = f64(p)
    table = p["token_embed"]["embedding"]
    enc = stack(cfg, p["encoder"], table, src, key_mask(cfg, src), cfg.num_layers)
    mask = causal(tgt.shape[1]) & key_mask(cfg, tgt)
    xmask = key_mask(cfg, src)
    h = stack(cfg, p["decoder"], table, tgt, mask, cfg.decoder_layers, encoded=enc, xmask=xmask)
    return logits(cfg, p, h)


@pytest.fixture(scope="session")
def ref():
    return types.SimpleNamespace(
        f64=f64,
        random_params=random_params,
        attention=attention,
        mha=mha,
        norm=norm,
        ffn=ffn,
        layer=layer,
        sinusoid=sinusoid,
        embed=embed,
        activations=ACTIVATIONS,
        decoder_only=decoder_only,
        encoder_only=encoder_only,
        encoder_decoder=encoder_decoder,
    )


# Session set-up (compilation cache shared with subprocesses, run-once builds, the `serial`
# marker for xdist): see tests/_session_fixtures.py.
pytest_plugins = ["_session_fixtures"]
