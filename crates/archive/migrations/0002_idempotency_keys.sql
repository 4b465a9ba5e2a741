-- The Idempotency-Key (hashed) an order was created with: a retry that comes after the key's
-- claim in NATS has expired still finds the order it made. Not unique: a retry during an
-- outage of the archive may have made a second order, which must still be archived.
ALTER TABLE orders ADD COLUMN idempotency_key text;

CREATE INDEX orders_by_idempotency_key ON orders (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
