"""inboxd: a shared-inbox email ticketing daemon."""

__version__ = "0.1.0"
