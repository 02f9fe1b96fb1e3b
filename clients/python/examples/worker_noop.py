"""A trivial Worker: acknowledges every order (for benchmarks and smoke tests).

    python3 examples/worker_noop.py --id w1 --fanout tcp://127.0.0.1:5571 \
        --control tcp://127.0.0.1:5572 --concurrency 16
"""

import argparse

import orderly


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--id", required=True, help="worker id (1-64 of A-Za-z0-9._-)")
    parser.add_argument("--fanout", help="the broker's fanout endpoint")
    parser.add_argument("--control", help="the broker's control endpoint")
    parser.add_argument("--group", help="a broker group file instead of --fanout/--control")
    parser.add_argument("--concurrency", type=int, default=1)
    # The handler is trivial, so by default it runs in the socket thread
    # (inline=True, the fastest); --threads runs it in the pool of
    # `concurrency` threads, as a handler that blocks must.
    parser.add_argument("--threads", action="store_true", help="run the handler in a pool of --concurrency threads")
    parser.add_argument("--inline", action="store_true", help="(the default) run the handler in the socket thread")
    args = parser.parse_args()
    worker = orderly.Worker(
        args.id, args.fanout, args.control, handler=lambda order: None, concurrency=args.concurrency,
        group=args.group, inline=not args.threads,
    )
    worker.run()


if __name__ == "__main__":
    main()
