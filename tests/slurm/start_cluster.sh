#!/usr/bin/env bash
# Start a one-node SLURM cluster on localhost (Debian's slurm-wlm 22.05): munge, MariaDB, slurmdbd (so `sacct`,
# which snakemake-executor-plugin-slurm uses for job status, works), slurmctld and slurmd. Idempotent: a cluster
# that already answers is left alone. Needs root and the packages slurm-wlm slurmdbd mariadb-server munge
# (`install` installs them). Usage: start_cluster.sh [install]
set -euo pipefail

log() { echo "start_cluster: $*" >&2; }

if [ "${1:-}" = "install" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm slurmdbd mariadb-server munge >/dev/null
fi

for tool in slurmctld slurmd slurmdbd munged mysqld_safe sinfo; do
    command -v "$tool" >/dev/null || { log "missing $tool (run: $0 install)"; exit 3; }
done

if sinfo -h -o "%T" 2>/dev/null | grep -qE "idle|mixed|allocated"; then
    log "cluster already up"
    exit 0
fi

HOST=$(hostname)
CPUS=$(nproc)
MEMORY_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048 ))
DB_PASSWORD=vb2p-test-only

# munge: shared-secret authentication between the daemons.
mkdir -p /etc/munge /var/log/munge /run/munge /var/lib/munge
[ -s /etc/munge/munge.key ] || mungekey --create --force
chown -R munge:munge /etc/munge /var/log/munge /run/munge /var/lib/munge 2>/dev/null || true
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- munged --force 2>/dev/null || munged --force

# MariaDB: the accounting database behind slurmdbd.
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
if ! mysqladmin ping --silent 2>/dev/null; then
    (mysqld_safe --user=mysql >/var/log/mysqld_safe.log 2>&1 &)
    for _ in $(seq 60); do mysqladmin ping --silent 2>/dev/null && break; sleep 1; done
fi
mysql -u root <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '${DB_PASSWORD}';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
cat >/etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=${DB_PASSWORD}
StorageLoc=slurm_acct_db
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurm/slurmdbd.pid
CONF
chmod 600 /etc/slurm/slurmdbd.conf

# One node, no cgroups (containers rarely delegate them): processes are tracked through /proc.
cat >/etc/slurm/slurm.conf <<CONF
ClusterName=vb2p
SlurmctldHost=${HOST}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
NodeName=${HOST} NodeHostname=${HOST} CPUs=${CPUS} RealMemory=${MEMORY_MB} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

pgrep -x slurmdbd >/dev/null || slurmdbd
for _ in $(seq 30); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 1; done
sacctmgr -i add cluster vb2p >/dev/null 2>&1 || true
sacctmgr -i add account vb2p Cluster=vb2p >/dev/null 2>&1 || true
sacctmgr -i add user root Account=vb2p DefaultAccount=vb2p >/dev/null 2>&1 || true
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd -N "${HOST}"
for _ in $(seq 60); do
    if sinfo -h -o "%T" 2>/dev/null | grep -qE "idle|mixed|allocated"; then
        scontrol update NodeName="${HOST}" State=RESUME >/dev/null 2>&1 || true
        log "cluster up: $(sinfo -h -o '%P %D %T %c CPUs %m MB')"
        exit 0
    fi
    sleep 1
done
log "the node did not come up; logs in /var/log/slurm"
sinfo >&2 || true
exit 4
