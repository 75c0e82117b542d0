"""Train a Transformer: `python train.py --config configs/NAME.py --workdir DIR [--config.F=V]`.

With no --config the default recipe configs/gpt_tiny.py runs. A rerun with the same workdir
resumes from its latest intact checkpoint (finalized by orbax and matching its checksums).
Exit codes: 0 done; 1 unexpected error (pending checkpoint saves are finished first); 2
invalid config or input, in one line naming the field or path (a bad or unknown field or flag,
a --config file that cannot be loaded: its file, line and error; a workdir that is a file or
not writable, a workdir another train.py holds (WORKDIR/train.lock), a dataset that is not
prepared, a checkpoint that does not fit the config or is corrupt, a checkpoint too large for
this machine's memory); 3 non-finite loss/gradient; 74 a checkpoint save failed (disk full,
I/O error: the step and the error are named; earlier checkpoints stay trusted); 75 preempted
by SIGTERM or interrupted by Ctrl-C (state saved: rerun to resume); 130 a second Ctrl-C
during that save (exits at once; the checkpoints saved before are intact).

Multi-process (one process per host): --coordinator_address HOST:PORT --num_processes N
--process_id I; on CPU add --cpu_collectives=gloo.
"""

from __future__ import annotations

import os
import sys

from transformer_jax import console, runtime  # noqa: E402

runtime.tune_gc()  # before JAX, Flax and TensorFlow load (transformer_jax/runtime.py)
console.quiet_environment(console.verbose_flag(sys.argv))  # before anything imports TensorFlow

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "gpt_tiny.py")

FLAGS = flags.FLAGS
EXIT_INVALID, EXIT_NONFINITE, EXIT_SAVE_FAILED, EXIT_PREEMPTED = 2, 3, 74, 75


def _recipe_spec(argv: list[str]) -> str:
    """The --config value on the command line (a file, maybe with ml_collections' ':ARG')."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return _DEFAULT_CONFIG


def _recipe_path(argv: list[str]) -> str:
    """The --config file named on the command line (without ml_collections' ':ARG')."""
    return _recipe_spec(argv).split(":")[0]


def _bad_recipe(argv: list[str]) -> int | None:
    """If the --config file cannot be loaded (a syntax error, an exception at import or in
    get_config(), no get_config()), prints one line naming the file, the line and the error,
    and returns exit code 2; else None."""
    from transformer_jax.train.recipe import load_problem

    problem = load_problem(_recipe_spec(argv))
    if problem is None:
        return None
    print(f"train.py: invalid --config: {problem}", file=sys.stderr)
    return EXIT_INVALID


def _bad_override(argv: list[str], error: Exception) -> int:
    """Prints one line naming the --config.FIELD override that failed (with the closest known
    field names for an unknown one) and returns exit code 2."""
    from transformer_jax.train.run_config import unknown_field

    config = None
    try:
        import importlib.util

        spec = importlib.util.spec_from_file_location("recipe", _recipe_path(argv))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.get_config()
    except Exception:  # noqa: BLE001 - no recipe to compare with: the defaults then
        pass
    for arg in argv:
        if arg.startswith("--config."):
            message = unknown_field(config, arg[len("--config.") :].split("=", 1)[0])
            if message is not None:
                print(f"train.py: invalid configuration: {message}", file=sys.stderr)
                return EXIT_INVALID
    text = " ".join(str(error).split()) or type(error).__name__
    print(f"train.py: invalid --config or --config.FIELD override: {text}", file=sys.stderr)
    return EXIT_INVALID


try:  # ml_collections applies the --config.FIELD=VALUE overrides here already
    config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Run recipe (configs/*.py).")
except (AttributeError, KeyError, TypeError, ValueError, flags.Error) as e:
    sys.exit(_bad_override(sys.argv, e))
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and the tokenizer.")
flags.DEFINE_string("coordinator_address", None, "jax.distributed coordinator HOST:PORT.")
flags.DEFINE_integer("num_processes", None, "Number of processes (jax.distributed).")
flags.DEFINE_integer("process_id", None, "This process's index (jax.distributed).")
flags.DEFINE_string("cpu_collectives", None, "CPU collectives implementation, e.g. 'gloo'.")
flags.DEFINE_bool("verbose", False, "Also print the INFO lines of absl, orbax, jax, TF and TFDS.")
flags.mark_flag_as_required("workdir")


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return FLAGS(argv)  # loads the --config file (its errors come out here)
    except Exception as e:  # noqa: BLE001 - whatever a recipe file raises
        code = _bad_recipe(argv)
        if code is not None:
            sys.exit(code)
        if isinstance(e, (AttributeError, KeyError, TypeError, ValueError, flags.Error)):
            sys.exit(_bad_override(argv, e))
        raise


def main(argv: list[str]) -> int:
    del argv
    try:  # ml_collections defers a recipe that failed to load to its first use
        FLAGS.config.keys()
    except Exception as e:  # noqa: BLE001 - any failure to load the recipe file
        code = _bad_recipe(sys.argv)
        if code is not None:
            return code
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        print(
            f"train.py: invalid --config {_recipe_path(sys.argv)!r}: could not be loaded "
            f"({lines[-1] if lines else type(e).__name__}); give a recipe file such as "
            "configs/gpt_tiny.py",
            file=sys.stderr,
        )
        return EXIT_INVALID
    import jax

    if FLAGS.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", FLAGS.cpu_collectives)
    if FLAGS.coordinator_address:
        jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    from transformer_jax.data import DatasetNotPreparedError
    from transformer_jax.train import ConfigError, NonFiniteError, Preempted, train_and_evaluate
    from transformer_jax.train.checkpoints import CheckpointSaveError

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
    except CheckpointSaveError as e:
        print(f"train.py: {e}", file=sys.stderr)
        return EXIT_SAVE_FAILED
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
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=_parse_flags)
