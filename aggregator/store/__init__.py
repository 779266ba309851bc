"""The store: sources' fetch state, entries, claims and the published snapshot, behind one
interface (`api.StoreAPI`) with two back ends, `sqlite` (embedded, the default) and
`postgres` (shared by several daemons). The back ends speak SQL and decide nothing.
"""

from aggregator.store.api import StoreAPI, is_store_url, open_store
from aggregator.store.records import SourceState, StoreResult

__all__ = ["SourceState", "StoreAPI", "StoreResult", "is_store_url", "open_store"]
