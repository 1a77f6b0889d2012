"""Every error cost-sync raises on purpose descends from :class:`CostSyncError`.

::

    CostSyncError                     exit code 1 unless said otherwise
    ├── ConfigError                   a bad setting or usage; exit code 2
    │   └── FleetFileError            a sandbox fleet file cannot be read (cost_sync.hostwinds.sandbox)
    ├── DatabaseError                 PostgreSQL could not be reached or refused a statement
    │   ├── MigrationError            a migration failed or an applied file changed
    │   ├── MissingSchemaError        tables or columns cost-sync reads are missing; exit code 2
    │   ├── LockTimeout               another run (or migration) holds the lock past the timeout
    │   └── LeaseLost                 the run's lease expired or was taken over: nothing written
    ├── GuardRefused                  a run saw too much vanish at Hostwinds and applied nothing
    ├── RunStalled                    a run's time budget ran out before it could ask anything
    ├── RunServed                     a scheduled run another process already served: not run
    └── HostwindsError                Hostwinds could not give an answer cost-sync can use
        ├── HostwindsAuthError        the key was refused: never retried
        ├── HostwindsTransientError   5xx, 429, timeout, non-JSON body, "too fast" envelope:
        │   │                         retried, then raised
        │   └── HostwindsUnreadableError  a body that was not JSON on every attempt (an HTML
        │                             page): for one service's prices, that row alone
        ├── HostwindsResponseError    a well-formed error envelope or a body of the wrong shape
        │   └── HostwindsErrorEnvelope  an error envelope (list at HTTP 200, or object at 4xx)
        └── ForbiddenActionError      an action outside the read-only allow-list; nothing was sent

An error's message is meant for an operator: it names what failed and never carries a secret
(the API key, a database password, a raw Hostwinds body).
"""

from __future__ import annotations


class CostSyncError(Exception):
    """cost-sync could not do what was asked."""

    exit_code: int = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        """The operator-facing message."""
        return str(self)


class ConfigError(CostSyncError):
    """A setting or a command-line argument is not valid."""

    exit_code = 2


class DatabaseError(CostSyncError):
    """PostgreSQL could not be reached or refused a statement."""


class MigrationError(DatabaseError):
    """A migration could not be applied."""


class MissingSchemaError(DatabaseError):
    """Tables or columns cost-sync needs are missing; nothing was written."""

    exit_code = 2


class LockTimeout(DatabaseError):
    """Another run (or migration) holds the lock and did not release it in time."""


class LeaseLost(DatabaseError):
    """The run lost its lease (expired or taken over): it wrote nothing."""


class RunServed(CostSyncError):
    """A scheduled run that another process (a replica) already served for this fire: not run."""

    def __init__(self, message: str, served_by: str) -> None:
        super().__init__(message)
        self.served_by = served_by


class HostwindsError(CostSyncError):
    """Hostwinds could not give an answer cost-sync can use."""


class HostwindsAuthError(HostwindsError):
    """Hostwinds refused the API key (expired, or this host's IPv4 address is not on the key's allow-list)."""


class HostwindsTransientError(HostwindsError):
    """Hostwinds did not answer usefully after every retry."""


class HostwindsUnreadableError(HostwindsTransientError):
    """Hostwinds answered, but not with JSON, on every attempt (an HTML page, say)."""


class HostwindsResponseError(HostwindsError):
    """Hostwinds answered with an error or a body cost-sync does not understand."""


class HostwindsErrorEnvelope(HostwindsResponseError):
    """Hostwinds answered with an error envelope."""

    #: The envelope as sent, with every deny-listed field and any text holding the key removed
    #: (``doctor --capture`` keeps it so a replay answers the same), and its HTTP status.
    answer: object = None
    status: int = 200


class ForbiddenActionError(HostwindsError):
    """That Hostwinds action is not on cost-sync's read-only allow-list; nothing was sent."""


class GuardRefused(CostSyncError):
    """The run saw too many rows or plans vanish since the last good run and applied nothing."""


class RunStalled(CostSyncError):
    """The run's time budget ran out before it could ask Hostwinds for any price; nothing was written.

    The next run would stop at the same place, so the run fails instead of reporting every row
    pending and readiness says so until a run makes progress.
    """
