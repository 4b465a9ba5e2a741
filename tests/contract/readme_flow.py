"""The README's flow, through a client generated from order-service's OpenAPI document by
openapi-python-client (tests/e2e/contract.rs generates it, then runs this): place an order
(and retry it with the same Idempotency-Key), read it until confirmed, list the customer's
orders, cancel it, read it cancelled — proof that the contract is usable, not only valid.

Usage: python readme_flow.py BASE_URL SKU  (the SKU must have stock). Exits non-zero on the
first step that does not go as the document says.
"""

import sys
import time
import uuid

from orderflow_order_service_client import Client
from orderflow_order_service_client.api.orders import cancel_order, create_order, get_order, list_orders
from orderflow_order_service_client.models import (
    Accepted,
    CreateOrder,
    CreateOrderCurrency,
    OrderLine,
    OrderPage,
    OrderView,
    Status,
)

PATIENCE_SECONDS = 30


def main(base_url: str, sku: str) -> None:
    # Undocumented statuses raise: the client knows only what the document says.
    client = Client(base_url=base_url, raise_on_unexpected_status=True)
    customer = f"readme-{uuid.uuid4().hex[:8]}"
    order = CreateOrder(
        customer_id=customer,
        currency=CreateOrderCurrency.EUR,
        items=[OrderLine(sku=sku, quantity=2, unit_price_cents=1250)],
    )
    key = str(uuid.uuid4())

    placed = create_order.sync_detailed(client=client, body=order, idempotency_key=key)
    assert placed.status_code == 202, placed
    assert isinstance(placed.parsed, Accepted), placed.parsed
    order_id = placed.parsed.order_id
    assert placed.headers["location"] == f"/v1/orders/{order_id}", placed.headers
    print(f"placed {order_id}: {placed.parsed.status}")

    retried = create_order.sync_detailed(client=client, body=order, idempotency_key=key)
    assert retried.status_code == 202 and isinstance(retried.parsed, Accepted), retried
    assert retried.parsed.order_id == order_id, "a retry with the same key made another order"
    assert retried.headers["idempotent-replayed"] == "true", retried.headers

    deadline = time.monotonic() + PATIENCE_SECONDS
    while True:
        view = get_order.sync(order_id=order_id, client=client)
        assert isinstance(view, OrderView), view
        if view.status == Status.CONFIRMED:
            break
        assert time.monotonic() < deadline, f"not confirmed within {PATIENCE_SECONDS} s: {view.status}"
        time.sleep(0.05)
    assert view.total_cents == 2500 and view.items[0].sku == sku, view
    print(f"confirmed, total {view.total_cents} {view.currency}")

    page = list_orders.sync(client=client, customer_id=customer, limit=10)
    assert isinstance(page, OrderPage), page
    assert [o.order_id for o in page.orders] == [order_id], page

    cancelled = cancel_order.sync(order_id=order_id, client=client)
    assert isinstance(cancelled, Accepted) and cancelled.status == Status.CANCELLED, cancelled
    view = get_order.sync(order_id=order_id, client=client)
    assert isinstance(view, OrderView) and view.status == Status.CANCELLED, view
    print("cancelled; history:", ", ".join(str(t.status) for t in view.history))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
