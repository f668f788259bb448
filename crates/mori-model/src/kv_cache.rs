//! The key/value cache: keys and values of every past position, per layer,
//! stored as f16 (as llama.cpp stores them by default) to halve its memory.
//! A sliding-window layer keeps only a ring of rows a little longer than its
//! window, so its memory does not grow with the context.

use half::f16;
use mori_kernels::ops::KvLayout;

/// Keys and values for up to `n_ctx` positions of every layer.
#[derive(Debug, Clone)]
pub struct KvCache {
    n_ctx: usize,
    /// Floats per position per layer: `n_head_kv * head_dim`.
    kv_dim: usize,
    /// Per layer: `[n_rows][kv_dim]` keys.
    k: Vec<Vec<f16>>,
    /// Per layer: `[n_rows][kv_dim]` values.
    v: Vec<Vec<f16>>,
    /// Per layer: which positions a query sees and the rows kept; position
    /// `p` is at row `p % n_rows` (`n_rows == n_ctx` for a full layer).
    layouts: Vec<KvLayout>,
    n_used: usize,
}

impl KvCache {
    pub fn new(n_layer: usize, n_ctx: usize, kv_dim: usize) -> Self {
        KvCache::windowed(n_ctx, kv_dim, &vec![None; n_layer], 1)
    }

    /// A cache whose layer `i` sees the last `windows[i]` positions (`None`: all
    /// of them). A windowed layer keeps a ring of `window + max_batch - 1` rows
    /// (at most `n_ctx`): enough for the window of the first token of a batch
    /// of up to `max_batch` tokens once the whole batch is stored.
    pub fn windowed(
        n_ctx: usize,
        kv_dim: usize,
        windows: &[Option<usize>],
        max_batch: usize,
    ) -> Self {
        let layouts: Vec<KvLayout> = windows
            .iter()
            .map(|&window| KvLayout {
                window,
                n_rows: match window {
                    Some(w) => (w.max(1) + max_batch.max(1) - 1).min(n_ctx),
                    None => n_ctx,
                },
            })
            .collect();
        let buf = |l: &KvLayout| vec![f16::ZERO; l.n_rows * kv_dim];
        KvCache {
            n_ctx,
            kv_dim,
            k: layouts.iter().map(buf).collect(),
            v: layouts.iter().map(buf).collect(),
            layouts,
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

    pub fn n_layer(&self) -> usize {
        self.layouts.len()
    }

    /// Forgets every position from `n` on, so a conversation can be rewound to
    /// a shared prefix without recomputing it. A sliding-window layer may
    /// already have overwritten part of the window that position `n` needs;
    /// then the cache forgets everything (the only point it can resume from),
    /// so callers read [`KvCache::n_used`] afterwards.
    pub fn truncate(&mut self, n: usize) {
        let n = self.n_used.min(n);
        let oldest_needed = |l: &KvLayout| l.window.map_or(0, |w| (n + 1).saturating_sub(w));
        let resumable = self
            .layouts
            .iter()
            .all(|l| n == 0 || oldest_needed(l) >= self.n_used.saturating_sub(l.n_rows));
        self.n_used = if resumable { n } else { 0 };
    }

    pub fn clear(&mut self) {
        self.n_used = 0;
    }

    /// Bytes held by the cache.
    pub fn size_bytes(&self) -> usize {
        let rows: usize = self.layouts.iter().map(|l| l.n_rows).sum();
        2 * rows * self.kv_dim * std::mem::size_of::<f16>()
    }

    /// Stores the keys and values of `n` consecutive positions starting at `pos`
    /// for `layer`; `k` and `v` are `[n][kv_dim]`.
    pub(crate) fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let (kv_dim, n_rows) = (self.kv_dim, self.layouts[layer].n_rows);
        let rows = k.chunks_exact(kv_dim).zip(v.chunks_exact(kv_dim));
        for (i, (kr, vr)) in rows.enumerate() {
            let start = ((pos + i) % n_rows) * kv_dim;
            let to_f16 = |dst: &mut [f16], src: &[f32]| {
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = f16::from_f32(s);
                }
            };
            to_f16(&mut self.k[layer][start..start + kv_dim], kr);
            to_f16(&mut self.v[layer][start..start + kv_dim], vr);
        }
    }

    /// Keys and values of positions `0..n` of `layer`, which must keep every
    /// position (no window).
    pub(crate) fn layer(&self, layer: usize, n: usize) -> (&[f16], &[f16]) {
        debug_assert!(self.layouts[layer].window.is_none());
        let len = n * self.kv_dim;
        (&self.k[layer][..len], &self.v[layer][..len])
    }

    /// Every row of `layer`'s keys and values, and how positions map to them.
    pub(crate) fn layer_rows(&self, layer: usize) -> (&[f16], &[f16], KvLayout) {
        (&self.k[layer], &self.v[layer], self.layouts[layer])
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.n_used += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windowed_layers_keep_a_ring_and_full_layers_everything() {
        let mut c = KvCache::windowed(100, 2, &[Some(8), None], 4);
        assert_eq!(c.layer_rows(0).2.n_rows, 11);
        assert_eq!(c.layer_rows(1).2.n_rows, 100);
        assert_eq!(c.size_bytes(), 2 * (11 + 100) * 2 * 2);
        for pos in 0..30 {
            let kv = [pos as f32, -(pos as f32)];
            c.store(0, pos, &kv, &kv);
            c.store(1, pos, &kv, &kv);
            c.advance(1);
        }
        // Position p of the ring is at row p % 11; the newest overwrote the oldest.
        let (k, v, _) = c.layer_rows(0);
        assert_eq!(k[(29 % 11) * 2].to_f32(), 29.0);
        assert_eq!(v[(19 % 11) * 2 + 1].to_f32(), -19.0);
        assert_eq!(c.layer(1, 30).0[2 * 3].to_f32(), 3.0);
    }

    #[test]
    fn truncating_past_what_a_ring_still_holds_forgets_everything() {
        let mut c = KvCache::windowed(100, 1, &[Some(8), None], 4);
        c.advance(30); // the ring of 11 rows holds positions 19..30
        c.truncate(27); // position 27 needs 20..27: still there
        assert_eq!(c.n_used(), 27);
        c.advance(3);
        c.truncate(26); // needs 19..26: 19 is still there
        assert_eq!(c.n_used(), 26);
        c.advance(4);
        c.truncate(25); // needs 18..25: overwritten
        assert_eq!(c.n_used(), 0);
        // Without a window any rewind works.
        let mut full = KvCache::new(2, 100, 1);
        full.advance(90);
        full.truncate(3);
        assert_eq!(full.n_used(), 3);
    }
}
