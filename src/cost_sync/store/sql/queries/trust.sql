-- The read-mostly queries of `cost-sync explain`, `held`, `approve` and `report`, and of the
-- daemon's readiness, loaded by name (`-- name: NAME` starts a query) by cost_sync.store.trust and
-- cost_sync.daemon.admin. None of them calls Hostwinds; only `approve` writes.

-- name: read_identities
-- What an ID argument can name each row by (matching.RowIndex): the row id, its
-- hostwinds_instance_id, and the Hostwinds serviceid and server_uuid it matched at the last run.
SELECT v.id, v.hostwinds_instance_id, v.status, s.serviceid, lower(s.server_uuid) AS server_uuid
FROM vps_instances v
LEFT JOIN cost_sync_row_state s ON s.vps_instance_id = v.id
ORDER BY v.id;

-- name: read_row
SELECT id, hostwinds_instance_id, status, region, approximate_cost, monthly_cost
FROM vps_instances
WHERE id = $1;

-- name: read_history
-- A row's whole history, newest first.
SELECT run_id, created, old_cost, new_cost, source, cycle, cycle_price, months, hourly_ceiling,
       product_id, product_name, approved, proposed_by, cycle_alias, fallback, provisional
FROM cost_sync_history
WHERE vps_instance_id = $1
ORDER BY created DESC, run_id;

-- name: read_row_state
SELECT matched, serviceid, server_uuid, product_id, unpriced_reason, unpriced_detail,
       upgrade_available, run_id, updated
FROM cost_sync_row_state
WHERE vps_instance_id = $1;

-- name: read_observation
SELECT prices::text AS prices, fingerprint, observed, run_id
FROM cost_sync_price_observations
WHERE serviceid = $1;

-- name: read_price_list
SELECT plans::text AS plans, observed, run_id
FROM cost_sync_price_lists
WHERE managed = $1 AND drive_type = $2 AND plan_key = $3;

-- name: read_held
-- Held changes ($1 NULL: all), oldest first.
SELECT vps_instance_id, hostwinds_instance_id, old_cost, proposed_cost, ratio, reason, run_id,
       since, source
FROM cost_sync_held_changes
WHERE $1::uuid[] IS NULL OR vps_instance_id = ANY($1::uuid[])
ORDER BY since, vps_instance_id;

-- name: report_rows
-- Every row in scope with the plan, cycle and source of its latest history entry and its kept state.
-- `provisional`: that entry is a provisional price-list estimate and no answer of the service's
-- own cycle prices has been cached since (one would have refined or confirmed it).
SELECT v.id, v.hostwinds_instance_id, v.status, v.region, v.approximate_cost, v.monthly_cost,
       h.source, h.cycle, h.product_id, h.product_name, s.unpriced_reason, s.unpriced_detail,
       coalesce(s.upgrade_available, false) AS upgrade_available,
       coalesce(h.provisional, false) AND NOT EXISTS (
           SELECT 1 FROM cost_sync_price_observations o
           WHERE o.serviceid = s.serviceid AND o.observed >= h.created
       ) AS provisional
FROM vps_instances v
LEFT JOIN LATERAL (
    SELECT source, cycle, product_id, product_name, provisional, created
    FROM cost_sync_history
    WHERE vps_instance_id = v.id
    ORDER BY created DESC
    LIMIT 1
) h ON true
LEFT JOIN cost_sync_row_state s ON s.vps_instance_id = v.id
WHERE v.status = ANY($1::text[])
ORDER BY v.id;

-- name: oldest_observation
SELECT min(observed) FROM cost_sync_price_observations;

-- name: fleet_total
SELECT coalesce(sum(approximate_cost), 0) FROM vps_instances WHERE status = ANY($1::text[]);

-- name: held_summary
SELECT count(*) AS held, min(since) AS oldest FROM cost_sync_held_changes;

-- name: approve
-- Apply these held changes in one statement: only the change as it was shown (same proposing run
-- $4 and value $5, position by position with the rows $2), only where the row still holds the
-- value the change was proposed against (and is in scope), recorded in history as approved,
-- naming the run that proposed it; the applied held changes are deleted. Returns the applied rows.
WITH shown AS (
    SELECT * FROM unnest($2::uuid[], $4::uuid[], $5::numeric[]) AS s(id, run_id, proposed)
),
chosen AS (
    SELECT h.*
    FROM cost_sync_held_changes h
    JOIN shown s ON s.id = h.vps_instance_id AND s.run_id = h.run_id AND s.proposed = h.proposed_cost
),
changed AS (
    UPDATE vps_instances v
    SET approximate_cost = c.proposed_cost, updated = now()
    FROM chosen c
    WHERE v.id = c.vps_instance_id
      AND v.approximate_cost IS NOT DISTINCT FROM c.old_cost
      AND v.status = ANY($3::text[])
    RETURNING c.*
),
cleared AS (
    DELETE FROM cost_sync_held_changes h
    USING changed c
    WHERE h.vps_instance_id = c.vps_instance_id
)
INSERT INTO cost_sync_history (run_id, vps_instance_id, hostwinds_instance_id, old_cost, new_cost,
                               source, cycle, cycle_price, months, hourly_ceiling, product_id,
                               product_name, approved, proposed_by, cycle_alias)
SELECT $1, c.vps_instance_id, c.hostwinds_instance_id, c.old_cost, c.proposed_cost, c.source,
       c.cycle, c.cycle_price, c.months, c.hourly_ceiling, c.product_id, c.product_name, true,
       c.run_id, c.cycle_alias
FROM changed c
RETURNING vps_instance_id;

-- name: history_since
-- Every change to a row in scope since $2, oldest first, with the run that made it (`report --html`).
SELECT h.run_id, h.vps_instance_id, v.hostwinds_instance_id, h.old_cost, h.new_cost, h.created,
       h.approved, r.trigger
FROM cost_sync_history h
JOIN vps_instances v ON v.id = h.vps_instance_id
LEFT JOIN cost_sync_runs r ON r.id = h.run_id
WHERE v.status = ANY($1::text[]) AND h.created >= $2
ORDER BY h.created, h.run_id, h.vps_instance_id;

-- name: tenant_daily_since
-- The per-day tenant attribution kept since $1 (migration 0011), oldest first.
SELECT day, bucket, tenant_ref::text AS tenant_ref, tenant_name, total
FROM cost_sync_tenant_daily
WHERE day >= $1
ORDER BY day, bucket, tenant_ref;

-- name: last_success_age
-- The newest successful run in the ledger (as the guards order runs: by when it took the lease),
-- with its age in seconds by the database's clock; for GET /readyz.
SELECT finished, EXTRACT(EPOCH FROM now() - coalesce(lease_taken, created))::float8 AS age
FROM cost_sync_runs
WHERE outcome = 'succeeded'
ORDER BY coalesce(lease_taken, created) DESC, created DESC
LIMIT 1;
