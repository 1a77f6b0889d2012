-- The queries of `cost-sync demo` (cost_sync.cli.demo), loaded by name (`-- name: NAME` starts a
-- query): seeding the demo's own database, and reading its rows back for the table it prints.

-- name: insert_row
INSERT INTO vps_instances (hostwinds_instance_id, status, approximate_cost, region)
VALUES ($1, $2, $3::numeric, 'demo');

-- name: insert_tenant
INSERT INTO tenants (id, name) VALUES ($1, $2) RETURNING id;

-- name: insert_domain
INSERT INTO domains (tenant_id, domain) VALUES ($1, $2) RETURNING id;

-- name: insert_ip
-- SMTP IP $4 (address $2, status $3) of the VPS whose hostwinds_instance_id is $1.
INSERT INTO smtp_ip_addresses (id, vps_instance_id, ip_address, status)
SELECT $4, id, $2, $3 FROM vps_instances WHERE hostwinds_instance_id = $1
RETURNING id;

-- name: insert_assignment
INSERT INTO domain_ip_assignments (domain_id, smtp_ip_address_id, status) VALUES ($1, $2, $3);

-- name: rows
SELECT id, hostwinds_instance_id, status, approximate_cost FROM vps_instances
ORDER BY hostwinds_instance_id;
