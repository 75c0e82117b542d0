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

# hypothesis (tests/test_fuzz.py): the default profile is small and derandomized (the same
# examples every run, a few seconds in `make test`); `pytest --hypothesis-profile=long` runs
# 20x as many, randomized. Tests size themselves with test_fuzz.examples(n).
from hypothesis import HealthCheck, settings  # noqa: E402

_FUZZ = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("default", max_examples=10, derandomize=True, **_FUZZ)
settings.register_profile("long", max_examples=200, **_FUZZ)
settings.load_profile("default")

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


def attention(q, k, v, mask=None, scale=None, bias=None):
    """softmax(q kᵀ · scale + bias) v, scale = 1/sqrt(H) unless given. q [B, T, N, H]; k, v
    [B, S, K, H]; bias [B or 1, N, T, S]; query head n uses key/value head n // (N // K).
    Fully masked rows come out NaN (they have no keys)."""
    num_heads, num_kv, head_dim = q.shape[2], k.shape[2], q.shape[3]
    k = np.repeat(k, num_heads // num_kv, axis=2)  # [B, S, N, H]
    v = np.repeat(v, num_heads // num_kv, axis=2)
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    logits = np.einsum("btnh,bsnh->bnts", q, k) * scale
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = np.where(mask, logits, -np.inf)
    with np.errstate(invalid="ignore"):
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights = weights / weights.sum(-1, keepdims=True)
    return np.einsum("bnts,bsnh->btnh", weights, v)


def _bias(p):
    return p["bias"] if "bias" in p else 0.0


def rotary(x, positions, theta, rotary_dim, layout):
    """Rotary embedding of x [B, T, heads, H] at positions [B, T], written from the RoFormer
    formula: the pair (a, b) of dims at frequency f_i = theta^(-2i/R) turns by angle pos * f_i;
    "half" pairs dim i with i + R/2 (GPT-NeoX), "interleaved" pairs 2i with 2i + 1 (GPT-J)."""
    out = np.array(x, dtype=np.float64)
    half = rotary_dim // 2
    for i in range(half):
        a, b = (i, i + half) if layout == "half" else (2 * i, 2 * i + 1)
        angle = positions[:, :, None] * theta ** (-2.0 * i / rotary_dim)  # [B, T, 1]
        xa, xb = x[..., a], x[..., b]
        out[..., a] = xa * np.cos(angle) - xb * np.sin(angle)
        out[..., b] = xb * np.cos(angle) + xa * np.sin(angle)
    return out


def mha(p, x, mask, kv_x=None, scale=None, rotate=None):
    """Multi-head attention from a flax MultiHeadAttention param dict. `rotate(t)` is applied
    to queries and keys (self-attention with rotary positions)."""
    kv_x = x if kv_x is None else kv_x
    q = np.einsum("btd,dnh->btnh", x, p["query"]["kernel"]) + _bias(p["query"])
    k = np.einsum("bsd,dkh->bskh", kv_x, p["key"]["kernel"]) + _bias(p["key"])
    v = np.einsum("bsd,dkh->bskh", kv_x, p["value"]["kernel"]) + _bias(p["value"])
    if rotate is not None:
        q, k = rotate(q), rotate(k)
    o = attention(q, k, v, mask, scale)
    return np.einsum("btnh,nhd->btd", o, p["out"]["kernel"]) + _bias(p["out"])


def norm(cfg, p, x):
    """cfg: a ModelConfig (its norm group)."""
    if cfg.norm.kind == "rmsnorm":
        return x / np.sqrt(np.mean(x**2, -1, keepdims=True) + cfg.norm.eps) * p["scale"]
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + cfg.norm.eps) * p["scale"] + p["bias"]


def ffn(cfg, p, x):
    """act(x Wi) Wo, or gated: (act(x Wi_gate) * (x Wi)) Wo (the gate is the activated one)."""
    act = ACTIVATIONS[cfg.ffn.activation]
    if cfg.ffn.gated:
        h = act(x @ p["wi_gate"]["kernel"] + _bias(p["wi_gate"]))
        h = h * (x @ p["wi"]["kernel"] + _bias(p["wi"]))
    else:
        h = act(x @ p["wi"]["kernel"] + _bias(p["wi"]))
    return h @ p["wo"]["kernel"] + _bias(p["wo"])


def layer(cfg, p, x, mask, encoded=None, cross_mask=None, rotate=None):
    """post-LN: x = norm(x + f(x)); pre-LN: x = x + f(norm(x));
    parallel: x + attn(n1(x)) + ffn(n2(x)), n2 = n1 when one norm is shared."""
    scale = cfg.attention.scale
    if cfg.norm.residual == "parallel":
        h = norm(cfg, p["self_attn_norm"], x)
        h2 = h if cfg.norm.parallel_norms == 1 else norm(cfg, p["ffn_norm"], x)
        return x + mha(p["self_attn"], h, mask, None, scale, rotate) + ffn(cfg, p["ffn"], h2)

    def sub(x, norm_p, f):
        if cfg.norm.residual == "pre":
            return x + f(norm(cfg, norm_p, x))
        return norm(cfg, norm_p, x + f(x))

    x = sub(x, p["self_attn_norm"], lambda h: mha(p["self_attn"], h, mask, None, scale, rotate))
    if "cross_attn" in p:
        x = sub(
            x,
            p["cross_attn_norm"],
            lambda h: mha(p["cross_attn"], h, cross_mask, encoded, scale),
        )
    return sub(x, p["ffn_norm"], lambda h: ffn(cfg, p["ffn"], h))


def sinusoid(length, d, layout="interleaved"):
    """The angles pos / 10000^(2i/d). "interleaved": PE(pos, 2i) = sin, PE(pos, 2i+1) = cos;
    "halves" (Marian): the first ceil(d/2) columns sin of i = 0.., the rest cos of i = 0.."""
    table = np.zeros((length, d))
    half = (d + 1) // 2
    for pos in range(length):
        for j in range(d):
            if layout == "interleaved":
                angle = pos / 10000 ** ((j - j % 2) / d)
                table[pos, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            else:
                i = j if j < half else j - half
                angle = pos / 10000 ** (2 * i / d)
                table[pos, j] = math.sin(angle) if j < half else math.cos(angle)
    return table


def embed(cfg, p, table, tokens, positions, token_types=None):
    x = table[tokens]
    if cfg.embed.scale:
        x = x * math.sqrt(cfg.d_model)
    kind = cfg.positions.kind
    if kind == "sinusoidal":
        x = x + sinusoid(cfg.max_len, cfg.embed_size, cfg.positions.layout)[positions]
    elif kind == "learned":
        x = x + p["pos_embed"]["embedding"][positions + cfg.positions.offset]
    if cfg.embed.type_vocab_size:
        types_ = np.zeros_like(tokens) if token_types is None else token_types
        x = x + p["type_embed"]["embedding"][types_]
    if cfg.embed.norm:
        x = norm(cfg, p["embed_norm"], x)
    if cfg.embed_size != cfg.d_model:
        x = x @ p["embed_proj"]["kernel"] + p["embed_proj"]["bias"]
    return x


def local(positions, window):  # [B, 1, T, T]: q - window < k
    return (positions[:, None, :] > positions[:, :, None] - window)[:, None]


def stack(cfg, p, table, tokens, mask, num_layers, *, token_types=None, encoded=None, xmask=None):
    positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
    x = embed(cfg, p.get("embed", {}), table, tokens, positions, token_types)
    rotate = None
    if cfg.positions.kind == "rotary":
        rp = cfg.positions
        rdim = rp.rotary_dim or cfg.head_dim

        def rotate(t):
            return rotary(t, positions, rp.theta, rdim, rp.layout)

    groups = cfg.layer_groups or num_layers
    pattern = cfg.attention.pattern
    for i in range(num_layers):
        kind = pattern[0] if len(pattern) == 1 else pattern[i]
        m = mask & local(positions, cfg.attention.window) if kind == "local" else mask
        x = layer(cfg, p[f"layer_{i * groups // num_layers}"], x, m, encoded, xmask, rotate)
    return norm(cfg, p["final_norm"], x) if cfg.norm.final else x


def key_mask(cfg, tokens):  # [B, 1, 1, S]
    if cfg.pad_id is None:
        return np.ones(tokens.shape, bool)[:, None, None]
    return (tokens != cfg.pad_id)[:, None, None]


def causal(length):  # [1, 1, T, T]
    return np.tril(np.ones((length, length), bool))[None, None]


def logits(cfg, p, h):
    h = h * cfg.output.scale
    if cfg.output.tie:
        out = h @ p["token_embed"]["embedding"].T
        return out + p["logits_bias"] if cfg.output.bias else out
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
    if cfg.heads.num_labels:
        pooled = h[:, 0]
        if cfg.heads.pooler:
            pooled = np.tanh(pooled @ p["pooler"]["kernel"] + p["pooler"]["bias"])
        cls = pooled @ p["classifier"]["kernel"] + p["classifier"]["bias"]
    if cfg.heads.mlm_transform:
        t = ACTIVATIONS[cfg.ffn.activation](
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
        rotary=rotary,
        local=local,
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
pytest_plugins = ["_session_fixtures", "_workdirs"]  # the latter: the `workdirs` fixture
