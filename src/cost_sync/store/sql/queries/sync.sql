-- The queries of one sync run, loaded by name (`-- name: NAME` starts a query) by cost_sync.store.
-- Every statement a run sends is here; nothing else in cost-sync writes vps_instances.

-- name: read_rows
-- Every vps_instances row whose status is in scope, with what the last run saw of it (the
-- columns a run compares; NULL matched: never seen). Joined here rather than read apart, so a
-- fleet's ids are sent and decoded once.
SELECT v.id, v.hostwinds_instance_id, v.status, v.approximate_cost, s.matched, s.serviceid,
       s.product_id, s.unpriced_reason, s.unpriced_detail, s.upgrade_available
FROM vps_instances v
LEFT JOIN cost_sync_row_state s ON s.vps_instance_id = v.id
WHERE v.status = ANY($1::text[])
ORDER BY v.id;

-- name: read_identities
-- (id, hostwinds_instance_id, status) of every row, to resolve --instance arguments.
SELECT id, hostwinds_instance_id, status FROM vps_instances;

-- name: lease_row
-- The run lease, locked until the transaction ends ($1: the run asking); `free` when it expired
-- by the database's clock, `mine` when $1 holds it already.
SELECT holder_run, holder, token, taken_at, expires_at,
       expires_at < now() AS free, holder_run IS NOT DISTINCT FROM $1::uuid AS mine
FROM cost_sync_lease WHERE id = 1 FOR UPDATE;

-- name: lease_create
INSERT INTO cost_sync_lease (id) VALUES (1) ON CONFLICT (id) DO NOTHING;

-- name: lease_take
-- Take the (free) lease for run $1 (held by $2, host:pid) for $3 seconds; the next token.
UPDATE cost_sync_lease
SET holder_run = $1, holder = $2, token = token + 1, taken_at = now(),
    expires_at = now() + make_interval(secs => $3)
WHERE id = 1
RETURNING token, taken_at, expires_at;

-- name: lease_renew
-- Extend the lease while run $1 holds it with token $2 and it has not expired; no row: it is lost.
UPDATE cost_sync_lease SET expires_at = now() + make_interval(secs => $3)
WHERE id = 1 AND holder_run = $1 AND token = $2 AND expires_at >= now()
RETURNING expires_at;

-- name: lease_release
UPDATE cost_sync_lease SET expires_at = '-infinity'
WHERE id = 1 AND holder_run = $1 AND token = $2;

-- name: lease_fence
-- Inside the run's final write transaction: whether run $1 still holds the lease with token $2,
-- unexpired. The row stays locked until the write commits, so nobody takes the lease meanwhile.
SELECT holder_run = $1 AND token = $2 AND expires_at >= now() FROM cost_sync_lease WHERE id = 1 FOR UPDATE;

-- name: mark_taken
-- The run's ledger row records when it took the lease (database clock), once.
UPDATE cost_sync_runs SET lease_taken = $2 WHERE id = $1 AND lease_taken IS NULL;

-- name: abandon_runs
-- Taking an expired lease: the run that held it, still 'running', was killed (or lost the
-- database) and ends 'abandoned'; so does a run that waited for the lease longer than any wait
-- allows ($3 seconds) without a row change (its process died while waiting).
UPDATE cost_sync_runs
SET outcome = 'abandoned', finished = now(),
    error = CASE WHEN id = $1
                 THEN 'abandoned: its lease expired while it ran (the process was killed or lost the '
                      || 'database); run ' || $2::text || ' took the lease over; nothing of it was written'
                 ELSE 'abandoned: its process stopped while it waited for the run lease' END
WHERE outcome = 'running' AND id <> $2
  AND (id = $1 OR (lease_taken IS NULL AND created < now() - make_interval(secs => $3)))
RETURNING id;

-- name: served_since
-- A whole-fleet run that took the lease at or after the time $1 seconds ago (a scheduled fire's
-- slot, measured as an age so that the process's and the database's clocks need not agree) and
-- was not abandoned: it serves that fire for every replica.
SELECT id FROM cost_sync_runs
WHERE instances IS NULL AND lease_taken >= now() - make_interval(secs => $1)
  AND outcome <> 'abandoned' AND id <> $2
