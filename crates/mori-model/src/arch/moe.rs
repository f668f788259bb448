//! Mixture-of-experts feed-forward (Qwen3-MoE, ERNIE-4.5-MoE): a router scores
//! every expert for each token, the `n_expert_used` best are run and their
//! outputs mixed by the router's weights, plus an optional shared expert that
//! every token goes through.
//!
//! The routing follows llama.cpp's `build_moe_ffn` step for step so the same
//! experts are chosen with the same weights: router logits from the F32
//! `ffn_gate_inp` matrix, softmax (llama.cpp's AVX2 order), an optional
//! selection bias that changes which experts win but not their weights
//! (ERNIE's `exp_probs_b`), top-k with ties going to the lower expert id,
//! weights divided by their sum (clamped below at f16's smallest normal), and
//! the weighted expert outputs added in rank order.
//!
//! The routed experts live in 3-D tensors `[n_cols, n_rows, n_expert]` read in
//! place from the mapping; each expert's matrix is a contiguous slice. A batch
//! of tokens is grouped by expert, so each chosen expert's weights are read
//! once per batch however many tokens picked it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use mori_formats::{GgufFile, TensorInfo};
use mori_kernels::{ops, quants, ActBuf, GgmlType, ThreadPool, WeightView};

use super::ffn::{DenseFfn, FfnScratch};
use super::{check_shape, load_vector_opt, sized, Linear, SharedActs};
use crate::hparams::{Gating, HParams, MoeHParams};
use crate::{Error, Result};

/// llama.cpp clamps the sum of the chosen weights to at least this (the
/// smallest normal f16) before dividing by it.
const MIN_WEIGHT_SUM: f32 = 6.103_515_6e-5;

/// The routed experts' matrices of one projection: a 3-D tensor of `n_expert`
/// matrices of `n_rows` rows of `n_cols` elements, one after the other.
#[derive(Debug, Clone)]
pub struct Experts {
    info: TensorInfo,
    ty: GgmlType,
    n_expert: usize,
    n_rows: usize,
    n_cols: usize,
    /// Bytes of one expert's matrix.
    expert_bytes: usize,
}

impl Experts {
    /// The tensor `name`, which must be `[n_cols, n_rows, n_expert]` in GGUF order.
    pub fn load(
        f: &GgufFile,
        name: &str,
        n_cols: usize,
        n_rows: usize,
        n_expert: usize,
    ) -> Result<Experts> {
        let (info, _) = f.tensor(name)?;
        check_shape(f, info, &[n_cols as u64, n_rows as u64, n_expert as u64])?;
        let row_bytes = info.ty.row_size(n_cols).map_err(|_| {
            Error::Invalid(format!(
                "{}: tensor '{name}': rows of {n_cols} cannot be stored as {} (blocks of {})",
                f.path().display(),
                info.ty,
                info.ty.block_size()
            ))
        })?;
        Ok(Experts {
            info: info.clone(),
            ty: info.ty,
            n_expert,
            n_rows,
            n_cols,
            expert_bytes: row_bytes * n_rows,
        })
    }

    /// Expert `e`'s matrix, in place.
    pub fn view<'a>(&self, f: &'a GgufFile, e: usize) -> Result<WeightView<'a>> {
        debug_assert!(e < self.n_expert);
        let data = f.tensor_data(&self.info);
        Ok(WeightView::new(
            self.ty,
            &data[e * self.expert_bytes..(e + 1) * self.expert_bytes],
            self.n_rows,
            self.n_cols,
        )?)
    }
}

/// The routing of one token through one MoE layer.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingRecord {
    pub layer: usize,
    /// Position of the token in the sequence.
    pub pos: usize,
    /// Chosen experts, best first.
    pub experts: Vec<u32>,
    /// The weight each chosen expert's output is multiplied by.
    pub weights: Vec<f32>,
}

/// An opt-in record of every routing decision, for tests and diagnostics.
/// Off by default; when off it costs one atomic load per layer and batch.
#[derive(Debug, Default)]
pub struct RoutingTrace {
    on: AtomicBool,
    records: Mutex<Vec<RoutingRecord>>,
}

impl RoutingTrace {
    /// Starts recording (and forgets anything recorded before).
    pub fn enable(&self) {
        self.lock().clear();
        self.on.store(true, Ordering::Relaxed);
    }

    /// Stops recording.
    pub fn disable(&self) {
        self.on.store(false, Ordering::Relaxed);
    }

