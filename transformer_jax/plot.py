"""Pictures of a run: training curves from metrics.jsonl, and attention maps.

    python -m transformer_jax.plot WORKDIR      # -> WORKDIR/plots/*.png, prints the paths

Curves (train and eval against step, one PNG each, and all of them in overview.png): loss,
perplexity (log scale), learning rate, gradient norm, tokens/s, and BLEU/chrF for translation
runs. `draw_attention` draws one heatmap per layer and head, labelled with the tokens
(sample.py --attention_png).

matplotlib is imported only when a picture is drawn, with the Agg backend (no display needed):
importing transformer_jax stays cheap.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Sequence

PLOTS_DIR = "plots"
TRAIN_COLOR, EVAL_COLOR = "#1f77b4", "#d62728"

# (file name, title, y label, [(split, key, legend)], log y scale)
CURVES = (
    ("loss", "Loss", "loss (nats / token)",
     [("train", "loss", "train"), ("eval", "loss", "eval")], False),
    ("perplexity", "Perplexity", "perplexity (log scale)",
     [("train", "perplexity", "train"), ("eval", "perplexity", "eval")], True),
    ("learning_rate", "Learning rate", "learning rate",
     [("train", "learning_rate", "train")], False),
    ("grad_norm", "Gradient norm", "global gradient norm",
     [("train", "grad_norm", "train")], False),
    ("tokens_per_second", "Throughput", "target tokens / s",
     [("train", "tokens_per_second", "train")], False),
    ("bleu", "Translation quality (sacrebleu)", "score (0-100)",
     [("eval", "bleu", "BLEU"), ("eval", "chrf", "chrF")], False),
)  # fmt: skip


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    return plt


def read_metrics(workdir: str) -> list[dict]:
    """The rows of WORKDIR/metrics.jsonl (a line cut short by a kill is skipped)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: {workdir!r} has no training metrics yet.")
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def _series(rows: list[dict], split: str, key: str) -> tuple[list[int], list[float]]:
    points = sorted(
        (r["step"], r[key])
        for r in rows
        if r.get("split") == split and key in r and math.isfinite(r[key])
    )
    return [s for s, _ in points], [v for _, v in points]


def _draw_curve(ax, rows: list[dict], title: str, ylabel: str, lines, log: bool) -> bool:
    drawn = []
    for split, key, label in lines:
        steps, values = _series(rows, split, key)
        if not steps:
            continue
        color = {"chrf": "#2ca02c", "bleu": EVAL_COLOR}.get(key, EVAL_COLOR if split == "eval"
                                                          else TRAIN_COLOR)  # fmt: skip
        # Evaluations are few: markers show where they are.
        marker = "o" if split == "eval" or len(steps) < 30 else None
        ax.plot(steps, values, color=color, marker=marker, markersize=4, linewidth=1.6,
                label=label)  # fmt: skip
        drawn.extend(values)
    if not drawn:
        return False
    ax.set_title(title, fontsize=12)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))  # whole steps
    if log:
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")  # 20, 50, 100: not 2x10^1
        ax.yaxis.set_major_formatter(plain)
        if max(drawn) / max(min(drawn), 1e-30) < 20:  # under ~a decade: label minor ticks too
            ax.yaxis.set_minor_formatter(plain)
    elif min(drawn) >= 0 and title != "Loss":
        ax.set_ylim(bottom=0)  # rates, norms and scores from zero: changes are not overstated
    ax.grid(True, alpha=0.3)
    if len(lines) > 1:
        ax.legend(frameon=False)
    return True


def plot_metrics(workdir: str, out_dir: str | None = None) -> list[str]:
    """Draws the curves of WORKDIR/metrics.jsonl into out_dir (default WORKDIR/plots): one PNG
    per quantity the run logged, and overview.png with all of them. Returns the paths."""
    plt = _pyplot()
    rows = read_metrics(workdir)
    if not rows:
        raise ValueError(f"{workdir}/metrics.jsonl holds no rows yet: nothing to plot.")
    out_dir = out_dir or os.path.join(workdir, PLOTS_DIR)
    os.makedirs(out_dir, exist_ok=True)
    paths, present = [], []
    for name, title, ylabel, lines, log in CURVES:
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        if _draw_curve(ax, rows, title, ylabel, lines, log):
            fig.tight_layout()
            path = os.path.join(out_dir, f"{name}.png")
            fig.savefig(path)
            paths.append(path)
            present.append((name, title, ylabel, lines, log))
        plt.close(fig)
    if present:
        cols = min(3, len(present))
        nrows = math.ceil(len(present) / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.6 * nrows), dpi=80,
                                 squeeze=False)  # fmt: skip
        for ax, (_, title, ylabel, lines, log) in zip(axes.flat, present, strict=False):
            _draw_curve(ax, rows, title, ylabel, lines, log)
        for ax in list(axes.flat)[len(present) :]:
            ax.axis("off")
        name = os.path.join(*os.path.abspath(workdir).split(os.sep)[-2:])  # e.g. workdirs/demo
        fig.suptitle(f"training curves of {name}", fontsize=13)
        fig.tight_layout()
        path = os.path.join(out_dir, "overview.png")
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def _tick_labels(labels: Sequence[str], limit: int = 48) -> tuple[list[int], list[str]]:
    """Positions and texts of the tick labels: every token up to `limit`, else every k-th (so
    that names never overlap)."""
    step = max(1, math.ceil(len(labels) / limit))
    ticks = list(range(0, len(labels), step))
    return ticks, [labels[i] for i in ticks]


