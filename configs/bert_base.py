"""BERT-base pretraining: masked-language modelling (15%: 80/10/10) + next-sentence
prediction, on your own document collection (BERT used BooksCorpus + English Wikipedia).

    python train.py --config configs/bert_base.py --workdir workdirs/bert_base \
        --config.train_files='/data/bert_corpus/train/*.txt' \
        --config.eval_files='/data/bert_corpus/eval/*.txt'

NSP needs documents: one file per document (or per book/article), sentences or paragraphs
on separate lines; "next sentence" pairs are consecutive line chunks of one file, negatives
come from other files. Sentence-shuffled corpora such as lm1b have no next sentence: train
them with `--config.objective=mlm` (RoBERTa-style, no NSP) instead.
"""

from transformer_jax.train.run_config import default_config


def get_config():
    c = default_config()
    c.model = "bert-base"
    c.dataset = "text_files"
    c.train_files = "/data/bert_corpus/train/*.txt"  # override on the command line
    c.eval_files = "/data/bert_corpus/eval/*.txt"
    c.objective = "mlm_nsp"
    c.vocab_size = 30522
    c.max_length = 128
    c.per_device_batch_size = 32  # x 8 devices = 256 sequences, as in the BERT paper
    c.eval_batch_size = 32
    c.num_train_steps = 1_000_000
    c.schedule = "linear_rsqrt"
    c.learning_rate = 1e-4
    c.warmup_steps = 10_000
    c.b2 = 0.999
    c.eps = 1e-6
    c.weight_decay = 0.01
    c.dtype = "bfloat16"
    c.log_every_steps = 100
    c.eval_every_steps = 10_000
    c.num_eval_batches = 50
    c.checkpoint_every_steps = 10_000
    return c
