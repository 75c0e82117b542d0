"""transformer_jax against Hugging Face transformers (PyTorch) on the same shapes and threads.

    .venv/bin/python bench/compare_torch.py                       # the tiny model only
    .venv/bin/python bench/compare_torch.py --gpt2-small          # + gpt2-small (minutes)
    .venv/bin/python bench/compare_torch.py --torch-python /work/refvenv/bin/python

One command, three processes: this one only schedules and prints. A JAX worker (this
interpreter) and a PyTorch worker (`--torch-python`: an interpreter with the optional
`reference` extra, torch + transformers; default: this one) each build every model and compile
or warm up every piece of work first, one after the other, then wait. Then the timed runs
alternate between the two workers, one run at a time, --repeats rounds (the side that goes
first alternates too), so that both sides meet the same state of the machine: on a shared VM
whose speed moves by up to 2x within minutes (BENCHMARKS.md, the test suite's section), two
halves measured minutes apart give ratios that mean little. A fixed pure-Python loop is timed
before each round, and its spread is printed with the table. torch is imported only in its
worker, so the JAX environment does not need it.

Work (GPT-2-style models, float32, dropout off, random weights, synthetic tokens):
  * train: one AdamW step (ours: steps.make_train_step under jax.pmap with clipping and
    metrics, as train.py runs it, with the plain and the chunked loss; HF: GPT2LMHeadModel
    forward with labels, backward, torch.optim.AdamW step) on B x T tokens;
  * decode: greedy b=1, 16-token prompt, N new tokens (ours: sampling.generate, float32 and
    bfloat16 weights; HF: model.generate(do_sample=False, min_new_tokens=N));
  * the memory-bandwidth bound of gpt2-small's b=1 decode: the PyTorch worker times one
    torch.mv over a float32 matrix of the model's weight bytes (without the position table,
    of which a token reads one row), once per round; bound tok/s = 1 / its median time.
tok/s = tokens / median time over the --repeats timed runs (and the best, in brackets);
ratio = ours / HF on the medians. Both sides use --threads threads (torch.set_num_threads;
XLA's CPU client uses every core it is given: run under `taskset` to pin both to the same
cores).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from _timing import calibrate  # bench/_timing.py (this script's directory is on sys.path)

# name: (layers, d_model, heads, vocab, train batch, train length)
CONFIGS = {
    "tiny": (4, 256, 4, 8192, 8, 256),
    "gpt2-small": (12, 768, 12, 50257, 2, 512),
}
PROMPT = 16


def _serve(works: dict, versions: dict) -> None:
    """A worker's loop, after its set-up: announce the versions and work names, then time one
    run of each requested work (its name, a line on stdin) and answer with the seconds (a
    line on stdout)."""
    print(json.dumps([versions, sorted(works)]), flush=True)
    for line in sys.stdin:
        work = works[line.strip()]
        start = time.perf_counter()
        work()
        print(time.perf_counter() - start, flush=True)


# ----------------------------------------------------------------------------- PyTorch half
def torch_works(args) -> tuple[dict, dict]:
    """name -> a no-argument function running one piece of work, warmed up."""
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    works = {}
    for name in args.configs:
        works.update(_torch_config(torch, transformers, name, args))
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    return works, versions


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

    def train():
        model.train()
        train_step()

    prompt = torch.randint(4, vocab, (1, PROMPT))

    def decode():
        model.eval()
        with torch.no_grad():
            model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                do_sample=False,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                pad_token_id=0,
            )

    train()  # warm-up
    decode()
    works = {f"{name}/train": train, f"{name}/decode": decode}
    if name != "tiny":  # (the tiny model's 16 MiB sit in the L2/L3 caches: no memory bound)
        works[f"{name}/read"] = _read_work(torch, model, d)
    return works


def _read_work(torch, model, d: int):
    """One read of the bytes a b=1 decode step must read: a float32 matrix-vector product
    (torch's multithreaded GEMV, the fastest read on this machine: BENCHMARKS.md) over a
    matrix of the model's weight bytes, less the position table (one row of it is read per
    token). Its time is the memory-bandwidth bound of one token: bound tok/s = 1 / time."""
    weights = sum(p.numel() for p in model.parameters())
    weights -= model.transformer.wpe.weight.numel()
    matrix = torch.randn(weights // d, d)
    x = torch.randn(d)

    def read():
        torch.mv(matrix, x)

    read()
    return read


# --------------------------------------------------------------------------------- JAX half
def jax_works(args) -> tuple[dict, dict]:
    """name -> a no-argument function running one piece of work, compiled and warmed up."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import jax
    import numpy as np

    from transformer_jax import models, presets
    from transformer_jax.sampling import cast_weights, generate
    from transformer_jax.train.parallel import shard

    works = {}
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
        for label, chunk in (("train", 0), ("train_chunked", 1024)):
            works[f"{name}/{label}"] = _jax_train_step(cfg, params, chunk, data)
        prompt = rng.integers(4, vocab, size=(1, PROMPT)).astype(np.int32)
        for label, dtype in (("decode", None), ("decode_bf16", "bfloat16")):
            run = functools.partial(
                generate,
                cfg,
                cast_weights(params, dtype),
                prompt,
                max_new_tokens=args.new_tokens,
                temperature=0.0,
            )
            works[f"{name}/{label}"] = lambda run=run: jax.block_until_ready(run())
    for work in works.values():
        work()  # compile and warm up
    return works, {"jax": jax.__version__}


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


