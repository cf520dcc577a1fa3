#!/usr/bin/env bash
# The tuned comparison (learning rates chosen per algorithm on a validation split, then seeds on test, the
# judge controls and TRL) in one command: its protocol is in docs/results.md, "Protocol for the tuned study".
#
#   scripts/study-22.sh                     # the whole study: GPU if torch sees one, --jobs 12 (16 cores, 1 GPU)
#   scripts/study-22.sh --smoke             # the machinery end to end on a CPU: 2 steps per run, 1 lr, 1 seed
#   scripts/study-22.sh --phase sweep       # only the learning-rate sweep (a session too short for all of it)
#   scripts/study-22.sh --phase final --selected sgpo=3e-4,grpo=1e-4,dapo=2e-4,drgrpo=1e-4
#
# Options: --out DIR (default experiments/study-22, or experiments/study-22-smoke), --jobs N, --policy DIR,
# --trl-python PY (a python that imports trl: adds TRL's GRPOTrainer), --trl-wheels DIR (make that python here:
# a venv that sees the system packages, TRL installed from the wheels in DIR without the network; fill DIR
# beforehand with `pip download trl==1.16.0 accelerate --no-deps -d DIR`), --export DIR (a .tar.gz of the
# study without checkpoints and weights, e.g. to bring it back from a lent machine), --no-copy; anything else
# is passed on to `sgpo experiment tune` (e.g. --phase, --selected, --algos, --steps).
#
# The study resumes where it stopped: run the same command again. At the end the tables, results and plots
# are copied to docs/results/study-22/ (the smoke's to OUT/copied/, so it never touches the docs).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/services${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python}

smoke=0 out="" jobs="" export_dir="" copy=1 trl_wheels=""
pass=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --out) out=$2; shift ;;
    --jobs) jobs=$2; shift ;;
    --export) export_dir=$2; shift ;;
    --trl-wheels) trl_wheels=$2; shift ;;
    --no-copy) copy=0 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) pass+=("$1") ;;
  esac
  shift
done

if [[ $smoke == 1 ]]; then
  out=${out:-experiments/study-22-smoke}
  jobs=${jobs:-2}
  args=(--lrs 3e-4 --tune-seeds 0 --seeds 0 --control-seeds 0 --steps 2 --eval-every 2
        --eval-temperature 0 --device cpu)
  docs="$out/copied"
else
  out=${out:-experiments/study-22}
  jobs=${jobs:-12}
  args=(--steps 120 --eval-every 20 --device auto)
  docs=docs/results/study-22
fi
mkdir -p "$out"
if [[ -n $trl_wheels ]]; then
  venv=${TMPDIR:-/tmp}/study22-trlenv
  [[ -x $venv/bin/python ]] || "$PY" -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install -q --no-index --no-deps --find-links "$trl_wheels" trl accelerate  # the rest: system packages
  pass+=(--trl-python "$venv/bin/python")
fi
{
  echo "date $(date -u +%FT%TZ)  host $(hostname)  cpus $(nproc)  git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else "", "transformers", transformers.__version__)'
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
} | tee -a "$out/machine.txt"

set -x
start=$(date +%s)
code=0
"$PY" -m sgpo.cli experiment tune --out "$out" --jobs "$jobs" "${args[@]}" "${pass[@]}" || code=$?
set +x
echo "study-22: sgpo experiment tune exited $code after $(( $(date +%s) - start )) s" | tee -a "$out/machine.txt"

if [[ $copy == 1 && -f "$out/tune-tables.md" ]]; then
  mkdir -p "$docs"
  cp "$out"/tune-tables.md "$out"/tune-results.json "$out"/machine.txt "$docs"/
  cp "$out"/tune-*.png "$docs"/ 2>/dev/null || true
  [[ -f "$out/selection.json" ]] && cp "$out/selection.json" "$docs"/
  echo "copied the tables, results and plots to $docs"
fi
if [[ -n $export_dir ]]; then
  mkdir -p "$export_dir"
  # what the report and a resumed study need; checkpoints, weights, the embedded Redis and the (seeded,
  # regenerable) RL prompts stay behind
  tar -C "$out" --exclude=checkpoints --exclude=weights --exclude=tensorboard --exclude=redis \
      --exclude=train_problems.jsonl --exclude='*.pt' --exclude='*.safetensors' -czf "$export_dir/study-22.tar.gz" .
  echo "exported $(du -h "$export_dir/study-22.tar.gz" | cut -f1) to $export_dir/study-22.tar.gz"
fi
exit $code
