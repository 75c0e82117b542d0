"""One of the 2 processes (4 CPU devices each, gloo collectives) of the multi-host check in
tests/test_sharding.py: `python _multihost_worker.py PROCESS_ID PORT WORKDIR`.

Mesh mode over the 8 devices of both processes (data 2, fsdp 2, tensor 2; scanned layers):
each process feeds only its own rows of every global batch, trains STEPS steps, saves the
sharded state after SAVE_AT steps (async: the next step donates its buffers while the save is
written), then reads that checkpoint back straight into the same shardings (each process its
own shards) and redoes the steps after it. Process 0 writes the losses to WORKDIR/losses.json;
the test compares them (and the checkpoint, read on one device) with one process.
"""

import json
import os
import sys

import jax
import numpy as np
import optax

from transformer_jax import models, presets
from transformer_jax.train import sharding, steps
from transformer_jax.train.checkpoints import Checkpoints

# (the test imports these to compute the same steps on one device)
V, T, ROWS, STEPS, SAVE_AT = 64, 8, 8, 2, 1
CFG = presets.get(
    "gpt-tiny", d_model=32, num_heads=4, d_ff=64, num_layers=2, vocab_size=V, max_len=T,
    dropout_rate=0.0, attention_dropout_rate=0.0, scan_layers=True,
)  # fmt: skip
# eps 1e-6: the key bias's true gradient is 0, and a smaller eps scales two runs' float noise
# there up to lr-sized steps (as in tests/_mesh_checks.py).
TX = optax.adam(3e-3, eps=1e-6)


def train_step():
    return steps.make_train_step(models.build(CFG), TX, optax.constant_schedule(3e-3),
                                 objective="clm", axis_name=None)  # fmt: skip


def init_state():
    """Parameters N(0, 0.1) (norm scales 1 + that) from NumPy: no init to compile."""
    shapes = jax.eval_shape(lambda r: models.init_params(CFG, r), jax.random.key(0))
    rng = np.random.default_rng(0)

    def fill(path, s):
        x = 0.1 * rng.standard_normal(s.shape).astype(np.float32)
        return x + 1.0 if str(path[-1].key) == "scale" else x

    return steps.init_train_state(jax.tree_util.tree_map_with_path(fill, shapes), TX)


def batch(step):
    """The global batch of `step` [ROWS, T] (every process can make it; each feeds its rows)."""
    rng = np.random.default_rng(step)
    return {
        "inputs": rng.integers(1, V, size=(ROWS, T)).astype(np.int32),
        "targets": rng.integers(1, V, size=(ROWS, T)).astype(np.int32),
        "weights": (rng.random((ROWS, T)) < 0.8).astype(np.float32),
    }


def main(process_id: int, port: int, workdir: str) -> None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    assert jax.process_count() == 2 and jax.local_device_count() == 4, jax.devices()
    mesh = sharding.make_mesh(2, 2, 2)
    abstract = jax.eval_shape(init_state)
    eval_step = steps.make_eval_step(models.build(CFG), objective="clm", axis_name=None)
    runner = sharding.MeshRunner(train_step(), eval_step, abstract, CFG, mesh)
    rows = ROWS // jax.process_count()
    mine = slice(process_id * rows, (process_id + 1) * rows)  # this process's rows
    rng = jax.random.key(1)
    ckpt = Checkpoints(os.path.join(workdir, "checkpoints"), async_save=True)
    state, losses = runner.place(init_state()), []
    for step in range(STEPS):
        local = {k: v[mine] for k, v in batch(step).items()}
        state, m = runner.train(state, local, rng)
        losses.append(float(m["loss"]))
        if step + 1 == SAVE_AT:
            ckpt.save(SAVE_AT, state)  # the next step donates these buffers
    ckpt.wait()
    restored = ckpt.restore(SAVE_AT, abstract, shardings=runner.state_sharding)
    leaf = restored.params["decoder"]["layers"]["ffn"]["wi"]["kernel"]
    assert (
        leaf.sharding == runner.state_sharding.params["decoder"]["layers"]["ffn"]["wi"]["kernel"]
        and not leaf.is_fully_addressable
    ), leaf.sharding
    state, resumed = runner.place(restored), []
    for step in range(SAVE_AT, STEPS):
        local = {k: v[mine] for k, v in batch(step).items()}
        state, m = runner.train(state, local, rng)
        resumed.append(float(m["loss"]))
    ckpt.close()
    if process_id == 0:
        with open(os.path.join(workdir, "losses.json"), "w") as f:
            json.dump({"losses": losses, "resumed": resumed}, f)
    print("OK", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
