#!/usr/bin/env bash
# Separate network hosts on one machine, for trying orderly across a real
# network and for the cluster tests (tests/netns/).
#
#   deploy/netns-cluster.sh up [--brokers 3]   # create the hosts, print their addresses
#   deploy/netns-cluster.sh exec HOST CMD...   # run CMD on HOST (in its namespace)
#   deploy/netns-cluster.sh addr HOST          # HOST's address
#   deploy/netns-cluster.sh ns HOST            # HOST's namespace name
#   deploy/netns-cluster.sh port HOST          # HOST's port on the switch (a link in the "switch" host)
#   deploy/netns-cluster.sh status             # the hosts that exist, with addresses
#   deploy/netns-cluster.sh down               # stop what runs on the hosts, remove everything
#
# Hosts: broker, w1, w2, w3 (workers), p1, p2 (producers), each a network
# namespace with one interface eth0 and its own address in
# $ORDERLY_NETNS_SUBNET.0/24, and "switch": a namespace of its own holding
# the bridge br0 that every host's veth pair plugs into. Nothing is created
# in the root namespace (veth pairs are created directly inside the switch
# and host namespaces), so the cluster cannot reach the real network and two
# clusters never share a link name.
#
# With `up --brokers 3` (or ORDERLY_NETNS_BROKERS=3) two more broker hosts,
# b2 and b3, join the switch: the hosts of a broker group of three
# (docs/REPLICATION.md), "broker" being the first. Without it nothing
# changes. The other commands find b2 and b3 when they exist.
#
# Environment:
#   ORDERLY_NETNS_PREFIX  namespace names are PREFIX-HOST (default "orderly");
#                         use a unique prefix per run to run clusters side by side
#   ORDERLY_NETNS_SUBNET  first three octets (default 198.18.0: the benchmarking
#                         range of RFC 2544, never routed on the Internet)
#   ORDERLY_NETNS_BROKERS broker hosts `up` creates: 1 (default) or 3
#
# Addresses: switch .1 (on br0, for `exec switch ping`), broker .10,
# b2 .11, b3 .12 (with --brokers 3), w1 .21, w2 .22, w3 .23, p1 .31, p2 .32.
#
# Needs root and iproute2 (`ip netns`). `down` terminates every process
# still running in the cluster's namespaces (by PID, TERM then KILL): they
# can only have been started there through this cluster.
set -euo pipefail

PREFIX=${ORDERLY_NETNS_PREFIX:-orderly}
SUBNET=${ORDERLY_NETNS_SUBNET:-198.18.0}
HOSTS=(broker w1 w2 w3 p1 p2)
# Broker hosts beyond the first, created only by `up --brokers 3`.
EXTRA_BROKERS=(b2 b3)
ALL_HOSTS=(broker "${EXTRA_BROKERS[@]}" "${HOSTS[@]:1}")

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

die() {
    echo "netns-cluster: $*" >&2
    exit 1
}

# host_octet HOST: the last octet of HOST's address.
host_octet() {
    case $1 in
        switch) echo 1 ;;
        broker) echo 10 ;;
        b2) echo 11 ;;
        b3) echo 12 ;;
        w1) echo 21 ;;
        w2) echo 22 ;;
        w3) echo 23 ;;
        p1) echo 31 ;;
        p2) echo 32 ;;
        *) die "unknown host '$1' (hosts: switch ${ALL_HOSTS[*]})" ;;
    esac
}

ns_of() {
    host_octet "$1" >/dev/null
    echo "$PREFIX-$1"
}

addr_of() {
    local octet
    octet=$(host_octet "$1")
    echo "$SUBNET.$octet"
}

# The switch-side end of HOST's veth pair (inside the switch namespace).
port_of() {
    host_octet "$1" >/dev/null
    [ "$1" != switch ] || die "the switch has no port of its own"
    echo "port-$1"
}

ns_exists() {
    [ -e "/run/netns/$1" ]
}

# in_ns NS CMD...: CMD in namespace NS, quietly.
in_ns() {
    ip netns exec "$@"
}

