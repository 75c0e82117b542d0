"""transformer_jax against Hugging Face transformers (PyTorch) on the same shapes and threads.

    .venv/bin/python bench/compare_torch.py                       # the tiny model only
    .venv/bin/python bench/compare_torch.py --gpt2-small          # + gpt2-small (minutes)
    .venv/bin/python bench/compare_torch.py --torch-python /work/refvenv/bin/python

One command, two processes: this process runs the JAX half; the PyTorch half runs in a
subprocess of `--torch-python` (an interpreter with the optional `reference` extra: torch +
transformers; default: this one), as `compare_torch.py --torch-half`, and prints JSON. torch
is imported only there, so the JAX environment does not need it.

Work (GPT-2-style models, float32, dropout off, random weights, synthetic tokens):
  * train: one AdamW step (ours: steps.make_train_step under jax.pmap with clipping and
    metrics, as train.py runs it, with the plain and the chunked loss; HF: GPT2LMHeadModel
    forward with labels, backward, torch.optim.AdamW step) on B x T tokens;
  * decode: greedy b=1, 16-token prompt, N new tokens (ours: sampling.generate, float32 and
    bfloat16 weights; HF: model.generate(do_sample=False, min_new_tokens=N)).
tok/s = tokens / best time over --repeats timed runs after a warm-up (compile excluded);
ratio = ours / HF. Both sides use --threads threads (torch.set_num_threads; XLA's CPU
client uses every core it is given: run under `taskset` to pin both to the same cores).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import time

# name: (layers, d_model, heads, vocab, train batch, train length)
CONFIGS = {
    "tiny": (4, 256, 4, 8192, 8, 256),
    "gpt2-small": (12, 768, 12, 50257, 2, 512),
}
PROMPT = 16


def _best(fn, repeats: int) -> float:
    fn()  # warm-up (and compile)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


# ----------------------------------------------------------------------------- PyTorch half
def torch_half(args) -> dict:
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__}}
    for name in args.configs:
        out[name] = _torch_config(torch, transformers, name, args)
    return out


def _torch_config(torch, transformers, name: str, args) -> dict:
    layers, d, heads, vocab, batch, length = CONFIGS[name]
    cfg = transformers.GPT2Config(
        n_layer=layers,
        n_embd=d,
        n_head=heads,
        vocab_size=vocab,
        n_positions=max(length, PROMPT + args.new_tokens),
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = transformers.GPT2LMHeadModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(4, vocab, (batch, length))

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        opt.step()

    model.train()
    train_s = _best(train_step, args.repeats)
    model.eval()
    prompt = torch.randint(4, vocab, (1, PROMPT))

    def decode():
        with torch.no_grad():
            model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                do_sample=False,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                pad_token_id=0,
            )

    decode_s = _best(decode, args.repeats)
    return {"train_tok_s": batch * length / train_s, "decode_tok_s": args.new_tokens / decode_s}


# --------------------------------------------------------------------------------- JAX half
def jax_half(args) -> dict:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import jax
    import numpy as np

    from transformer_jax import models, presets
    from transformer_jax.sampling import cast_weights, generate
    from transformer_jax.train.parallel import shard

    out = {"versions": {"jax": jax.__version__}}
    for name in args.configs:
        layers, d, heads, vocab, batch, length = CONFIGS[name]
        cfg = presets.get("gpt2-small").replace(
            num_layers=layers,
            d_model=d,
            attention={"num_heads": heads, "dropout_rate": 0.0},
            ffn={"d_ff": 4 * d},
            vocab_size=vocab,
            max_len=max(length, PROMPT + args.new_tokens),
            dropout_rate=0.0,
        )
        params = jax.jit(lambda r, cfg=cfg: models.init_params(cfg, r))(jax.random.key(0))
        rng = np.random.default_rng(0)
        tokens = rng.integers(4, vocab, size=(batch, length)).astype(np.int32)
        ones = np.ones((batch, length), np.float32)
        data = shard({"inputs": tokens, "targets": tokens, "weights": ones}, 1)
        row = {}
        for label, chunk in (("train_tok_s", 0), ("train_chunked_tok_s", 1024)):
            step = _jax_train_step(cfg, params, chunk, data)
            row[label] = batch * length / _best(step, args.repeats)
        prompt = rng.integers(4, vocab, size=(1, PROMPT)).astype(np.int32)
        for label, dtype in (("decode_tok_s", None), ("decode_bf16_tok_s", "bfloat16")):
            run = functools.partial(
                generate,
                cfg,
                cast_weights(params, dtype),
                prompt,
                max_new_tokens=args.new_tokens,
                temperature=0.0,
            )
            row[label] = args.new_tokens / _best(run, args.repeats)
        out[name] = row
    return out


def _jax_train_step(cfg, params, chunk: int, data):
    """A no-argument function running one donated pmap train step, as train.py does."""
    import jax
    import numpy as np
    import optax

    from transformer_jax import models
    from transformer_jax.train import steps
    from transformer_jax.train.optimizer import make_optimizer
    from transformer_jax.train.parallel import AXIS, replicate

    sched = optax.constant_schedule(1e-4)
    # torch's AdamW defaults (b2 0.999, eps 1e-8, decay 0.01), plus clipping as in train.py.
    tx = make_optimizer(sched, b2=0.999, eps=1e-8, weight_decay=0.01, grad_clip_norm=1.0)
    fn = steps.make_train_step(models.build(cfg), tx, sched, objective="clm", loss_chunk_size=chunk)
    step = jax.pmap(fn, axis_name=AXIS, in_axes=(0, 0, None), donate_argnums=(0,))
    state = [replicate(steps.init_train_state(jax.tree.map(np.array, params), tx))]

    def run():
        state[0], metrics = step(state[0], data, jax.random.key(1))
        jax.block_until_ready(metrics)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpt2-small", action="store_true", help="also gpt2-small (minutes)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--torch-python", default=sys.executable)
    ap.add_argument("--torch-half", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--configs", nargs="+", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.configs is None:
        args.configs = ["tiny"] + (["gpt2-small"] if args.gpt2_small else [])
    if args.torch_half:
        print(json.dumps(torch_half(args)))
        return
    child = [args.torch_python, os.path.abspath(__file__), "--torch-half"]
    child += ["--threads", str(args.threads), "--repeats", str(args.repeats)]
    child += ["--new-tokens", str(args.new_tokens), "--configs", *args.configs]
    # The PyTorch half first, alone, then the JAX half (never both at once on shared cores).
    theirs = json.loads(subprocess.run(child, check=True, capture_output=True).stdout)
    ours = jax_half(args)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, ")
    print(f"threads {args.threads}, load average {load}, best of {args.repeats}")
    print(f"versions: {ours['versions']} {theirs['versions']}")
    print(f"{'config':12s} {'work':28s} {'ours tok/s':>11s} {'HF tok/s':>10s} {'ratio':>6s}")
    rows = [
        ("train step", "train_tok_s", "train_tok_s"),
        ("train step, chunked loss", "train_chunked_tok_s", "train_tok_s"),
        ("greedy decode b=1", "decode_tok_s", "decode_tok_s"),
        ("greedy decode b=1, bf16 w", "decode_bf16_tok_s", "decode_tok_s"),
    ]
    for name in args.configs:
        for work, mine, hf in rows:
            a, b = ours[name][mine], theirs[name][hf]
            print(f"{name:12s} {work:28s} {a:11.1f} {b:10.1f} {a / b:5.2f}x")


if __name__ == "__main__":
    main()
