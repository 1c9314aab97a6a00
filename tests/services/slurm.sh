#!/usr/bin/env bash
# A private single-node Slurm for the tests: munged + slurmctld + slurmd on this host, loopback only.
#
#   tests/services/slurm.sh start [DIR]   # writes DIR/slurm.conf, starts the daemons, waits for the node
#   tests/services/slurm.sh stop  [DIR]   # stops them (by their pid files) and removes DIR
#
# DIR defaults to /tmp/studybench-slurm. Clients find the cluster through SLURM_CONF=DIR/slurm.conf
# (printed by `start`); nothing under /etc is changed. Needs root (slurmd starts jobs as their user)
# and Debian's slurm-wlm and munge packages. Daemons bind to 127.0.0.1 (NoInAddrAny/NoCtldInAddrAny).
# cred_expire=10: a requeued job may start again after 10 s (Slurm's default is 120 s).
# sched_interval=1/bf_interval=1: a job that becomes eligible without an event (a requeued job
# once its begin time passes) starts within a second, not at the next 60 s main scheduling pass.
# The node declares one CPU more than the host has (config_overrides lets slurmd accept that): the
# tests' one-CPU jobs (a time-limited one and a 2-task array) all run at once, none waits for a CPU.
set -euo pipefail

action=${1:?usage: slurm.sh start|stop [DIR]}
dir=${2:-/tmp/studybench-slurm}
node=$(hostname -s)

stop_pidfiles() {  # stop_pidfiles FILE...: TERM the daemons in FILEs at once, KILL those left after 5 s
    local file pid pids=()
    for file in "$@"; do
        [[ -s $file ]] || continue
        pid=$(cat "$file")
        kill "$pid" 2>/dev/null && pids+=("$pid")
    done
    for _ in $(seq 50); do
        local alive=()
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
        ((${#alive[@]})) || return 0
        pids=("${alive[@]}")
        sleep 0.1
    done
    kill -9 "${pids[@]}" 2>/dev/null || true
}

if [[ $action == stop ]]; then
    export SLURM_CONF=$dir/slurm.conf
    [[ -f $SLURM_CONF ]] && scancel --quiet --user="$(id -un)" 2>/dev/null || true
    stop_pidfiles "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munged.pid"
    rm -rf "$dir"
    exit 0
fi
[[ $action == start ]] || { echo "usage: slurm.sh start|stop [DIR]" >&2; exit 2; }
for cmd in munged slurmctld slurmd sinfo; do
    command -v "$cmd" >/dev/null || { echo "$cmd not found: apt-get install slurm-wlm munge" >&2; exit 3; }
done

mkdir -p "$dir"/{munge,state,spool,log}
chmod 700 "$dir/munge"
# a key of our own: no dependency on (or change to) the system's /etc/munge
[[ -f $dir/munge/munge.key ]] || dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$dir/munge/munge.key"
socket=$dir/munge/munge.socket
munged --force --key-file="$dir/munge/munge.key" --socket="$socket" --pid-file="$dir/munged.pid" \
    --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munge.seed"

cpus=$(( $(nproc) + 1 ))
mem_mb=$(( $(free -m | awk '/^Mem:/ {print $2}') * 9 / 10 ))
cat > "$dir/slurm.conf" <<CONF
ClusterName=studybench
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$socket,cred_expire=10
CredType=cred/munge
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmctldPort=6817
SlurmdPort=6818
SrunPortRange=60001-60100
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
KillWait=5
MinJobAge=300
InactiveLimit=0
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$dir/slurm.conf
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 100); do  # up to 20 s for the node to register
    if sinfo --noheader --Node --format=%T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
        echo "SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.2
done
echo "slurm did not come up; logs:" >&2
tail -n 20 "$dir"/log/*.log >&2
exit 1
