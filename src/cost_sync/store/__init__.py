"""The database port: the run's store, the trust and attribution stores, migrations, SQL."""
