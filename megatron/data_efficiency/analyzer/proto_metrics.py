"""Prototype distance (``proto_dist``): each sample's cosine distance to its k-means centroid
in the embedding space of a reference checkpoint.

* Embedding of a sample: the mean over its positions of the reference model's final
  hidden states (after the final layer norm), L2-normalised. float64 from here on. A
  document (``document_window``) is read as windows (``document_scoring.py``): the mean
  runs over the input positions of all its windows.
* Centroids: scikit-learn's ``MiniBatchKMeans`` (``random_state=seed``) fitted on the
  embeddings of ``fit_samples`` sample ids drawn with ``seed``; the fit set is embedded
  by all ranks (fixed batches of ids, handed out round-robin, so the bytes do not depend
  on the rank count), gathered, fitted on rank 0 and broadcast.
* Value: ``1 - cos(e, c)`` with ``c`` the centroid nearest to ``e`` (Euclidean, as
  ``MiniBatchKMeans.predict``). Small values are typical samples, large ones outliers.

The metric is then an ordinary analyzer user metric over every sample (batched, over MPI
ranks, resumable; shards keyed by the reference weights and the centroids).
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from megatron.data_efficiency.analyzer import document_scoring
from megatron.data_efficiency.analyzer.model_metrics import (ReferenceModel, check_window,
                                                             window_meta)
from megatron.data_efficiency.analyzer.row_progress import RowProgress


@torch.no_grad()
def embed(ref: ReferenceModel, samples: np.ndarray, batch_size: int = 8,
          progress: RowProgress | None = None) -> np.ndarray:
    """Unit-norm mean final hidden state over each training sample's inputs ``t[:-1]``
    (what the model reads in training); ``progress`` advances per forward batch.
                                                    # [n, s + 1] int -> [n, h] float64"""
    model = ref.model
    device = next(model.parameters()).device
    out = []
    for a in range(0, len(samples), batch_size):
        t = torch.as_tensor(np.asarray(samples[a:a + batch_size], dtype=np.int64)[:, :-1],
                            device=device)
        hidden = document_scoring.final_hidden_states(model, t)                 # [s, b, h]
        out.append(hidden.float().mean(dim=0).double().cpu().numpy())
        if progress is not None:
            progress.advance(len(t))
    e = np.concatenate(out) if out else np.zeros((0, model.config.hidden_size))
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def cosine_distances(emb: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``1 - cos`` to the nearest centroid (Euclidean).    # [n, h], [K, h] -> [n] float64"""
    d2 = (emb ** 2).sum(1)[:, None] - 2 * emb @ centroids.T + (centroids ** 2).sum(1)[None]
    c = centroids[np.argmin(d2, axis=1)]
    cos = (emb * c).sum(1) / np.maximum(np.linalg.norm(c, axis=1), 1e-12)
    return 1.0 - cos


def fit_ids(num_samples: int, fit_samples: int, seed: int) -> np.ndarray:
    """The sample ids the centroids are fitted on, ascending."""
    k = min(int(num_samples), int(fit_samples))
    return np.sort(np.random.default_rng(seed).choice(num_samples, size=k, replace=False))


def embed_ids(ref: ReferenceModel, source, ids: np.ndarray, batch_size: int,
              document_window: int | None = None,
              progress: RowProgress | None = None) -> np.ndarray:
    """Embeddings of samples (documents) ``ids`` of an analyzer source.   # -> [n, h]"""
    parts = [source.batch(int(i), int(i) + 1) for i in ids]
    if document_window is None:
        return embed(ref, np.stack([tokens for tokens, _ in parts]), batch_size, progress)
    lengths = [len(tokens) for tokens, _ in parts]
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    tokens = np.concatenate([t for t, _ in parts]) if parts else np.zeros(0, np.int64)
    return document_scoring.document_embeddings(ref.model, tokens, offsets, document_window,
                                                batch_size, progress)


def fit_centroids(ref: ReferenceModel, source, comm, clusters: int, fit_samples: int,
                  seed: int, batch_size: int = 8, document_window: int | None = None,
                  show_progress: bool = True) -> np.ndarray:
    """k-means centroids over the fit set (samples, or documents read as windows of
    ``document_window``), the same on every rank.                      # -> [K, h] float64"""
    from sklearn.cluster import MiniBatchKMeans
    ids = fit_ids(source.num_samples, fit_samples, seed)
    if len(ids) < clusters:
        raise ValueError(f"--kmeans-clusters {clusters} exceeds the {len(ids)} samples to fit on")
    chunks = [ids[a:a + batch_size] for a in range(0, len(ids), batch_size)]
    mine, my_chunks = {}, range(comm.rank, len(chunks), comm.size)
    progress = RowProgress("proto_dist: embedding the k-means fit set",
                           sum(len(chunks[j]) for j in my_chunks),
                           enabled=show_progress and comm.rank == 0)
    for j in my_chunks:
        mine[j] = embed_ids(ref, source, chunks[j], batch_size, document_window, progress)
    gathered = {}
    for part in comm.allgather(mine):
        gathered.update(part)
    emb = np.concatenate([gathered[j] for j in range(len(chunks))])
    centroids = None
    if comm.rank == 0:
        km = MiniBatchKMeans(n_clusters=clusters, random_state=seed, n_init=3,
                             batch_size=max(256, clusters * 4))
        centroids = km.fit(emb).cluster_centers_.astype(np.float64)
    return comm.bcast(centroids)


class ProtoDistMetric:
    """Analyzer user metric: cosine distance of each sample to its centroid."""

    name = "proto_dist"

    def __init__(self, ref: ReferenceModel, centroids: np.ndarray, batch_size: int = 8,
                 fit: dict | None = None, document_window: int | None = None):
        self.ref, self.centroids, self.batch_size = ref, np.asarray(centroids), int(batch_size)
        self.window = check_window(ref, document_window)
        self.progress = None   # a RowProgress the analyzer sets: advanced per forward batch
        digest = hashlib.sha256(np.ascontiguousarray(self.centroids).tobytes()).hexdigest()[:16]
        self.cache_tag = f"proto-{ref.fingerprint}-{digest}-b{self.batch_size}" + (
            "" if self.window is None else f"-w{self.window}")
        self.meta = {"reference_load": ref.load_dir, "reference_iteration": ref.iteration,
                     "reference_fingerprint": ref.fingerprint, "model_metric": "proto_dist",
                     "kmeans_clusters": int(len(self.centroids)), "centroids_sha256": digest,
                     **(fit or {}), **window_meta(self.window)}

    def __call__(self, tokens: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        if self.window is not None:
            return cosine_distances(document_scoring.document_embeddings(
                self.ref.model, tokens, offsets, self.window, self.batch_size, self.progress),
                self.centroids)
        lengths = np.diff(offsets)
        if len(lengths) and (lengths != lengths[0]).any():
            raise ValueError("proto_dist needs samples of one length (--granularity sample)")
        rows = np.asarray(tokens).reshape(len(lengths), -1)
        return cosine_distances(embed(self.ref, rows, self.batch_size, self.progress),
                                self.centroids)
