-- One known value per key of the catalog's key ring, sealed with that key by the first
-- process that sealed a destination with it. A process whose ring holds a key of that id
-- but other material cannot open it: it then knows its key is wrong, not the rows, and
-- does not load (rather than refuse every row sealed with that key, one by one, and skip
-- their events). Keys used before this table existed have no check.
CREATE TABLE hookflow_catalog_keys (
    key_id      TEXT        PRIMARY KEY,
    check_value BYTEA       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
