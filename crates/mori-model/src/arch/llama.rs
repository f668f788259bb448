//! The Llama family of decoders: Llama 2/3, Mistral, TinyLlama, Qwen2 (QKV
//! bias), Qwen3 (QK-norm), ERNIE 4.5 dense (optional projection biases) and
//! openPangu-Embedded (QKV and output-projection bias). Pre-norm blocks with
//! RMSNorm, rotary positions, grouped-query attention and a SwiGLU feed-forward,
//! which in files with experts (Qwen3-MoE, ERNIE-4.5-MoE) is a mixture of
//! experts in the layers the hyper-parameters name (see `moe.rs`).

use std::sync::Arc;

use mori_formats::GgufFile;
use mori_kernels::ops::{self, AttnShape, Rope, RopeLayout};
use mori_kernels::ThreadPool;

use super::ffn::{DenseFfn, Ffn};
use super::moe::{MoeFfn, RoutingTrace};
use super::{
    advise_lookups_only, forward_in_batches, load_vector, load_vector_opt, output_head, Linear,
    Logits, Network, Scratch, ScratchParts,
};
use crate::hparams::{HParams, RopeScaling};
use crate::kv_cache::KvCache;
use crate::Result;

/// What distinguishes the members of the family.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    pub rope: RopeLayout,
    /// Q, K and V projections carry a bias (Qwen2).
    pub qkv_bias: bool,
    /// Per-head RMSNorm of queries and keys before RoPE (Qwen3).
    pub qk_norm: bool,
    /// The attention output projection carries a bias that the file must hold
    /// (openPangu-Embedded). Without the flag the bias is still applied when the
    /// file has one.
    pub o_bias: bool,
}

/// Prompt tokens processed per pass; bounds the scratch memory of long prompts.
const MAX_BATCH: usize = 256;

struct Layer {
    attn_norm: Vec<f32>,      // [n_embd]
    wq: Linear,               // [n_embd] -> [n_head * head_dim]
    wk: Linear,               // [n_embd] -> [n_head_kv * head_dim]
    wv: Linear,               // [n_embd] -> [n_head_kv * head_dim]
    wo: Linear,               // [n_head * head_dim] -> [n_embd]
    bq: Option<Vec<f32>>,     // [n_head * head_dim]
    bk: Option<Vec<f32>>,     // [n_head_kv * head_dim]
    bv: Option<Vec<f32>>,     // [n_head_kv * head_dim]
    bo: Option<Vec<f32>>,     // [n_embd]
    q_norm: Option<Vec<f32>>, // [head_dim]
    k_norm: Option<Vec<f32>>, // [head_dim]
    ffn_norm: Vec<f32>,       // [n_embd]
    ffn: Ffn,                 // [n_embd] -> [n_embd]
}

pub struct Llama {
    file: Arc<GgufFile>,
    hp: HParams,
    rope: Rope,
    tok_embd: Linear,      // [n_vocab] rows of [n_embd]
    output_norm: Vec<f32>, // [n_embd]
    output: Linear,        // [n_embd] -> [n_vocab]; the embedding when tied
    layers: Vec<Layer>,
    /// Routing decisions of the MoE layers, when asked for.
    trace: RoutingTrace,
}

