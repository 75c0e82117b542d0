"""T5-small (v1.0 wiring, 60M) pre-trained with T5's span corruption on C4 (English):
15% of the tokens in spans of mean length 3, each span replaced by a sentinel in the
encoder input; the decoder predicts the sentinels with their spans.

    python train.py --config configs/t5_small_c4.py --workdir workdirs/t5_small_c4 \
        --config.data_dir=/path/to/tensorflow_datasets

Needs the prepared TFDS dataset `c4/en` in data_dir (`tfds build c4/en --data_dir DIR` on a
machine with internet; large). A 32k sentencepiece vocabulary is trained on the train split;
the model's vocabulary adds T5's 100 sentinel ids after it (32,100). T5's own run used
Adafactor and 2^19 steps of 128 x 512 tokens; this recipe uses AdamW at that batch size.
"""

from transformer_jax.train.run_config import default_config


def get_config():
    c = default_config()
    c.model = "t5-small"
    c.dataset = "c4/en"
    c.objective = "span_corruption"
    c.noise_density = 0.15
    c.mean_noise_span_length = 3.0
    c.vocab_size = 32000
    c.max_length = 512
    c.per_device_batch_size = 16  # x 8 devices = T5's 128 rows
    c.eval_batch_size = 16
    c.num_train_steps = 524_288
    c.schedule = "linear_rsqrt"
    c.learning_rate = 1e-3
    c.warmup_steps = 10_000
    c.weight_decay = 0.0
    c.grad_clip_norm = 1.0
    c.dtype = "bfloat16"
    c.log_every_steps = 100
    c.eval_every_steps = 5000
    c.num_eval_batches = 50
    return c
