"""An org's contacts: the store, imports, dedup jobs, the API and the PSI driver."""
