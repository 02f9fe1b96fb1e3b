#!/usr/bin/env python3
"""Waits, in one process, until a broker's /status counter reaches a value.

    await_status.py --counter NAME --at-least N [--interval S] [--timeout S]
                    [--watch PID]... ADMIN...

Polls GET /status of the serving broker among ADMIN (host:port; with several,
a group's members: the one whose `group.role` is `leader`) every S seconds
(default 0.5) until `counters.NAME` >= N or T seconds pass (default 600).
Prints one JSON object: the admin address it read, the counter, the broker's
`last_ack_unix_ms` (null from a broker older than 0.5 or before any ack), the
poll's own Unix time (`seen_unix_ms`) and whether the value was reached; exits
1 if it was not.

--watch PID (repeatable): a process the run needs (a broker, a worker). Once
one has exited (gone, or a zombie its parent has not reaped) the wait ends at
once, instead of after the timeout, and the JSON's `exited` lists those PIDs:
the counter will not reach N.

Why not `orderly-broker status` in a shell loop: on a two-core machine a
process start and two greps per poll (~9.5 ms of CPU) took up to a fifth of a
core from the run being measured. One long-lived process and an HTTP request
per poll cost well under a millisecond each; and the run's end is the
broker's own last-ack time, so the poll interval does not blur it.
"""

import argparse
import http.client
import json
import sys
import time

# One request's bound: a loopback admin endpoint answers in milliseconds; a
# broker that does not is counted as not answering this round.
REQUEST_TIMEOUT_S = 2.0


def status_of(admin):
    """The broker's /status as a dict, or None if it does not answer."""
    host, _, port = admin.rpartition(":")
    try:
        conn = http.client.HTTPConnection(host, int(port), timeout=REQUEST_TIMEOUT_S)
        try:
            conn.request("GET", "/status")
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        return json.loads(body) if response.status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None


def exited(pid):
    """Whether process PID has ended: no /proc entry, or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The state follows the command, which is in parentheses and may
            # itself hold spaces or parentheses.
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def serving(status):
    """A single broker serves; a group member serves if it leads."""
    group = status.get("group")
    return group is None or group.get("role") == "leader"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counter", required=True)
    parser.add_argument("--at-least", type=int, required=True)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--watch", type=int, action="append", default=[], metavar="PID")
    parser.add_argument("admins", nargs="+", metavar="ADMIN")
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    admin, last, gone = args.admins[0], None, []
    while True:
        status = status_of(admin)
        if status is None or not serving(status):
            # The leader may have changed (or not be known yet): look again.
            for other in args.admins:
                status = status_of(other)
                if status is not None and serving(status):
                    admin = other
                    break
            else:
                status = None
        if status is not None:
            value = status["counters"].get(args.counter, 0)
            last = {
                "admin": admin,
                "counter": args.counter,
                "value": value,
                "last_ack_unix_ms": status.get("last_ack_unix_ms"),
                "seen_unix_ms": int(time.time() * 1000),
                "reached": value >= args.at_least,
            }
            if last["reached"]:
                break
        gone = [pid for pid in args.watch if exited(pid)]
        if gone or time.monotonic() >= deadline:
            break
        time.sleep(args.interval)
    if last is None:
        last = {"admin": None, "counter": args.counter, "value": 0, "last_ack_unix_ms": None,
                "seen_unix_ms": int(time.time() * 1000), "reached": False}
    last["exited"] = [] if last["reached"] else gone
    json.dump(last, sys.stdout)
    print()
    return 0 if last["reached"] else 1


if __name__ == "__main__":
    sys.exit(main())
