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
and a warm-up step; --steps timed steps per column). Decode: greedy, batch 1, 64 new tokens
including the prefill, the median of --repeats runs, compile excluded; HF runs `generate`
with the same settings (sdpa attention, KV cache). Within a row every column is set up and
warmed up first, then the columns' timed runs alternate in --rounds rounds (the order
reversed every other round), so that every column meets the same states of the machine (this
VM's speed moves by up to ~2x within minutes); a fixed pure-Python loop timed before each
round gives each row's spread.

Memory: the jitted train step of gpt2-small width (12 layers, d_model 768, 12 heads, vocab
50,257), batch 1, lowered on abstract shapes (nothing allocated) and compiled;
`compile().memory_analysis()` gives arguments (state + batch), outputs and temporaries;
peak = arguments + outputs - aliased (the donated state) + temporaries.

The HF side imports only torch and transformers: `--hf` starts this file under the reference
interpreter as a worker (`--hf-worker`) that answers this process's requests for timed runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from _timing import calibrate  # bench/_timing.py (this script's directory is on sys.path)

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


def train_runner(impl: str, length: int):
    """A function of n that runs n train steps and returns their times (s): compiled and
    warmed up here."""
    import jax
    import numpy as np

    from transformer_jax import models
    from transformer_jax.train import steps

    config = _config(impl)
    step, tx = _train_step(config)
    # Jitted init: distinct buffers for every leaf (the donated state may not share any).
    state = [
        jax.jit(lambda r: steps.init_train_state(models.init_params(config, r), tx))(
            jax.random.key(0)
        )
    ]
    batch_size = TOKENS_PER_STEP // length
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, config.vocab_size, (batch_size, length)).astype(np.int32)
    batch = {"inputs": tokens, "targets": tokens, "weights": np.ones(tokens.shape, np.float32)}
    key = jax.random.key(1)

    def run(n: int) -> list[float]:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            state[0], metrics = step(state[0], batch, key)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)
        return times

    run(2)  # compile, warm-up
    return run