def draw_attention(
    maps,
    labels: dict[str, Sequence[str]],
    path: str,
    title: str = "",
    dpi: int = 100,
) -> str:
    """One heatmap per (attention block, head) of `maps` (eval.attention.AttentionMap: weights
    [N, T, S]): a row per block, a column per head; rows of a map are queries, columns keys,
    labelled with `labels[map.queries]` / `labels[map.keys]` (token strings). Writes `path`."""
    plt = _pyplot()
    num_heads = max(m.weights.shape[0] for m in maps)
    longest = max(len(labels[m.keys]) for m in maps)
    longest = max(longest, *(len(labels[m.queries]) for m in maps))
    # Inches per token: panels of ~3 inches, but never so small that a 6.5-point label
    # overlaps its neighbour (long sequences get larger panels instead).
    cell = min(0.28, max(0.14, 3.2 / longest))
    side = max(2.2, cell * longest)
    font = max(6.5, min(9.0, cell * 45))
    fig, axes = plt.subplots(
        len(maps), num_heads, figsize=(side * num_heads + 1.6, (side + 0.9) * len(maps) + 0.6),
        dpi=dpi, squeeze=False,
    )  # fmt: skip
    image = None
    for row, m in enumerate(maps):
        q_ticks, q_text = _tick_labels(labels[m.queries])
        k_ticks, k_text = _tick_labels(labels[m.keys])
        for head in range(num_heads):
            ax = axes[row, head]
            if head >= m.weights.shape[0]:
                ax.axis("off")
                continue
            image = ax.imshow(m.weights[head], cmap="viridis", vmin=0.0, vmax=1.0,
                              aspect="equal", interpolation="nearest")  # fmt: skip
            ax.set_xticks(k_ticks, k_text, rotation=90, fontsize=font)
            if head == 0:
                ax.set_yticks(q_ticks, q_text, fontsize=font)
                ax.set_ylabel(f"{m.name}\nquery ({m.queries})", fontsize=font + 1)
            else:
                ax.set_yticks(q_ticks, [""] * len(q_ticks))
            ax.set_title(f"head {head}", fontsize=font + 1)
            ax.set_xlabel(f"key ({m.keys})", fontsize=font)
    top = 1.0
    if title:
        top = 1.0 - 0.45 / fig.get_figheight()  # room for the title above the head titles
        fig.suptitle(title, fontsize=font + 3, y=0.995)
    fig.tight_layout(rect=(0, 0, 0.88, top))
    cax = fig.add_axes((0.9, 0.3, 0.015, 0.4))
    bar = fig.colorbar(image, cax=cax)
    bar.set_label("attention weight", fontsize=font + 1)
    bar.ax.tick_params(labelsize=font)
    fig.savefig(path)
    plt.close(fig)
    return path


def token_labels(tokenizer, ids: Sequence[int]) -> list[str]:
    """Readable tick labels: the tokenizer's pieces, sentencepiece's word-start marker shown as
    "_", printable byte-fallback pieces as their character, a newline as "\\n", a blank
    piece quoted."""
    out = []
    for i in ids:
        piece = tokenizer.id_to_piece(int(i))
        byte = re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", piece)  # sentencepiece's byte fallback
        if byte and 0x20 < int(byte.group(1), 16) < 0x7F:
            piece = chr(int(byte.group(1), 16))  # "<0x28>" -> "("
        piece = piece.replace("\u2581", "_").replace("\n", "\\n")
        out.append(piece if piece.strip() else repr(piece))
    return out


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2 or argv[1].startswith("-"):
        print("usage: python -m transformer_jax.plot WORKDIR", file=sys.stderr)
        return 2
    try:
        paths = plot_metrics(argv[1])
    except (ValueError, FileNotFoundError) as e:
        print(f"transformer_jax.plot: {e}", file=sys.stderr)
        return 2
    print("\n".join(paths))
    return 0


def attention_png(model_cfg, params, tokenizer, tokens, path: str, *, source=None, title="") -> str:
    """Draws the attention of every layer and head for one sequence into `path`: `tokens`
    (decoder-only / encoder-only), or `source` into the encoder and `tokens` (the decoder
    inputs) into the decoder (self- and cross-attention)."""
    from transformer_jax.eval.attention import attention_weights

    maps = attention_weights(model_cfg, params, tokens, source=source)
    labels = {"tokens": token_labels(tokenizer, tokens), "target": token_labels(tokenizer, tokens)}
    if source is not None:
        labels["source"] = token_labels(tokenizer, source)
    return draw_attention(maps, labels, path, title)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
