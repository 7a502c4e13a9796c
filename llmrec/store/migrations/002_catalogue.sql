-- 002: the catalogue, PostgreSQL as its source of truth.
--
-- One row per item, keyed by an opaque string id the user chooses (e.g. 'mal:5114'). A row holds two
-- last-writer-wins registers, each with its version (event_time, event_id):
--   the body  (title, text, categories, attributes, vector, vector_source, content_hash, deleted),
--             written by an upsert or a delete; a delete clears the content and sets deleted, keeping
--             the row as a tombstone so that an older upsert arriving later cannot resurrect the item;
--   hidden,   written by a hide or an unhide (so it survives upserts and deletes).
-- A change writes its register only when its version is newer (event time, then event id), so any replay
-- or reordering of the same changes converges to one state. The rule is applied in Python by
-- llmrec.store.item_merge (event ids compare as Python strings, not under the database's collation).
-- event_time/event_id hold the newer of the two register versions: the row's version.
--
-- change_seq comes from one sequence and is bumped whenever a batch changes the row; the live index
-- follows the catalogue with "change_seq > cursor ORDER BY change_seq". Writers hold a transaction-level
-- advisory lock while they take values from the sequence, so values are committed in increasing order
-- and a reader never sees a value before a smaller one that is still to commit.
--
-- The vector is a pgvector `vector` when the extension is installed (001 tries to create it) and real[]
-- otherwise, like user_profiles.vector_sum; the store writes real[] and reads vector::real[].

CREATE SEQUENCE IF NOT EXISTS catalogue_change_seq;

DO $$
DECLARE
    vector_type text := CASE
        WHEN EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector') THEN 'vector'
        ELSE 'real[]'
    END;
BEGIN
    EXECUTE format($sql$
        CREATE TABLE IF NOT EXISTS catalogue_items (
            item_id           text PRIMARY KEY,
            title             text,
            text              text,
            categories        text[] NOT NULL DEFAULT '{}',
            attributes        jsonb NOT NULL DEFAULT '{}',
            vector            %s,
            -- 'user' for a vector the user supplied, else the encoder model's name.
            vector_source     text,
            -- SHA-256 of title, text and categories (llmrec.store.interface.item_content_hash).
            content_hash      text,
            hidden            boolean NOT NULL DEFAULT false,
            deleted           boolean NOT NULL DEFAULT false,
            body_event_time   timestamptz,
            body_event_id     text,
            hidden_event_time timestamptz,
            hidden_event_id   text,
            event_time        timestamptz NOT NULL,
            event_id          text NOT NULL,
            change_seq        bigint NOT NULL DEFAULT nextval('catalogue_change_seq'),
            updated_at        timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT catalogue_items_versioned
                CHECK (body_event_id IS NOT NULL OR hidden_event_id IS NOT NULL),
            CONSTRAINT catalogue_items_body
                CHECK ((title IS NOT NULL) = (body_event_id IS NOT NULL AND NOT deleted)),
            CONSTRAINT catalogue_items_vector_source
                CHECK ((vector IS NULL) = (vector_source IS NULL))
        )
    $sql$, vector_type);
END
$$;

ALTER SEQUENCE catalogue_change_seq OWNED BY catalogue_items.change_seq;

CREATE UNIQUE INDEX IF NOT EXISTS catalogue_items_change_seq_idx ON catalogue_items (change_seq);
