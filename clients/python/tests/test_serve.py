"""orderly.serve through a real subprocess's stdin/stdout, and the
`orderly-worker run --serve` integration (needs a worker with --serve)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
import time

import orderly
import pytest
from conftest import EXAMPLES, binary, wait_for

HANDLER = textwrap.dedent(
    """
    import json, sys, orderly
    def handle(order):
        first = order.items[0] if order.items else b""
        if first == b'"retry"':
            raise orderly.Retry(delay=2.5, reason="later")
        if first == b'"fatal"':
            raise orderly.Fatal("no such sku")
        if first == b'"boom"':
            raise ValueError("boom")
        if order.id.startswith("echo"):
            # Items back to the test, exactly: hex in the reason.
            raise orderly.Fatal(json.dumps([i.hex() for i in order.items]))
    orderly.serve(handle, threads=int(sys.argv[1]))
    """
)


def order_line(order_id, items_raw, base64_items=None, attempt=1) -> bytes:
    line = (
        '{"producer":"p1","id":' + json.dumps(order_id) + f',"attempt":{attempt},"redelivered":'
        + ("true" if attempt > 1 else "false") + ',"items":[' + ",".join(items_raw) + "]"
    )
    if base64_items is not None:
        line += ',"base64_items":' + json.dumps(base64_items)
    return (line + "}\n").encode()


@pytest.mark.parametrize("threads", [0, 4])
def test_serve_answers_over_pipes(tmp_path, threads):
    script = tmp_path / "handler.py"
    script.write_text(HANDLER)
    raw = b"\x00\xff not json"
    lines = [
        order_line("a1", ['{"n":1}']),
        order_line("r1", ['"retry"'], attempt=2),
        order_line("f1", ['"fatal"']),
        order_line("b1", ['"boom"']),
        order_line("echo1", ['{"spaced" :  [1 , 2] }', ' "ünï✓" ', '{"base64":"' + base64.b64encode(raw).decode() + '"}',
                             '{"base64":"aGk="}'], base64_items=[2]),
        order_line("echo2", []),
    ]
    stream = b"".join(lines) + b"this is not an order\n"
    proc = subprocess.Popen([sys.executable, str(script), str(threads)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # In two writes cut mid-line: serve must join the pieces.
        proc.stdin.write(stream[:100])
        proc.stdin.flush()
        time.sleep(0.1)
        out, err = proc.communicate(input=stream[100:], timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    answers = {a["id"]: a for a in map(json.loads, out.decode().splitlines())}
    assert set(answers) == {"a1", "r1", "f1", "b1", "echo1", "echo2"}
    assert answers["a1"] == {"producer": "p1", "id": "a1", "result": "ack"}
    assert answers["r1"] == {"producer": "p1", "id": "r1", "result": "nack", "retry": True, "reason": "later",
                             "delay_ms": 2500}
    assert answers["f1"]["retry"] is False and answers["f1"]["reason"] == "no such sku"
    assert answers["b1"]["retry"] is True and "boom" in answers["b1"]["reason"]
    echoed = [bytes.fromhex(h) for h in json.loads(answers["echo1"]["reason"])]
    assert echoed == [b'{"spaced" :  [1 , 2] }', ' "ünï✓" '.encode(), raw, b'{"base64":"aGk="}']
    assert json.loads(answers["echo2"]["reason"]) == []
    assert b"not an order" in err


def test_parse_falls_back_for_other_layouts():
    from orderly.serve import parse_order_line

    order = parse_order_line('{ "id": "x", "producer": "p", "attempt": 3, "redelivered": true, "items": [ {"a" : 1} ] }')
    assert (order.producer, order.id, order.attempt, order.redelivered) == ("p", "x", 3, True)
    assert order.items == [b'{"a":1}']  # re-encoded compactly off the exact layout


def serve_supported() -> bool:
    help_text = subprocess.run([binary("orderly-worker"), "run", "--help"], capture_output=True, text=True).stdout
    return "--serve" in help_text


def test_worker_serve_runs_serve_ack(broker, procs, tmp_path):
    if not serve_supported():
        pytest.skip("this orderly-worker has no --serve yet (issue 17's Rust side)")
    command = f"{sys.executable} {EXAMPLES}/serve_ack.py"
    procs.start("serve-worker", [
        binary("orderly-worker"), "run", "--id", "sw", "--fanout", broker.fanout, "--control", broker.control,
        "--heartbeat-interval-ms", "200", "--concurrency", "8", "--serve", command,
    ])
    with orderly.Producer("p", broker.intake, broker.fanout) as producer:
        receipts = [producer.send(f"s{n}", [b'{"n": %d}' % n, b"\x00binary"]) for n in range(50)]
        for receipt in receipts:
            receipt.wait(timeout=10)
    wait_for("every order acked through serve_ack.py", lambda: broker.acked() == 50, timeout=20)
    assert broker.dlq() == []
