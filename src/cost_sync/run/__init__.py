"""One sync run: list, match, decide what to ask, fetch, price, guard, commit."""
