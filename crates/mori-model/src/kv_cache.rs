//! The key/value cache: keys and values of every past position, per layer,
//! stored as f16 (as llama.cpp stores them by default) to halve its memory.

use half::f16;

/// Keys and values for up to `n_ctx` positions of every layer.
#[derive(Debug, Clone)]
pub struct KvCache {
    n_ctx: usize,
    /// Floats per position per layer: `n_head_kv * head_dim`.
    kv_dim: usize,
    /// Per layer: `[n_ctx][kv_dim]` keys.
    k: Vec<Vec<f16>>,
    /// Per layer: `[n_ctx][kv_dim]` values.
    v: Vec<Vec<f16>>,
    n_used: usize,
}

impl KvCache {
    pub fn new(n_layer: usize, n_ctx: usize, kv_dim: usize) -> Self {
        KvCache {
            n_ctx,
            kv_dim,
            k: (0..n_layer)
                .map(|_| vec![f16::ZERO; n_ctx * kv_dim])
                .collect(),
            v: (0..n_layer)
                .map(|_| vec![f16::ZERO; n_ctx * kv_dim])
                .collect(),
            n_used: 0,
        }
    }

    /// Positions the cache can hold.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Positions filled so far; the next token goes at this position.
    pub fn n_used(&self) -> usize {
        self.n_used
    }

    pub fn kv_dim(&self) -> usize {
        self.kv_dim
    }

    /// Forgets every position from `n` on, so a conversation can be rewound to
    /// a shared prefix without recomputing it.
    pub fn truncate(&mut self, n: usize) {
        self.n_used = self.n_used.min(n);
    }

    pub fn clear(&mut self) {
        self.n_used = 0;
    }

    /// Bytes held by the cache.
    pub fn size_bytes(&self) -> usize {
        2 * self.k.len() * self.n_ctx * self.kv_dim * std::mem::size_of::<f16>()
    }

    /// Stores the keys and values of `n` consecutive positions starting at `pos`
    /// for `layer`; `k` and `v` are `[n][kv_dim]`.
    pub(crate) fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let start = pos * self.kv_dim;
        let end = start + k.len();
        for (dst, &src) in self.k[layer][start..end].iter_mut().zip(k) {
            *dst = f16::from_f32(src);
        }
        for (dst, &src) in self.v[layer][start..end].iter_mut().zip(v) {
            *dst = f16::from_f32(src);
        }
    }

    /// Keys and values of positions `0..n` of `layer`.
    pub(crate) fn layer(&self, layer: usize, n: usize) -> (&[f16], &[f16]) {
        let len = n * self.kv_dim;
        (&self.k[layer][..len], &self.v[layer][..len])
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.n_used += n;
    }
}
