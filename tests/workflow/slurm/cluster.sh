#!/usr/bin/env bash
# A real single-node SLURM on localhost for the test suite.
#
#   cluster.sh install          apt-get install slurmctld slurmd slurm-client munge (as root)
#   cluster.sh start DIR        write DIR/slurm.conf, start munged, slurmctld, slurmd; wait for idle
#   cluster.sh stop DIR         stop the daemons by the PIDs recorded in DIR
#
# The submit host's clients find the config through SLURM_CONF=DIR/slurm.conf (export it
# yourself); clients inside jobs use slurmd's cached copy in /run/slurm/conf (configless mode).
# The node has nproc CPUs, 80 % of the memory, one fake GPU (gres on /dev/null, so jobs asking
# for --gpus=1 or --gres=gpu:1 get CUDA_VISIBLE_DEVICES=0) and two partitions, "cpu" (default)
# and "gpu", named like the placeholders in profiles/slurm. Everything listens on 127.0.0.1 only.
# Facts behind these settings: see docs/cluster.md.
set -euo pipefail

cmd=${1:?usage: cluster.sh install|start DIR|stop DIR}

install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null && command -v munged >/dev/null; then
    return 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

start() {
  dir=$(realpath -m "${1:?cluster.sh start DIR}")
  mkdir -p "$dir"/{state,spool}
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)

  # munge: our own key in /run/munge/pixelrobust (DIR may sit below a folder the munge user
  # cannot enter), and munge's standard socket /run/munge/munge.socket.2 (slurmd in configless
  # mode authenticates before it has read any config, so it can only use the default socket)
  munge_dir=/run/munge/pixelrobust
  mkdir -p "$munge_dir" && chown munge:munge /run/munge "$munge_dir" && chmod 700 "$munge_dir"
  if [ ! -f "$munge_dir/munge.key" ]; then
    dd if=/dev/urandom of="$munge_dir/munge.key" bs=1024 count=1 status=none
    chown munge:munge "$munge_dir/munge.key"; chmod 400 "$munge_dir/munge.key"
  fi
  runuser -u munge -- munged --key-file="$munge_dir/munge.key" --pid-file="$munge_dir/munged.pid" \
    --log-file="$munge_dir/munged.log" --seed-file="$munge_dir/munged.seed" --force
  for _ in $(seq 50); do [ -s "$munge_dir/munged.pid" ] && break; sleep 0.1; done
  cp "$munge_dir/munged.pid" "$dir/munged.daemon-pid"

  cat >"$dir/slurm.conf" <<CONF
ClusterName=pixelrobust
SlurmctldHost=$host(127.0.0.1)
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MinJobAge=600
ReturnToService=2
MpiDefault=none
SlurmctldParameters=enable_configless
SlurmdParameters=config_overrides
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.log
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host MaxTime=INFINITE State=UP
CONF
  cat >"$dir/gres.conf" <<CONF
AutoDetect=off
NodeName=$host Name=gpu File=/dev/null
CONF
  export SLURM_CONF="$dir/slurm.conf"
  slurmctld -D -i -f "$dir/slurm.conf" >"$dir/slurmctld.out" 2>&1 &
  echo $! >"$dir/slurmctld.daemon-pid"
  # slurmd fetches the config from slurmctld ("configless") and caches it in /run/slurm/conf,
  # where srun inside a job finds it: snakemake's jobstep plugin strips SLURM_CONF from the
  # nested srun's environment.
  mkdir -p /run/slurm
  for _ in $(seq 50); do [ -s "$dir/slurmctld.pid" ] && break; sleep 0.1; done
  slurmd -D --conf-server 127.0.0.1 >"$dir/slurmd.out" 2>&1 &
  echo $! >"$dir/slurmd.daemon-pid"
  for _ in $(seq 120); do
    for d in slurmctld slurmd; do
      if ! kill -0 "$(cat "$dir/$d.daemon-pid")" 2>/dev/null; then
        echo "cluster.sh: $d exited during start-up:" >&2
        tail -n 20 "$dir/$d.out" >&2
        stop "$dir"
        return 1
      fi
    done
    if sinfo -h -N -o "%t" 2>/dev/null | grep -qx "idle"; then
      echo "cluster.sh: node $host idle ($cpus CPUs, ${mem} MB, gpu:1) after $SECONDS s"
      return 0
    fi
    sleep 0.5
  done
  echo "cluster.sh: the node did not become idle; logs in $dir" >&2
  tail -n 20 "$dir"/slurmctld.log "$dir"/slurmd.log "$dir"/*.out >&2 || true
  return 1
}

stop() {
  dir=$(realpath -m "${1:?cluster.sh stop DIR}")
  for f in slurmd.daemon-pid slurmctld.daemon-pid munged.daemon-pid; do
    if [ -s "$dir/$f" ]; then
      pid=$(cat "$dir/$f")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/$f"
    fi
  done
}

case "$cmd" in
  install) install ;;
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: cluster.sh install|start DIR|stop DIR" >&2; exit 2 ;;
esac
