"""Customer records behind the agent screen pop: caller number -> address, products, repairs.

Modules: `phone` (numbers to E.164), `models` (tables), `store` (lookups and cards),
`importer` (CSV, all or nothing), `demo` (generated data), `web` (HTTP), `cli`.
"""

from cti.customers.phone import InvalidPhoneNumber, normalize
from cti.customers.store import CustomerCard, CustomerStore, Lookup

__all__ = ["CustomerCard", "CustomerStore", "InvalidPhoneNumber", "Lookup", "normalize"]