ORDER BY lease_taken LIMIT 1;

-- name: begin_run
-- A run is in the ledger from the moment it starts, before it waits for the lease.
INSERT INTO cost_sync_runs (id, trigger, outcome, started, finished, instances, holder)
VALUES ($1, $2, 'running', $3, NULL, $4, $5);

-- name: discard_run
-- A run that ended before it did anything a ledger keeps (bad arguments, a served scheduled fire).
DELETE FROM cost_sync_runs WHERE id = $1 AND outcome = 'running';

-- name: expired_holder
-- Whether a run still 'running' holds an expired lease (its process died): another process takes over.
SELECT l.holder_run, l.expires_at, EXTRACT(EPOCH FROM now() - l.expires_at)::float8 AS age
FROM cost_sync_lease l
JOIN cost_sync_runs r ON r.id = l.holder_run
WHERE l.id = 1 AND l.expires_at < now() AND r.outcome = 'running';

-- name: read_observations
-- The cached cycle prices of these services.
SELECT serviceid, prices::text AS prices, fingerprint, observed, run_id
FROM cost_sync_price_observations
WHERE serviceid = ANY($1::bigint[]);

-- name: save_observations
-- Upsert a batch of answers; an older answer never replaces a newer one, unless the kept one is
-- dated in the future (a clock that ran ahead made it: it would otherwise never be replaced).
INSERT INTO cost_sync_price_observations AS o (serviceid, prices, fingerprint, observed, run_id)
SELECT * FROM unnest($1::bigint[], $2::jsonb[], $3::text[], $4::timestamptz[], $5::uuid[])
ON CONFLICT (serviceid) DO UPDATE
SET prices = excluded.prices, fingerprint = excluded.fingerprint,
    observed = excluded.observed, run_id = excluded.run_id
WHERE o.observed <= excluded.observed OR o.observed > now();

-- name: save_price_list
-- Upsert one price list; an older answer never replaces a newer one (nor one dated in the future).
INSERT INTO cost_sync_price_lists AS p (managed, drive_type, plan_key, plans, observed, run_id)
VALUES ($1, $2, $3, $4::jsonb, $5, $6)
ON CONFLICT (managed, drive_type, plan_key) DO UPDATE
SET plans = excluded.plans, observed = excluded.observed, run_id = excluded.run_id
WHERE p.observed <= excluded.observed OR p.observed > now();

-- name: oldest_observation
-- The oldest cached answer a row in scope relies on: the service is the one the last run that
-- decided the row matched. Answers for services no row uses any more (a deleted VPS) are kept in
-- the cache but would age for ever, so they are left out.
SELECT min(o.observed)
FROM cost_sync_price_observations o
WHERE EXISTS (
    SELECT 1 FROM cost_sync_row_state s JOIN vps_instances v ON v.id = s.vps_instance_id
    WHERE s.serviceid = o.serviceid AND s.matched AND v.status = ANY($1::text[])
);

-- name: write_estimates
-- One statement. `prior` is read in the statement's snapshot, so it holds the values from before
-- the UPDATE, and RETURNING hands each changed row's old and new value to the history INSERT.
-- What a history row says of the price (source, cycle, cycle price, months, product) repeats
-- across a fleet, so each distinct "basis" is sent once and rows refer to it by position.
WITH basis AS (
    SELECT *
    FROM unnest($5::text[], $6::text[], $7::numeric[], $8::int[], $9::bool[], $10::int[], $11::text[],
                $12::text[], $13::text[], $14::bool[])
         WITH ORDINALITY
         AS b(source, cycle, cycle_price, months, hourly_ceiling, product_id, product_name, cycle_alias,
              fallback, provisional, position)
),
new AS (
    SELECT * FROM unnest($2::uuid[], $3::numeric[], $4::int[]) AS n(id, cost, basis)
),
changed AS (
    UPDATE vps_instances v
    SET approximate_cost = new.cost, updated = now()
    FROM new JOIN vps_instances prior ON prior.id = new.id
    WHERE v.id = new.id
      AND v.approximate_cost IS DISTINCT FROM new.cost
      AND v.status = ANY($15::text[])
    RETURNING v.id, prior.hostwinds_instance_id, prior.approximate_cost AS old_cost, new.cost, new.basis
)
INSERT INTO cost_sync_history (run_id, vps_instance_id, hostwinds_instance_id, old_cost, new_cost,
                               source, cycle, cycle_price, months, hourly_ceiling, product_id,
                               product_name, cycle_alias, fallback, provisional)