class _Worker:
    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # after its set-up: compiled and warmed up
        if not line:
            raise RuntimeError(f"worker {argv[:3]} failed during its set-up")
        self.versions, self.works = json.loads(line)

    def time(self, work: str) -> float:
        self.proc.stdin.write(work + "\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpt2-small", action="store_true", help="also gpt2-small (minutes)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds (alternating sides)")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--torch-python", default=sys.executable)
    ap.add_argument("--worker", choices=("torch", "jax"), help=argparse.SUPPRESS)
    ap.add_argument("--configs", nargs="+", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.configs is None:
        args.configs = ["tiny"] + (["gpt2-small"] if args.gpt2_small else [])
    if args.worker:
        _serve(*(torch_works if args.worker == "torch" else jax_works)(args))
        return
    common = ["--threads", str(args.threads), "--new-tokens", str(args.new_tokens)]
    common += ["--configs", *args.configs]
    # Set-up one side at a time (never two compiles at once on shared cores), then alternate.
    theirs = _Worker([args.torch_python, os.path.abspath(__file__), "--worker", "torch", *common])
    ours = _Worker([sys.executable, os.path.abspath(__file__), "--worker", "jax", *common])
    rows = [  # (work label, our work, HF's work, tokens per run)
        (work, f"{name}/{mine}", f"{name}/{hf}", CONFIGS[name][4] * CONFIGS[name][5] if
         mine.startswith("train") else args.new_tokens)
        for name in args.configs
        for work, mine, hf in (
            ("train step", "train", "train"),
            ("train step, chunked loss", "train_chunked", "train"),
            ("greedy decode b=1", "decode", "decode"),
            ("greedy decode b=1, bf16 w", "decode_bf16", "decode"),
        )
    ]  # fmt: skip
    times = {("ours", r[1]): [] for r in rows} | {("hf", r[2]): [] for r in rows}
    reads = {name: [] for name in args.configs if f"{name}/read" in theirs.works}
    calibration = []
    for round_ in range(args.repeats):
        calibration.append(calibrate())
        for name, got in reads.items():
            got.append(theirs.time(f"{name}/read"))
        sides = [("ours", ours), ("hf", theirs)][:: 1 if round_ % 2 == 0 else -1]
        for _, mine, hf, _ in rows:
            for side, worker in sides:
                work = mine if side == "ours" else hf
                if len(times[(side, work)]) <= round_:  # HF's train serves two rows
                    times[(side, work)].append(worker.time(work))
    ours.close()
    theirs.close()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, ")
    print(f"threads {args.threads}, load average {load}, {args.repeats} alternating rounds")
    print(f"versions: {ours.versions} {theirs.versions}")
    print(f"calibration loop per round (s): {', '.join(f'{c:.3f}' for c in calibration)} "
          f"(max/min {max(calibration) / min(calibration):.2f})")  # fmt: skip
    head = f"{'work':28s} {'ours tok/s':>18s} {'HF tok/s':>18s} {'ratio':>6s}"
    print(f"{'config':12s} {head}")
    for work, mine, hf, size in rows:
        a, b = times[("ours", mine)], times[("hf", hf)]
        ra, rb = size / statistics.median(a), size / statistics.median(b)
        cells = [f"{r:9.1f} [{size / min(t):6.1f}]" for r, t in ((ra, a), (rb, b))]
        print(f"{mine.split('/')[0]:12s} {work:28s} {cells[0]} {cells[1]} {ra / rb:5.2f}x")
    for name, got in reads.items():  # the b=1 decode's memory-bandwidth bound
        bound = 1.0 / statistics.median(got)
        ours_tps = args.new_tokens / statistics.median(times[("ours", f"{name}/decode")])
        print(f"{name}: reading its weights once (torch.mv over a matrix of their bytes) takes "
              f"{1e3 / bound:.1f} ms: bound {bound:.1f} tok/s at b=1; greedy decode at "
              f"{ours_tps:.1f} tok/s = {ours_tps / bound:.0%} of it")  # fmt: skip


if __name__ == "__main__":
    main()
