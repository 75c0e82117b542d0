"""Train a Transformer: `python train.py --config configs/NAME.py --workdir DIR [--config.F=V]`.

With no --config the default recipe configs/gpt_tiny.py runs. A rerun with the same workdir
resumes from its latest intact checkpoint (finalized by orbax and matching its checksums).
Exit codes: 0 done; 1 unexpected error (pending checkpoint saves are finished first); 2
invalid config or input (ValueError: a bad field, a dataset that is not prepared, a checkpoint
that does not fit the config or is corrupt); 3 non-finite loss/gradient; 75 preempted by
SIGTERM or interrupted by Ctrl-C (state saved: rerun to resume); 130 a second Ctrl-C during
that save (exits at once; the checkpoints saved before are intact).

Multi-process (one process per host): --coordinator_address HOST:PORT --num_processes N
--process_id I; on CPU add --cpu_collectives=gloo.
"""

from __future__ import annotations

import os
import sys

from transformer_jax import console  # noqa: E402

console.quiet_environment(console.verbose_flag(sys.argv))  # before anything imports TensorFlow

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "gpt_tiny.py")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Run recipe (configs/*.py).")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and the tokenizer.")
flags.DEFINE_string("coordinator_address", None, "jax.distributed coordinator HOST:PORT.")
flags.DEFINE_integer("num_processes", None, "Number of processes (jax.distributed).")
flags.DEFINE_integer("process_id", None, "This process's index (jax.distributed).")
flags.DEFINE_string("cpu_collectives", None, "CPU collectives implementation, e.g. 'gloo'.")
flags.DEFINE_bool("verbose", False, "Also print the INFO lines of absl, orbax, jax, TF and TFDS.")
flags.mark_flag_as_required("workdir")

EXIT_INVALID, EXIT_NONFINITE, EXIT_PREEMPTED = 2, 3, 75


def main(argv: list[str]) -> int:
    del argv
    import jax

    if FLAGS.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", FLAGS.cpu_collectives)
    if FLAGS.coordinator_address:
        jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    from transformer_jax.data import DatasetNotPreparedError
    from transformer_jax.train import ConfigError, NonFiniteError, Preempted, train_and_evaluate

    # Our own lines at INFO; library chatter (absl, orbax, TF, TFDS) only with --verbose.
    console.setup(FLAGS.verbose)
    if not FLAGS.verbose:
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()  # our own bar is the one to watch
    try:
        summary = train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except Preempted as e:
        print(f"train.py: {e}", file=sys.stderr)
        return EXIT_PREEMPTED
    except NonFiniteError as e:
        print(f"train.py: {e}", file=sys.stderr)
        return EXIT_NONFINITE
    except (ConfigError, DatasetNotPreparedError) as e:
        print(f"train.py: invalid configuration or input: {e}", file=sys.stderr)
        return EXIT_INVALID
    evaluation = summary.get("eval")
    if evaluation and jax.process_index() == 0:
        print(
            f"step {summary['step']}: eval loss {evaluation['loss']:.4f}, "
            f"perplexity {evaluation['perplexity']:.2f}, accuracy {evaluation['accuracy']:.3f}"
        )
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
