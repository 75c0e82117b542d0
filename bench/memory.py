"""Memory of one cached decoding step of a full-size preset, from XLA's own accounting.

    .venv/bin/python bench/memory.py                         # llama-2-7b, mistral-7b, falcon-7b
    .venv/bin/python bench/memory.py --preset mistral-7b --batches 1 8 --cache 4096

Nothing is allocated: parameters, the KV cache and the tokens are `jax.ShapeDtypeStruct`s
(parameters in bfloat16, computation in bfloat16), and the step
`DecoderOnly.decode(tokens [B, 1], positions [B, 1], cache)` is lowered and compiled with the
cache donated, as the sampler's loop updates it in place. `compiled.memory_analysis()` gives
XLA's buffer assignment for the program: arguments (weights + cache + tokens), outputs
(logits + the new cache), the part of the outputs aliased to donated arguments (the cache,
written in place), and temporaries. Peak = arguments + outputs - aliased + temporaries.
The numbers come from the compiler for the backend it runs on. On the CPU, XLA has no bf16
matmul: it converts every bf16 weight matrix to a float32 temporary before its dot, and those
copies dominate the temporaries (about 2x the weights). "live" = arguments + outputs - aliased
is what any backend holds (weights, cache, logits); an accelerator with bf16 matmuls adds only
activation-sized temporaries to it.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from transformer_jax import models, presets

GiB = 2**30


def abstract_params(config, dtype):
    """The parameter tree as ShapeDtypeStructs of `dtype` (bf16 weights: half of float32)."""
    shapes = jax.eval_shape(lambda r: models.init_params(config, r), jax.random.key(0))
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype), shapes)


def decode_memory(name: str, batch: int, cache_len: int) -> dict:
    config = presets.get(name)
    # Falcon-7B was trained on 2,048 positions; its rotary code has no limit, the bytes count.
    config = config.replace(dtype="bfloat16", max_len=max(config.max_len, cache_len))
    model = models.build(config)
    params = abstract_params(config, jnp.bfloat16)
    cache = jax.eval_shape(lambda: models.init_cache(config, batch, cache_len))  # bf16 [B,K,S,H]
    tokens = jax.ShapeDtypeStruct((batch, 1), jnp.int32)  # [B, 1]

    def step(params, tokens, positions, cache):
        return model.apply({"params": params}, tokens, positions, cache, method="decode")

    start = time.perf_counter()
    lowered = jax.jit(step, donate_argnums=3).lower(params, tokens, tokens, cache)
    compiled = lowered.compile()
    seconds = time.perf_counter() - start
    mem = compiled.memory_analysis()
    weights = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    kv = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(cache))
    peak = (
        mem.argument_size_in_bytes
        + mem.output_size_in_bytes
        - mem.alias_size_in_bytes
        + mem.temp_size_in_bytes
    )
    return dict(
        weights=weights,
        cache=kv,
        arguments=mem.argument_size_in_bytes,
        outputs=mem.output_size_in_bytes,
        aliased=mem.alias_size_in_bytes,
        temps=mem.temp_size_in_bytes,
        peak=peak,
        compile_s=seconds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", nargs="+", default=["llama-2-7b", "mistral-7b", "falcon-7b"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--cache", type=int, default=4096, help="KV cache length (tokens)")
    args = parser.parse_args()
    device = jax.devices()[0]
    print(f"backend: {device.platform} {device.device_kind}, jax {jax.__version__}")
    print(f"one bf16 decode step, cache of {args.cache} tokens, GiB (2^30 bytes)")
    print(
        "| preset | batch | weights | KV cache | XLA arguments | outputs | aliased (cache "
        "in place) | live (args + outputs - aliased) | temporaries (CPU) | peak (CPU) "
        "| live < 80 GB | compile s |"
    )
    print("|---" * 12 + "|")
    for name in args.preset:
        for batch in args.batches:
            r = decode_memory(name, batch, args.cache)
            live = r["arguments"] + r["outputs"] - r["aliased"]
            fits = "yes" if live < 80e9 else "NO"
            cells = [r[k] / GiB for k in ("weights", "cache", "arguments", "outputs", "aliased")]
            cells += [live / GiB, r["temps"] / GiB, r["peak"] / GiB]
            print(
                f"| {name} | {batch} | "
                + " | ".join(f"{c:,.2f}" for c in cells)
                + f" | {fits} | {r['compile_s']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
