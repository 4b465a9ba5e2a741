"""Schemathesis hooks for orderflow's contract tests (tests/e2e/contract.rs): the two rules the
OpenAPI documents state in words because JSON Schema cannot state them.

- An order names each SKU on one line only: generated orders with a repeated SKU are dropped
  (the API answers them 422, which the document lists).
- An Idempotency-Key names one request: a generated key is made unique per request, else the
  fuzzer's favourite values ("0", "a") would be replayed with other bodies and answered 422
  `idempotency-key-reused`, as the document says. The e2e tests cover reuse.
"""

import re
import uuid

import schemathesis

KEY = re.compile(r"^[!-~]{1,255}$")


@schemathesis.hook
def filter_body(ctx, body):
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return True
    skus = [line.get("sku") for line in items if isinstance(line, dict)]
    return len(skus) == len(set(map(repr, skus)))


@schemathesis.hook
def map_headers(ctx, headers):
    key = (headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and KEY.match(key):
        headers["Idempotency-Key"] = f"{key[:200]}-{uuid.uuid4()}"
    return headers
