//! Gemma 3 (text): pre- and post-norm blocks (four RMSNorms per layer),
//! QK-norm, a GELU-gated feed-forward, embeddings scaled by √n_embd, and
//! sliding-window attention on most layers (five in six by default) with its
//! own RoPE base, full attention with the global base on the rest.
//!
//! Gemma's RMSNorm multiplies by `1 + w`; llama.cpp's converter stores `1 + w`
//! in the GGUF file, so every norm here is a plain RMSNorm.

use std::sync::Arc;

use mori_formats::GgufFile;
use mori_kernels::ops::{self, AttnShape, KvLayout, Rope, RopeLayout};
use mori_kernels::ThreadPool;

use super::{
    advise_lookups_only, forward_in_batches, load_vector, output_head, Linear, Logits, Network,
    Scratch, ScratchParts,
};
use crate::hparams::{HParams, RopeScaling};
use crate::kv_cache::KvCache;
use crate::{Error, Result};

/// Prompt tokens processed per pass; bounds the scratch memory of long
/// prompts, and the ring of a sliding-window layer holds its window plus this.
const MAX_BATCH: usize = 256;

struct Layer {
    attn_norm: Vec<f32>,      // [n_embd]
    wq: Linear,               // [n_embd] -> [n_head * head_dim]
    wk: Linear,               // [n_embd] -> [n_head_kv * head_dim]
    wv: Linear,               // [n_embd] -> [n_head_kv * head_dim]
    wo: Linear,               // [n_head * head_dim] -> [n_embd]
    q_norm: Vec<f32>,         // [head_dim]
    k_norm: Vec<f32>,         // [head_dim]
    post_attn_norm: Vec<f32>, // [n_embd]
    ffn_norm: Vec<f32>,       // [n_embd]
    w_gate: Linear,           // [n_embd] -> [n_ff]
    w_up: Linear,             // [n_embd] -> [n_ff]
    w_down: Linear,           // [n_ff] -> [n_embd]
    post_ffn_norm: Vec<f32>,  // [n_embd]
    /// Positions a query of this layer sees (`None`: all before it).
    window: Option<usize>,
}

pub struct Gemma3 {
    file: Arc<GgufFile>,
    hp: HParams,
    /// RoPE of the full-attention layers.
    rope_global: Rope,
    /// RoPE of the sliding-window layers.
    rope_local: Rope,
    /// Multiplier of the queries before attention.
    q_scale: f32,
    tok_embd: Linear,      // [n_vocab] rows of [n_embd]
    output_norm: Vec<f32>, // [n_embd]
    output: Linear,        // [n_embd] -> [n_vocab]; the embedding when tied
    layers: Vec<Layer>,
}