SELECT $1, c.id, c.hostwinds_instance_id, c.old_cost, c.cost, b.source, b.cycle, b.cycle_price,
       b.months, b.hourly_ceiling, b.product_id, b.product_name, b.cycle_alias, b.fallback,
       b.provisional
FROM changed c JOIN basis b ON b.position = c.basis;

-- name: insert_run
INSERT INTO cost_sync_runs (id, trigger, outcome, started, finished, instances, rows_in_scope,
                            matched, updated, unchanged, unpriced, priced_by_source,
                            unpriced_by_reason, hostwinds_calls, error, price_cache, held,
                            plans_in_use, warnings, plan_names)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13::jsonb, $14::jsonb, $15,
        $16::jsonb, $17, $18::int[], $19::text[], $20::jsonb)
-- The row the run inserted when it started ('running') gets its outcome; an 'abandoned' one keeps it.
ON CONFLICT (id) DO UPDATE
SET outcome = EXCLUDED.outcome, finished = EXCLUDED.finished, instances = EXCLUDED.instances,
    rows_in_scope = EXCLUDED.rows_in_scope, matched = EXCLUDED.matched, updated = EXCLUDED.updated,
    unchanged = EXCLUDED.unchanged, unpriced = EXCLUDED.unpriced,
    priced_by_source = EXCLUDED.priced_by_source, unpriced_by_reason = EXCLUDED.unpriced_by_reason,
    hostwinds_calls = EXCLUDED.hostwinds_calls, error = EXCLUDED.error,
    price_cache = EXCLUDED.price_cache, held = EXCLUDED.held, plans_in_use = EXCLUDED.plans_in_use,
    warnings = EXCLUDED.warnings, plan_names = EXCLUDED.plan_names
WHERE cost_sync_runs.outcome = 'running';

-- name: price_references
-- What cost-sync's history says of these rows ($2: the drift window, in seconds): the last value
-- it wrote, the last value a person approved within the window, the value the row held at the
-- window's start (the last one written before it, else the value before the window's first
-- change). One index probe each on (vps_instance_id, created).
SELECT r.id,
       (SELECT h.new_cost FROM cost_sync_history h WHERE h.vps_instance_id = r.id
        ORDER BY h.created DESC LIMIT 1) AS last_written,
       (SELECT h.new_cost FROM cost_sync_history h WHERE h.vps_instance_id = r.id AND h.approved
          AND h.created > now() - make_interval(secs => $2)
        ORDER BY h.created DESC LIMIT 1) AS approved,
       coalesce(
           (SELECT h.new_cost FROM cost_sync_history h WHERE h.vps_instance_id = r.id
              AND h.created <= now() - make_interval(secs => $2)
            ORDER BY h.created DESC LIMIT 1),
           (SELECT coalesce(h.old_cost, h.new_cost) FROM cost_sync_history h WHERE h.vps_instance_id = r.id
            ORDER BY h.created ASC LIMIT 1)
       ) AS standing
FROM unnest($1::uuid[]) AS r(id);

