-- 003: string item ids outside, integer keys inside (llmrec.item_ids).
--
-- Until now an item id was a MAL anime id, in the ledger too. Items are now named by the catalogue's
-- string ids ("mal:5114") and stored under their key: the first 8 bytes of the SHA-256 of the id, masked
-- to 62 bits (llmrec.item_ids.item_key; the expressions below are llmrec.item_ids.item_key_sql, and a
-- test checks they stay the same function). The ledger's MAL ids become the keys of "mal:<id>"; the
-- profiles hold no item ids (vectors only), so they stay valid.
UPDATE interactions
SET item_id = (('x' || substr(encode(sha256(convert_to('mal:' || item_id::text, 'UTF8')), 'hex'), 1, 16))::bit(64)::bigint & 4611686018427387903);

-- The catalogue keeps its string primary key and gains the key, unique: two ids with one key (a chance of
-- about n^2 / 2^63) are refused rather than merged.
ALTER TABLE catalogue_items ADD COLUMN IF NOT EXISTS item_key bigint;
UPDATE catalogue_items
SET item_key = (('x' || substr(encode(sha256(convert_to(item_id, 'UTF8')), 'hex'), 1, 16))::bit(64)::bigint & 4611686018427387903);
ALTER TABLE catalogue_items ALTER COLUMN item_key SET NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS catalogue_items_item_key_idx ON catalogue_items (item_key);
CREATE INDEX IF NOT EXISTS interactions_item_idx ON interactions (item_id);