impl Gemma3 {
    pub fn load(file: Arc<GgufFile>, hp: HParams) -> Result<Gemma3> {
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
            let window = hp.swa.as_ref().filter(|s| s.layers[i]).map(|s| s.window);
            layers.push(Layer {
                attn_norm: load_vector(f, &name("attn_norm.weight"), d)?,
                wq: Linear::load(f, &name("attn_q.weight"), d, q_dim)?,
                wk: Linear::load(f, &name("attn_k.weight"), d, kv_dim)?,
                wv: Linear::load(f, &name("attn_v.weight"), d, kv_dim)?,
                wo: Linear::load(f, &name("attn_output.weight"), q_dim, d)?,
                q_norm: load_vector(f, &name("attn_q_norm.weight"), hd)?,
                k_norm: load_vector(f, &name("attn_k_norm.weight"), hd)?,
                post_attn_norm: load_vector(f, &name("post_attention_norm.weight"), d)?,
                ffn_norm: load_vector(f, &name("ffn_norm.weight"), d)?,
                w_gate: Linear::load(f, &name("ffn_gate.weight"), d, hp.n_ff)?,
                w_up: Linear::load(f, &name("ffn_up.weight"), d, hp.n_ff)?,
                w_down: Linear::load(f, &name("ffn_down.weight"), hp.n_ff, d)?,
                post_ffn_norm: load_vector(f, &name("post_ffw_norm.weight"), d)?,
                window,
            });
        }
        let mut rope_global = Rope::new(RopeLayout::Neox, hp.n_rot, hp.rope_base);
        match hp.rope_scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => rope_global.freq_scale = 1.0 / factor,
            RopeScaling::Yarn {
                factor,
                n_ctx_orig,
                beta_fast,
                beta_slow,
            } => rope_global = rope_global.with_yarn(factor, n_ctx_orig, beta_fast, beta_slow),
        }
        // Windowed layers keep their own base and are never scaled; without a
        // window every layer is global, as in llama.cpp.
        let rope_local = match &hp.swa {
            Some(s) => Rope::new(RopeLayout::Neox, hp.n_rot, s.rope_base),
            None => rope_global.clone(),
        };
        // Gemma scales queries by query_pre_attn_scalar^-1/2, which GGUF files
        // do not record: llama.cpp takes n_embd / n_head for the 27B model (the
        // one with 62 layers) and the head width for every other size.
        let q_scale = if hp.n_layer == 62 {
            1.0 / ((hp.n_embd / hp.n_head) as f32).sqrt()
        } else {
            1.0 / (hd as f32).sqrt()
        };
        Ok(Gemma3 {
            output_norm: load_vector(f, "output_norm.weight", d)?,
            file,
            hp,
            rope_global,
            rope_local,
            q_scale,
            tok_embd,
            output,
            layers,
        })
    }

    /// Fails unless `cache` was laid out for this network: one layer each, and
    /// a ring only where the layer has a window that it can hold with `n`
    /// new positions.
    fn check_cache(&self, cache: &KvCache, n: usize) -> Result<()> {
        let kv_dim = self.hp.n_head_kv * self.hp.head_dim;
        let fits = cache.n_layer() == self.layers.len()
            && cache.kv_dim() == kv_dim
            && self.layers.iter().enumerate().all(|(il, l)| {
                let kept = cache.layer_rows(il).2;
                kept.n_rows >= cache.n_ctx() || l.window.is_some_and(|w| kept.n_rows + 1 >= w + n)
            });
        if fits {
            Ok(())
        } else {
            Err(Error::Invalid(
                "the KV cache was not made for this model (use Model::new_cache)".into(),
            ))
        }
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
        self.check_cache(cache, n)?;
        let pos0 = cache.n_used();
        let (d, hd, n_rot) = (hp.n_embd, hp.head_dim, hp.n_rot);
        let (q_dim, kv_dim) = (hp.n_head * hd, hp.n_head_kv * hd);

        let ScratchParts {
            bufs: [x, xn, q, k, v, att, proj, gate, up, cs_global, cs_local],
            acts,
            attn: attn_scratch,
            ..
        } = scratch.take([
            n * d,       // x: [n][n_embd] residual stream
            n * d,       // xn: [n][n_embd] normalised input of a block
            n * q_dim,   // q: [n][n_head * head_dim]
            n * kv_dim,  // k: [n][n_head_kv * head_dim]
            n * kv_dim,  // v: [n][n_head_kv * head_dim]
            n * q_dim,   // att: [n][n_head * head_dim]
            n * d,       // proj: [n][n_embd] block output
            n * hp.n_ff, // gate: [n][n_ff]
            n * hp.n_ff, // up: [n][n_ff]
            n * n_rot,   // cs_global: [n][n_rot] cos/sin, full layers
            n * n_rot,   // cs_local: [n][n_rot] cos/sin, windowed layers
        ]);

        let embd_scale = (d as f32).sqrt();
        for (t, &id) in tokens.iter().enumerate() {
            let xt = &mut x[t * d..(t + 1) * d];
            self.tok_embd.row(f, id as usize, xt)?;
            xt.iter_mut().for_each(|e| *e *= embd_scale);
            let span = t * n_rot..(t + 1) * n_rot;
            self.rope_global
                .angles(pos0 + t, &mut cs_global[span.clone()]);
            self.rope_local.angles(pos0 + t, &mut cs_local[span]);
        }

        let shape = AttnShape {
            n_tokens: n,
            pos0,
            n_head: hp.n_head,
            n_head_kv: hp.n_head_kv,
            head_dim: hd,
            // The queries are scaled before the product, as llama.cpp does.
            scale: 1.0,
        };
        attn_scratch.reserve(shape, cache.n_ctx(), pool.n_threads());
        for (il, l) in self.layers.iter().enumerate() {
            let (rope, cs) = match l.window {
                Some(_) => (&self.rope_local, &*cs_local),
                None => (&self.rope_global, &*cs_global),
            };
            for t in 0..n {
                let span = t * d..(t + 1) * d;
                ops::rms_norm(&x[span.clone()], &l.attn_norm, hp.rms_eps, &mut xn[span]);
            }
            acts.invalidate();
            acts.matmul(pool, f, &l.wq, xn, n, q)?;
            acts.matmul(pool, f, &l.wk, xn, n, k)?;
            acts.matmul(pool, f, &l.wv, xn, n, v)?;
            for t in 0..n {
                let qt = &mut q[t * q_dim..(t + 1) * q_dim];
                let kt = &mut k[t * kv_dim..(t + 1) * kv_dim];
                qt.chunks_mut(hd)
                    .for_each(|h| ops::rms_norm_inplace(h, &l.q_norm, hp.rms_eps));
                kt.chunks_mut(hd)
                    .for_each(|h| ops::rms_norm_inplace(h, &l.k_norm, hp.rms_eps));
                let cst = &cs[t * n_rot..(t + 1) * n_rot];
                rope.apply(qt, hp.n_head, hd, cst);
                rope.apply(kt, hp.n_head_kv, hd, cst);
                qt.iter_mut().for_each(|e| *e *= self.q_scale);
            }
            cache.store(il, pos0, k, v);
            let (kc, vc, kept) = cache.layer_rows(il);
            let layout = KvLayout {
                window: l.window,
                n_rows: kept.n_rows,
            };
            ops::attention_in(pool, shape, layout, q, kc, vc, att, attn_scratch);

            acts.invalidate();
            acts.matmul(pool, f, &l.wo, att, n, proj)?;
            for t in 0..n {
                let pt = &mut proj[t * d..(t + 1) * d];
                ops::rms_norm_inplace(pt, &l.post_attn_norm, hp.rms_eps);
                ops::add_inplace(&mut x[t * d..(t + 1) * d], pt);
            }

            for t in 0..n {
                let span = t * d..(t + 1) * d;
                ops::rms_norm(&x[span.clone()], &l.ffn_norm, hp.rms_eps, &mut xn[span]);
            }
            acts.invalidate();
            acts.matmul(pool, f, &l.w_gate, xn, n, gate)?;
            acts.matmul(pool, f, &l.w_up, xn, n, up)?;
            ops::gelu_mul_inplace(gate, up);
            acts.invalidate();
            acts.matmul(pool, f, &l.w_down, gate, n, proj)?;
            for t in 0..n {
                let pt = &mut proj[t * d..(t + 1) * d];
                ops::rms_norm_inplace(pt, &l.post_ffn_norm, hp.rms_eps);
                ops::add_inplace(&mut x[t * d..(t + 1) * d], pt);
            }
        }
        cache.advance(n);

        if let Some(want) = logits {
            let (norm, eps) = (&self.output_norm, hp.rms_eps);
            let out = output_head(pool, f, acts, want, x, norm, eps, &self.output, xn, out)?;
            if let Some(cap) = hp.final_logit_softcap {
                ops::softcap_inplace(out, cap);
            }
        }
        Ok(())
    }
}

impl Network for Gemma3 {
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

    /// Sliding-window layers keep a ring of their window plus one batch.
    fn new_cache(&self, n_ctx: usize) -> KvCache {
        let windows: Vec<Option<usize>> = self.layers.iter().map(|l| l.window).collect();
        KvCache::windowed(n_ctx, self.kv_shape().1, &windows, MAX_BATCH)
    }
}