check_prereqs() {
    [ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
    command -v ip >/dev/null 2>&1 || die "needs iproute2 (apt-get install iproute2)"
    [[ $PREFIX =~ ^[A-Za-z0-9_.-]{1,40}$ ]] || die "ORDERLY_NETNS_PREFIX must be 1-40 of [A-Za-z0-9_.-]"
    [[ $SUBNET =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "ORDERLY_NETNS_SUBNET must look like 198.18.0"
}

# quiet_sysctls NS: no IPv6 (no router solicitations, no DAD delays): the
# cluster speaks IPv4 only, so captures and counters show only our traffic.
quiet_sysctls() {
    in_ns "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 >/dev/null 2>&1 || true
    in_ns "$1" sysctl -qw net.ipv6.conf.default.disable_ipv6=1 >/dev/null 2>&1 || true
}

up() {
    local sw host ns brokers=${ORDERLY_NETNS_BROKERS:-1} hosts
    while [ $# -gt 0 ]; do
        case $1 in
            --brokers) [ $# -ge 2 ] || usage; brokers=$2; shift 2 ;;
            --brokers=*) brokers=${1#--brokers=}; shift ;;
            *) usage ;;
        esac
    done
    case $brokers in
        1) hosts=("${HOSTS[@]}") ;;
        3) hosts=("${ALL_HOSTS[@]}") ;;
        *) die "--brokers must be 1 or 3 (a group has 3 members), not '$brokers'" ;;
    esac
    sw=$(ns_of switch)
    for host in switch "${ALL_HOSTS[@]}"; do
        ! ns_exists "$(ns_of "$host")" || die "namespace $(ns_of "$host") exists already (run: ORDERLY_NETNS_PREFIX=$PREFIX $0 down)"
    done
    # Half-built clusters are removed on any failure below.
    trap undo_failed_up EXIT

    ip netns add "$sw"
    quiet_sysctls "$sw"
    ip -n "$sw" link set lo up
    ip -n "$sw" link add br0 type bridge
    ip -n "$sw" addr add "$(addr_of switch)/24" dev br0
    ip -n "$sw" link set br0 up
    for host in "${hosts[@]}"; do
        ns=$(ns_of "$host")
        ip netns add "$ns"
        quiet_sysctls "$ns"
        ip -n "$ns" link set lo up
        # Both ends are born outside the root namespace: the switch end in
        # the switch, the host end (eth0) in the host.
        ip -n "$sw" link add "$(port_of "$host")" type veth peer name eth0 netns "$ns"
        ip -n "$sw" link set "$(port_of "$host")" master br0 up
        ip -n "$ns" addr add "$(addr_of "$host")/24" dev eth0
        ip -n "$ns" link set eth0 up
    done
    trap - EXIT
    status
}

undo_failed_up() {
    local rc=$?
    [ "$rc" = 0 ] && return
    echo "netns-cluster: up failed, removing what was created" >&2
    down >/dev/null 2>&1 || true
}

status() {
    local host ns
    printf '%-7s %-15s %s\n' HOST ADDRESS NAMESPACE
    for host in switch "${ALL_HOSTS[@]}"; do
        ns=$(ns_of "$host")
        ns_exists "$ns" || continue
        printf '%-7s %-15s %s\n' "$host" "$(addr_of "$host")" "$ns"
    done
}

# stop_processes NS: TERM, then KILL, every process in NS, by PID.
stop_processes() {
    local ns=$1 pids
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -n "$pids" ] || return 0
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 1 30); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -n "$pids" ] || return 0
        sleep 0.1
    done
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
}

down() {
    local host ns
    for host in "${ALL_HOSTS[@]}" switch; do
        ns=$(ns_of "$host")
        ns_exists "$ns" || continue
        stop_processes "$ns"
        # Deleting a namespace deletes its interfaces, and a veth pair goes
        # with either end: nothing is left behind.
        ip netns delete "$ns" || echo "netns-cluster: could not delete $ns" >&2
    done
}

cmd=${1:-}
[ -n "$cmd" ] || usage
shift
case $cmd in
    up) check_prereqs; up "$@" ;;
    down) check_prereqs; down ;;
    status) status ;;
    addr) [ $# -eq 1 ] || usage; addr_of "$1" ;;
    ns) [ $# -eq 1 ] || usage; ns_of "$1" ;;
    port) [ $# -eq 1 ] || usage; port_of "$1" ;;
    exec)
        [ $# -ge 2 ] || usage
        check_prereqs
        ns=$(ns_of "$1")
        shift
        ns_exists "$ns" || die "no namespace $ns (run: ORDERLY_NETNS_PREFIX=$PREFIX $0 up)"
        exec ip netns exec "$ns" "$@"
        ;;
    -h | --help | help) usage ;;
    *) usage ;;
esac
