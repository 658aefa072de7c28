"""nirlink cluster: opening a Dask client (local, address, TLS), the worker plugin, deployment recipes."""

from ._certs import driver_security, make_certificates, security_from_dir
from ._client import local_cluster_size, open_client
from ._plugin import NirlinkWorkerPlugin, nirlink_version, use_arrow_memory_pool

__all__ = ["NirlinkWorkerPlugin", "driver_security", "local_cluster_size", "make_certificates", "nirlink_version",
           "open_client", "security_from_dir", "use_arrow_memory_pool"]
