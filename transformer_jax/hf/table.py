"""A family's name table, as data: rows of (HF tensor name, our parameter path(s), transform).

`{i}` in both names stands for a layer index; `count` says which depth it runs over
("encoder": num_layers, "decoder": the decoder stack's depth). A row with several of our paths
is one fused HF tensor (GPT-2's c_attn: q | k | v). An `alias` row names a tied copy (GPT-2's
lm_head.weight, BART's encoder/decoder embed_tokens): checked equal if the file has it, never
required, never written.

Each transform converts between our arrays (their shapes known from the parameter tree) and
the HF tensor, in both directions, and computes the HF shape from ours without allocating.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from math import prod

import numpy as np

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Transform:
    """ours -> HF (`to_hf`), HF -> ours (`to_ours`), and the HF shape given ours."""

    to_hf: Callable[[list[np.ndarray]], np.ndarray]
    to_ours: Callable[[np.ndarray, list[Shape]], list[np.ndarray]]
    hf_shape: Callable[[list[Shape]], Shape]


def _merge_heads_last(s: Shape) -> Shape:  # [D, N, H] -> [D, N*H]
    return (s[0], prod(s[1:]))


def _merge_heads_first(s: Shape) -> Shape:  # [N, H, D] -> [N*H, D]
    return (prod(s[:-1]), s[-1])


def _split(x: np.ndarray, shapes: list[Shape], axis: int) -> list[np.ndarray]:
    """Consecutive pieces of `x` along `axis`, piece j of size prod(shapes[j][axis:]) (q | k | v
    of unequal sizes with grouped/multi-query heads), each reshaped to shapes[j]."""
    bounds = np.cumsum([prod(s[axis:]) for s in shapes])[:-1]
    parts = np.split(x, bounds, axis=axis)
    return [p.reshape(s) for p, s in zip(parts, shapes, strict=True)]


def _grouped_to_hf(xs: list[np.ndarray]) -> np.ndarray:
    """q [..., N, H], k and v [..., K, H] -> [..., K * (G + 2) * H], laid out per key/value
    head as [q x G, k, v] (Falcon's fused query_key_value; K = 1: [q heads, k, v])."""
    q, k, v = xs
    *lead, kv, head = k.shape
    q = q.reshape(*lead, kv, -1, head)  # [..., K, G, H]
    fused = np.concatenate([q, k[..., None, :], v[..., None, :]], axis=-2)  # [..., K, G+2, H]
    return fused.reshape(*lead, -1)  # [..., K*(G+2)*H]


def _grouped_to_ours(x: np.ndarray, shapes: list[Shape]) -> list[np.ndarray]:
    """Inverse of `_grouped_to_hf`: [..., K * (G + 2) * H] -> q [..., N, H], k, v [..., K, H]."""
    *lead, kv, head = shapes[1]
    fused = x.reshape(*lead, kv, -1, head)  # [..., K, G+2, H]
    q = fused[..., :-2, :].reshape(shapes[0])  # [..., K, G, H] -> [..., N, H]
    return [q, fused[..., -2, :].reshape(shapes[1]), fused[..., -1, :].reshape(shapes[2])]


CODEGEN_MP = 4  # CodeGen's qkv_proj is split into 4 blocks, each [q | v | k] of N/4 heads


def _codegen_to_hf(xs: list[np.ndarray]) -> np.ndarray:
    """query, key, value kernels [D, N, H] -> CodeGen's qkv_proj weight [3*N*H, D]: 4 blocks
    (heads g*N/4 .. (g+1)*N/4 - 1), each [q | v | k] (note: v before k)."""
    q, k, v = (x.reshape(x.shape[0], CODEGEN_MP, -1) for x in xs)  # [D, 4, N/4*H]
    fused = np.stack([q, v, k], axis=2)  # [D, 4, 3, N/4*H]
    return fused.reshape(fused.shape[0], -1).T  # [D, 3*N*H] -> [3*N*H, D]


def _codegen_to_ours(x: np.ndarray, shapes: list[Shape]) -> list[np.ndarray]:
    d = shapes[0][0]
    fused = x.T.reshape(d, CODEGEN_MP, 3, -1)  # [3*N*H, D] -> [D, 4, 3 (q, v, k), N/4*H]
    q, v, k = (fused[:, :, j].reshape(shapes[0]) for j in range(3))  # [D, N, H] each
    return [q, k, v]


TRANSFORMS: dict[str, Transform] = {
    # Same values, same or merged-heads shape: embeddings, norms, biases ([N, H] <-> [N*H]),
    # GPT-2 Conv1D kernels that are already [in, out] ([N, H, D] <-> [N*H, D] for c_proj).
    "copy": Transform(
        to_hf=lambda xs: xs[0],
        to_ours=lambda x, ss: [x.reshape(ss[0])],
        hf_shape=lambda ss: ss[0],
    ),
    "flat": Transform(  # attention biases [N, H] <-> [N*H]
        to_hf=lambda xs: xs[0].reshape(-1),
        to_ours=lambda x, ss: [x.reshape(ss[0])],
        hf_shape=lambda ss: (prod(ss[0]),),
    ),
    "conv_out": Transform(  # GPT-2 Conv1D c_proj [N*H, D] <-> our out kernel [N, H, D]
        to_hf=lambda xs: xs[0].reshape(_merge_heads_first(xs[0].shape)),
        to_ours=lambda x, ss: [x.reshape(ss[0])],
        hf_shape=lambda ss: _merge_heads_first(ss[0]),
    ),
    "row": Transform(  # BART's final_logits_bias [1, V] <-> our logits_bias [V]
        to_hf=lambda xs: xs[0].reshape(1, -1),
        to_ours=lambda x, ss: [x.reshape(ss[0])],
        hf_shape=lambda ss: (1, *ss[0]),
    ),
    "row3": Transform(  # XLNet's mask_emb [1, 1, D] <-> our [D]
        to_hf=lambda xs: xs[0].reshape(1, 1, -1),
        to_ours=lambda x, ss: [x.reshape(ss[0])],
        hf_shape=lambda ss: (1, 1, *ss[0]),
    ),
    "heads_out": Transform(  # XLNet's o [D, N, H] <-> our out kernel [N, H, D]
        to_hf=lambda xs: np.ascontiguousarray(np.transpose(xs[0], (2, 0, 1))),
        to_ours=lambda x, ss: [np.transpose(x, (1, 2, 0)).reshape(ss[0])],
        hf_shape=lambda ss: (ss[0][2], ss[0][0], ss[0][1]),
    ),
    # torch Linear weight [out, in] <-> our Dense kernel [in, out].
    "linear": Transform(
        to_hf=lambda xs: xs[0].T,
        to_ours=lambda x, ss: [x.T.reshape(ss[0])],
        hf_shape=lambda ss: ss[0][::-1],
    ),
    "linear_qkv": Transform(  # [N*H, D] <-> our query/key/value kernel [D, N, H]
        to_hf=lambda xs: xs[0].reshape(_merge_heads_last(xs[0].shape)).T,
        to_ours=lambda x, ss: [x.T.reshape(ss[0])],
        hf_shape=lambda ss: _merge_heads_last(ss[0])[::-1],
    ),
    "linear_out": Transform(  # [D, N*H] <-> our out kernel [N, H, D]
        to_hf=lambda xs: xs[0].reshape(_merge_heads_first(xs[0].shape)).T,
        to_ours=lambda x, ss: [x.T.reshape(ss[0])],
        hf_shape=lambda ss: _merge_heads_first(ss[0])[::-1],
    ),
    # GPT-2's fused Conv1D c_attn [D, 3*N*H] <-> query, key, value kernels [D, N, H] each.
    "conv_qkv": Transform(
        to_hf=lambda xs: np.concatenate([x.reshape(_merge_heads_last(x.shape)) for x in xs], 1),
        to_ours=lambda x, ss: _split(x, ss, axis=1),
        hf_shape=lambda ss: (ss[0][0], sum(prod(s[1:]) for s in ss)),
    ),
    "fused_flat": Transform(  # c_attn bias [(N+2K)*H] <-> [N, H], [K, H], [K, H]
        to_hf=lambda xs: np.concatenate([x.reshape(-1) for x in xs]),
        to_ours=lambda x, ss: _split(x, ss, axis=0),
        hf_shape=lambda ss: (sum(prod(s) for s in ss),),
    ),
    # A torch Linear fusing q | k | v along its outputs, [(N+2K)*H, D] (GPTBigCode's c_attn)
    # <-> query [D, N, H], key and value [D, K, H].
    "linear_fused_qkv": Transform(
        to_hf=lambda xs: np.concatenate([x.reshape(_merge_heads_last(x.shape)) for x in xs], 1).T,
        to_ours=lambda x, ss: _split(x.T, ss, axis=1),
        hf_shape=lambda ss: (sum(prod(s[1:]) for s in ss), ss[0][0]),
    ),
    # Falcon's query_key_value: Linear [K*(G+2)*H, D], per key/value head [q x G, k, v].
    "linear_grouped_qkv": Transform(
        to_hf=lambda xs: _grouped_to_hf(xs).T,
        to_ours=lambda x, ss: _grouped_to_ours(x.T, ss),
        hf_shape=lambda ss: (sum(prod(s[1:]) for s in ss), ss[0][0]),
    ),
    "grouped_flat": Transform(  # its bias [K*(G+2)*H] <-> [N, H], [K, H], [K, H]
        to_hf=_grouped_to_hf,
        to_ours=_grouped_to_ours,
        hf_shape=lambda ss: (sum(prod(s) for s in ss),),
    ),
    # CodeGen's qkv_proj: Linear [3*N*H, D] in 4 blocks of [q | v | k] (see _codegen_to_hf).
    "codegen_qkv": Transform(
        to_hf=_codegen_to_hf,
        to_ours=_codegen_to_ours,
        hf_shape=lambda ss: (sum(prod(s[1:]) for s in ss), ss[0][0]),
    ),
}


@dataclasses.dataclass(frozen=True)
class Row:
    hf: str  # HF tensor name, `{i}` = layer index
    ours: tuple[str, ...]  # our parameter path(s), "/"-separated, `{i}` = layer index
    transform: str = "copy"
    count: str | None = None  # "encoder" | "decoder": the depth `{i}` runs over
    alias: bool = False  # a tied copy: optional, checked equal, never written

    def __post_init__(self) -> None:
        if isinstance(self.ours, str):
            object.__setattr__(self, "ours", (self.ours,))
        if self.transform not in TRANSFORMS:
            raise ValueError(f"Unknown transform {self.transform!r}; known: {list(TRANSFORMS)}.")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One concrete row: a tensor name and the parameter paths it fills."""

    hf: str
    ours: tuple[tuple[str, ...], ...]
    transform: Transform
    alias: bool


def expand(rows: Sequence[Row], depths: dict[str, int], prefix: str) -> list[Entry]:
    """Rows with `{i}` repeated over their stack's depth; `{p}` in an HF name -> prefix."""
    entries = []
    for row in rows:
        indices = [None] if row.count is None else range(depths[row.count])
        for i in indices:
            hf = row.hf.format(p=prefix, i=i)
            ours = tuple(tuple(p.format(i=i).split("/")) for p in row.ours)
            entries.append(Entry(hf, ours, TRANSFORMS[row.transform], row.alias))
    return entries


def linear_attention_rows(
    hf: str, ours: str, count: str, names: tuple[str, str, str, str]
) -> list[Row]:
    """Rows of one attention block stored as four torch Linears (query, key, value, output
    names in `names`), weights and biases: BERT, BART."""
    rows = []
    for hf_name, our_name in zip(names, ("query", "key", "value", "out"), strict=True):
        kernel = "linear_out" if our_name == "out" else "linear_qkv"
        bias = "copy" if our_name == "out" else "flat"
        rows.append(Row(f"{hf}.{hf_name}.weight", f"{ours}/{our_name}/kernel", kernel, count))
        rows.append(Row(f"{hf}.{hf_name}.bias", f"{ours}/{our_name}/bias", bias, count))
    return rows


def norm_rows(hf: str, ours: str, count: str | None = None) -> list[Row]:
    """A LayerNorm: HF weight/bias -> our scale/bias."""
    return [
        Row(f"{hf}.weight", f"{ours}/scale", "copy", count),
        Row(f"{hf}.bias", f"{ours}/bias", "copy", count),
    ]


def linear_rows(hf: str, ours: str, count: str | None = None) -> list[Row]:
    """A torch Linear with bias -> our Dense."""
    return [
        Row(f"{hf}.weight", f"{ours}/kernel", "linear", count),
        Row(f"{hf}.bias", f"{ours}/bias", "copy", count),
    ]


def lm_head_rows(config, heads: bool) -> list[Row]:
    """HF's `lm_head.weight`: the token table when tied (an alias), else our untied lm_head;
    nothing for a backbone (heads=False)."""
    if not heads:
        return []
    if config.output.tie:
        return [Row("lm_head.weight", "token_embed/embedding", alias=True)]
    return [Row("lm_head.weight", "lm_head/kernel", "linear")]
