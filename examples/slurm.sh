#!/usr/bin/env bash
# Runs an oxray program on a Slurm allocation: one raylet per node (the first node is the head),
# then the program on the first node, attached to that cluster. No sleeps: members wait for the
# head, and `oxray wait` returns once every node has joined.
#
#   cargo install --path api                           # puts `oxray` on PATH (or set OXRAY)
#   cargo build --release --example cluster            # on a file system every node sees
#   sbatch examples/slurm.sh target/release/examples/cluster
#
# Knobs (environment): OXRAY (the oxray command), OXRAY_PORT (the head's UDP port, 6380),
# OXRAY_SECRET_DIR (where the job's secret file goes; every node must read it; $HOME).
#
#SBATCH --job-name=oxray
#SBATCH --nodes=3
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=4
#SBATCH --time=00:10:00
set -euo pipefail

if [ $# -eq 0 ]; then
  echo "usage: sbatch $0 PROGRAM [ARGS...]" >&2
  exit 2
fi
oxray=${OXRAY:-oxray}
mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
head=${nodes[0]}
port=${OXRAY_PORT:-6380}
cpus=${SLURM_CPUS_PER_TASK:-1}
# Session names must differ between the nodes of one cluster.
session="oxray-$SLURM_JOB_ID"

# A fresh secret for this job, readable by you only.
secret="${OXRAY_SECRET_DIR:-$HOME}/.oxray-$SLURM_JOB_ID.secret"
(umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$secret")
steps=()
cleanup() {
  kill "${steps[@]}" 2>/dev/null || true
  wait || true
  rm -f "$secret"
}
trap cleanup EXIT

head_ip=$(srun --nodes=1 --ntasks=1 -w "$head" hostname --ip-address | awk '{print $1}')

# One job step per node, kept in the foreground (--block) so Slurm tracks it and ends it with
# the job. Members advertise the address their packets to the head leave from.
srun --nodes=1 --ntasks=1 -w "$head" "$oxray" start --head --block --port "$port" \
  --node-ip-address "$head_ip" --num-cpus "$cpus" --secret-file "$secret" \
  --session "$session-$head" &
steps+=($!)
for node in "${nodes[@]:1}"; do
  srun --nodes=1 --ntasks=1 -w "$node" "$oxray" start --block --address "$head_ip:$port" \
    --num-cpus "$cpus" --secret-file "$secret" --session "$session-$node" &
  steps+=($!)
done

# This script runs on the first node, next to the head.
"$oxray" wait --address "unix:@$session-$head" --nodes "${#nodes[@]}" --timeout 120
OXRAY_ADDRESS="unix:@$session-$head" "$@"
