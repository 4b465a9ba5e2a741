-- The read model of every order: one row per order, written by order-service's projection
-- from the order's events, read by the API once the events have left the hot log.
--
-- `snapshot` is the order as its events folded it (what was ordered, its status, its history
-- with the events that caused each step); the other columns repeat what queries select on.
-- Order ids are UUID v7, so their order is the order of placement: a customer's newest orders
-- are an index range, and retention deletes a prefix of the primary key.
CREATE TABLE orders (
    order_id    uuid        PRIMARY KEY,
    customer_id text        NOT NULL,
    status      text        NOT NULL,
    placed_at   timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    snapshot    jsonb       NOT NULL
);

CREATE INDEX orders_by_customer ON orders (customer_id, order_id DESC);