def decode_runner(impl: str, prompt_len: int):
    """A function of n that runs n greedy generations and returns their times (s): compiled
    here."""
    import jax
    import numpy as np

    from transformer_jax import models
    from transformer_jax.sampling import generate

    config = _config(impl, init_std=0.2)
    params = models.init_params(config, jax.random.key(0))
    prompt = np.random.default_rng(0).integers(4, config.vocab_size, (1, prompt_len))

    def run(n: int) -> list[float]:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            out = generate(
                config, params, prompt.astype(np.int32), temperature=0.0, max_new_tokens=NEW_TOKENS
            )
            jax.block_until_ready(out)
            times.append(time.perf_counter() - start)
        return times

    run(1)  # compile
    return run


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
    """Runs under the reference interpreter: answers requests on stdin, one JSON line each,
    {"table": "train", "length": L, "n": n} or {"table": "decode", "prompt": P, "n": n}, with
    the n run times (s) as a JSON line; a model is built and warmed up on its first request."""
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
    runners = {}

    def train(length):
        model = GPT2LMHeadModel(config).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        tokens = torch.randint(
            4, MODEL["vocab"], (TOKENS_PER_STEP // length, length), generator=gen
        )

        def step():
            loss = model(input_ids=tokens, labels=tokens).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    def decode(prompt_len):
        model = GPT2LMHeadModel(config).eval()
        prompt = torch.randint(4, MODEL["vocab"], (1, prompt_len), generator=gen)

        def run():
            with torch.no_grad():
                model.generate(
                    prompt,
                    attention_mask=torch.ones_like(prompt),
                    max_new_tokens=NEW_TOKENS,
                    min_new_tokens=NEW_TOKENS,
                    do_sample=False,
                    pad_token_id=0,
                )

        return run

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        key = (request["table"], request.get("length", request.get("prompt")))
        if key not in runners:
            runners[key] = (train if key[0] == "train" else decode)(key[1])
            for _ in range(2 if key[0] == "train" else 1):
                runners[key]()  # warm-up
        times = []
        for _ in range(request["n"]):
            start = time.perf_counter()
            runners[key]()
            times.append(time.perf_counter() - start)
        print(json.dumps(times), flush=True)


class HFWorker:
    """The HF side as a subprocess of the reference interpreter (torch is imported only
    there), asked for its timed runs between ours."""

    def __init__(self, python: str):
        self.proc = subprocess.Popen(
            [python, os.path.abspath(__file__), "--hf-worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        if not self.proc.stdout.readline():
            sys.exit(f"HF worker failed to start ({python})")

    def times(self, **request) -> list[float]:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            sys.exit("HF worker failed")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def interleaved(runners: dict, hf_runner, rounds: int, per_round: int) -> tuple[dict, list]:
    """{name: median time (s)} of each runner (a function of n returning n times) and of HF's
    (None: no HF column), their timed runs alternating round by round (the order reversed
    every other round); and the calibration loop's time before each round."""
    sides = dict(runners)
    if hf_runner is not None:
        sides["HF"] = hf_runner
    times = {name: [] for name in sides}
    calibration = []
    for r in range(rounds):
        calibration.append(calibrate())
        for name in list(sides)[:: 1 if r % 2 == 0 else -1]:
            times[name] += sides[name](per_round)
    return {name: statistics.median(t) for name, t in times.items()}, calibration


# ---------------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tables", nargs="+", default=["train", "decode", "memory"])
    p.add_argument("--impls", nargs="+", default=["einsum", "blockwise", "xla", "auto"])
    p.add_argument("--lengths", nargs="+", type=int, default=list(TRAIN_LENGTHS))
    p.add_argument("--prompts", nargs="+", type=int, default=list(PROMPTS))
    p.add_argument("--memory-lengths", nargs="+", type=int, default=list(MEMORY_LENGTHS))
    p.add_argument("--memory-impls", nargs="+", default=["einsum", "blockwise"])
    p.add_argument("--steps", type=int, default=6, help="timed train steps per column (median)")
    p.add_argument("--repeats", type=int, default=3, help="timed decode runs per column (median)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per row")
    p.add_argument("--hf", action="store_true", help="also run HF PyTorch (reference extra)")
    p.add_argument("--hf-python", default="/work/refvenv/bin/python")
    p.add_argument("--hf-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 step, short lengths")
    args = p.parse_args()
    if args.quick:
        args.lengths, args.prompts, args.memory_lengths = [128, 256], [16], [1024]
        args.steps, args.repeats, args.rounds = 1, 1, 1
    if args.hf_worker:
        hf_worker(args)
        return
    hf = HFWorker(args.hf_python) if args.hf and ({"train", "decode"} & set(args.tables)) else None

    import jax

    sys.path.insert(0, os.path.dirname(HERE))
    dev = jax.devices()[0]
    print(
        f"device: {dev.device_kind} ({dev.platform}), {os.cpu_count()} CPUs, jax {jax.__version__}"
    )
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"load average at start (1/5/15 min): {load}")
    print(f"timed runs alternate between the columns, {args.rounds} rounds per row")
    impls = args.impls
    hf_col = " HF PyTorch |" if hf else ""
    spreads = []
    if "train" in args.tables:
        print(f"\n| train, {TOKENS_PER_STEP} tokens/step | " + " | ".join(impls) + f" |{hf_col}")
        print("|---" * (len(impls) + 1 + bool(hf)) + "|")
        for length in args.lengths:
            runners = {impl: train_runner(impl, length) for impl in impls}
            hf_run = (
                (lambda n, length=length: hf.times(table="train", length=length, n=n))
                if hf
                else None
            )
            med, cal = interleaved(runners, hf_run, args.rounds, max(1, args.steps // args.rounds))
            spreads.append(max(cal) / min(cal))
            cells = [
                f"{TOKENS_PER_STEP / med[name]:,.0f}" for name in [*impls, *(["HF"] if hf else [])]
            ]
            batch = TOKENS_PER_STEP // length
            print(f"| {length} (batch {batch}) | " + " | ".join(cells) + " |", flush=True)
    if "decode" in args.tables:
        print(
            f"\n| greedy decode, b=1, {NEW_TOKENS} new tokens incl. prefill | "
            + " | ".join(impls)
            + f" |{hf_col}"
        )
        print("|---" * (len(impls) + 1 + bool(hf)) + "|")
        for prompt_len in args.prompts:
            runners = {impl: decode_runner(impl, prompt_len) for impl in impls}
            hf_run = (
                (lambda n, p=prompt_len: hf.times(table="decode", prompt=p, n=n)) if hf else None
            )
            med, cal = interleaved(
                runners, hf_run, args.rounds, max(1, args.repeats // args.rounds)
            )
            spreads.append(max(cal) / min(cal))
            cells = [f"{NEW_TOKENS / med[name]:,.0f}" for name in [*impls, *(["HF"] if hf else [])]]
            print(f"| {prompt_len}-token prompt | " + " | ".join(cells) + " |", flush=True)
    if hf:
        hf.close()
    if spreads:
        print(f"\ncalibration loop, max/min within a row: {', '.join(f'{x:.2f}' for x in spreads)}")
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
