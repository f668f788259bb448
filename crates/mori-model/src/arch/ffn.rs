//! The feed-forward half of a decoder block: a dense SwiGLU, or a mixture of
//! experts (`moe.rs`) in the layers of a network that has one.

use std::sync::Arc;

use mori_formats::GgufFile;
use mori_kernels::{ops, ThreadPool};

use super::moe::{MoeFfn, MoeScratch, RoutingTrace};
use super::{sized, Linear, SharedActs};
use crate::Result;

/// `down(silu(gate(x)) * up(x))`: the feed-forward of dense layers and of
/// ERNIE's shared expert.
#[derive(Debug, Clone)]
pub struct DenseFfn {
    gate: Linear, // [n_embd] -> [n_ff]
    up: Linear,   // [n_embd] -> [n_ff]
    down: Linear, // [n_ff] -> [n_embd]
}

impl DenseFfn {
    /// The tensors `{prefix}_gate{suffix}.weight`, `..._up..` and `..._down..`
    /// (`blk.0.ffn` and `""` for a dense layer, `_shexp` for a shared expert).
    pub fn load(
        f: &GgufFile,
        prefix: &str,
        suffix: &str,
        n_embd: usize,
        n_ff: usize,
    ) -> Result<DenseFfn> {
        let name = |t: &str| format!("{prefix}_{t}{suffix}.weight");
        Ok(DenseFfn {
            gate: Linear::load(f, &name("gate"), n_embd, n_ff)?,
            up: Linear::load(f, &name("up"), n_embd, n_ff)?,
            down: Linear::load(f, &name("down"), n_ff, n_embd)?,
        })
    }

    /// `out[t] = ffn(xn[t])` for `n` rows. `acts` must hold `xn`'s conversion or
    /// be invalidated; it is left holding another input.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        pool: &ThreadPool,
        f: &Arc<GgufFile>,
        acts: &mut SharedActs,
        xn: &[f32],
        n: usize,
        scratch: &mut FfnScratch,
        out: &mut [f32],
    ) -> Result<()> {
        let n_ff = self.gate.n_rows;
        let (gate, up) = scratch.get(n * n_ff);
        acts.matmul(pool, f, &self.gate, xn, n, gate)?;
        acts.matmul(pool, f, &self.up, xn, n, up)?;
        pool.for_chunks_mut(gate, n_ff, |t, g| {
            ops::silu_mul_inplace(g, &up[t * n_ff..(t + 1) * n_ff])
        });
        acts.invalidate();
        acts.matmul(pool, f, &self.down, gate, n, out)
    }
}

/// Reusable hidden-width buffers, grown to the largest batch seen.
#[derive(Default)]
pub struct FfnScratch {
    gate: Vec<f32>, // [n][n_ff]
    up: Vec<f32>,   // [n][n_ff]
}

impl FfnScratch {
    fn get(&mut self, len: usize) -> (&mut [f32], &mut [f32]) {
        (sized(&mut self.gate, len), sized(&mut self.up, len))
    }
}

/// The feed-forward of one layer. One per layer, built once: the size of the
/// variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Ffn {
    Dense(DenseFfn),
    Moe(MoeFfn),
}

impl Ffn {
    /// `out[t] = ffn(xn[t])` for the `n` tokens at positions `pos0..`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        pool: &ThreadPool,
        f: &Arc<GgufFile>,
        acts: &mut SharedActs,
        xn: &[f32],
        n: usize,
        pos0: usize,
        scratch: &mut FfnScratch,
        moe_scratch: &mut MoeScratch,
        trace: &RoutingTrace,
        out: &mut [f32],
    ) -> Result<()> {
        acts.invalidate();
        match self {
            Ffn::Dense(d) => d.forward(pool, f, acts, xn, n, scratch, out),
            Ffn::Moe(m) => m.forward(pool, f, acts, xn, n, pos0, scratch, moe_scratch, trace, out),
        }
    }
}
