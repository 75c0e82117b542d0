"""Long sequences: how training and decoding cost grows with length, per attention
implementation (`attention.impl`), against Hugging Face PyTorch; and the compiled peak memory
of one train step at 1k-32k tokens.

    .venv/bin/python bench/long_context.py                 # all three tables, ours only
    .venv/bin/python bench/long_context.py --hf            # + HF PyTorch (the `reference` extra;
                                                           #   run in /work/refvenv/bin/python
                                                           #   or --hf-python PATH)
    .venv/bin/python bench/long_context.py --quick         # a smoke run (tiny steps, 1k memory)
    .venv/bin/python bench/long_context.py --tables memory --memory-lengths 1024 32768

The model of issue 19: GPT-2 style, 4 layers, d_model 256, 4 heads, d_ff 1024, vocab 8,192,
float32, dropout off, AdamW (lr 1e-4); the same 4,096 tokens per train step at every length
(batch = 4096 / length). Train tokens/s = tokens per step / median step time (after a compile
and a warm-up step). Decode: greedy, batch 1, 64 new tokens including the prefill, best of
--repeats runs, compile excluded; HF runs `generate` with the same settings (sdpa attention,
KV cache). Memory: the jitted train step of gpt2-small width (12 layers, d_model 768, 12
heads, vocab 50,257), batch 1, lowered on abstract shapes (nothing allocated) and compiled;
`compile().memory_analysis()` gives arguments (state + batch), outputs and temporaries;
peak = arguments + outputs - aliased (the donated state) + temporaries.

The HF side imports only torch and transformers: `--hf` re-runs this file under the reference
interpreter with `--hf-worker`, which prints JSON lines this process reads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENS_PER_STEP = 4096
TRAIN_LENGTHS = (128, 512, 1024, 2048)
PROMPTS = (16, 256, 1024)
NEW_TOKENS = 64
MEMORY_LENGTHS = (1024, 4096, 16384, 32768)
MODEL = dict(layers=4, d_model=256, heads=4, d_ff=1024, vocab=8192, max_len=2048)
GiB = 2**30


# ------------------------------------------------------------------------------ ours (JAX)
def _config(impl: str, **changes):
    from transformer_jax import presets

    return presets.get("gpt2-small").replace(
        d_model=MODEL["d_model"],
        num_layers=MODEL["layers"],
        attention={"num_heads": MODEL["heads"], "dropout_rate": 0.0, "impl": impl},
        ffn={"d_ff": MODEL["d_ff"]},
        vocab_size=MODEL["vocab"],
        max_len=MODEL["max_len"],
        dropout_rate=0.0,
        **changes,
    )


def _train_step(config):
    """jit(state, batch, rng) -> (state, metrics), state donated; and its initial state."""
    import jax
    import optax

    from transformer_jax import models
    from transformer_jax.train import steps
    from transformer_jax.train.optimizer import make_optimizer

    schedule = optax.constant_schedule(1e-4)
    tx = make_optimizer(schedule)
    step = steps.make_train_step(
        models.build(config), tx, schedule, objective="clm", axis_name=None
    )
    return jax.jit(step, donate_argnums=0), tx


def train_tokens_per_s(impl: str, length: int, num_steps: int) -> float:
    import jax
    import numpy as np

    from transformer_jax import models
    from transformer_jax.train import steps

    config = _config(impl)
    step, tx = _train_step(config)
    # Jitted init: distinct buffers for every leaf (the donated state may not share any).
    state = jax.jit(lambda r: steps.init_train_state(models.init_params(config, r), tx))(
        jax.random.key(0)
    )
    batch_size = TOKENS_PER_STEP // length
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, config.vocab_size, (batch_size, length)).astype(np.int32)
    batch = {"inputs": tokens, "targets": tokens, "weights": np.ones(tokens.shape, np.float32)}
    key = jax.random.key(1)
    times = []
    for i in range(num_steps + 2):  # compile, warm-up, timed steps
        start = time.perf_counter()
        state, metrics = step(state, batch, key)
        jax.block_until_ready(metrics)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return TOKENS_PER_STEP / statistics.median(times)


def decode_tokens_per_s(impl: str, prompt_len: int, repeats: int) -> float:
    import jax
    import numpy as np

    from transformer_jax import models
    from transformer_jax.sampling import generate

    config = _config(impl, init_std=0.2)
    params = models.init_params(config, jax.random.key(0))
    prompt = np.random.default_rng(0).integers(4, config.vocab_size, (1, prompt_len))
    best = float("inf")
    for i in range(repeats + 1):  # the first call compiles
        start = time.perf_counter()
        out = generate(
            config, params, prompt.astype(np.int32), temperature=0.0, max_new_tokens=NEW_TOKENS
        )
        jax.block_until_ready(out)
        if i:
            best = min(best, time.perf_counter() - start)
    return NEW_TOKENS / best


def train_memory(impl: str, length: int) -> dict:
    """Compiled memory of one gpt2-small-width train step at `length` tokens, batch 1."""
    import jax
    import jax.numpy as jnp

    from transformer_jax import models, presets
    from transformer_jax.train import steps

    config = presets.get("gpt2-small").replace(
        max_len=max(length, 1024), dropout_rate=0.0, attention={"dropout_rate": 0.0, "impl": impl}
    )
    step, tx = _train_step(config)
    state = jax.eval_shape(
        lambda r: steps.init_train_state(models.init_params(config, r), tx), jax.random.key(0)
    )
    tok = jax.ShapeDtypeStruct((1, length), jnp.int32)
    batch = {
        "inputs": tok,
        "targets": tok,
        "weights": jax.ShapeDtypeStruct((1, length), jnp.float32),
    }
    start = time.perf_counter()
    compiled = step.lower(state, batch, jax.random.key(1)).compile()
    mem = compiled.memory_analysis()
    peak = (
        mem.argument_size_in_bytes
        + mem.output_size_in_bytes
        - mem.alias_size_in_bytes
        + mem.temp_size_in_bytes
    )
    heads = config.attention.num_heads
    return {
        "args": mem.argument_size_in_bytes / GiB,
        "temp": mem.temp_size_in_bytes / GiB,
        "peak": peak / GiB,
        "scores": heads * length * length * 4 / GiB,  # one layer's [1, N, T, T] float32
        "logits": length * config.vocab_size * 4 / GiB,  # [1, T, V] float32
        "compile_s": time.perf_counter() - start,
    }


# -------------------------------------------------------------------------- HF (PyTorch)
def hf_worker(args) -> None:
    """Runs under the reference interpreter: prints one JSON line per measurement."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(os.cpu_count() or 1)
    config = GPT2Config(
        n_layer=MODEL["layers"],
        n_embd=MODEL["d_model"],
        n_head=MODEL["heads"],
        n_inner=MODEL["d_ff"],
        vocab_size=MODEL["vocab"],
        n_positions=max(MODEL["max_len"], max(PROMPTS) + NEW_TOKENS),
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    if "train" in args.tables:
        for length in args.lengths:
            model = GPT2LMHeadModel(config).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            tokens = torch.randint(
                4, MODEL["vocab"], (TOKENS_PER_STEP // length, length), generator=gen
            )
            times = []
            for i in range(args.steps + 2):
                start = time.perf_counter()
                loss = model(input_ids=tokens, labels=tokens).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                if i >= 2:
                    times.append(time.perf_counter() - start)
            tps = TOKENS_PER_STEP / statistics.median(times)
            print(json.dumps({"table": "train", "length": length, "tokens_s": tps}), flush=True)
    if "decode" in args.tables:
        model = GPT2LMHeadModel(config).eval()
        for prompt_len in args.prompts:
            prompt = torch.randint(4, MODEL["vocab"], (1, prompt_len), generator=gen)
            best = float("inf")
            with torch.no_grad():
                for i in range(args.repeats + 1):
                    start = time.perf_counter()
                    model.generate(
                        prompt,
                        attention_mask=torch.ones_like(prompt),
                        max_new_tokens=NEW_TOKENS,
                        min_new_tokens=NEW_TOKENS,
                        do_sample=False,
                        pad_token_id=0,
                    )
                    if i:
                        best = min(best, time.perf_counter() - start)
            row = {"table": "decode", "prompt": prompt_len, "tokens_s": NEW_TOKENS / best}
            print(json.dumps(row), flush=True)


def hf_results(args) -> dict:
    """{("train", length) | ("decode", prompt): tokens/s} from the reference interpreter."""
    cmd = [
        args.hf_python,
        os.path.abspath(__file__),
        "--hf-worker",
        "--tables",
        *[t for t in args.tables if t != "memory"],
        "--lengths",
        *map(str, args.lengths),
        "--prompts",
        *map(str, args.prompts),
        "--steps",
        str(args.steps),
        "--repeats",
        str(args.repeats),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"HF worker failed ({args.hf_python}):\n{done.stderr[-3000:]}")
    out = {}
    for line in done.stdout.splitlines():
        row = json.loads(line)
        out[(row["table"], row.get("length", row.get("prompt")))] = row["tokens_s"]
    return out


# ---------------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tables", nargs="+", default=["train", "decode", "memory"])
    p.add_argument("--impls", nargs="+", default=["einsum", "blockwise", "xla", "auto"])
    p.add_argument("--lengths", nargs="+", type=int, default=list(TRAIN_LENGTHS))
    p.add_argument("--prompts", nargs="+", type=int, default=list(PROMPTS))
    p.add_argument("--memory-lengths", nargs="+", type=int, default=list(MEMORY_LENGTHS))
    p.add_argument("--memory-impls", nargs="+", default=["einsum", "blockwise"])
    p.add_argument("--steps", type=int, default=5, help="timed train steps (median)")
    p.add_argument("--repeats", type=int, default=3, help="timed decode runs (best)")
    p.add_argument("--hf", action="store_true", help="also run HF PyTorch (reference extra)")
    p.add_argument("--hf-python", default="/work/refvenv/bin/python")
    p.add_argument("--hf-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 step, short lengths")
    args = p.parse_args()
    if args.quick:
        args.lengths, args.prompts, args.memory_lengths = [128, 256], [16], [1024]
        args.steps, args.repeats = 1, 1
    if args.hf_worker:
        hf_worker(args)
        return
    hf = hf_results(args) if args.hf and ({"train", "decode"} & set(args.tables)) else {}

    import jax

    sys.path.insert(0, os.path.dirname(HERE))
    dev = jax.devices()[0]
    print(
        f"device: {dev.device_kind} ({dev.platform}), {os.cpu_count()} CPUs, jax {jax.__version__}"
    )
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"load average at start (1/5/15 min): {load}")
    impls = args.impls
    hf_col = " HF PyTorch |" if hf else ""
    if "train" in args.tables:
        print(f"\n| train, {TOKENS_PER_STEP} tokens/step | " + " | ".join(impls) + f" |{hf_col}")
        print("|---" * (len(impls) + 1 + bool(hf)) + "|")
        for length in args.lengths:
            row = [f"{train_tokens_per_s(impl, length, args.steps):,.0f}" for impl in impls]
            extra = f" {hf[('train', length)]:,.0f} |" if hf else ""
            batch = TOKENS_PER_STEP // length
            print(f"| {length} (batch {batch}) | " + " | ".join(row) + f" |{extra}", flush=True)
    if "decode" in args.tables:
        print(
            f"\n| greedy decode, b=1, {NEW_TOKENS} new tokens incl. prefill | "
            + " | ".join(impls)
            + f" |{hf_col}"
        )
        print("|---" * (len(impls) + 1 + bool(hf)) + "|")
        for prompt_len in args.prompts:
            row = [f"{decode_tokens_per_s(impl, prompt_len, args.repeats):,.0f}" for impl in impls]
            extra = f" {hf[('decode', prompt_len)]:,.0f} |" if hf else ""
            print(f"| {prompt_len}-token prompt | " + " | ".join(row) + f" |{extra}", flush=True)
    if "memory" in args.tables:
        print(
            "\n| train step, gpt2-small width, batch 1 | impl | peak GiB | temporaries GiB | "
            "arguments GiB | one layer's scores GiB | logits GiB | compile s |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for length in args.memory_lengths:
            for impl in args.memory_impls:
                m = train_memory(impl, length)
                print(
                    f"| {length} tokens | {impl} | {m['peak']:.2f} | {m['temp']:.2f} | "
                    f"{m['args']:.2f} | {m['scores']:.2f} | {m['logits']:.2f} | "
                    f"{m['compile_s']:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