-- name: last_good_run
-- The last successful whole-fleet sync: what the guards compare a run with, and what
-- `cost-sync report` shows as the run behind its figures (with the warnings it flagged). In the
-- ledger's order (`lease_taken`, else `created`: the database's clock): `started` is cost-sync's own
-- clock, and a run made while it ran ahead would otherwise stay "the last" until that date. Runs
-- hold the lease one at a time, so the order they took it in is the order they wrote in.
SELECT id, trigger, finished, plans_in_use, coalesce(warnings, '{}') AS warnings
FROM cost_sync_runs
WHERE outcome = 'succeeded' AND instances IS NULL AND trigger <> 'approve'
ORDER BY coalesce(lease_taken, created) DESC, created DESC
LIMIT 1;

-- name: held_ids
SELECT vps_instance_id FROM cost_sync_held_changes;

-- name: clear_held
DELETE FROM cost_sync_held_changes WHERE vps_instance_id = ANY($1::uuid[]);

-- name: upsert_held
-- A held change proposed again with the same value keeps its run and `since`; another value
-- replaces it. (SET expressions read the row as it was before the update.)
INSERT INTO cost_sync_held_changes AS h (vps_instance_id, hostwinds_instance_id, old_cost,
                                         proposed_cost, ratio, reason, run_id, since, source, cycle,
                                         cycle_price, months, hourly_ceiling, product_id,
                                         product_name, cycle_alias)
SELECT u.id, u.hw, u.old, u.proposed, u.ratio, u.reason, $7::uuid, now(), u.source, u.cycle,
       u.cycle_price, u.months, u.hourly, u.product_id, u.product_name, u.cycle_alias
FROM unnest($1::uuid[], $2::text[], $3::numeric[], $4::numeric[], $5::numeric[], $6::text[],
            $8::text[], $9::text[], $10::numeric[], $11::int[], $12::bool[], $13::int[],
            $14::text[], $15::text[])
     AS u(id, hw, old, proposed, ratio, reason, source, cycle, cycle_price, months, hourly,
          product_id, product_name, cycle_alias)
ON CONFLICT (vps_instance_id) DO UPDATE
SET run_id = CASE WHEN h.proposed_cost = excluded.proposed_cost THEN h.run_id ELSE excluded.run_id END,
    since = CASE WHEN h.proposed_cost = excluded.proposed_cost THEN h.since ELSE excluded.since END,
    hostwinds_instance_id = excluded.hostwinds_instance_id, old_cost = excluded.old_cost,
    proposed_cost = excluded.proposed_cost, ratio = excluded.ratio, reason = excluded.reason,
    source = excluded.source, cycle = excluded.cycle, cycle_price = excluded.cycle_price,
    months = excluded.months, hourly_ceiling = excluded.hourly_ceiling,
    product_id = excluded.product_id, product_name = excluded.product_name,
    cycle_alias = excluded.cycle_alias;

-- name: upsert_row_states
-- Only rows whose state changed are sent.
INSERT INTO cost_sync_row_state AS s (vps_instance_id, matched, serviceid, server_uuid, product_id,
                                      unpriced_reason, unpriced_detail, upgrade_available, run_id,
                                      updated)
SELECT u.*, $9::uuid, now()
FROM unnest($1::uuid[], $2::bool[], $3::bigint[], $4::text[], $5::int[], $6::text[], $7::text[],
            $8::bool[])
     AS u(id, matched, serviceid, server_uuid, product_id, reason, detail, upgrade_available)
ON CONFLICT (vps_instance_id) DO UPDATE
SET matched = excluded.matched, serviceid = excluded.serviceid, server_uuid = excluded.server_uuid,
    product_id = excluded.product_id, unpriced_reason = excluded.unpriced_reason,
    unpriced_detail = excluded.unpriced_detail, upgrade_available = excluded.upgrade_available,
    run_id = excluded.run_id, updated = excluded.updated;

-- name: lock_timeout
-- The write transaction's bound on waiting for a row lock ($1: milliseconds, as text), as SET LOCAL.
SELECT set_config('lock_timeout', $1, true);

-- name: plan_each_run
-- asyncpg prepares and caches statements; after five executions PostgreSQL may switch to a generic
-- plan that cannot see the arrays' sizes and joins them badly: the write is planned afresh each run.
SET LOCAL plan_cache_mode = force_custom_plan;
