#!/usr/bin/env python3
"""Generates JSON-lines orders and remembers each item's exact text.

usage: orders.py COUNT ITEMS OUT.jsonl EXPECTED.json [PREFIX]
Items vary in shape (objects, strings with unicode and escapes, numbers,
nested arrays) so byte-for-byte delivery is really tested.
"""
import json
import random
import sys

count, items, out_path, expected_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
prefix = sys.argv[5] if len(sys.argv) > 5 else "order"
rng = random.Random(20261121)
shapes = [
    lambda n, i: json.dumps({"sku": f"SKU-{n}-{i}", "qty": rng.randint(1, 9), "price": rng.random() * 100}),
    lambda n, i: json.dumps(f"ünïcode ✓ \"quoted\" \\ line\n{n}-{i}", ensure_ascii=False),
    lambda n, i: f"  {rng.randint(-10**12, 10**12)}.50 ".strip(),
    lambda n, i: json.dumps([[n, i], {"nested": {"deep": [True, None, False]}}], separators=(",", ":")),
    lambda n, i: '{"spaced" :  [1 , 2] }',
]
expected = {}
with open(out_path, "w", encoding="utf-8") as out:
    for n in range(count):
        order_id = f"{prefix}-{n}" if n % 7 else f"{prefix}/{n} needs escaping"
        raws = [shapes[(n + i) % len(shapes)](n, i) for i in range(items)]
        out.write('{"id": ' + json.dumps(order_id) + ', "items": [' + ", ".join(raws) + "]}\n")
        expected[order_id] = raws
with open(expected_path, "w", encoding="utf-8") as f:
    json.dump(expected, f, ensure_ascii=False)
