"""nirlink cluster: opening a Dask client (local, address, TLS), worker plugins, deployment recipes."""

from ._client import local_cluster_size, open_client

__all__ = ["local_cluster_size", "open_client"]
