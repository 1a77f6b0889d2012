"""The pure pricing domain: models, pricing rules, matching, guard, attribution, explain.

Guarantees: no I/O, no logging, no clock, no float. Everything else imports this; it imports
nothing of cost-sync's but :mod:`cost_sync.errors`."""