impl Llama {
    pub fn load(file: Arc<GgufFile>, hp: HParams, variant: Variant) -> Result<Llama> {
        let f = &*file;
        let (d, hd) = (hp.n_embd, hp.head_dim);
        let (q_dim, kv_dim) = (hp.n_head * hd, hp.n_head_kv * hd);
        let tok_embd = Linear::load_in_place(f, "token_embd.weight", d, hp.n_vocab)?;
        let output = match Linear::load_opt(f, "output.weight", d, hp.n_vocab)? {
            Some(w) => w,
            // Tied: the embedding again, as a product's weight.
            None => Linear::load(f, "token_embd.weight", d, hp.n_vocab)?,
        };
        advise_lookups_only(f, &tok_embd, &output);
        let mut layers = Vec::with_capacity(hp.n_layer);
        for i in 0..hp.n_layer {
            let name = |t: &str| format!("blk.{i}.{t}");
            let bias = |t: &str, n: usize| -> Result<Option<Vec<f32>>> {
                if variant.qkv_bias {
                    load_vector(f, &name(t), n).map(Some)
                } else {
                    load_vector_opt(f, &name(t), n)
                }
            };
            let norm = |t: &str| -> Result<Option<Vec<f32>>> {
                if variant.qk_norm {
                    load_vector(f, &name(t), hd).map(Some)
                } else {
                    Ok(None)
                }
            };
            layers.push(Layer {
                attn_norm: load_vector(f, &name("attn_norm.weight"), d)?,
                wq: Linear::load(f, &name("attn_q.weight"), d, q_dim)?,
                wk: Linear::load(f, &name("attn_k.weight"), d, kv_dim)?,
                wv: Linear::load(f, &name("attn_v.weight"), d, kv_dim)?,
                wo: Linear::load(f, &name("attn_output.weight"), q_dim, d)?,
                bq: bias("attn_q.bias", q_dim)?,
                bk: bias("attn_k.bias", kv_dim)?,
                bv: bias("attn_v.bias", kv_dim)?,
                bo: if variant.o_bias {
                    load_vector(f, &name("attn_output.bias"), d).map(Some)?
                } else {
                    load_vector_opt(f, &name("attn_output.bias"), d)?
                },
                q_norm: norm("attn_q_norm.weight")?,
                k_norm: norm("attn_k_norm.weight")?,
                ffn_norm: load_vector(f, &name("ffn_norm.weight"), d)?,
                ffn: match &hp.moe {
                    Some(moe) if moe.is_moe_layer(i) => Ffn::Moe(MoeFfn::load(f, i, &hp, moe)?),
                    _ => Ffn::Dense(DenseFfn::load(f, &name("ffn"), "", d, hp.n_ff)?),
                },
            });
        }
        let mut rope = Rope::new(variant.rope, hp.n_rot, hp.rope_base);
        match hp.rope_scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => rope.freq_scale = 1.0 / factor,
            RopeScaling::Yarn {
                factor,
                n_ctx_orig,
                beta_fast,
                beta_slow,
            } => rope = rope.with_yarn(factor, n_ctx_orig, beta_fast, beta_slow),
        }
        // Llama 3.1 and later carry per-frequency divisors for long contexts.
        if let Some(ff) = load_vector_opt(f, "rope_freqs.weight", hp.n_rot / 2)? {
            rope.freq_factors = ff;
        }
        Ok(Llama {
            output_norm: load_vector(f, "output_norm.weight", d)?,
            file,
            hp,
            rope,
            tok_embd,
            output,
            layers,
            trace: RoutingTrace::default(),
        })
    }

    /// One pass over at most [`MAX_BATCH`] tokens.
    /// `logits: None` skips the output head (an early chunk of a long prompt).
    /// The logits asked for are appended to `out`.
    fn forward_batch(
        &self,
        pool: &ThreadPool,
        cache: &mut KvCache,
        scratch: &mut Scratch,
        tokens: &[u32],
        logits: Option<Logits>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let hp = &self.hp;
        let f = &self.file;
        let n = tokens.len();
        let pos0 = cache.n_used();
        let (d, hd) = (hp.n_embd, hp.head_dim);
        let (q_dim, kv_dim) = (hp.n_head * hd, hp.n_head_kv * hd);

        let ScratchParts {
            bufs: [x, xn, q, k, v, att, proj, cs],
            acts,
            ffn: ffn_scratch,
            moe: moe_scratch,
            attn: attn_scratch,
        } = scratch.take([
            n * d,        // x: [n][n_embd] residual stream
            n * d,        // xn: [n][n_embd] normalised input of a block
            n * q_dim,    // q: [n][n_head * head_dim]
            n * kv_dim,   // k: [n][n_head_kv * head_dim]
            n * kv_dim,   // v: [n][n_head_kv * head_dim]
            n * q_dim,    // att: [n][n_head * head_dim]
            n * d,        // proj: [n][n_embd] block output
            n * hp.n_rot, // cs: [n][n_rot] cos/sin per position
        ]);

        for (t, &id) in tokens.iter().enumerate() {
            self.tok_embd
                .row(f, id as usize, &mut x[t * d..(t + 1) * d])?;
            self.rope
                .angles(pos0 + t, &mut cs[t * hp.n_rot..(t + 1) * hp.n_rot]);
        }

        let shape = AttnShape {
            n_tokens: n,
            pos0,
            n_head: hp.n_head,
            n_head_kv: hp.n_head_kv,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
        };
        attn_scratch.reserve(shape, cache.n_ctx(), pool.n_threads());
        // Per-token work (norms, biases, RoPE) is spread over the pool: its
        // f64 norm sums are serial chains, and one thread alone would leave
        // the others waiting.
        for (il, l) in self.layers.iter().enumerate() {
            pool.for_chunks_mut(&mut xn[..n * d], d, |t, out| {
                ops::rms_norm(&x[t * d..(t + 1) * d], &l.attn_norm, hp.rms_eps, out)
            });
            acts.invalidate();
            acts.matmul(pool, f, &l.wq, xn, n, q)?;
            acts.matmul(pool, f, &l.wk, xn, n, k)?;
            acts.matmul(pool, f, &l.wv, xn, n, v)?;
            let heads = |xt: &mut [f32], t: usize, bias: Option<&[f32]>, norm, n_heads| {
                add_bias(xt, bias);
                if let (Some(_), Some(_), Some(w)) = (&l.q_norm, &l.k_norm, norm) {
                    xt.chunks_mut(hd)
                        .for_each(|h| ops::rms_norm_inplace(h, w, hp.rms_eps));
                }
                self.rope
                    .apply(xt, n_heads, hd, &cs[t * hp.n_rot..(t + 1) * hp.n_rot]);
            };
            pool.for_chunks_mut(&mut q[..n * q_dim], q_dim, |t, qt| {
                heads(qt, t, l.bq.as_deref(), l.q_norm.as_deref(), hp.n_head)
            });
            pool.for_chunks_mut(&mut k[..n * kv_dim], kv_dim, |t, kt| {
                heads(kt, t, l.bk.as_deref(), l.k_norm.as_deref(), hp.n_head_kv)
            });
            if l.bv.is_some() {
                for vt in v[..n * kv_dim].chunks_mut(kv_dim) {
                    add_bias(vt, l.bv.as_deref());
                }
            }
            cache.store(il, pos0, k, v);
            let (kc, vc) = cache.layer(il, pos0 + n);
            ops::attention(pool, shape, q, kc, vc, att, attn_scratch);

            acts.invalidate();
            acts.matmul(pool, f, &l.wo, att, n, proj)?;
            for t in 0..n {
                let pt = &mut proj[t * d..(t + 1) * d];
                add_bias(pt, l.bo.as_deref());
                ops::add_inplace(&mut x[t * d..(t + 1) * d], pt);
            }

            pool.for_chunks_mut(&mut xn[..n * d], d, |t, out| {
                ops::rms_norm(&x[t * d..(t + 1) * d], &l.ffn_norm, hp.rms_eps, out)
            });
            l.ffn.forward(
                pool,
                f,
                acts,
                xn,
                n,
                pos0,
                ffn_scratch,
                moe_scratch,
                &self.trace,
                proj,
            )?;
            ops::add_inplace(x, proj);
        }
        cache.advance(n);

        if let Some(want) = logits {
            let (norm, eps) = (&self.output_norm, hp.rms_eps);
            output_head(pool, f, acts, want, x, norm, eps, &self.output, xn, out)?;
        }
        Ok(())
    }
}

fn add_bias(x: &mut [f32], b: Option<&[f32]>) {
    if let Some(b) = b {
        ops::add_inplace(x, b);
    }
}

impl Network for Llama {
    fn forward_into(
        &self,
        pool: &ThreadPool,
        cache: &mut KvCache,
        scratch: &mut Scratch,
        tokens: &[u32],
        logits: Logits,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        forward_in_batches(tokens, logits, MAX_BATCH, out, |chunk, want, out| {
            self.forward_batch(pool, cache, scratch, chunk, want, out)
        })
    }

    fn kv_shape(&self) -> (usize, usize) {
        (self.hp.n_layer, self.hp.n_head_kv * self.hp.head_dim)
    }

    fn routing_trace(&self) -> Option<&RoutingTrace> {
        self.layers
            .iter()
            .any(|l| matches!(l.ffn, Ffn::Moe(_)))
            .then_some(&self.trace)
    }
}
