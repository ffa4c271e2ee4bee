# Shared set-up of the launchers/slurm/*.sbatch scripts; they source it from the repo root.
#
# sbatch runs a copy of the batch script from slurm's spool folder, so the scripts find the repo
# through SLURM_SUBMIT_DIR (submit from the repo root); `bash launchers/slurm/X.sbatch` (a dry run
# outside sbatch) uses the script's own location.
set -euo pipefail

PYTHON="${GAINRL_PYTHON:-$PWD/.venv/bin/python}"  # the venv of launchers/setup_*.sh, else python3 on PATH
[[ -x "$PYTHON" ]] || PYTHON="$(command -v python3)"
# srun does not inherit sbatch's --cpus-per-task (slurm >= 22.05): pass it on to the node tasks
if [[ -n "${SLURM_CPUS_PER_TASK:-}" ]]; then export SRUN_CPUS_PER_TASK="$SLURM_CPUS_PER_TASK"; fi

# gainrl_is_dry_run: true when GAINRL_DRY_RUN=1 (print every node's command instead of running it)
gainrl_is_dry_run() { [[ "${GAINRL_DRY_RUN:-0}" == 1 ]]; }

# gainrl_srun JOB ARGS...: one task per node, each running its node's command (gainrl/slurm.py).
# --kill-on-bad-exit: a node that fails ends the step at once instead of leaving the others
# blocked in a collective until dist.timeout_s.
gainrl_srun() {
    local job="$1"; shift
    srun --nodes="$SLURM_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 \
        "$PYTHON" -m gainrl.slurm node "$job" -- "$@"
}
