"""GPT-2 medium (355M) on LM1B in mesh mode: parameters and AdamW state sharded (FSDP),
the layers as one nn.scan, each layer rematerialised (README "Scaling out").

    python train.py --config configs/gpt2_medium_fsdp.py --workdir workdirs/gpt2m_fsdp \
        --config.data_dir=/path/to/tensorflow_datasets

One host: every local device joins the `fsdp` axis (mesh.fsdp=-1). Tensor parallelism:
--config.mesh.tensor=2 (it must divide the 16 heads and the MLP width 4096). Several hosts:
the same command on every host plus --coordinator_address=HOST0:PORT --num_processes=N
--process_id=i (README "Scaling out"); each host feeds only its own rows.
"""

from transformer_jax.train.run_config import default_config


def get_config():
    c = default_config()
    c.model = "gpt2-medium"
    c.model_overrides.pad_id = 0  # our tokenizer's pad id (GPT-2's own vocabulary has none)
    c.dataset = "lm1b"
    c.objective = "clm"
    c.vocab_size = 32000
    c.max_length = 512
    c.per_device_batch_size = 16
    c.eval_batch_size = 16
    c.num_train_steps = 100_000
    c.schedule = "linear_rsqrt"
    c.learning_rate = 3e-4
    c.warmup_steps = 2000
    c.weight_decay = 0.1
    c.grad_clip_norm = 1.0
    c.dtype = "bfloat16"
    # Scaling out.
    c.parallelism = "mesh"
    c.mesh.data = 1
    c.mesh.fsdp = -1  # the rest of the devices
    c.mesh.tensor = 1
    c.scan_layers = True
    c.remat = "dots"  # keep matmul outputs, recompute the rest of each layer
    c.log_every_steps = 100
    c.eval_every_steps = 2000
    c.num_eval_batches = 50
    c.checkpoint_every_steps = 2000
    return c
