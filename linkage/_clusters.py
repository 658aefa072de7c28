"""Connected components of match edges, at any size: union-find per partition, then merges.

Each partition of edges is reduced by a Numba union-find to a forest: (node, root) pairs
where the root is the smallest node id of its component within that partition. Forests
merge pairwise (a forest's pairs are edges too) in a tree of tasks until one remains, so no
worker ever holds all edges - only the nodes that have any edge. The final label of a node
is the smallest node id of its whole component: it does not depend on how edges were
partitioned or merged.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from nirlink.kernels import InputError

__all__ = ["forest", "merge_forests", "connected_components"]


@njit(nogil=True, cache=True)
def _find(parent, i):
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        nxt = parent[i]
        parent[i] = root
        i = nxt
    return root


@njit(nogil=True, cache=True)
def _union_find(a, b, n):
    parent = np.arange(n)
    for k in range(a.shape[0]):
        ra = _find(parent, a[k])
        rb = _find(parent, b[k])
        if ra != rb:
            # the smaller index becomes the root: indices are ranks of sorted node ids,
            # so the root is the smallest node id of the component
            if ra < rb:
                parent[rb] = ra
            else:
                parent[ra] = rb
    for i in range(n):
        parent[i] = _find(parent, i)
    return parent


def forest(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reduce edges to (node, root) pairs: root = the smallest node id of the node's component."""
    src = np.ascontiguousarray(src, dtype=np.int64)
    dst = np.ascontiguousarray(dst, dtype=np.int64)
    if src.shape != dst.shape:
        raise InputError(f"forest: src and dst differ in length ({len(src)} and {len(dst)})")
    if len(src) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    nodes, inv = np.unique(np.concatenate([src, dst]), return_inverse=True)
    parent = _union_find(inv[: len(src)], inv[len(src):], len(nodes))
    return nodes, nodes[parent]


def merge_forests(*forests: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Merge forests (each a (node, root) pair of arrays) into one."""
    if not forests:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    src = np.concatenate([f[0] for f in forests])
    dst = np.concatenate([f[1] for f in forests])
    return forest(src, dst)


def connected_components(edge_parts, *, client=None, fan_in: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Components of edges given as a list of (src, dst) array pairs (or Dask futures of them).

    With a client, forests are computed and merged as Dask tasks (a tree with ``fan_in``
    children per merge). Returns (node, component) with component = smallest node id.
    """
    if client is None:
        return merge_forests(*[forest(s, d) for s, d in edge_parts])
    level = [client.submit(_forest_of, part, pure=False) for part in edge_parts]
    if not level:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    while len(level) > 1:
        level = [client.submit(_merge_list, level[i:i + fan_in], pure=False) for i in range(0, len(level), fan_in)]
    return level[0].result()


def _forest_of(part):
    src, dst = part
    return forest(src, dst)


def _merge_list(forests):
    return merge_forests(*forests)
