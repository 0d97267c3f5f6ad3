# The interpreter every example runs the project's scripts with; sourced by each of them.
#   PYTHON    the project's .venv/bin/python (created by `make setup` when missing), unless
#             PYTHON is set: PYTHON=/path/to/python bash examples/<name>.sh
#   TORCHRUN  torchrun of that interpreter, as a command array: "${TORCHRUN[@]}" ARGS...
#   MPIEXEC   the mpiexec beside it (the mpich wheel puts one in .venv/bin), else from PATH
# Nothing here needs an activated environment or a `python` on PATH.
_examples_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z ${PYTHON:-} ]]; then
  if [[ ! -x $_examples_root/.venv/bin/python ]]; then
    echo "examples: no $_examples_root/.venv yet: running 'make setup' (or set PYTHON=...)" >&2
    make -C "$_examples_root" setup >&2
  fi
  PYTHON=$_examples_root/.venv/bin/python
fi
if ! command -v "$PYTHON" > /dev/null; then
  echo "examples: PYTHON=$PYTHON is not an executable" >&2
  exit 2
fi
TORCHRUN=("$PYTHON" -m torch.distributed.run)
_python_bin=$(dirname "$(command -v "$PYTHON")")
MPIEXEC=${MPIEXEC:-$([[ -x $_python_bin/mpiexec ]] && echo "$_python_bin/mpiexec" || echo mpiexec)}
export PYTHON MPIEXEC
unset _examples_root _python_bin
