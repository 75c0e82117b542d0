"""GPT-2 small (124M) on LM1B (One Billion Word).

    python train.py --config configs/gpt2_small_lm1b.py --workdir workdirs/gpt2_lm1b \
        --config.data_dir=/path/to/tensorflow_datasets

Needs the prepared TFDS dataset `lm1b` in data_dir (`tfds build lm1b --data_dir DIR` on a
machine with internet). A 32k sentencepiece vocabulary is trained on the train split.
"""

from transformer_jax.train.run_config import default_config


def get_config():
    c = default_config()
    c.model = "gpt2-small"
    c.model_overrides.pad_id = 0  # our tokenizer's pad id (GPT-2's own vocabulary has none)
    c.dataset = "lm1b"
    c.objective = "clm"
    c.vocab_size = 32000
    c.max_length = 512
    c.per_device_batch_size = 32
    c.eval_batch_size = 32
    c.num_train_steps = 100_000
    c.schedule = "linear_rsqrt"
    c.learning_rate = 6e-4
    c.warmup_steps = 2000
    c.weight_decay = 0.1
    c.grad_clip_norm = 1.0
    c.dtype = "bfloat16"
    c.log_every_steps = 100
    c.eval_every_steps = 2000
    c.num_eval_batches = 50
    c.checkpoint_every_steps = 2000
    return c
