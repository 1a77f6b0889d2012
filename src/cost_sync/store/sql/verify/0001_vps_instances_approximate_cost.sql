-- Verification of 0001: one row per check, (check, ok, found). Read-only.
SELECT 'approximate_cost is numeric(8,2)' AS check,
       coalesce(bool_or(c.data_type = 'numeric' AND c.numeric_precision = 8 AND c.numeric_scale = 2), false) AS ok,
       coalesce(max(c.data_type || '(' || c.numeric_precision || ',' || c.numeric_scale || ')'), 'no column') AS found
FROM information_schema.columns c
WHERE c.table_schema = current_schema() AND c.table_name = 'vps_instances' AND c.column_name = 'approximate_cost'
UNION ALL
SELECT 'approximate_cost defaults to 0.00',
       coalesce(bool_or(c.column_default IN ('0.00', '0.00::numeric')), false),
       coalesce(max(c.column_default), 'no default')
FROM information_schema.columns c
WHERE c.table_schema = current_schema() AND c.table_name = 'vps_instances' AND c.column_name = 'approximate_cost'
UNION ALL
SELECT 'constraint chk_vps_approximate_cost_positive checks approximate_cost >= 0',
       coalesce(bool_or(pg_get_constraintdef(k.oid) = 'CHECK ((approximate_cost >= (0)::numeric))'), false),
       coalesce(max(pg_get_constraintdef(k.oid)), 'no constraint')
FROM pg_constraint k
WHERE k.conrelid = to_regclass('vps_instances') AND k.conname = 'chk_vps_approximate_cost_positive'
UNION ALL
SELECT 'index idx_vps_instances_approximate_cost is partial on active rows',
       coalesce(bool_or(i.indexdef LIKE '%(approximate_cost) WHERE ((status)::text = ''active''::text)'), false),
       coalesce(max(i.indexdef), 'no index')
FROM pg_indexes i
WHERE i.schemaname = current_schema() AND i.tablename = 'vps_instances'
  AND i.indexname = 'idx_vps_instances_approximate_cost'
UNION ALL
SELECT 'approximate_cost has its comment',
       coalesce(col_description(to_regclass('vps_instances'), a.attnum) LIKE 'Estimated monthly cost in USD%', false),
       coalesce(left(col_description(to_regclass('vps_instances'), a.attnum), 40), 'no comment')
FROM (SELECT 1) AS one
LEFT JOIN pg_attribute a ON a.attrelid = to_regclass('vps_instances') AND a.attname = 'approximate_cost'
UNION ALL
SELECT 'vps_instances has the columns a run reads and writes (id, hostwinds_instance_id, status, approximate_cost, updated)',
       coalesce(bool_and(c.column_name IS NOT NULL), false),
       coalesce('missing ' || string_agg(n.name, ', ') FILTER (WHERE c.column_name IS NULL), 'all present')
FROM unnest(ARRAY['id', 'hostwinds_instance_id', 'status', 'approximate_cost', 'updated']) AS n(name)
LEFT JOIN information_schema.columns c
  ON c.table_schema = current_schema() AND c.table_name = 'vps_instances' AND c.column_name = n.name;
