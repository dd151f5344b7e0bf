-- The destination catalog: one row per destination, unique per (team, id).
--
-- A row keeps its spec without secrets (`spec`, what an operator is shown) and its secrets
-- sealed with the catalog's key ring (`sealed`: the signing secrets, header values and the
-- full URL, AES-256-GCM, the key's id inside). Every write takes the next change sequence
-- under the lock of `hookflow_catalog_sequence`, so sequence order is commit order and a
-- reader that applied change N has every change before it. A delete keeps the row as a
-- tombstone (`deleted`) for the readers' feed; creating the id again reuses it with a new
-- uid. Each update keeps the version before it (`previous_*`), so a reader that cannot
-- read the current one keeps delivering with the last good one.
CREATE TABLE hookflow_destinations (
    team_id           BIGINT      NOT NULL,
    id                TEXT        NOT NULL,
    uid               UUID        NOT NULL UNIQUE,
    version           BIGINT      NOT NULL,
    change_seq        BIGINT      NOT NULL,
    deleted           BOOLEAN     NOT NULL DEFAULT false,
    spec              JSONB       NOT NULL,
    sealed            BYTEA       NOT NULL,
    previous_version  BIGINT,
    previous_spec     JSONB,
    previous_sealed   BYTEA,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, id)
);

CREATE INDEX hookflow_destinations_by_change ON hookflow_destinations (change_seq);

CREATE TABLE hookflow_catalog_sequence (
    one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    seq BIGINT  NOT NULL
);

INSERT INTO hookflow_catalog_sequence (seq) VALUES (0);
