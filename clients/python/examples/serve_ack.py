"""A trivial --serve handler: acknowledges every order.

    orderly-worker run --id w1 --serve "python3 examples/serve_ack.py"
"""

import orderly


def handle(order: orderly.Order) -> None:
    pass  # returning acknowledges the order


if __name__ == "__main__":
    orderly.serve(handle)
