"""Decoding speed: KV-cached sampler vs uncached generation (full forward every step).

    .venv/bin/python bench/decode.py            # default config, batch 1 and 16, 128 and 512 tokens
    .venv/bin/python bench/decode.py --quick    # a smoke run in well under a minute
    .venv/bin/python bench/decode.py --preset gpt-tiny --batches 1 4 --new-tokens 64
    .venv/bin/python bench/decode.py --preset tiny --quick   # every family's tiny decoder

Both paths are greedy and run as ONE jitted program each:
  * cached: `transformer_jax.sampling.generate` (prefill + lax.while_loop over a KV cache);
  * uncached: at every step the model's full causal forward pass over the sequence so far,
    argmax at the last position. Shapes must be static, so the sequence is run in windows of
    power-of-two length (>= 16, capped by prompt + new tokens) that grow with it: at most 2x
    the work of an exactly-growing sequence, never the whole buffer from the first step.
tokens/s = batch * new_tokens / run time (best of the timed runs, compile excluded). Compile
time: cached = first call - best run; uncached = jit lower + compile, measured apart.
The last column checks that both paths produced the same tokens (rows equal / rows).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from transformer_jax import models, presets
from transformer_jax.config import ModelConfig
from transformer_jax.sampling import generate
from transformer_jax.sampling.inputs import bucket_length

# Small but real: a 2-layer GPT-2-style decoder with an 8k vocabulary (uncached generation of
# 16 x 512 tokens with it takes a few minutes on 2 CPU cores; larger models take much longer).
DEFAULT = presets.get("gpt2-small").replace(
    d_model=192,
    attention={"num_heads": 4, "dropout_rate": 0.0},
    ffn={"d_ff": 768},
    num_layers=2,
    vocab_size=8192,
    max_len=1024,
    dropout_rate=0.0,
    init_std=0.2,  # random weights: larger init keeps logits far from argmax ties
)


def uncached_generate(config: ModelConfig, prompt_len: int, new_tokens: int):
    """jit(params, prompts [B, P]) -> greedy new tokens [B, N], no cache."""
    model = models.build(config)
    total = prompt_len + new_tokens

    def run(params, prompts):
        batch = prompts.shape[0]
        seq = jnp.zeros((batch, total), jnp.int32).at[:, :prompt_len].set(prompts)  # [B, L]
        t = prompt_len  # the position produced next; it needs positions 0..t-1
        while t < total:  # Python loop over static window lengths
            window = min(total, bucket_length(t, total))
            last = min(window, total - 1)

            def step(t, seq, window=window):
                logits = model.apply({"params": params}, seq[:, :window])  # [B, window, V]
                logits = lax.dynamic_index_in_dim(logits, t - 1, axis=1, keepdims=False)  # [B, V]
                if config.pad_id is not None:  # as the sampler: a pad id is never generated
                    logits = logits.at[:, config.pad_id].set(-jnp.inf)
                token = jnp.argmax(logits, axis=-1).astype(jnp.int32)  # [B]
                return lax.dynamic_update_slice(seq, token[:, None], (0, t))  # [B, L]

            seq = lax.fori_loop(t, last + 1, step, seq)
            t = last + 1
        return seq[:, prompt_len:]  # [B, N]

    return jax.jit(run)


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best, out


def bench(config, params, batch, new_tokens, prompt_len, repeats, uncached):
    rng = np.random.default_rng(0)
    prompts = rng.integers(1, config.vocab_size, (batch, prompt_len)).astype(np.int32)

    def cached():
        return generate(config, params, prompts, max_new_tokens=new_tokens, temperature=0.0)

    start = time.perf_counter()
    jax.block_until_ready(cached())
    first = time.perf_counter() - start
    cached_s, (cached_tokens, _) = best_time(cached, repeats)
    row = dict(cached_tps=batch * new_tokens / cached_s, cached_compile=first - cached_s)
    if uncached:
        fn = uncached_generate(config, prompt_len, new_tokens)
        start = time.perf_counter()
        compiled = fn.lower(params, prompts).compile()
        row["uncached_compile"] = time.perf_counter() - start
        uncached_s, uncached_tokens = best_time(lambda: compiled(params, prompts), 1)
        row["uncached_tps"] = batch * new_tokens / uncached_s
        same = np.all(np.asarray(uncached_tokens) == cached_tokens, axis=1)
        row["match"] = f"{int(same.sum())}/{batch}"
    return row


TINY_DECODERS = (
    "gpt-tiny", "llama-tiny", "mistral-tiny", "falcon-tiny", "codegen-tiny", "starcoder-tiny"
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--preset",
        nargs="+",
        help="decoder preset name(s), one table each (default: a 2-layer 8k-vocab GPT); "
        "'tiny' = every family's tiny decoder: " + ", ".join(TINY_DECODERS),
    )
    parser.add_argument("--quick", action="store_true", help="batches 1, 4; 32 and 128 tokens")
    parser.add_argument("--batches", type=int, nargs="+", default=None)
    parser.add_argument("--new-tokens", type=int, nargs="+", default=None)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the cached path")
    parser.add_argument("--no-uncached", action="store_true")
    args = parser.parse_args()
    names = args.preset or [None]
    if names == ["tiny"]:
        names = list(TINY_DECODERS)
    batches = args.batches or ([1, 4] if args.quick else [1, 16])
    new_tokens = args.new_tokens or ([32, 128] if args.quick else [128, 512])

    device = jax.devices()[0]
    print(
        f"device: {device.platform} {device.device_kind} ({jax.device_count()} device(s), "
        f"{os.cpu_count()} CPU cores), jax {jax.__version__}"
    )
    for name in names:
        # Presets: random weights at init_std 0.2 (as DEFAULT) keep argmax away from ties.
        config = DEFAULT if name is None else presets.get(name).replace(init_std=0.2)
        if config.arch != "decoder":
            raise SystemExit(f"--preset {name} is {config.arch!r}; pick a decoder preset.")
        run_table(config, name, batches, new_tokens, args)


def run_table(config: ModelConfig, name: str | None, batches, new_tokens, args) -> None:
    att = config.attention
    print(
        f"\nmodel: {name or 'default'} d_model={config.d_model} layers={config.num_layers} "
        f"heads={config.num_heads} kv_heads={config.kv_heads} d_ff={config.ffn.d_ff} "
        f"vocab={config.vocab_size} max_len={config.max_len} positions={config.positions.kind} "
        f"residual={config.norm.residual} window={att.window} "
        f"params={models.count_params(params_shape(config)):,}; "
        f"prompt {args.prompt_len} tokens, greedy"
    )
    params = jax.jit(models.init_params, static_argnums=0)(config, jax.random.key(0))
    header = (
        "| batch | new tokens | cached tok/s | uncached tok/s | speedup "
        "| cached compile s | uncached compile s | same tokens |"
    )
    print(header)
    print("|---" * 8 + "|")
    for n in new_tokens:
        for b in batches:
            r = bench(config, params, b, n, args.prompt_len, args.repeats, not args.no_uncached)
            unc = r.get("uncached_tps")
            print(
                f"| {b} | {n} | {r['cached_tps']:,.0f} | "
                + (f"{unc:,.1f} | {r['cached_tps'] / unc:,.1f}x | " if unc else "- | - | ")
                + f"{r['cached_compile']:.1f} | "
                + (f"{r['uncached_compile']:.1f} | {r['match']} |" if unc else "- | - |"),
                flush=True,
            )


def params_shape(config: ModelConfig):
    return jax.eval_shape(lambda key: models.init_params(config, key), jax.random.key(0))


if __name__ == "__main__":
    main()
