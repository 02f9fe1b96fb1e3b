# Shared by the benchmark scripts (sourced, with BIN set to the binaries'
# directory): free ports, the broker's acked count, and stopping a run's
# processes.

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# acked_of ADMIN: the orders_acked counter of the broker at ADMIN (nothing
# if it does not answer). A small binary and a grep, not a Python start: on
# two cores a heavier poll would itself slow the run.
acked_of() {
    "$BIN/orderly-broker" status --admin "$1" --json 2>/dev/null | grep -o '"orders_acked": [0-9]*' |
        grep -o '[0-9]*$' || true
}

# The current run's processes and directory, stopped and removed when the
# run ends and when the script does (also on SIGINT or SIGTERM: background
# jobs of a script ignore SIGINT, so they are killed by their PIDs).
RUN_PIDS=() RUN_WORK=
# Brokers and workers stop at once on SIGTERM; an interrupted producer waits
# for confirms that will not come, so what still runs after this is killed.
STOP_GRACE_S=5
stop_run() {
    local pid deadline=$((SECONDS + STOP_GRACE_S))
    [ ${#RUN_PIDS[@]} -eq 0 ] || kill "${RUN_PIDS[@]}" 2>/dev/null || true
    for pid in "${RUN_PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    [ ${#RUN_PIDS[@]} -eq 0 ] || wait "${RUN_PIDS[@]}" 2>/dev/null || true
    [ -z "$RUN_WORK" ] || rm -rf "$RUN_WORK"
    RUN_PIDS=() RUN_WORK=
}
