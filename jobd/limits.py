"""Limits shared by more than one layer, each defined once: the protocol checks them on the
wire, the stores enforce them again for callers that do not come through the protocol."""

from __future__ import annotations

#: Jobs in one submit_many call (the protocol's, the store's and jobctl's chunk size).
MAX_SUBMIT_MANY = 1000
#: Jobs in one page of a list.
MAX_LIST_LIMIT = 1000