    /// The records so far, in the order they were made (layer by layer within
    /// each forward pass), leaving the trace empty.
    pub fn take(&self) -> Vec<RoutingRecord> {
        std::mem::take(&mut *self.lock())
    }

    fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RoutingRecord>> {
        // A panic elsewhere while holding the lock leaves the records usable.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The mixture-of-experts feed-forward of one layer.
pub struct MoeFfn {
    layer: usize,
    router: Linear,                   // [n_embd] -> [n_expert]
    selection_bias: Option<Vec<f32>>, // [n_expert]
    gate: Experts,                    // n_expert x ([n_embd] -> [n_ff_exp])
    up: Experts,                      // n_expert x ([n_embd] -> [n_ff_exp])
    down: Experts,                    // n_expert x ([n_ff_exp] -> [n_embd])
    shared: Option<DenseFfn>,         // [n_embd] -> [n_ff_shexp] -> [n_embd]
    n_expert: usize,
    n_expert_used: usize,
    gating: Gating,
    norm_weights: bool,
}

impl MoeFfn {
    /// The MoE tensors of layer `il`: `ffn_gate_inp`, `ffn_{gate,up,down}_exps`,
    /// the optional `exp_probs_b` and, when `moe` has one, the shared expert.
    pub fn load(f: &GgufFile, il: usize, hp: &HParams, moe: &MoeHParams) -> Result<MoeFfn> {
        let name = |t: &str| format!("blk.{il}.{t}");
        let (d, ff, ne) = (hp.n_embd, moe.n_ff_exp, moe.n_expert);
        let shared = match moe.n_ff_shexp {
            0 => None,
            n_ff => Some(DenseFfn::load(f, &name("ffn"), "_shexp", d, n_ff)?),
        };
        Ok(MoeFfn {
            layer: il,
            router: Linear::load(f, &name("ffn_gate_inp.weight"), d, ne)?,
            selection_bias: load_vector_opt(f, &name("exp_probs_b.bias"), ne)?,
            gate: Experts::load(f, &name("ffn_gate_exps.weight"), d, ff, ne)?,
            up: Experts::load(f, &name("ffn_up_exps.weight"), d, ff, ne)?,
            down: Experts::load(f, &name("ffn_down_exps.weight"), ff, d, ne)?,
            shared,
            n_expert: ne,
            n_expert_used: moe.n_expert_used,
            gating: moe.gating,
            norm_weights: moe.norm_weights,
        })
    }

    /// `out[t] = moe(xn[t])` for `n` tokens at positions `pos0..`; `acts` must
    /// be invalidated or hold `xn`'s conversion.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        pool: &ThreadPool,
        f: &Arc<GgufFile>,
        acts: &mut SharedActs,
        xn: &[f32],
        n: usize,
        pos0: usize,
        ffn_scratch: &mut FfnScratch,
        scratch: &mut MoeScratch,
        trace: &RoutingTrace,
        out: &mut [f32],
    ) -> Result<()> {
        let d = self.router.n_cols;
        let k = self.n_expert_used;
        let ne = self.n_expert;
        // [n][n_expert] router logits, then probabilities.
        let logits = sized(&mut scratch.logits, n * ne);
        acts.matmul(pool, f, &self.router, xn, n, logits)?;
        let ids = sized(&mut scratch.ids, n * k); // [n][k] chosen experts, best first
        let weights = sized(&mut scratch.weights, n * k); // [n][k]
        for t in 0..n {
            self.route(
                &mut logits[t * ne..(t + 1) * ne],
                &mut ids[t * k..(t + 1) * k],
                &mut weights[t * k..(t + 1) * k],
                &mut scratch.order,
                &mut scratch.sel,
            );
        }
        if trace.is_on() {
            trace.lock().extend((0..n).map(|t| RoutingRecord {
                layer: self.layer,
                pos: pos0 + t,
                experts: ids[t * k..(t + 1) * k].to_vec(),
                weights: weights[t * k..(t + 1) * k].to_vec(),
            }));
        }

        // Each (token, rank) pair's weighted expert output, [n][k][n_embd].
        let slots = sized(&mut scratch.slots, n * k * d);
        self.run_experts(pool, f, xn, ids, weights, &mut scratch.experts, slots)?;
        // Added in rank order, as llama.cpp chains its adds.
        for t in 0..n {
            let o = &mut out[t * d..(t + 1) * d];
            o.copy_from_slice(&slots[t * k * d..(t * k + 1) * d]);
            for s in 1..k {
                ops::add_inplace(o, &slots[(t * k + s) * d..(t * k + s + 1) * d]);
            }
        }
        if let Some(shared) = &self.shared {
            let sh = sized(&mut scratch.shared, n * d); // [n][n_embd]
            shared.forward(pool, f, acts, xn, n, ffn_scratch, sh)?;
            ops::add_inplace(&mut out[..n * d], sh);
        }
        Ok(())
    }

    /// Chooses the experts of one token from its router logits (overwritten
    /// with the probabilities) and their weights; `order` and `sel` are
    /// working memory.
    fn route(
        &self,
        logits: &mut [f32],
        ids: &mut [u32],
        weights: &mut [f32],
        order: &mut Vec<u32>,
        sel: &mut Vec<f32>,
    ) {
        match self.gating {
            Gating::Softmax => softmax_ggml(logits),
        }
        let probs = &*logits;
        order.clear();
        order.extend(0..self.n_expert as u32);
        match &self.selection_bias {
            Some(b) => {
                sel.clear();
                sel.extend(probs.iter().zip(b).map(|(&p, &b)| p + b));
                rank_desc(order, sel);
            }
            None => rank_desc(order, probs),
        }
        ids.copy_from_slice(&order[..ids.len()]);
        for (w, &e) in weights.iter_mut().zip(ids.iter()) {
            *w = probs[e as usize];
        }
        if self.norm_weights {
            let sum: f64 = weights.iter().map(|&w| w as f64).sum();
            let sum = (sum as f32).max(MIN_WEIGHT_SUM);
            weights.iter_mut().for_each(|w| *w /= sum);
        }
    }

    /// Runs every chosen expert once over all the tokens that chose it and
    /// writes each weighted output to its `(token, rank)` slot of `slots`.
    #[allow(clippy::too_many_arguments)]
    fn run_experts(
        &self,
        pool: &ThreadPool,
        f: &GgufFile,
        xn: &[f32],
        ids: &[u32],
        weights: &[f32],
        scratch: &mut ExpertScratch,
        slots: &mut [f32],
    ) -> Result<()> {
        let d = self.router.n_cols;
        let ff = self.gate.n_rows;
        let ExpertScratch {
            starts,
            cursor,
            grouped,
            acts,
            xe,
            gate,
            up,
            ye,
        } = scratch;
        let (ne, k) = (self.n_expert, self.n_expert_used);
        // Slot indices (token * k + rank) grouped by expert, tokens in order
        // within each (a counting sort): expert e's are
        // `grouped[starts[e]..starts[e + 1]]`.
        let starts = sized(starts, ne + 1);
        starts.fill(0);
        for &e in ids {
            starts[e as usize + 1] += 1;
        }
        for e in 0..ne {
            starts[e + 1] += starts[e];
        }
        let cursor = sized(cursor, ne);
        cursor.copy_from_slice(&starts[..ne]);
        let grouped = sized(grouped, ids.len());
        for (slot, &e) in ids.iter().enumerate() {
            grouped[cursor[e as usize]] = slot;
            cursor[e as usize] += 1;
        }
        // An expert is chosen at most once per token: room for every token.
        let n_tokens = ids.len() / k;
        xe.reserve((n_tokens * d).saturating_sub(xe.len()));
        for (w, n_cols) in [(&self.gate, d), (&self.up, d), (&self.down, ff)] {
            acts.reserve(w.ty, n_tokens, n_cols)?;
        }
        let (gate, up, ye) = (
            sized(gate, n_tokens * ff),
            sized(up, n_tokens * ff),
            sized(ye, n_tokens * d),
        );
        for e in 0..ne {
            let slot_ids = &grouped[starts[e]..starts[e + 1]];
            let m = slot_ids.len();
            if m == 0 {
                continue;
            }
            // [m][n_embd] the tokens routed to this expert.
            xe.clear();
            for &slot in slot_ids {
                let t = slot / k;
                xe.extend_from_slice(&xn[t * d..(t + 1) * d]);
            }
            let gate = &mut gate[..m * ff]; // [m][n_ff_exp]
            let up = &mut up[..m * ff]; // [m][n_ff_exp]
            let ye = &mut ye[..m * d]; // [m][n_embd]
            let (wg, wu, wd) = (
                self.gate.view(f, e)?,
                self.up.view(f, e)?,
                self.down.view(f, e)?,
            );
            acts.prepare(wg.ty, xe, m, d)?;
            mori_kernels::matmul(pool, &wg, acts, gate)?;
            if mori_kernels::vec_dot_type(wu.ty) != mori_kernels::vec_dot_type(wg.ty) {
                acts.prepare(wu.ty, xe, m, d)?;
            }
            mori_kernels::matmul(pool, &wu, acts, up)?;
            ops::silu_mul_inplace(gate, up);
            acts.prepare(wd.ty, gate, m, ff)?;
            mori_kernels::matmul(pool, &wd, acts, ye)?;
            for (j, &slot) in slot_ids.iter().enumerate() {
                let w = weights[slot];
                for (o, &y) in slots[slot * d..(slot + 1) * d]
                    .iter_mut()
                    .zip(&ye[j * d..(j + 1) * d])
                {
                    *o = y * w;
                }
            }
        }
        Ok(())
    }
}

/// The buffers of [`MoeFfn::forward`], kept between passes (see `Scratch`).
#[derive(Default)]
pub struct MoeScratch {
    logits: Vec<f32>,  // [n][n_expert]
    ids: Vec<u32>,     // [n][k]
    weights: Vec<f32>, // [n][k]
    slots: Vec<f32>,   // [n][k][n_embd]
    shared: Vec<f32>,  // [n][n_embd]
    order: Vec<u32>,   // [n_expert] the ranking of one token
    sel: Vec<f32>,     // [n_expert] selection scores of one token
    experts: ExpertScratch,
}

/// The buffers of running the chosen experts.
#[derive(Default)]
pub struct ExpertScratch {
    starts: Vec<usize>,  // [n_expert + 1] where each expert's slots start in `grouped`
    cursor: Vec<usize>,  // [n_expert]
    grouped: Vec<usize>, // [n][k] slots, grouped by expert
    acts: ActBuf,
    xe: Vec<f32>,   // [m][n_embd]
    gate: Vec<f32>, // [m][n_ff_exp]
    up: Vec<f32>,   // [m][n_ff_exp]
    ye: Vec<f32>,   // [m][n_embd]
}

/// Sorts expert ids by `score`, highest first; equal scores keep the lower id
/// first. llama.cpp's CPU argsort is `std::sort`, which libstdc++ runs as an
/// insertion sort (stable) for up to 16 elements; beyond that its order among
/// exactly equal scores is unspecified. The id breaks ties, so the order is
/// total and an unstable sort (which never allocates) gives the stable one.
fn rank_desc(order: &mut [u32], score: &[f32]) {
    order.sort_unstable_by(|&a, &b| {
        score[b as usize]
            .total_cmp(&score[a as usize])
            .then(a.cmp(&b))
    });
}

/// Softmax in place in llama.cpp's order (`ggml_vec_soft_max_f32` on AVX2):
/// groups of 8 exponentials by the vectorised `exp`, each group summed
/// halves-then-pairs and the groups in f64, the tail by the C library's
/// `expf`, then the row multiplied by the f32 reciprocal of the sum.
fn softmax_ggml(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    let mut chunks = x.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut lanes = [0.0f32; 8];
        for (l, v) in lanes.iter_mut().zip(chunk.iter_mut()) {
            *v = ops::exp_approx(*v - max);
            *l = *v;
        }
        sum += quants::hsum8(&lanes) as f64;
    }
    for v in chunks.into_remainder() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    x.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_to_the_lower_expert() {
        let score = [0.1, 0.3, 0.3, 0.2, 0.3];
        let mut order: Vec<u32> = (0..5).collect();
        rank_desc(&mut order, &score);
        assert_eq!(order, [1, 2, 4, 3, 0]);
    }

    #[test]
    fn softmax_matches_the_plain_one() {
        for n in [3usize, 8, 13, 64] {
            let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.7).collect();
            let (mut a, mut b) = (x.clone(), x);
            softmax_ggml(&mut a);
            ops::softmax_inplace(&mut b);
            for (p, q) in a.iter().zip(&b) {
                assert!((p - q).abs() <= 1e-6 * q.max(1e-3), "{n}: {p} vs {q}");
            }
            let s: f32 = a.iter().sum();
            assert!((s - 1.0).abs() < 1e-5);
        }
    }
}
